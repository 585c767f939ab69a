"""A tiny initramfs for modular kernels: busybox-static, the modules needed to mount a virtio
root (block, ext4, 9p) with their dependencies, and an /init that loads them, mounts ``root=``
and switches to it. Built from an artifact's ``lib/modules/<ver>/`` without root (cpio newc)."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from lvh.api import Context, ToolMissing

#: Modules loaded (with their dependencies) when present and not built in.
BOOT_MODULES = [
    "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_console", "virtio_net",
    # ext4 asks the crypto API for crc32c at mount time (a soft dependency, not in modules.dep)
    "crc32c_generic", "crc32c_intel", "ext4",
    "9pnet_virtio", "9p", "vmw_vsock_virtio_transport",
]

BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")

_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in @MODULES@; do insmod "/lib/modules/@VERSION@/$m" 2>/dev/null; done
root=/dev/vda; fstype=ext4; mode=rw; init=/sbin/init; flags=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root="${arg#root=}" ;;
    rootfstype=*) fstype="${arg#rootfstype=}" ;;
    rootflags=*) flags="${arg#rootflags=}" ;;
    init=*) init="${arg#init=}" ;;
    ro) mode=ro ;;
    rw) mode=rw ;;
  esac
done
case "$root" in
  /dev/*) i=0; while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done ;;
esac
opts="$mode"
[ "$fstype" = 9p ] && opts="$opts,trans=virtio,version=9p2000.L"
[ -n "$flags" ] && opts="$opts,$flags"
mkdir -p /newroot
if ! mount -t "$fstype" -o "$opts" "$root" /newroot; then
  echo "lvh initrd: cannot mount $root ($fstype)" >&2
  grep -q lvh.initrd_shell /proc/cmdline && exec sh
  echo "lvh initrd: powering off (add lvh.initrd_shell to the kernel command line for a shell)" >&2
  poweroff -f
fi
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot "$init"
"""


def _deps(modules_dir: Path) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    dep_file = modules_dir / "modules.dep"
    for line in dep_file.read_text().splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = rest.split()
    return deps


def _name(path: str) -> str:
    base = os.path.basename(path)
    for suf in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suf):
            base = base[: -len(suf)]
    return base.replace("-", "_")


def load_order(modules_dir: Path, wanted: list[str]) -> list[str]:
    """Module paths (relative to ``modules_dir``) to insmod, dependencies first."""
    deps = _deps(modules_dir)
    by_name = {_name(m): m for m in deps}
    order: list[str] = []

    def add(path: str) -> None:
        if path in order:
            return
        for d in reversed(deps.get(path, [])):
            add(d)
        if path not in order:
            order.append(path)

    for w in wanted:
        p = by_name.get(w.replace("-", "_"))
        if p:
            add(p)
    return order


def make_initrd(ctx: Context, modules_root: Path, version: str, dest: Path,
                modules: list[str] | None = None) -> Path:
    """Write a gzip'ed cpio initramfs to ``dest`` for the kernel whose modules are in
    ``modules_root/lib/modules/<version>/``."""
    busybox = next((p for p in BUSYBOX_PATHS if os.path.exists(p)), None)
    if busybox is None:
        raise ToolMissing("busybox", hint="apt-get install busybox-static", needed_by="the kernel initrd")
    mdir = modules_root / "lib" / "modules" / version
    order = load_order(mdir, modules or BOOT_MODULES)
    assert ctx.tmp is not None
    tree = ctx.tmp / "initrd-tree"
    shutil.rmtree(tree, ignore_errors=True)
    for d in ("bin", "dev", "proc", "sys", "newroot", f"lib/modules/{version}"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, tree / "bin" / "busybox")
    names = []
    for rel in order:
        src = mdir / rel
        if rel.endswith((".xz", ".zst", ".gz")):
            # busybox insmod cannot read compressed modules: decompress them
            target = tree / "lib" / "modules" / version / (_name(rel) + ".ko")
            tool = {".xz": "xz", ".zst": "zstd", ".gz": "gzip"}[os.path.splitext(rel)[1]]
            ctx.run("sh", "-c", f"{tool} -dc {shlex.quote(str(src))} > {shlex.quote(str(target))}")
        else:
            target = tree / "lib" / "modules" / version / (_name(rel) + ".ko")
            shutil.copyfile(src, target)
        names.append(target.name)
    init = tree / "init"
    init.write_text(_INIT.replace("@MODULES@", " ".join(names)).replace("@VERSION@", version))
    init.chmod(0o755)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ctx.run("sh", "-c", f"cd {shlex.quote(str(tree))} && find . | cpio -o -H newc --quiet -R 0:0 "
            f"| gzip -6 > {shlex.quote(str(dest))}", hint="apt-get install cpio")
    shutil.rmtree(tree, ignore_errors=True)
    return dest
