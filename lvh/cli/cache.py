"""``lvh cache list|gc``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _workdir(conf: Path | None, workdir: Path | None) -> Path:
    if workdir:
        return workdir
    if conf:
        from lvh.config import load_config

        return load_config(conf).workdir
    return Path("_data")


_opts = [
    click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help="The workdir (default: _data)."),
    click.option("--config", "conf", type=click.Path(dir_okay=False, path_type=Path),
                 help="Take the workdir from this pipeline file."),
]


def _with_opts(f):  # type: ignore[no-untyped-def]
    for o in reversed(_opts):
        f = o(f)
    return f


@click.group()
def cache() -> None:
    """The content-addressed artifact cache of a workdir."""


@cache.command("list")
@_with_opts
@click.option("--json", "as_json", is_flag=True)
def list_(workdir: Path | None, conf: Path | None, as_json: bool) -> None:
    """Every cache entry: kind, key, stage, size, age, and whether a named output needs it."""
    from lvh.cache import Cache

    c = Cache(_workdir(conf, workdir))
    live = c.live_keys()
    rows = [{"kind": e.kind, "key": e.key, "stage": e.meta.get("stage", "?"), "size": e.size,
             "created": e.meta.get("created"), "live": e.key in live, "path": str(e.path)} for e in c.entries()]
    if as_json:
        click.echo(json.dumps({"workdir": str(c.workdir), "entries": rows,
                               "outputs": {k: str(v) for k, v in c.named_outputs().items()}}, indent=2))
        return
    for r in rows:
        age = f"{(time.time() - r['created']) / 3600:.1f}h" if r["created"] else "?"
        click.echo(f"{r['kind']:<10} {r['key'][:12]}  {_human(r['size']):>7}  {age:>6}  "
                   f"{'live ' if r['live'] else 'stale'}  {r['stage']}")
    total = sum(r["size"] for r in rows)
    click.echo(f"{len(rows)} entries, {_human(total)} in {c.root}")


@cache.command()
@_with_opts
@click.option("--dry-run", is_flag=True, help="Only say what would be dropped.")
def gc(workdir: Path | None, conf: Path | None, dry_run: bool) -> None:
    """Drop cache entries that no named output (images/, kernels/) points to or was built from."""
    from lvh.cache import Cache

    c = Cache(_workdir(conf, workdir))
    dropped = c.gc(dry_run=dry_run)
    for e in dropped:
        click.echo(f"{'would drop' if dry_run else 'dropped'} {e.kind} {e.key[:12]} {e.meta.get('stage', '')} "
                   f"({_human(e.size)})")
    click.echo(f"{len(dropped)} entries, {_human(sum(e.size for e in dropped))} "
               f"{'reclaimable' if dry_run else 'freed'}")
