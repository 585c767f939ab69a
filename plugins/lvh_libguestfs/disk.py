"""``lvh.disk: guestfish`` — upstream's way: ``guestfish -N IMG=disk:SIZE`` boots the libguestfs
appliance, makes an ext4 filesystem and ``tar-in``s the rootfs; ``bootable: true`` partitions the
disk (MBR), installs extlinux with upstream's extlinux.conf. Output raw or qcow2, sparse."""

from __future__ import annotations

import json
from typing import Any

from lvh.api import (
    Context,
    DiskArtifact,
    DiskFormatter,
    HostInfo,
    Requirement,
    RootfsArtifact,
    Schema,
    Size,
    UserError,
    fields,
    marshmallow,
    validate,
)

from .common import env, need, requirements, version

#: upstream's extlinux.conf (root= adapted to the partition it makes; virtio disks are vda).
EXTLINUX_CONF = """default linux
timeout 0

label linux
kernel /vmlinuz
append initrd=initrd.img root=/dev/vda1 rw console=ttyS0
"""


class GuestfishOptions(Schema):
    class Meta:
        unknown = marshmallow.RAISE

    size = Size(load_default=8 << 30, metadata={"description": "virtual size (sparse), e.g. 8G"})
    format = fields.Str(load_default="qcow2", validate=validate.OneOf(["qcow2", "raw"]),
                        metadata={"description": "the image file format"})
    bootable = fields.Bool(load_default=False,
                           metadata={"description": "MBR partition + extlinux (the rootfs needs a kernel)"})


class GuestfishFormatter(DiskFormatter):
    """ext4 disk made by guestfish tar-in (upstream's way; boots the libguestfs appliance)."""

    name = "guestfish"
    version = "1"
    Options = GuestfishOptions
    default_customizer = "virt-customize"

    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        return requirements(host, "guestfish", "qemu-img", by="disk guestfish")

    def key_material(self, ctx: Context) -> dict[str, Any]:
        return {"guestfish": version("guestfish"), "qemu-img": version("qemu-img")}

    def _script(self, image: str, tarball: str, conf: str | None) -> list[str]:
        o = self.options
        size_k = f"{max(1, int(o.get('size', 8 << 30)) // 1024)}K"
        argv = ["guestfish", "-N", f"{image}=disk:{size_k}", "--"]
        if o.get("bootable"):
            dev = "/dev/sda1"
            steps = [["part-disk", "/dev/sda", "mbr"], ["part-set-bootable", "/dev/sda", "1", "true"],
                     ["mkfs", "ext4", dev], ["mount", dev, "/"], ["tar-in", tarball, "/"],
                     ["extlinux", "/"], ["copy-in", str(conf), "/"]]
        else:
            steps = [["mkfs", "ext4", "/dev/sda"], ["mount", "/dev/sda", "/"], ["tar-in", tarball, "/"]]
        for i, s in enumerate(steps):
            argv += ([":"] if i else []) + s
        return argv

    def describe(self, ctx: Context, *inputs: Any) -> list[list[str]]:
        return [self._script("OUT/disk.raw", "ROOTFS.tar", "extlinux.conf")]

    def build(self, ctx: Context, rootfs: RootfsArtifact | None) -> DiskArtifact:
        assert ctx.out is not None and ctx.tmp is not None and rootfs is not None
        need("guestfish", "disk guestfish")
        o = self.options
        fmt = o.get("format", "qcow2")
        if rootfs.format == "tar":
            tarball = rootfs.path
        else:
            tarball = ctx.tmp / "rootfs.tar"
            ctx.run("tar", "-C", str(rootfs.path), "--numeric-owner", "--xattrs", "-cf", str(tarball), ".")
        conf = None
        if o.get("bootable"):
            conf = ctx.tmp / "extlinux.conf"
            conf.write_text(EXTLINUX_CONF)
        raw = (ctx.tmp if fmt == "qcow2" else ctx.out) / "disk.raw"
        with ctx.progress("guestfish: mkfs + tar-in (appliance VM)"):
            ctx.run(*self._script(str(raw), str(tarball), str(conf) if conf else None), env=env(ctx),
                    hint="libguestfs-test-tool shows what the appliance needs")
        path = raw
        if fmt == "qcow2":
            path = ctx.out / "disk.qcow2"
            ctx.run("qemu-img", "convert", "-O", "qcow2", str(raw), str(path))
            raw.unlink()
        kernel = initrd = None
        if o.get("bootable"):
            kernel, initrd = "/vmlinuz", "/initrd.img"
        return DiskArtifact(root=ctx.out, path=path, format=fmt, size=int(o.get("size", 0)),
                            root_device="vda1" if o.get("bootable") else "vda", bootable=bool(o.get("bootable")),
                            kernel=kernel, initrd=initrd)

    def derive(self, ctx: Context, parent: DiskArtifact) -> DiskArtifact:
        assert ctx.out is not None
        need("qemu-img", "disk guestfish")
        path = ctx.out / "disk.qcow2"
        psize = parent.size
        if not psize:
            r = ctx.run("qemu-img", "info", "--output=json", "-U", str(parent.path), capture=True)
            psize = int(json.loads(r.stdout)["virtual-size"])
        want = int(self.options.get("size") or 0)
        if want > psize and parent.root_device != "vda":
            raise UserError("growing a partitioned (bootable) image is not supported",
                            hint="give the parent the size the children need, or drop disk.size here")
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", parent.format, "-b", str(parent.path), str(path)]
        if want > psize:
            argv.append(str(want))
        ctx.run(*argv)
        if want > psize:
            # grow the filesystem too (upstream's images never grow; this one does, via the appliance)
            ctx.run("guestfish", "-a", str(path), "--", "run", ":", "e2fsck-f", "/dev/sda", ":",
                    "resize2fs", "/dev/sda", env=env(ctx))
        return DiskArtifact(root=ctx.out, path=path, format="qcow2", size=max(psize, want), backing=parent.path,
                            filesystem=parent.filesystem, root_device=parent.root_device, bootable=parent.bootable,
                            kernel=parent.kernel, initrd=parent.initrd, meta={"parent": parent.key})
