"""Host tool helpers shared by the fast-path drivers."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from lvh.api import Context, RootfsArtifact, StageError, ToolMissing, UserError

HINTS = {
    "mke2fs": "install it: apt-get install e2fsprogs",
    "resize2fs": "install it: apt-get install e2fsprogs",
    "qemu-img": "install it: apt-get install qemu-utils",
    "qemu-storage-daemon": "install it: apt-get install qemu-system-common (it ships qemu-storage-daemon)",
    "chroot": "install it: apt-get install coreutils",
    "unshare": "install it: apt-get install util-linux",
    "mount": "install it: apt-get install mount",
    "tar": "install it: apt-get install tar",
}


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/local/sbin")


def need(tool: str, by: str) -> str:
    path = which(tool)
    if path is None:
        raise ToolMissing(tool, hint=HINTS.get(tool), needed_by=by)
    return path


@functools.lru_cache(maxsize=8)
def tool_version(tool: str, *args: str) -> str:
    path = which(tool)
    if path is None:
        return "missing"
    try:
        p = subprocess.run([path, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (p.stdout + p.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise UserError(f"{what} needs root here (it mounts and chroots)",
                        hint="run lvh as root, or use the guestfish formatter and virt-customize customizer")


def copy_tree(src: Path, dst: Path, ctx: Context) -> None:
    """A full copy of a rootfs tree (owners, modes, links, special files, xattrs)."""
    ctx.run("cp", "-a", "--reflink=auto", str(src), str(dst))


def tree_of(ctx: Context, rootfs: RootfsArtifact, scratch: Path) -> Path:
    """A directory holding ``rootfs``: the artifact's own tree (read-only!) or the tarball
    extracted under ``scratch``."""
    if rootfs.format == "dir":
        return rootfs.path
    if rootfs.format != "tar":
        raise StageError(f"cannot read a rootfs in format {rootfs.format!r}", hint="use format dir or tar")
    require_root("unpacking a rootfs tarball with its owners")
    scratch.mkdir(parents=True, exist_ok=True)
    ctx.run("tar", "-C", str(scratch), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf",
            str(rootfs.path))
    return scratch


def kernel_in_tree(tree: Path) -> tuple[str | None, str | None]:
    """Paths (inside the image) of a kernel and initrd installed in ``tree``, if any."""
    for kname, iname in (("vmlinuz", "initrd.img"), ("boot/vmlinuz", "boot/initrd.img")):
        k = tree / kname
        if k.is_symlink() or k.exists():
            i = tree / iname
            return "/" + kname, ("/" + iname if (i.is_symlink() or i.exists()) else None)
    boot = tree / "boot"
    if boot.is_dir():
        ks = sorted(p.name for p in boot.glob("vmlinuz-*"))
        if ks:
            ver = ks[-1][len("vmlinuz-"):]
            i = boot / f"initrd.img-{ver}"
            return f"/boot/{ks[-1]}", (f"/boot/{i.name}" if i.exists() else None)
    return None, None


def is_tarball(p: Path) -> bool:
    try:
        return tarfile.is_tarfile(p)
    except OSError:
        return False
