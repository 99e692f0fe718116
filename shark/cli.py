from __future__ import annotations

import click

from shark import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """kubectl-shark: packet capture and API-traffic inspection for Kubernetes."""


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"kubectl-shark {__version__}")


def main() -> None:
    cli()
