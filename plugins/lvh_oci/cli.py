"""``lvh images push/pull`` and ``lvh kernels push/pull/catalog`` (click).

Only click is imported at module level; the registry machinery is imported when a command runs,
so adding these commands costs ``lvh --help`` nothing noticeable.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

DEFAULT_WORKDIR = "_data"


def _workdir(value: str | None) -> Path:
    return Path(value or os.environ.get("LVH_WORKDIR") or DEFAULT_WORKDIR).expanduser()


def _common(f: Any) -> Any:
    f = click.option("--workdir", "-w", "--dir", "workdir", default=None, metavar="DIR",
                     help="work directory (cache, images/, kernels/); default $LVH_WORKDIR or _data.")(f)
    f = click.option("--platform", "-p", default=None, metavar="OS/ARCH",
                     help="platform to pull or push, e.g. linux/arm64 (default: this host's).")(f)
    f = click.option("--insecure", is_flag=True,
                     help="allow plain HTTP / unverified TLS for this registry (loopback needs no flag).")(f)
    f = click.option("--json", "as_json", is_flag=True, help="print the result as JSON on stdout.")(f)
    return f


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self.p, self.t = progress, task

    def update(self, *, completed: float | None = None, advance: float | None = None,
               total: float | None = None, description: str | None = None) -> None:
        kw: dict[str, Any] = {}
        if completed is not None:
            kw["completed"] = completed
        if advance is not None:
            kw["advance"] = advance
        if total is not None:
            kw["total"] = total
        if description is not None:
            kw["description"] = description
        self.p.update(self.t, **kw)


class _NoBar:
    def update(self, **kw: Any) -> None:
        pass


@contextmanager
def _progress(description: str, total: float | None) -> Iterator[Any]:
    """A transfer bar on stderr when it is a terminal; nothing otherwise (CI logs stay clean)."""
    if not sys.stderr.isatty():
        yield _NoBar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as p:
        yield _Bar(p, p.add_task(description, total=total))


def _opts(platform: str | None, insecure: bool, max_size: str | None = None) -> Any:
    from lvh.api import parse_size

    from .archive import Limits
    from .transfer import Options, platform_option

    limits = Limits()
    if max_size:
        try:
            limits.max_bytes = parse_size(max_size)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--max-size") from None
    return Options(platform=platform_option(platform), insecure=insecure, limits=limits, progress=_progress)


def _link(target: Path, link: Path) -> None:
    """Point ``link`` at ``target`` (relative symlink), replacing an older link atomically."""
    from lvh.api import UserError

    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        raise UserError(f"{link} exists and is not a link lvh made",
                        hint="move it away, or pull with --name to use another name")
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(text)


def _read_entry(path: Path, kind: str) -> Any:
    """The artifact of cache entry ``path``, its build record kept on it for push."""
    from .transfer import read_entry

    got = read_entry(path, kind)
    if got is None:
        return None
    art, record = got
    art._lvh_record = record  # type: ignore[attr-defined]
    return art


def _disk_source(source: str, workdir: Path) -> Any:
    from lvh.api import DiskArtifact, UserError

    from .transfer import disk_format

    p = Path(source).expanduser()
    if not p.exists():
        named = sorted((workdir / "images").glob(f"{source}.*")) if "/" not in source else []
        if not named:
            raise UserError(f"no image {source!r}: not a file, and not in {workdir / 'images'}",
                            hint="give a qcow2/raw file or the name of an image built in this workdir")
        p = named[0]
    real = p.resolve()
    if real.is_dir():
        raise UserError(f"{source} is a directory, not a disk image", hint="give the .qcow2 file")
    art = _read_entry(real.parent, "disk")
    if art is not None and Path(art.path).resolve() == real:
        return art
    fmt, size = disk_format(real)
    # A bare file: an artifact rooted at its folder that names only it (nothing else is pushed).
    return DiskArtifact(root=real.parent, path=real, format=fmt, size=size)


def _kernel_source(source: str, workdir: Path) -> Any:
    from lvh.api import KernelArtifact, UserError

    from .transfer import kernel_from_dir

    p = Path(source).expanduser()
    if not p.exists():
        p = workdir / "kernels" / source
        if not p.exists():
            raise UserError(f"no kernel {source!r}: not a path, and not in {workdir / 'kernels'}",
                            hint="give a kernel dir (boot/vmlinuz-*, lib/modules), a bzImage, or a kernel "
                                 "built in this workdir")
    real = p.resolve()
    if real.is_file():
        art = _read_entry(real.parent, "kernel")
        if art is not None:
            return art
        return KernelArtifact(root=real.parent, image=real)
    return _read_entry(real, "kernel") or kernel_from_dir(real, source=str(p))


# --- images -----------------------------------------------------------------------------------


@click.command("push")
@click.argument("source")
@click.argument("ref")
@_common
@click.option("--format", "fmt", type=click.Choice(["lvh", "upstream"]), default="lvh", show_default=True,
              help="lvh: lvh's artifact format (lands in a cache as if built); upstream: a layer holding "
                   "data/images/<name>.qcow2.zst, as little-vm-helper-images publishes.")
@click.option("--name", default=None, help="the image's name (default: the file's name without suffix).")
@click.option("--version", "version", default=None, help="version in the default tag <version>-<date>.")
@click.option("--main", "main_tag", is_flag=True, help="also tag <version>-main.")
def images_push(source: str, ref: str, workdir: str | None, platform: str | None, insecure: bool,
                as_json: bool, fmt: str, name: str | None, version: str | None, main_tag: bool) -> None:
    """Push image SOURCE (a file, or the name of an image in the workdir) to REF
    ([registry/]repo[:tag]; no tag = <version>-<YYYYMMDD.HHMMSS>)."""
    from .transfer import image_stem

    art = _disk_source(source, _workdir(workdir))
    _push(art, source, ref, name, image_stem(Path(art.path).name), fmt, version, main_tag, platform, insecure,
          as_json)


def _push(art: Any, source: str, ref: str, name: str | None, fallback_name: str, fmt: str, version: str | None,
          main_tag: bool, platform: str | None, insecure: bool, as_json: bool) -> None:
    """Push ``art`` (an image or a kernel) and print the references it got. Its name: ``--name``,
    else SOURCE when it names a workdir output, else the name it was built under, else ``fallback_name``."""
    from .transfer import push

    record = getattr(art, "_lvh_record", None) or {}
    named = not Path(source).expanduser().exists()
    name = name or (source if named else None) or record.get("target") or fallback_name
    res = push(art, ref, name=name, fmt=fmt, version=version, main_tag=main_tag,
               opts=_opts(platform, insecure), platform_explicit=platform is not None,
               record=getattr(art, "_lvh_record", None))
    refs = [f"{res.ref.registry}/{res.ref.repository}:{t}" for t in res.tags]
    _emit(as_json, {"refs": refs, "digest": res.digest, "format": fmt, "uploaded": res.uploaded},
          "\n".join(f"{r}@{res.digest}" for r in refs))


@click.command("pull")
@click.argument("ref")
@_common
@click.option("--name", default=None,
              help="local name (default: the image's); picks one of several images in an upstream layer.")
@click.option("--max-size", default=None, metavar="SIZE",
              help="refuse to write more than SIZE (default 256G).")
def images_pull(ref: str, workdir: str | None, platform: str | None, insecure: bool, as_json: bool,
                name: str | None, max_size: str | None) -> None:
    """Pull image REF into the workdir cache and link <workdir>/images/<name>.<format> to it.
    Reads lvh's format and upstream's (data/images/<name>.qcow2.zst)."""
    from .transfer import pull

    wd = _workdir(workdir)
    res = pull(ref, "disk", wd, opts=_opts(platform, insecure, max_size), name=name)
    art = res.artifact
    link = wd / "images" / f"{name or res.name}.{art.format}"
    _link(art.path, link)
    _emit(as_json, {"image": str(link), "path": str(art.path), "key": art.key, "digest": res.digest,
                    "format": res.format, "cached": res.cached, "fetched": res.fetched}, str(link))


# --- kernels ----------------------------------------------------------------------------------


def _kernel_ref(ref: str, repo: str | None, ci: bool) -> str:
    """A bare upstream tag (``6.6-main``) means the kernel repository (upstream's default)."""
    from .media import DEFAULT_KERNEL_REPO, KERNEL_TAG_RE

    if "/" not in ref and ":" not in ref and "@" not in ref:
        if not re.match(KERNEL_TAG_RE, ref) and not repo:
            from lvh.api import UserError

            raise UserError(f"{ref!r} is neither a reference nor a kernel tag",
                            hint="use <version>-main or <version>-<YYYYMMDD.HHMMSS> (lvh kernels catalog), "
                                 "or a full reference")
        base = repo or DEFAULT_KERNEL_REPO
        return f"{base}{'-ci' if ci else ''}:{ref}"
    return ref


@click.command("push")
@click.argument("source")
@click.argument("ref")
@_common
@click.option("--format", "fmt", type=click.Choice(["lvh", "upstream"]), default="lvh", show_default=True,
              help="lvh: lvh's artifact format; upstream: data/kernels/<version>/{boot,lib/modules}.")
@click.option("--name", default=None, help="the kernel's name (default: SOURCE's name).")
@click.option("--version", "version", default=None,
              help="upstream version (data/kernels/<version>, tag <version>-<date>); default: the name.")
@click.option("--main", "main_tag", is_flag=True, help="also tag <version>-main.")
def kernels_push(source: str, ref: str, workdir: str | None, platform: str | None, insecure: bool,
                 as_json: bool, fmt: str, name: str | None, version: str | None, main_tag: bool) -> None:
    """Push kernel SOURCE (a kernel dir, a bzImage, or a kernel built in the workdir) to REF."""
    art = _kernel_source(source, _workdir(workdir))
    _push(art, source, ref, name, Path(source.rstrip("/")).name, fmt, version, main_tag, platform, insecure,
          as_json)


@click.command("pull")
@click.argument("ref")
@_common
@click.option("--name", default=None,
              help="local name (default: the pushed name; upstream layout: the tag, as upstream's <dir>/<tag>).")
@click.option("--repo", default=None, metavar="REPO",
              help="repository for a bare tag (default quay.io/lvh-images/kernel-images).")
@click.option("--ci", is_flag=True, help="use the -ci repository for a bare tag.")
@click.option("--max-size", default=None, metavar="SIZE",
              help="refuse to write more than SIZE (default 256G).")
def kernels_pull(ref: str, workdir: str | None, platform: str | None, insecure: bool, as_json: bool,
                 name: str | None, repo: str | None, ci: bool, max_size: str | None) -> None:
    """Pull kernel REF (a reference, or an upstream tag like 6.6-main) into the workdir cache and
    link <workdir>/kernels/<name> to it."""
    from .transfer import pull

    wd = _workdir(workdir)
    res = pull(_kernel_ref(ref, repo, ci), "kernel", wd, opts=_opts(platform, insecure, max_size))
    art = res.artifact
    local = name or (res.name if res.format == "lvh" else None) or res.ref.tag or res.name
    link = wd / "kernels" / local
    _link(art.root, link)
    _emit(as_json, {"kernel": str(link), "image": str(art.image), "version": art.version, "key": art.key,
                    "digest": res.digest, "format": res.format, "cached": res.cached, "fetched": res.fetched},
          str(link / Path(art.image).relative_to(art.root)))


@click.command("catalog")
@click.argument("version", required=False)
@click.option("--repo", default=None, metavar="REPO",
              help="kernel repository (default quay.io/lvh-images/kernel-images).")
@click.option("--ci", is_flag=True, help="use the -ci repository.")
@click.option("--insecure", is_flag=True, help="allow plain HTTP / unverified TLS for this registry.")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list.")
def kernels_catalog(version: str | None, repo: str | None, ci: bool, insecure: bool, as_json: bool) -> None:
    """List the kernel versions in the repository, or VERSION's tags (<version>-<date>, <version>-main)."""
    from .media import DEFAULT_KERNEL_REPO
    from .transfer import Options, catalog

    r = (repo or DEFAULT_KERNEL_REPO) + ("-ci" if ci else "")
    items = catalog(r, version, opts=Options(insecure=insecure))
    if as_json:
        click.echo(json.dumps(items))
    else:
        for i in items:
            click.echo(i)
