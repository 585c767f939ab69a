"""``lvh.kernel: debian`` — a Debian kernel package, by name or as a local .deb.

By name (``linux-image-amd64``, ``linux-image-6.1.0-56-amd64``): resolved with ``apt-cache``
(a meta package is followed to the ``linux-image-<ver>`` it depends on) and fetched with
``apt-get download`` — no root needed; the .deb is kept in ``~/.cache/lvh/debian/``. The host's
apt lists decide which versions exist (``apt-get update`` refreshes them). With ``suite:`` (e.g.
``bookworm``) the archive's own Packages index is read instead (``mirror:``, default
deb.debian.org; kept a day) and the .deb fetched over HTTP and checked against its SHA256 — for
hosts without apt.

The package is unpacked with ``dpkg-deb -x`` (no root, nothing installed) into upstream's layout:
``boot/vmlinuz-<ver>``, ``boot/config-<ver>``, ``boot/System.map-<ver>``, ``lib/modules/<ver>/``
(depmod'ed: packages ship no modules.dep), plus ``boot/initrd.img-<ver>``: a busybox initramfs
that loads the virtio/ext4/9p modules and mounts ``root=`` (``initrd: false`` to skip it).
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import time
import urllib.request
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
    initrd = fields.Boolean(load_default=True, metadata={
        "description": "write ``boot/initrd.img-<ver>``: a busybox initramfs that loads the boot "
                       "modules and mounts ``root=``"})
    initrd_modules = fields.List(fields.String(), load_default=None, allow_none=True, metadata={
        "description": "modules the initrd loads, with their dependencies (default: virtio, ext4, "
                       "9p, vsock); names the package lacks are skipped"})
    arch = fields.String(load_default=None, allow_none=True, metadata={
        "description": "x86_64 (amd64) or arm64 (aarch64), default: the host's; recorded on the "
                       "kernel, and with ``suite`` picks the index's ``binary-<arch>``"})
    suite = fields.String(load_default=None, allow_none=True, metadata={
        "description": "read the archive's Packages index of this suite (e.g. bookworm) instead of "
                       "the host's apt lists (for hosts without apt)"})
    mirror = fields.String(load_default="http://deb.debian.org/debian", metadata={
        "description": "with ``suite``: the Debian mirror to read the index and fetch the .deb from"})

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

    @property
    def debian_arch(self) -> str:
        return {"x86_64": "amd64", "arm64": "arm64"}[normalize_arch(self.options.get("arch"))]

    def _index(self, ctx: Context) -> dict[str, str]:
        """The ``linux-image-*`` stanzas of the suite's Packages index (kept a day in the cache)."""
        suite, mirror = self.options["suite"], self.options["mirror"].rstrip("/")
        cache = ctx.user_cache / "debian" / "index"
        cache.mkdir(parents=True, exist_ok=True)
        f = cache / f"{re.sub(r'[^A-Za-z0-9._-]', '_', mirror)}_{suite}_{self.debian_arch}.json"
        if f.exists() and time.time() - f.stat().st_mtime < 86400:
            return json.loads(f.read_text())
        url = f"{mirror}/dists/{suite}/main/binary-{self.debian_arch}/Packages.xz"
        ctx.log.info(f"fetching {url}")
        try:
            with urllib.request.urlopen(url, timeout=120) as resp:
                text = lzma.decompress(resp.read()).decode("utf-8", "replace")
        except (OSError, lzma.LZMAError) as e:
            raise StageError(f"cannot read the Packages index {url}: {e}",
                             hint="check the suite name and the mirror, and the network") from None
        stanzas = {}
        for st in text.split("\n\n"):
            if st.startswith("Package: linux-image-"):
                stanzas[st.split("\n", 1)[0].split(": ", 1)[1].strip()] = st
        tmp = f.with_suffix(f".{os.getpid()}")
        tmp.write_text(json.dumps(stanzas))
        tmp.replace(f)
        return stanzas

    def _stanza(self, ctx: Context, name: str, version: str) -> str | None:
        if self.options.get("suite"):
            st = self._index(ctx).get(name)
            if st and version and _field(st, "Version") != version:
                return None
            return st
        spec = f"{name}={version}" if version else name
        r = ctx.run("apt-cache", "show", "--no-all-versions", spec, capture=True, check=False)
        if r.returncode != 0 or not r.stdout.strip():
            return None
        return r.stdout.strip().split("\n\n")[0]

    def resolve(self, ctx: Context) -> tuple[str, str, str]:
        """(package, version, sha256) of the package to fetch, following a meta package."""
        want = self.options["package"]
        name, _, version = want.partition("=")
        for _ in range(3):
            spec = f"{name}={version}" if version else name
            stanza = self._stanza(ctx, name, version)
            if stanza is None:
                where = (f"the {self.options['suite']} Packages index" if self.options.get("suite")
                         else "the apt lists")
                raise UserError(f"Debian package {spec!r} not found in {where}",
                                hint="apt-cache search linux-image lists them (apt-get update refreshes); "
                                     "or set suite: (bookworm, trixie, …)")
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
        return {"package": name, "version": ver, "sha256": sha, "arch": self.debian_arch}

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
        if self.options.get("suite"):
            return self._download_from_index(ctx, name, cache)
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

    def _download_from_index(self, ctx: Context, name: str, cache: Path) -> Path:
        stanza = self._index(ctx)[name]
        filename, sha = _field(stanza, "Filename") or "", _field(stanza, "SHA256") or ""
        dest = cache / os.path.basename(filename)
        if dest.exists() and hash_path(dest) == sha:
            return dest
        url = f"{self.options['mirror'].rstrip('/')}/{filename}"
        ctx.log.info(f"downloading {url}")
        part = dest.with_name(f".partial-{dest.name}-{os.getpid()}")
        try:
            with urllib.request.urlopen(url, timeout=600) as resp, part.open("wb") as fh:
                shutil.copyfileobj(resp, fh, 1 << 20)
            if hash_path(part) != sha:
                raise StageError(f"{url}: SHA256 mismatch", hint="retry; the mirror may be syncing")
            part.replace(dest)
        except OSError as e:
            raise StageError(f"cannot download {url}: {e}", hint="check the network and the mirror") from None
        finally:
            part.unlink(missing_ok=True)
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
