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


def partition_offset(raw: Path, root_device: str) -> int:
    """Byte offset of the filesystem of ``root_device`` (``vda`` → 0, ``vda2`` → the second
    partition) in the raw disk ``raw``: MBR or GPT, 512-byte sectors."""
    m = re.fullmatch(r"[a-z]+?(?:p?)(\d+)", root_device)
    if not m:
        return 0
    num = int(m.group(1))
    with Path(raw).open("rb") as fh:
        mbr = fh.read(512)
        if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
            raise UserError(f"root device {root_device}: the image has no partition table",
                            hint="use --root-dev vda for a bare filesystem image")
        entries = [mbr[446 + 16 * i: 462 + 16 * i] for i in range(4)]
        if entries[0][4] == 0xEE:  # protective MBR: GPT
            fh.seek(512)
            hdr = fh.read(92)
            if hdr[:8] != b"EFI PART":
                raise UserError(f"root device {root_device}: bad GPT header in the image")
            lba = int.from_bytes(hdr[72:80], "little")
            count = int.from_bytes(hdr[80:84], "little")
            size = int.from_bytes(hdr[84:88], "little")
            if num > count:
                raise UserError(f"root device {root_device}: the image has only {count} partition slots")
            fh.seek(lba * 512 + (num - 1) * size)
            ent = fh.read(size)
            start = int.from_bytes(ent[32:40], "little")
        else:
            if num > 4:
                raise UserError(f"root device {root_device}: logical MBR partitions are not supported",
                                hint="use an image with a primary or GPT partition")
            start = int.from_bytes(entries[num - 1][8:12], "little")
    if start == 0:
        raise UserError(f"root device {root_device}: no such partition in the image",
                        hint="check --root-dev (vda for a bare filesystem, vda1 for the first partition)")
    return start * 512


def extract(ctx: Context, image: DiskArtifact, root_device: str) -> KernelArtifact:
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
    offset = partition_offset(src, root_device)
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
