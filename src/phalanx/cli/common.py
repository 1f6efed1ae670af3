"""What every `phalanx` command shares: how it fails, and the --data-dir of a local cluster.

Rules of this file: a failure is one line on stderr prefixed "phalanx: " and an exit code (2 for
configuration and usage errors, 1 for the rest); no tracebacks for expected failures.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"phalanx: {message}", err=True)
    sys.exit(code)


data_dir_option = click.option("--data-dir", required=True, type=click.Path(file_okay=False),
                               help="Directory of the local cluster (holds cluster.json).")
