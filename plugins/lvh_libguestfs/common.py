"""What both libguestfs drivers share: the tool check, the environment (TCG where KVM does not
really work), versions for cache keys."""

from __future__ import annotations

import functools
import shutil
import subprocess

from lvh.api import Context, HostInfo, Requirement, ToolMissing, require_tool

HINT = "install it: apt-get install libguestfs-tools qemu-utils"


def requirements(host: HostInfo, *tools: str, by: str) -> list[Requirement]:
    return [require_tool(t, hint=HINT, needed_by=by) for t in tools]


def need(tool: str, by: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        raise ToolMissing(tool, hint=HINT, needed_by=by)
    return path


def env(ctx: Context) -> dict[str, str]:
    """libguestfs without libvirt; TCG when KVM does not really work (a present /dev/kvm is not
    proof: without it the appliance hangs or fails)."""
    e = {"LIBGUESTFS_BACKEND": "direct"}
    if not ctx.host.kvm:
        e["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return e


@functools.lru_cache(maxsize=8)
def version(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        return "missing"
    try:
        p = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (p.stdout + p.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
