"""lvh_oci's hooks (entry point ``lvh.hooks: lvh-oci``): the registry CLI commands, and
``lvh run --image REF`` / ``--kernel REF`` resolved by pulling into the workdir cache.

Kept light: nothing heavy is imported until a command or a pull runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lvh.api import Artifact, hookimpl


def _group(cli: Any, name: str, help_text: str) -> Any:
    import click

    grp = cli.get_command(None, name)
    if grp is None:
        grp = click.Group(name, help=help_text)
        cli.add_command(grp)
    return grp


@hookimpl
def lvh_cli_commands(cli: Any) -> None:
    from . import cli as oci_cli

    images = _group(cli, "images", "Build, pull and push VM images.")
    for cmd in (oci_cli.images_push, oci_cli.images_pull):
        if cmd.name not in getattr(images, "commands", {}):
            images.add_command(cmd)
    kernels = _group(cli, "kernels", "Build, pull and push kernels.")
    for cmd in (oci_cli.kernels_push, oci_cli.kernels_pull, oci_cli.kernels_catalog):
        if cmd.name not in getattr(kernels, "commands", {}):
            kernels.add_command(cmd)


@hookimpl
def lvh_resolve_artifact(kind: str, ref: str, workdir: Path) -> Artifact | None:
    """A registry reference (``oci://…``, or ``host/repo:tag`` / ``@sha256:…`` that is not a local
    path) given as ``--image``/``--kernel``: pull it into ``workdir``'s cache (nothing fetched if
    it is there) and return it. Anything else is not ours: None."""
    import os

    if kind not in ("disk", "kernel") or os.path.exists(ref):
        return None
    from .reference import looks_like_reference

    if not looks_like_reference(ref):
        return None
    from loguru import logger

    from .transfer import Options, pull

    res = pull(ref, kind, Path(workdir), opts=Options(log=logger))
    logger.info("{} {} → {}{}", kind, ref, res.artifact.root, " (cached)" if res.cached else "")
    return res.artifact
