"""`python -m phalanx.cli` runs the `phalanx` command line (the command a local cluster records
for each node in cluster.json: `python -m phalanx.cli node --config FILE`)."""

from phalanx.cli import main

main()
