"""``lvh plugins list``."""

from __future__ import annotations

import json

import click

from lvh.cli.main import stdout_console


@click.group()
def plugins() -> None:
    """Installed drivers (per stage kind) and hook plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_(as_json: bool) -> None:
    """Every installed driver and hook plugin: kind, name, distribution, version, module, load error."""
    from lvh.plugins import list_plugins

    infos = list_plugins()
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    from rich.table import Table

    t = Table(box=None, pad_edge=False)
    for col in ("kind", "name", "distribution", "version", "module", "status"):
        t.add_column(col)
    for i in infos:
        t.add_row(i.kind, i.name, i.distribution, i.version, i.module,
                  f"[red]error: {i.error}[/]" if i.error else "[green]ok[/]")
    stdout_console().print(t)
