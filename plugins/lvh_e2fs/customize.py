"""``lvh.customize: chroot`` — the VM-free customizer (same action schema as virt-customize).

- On a rootfs (before the disk is made): the tree is copied and the actions are applied to it;
  ``run-command`` and ``install`` run in a chroot in a private mount namespace.
- On a disk (a derived image's qcow2 overlay, or any unpartitioned ext4 image): the image file is
  copied (an overlay is only its delta, and keeps its backing file), exported as a raw block file
  by ``qemu-storage-daemon`` through FUSE, loop-mounted, and the same actions are applied to the
  mounted tree. No appliance is booted; the writes land in the overlay, so the result still costs
  only its delta.
"""

from __future__ import annotations

from typing import Any

from lvh.api import (
    Artifact,
    Context,
    CustomizeOptions,
    Customizer,
    DiskArtifact,
    HostInfo,
    Requirement,
    RootfsArtifact,
    UserError,
    action_files_key,
    require_tool,
)

from .tools import HINTS, copy_tree, kernel_in_tree, need, require_root, tool_version, tree_of
from .treeops import TreeCustomizer


class ChrootCustomizer(Customizer):
    """Applies actions without a VM: to a rootfs tree, or to an ext4 image mounted via a FUSE export."""

    name = "chroot"
    version = "1"
    Options = CustomizeOptions
    targets = frozenset({"rootfs", "disk"})

    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        return [require_tool("unshare", hint=HINTS["unshare"], needed_by="customize chroot"),
                require_tool("chroot", hint=HINTS["chroot"], needed_by="customize chroot"),
                require_tool("qemu-storage-daemon", hint=HINTS["qemu-storage-daemon"],
                             needed_by="customize chroot (on disk images)")]

    def key_material(self, ctx: Context) -> dict[str, Any]:
        files = action_files_key(ctx, self.options.get("actions"))
        return {"files": files, "qemu-storage-daemon": tool_version("qemu-storage-daemon", "--version")}

    def describe(self, ctx: Context, *inputs: Any) -> list[list[str]]:
        out = []
        for a in self.options.get("actions") or []:
            if a["type"] == "run-command":
                out.append(["chroot", "ROOT", "/bin/sh", "-ec", a["cmd"]])
            elif a["type"] == "install":
                out.append(["chroot", "ROOT", "apt-get", "install", "-y", *a["packages"]])
            else:
                out.append([a["type"], *(str(v) for k, v in a.items() if k not in ("type", "comment"))])
        return out

    def customize(self, ctx: Context, target: RootfsArtifact | DiskArtifact) -> Artifact:
        assert ctx.out is not None and ctx.tmp is not None
        actions = list(self.options.get("actions") or [])
        require_root("the chroot customizer")
        if isinstance(target, RootfsArtifact):
            tree = ctx.out / "rootfs"
            if target.format == "dir":
                copy_tree(target.path, tree, ctx)
            else:
                tree_of(ctx, target, tree)
            TreeCustomizer(ctx, tree).apply(actions)
            return RootfsArtifact(root=ctx.out, path=tree, format="dir", meta=dict(target.meta))
        return self._customize_disk(ctx, target, actions)

    def _customize_disk(self, ctx: Context, disk: DiskArtifact, actions: list[dict[str, Any]]) -> DiskArtifact:
        assert ctx.out is not None and ctx.tmp is not None
        from .blockexport import mounted

        if disk.root_device not in ("vda", "sda") or disk.filesystem not in ("ext4", "ext3", "ext2"):
            raise UserError(f"the chroot customizer works on unpartitioned ext4 images; this one is "
                            f"{disk.filesystem} on {disk.root_device}",
                            hint="use customizer: virt-customize for partitioned images")
        need("qemu-img", "customize chroot")
        path = ctx.out / disk.path.name
        # An overlay copy is only its delta and keeps the parent as backing file; a raw image
        # copy stays sparse.
        ctx.run("cp", "--sparse=always", "--reflink=auto", str(disk.path), str(path))
        with mounted(ctx, path, disk.format, ctx.tmp / "export", disk.filesystem) as mnt:
            facts = TreeCustomizer(ctx, mnt).apply(actions)
            kernel, initrd = kernel_in_tree(mnt)
        return DiskArtifact(root=ctx.out, path=path, format=disk.format, size=disk.size, backing=disk.backing,
                            filesystem=disk.filesystem, root_device=disk.root_device, bootable=disk.bootable,
                            kernel=facts.get("kernel") or kernel or disk.kernel,
                            initrd=initrd or disk.initrd, meta=dict(disk.meta))
