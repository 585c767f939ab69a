"""``lvh images example-config|build|to-pipeline``: upstream little-vm-helper's ``images.json``,
built through the same engine and cache as ``lvh pipeline run``. Other plugins add commands to
this group (e.g. ``push``/``pull``) through the ``lvh_cli_commands`` hook."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from lvh.cli.main import configure_hooks


@click.group()
def images() -> None:
    """Build images from DIR/images.json (upstream little-vm-helper's format)."""


@images.command("example-config")
def example_config() -> None:
    """Print upstream's example images.json (base.img, and k8s.qcow2 derived from it)."""
    from lvh.upstream_images import EXAMPLE

    click.echo(json.dumps(EXAMPLE, indent=2))


def default_rootfs_provider() -> str:
    """The rootfs provider images.json means: one that bootstraps a distribution from a package
    mirror (its options have ``suite``, ``mirror`` and ``packages``), preferring lvh's own. The
    core must not spell a tool's name, so it is found by what it takes."""
    from importlib.metadata import entry_points

    from lvh.api import UserError
    from lvh.plugins import driver_class

    fit: list[tuple[bool, str]] = []
    for ep in entry_points(group="lvh.rootfs"):
        try:
            names = set(driver_class("lvh.rootfs", ep.name).Options().fields)
        except Exception:
            continue
        if {"suite", "mirror", "packages"} <= names:
            fit.append((ep.dist is not None and ep.dist.name.lower() == "lvh", ep.name))
    ours = sorted(n for own, n in fit if own)
    pick = ours or sorted(n for _, n in fit)
    if len(pick) != 1:
        raise UserError(f"cannot pick the rootfs provider for images.json (candidates: {pick or 'none'})",
                        hint="name one with --rootfs-provider (see lvh plugins list)")
    return pick[0]


def _driver_takes(group: str, name: str, option: str) -> bool:
    from lvh.plugins import driver_class

    try:
        return option in driver_class(group, name).Options().fields
    except Exception:
        return False


def build_config(d: Path, *, formatter: str, customizer: str, rootfs_provider: str | None,
                 pkg_repo: str | None, merge_steps: bool, disk_format: str | None,
                 suite: str | None, variant: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pipeline dict for ``d/images.json`` and the checked upstream entries."""
    from lvh.upstream_images import read_images_json, to_config

    ims = read_images_json(d / "images.json")
    provider = rootfs_provider or default_rootfs_provider()
    ropts: dict[str, Any] = {}
    if pkg_repo:
        ropts["mirror"] = pkg_repo
    if suite:
        ropts["suite"] = suite
    if variant:
        ropts["variant"] = variant
    copts: dict[str, Any] = {}
    if _driver_takes("lvh.customize", customizer, "merge_steps"):
        copts["merge_steps"] = merge_steps
    conf = to_config(ims, rootfs_provider=provider, formatter=formatter, customizer=customizer,
                     rootfs_options=ropts, customizer_options=copts, disk_format=disk_format)
    return conf, ims


_common = [
    click.option("--dir", "d", required=True, type=click.Path(file_okay=False, path_type=Path),
                 help="The folder holding images.json; images go to DIR/images/."),
    click.option("--formatter", default="mkfs", show_default=True,
                 help="lvh.disk driver for base images (the default is the fast path; upstream's tool "
                 "sequence is available too: see lvh plugins list)."),
    click.option("--customizer", default="chroot", show_default=True,
                 help="lvh.customize driver for actions (the default needs no VM)."),
    click.option("--rootfs-provider", default=None, help="lvh.rootfs driver (default: the one lvh ships)."),
    click.option("--pkg-repo", default=None, help="The package mirror (default: the provider's)."),
    click.option("--suite", default=None, help="The distribution release (default: the provider's, as upstream)."),
    click.option("--variant", default=None, help="The bootstrap variant, e.g. minbase (default: the provider's)."),
    click.option("--merge-steps/--no-merge-steps", default=True, show_default=True,
                 help="Merge consecutive actions into one customizer call (where it has such calls)."),
    click.option("--format", "disk_format", type=click.Choice(["qcow2", "raw"]), default=None,
                 help="Disk format of names without .img/.qcow2 (default qcow2)."),
]


def _with_common(f: Any) -> Any:
    for opt in reversed(_common):
        f = opt(f)
    return f


@images.command("to-pipeline")
@_with_common
def to_pipeline(d: Path, formatter: str, customizer: str, rootfs_provider: str | None, pkg_repo: str | None,
                suite: str | None, variant: str | None, merge_steps: bool, disk_format: str | None) -> None:
    """Print DIR/images.json as an lvh pipeline (YAML), to edit and run with lvh pipeline run."""
    import yaml

    conf, _ = build_config(d, formatter=formatter, customizer=customizer, rootfs_provider=rootfs_provider,
                           pkg_repo=pkg_repo, merge_steps=merge_steps, disk_format=disk_format, suite=suite,
                           variant=variant)
    conf["workdir"] = "."
    click.echo(yaml.safe_dump(conf, sort_keys=False))


@images.command()
@_with_common
@click.option("--image", "only", multiple=True, help="Build only this image (and its parents). Repeatable.")
@click.option("--force-rebuild", is_flag=True, help="Rebuild the named images (all without --image).")
@click.option("--dry-run", is_flag=True, help="Show what would be built; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_context
def build(ctx: click.Context, d: Path, formatter: str, customizer: str, rootfs_provider: str | None,
          pkg_repo: str | None, suite: str | None, variant: str | None, merge_steps: bool,
          disk_format: str | None, only: tuple[str, ...], force_rebuild: bool, dry_run: bool, as_json: bool) -> None:
    """Build the images of DIR/images.json into DIR/images/ (cached: unchanged images are not rebuilt)."""
    from lvh.config import load_data
    from lvh.engine import Engine
    from lvh.upstream_images import split_name

    conf, ims = build_config(d, formatter=formatter, customizer=customizer, rootfs_provider=rootfs_provider,
                             pkg_repo=pkg_repo, merge_steps=merge_steps, disk_format=disk_format, suite=suite,
                             variant=variant)
    cfg = load_data(conf, source=str(d / "images.json"), base_dir=d.resolve(), workdir=d.resolve())
    configure_hooks(ctx, json=as_json)
    engine = Engine(cfg, workdir=d.resolve(), force=force_rebuild,
                    only=[split_name(x)[0] for x in only] or None, dry_run=dry_run)
    if dry_run:
        from lvh.cli.pipeline import _print_plan

        p = engine.plan()
        if as_json:
            click.echo(json.dumps({"dry_run": True, "stages": p}, indent=2))
        else:
            _print_plan(p, None)
        return
    summary = engine.run()
    # upstream's file names too (base.img), beside lvh's (base.raw)
    outdir = d.resolve() / "images"
    for im in ims:
        target = _named_output(outdir, im["name"])
        if target is not None:
            link = outdir / im["upstream_name"]
            if link != target:
                tmp = link.with_name(f".{link.name}.tmp")
                tmp.unlink(missing_ok=True)
                os.symlink(target.name, tmp)
                os.replace(tmp, link)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        built = [s["id"] for s in summary["stages"] if s["status"] == "built"]
        click.echo(f"{len(built)} stage(s) built, {len(summary['stages']) - len(built)} cached; images in {outdir}")
    ctx.exit(summary["exit_code"])


def _named_output(outdir: Path, name: str) -> Path | None:
    for fmt in ("qcow2", "raw"):
        p = outdir / f"{name}.{fmt}"
        if p.is_symlink() or p.exists():
            return p
    return None
