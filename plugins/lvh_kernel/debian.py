"""``lvh.kernel: debian`` — a Debian kernel package, by name or as a local .deb.

By name (``linux-image-amd64``, ``linux-image-6.1.0-56-amd64``): resolved with ``apt-cache``
(a meta package is followed to the ``linux-image-<ver>`` it depends on) and fetched with
``apt-get download`` — no root needed; the .deb is kept in ``~/.cache/lvh/debian/``. The host's
apt lists decide which versions exist (``apt-get update`` refreshes them).

The package is unpacked with ``dpkg-deb -x`` (no root, nothing installed) into upstream's layout:
``boot/vmlinuz-<ver>``, ``boot/config-<ver>``, ``boot/System.map-<ver>``, ``lib/modules/<ver>/``
(depmod'ed: packages ship no modules.dep), plus ``boot/initrd.img-<ver>``: a busybox initramfs
that loads the virtio/ext4/9p modules and mounts ``root=`` (``initrd: false`` to skip it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lvh.api import (
    CommandFailed,
    Context,
    HostInfo,
    KernelArtifact,
    KernelBuilder,
    Requirement,
    Schema,
    StageError,
    UserError,
    fields,
    hash_path,
    marshmallow,
    require_tool,
)

from .common import copy_file, install_modules
from .initrd import make_initrd
from .make import normalize_arch


class DebianOptions(Schema):
    package = fields.String(required=True, metadata={
        "description": "linux-image-* package name (optionally =VERSION), or a path to a .deb"})
    initrd = fields.Boolean(load_default=True)
    initrd_modules = fields.List(fields.String(), load_default=None, allow_none=True)
    arch = fields.String(load_default=None, allow_none=True)

    class Meta:
        unknown = marshmallow.RAISE


def _field(stanza: str, name: str) -> str | None:
    m = re.search(rf"^{name}:\s*(.+)$", stanza, re.M)
    return m.group(1).strip() if m else None


class DebianKernel(KernelBuilder):
    """A Debian ``linux-image-*`` package, unpacked without root."""

    name = "debian"
    version = "1"
    Options = DebianOptions

    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        return [
            require_tool("dpkg-deb", hint="apt-get install dpkg", needed_by="kernel builder debian"),
            require_tool("apt-get", hint="apt-get is part of apt", needed_by="kernel builder debian"),
            require_tool("depmod", hint="apt-get install kmod", needed_by="kernel builder debian"),
            require_tool("cpio", hint="apt-get install cpio", needed_by="the debian kernel's initrd"),
            require_tool("busybox", hint="apt-get install busybox-static",
                         needed_by="the debian kernel's initrd"),
        ]

    # -- resolving ------------------------------------------------------------------------

    def _local_deb(self, ctx: Context) -> Path | None:
        pkg = self.options["package"]
        if pkg.endswith(".deb") or "/" in pkg:
            p = ctx.resolve(pkg)
            if not p.is_file():
                raise UserError(f"Debian package {p} does not exist",
                                hint="give a linux-image-* package name or the path of a .deb")
            return p
        return None

    def resolve(self, ctx: Context) -> tuple[str, str, str]:
        """(package, version, sha256) of the package to fetch, following a meta package."""
        want = self.options["package"]
        name, _, version = want.partition("=")
        for _ in range(3):
            spec = f"{name}={version}" if version else name
            r = ctx.run("apt-cache", "show", "--no-all-versions", spec, capture=True, check=False)
            if r.returncode != 0 or not r.stdout.strip():
                raise UserError(f"Debian package {spec!r} not found in the apt lists",
                                hint="apt-cache search linux-image lists them (apt-get update refreshes)")
            stanza = r.stdout.strip().split("\n\n")[0]
            ver = _field(stanza, "Version") or ""
            sha = _field(stanza, "SHA256") or ""
            deps = _field(stanza, "Depends") or ""
            real = [d.strip().split()[0] for d in re.split(r"[,|]", deps)
                    if d.strip().startswith("linux-image-")]
            if re.search(r"linux-image-\d", name) or not real:
                return name, ver, sha
            name, version = real[0].split(":")[0], ""
        raise UserError(f"cannot resolve {want!r} to a linux-image-<version> package",
                        hint="name the versioned package, e.g. linux-image-6.1.0-56-amd64")

    def key_material(self, ctx: Context) -> Mapping[str, Any]:
        deb = self._local_deb(ctx)
        if deb:
            return {"deb": hash_path(deb)}
        name, ver, sha = self.resolve(ctx)
        return {"package": name, "version": ver, "sha256": sha}

    def download(self, ctx: Context) -> Path:
        """The .deb (downloaded once into ``~/.cache/lvh/debian/``)."""
        deb = self._local_deb(ctx)
        if deb:
            return deb
        name, ver, _sha = self.resolve(ctx)
        cache = ctx.user_cache / "debian"
        cache.mkdir(parents=True, exist_ok=True)
        found = sorted(cache.glob(f"{name}_{ver.replace(':', '%3a')}_*.deb"))
        if found:
            return found[0]
        part = cache / f".partial-{name}"
        part.mkdir(exist_ok=True)
        try:
            ctx.run("apt-get", "download", f"{name}={ver}", cwd=part,
                    hint="is deb.debian.org reachable? (apt-get update may be needed)")
        except CommandFailed as e:
            raise StageError(f"cannot download {name}={ver}: {e.result.tail[-1] if e.result.tail else ''}",
                             hint="check the network and the apt sources; or give a local .deb") from None
        debs = list(part.glob("*.deb"))
        if not debs:
            raise StageError(f"apt-get download {name}={ver} wrote no .deb")
        dest = cache / debs[0].name
        debs[0].replace(dest)
        for p in part.iterdir():
            p.unlink()
        part.rmdir()
        return dest

    # -- build ----------------------------------------------------------------------------

    def build(self, ctx: Context) -> KernelArtifact:
        assert ctx.out is not None and ctx.tmp is not None
        deb = self.download(ctx)
        unpack = ctx.tmp / "deb"
        ctx.run("dpkg-deb", "-x", deb, unpack, hint=f"is {deb} a valid .deb?")
        images = sorted((unpack / "boot").glob("vmlinuz-*")) + sorted((unpack / "boot").glob("vmlinux-*"))
        if not images:
            raise UserError(f"{deb.name} holds no boot/vmlinuz-*: not a kernel image package",
                            hint="use a linux-image-<version>-<flavour> package")
        version = images[0].name.split("-", 1)[1]
        out = ctx.out
        boot = out / "boot"
        image = copy_file(images[0], boot / f"vmlinuz-{version}", "kernel image")
        art = KernelArtifact(root=out, image=image, version=version,
                             arch=normalize_arch(self.options.get("arch")),
                             meta={"builder": "debian", "deb": deb.name})
        for src, field, dest in (("config", "config", "config"), ("System.map", "system_map", "System.map")):
            p = unpack / "boot" / f"{src}-{version}"
            if p.exists():
                setattr(art, field, copy_file(p, boot / f"{dest}-{version}", src))
        for mroot in (unpack / "lib" / "modules", unpack / "usr" / "lib" / "modules"):
            if (mroot / version).is_dir():
                art.modules = install_modules(ctx, mroot / version, out, version, move=True)
                break
        if self.options.get("initrd", True) and art.modules:
            art.initrd = make_initrd(ctx, out, version, boot / f"initrd.img-{version}",
                                     self.options.get("initrd_modules"))
        return art
