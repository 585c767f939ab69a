"""``lvh kernels`` (aliases ``kernel``, ``k``): upstream's commands over ``D/kernels.json``.

``init``, ``add``, ``remove``, ``list``, ``fetch``, ``configure``, ``raw_configure``, ``build``.
The kernels dir ``D`` (``--dir``, default ``.``) is also the workdir: the engine's cache is in
``D/cache/``, the make builder's sources and build trees in ``D/state/make/``, and
``D/kernels/<name>`` links to the built kernel (``boot/vmlinuz-<ver>``, ``lib/modules/<ver>/``).
``build`` goes through the engine (cached: an unchanged kernel is not rebuilt). Steps specific to
the make builder (fetch, configure) are its public methods, so this module names no tool.
Other plugins add commands to this group (``push``, ``pull``, ``catalog``) with the
``lvh_cli_commands`` hook.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from lvh.cli.main import configure_hooks, stdout_console

KERNEL_GROUP = "lvh.kernel"
BUILDER = "make"

_dir_opt = click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=".",
                        show_default=True, help="The kernels dir holding kernels.json.")
_arch_opt = click.option("--arch", default=None,
                         help="Target architecture, e.g. amd64/x86_64 or arm64 (default: the host's).")


def _group_names() -> tuple[list[str], list[str]]:
    """(all groups, default groups) from the make builder's module, without naming it here."""
    from lvh.plugins import driver_class

    cls: Any = driver_class(KERNEL_GROUP, BUILDER)
    return sorted(cls.config_groups()), list(cls.default_groups())


