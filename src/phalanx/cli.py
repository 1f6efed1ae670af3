"""The `phalanx` command line."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="phalanx")
def main() -> None:
    """phalanx: a fault-tolerant, Redis-compatible key-value store."""


@main.command()
def demo() -> None:
    """Run the demo (the full demo comes with the node)."""
    click.echo("phalanx demo: coming with the node (issue: the node). Try `phalanx sim --seeds 200`.")
