"""`python -m phalanx._compile build|clean|status`: build the mypyc hot path (`make compile`).

Rules of this file: only the command line; everything else is in `phalanx.compiled`.
"""

import sys

from phalanx.compiled import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
