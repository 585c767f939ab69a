"""The ``oci`` drivers: a pipeline stage's artifact taken from a registry by reference.

```yaml
kernels:
  - {name: k66, builder: oci, ref: quay.io/lvh-images/kernel-images:6.6-main}
images:
  - name: base                      # a whole image: no rootfs stage at all
    disk: {formatter: oci, ref: quay.io/lvh-images/kind:6.6-main}
  - name: mine                      # a rootfs tarball (lvh's format) or any container image
    rootfs: {provider: oci, ref: docker.io/library/debian:bookworm}
    disk: {formatter: mkfs, size: 2G}
```

The cache key includes the manifest digest the reference resolves to (a HEAD request; no
network when the reference is pinned ``@sha256:…``), so a moved tag is pulled again and an
unchanged one is not. When the registry cannot be reached, the last digest seen for the same
reference is used (with a warning), so cached pipelines still run offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lvh.api import (
    ConfigError,
    Context,
    DiskArtifact,
    DiskFormatter,
    KernelArtifact,
    KernelBuilder,
    Requirement,
    RootfsArtifact,
    RootfsProvider,
    Schema,
    Size,
    UserError,
    fields,
    marshmallow,
    require_tool,
    validate,
)


class OciOptions(Schema):
    class Meta:
        unknown = marshmallow.RAISE

    ref = fields.String(required=True, metadata={
        "description": "the registry reference to pull: ``[registry/]repo[:tag][@sha256:…]``"})
    platform = fields.String(load_default=None, metadata={
        "description": "``os/arch[/variant]`` to pick from a multi-platform index (default: the host's)"})
    insecure = fields.Boolean(load_default=False, metadata={
        "description": "allow plain HTTP / unverified TLS for a registry not on loopback (loopback "
                       "uses plain HTTP anyway)"})
    name = fields.String(load_default=None, metadata={
        "description": "upstream-layout artifacts holding several: which image "
                       "(``data/images/<name>``) or kernel version (``data/kernels/<name>``)"})
    max_size = Size(load_default=None, metadata={
        "description": "refuse to extract more than this in total (default: 256G)"})


class _OciDriver:
    """What the three drivers share: resolving the reference and pulling into ``ctx.out``."""

    kind: str
    options: dict[str, Any]
    _digest: str | None = None

    def _ref(self) -> str:
        ref = self.options.get("ref")
        if not ref:
            raise ConfigError(f"{self.kind}.ref is required: the registry reference to pull",
                              path=f"{self.kind}.ref",
                              hint="e.g. ref: quay.io/lvh-images/kernel-images:6.6-main")
        return str(ref)

    def _opts(self, ctx: Context) -> Any:
        from .archive import Limits
        from .reference import parse_platform
        from .transfer import Options

        limits = Limits()
        if self.options.get("max_size"):
            limits.max_bytes = int(self.options["max_size"])
        plat = parse_platform(self.options["platform"]) if self.options.get("platform") else None
        return Options(platform=plat, insecure=bool(self.options.get("insecure")), limits=limits,
                       progress=ctx.progress, cancel=ctx.cancel, log=ctx.log)

    def _resolved_file(self, ctx: Context) -> Path:
        return ctx.workdir / "state" / "oci" / "resolved.json"

    def key_material(self, ctx: Context) -> dict[str, Any]:
        from .reference import parse_reference
        from .transfer import client_for

        ref = parse_reference(self._ref())
        if ref.digest:
            self._digest = ref.digest
            return {"digest": ref.digest}
        memo = self._resolved_file(ctx)
        try:
            with client_for(ref, self._opts(ctx)) as client:
                client.retries = 2
                digest = client.head_manifest(ref.repository, ref.ref)
        except UserError as e:
            known = _read_json(memo).get(str(ref))
            if known and "cannot reach" in str(e):
                ctx.log.warning("registry {} unreachable; using the last digest seen for {}: {}",
                                ref.registry, ref, known)
                self._digest = known
                return {"digest": known}
            raise
        if digest is None:
            raise UserError(f"{ref} not found", hint="check the tag (lvh kernels catalog lists kernel tags)")
        self._digest = digest
        data = _read_json(memo)
        if data.get(str(ref)) != digest:
            data[str(ref)] = digest
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f".resolved.{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(memo)
        return {"digest": digest}

    def _pull(self, ctx: Context, kind: str) -> Any:
        from .reference import parse_reference
        from .transfer import pull

        if ctx.out is None:
            raise UserError("oci driver asked to build while planning")
        ref = parse_reference(self._ref())
        if self._digest is None:
            self.key_material(ctx)
        pinned = ref.with_digest(self._digest) if self._digest else ref
        res = pull(pinned, kind, ctx.workdir, opts=self._opts(ctx), name=self.options.get("name"),
                   out=ctx.out, tmp=ctx.tmp)
        ctx.log.info("pulled {} {} ({}, {} bytes fetched)", kind, ref, res.format, res.fetched)
        return res.artifact

    def describe(self, ctx: Context, *inputs: Any) -> list[list[str]]:
        return [["pull", self.options.get("ref") or "?"]]


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


class OciKernel(_OciDriver, KernelBuilder):
    """``builder: oci`` — a kernel from a registry (lvh's format or upstream's kernel images)."""

    name = "oci"
    version = "1"
    Options = OciOptions

    def build(self, ctx: Context) -> KernelArtifact:
        return self._pull(ctx, "kernel")


class OciRootfs(_OciDriver, RootfsProvider):
    """``provider: oci`` — a rootfs tarball from a registry: an lvh rootfs artifact, or any
    container image, its layers squashed into one tarball (whiteouts applied)."""

    name = "oci"
    version = "1"
    Options = OciOptions

    def build(self, ctx: Context) -> RootfsArtifact:
        return self._pull(ctx, "rootfs")


class DeriveOptions(OciOptions):
    ref = fields.String(load_default=None, metadata={
        "description": "the registry reference to pull (``[registry/]repo[:tag][@sha256:…]``); "
                       "required for a base image, unused for a derived one (``parent:``)"})
    size = Size(load_default=None, metadata={
        "description": "derived image: its virtual size (used only if larger than the parent's)"})
    format = fields.String(load_default="qcow2", validate=validate.Equal("qcow2"), metadata={
        "description": "the format of a derived image (always a qcow2 overlay)"})


class OciDisk(_OciDriver, DiskFormatter):
    """``formatter: oci`` — a whole disk image from a registry (lvh's format, or upstream's
    ``data/images/<name>.qcow2.zst``). Needs no rootfs. Children derive as qcow2 overlays."""

    name = "oci"
    version = "1"
    Options = DeriveOptions
    needs_rootfs = False
    default_customizer = "virt-customize"

    @classmethod
    def check(cls, host: Any) -> list[Requirement]:
        return [require_tool("qemu-img", hint="apt-get install qemu-utils",
                             needed_by="disk: oci (derive)")]

    def key_material(self, ctx: Context) -> dict[str, Any]:
        if not self.options.get("ref"):  # derive: the parent's key is the input
            return {}
        return super().key_material(ctx)

    def build(self, ctx: Context, rootfs: RootfsArtifact | None = None) -> DiskArtifact:
        if rootfs is not None:
            ctx.log.warning("disk: oci pulls a whole image; the rootfs input is not used")
        return self._pull(ctx, "disk")

    def derive(self, ctx: Context, parent: DiskArtifact) -> DiskArtifact:
        if ctx.out is None:
            raise UserError("oci driver asked to derive while planning")
        out = ctx.out / "image.qcow2"
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", parent.format, "-b", str(parent.path),
                str(out)]
        size = max(int(self.options.get("size") or 0), int(parent.size or 0))
        if size:
            argv.append(str(size))
        ctx.run(*argv, hint="qemu-img makes the overlay: apt-get install qemu-utils")
        return DiskArtifact(root=ctx.out, path=out, format="qcow2", size=size or parent.size,
                            backing=parent.path, filesystem=parent.filesystem,
                            root_device=parent.root_device, bootable=parent.bootable,
                            kernel=parent.kernel, initrd=parent.initrd)


__all__ = ["OciDisk", "OciKernel", "OciRootfs"]
