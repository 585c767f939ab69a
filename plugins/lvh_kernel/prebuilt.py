"""``lvh.kernel: prebuilt`` — a kernel image you already have (+ optional modules, initrd, config).

The files are copied into the artifact (upstream's layout: ``boot/vmlinuz-<ver>``,
``lib/modules/<ver>/``), so the cache entry stays valid when the originals change. The version
is read from the image (the bzImage header, or the ``Linux version`` banner) unless given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lvh.api import (
    Context,
    HostInfo,
    KernelArtifact,
    KernelBuilder,
    Requirement,
    Schema,
    UserError,
    fields,
    hash_path,
    marshmallow,
    require_tool,
)

from .common import copy_file, image_version, install_modules, modules_root
from .make import normalize_arch


class PrebuiltOptions(Schema):
    image = fields.String(required=True, metadata={"description": "kernel image (bzImage, Image…)"})
    version = fields.String(load_default=None, allow_none=True, metadata={
        "description": "the kernel's ``uname -r`` (default: read from the image)"})
    modules = fields.String(load_default=None, allow_none=True, metadata={
        "description": "dir holding lib/modules/<version>/ (or that <version> dir)"})
    initrd = fields.String(load_default=None, allow_none=True, metadata={
        "description": "an initramfs file to boot with it"})
    config = fields.String(load_default=None, allow_none=True, metadata={
        "description": "the kernel's .config file"})
    system_map = fields.String(load_default=None, allow_none=True, metadata={
        "description": "the kernel's System.map file"})
    vmlinux = fields.String(load_default=None, allow_none=True, metadata={
        "description": "the uncompressed vmlinux (debug info)"})
    arch = fields.String(load_default=None, allow_none=True, metadata={
        "description": "x86_64 (amd64) or arm64 (aarch64), recorded on the kernel; default: the host's"})

    class Meta:
        unknown = marshmallow.RAISE


class PrebuiltKernel(KernelBuilder):
    """A given kernel image, copied into the cache with its modules/initrd/config."""

    name = "prebuilt"
    version = "1"
    Options = PrebuiltOptions

    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        return [require_tool("depmod", hint="apt-get install kmod", needed_by="prebuilt kernel modules")]

    def _paths(self, ctx: Context) -> dict[str, Any]:
        return {k: ctx.resolve(self.options[k]) for k in
                ("image", "modules", "initrd", "config", "system_map", "vmlinux") if self.options.get(k)}

    def key_material(self, ctx: Context) -> Mapping[str, Any]:
        paths = self._paths(ctx)
        if not paths["image"].is_file():
            raise UserError(f"kernel image {paths['image']} does not exist",
                            hint="give the path of a bzImage / Image")
        return {k: hash_path(p) for k, p in paths.items()}

    def kernel_version(self, ctx: Context) -> str:
        """The given version, or the one read from the image."""
        if self.options.get("version"):
            return self.options["version"]
        image = self._paths(ctx)["image"]
        ver = image_version(image)
        if not ver:
            raise UserError(f"cannot read the kernel version from {image}",
                            hint="give version: (uname -r of that kernel)")
        return ver

    def build(self, ctx: Context) -> KernelArtifact:
        assert ctx.out is not None
        paths = self._paths(ctx)
        out = ctx.out
        version = self.kernel_version(ctx)
        boot = out / "boot"
        image = copy_file(paths["image"], boot / f"vmlinuz-{version}", "kernel image")
        art = KernelArtifact(root=out, image=image, version=version,
                             arch=normalize_arch(self.options.get("arch")),
                             meta={"builder": "prebuilt", "from": str(paths["image"])})
        if "config" in paths:
            art.config = copy_file(paths["config"], boot / f"config-{version}", "kernel config")
        if "system_map" in paths:
            art.system_map = copy_file(paths["system_map"], boot / f"System.map-{version}", "System.map")
        if "initrd" in paths:
            art.initrd = copy_file(paths["initrd"], boot / f"initrd.img-{version}", "initrd")
        if "vmlinux" in paths:
            art.vmlinux = copy_file(paths["vmlinux"], boot / f"vmlinux-{version}", "vmlinux")
        if "modules" in paths:
            root, mver = modules_root(paths["modules"])
            src = root / (mver or version)
            if not src.is_dir():
                raise UserError(f"no modules for {version} in {paths['modules']}",
                                hint=f"expected {root}/{version}/ (the image's version)")
            if mver and mver != version:
                ctx.log.warning(f"modules in {src} are for {mver}, the image is {version}")
            art.modules = install_modules(ctx, src, out, version)
        return art
