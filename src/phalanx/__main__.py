"""`python -m phalanx` runs the `phalanx` command line."""

from phalanx.cli import main

main()
