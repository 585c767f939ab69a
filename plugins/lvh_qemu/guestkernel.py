"""The kernel (and its modules) installed in an image, taken out of the image without a VM:
``debugfs`` reads an ext4 filesystem directly. Cached under the user cache, keyed by the image
file (path, size, mtime) and the kernel path, so a second run pays nothing."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from lvh.api import Context, DiskArtifact, KernelArtifact, StageError, ToolMissing, UserError

from .initramfs import WANTED_MODULES


def _version_key(name: str) -> list[int | str]:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name)]


def cache_dir(ctx: Context, image: DiskArtifact) -> Path:
    st = Path(image.path).stat()
    h = hashlib.sha256(f"{Path(image.path).resolve()}:{st.st_size}:{st.st_mtime_ns}:"
                       f"{image.kernel}:{image.initrd}".encode()).hexdigest()[:24]
    return Path(ctx.user_cache) / "qemu" / "guest-kernel" / h


def _partition_offset(ctx: Context, raw: Path, root_device: str) -> int:
    m = re.search(r"(\d+)$", root_device)
    if not m or not re.search(r"[a-z]\d+$", root_device):
        return 0
    num = int(m.group(1))
    res = ctx.run("sfdisk", "--json", raw, capture=True, check=False)
    if res.returncode != 0:
        return 0
    table = json.loads(res.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = table.get("partitions", [])
    if num > len(parts):
        raise UserError(f"root device {root_device}: the image has only {len(parts)} partitions")
    return int(parts[num - 1]["start"]) * sector


def extract(ctx: Context, image: DiskArtifact, root_device: str, machine_bus: str) -> KernelArtifact:
    """The image's own kernel as a :class:`KernelArtifact` (modules needed at boot included)."""
    if not shutil.which("debugfs") and not Path("/usr/sbin/debugfs").exists() \
            and not Path("/sbin/debugfs").exists():
        raise ToolMissing("debugfs", hint="apt-get install e2fsprogs", needed_by="booting the image's kernel")
    out = cache_dir(ctx, image)
    done = out / "kernel.json"
    if done.exists():
        data = json.loads(done.read_text())
        return KernelArtifact(root=out, image=out / "vmlinuz", version=data["version"],
                              modules=out / "modroot" if data["modular"] else None,
                              initrd=None)
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = Path(image.path)
    if image.format != "raw":
        raw = work / "disk.raw"
        ctx.run("qemu-img", "convert", "-f", image.format, "-O", "raw", src, raw,
                hint="the image must be readable by qemu-img")
        src = raw
    offset = _partition_offset(ctx, src, root_device)
    dev = f"{src}?offset={offset}" if offset else str(src)

    def debugfs(*cmds: str) -> str:
        script = work / "debugfs.cmd"
        script.write_text("\n".join(cmds) + "\n")
        return ctx.run("debugfs", "-f", script, dev, capture=True, check=False).stdout

    kpath = image.kernel
    if not kpath:
        listing = debugfs("ls -l /boot")
        names = sorted({w for w in listing.split() if w.startswith("vmlinuz-")}, key=_version_key)
        if not names:
            raise UserError(f"{image.path}: no kernel installed in the image (/boot/vmlinuz-*)",
                            hint="pass --kernel, or install a kernel in the image (linux-image-amd64)")
        kpath = f"/boot/{names[-1]}"
    version = kpath.rsplit("/", 1)[-1].removeprefix("vmlinuz-")
    debugfs(f"dump -p {kpath} {work / 'vmlinuz'}")
    if not (work / "vmlinuz").exists() or (work / "vmlinuz").stat().st_size == 0:
        raise StageError(f"{image.path}: cannot read {kpath} from the image (is it an ext4 filesystem "
                         f"on {root_device}?)")
    moddir = f"/lib/modules/{version}"
    local = work / "modroot" / "lib" / "modules" / version
    local.mkdir(parents=True)
    debugfs(f"dump -p {moddir}/modules.dep {local / 'modules.dep'}",
            f"dump -p {moddir}/modules.builtin {local / 'modules.builtin'}")
    modular = (local / "modules.dep").exists() and (local / "modules.dep").stat().st_size > 0
    if modular:
        from .initramfs import module_plan

        wanted = sorted(set(WANTED_MODULES["pci"]) | set(WANTED_MODULES["mmio"]))
        # Resolve on names only: module_plan needs the files to exist, so dump them first.
        plan = module_plan(local, wanted)
        cmds = []
        for p in plan:
            rel = p.relative_to(local)
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            cmds.append(f"dump -p {moddir}/{rel} {local / rel}")
        debugfs(*cmds)
    (work / "kernel.json").write_text(json.dumps({"version": version, "kernel": kpath, "modular": modular}))
    (work / "disk.raw").unlink(missing_ok=True)
    (work / "debugfs.cmd").unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    work.replace(out)
    return KernelArtifact(root=out, image=out / "vmlinuz", version=version,
                          modules=out / "modroot" if modular else None)
