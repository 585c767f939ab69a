"""``lvh.rootfs: mmdebstrap`` — bootstrap a Debian (or derivative) root filesystem.

As root the tree is written as a directory (``format: dir``): the next stage (``mke2fs -d``, or a
VM-free customizer) reads it directly, with no tarball packed and unpacked on the way. Without
root, mmdebstrap's ``unshare`` mode writes a tarball (ownership kept in the archive).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from typing import Any

from lvh.api import (
    CommandFailed,
    Context,
    HostInfo,
    Requirement,
    RootfsArtifact,
    RootfsProvider,
    Schema,
    StageError,
    ToolMissing,
    UserError,
    fields,
    hash_path,
    marshmallow,
    require_tool,
    validate,
)

DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_HINT = "install it: apt-get install mmdebstrap debian-archive-keyring"
_KERNEL_PKG = {"amd64": "linux-image-amd64", "arm64": "linux-image-arm64", "i386": "linux-image-686",
               "ppc64el": "linux-image-powerpc64le", "s390x": "linux-image-s390x"}


class _Hooks(Schema):
    class Meta:
        unknown = marshmallow.RAISE

    setup = fields.List(fields.Str(), load_default=list, metadata={
        "description": "``--setup-hook``: after the chroot is set up, before any package is fetched "
                       "(the chroot dir is ``$1``)"})
    extract = fields.List(fields.Str(), load_default=list, metadata={
        "description": "``--extract-hook``: after the Essential packages are extracted, before they "
                       "are installed"})
    essential = fields.List(fields.Str(), load_default=list, metadata={
        "description": "``--essential-hook``: after the Essential packages are installed, before the "
                       "rest"})
    customize = fields.List(fields.Str(), load_default=list, metadata={
        "description": "``--customize-hook``: after all packages are installed, before cleanup "
                       "(e.g. ``chroot \"$1\" passwd --delete root``)"})


class MmdebstrapOptions(Schema):
    class Meta:
        unknown = marshmallow.RAISE

    suite = fields.Str(load_default="sid", metadata={"description": "release: sid, bookworm, trixie…"})
    mirror = fields.Str(load_default=DEFAULT_MIRROR, metadata={"description": "the apt mirror URL"})
    variant = fields.Str(load_default="important", validate=validate.OneOf(
        ["extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important", "debootstrap",
         "-", "standard"]), metadata={"description": "mmdebstrap --variant (upstream: default)"})
    components = fields.List(fields.Str(), load_default=lambda: ["main"], metadata={
        "description": "archive components (--components), e.g. [main, contrib]"})
    architecture = fields.Str(load_default=None, allow_none=True,
                              metadata={"description": "dpkg architecture (default: the host's)"})
    keyring = fields.List(fields.Str(), load_default=list,
                          metadata={"description": "keyring files or dirs (--keyring)"})
    packages = fields.List(fields.Str(validate=validate.Length(min=1)), load_default=list, metadata={
        "description": "extra packages to install (--include)"})
    hooks = fields.Nested(_Hooks, load_default=dict,
                          metadata={"description": "{setup, extract, essential, customize}: hook commands"})
    bootable = fields.Bool(load_default=False, metadata={"description": "add the distro kernel package"})
    format = fields.Str(load_default="auto", validate=validate.OneOf(["auto", "dir", "tar"]),
                        metadata={"description": "auto: a directory as root, a tarball otherwise"})
    mode = fields.Str(load_default="auto", validate=validate.OneOf(["auto", "root", "unshare"]),
                      metadata={"description": "auto: root as root, unshare otherwise"})


@functools.lru_cache(maxsize=4)
def _version(tool: str, *args: str) -> str:
    try:
        p = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    return (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else "unknown"


@functools.lru_cache(maxsize=1)
def _host_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


class MmdebstrapProvider(RootfsProvider):
    """A Debian root filesystem made by mmdebstrap (upstream's default suite: sid)."""

    name = "mmdebstrap"
    version = "1"
    Options = MmdebstrapOptions

    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        return [require_tool("mmdebstrap", hint=APT_HINT, needed_by="rootfs mmdebstrap")]

    def _mode_format(self) -> tuple[str, str]:
        mode = self.options.get("mode", "auto")
        if mode == "auto":
            mode = "root" if os.geteuid() == 0 else "unshare"
        fmt = self.options.get("format", "auto")
        if fmt == "auto":
            fmt = "dir" if mode == "root" else "tar"
        return mode, fmt

    def packages(self) -> list[str]:
        o = self.options
        pkgs = list(o.get("packages") or [])
        if o.get("bootable"):
            arch = o.get("architecture") or _host_arch()
            pkgs.insert(0, _KERNEL_PKG.get(arch, f"linux-image-{arch}"))
        return pkgs

    def argv(self, target: str) -> list[str]:
        o = self.options
        mode, fmt = self._mode_format()
        argv = ["mmdebstrap", f"--mode={mode}", f"--format={'directory' if fmt == 'dir' else 'tar'}",
                f"--variant={o['variant']}", f"--components={','.join(o['components'])}"]
        if o.get("architecture"):
            argv.append(f"--architectures={o['architecture']}")
        pkgs = self.packages()
        if pkgs:
            argv.append("--include=" + ",".join(pkgs))
        for k in o.get("keyring") or []:
            argv.append(f"--keyring={k}")
        for kind in ("setup", "extract", "essential", "customize"):
            for h in (o.get("hooks") or {}).get(kind, []):
                argv.append(f"--{kind}-hook={h}")
        argv += [o["suite"], target, o["mirror"]]
        return argv

    def key_material(self, ctx: Context) -> dict[str, Any]:
        mode, fmt = self._mode_format()
        keyrings = {k: hash_path(ctx.resolve(k)) for k in self.options.get("keyring") or []}
        return {"mmdebstrap": _version("mmdebstrap", "--version"), "mode": mode, "format": fmt,
                "arch": self.options.get("architecture") or _host_arch(), "keyrings": keyrings}

    def describe(self, ctx: Context, *inputs: Any) -> list[list[str]]:
        _, fmt = self._mode_format()
        return [self.argv("OUT/rootfs" + (".tar" if fmt == "tar" else ""))]

    def build(self, ctx: Context) -> RootfsArtifact:
        assert ctx.out is not None
        import shutil

        if not shutil.which("mmdebstrap"):
            raise ToolMissing("mmdebstrap", hint=APT_HINT, needed_by="rootfs mmdebstrap")
        _, fmt = self._mode_format()
        target = ctx.out / ("rootfs.tar" if fmt == "tar" else "rootfs")
        o = self.options
        try:
            with ctx.progress(f"mmdebstrap {o['suite']} ({o['variant']})"):
                ctx.run(*self.argv(str(target)), env={"TMPDIR": str(ctx.tmp or ctx.out)})
        except CommandFailed as e:
            raise self._explain(e) from e
        return RootfsArtifact(root=ctx.out, path=target, format=fmt,
                              meta={"suite": o["suite"], "variant": o["variant"], "packages": self.packages()})

    def _explain(self, e: CommandFailed) -> StageError | UserError:
        """Turn mmdebstrap's failure output into one clear line."""
        o = self.options
        text = "\n".join([*e.result.tail, e.result.stdout, e.result.stderr])
        m = re.search(r"Unable to locate package (\S+)", text) or \
            re.search(r"Package '?(\S+?)'? has no installation candidate", text)
        if m:
            return UserError(f"package {m.group(1)!r} does not exist in {o['suite']} ({o['mirror']})",
                             hint="check its name (apt-cache search, packages.debian.org) and the suite/"
                             "components")
        if re.search(r"Could not resolve|Failed to fetch|Connection failed|Could not connect|"
                     r"Temporary failure resolving|No route to host|Unable to connect", text):
            return UserError(f"the mirror {o['mirror']} cannot be reached (suite {o['suite']})",
                             hint="check the mirror URL and the network/proxy; e.g. mirror: " + DEFAULT_MIRROR)
        if re.search(r"does not have a Release file|Release' does not have|404\s+Not Found", text):
            return UserError(f"suite {o['suite']!r} not found on {o['mirror']}",
                             hint="check the suite name (e.g. bookworm, trixie, sid) and the mirror URL")
        return StageError(e.message, hint="see the mmdebstrap output above; rerun with -v for the full log")
