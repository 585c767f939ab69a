"""``lvh pipeline validate|plan|run|matrix CONF``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from lvh.cli.main import configure_hooks, stdout_console

_conf_arg = click.argument("conf", type=click.Path(dir_okay=False, path_type=Path))
_workdir_opt = click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
                            help="Override the config's workdir.")


@click.group()
def pipeline() -> None:
    """Validate, plan and run pipeline files (images, kernels, runs)."""


def _load(conf: Path, workdir: Path | None) -> Any:
    from lvh.config import load_config

    return load_config(conf, workdir=workdir)


@pipeline.command()
@_conf_arg
@click.option("--json", "as_json", is_flag=True, help="Print the validated targets as JSON.")
def validate(conf: Path, as_json: bool) -> None:
    """Check CONF: YAML, schemas (core and each driver's), names and references."""
    cfg = _load(conf, None)
    if as_json:
        click.echo(json.dumps({"ok": True, "images": list(cfg.images), "kernels": list(cfg.kernels),
                               "runs": list(cfg.runs)}))
    else:
        click.echo(f"{cfg.source}: ok — {len(cfg.images)} image(s), {len(cfg.kernels)} kernel(s), "
                   f"{len(cfg.runs)} run(s)")


def _print_plan(plan: list[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    t = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("#", "stage", "driver", "key", "state"):
        t.add_column(col, no_wrap=col != "stage")
    for i, st in enumerate(plan, 1):
        state = "[green]cached[/]" if st["cached"] else ("[yellow]to run[/]" if st["kind"] == "run"
                                                         else "[yellow]to build[/]")
        t.add_row(str(i), st["id"], st["driver"], st["key"][:12] or "-", state)

    out = stdout_console()
    out.print(t)
    for st in plan:
        for cmd in st["commands"]:
            out.print(f"  [dim]{st['id']}:[/] $ {shlex.join(cmd)}", markup=True, highlight=False)


@pipeline.command()
@_conf_arg
@_workdir_opt
@click.option("--only", multiple=True, help="Only this image, kernel or run, and what it needs.")
@click.option("--force", is_flag=True, help="Plan as if the named targets were not cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan(ctx: click.Context, conf: Path, workdir: Path | None, only: tuple[str, ...], force: bool,
         as_json: bool) -> None:
    """Print the stages in execution order: driver, cache key, cached or not, commands."""
    from lvh.engine import Engine

    cfg = _load(conf, workdir)
    configure_hooks(ctx, json=as_json)
    p = Engine(cfg, only=list(only), force=force).plan()
    if as_json:
        click.echo(json.dumps({"workdir": str(cfg.workdir), "stages": p}, indent=2))
    else:
        _print_plan(p, None)


@pipeline.command()
@_conf_arg
@_workdir_opt
@click.option("--only", multiple=True, help="Only this image, kernel or run, and what it needs.")
@click.option("--force", is_flag=True, help="Rebuild the named targets (all, without --only) even if cached.")
@click.option("--dry-run", is_flag=True, help="Walk the run path and show what would be done; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write a JSON report to this file.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write a JUnit XML report to this file.")
@click.pass_context
def run(ctx: click.Context, conf: Path, workdir: Path | None, only: tuple[str, ...], force: bool,
        dry_run: bool, as_json: bool, report: str | None, junit: str | None) -> None:
    """Build what is not cached, in order, then boot the runs; exit with the runs' exit code."""
    from lvh.engine import Engine

    cfg = _load(conf, workdir)
    configure_hooks(ctx, json=as_json, report=report, junit=junit)

    def on_output(stream: str, data: bytes) -> None:
        # Guest output goes to our stdout/stderr as it comes (stderr under --json).
        target = sys.stderr if (stream == "stderr" or as_json) else sys.stdout
        target.buffer.write(data)
        target.flush()

    engine = Engine(cfg, only=list(only), force=force, dry_run=dry_run, on_output=on_output)
    if dry_run:
        p = engine.plan()
        if as_json:
            click.echo(json.dumps({"dry_run": True, "stages": p}, indent=2))
        else:
            _print_plan(p, None)
        return
    summary = engine.run()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    ctx.exit(summary["exit_code"])


@pipeline.command()
@_conf_arg
@click.option("--format", "fmt", type=click.Choice(["github", "json"]), default="github", show_default=True)
def matrix(conf: Path, fmt: str) -> None:
    """Print the runs (after matrix expansion) as a CI matrix, e.g. for GitHub Actions."""
    from lvh.matrix import github_matrix

    cfg = _load(conf, None)
    click.echo(json.dumps(github_matrix(cfg) if fmt == "github" else
                          [{"name": r.name, "image": r.image, "kernel": r.kernel, "command": r.command}
                           for r in cfg.runs.values()]))