def _split_groups(values: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _group_options(groups: list[str]) -> list[list[str]]:
    from lvh.api import UserError
    from lvh.plugins import driver_class

    cls: Any = driver_class(KERNEL_GROUP, BUILDER)
    known = cls.config_groups()
    opts: list[list[str]] = []
    for g in groups:
        if g not in known:
            raise UserError(f"unknown config group {g!r}", hint=f"known groups: {', '.join(sorted(known))}")
        opts.extend([list(o) for o in known[g]])
    return opts


def _context(directory: Path, name: str) -> Any:
    """A Context for driver steps run outside the engine (fetch, configure), rooted like the
    engine's: workdir = the kernels dir, state in ``D/state/make``."""
    import threading

    from loguru import logger

    from lvh.api import Context, StageInfo
    from lvh.executor import SubprocessExecutor
    from lvh.host import host_info
    d = directory.resolve()
    stage = StageInfo(id=f"kernel:{name}", kind="kernel", driver=BUILDER, target=name)
    tmp = d / "tmp" / f"cli-{name}"
    return Context(workdir=d, config_dir=d, executor=SubprocessExecutor(), host=host_info(),
                   log=logger.bind(stage=stage.id), hooks=None, stage=stage, tmp=tmp, out=tmp,
                   state_dir=d / "state" / BUILDER, cancel=threading.Event())


def _driver(directory: Path, name: str, arch: str | None = None) -> tuple[Any, Any]:
    from lvh import upstream_kernels as uk
    from lvh.api import UserError
    from lvh.plugins import load_driver

    kf = uk.load(directory)
    entry = kf.get(name)
    if entry is None:
        raise UserError(f"kernel {name!r} is not in {uk.path_of(directory)}",
                        hint=f"known: {', '.join(kf.names()) or 'none'}; add one with lvh kernels add NAME URL")
    drv = load_driver(KERNEL_GROUP, BUILDER, uk.kernel_options(kf, entry, arch=arch))
    return drv, _context(directory, name)


class _OpenGroup(click.Group):
    """A group other plugins extend through the ``lvh_cli_commands`` hook (``push``, ``pull``,
    ``catalog``): the core knows ``kernels``, so the hooks are loaded here, on demand."""

    def _hooks(self) -> None:
        from lvh.cli.main import cli

        cli._load_hook_commands()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None:
            self._hooks()
            cmd = super().get_command(ctx, cmd_name)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._hooks()
        return super().list_commands(ctx)


@click.group(cls=_OpenGroup)
def kernels() -> None:
    """Manage and build kernels listed in D/kernels.json (upstream's format)."""


@kernels.command("init")
@_dir_opt
@click.option("--config-groups", "groups", multiple=True,
              help="Config groups for common_opts (comma-separated or repeated; default: "
                   "basic,bpf,virtio,minimize,namespaces).")
@click.option("--force", is_flag=True, help="Overwrite an existing kernels.json.")
def init_(directory: Path, groups: tuple[str, ...], force: bool) -> None:
    """Create D/kernels.json with common options from config groups."""
    from lvh import upstream_kernels as uk
    from lvh.api import UserError

    p = uk.path_of(directory)
    if p.exists() and not force:
        raise UserError(f"{p} already exists", hint="use --force to overwrite it")
    names = _split_groups(groups) or _group_names()[1]
    kf = uk.KernelsFile(kernels=[], common_opts=_group_options(names))
    click.echo(f"wrote {uk.save(directory, kf)} (common options from: {', '.join(names)})")


@kernels.command("add")
@_dir_opt
@click.argument("name")
@click.argument("url")
@click.option("--fetch", is_flag=True, help="Also fetch the source now.")
@click.option("--config-groups", "groups", multiple=True,
              help="Config groups for the kernel's opts (default: basic,bpf,virtio,minimize,namespaces).")
@click.option("--just-print-config", is_flag=True, help="Print the kernel's entry; change nothing.")
def add(directory: Path, name: str, url: str, fetch: bool, groups: tuple[str, ...],
        just_print_config: bool) -> None:
    """Add kernel NAME built from URL (git URL #branch ?depth=N, folder or tarball)."""
    import re

    from lvh import upstream_kernels as uk
    from lvh.api import UserError
    from lvh.config import NAME_HINT, NAME_RE

    if not re.match(NAME_RE, name):
        raise UserError(f"invalid kernel name {name!r}", hint=NAME_HINT)
    names = _split_groups(groups) or _group_names()[1]
    entry: dict[str, Any] = {"name": name, "url": url, "opts": _group_options(names)}
    from lvh.plugins import load_driver

    # validates the URL (and the options) the way the builder will read them
    drv: Any = load_driver(KERNEL_GROUP, BUILDER, uk.kernel_options(uk.KernelsFile(), entry))
    if not just_print_config:
        kf = uk.load(directory)
    ctx = _context(directory, name)
    drv.source_spec(ctx)
    if just_print_config:
        click.echo(json.dumps(entry, indent=4))
        return
    if kf.get(name) is not None:
        raise UserError(f"kernel {name!r} already exists in {uk.path_of(directory)}",
                        hint="remove it first (lvh kernels remove NAME) or pick another name")
    kf.kernels.append(entry)
    uk.save(directory, kf)
    click.echo(f"added {name} ({url})")
    if fetch:
        drv, ctx = _driver(directory, name)
        try:
            tree = drv.fetch(ctx)
        except BaseException:
            kf.kernels = [k for k in kf.kernels if k["name"] != name]  # leave kernels.json as it was
            uk.save(directory, kf)
            raise
        click.echo(f"fetched {name}: {tree.path} ({tree.revision})")


@kernels.command("remove")
@_dir_opt
@click.argument("name")
def remove(directory: Path, name: str) -> None:
    """Remove kernel NAME: its entry, source tree, build dir and D/kernels/NAME link."""
    from lvh import upstream_kernels as uk
    from lvh.api import UserError

    kf = uk.load(directory)
    entry = kf.get(name)
    if entry is None:
        raise UserError(f"kernel {name!r} is not in {uk.path_of(directory)}",
                        hint=f"known: {', '.join(kf.names()) or 'none'}")
    try:
        drv, ctx = _driver(directory, name)
        drv.remove(ctx)
    except UserError as e:  # e.g. the source no longer exists: still drop the entry
        click.echo(f"warning: {e.message}", err=True)
    link = directory / "kernels" / name
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    kf.kernels = [k for k in kf.kernels if k["name"] != name]
    uk.save(directory, kf)
    click.echo(f"removed {name}")


@kernels.command("list")
@_dir_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(directory: Path, as_json: bool) -> None:
    """List the kernels of D/kernels.json: name, URL, fetched and built state."""
    from lvh import upstream_kernels as uk

    kf = uk.load(directory)
    rows = []
    for k in kf.kernels:
        link = directory / "kernels" / k["name"]
        built = None
        if link.exists():
            try:
                built = json.loads((link / "artifact.json").read_text())["artifact"]["version"]
            except (OSError, ValueError, KeyError, TypeError):
                built = "?"
        rows.append({"name": k["name"], "url": k["url"], "opts": len(k.get("opts") or []),
                     "built": built, "path": str(link) if built else None})
    if as_json:
        click.echo(json.dumps({"dir": str(directory), "common_opts": len(kf.common_opts), "kernels": rows},
                              indent=2))
        return
    from rich.table import Table

    t = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("name", "url", "opts", "built"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["url"], str(r["opts"]), r["built"] or "-")
    stdout_console().print(t)


@kernels.command("fetch")
@_dir_opt
@click.argument("name")
def fetch(directory: Path, name: str) -> None:
    """Fetch (or update) kernel NAME's source."""
    drv, ctx = _driver(directory, name)
    tree = drv.fetch(ctx)
    click.echo(f"{name}: {tree.path} at {tree.revision}")


@kernels.command("configure")
@_dir_opt
@_arch_opt
@click.argument("name")
def configure(directory: Path, name: str, arch: str | None) -> None:
    """Compute kernel NAME's .config (fetching its source if needed) and report options that
    did not take."""
    drv, ctx = _driver(directory, name, arch)
    conf = drv.configure(ctx)
    click.echo(f"{name}: {conf.config_dir / '.config'}"
               + (f" ({len(conf.not_taken)} option(s) did not take)" if conf.not_taken else ""))


@kernels.command("raw_configure")
@_dir_opt
@_arch_opt
@click.argument("kernel_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("name", required=False)
def raw_configure(directory: Path, kernel_dir: Path, name: str | None, arch: str | None) -> None:
    """Configure a kernel tree prepared by other means, in place (KERNEL_DIR/.config), with
    kernel NAME's options, or only the common options without NAME."""
    from lvh import upstream_kernels as uk
    from lvh.plugins import load_driver

    kf = uk.load(directory)
    if name:
        drv, ctx = _driver(directory, name, arch)
    else:  # upstream crashed here; use the common options
        entry = {"name": "raw", "url": str(kernel_dir.resolve())}
        drv = load_driver(KERNEL_GROUP, BUILDER, uk.kernel_options(kf, entry, arch=arch))
        ctx = _context(directory, "raw")
    cfg, bad = drv.configure_tree(ctx, kernel_dir.resolve())
    click.echo(f"configured {cfg}" + (f" ({len(bad)} option(s) did not take)" if bad else ""))


@kernels.command("build")
@_dir_opt
@_arch_opt
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even if cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def build(ctx: click.Context, directory: Path, name: str, arch: str | None, force: bool,
          as_json: bool) -> None:
    """Build kernel NAME through the engine (cached); D/kernels/NAME links to the result."""
    from lvh import upstream_kernels as uk
    from lvh.api import UserError
    from lvh.config import load_data
    from lvh.engine import Engine

    kf = uk.load(directory)
    if kf.get(name) is None:
        raise UserError(f"kernel {name!r} is not in {uk.path_of(directory)}",
                        hint=f"known: {', '.join(kf.names()) or 'none'}")
    data = uk.to_pipeline(kf, directory, names=[name], arch=arch)
    cfg = load_data(data, source=str(uk.path_of(directory)), base_dir=directory.resolve())
    configure_hooks(ctx, json=as_json)
    summary = Engine(cfg, workdir=directory.resolve(), force=force, only=[name]).run()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        link = directory / "kernels" / name
        status = next((s["status"] for s in summary.get("stages", []) if s.get("target") == name), "?")
        click.echo(f"{name}: {status} → {link}")
    ctx.exit(summary.get("exit_code", 0))
