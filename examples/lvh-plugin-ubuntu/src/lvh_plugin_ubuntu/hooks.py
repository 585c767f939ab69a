"""A hook plugin (entry-point group ``lvh.hooks``): small contributions around Ubuntu images.

- ``lvh_kernel_cmdline``: an Ubuntu guest gets ``net.ifnames=0``, so its first NIC is ``eth0``
  as in the Debian images (systemd would name it ``enp0s…``); set ``LVH_UBUNTU_IFNAMES=1`` to
  keep predictable names.
- ``lvh_pipeline_finished``: with ``LVH_UBUNTU_REPORT=PATH`` set, writes a JSON report of the
  pipeline's ``ubuntu`` rootfs stages there.

Hook implementations are plain functions marked with :data:`lvh.api.hookimpl`; they may take
any subset of the arguments their spec (``lvh.hookspecs``) declares.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lvh.api import KernelArtifact, RunSpec, hookimpl

IFNAMES_ARG = "net.ifnames=0"


def _is_ubuntu(spec: RunSpec) -> bool:
    image = spec.image
    if image is None:
        return False
    meta = image.meta or {}
    return meta.get("distro") == "ubuntu" or (meta.get("rootfs") or {}).get("distro") == "ubuntu"


@hookimpl
def lvh_kernel_cmdline(spec: RunSpec, kernel: KernelArtifact | None) -> list[str]:
    """``net.ifnames=0`` for Ubuntu guests, unless the run sets net.ifnames itself."""
    if not _is_ubuntu(spec) or os.environ.get("LVH_UBUNTU_IFNAMES") == "1":
        return []
    if any(a.startswith("net.ifnames=") for a in spec.cmdline):
        return []
    return [IFNAMES_ARG]


@hookimpl
def lvh_pipeline_finished(summary: dict[str, Any]) -> None:
    """Write the ``ubuntu`` stages of the pipeline to ``$LVH_UBUNTU_REPORT`` (JSON), if set."""
    target = os.environ.get("LVH_UBUNTU_REPORT")
    if not target:
        return
    stages = [s for s in summary.get("stages", [])
              if s.get("kind") == "rootfs" and s.get("driver") == "ubuntu"]
    report = {
        "ok": bool(summary.get("ok")),
        "images": [{k: s.get(k) for k in ("target", "status", "key", "duration", "error")} for s in stages],
    }
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)
