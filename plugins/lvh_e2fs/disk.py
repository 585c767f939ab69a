"""``lvh.disk: mkfs`` — the fast path: an ext4 image made from a rootfs tree by ``mke2fs -d``.

No appliance VM and no mount: mke2fs writes the files itself (about 1 s for a minbase Debian).
No root needed either: from a tarball (mmdebstrap's unshare mode) the tree is unpacked and
mke2fs run in a user namespace mapping the user's subordinate ids, so owners are kept.
Output ``qcow2`` (default) or ``raw``, sparse. ``derive`` makes a qcow2 overlay on the parent's
published image (it costs only its delta) and, if ``size`` grows, grows the filesystem in place
through a userspace block export (``resize2fs``), still without a VM.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from lvh.api import (
    CommandFailed,
    Context,
    DiskArtifact,
    DiskFormatter,
    HostInfo,
    Requirement,
    RootfsArtifact,
    Schema,
    Size,
    StageError,
    UserError,
    fields,
    marshmallow,
    require_tool,
    validate,
)

from .tools import HINTS, kernel_in_tree, need, tool_version, tree_of


class MkfsOptions(Schema):
    class Meta:
        unknown = marshmallow.RAISE

    size = Size(load_default=8 << 30, metadata={"description": "virtual size (sparse), e.g. 8G"})
    format = fields.Str(load_default="qcow2", validate=validate.OneOf(["qcow2", "raw"]),
                        metadata={"description": "the image file format"})
    filesystem = fields.Str(load_default="ext4", validate=validate.OneOf(["ext4", "ext3", "ext2"]),
                            metadata={"description": "the filesystem type (mke2fs -t)"})
    label = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=16),
                       metadata={"description": "the filesystem label (mke2fs -L)"})
    mkfs_options = fields.List(fields.Str(), load_default=list,
                               metadata={"description": "extra mke2fs arguments, e.g. [-m, '0']"})
    bootable = fields.Bool(load_default=False, metadata={"description": "not supported: use guestfish"})

    @marshmallow.validates("bootable")
    def _bootable(self, value: bool, **kw: Any) -> None:
        if value:
            raise marshmallow.ValidationError(
                "the mkfs formatter makes an unpartitioned filesystem booted with an external kernel; "
                "for a partitioned disk with a boot loader use formatter: guestfish")


def _virtual_size(ctx: Context, image: str) -> int:
    r = ctx.run("qemu-img", "info", "--output=json", "-U", image, capture=True)
    return int(json.loads(r.stdout)["virtual-size"])


def _mode_bits(perms: str) -> int:
    """``crw-rw-rw-`` → 0o666 (permission bits of an ls-style mode string, setuid etc. too)."""
    bits = 0
    for i, ch in enumerate(perms[1:10]):
        if ch not in "-STl":
            bits |= 1 << (8 - i)
    for pos, flag in ((3, 0o4000), (6, 0o2000), (9, 0o1000)):
        if perms[pos] in "sStT":
            bits |= flag
            if perms[pos] in "ST":
                bits &= ~(1 << (9 - pos))
    return bits


def _du_bytes(path: str) -> int:
    try:
        out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return 0


class MkfsFormatter(DiskFormatter):
    """ext4 from a rootfs tree with ``mke2fs -d``: the fast path (no VM, no mount)."""

    name = "mkfs"
    version = "1"
    Options = MkfsOptions
    default_customizer = "chroot"

    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        return [require_tool("mke2fs", hint=HINTS["mke2fs"], needed_by="disk mkfs"),
                require_tool("qemu-img", hint=HINTS["qemu-img"], needed_by="disk mkfs"),
                require_tool("qemu-storage-daemon", hint=HINTS["qemu-storage-daemon"],
                             needed_by="disk mkfs (growing a derived image)")]

    def key_material(self, ctx: Context) -> dict[str, Any]:
        return {"mke2fs": tool_version("mke2fs", "-V"), "qemu-img": tool_version("qemu-img", "--version")}

    def _mkfs_argv(self, tree: str, image: str) -> list[str]:
        o = self.options
        argv = ["mke2fs", "-q", "-F", "-t", o.get("filesystem", "ext4"), "-d", tree, "-E", "root_owner=0:0"]
        if o.get("label"):
            argv += ["-L", o["label"]]
        argv += list(o.get("mkfs_options") or [])
        argv += [image, f"{max(1, int(o.get('size', 8 << 30)) // 1024)}k"]
        return argv

    def describe(self, ctx: Context, *inputs: Any) -> list[list[str]]:
        cmds = [self._mkfs_argv("ROOTFS", "OUT/disk.raw")]
        if self.options.get("format", "qcow2") == "qcow2":
            cmds.append(["qemu-img", "convert", "-O", "qcow2", "OUT/disk.raw", "OUT/disk.qcow2"])
        return cmds

    def build(self, ctx: Context, rootfs: RootfsArtifact | None) -> DiskArtifact:
        assert ctx.out is not None and ctx.tmp is not None and rootfs is not None
        need("mke2fs", "disk mkfs")
        o = self.options
        fmt = o.get("format", "qcow2")
        raw = (ctx.tmp if fmt == "qcow2" else ctx.out) / "disk.raw"
        unprivileged = rootfs.format == "tar" and os.geteuid() != 0
        tree = ctx.tmp / "rootfs" if unprivileged else tree_of(ctx, rootfs, ctx.tmp / "rootfs")
        try:
            if unprivileged:
                kernel, initrd = self._build_unprivileged(ctx, rootfs, tree, raw)
            else:
                ctx.run(*self._mkfs_argv(str(tree), str(raw)))
                kernel, initrd = kernel_in_tree(tree)
        except CommandFailed as e:
            text = "\n".join(e.result.tail)
            if re.search(r"Could not allocate|No space left|too small|populating file system", text):
                need_b = _du_bytes(str(tree)) if not unprivileged else rootfs.path.stat().st_size
                raise UserError(f"the rootfs ({need_b / 2**20:.0f} MiB) does not fit in a "
                                f"{int(o.get('size', 0)) / 2**20:.0f} MiB disk",
                                hint="grow disk.size (leave room for packages and logs)") from e
            raise
        path = raw
        if fmt == "qcow2":
            need("qemu-img", "disk mkfs")
            path = ctx.out / "disk.qcow2"
            ctx.run("qemu-img", "convert", "-O", "qcow2", str(raw), str(path))
            raw.unlink()
        return DiskArtifact(root=ctx.out, path=path, format=fmt, size=int(o.get("size", 0)),
                            filesystem=o.get("filesystem", "ext4"), root_device="vda",
                            kernel=kernel, initrd=initrd)

    def _build_unprivileged(self, ctx: Context, rootfs: RootfsArtifact, tree: Path,
                            raw: Path) -> tuple[str | None, str | None]:
        """Without root: unpack the tarball and run mke2fs in a user namespace mapping the
        user's subordinate ids (/etc/subuid), so files keep their owners; device nodes (which a
        user namespace cannot create) are added to the image afterwards with debugfs."""
        need("unshare", "disk mkfs (without root)")
        listing = ctx.run("tar", "--numeric-owner", "-tvf", str(rootfs.path), capture=True, log_level="TRACE")
        devices, names = [], set()
        for line in listing.stdout.splitlines():
            parts = line.split()
            if len(parts) < 6:
                continue
            names.add(parts[-1].removeprefix("./").rstrip("/"))
            if line[0] in "cb":
                major, minor = parts[2].rstrip(",").split(",")[0], parts[3] if parts[2].endswith(",") else \
                    parts[2].split(",")[1]
                uid, gid = parts[1].split("/")
                devices.append((line[0], _mode_bits(parts[0]), int(major), int(minor), int(uid), int(gid),
                                "/" + parts[-1].removeprefix("./")))
        excludes = ctx.tmp / "devices.exclude"
        excludes.write_text("".join(f".{d[-1]}\n" for d in devices))
        script = ('set -e; T="$1"; X="$2"; shift 2; trap \'rm -rf "$T"\' EXIT; mkdir -p "$T"; '
                  'tar -C "$T" --numeric-owner --exclude-from="$X" -xpf "$0"; "$@"')
        ctx.run("unshare", "--map-auto", "--map-root-user", "--", "sh", "-c", script, str(rootfs.path), str(tree),
                str(excludes), *self._mkfs_argv(str(tree), str(raw)),
                hint="without root this needs subordinate ids for your user (/etc/subuid, /etc/subgid) "
                "and newuidmap (apt-get install uidmap)")
        if devices:
            cmds = []
            for kind, mode, major, minor, uid, gid, path in devices:
                ftype = 0o020000 if kind == "c" else 0o060000
                d, _, name = path.rpartition("/")
                # debugfs links a new node into its current directory: cd there first
                cmds += [f"cd {d or '/'}", f"mknod {name} {kind} {major} {minor}",
                         f"sif {name} mode 0{ftype | mode:o}", f"sif {name} uid {uid}", f"sif {name} gid {gid}"]
            (ctx.tmp / "devices.debugfs").write_text("\n".join(cmds) + "\n")
            ctx.run("debugfs", "-w", "-f", str(ctx.tmp / "devices.debugfs"), str(raw))
        for kname, iname in (("vmlinuz", "initrd.img"), ("boot/vmlinuz", "boot/initrd.img")):
            if kname in names:
                return "/" + kname, ("/" + iname if iname in names else None)
        ks = sorted(n for n in names if n.startswith("boot/vmlinuz-"))
        if ks:
            i = "boot/initrd.img-" + ks[-1][len("boot/vmlinuz-"):]
            return "/" + ks[-1], ("/" + i if i in names else None)
        return None, None

    def derive(self, ctx: Context, parent: DiskArtifact) -> DiskArtifact:
        assert ctx.out is not None and ctx.tmp is not None
        need("qemu-img", "disk mkfs")
        if parent.root_device not in ("vda", "sda"):
            raise UserError(f"the parent image is partitioned ({parent.root_device}); the mkfs formatter "
                            "derives only from unpartitioned images", hint="derive it with formatter: guestfish")
        path = ctx.out / "disk.qcow2"
        psize = parent.size or _virtual_size(ctx, str(parent.path))
        want = int(self.options.get("size") or 0)
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", parent.format, "-b", str(parent.path), str(path)]
        if want > psize:
            argv.append(str(want))
        ctx.run(*argv)
        size = max(psize, want)
        if want > psize:
            from .blockexport import exported

            need("resize2fs", "disk mkfs (growing a derived image)")
            with exported(ctx, path, "qcow2", ctx.tmp / "export") as raw:
                r = ctx.run("e2fsck", "-f", "-p", str(raw), check=False)
                if r.returncode > 1:
                    raise StageError(f"e2fsck found errors in the parent image (exit {r.returncode})")
                ctx.run("resize2fs", str(raw))
        return DiskArtifact(root=ctx.out, path=path, format="qcow2", size=size, backing=parent.path,
                            filesystem=parent.filesystem, root_device=parent.root_device,
                            bootable=parent.bootable, kernel=parent.kernel, initrd=parent.initrd,
                            meta={"parent": parent.key})
