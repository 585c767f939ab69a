"""The ``ubuntu`` rootfs provider: an Ubuntu root filesystem, made by lvh's ``mmdebstrap`` driver.

It does not run mmdebstrap itself. It knows Ubuntu — its suites, which mirror carries which
architecture, its components, where its archive keyring lives — turns that into options for
the ``mmdebstrap`` rootfs driver (found by name through :func:`lvh.api.driver_class`, so this
plugin imports only ``lvh.api``), and delegates ``build``/``describe``/``key_material`` to it.
"""

from __future__ import annotations

import difflib
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lvh import api
from lvh.api import fields, marshmallow, validate

#: Ubuntu releases by codename. EOL interim releases move to http://old-releases.ubuntu.com/ubuntu
#: (set ``mirror:`` for those).
SUITES: dict[str, str] = {
    "trusty": "14.04",
    "xenial": "16.04",
    "bionic": "18.04",
    "focal": "20.04",
    "jammy": "22.04",
    "noble": "24.04",
    "oracular": "24.10",
    "plucky": "25.04",
    "questing": "25.10",
    "resolute": "26.04",
}
DEFAULT_SUITE = "noble"

#: amd64 and i386 are on the main archive; every other architecture is on the ports archive.
ARCHIVE_MIRROR = "http://archive.ubuntu.com/ubuntu"
PORTS_MIRROR = "http://ports.ubuntu.com/ubuntu-ports"
ARCHIVE_ARCHITECTURES = frozenset({"amd64", "i386"})
ARCHITECTURES = ("amd64", "i386", "arm64", "armhf", "ppc64el", "s390x", "riscv64")
#: ``uname -m`` → Debian/Ubuntu architecture name.
MACHINE_TO_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "i386": "i386", "i686": "i386", "aarch64": "arm64",
    "arm64": "arm64", "armv7l": "armhf", "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64",
}

COMPONENTS = ("main", "restricted", "universe", "multiverse")
DEFAULT_COMPONENTS = ("main", "universe")
VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important",
            "debootstrap", "standard")

DEFAULT_KEYRING = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
KEYRING_HINT = ("apt-get install ubuntu-keyring (it provides " + DEFAULT_KEYRING + "), or set "
                "keyring: PATH to a copy of ubuntu-archive-keyring.gpg")

#: What makes an Ubuntu tree bootable (``bootable: true``): an init, Ubuntu's kernel for VMs and
#: its initramfs. (The mmdebstrap driver's own ``bootable`` would add Debian's kernel package.)
BOOT_PACKAGES = ("systemd-sysv", "udev", "linux-image-virtual", "initramfs-tools")

BASE = ("lvh.rootfs", "mmdebstrap")


def suite_codename(value: str) -> str:
    """``noble`` or ``24.04`` → ``noble``; a ``ValueError`` naming the close ones otherwise."""
    v = str(value).strip().lower()
    if v in SUITES:
        return v
    by_version = {ver: name for name, ver in SUITES.items()}
    if v in by_version:
        return by_version[v]
    close = difflib.get_close_matches(v, [*SUITES, *by_version], n=1)
    maybe = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown Ubuntu suite {value!r}.{maybe} Known: {', '.join(SUITES)} "
                     f"(or their versions, e.g. 24.04).")


def default_mirror(architecture: str) -> str:
    """The Ubuntu archive that carries ``architecture``."""
    return ARCHIVE_MIRROR if architecture in ARCHIVE_ARCHITECTURES else PORTS_MIRROR


def host_architecture(machine: str) -> str:
    """The Ubuntu architecture of a host whose ``uname -m`` is ``machine``."""
    try:
        return MACHINE_TO_ARCH[machine]
    except KeyError:
        raise api.UserError(f"Ubuntu has no architecture for this host ({machine})",
                            hint=f"set architecture: to one of {', '.join(ARCHITECTURES)}") from None


class _Suite(fields.Str):
    """An Ubuntu suite: a codename (``noble``) or a version (``24.04``); loads to the codename."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # suite: 24.04 in YAML is a float
        text = super()._deserialize(value, attr, data, **kw)
        try:
            return suite_codename(text)
        except ValueError as e:
            raise marshmallow.ValidationError(str(e)) from None


class UbuntuOptions(api.Schema):
    """Options of the ``ubuntu`` rootfs provider."""

    class Meta:
        unknown = marshmallow.RAISE

    suite = _Suite(load_default=DEFAULT_SUITE, metadata={
        "description": "Ubuntu release: a codename (noble, jammy, focal…) or its version (24.04)"})
    architecture = fields.Str(load_default=None, validate=validate.OneOf(ARCHITECTURES), metadata={
        "description": "Ubuntu architecture; default: the host's"})
    mirror = fields.Str(load_default=None, validate=validate.URL(
        schemes={"http", "https", "file"}, require_tld=False), metadata={
        "description": f"default: {ARCHIVE_MIRROR} for amd64/i386, {PORTS_MIRROR} for the others"})
    components = fields.List(fields.Str(validate=validate.OneOf(COMPONENTS)),
                             load_default=lambda: list(DEFAULT_COMPONENTS),
                             validate=validate.Length(min=1), metadata={
                                 "description": "archive components to use"})
    variant = fields.Str(load_default="minbase", validate=validate.OneOf(VARIANTS), metadata={
        "description": "mmdebstrap variant (package set)"})
    keyring = fields.Str(load_default=DEFAULT_KEYRING, metadata={
        "description": "the Ubuntu archive keyring, to check the archive's signatures "
                       "(relative paths: from the config file's folder)"})
    packages = fields.List(fields.Str(validate=validate.Length(min=1)), load_default=list, metadata={
        "description": "extra packages to install"})
    hooks = fields.Dict(metadata={"description": "mmdebstrap hooks, as the mmdebstrap provider takes "
                                                 "them ({setup, extract, essential, customize}: [commands])"})
    bootable = fields.Bool(load_default=False, metadata={
        "description": "install an init, Ubuntu's kernel (linux-image-virtual) and initramfs-tools"})
    format = fields.Str(validate=validate.OneOf(["auto", "dir", "tar"]), metadata={
        "description": "as the mmdebstrap provider: a directory or a tarball (default: its own)"})
    mode = fields.Str(validate=validate.OneOf(["auto", "root", "unshare"]), metadata={
        "description": "as the mmdebstrap provider: its --mode (default: its own)"})

    @marshmallow.validates_schema
    def _fits_base(self, data: Mapping[str, Any], **kw: Any) -> None:
        """Check, at config time (so errors carry the file and line), that the options this
        maps to are ones the installed mmdebstrap driver takes."""
        try:
            cls = api.driver_class(*BASE)
        except api.LvhError as e:
            raise marshmallow.ValidationError(
                f"the ubuntu provider builds on lvh's mmdebstrap rootfs driver: {e.message}") from None
        arch = data.get("architecture") or MACHINE_TO_ARCH.get(platform.machine(), "amd64")
        mapped = base_options(data, architecture=arch, keyring=str(data.get("keyring") or DEFAULT_KEYRING))
        try:
            cls.Options().load(mapped)
        except marshmallow.ValidationError as e:
            raise marshmallow.ValidationError(e.messages) from None


def base_options(options: Mapping[str, Any], *, architecture: str, keyring: str) -> dict[str, Any]:
    """The ``mmdebstrap`` driver's options for these ``ubuntu`` options."""
    packages = list(options.get("packages") or [])
    if options.get("bootable"):
        packages += [p for p in BOOT_PACKAGES if p not in packages]
    out: dict[str, Any] = {
        "suite": options.get("suite") or DEFAULT_SUITE,
        "mirror": options.get("mirror") or default_mirror(architecture),
        "variant": options.get("variant") or "minbase",
        "components": list(options.get("components") or DEFAULT_COMPONENTS),
        "architecture": architecture,
        "keyring": [keyring],
        "packages": packages,
        # Not passed on: the mmdebstrap driver's `bootable` adds *Debian's* kernel package.
        "bootable": False,
    }
    for key in ("hooks", "format", "mode"):
        if options.get(key):
            out[key] = options[key]
    return out


class UbuntuProvider(api.RootfsProvider):
    """An Ubuntu root filesystem (``rootfs: {provider: ubuntu, suite: noble}``), made by lvh's
    ``mmdebstrap`` rootfs driver from the Ubuntu archive (or ports, by architecture)."""

    name = "ubuntu"
    api_version = 1
    version = "1"
    Options = UbuntuOptions

    # -- mapping ---------------------------------------------------------------------------

    def architecture(self, ctx: api.Context) -> str:
        return self.options.get("architecture") or host_architecture(ctx.host.arch)

    def keyring(self, ctx: api.Context) -> Path:
        """The keyring file; a UserError with an install hint if it is missing."""
        path = ctx.resolve(self.options.get("keyring") or DEFAULT_KEYRING)
        if not path.is_file():
            raise api.UserError(
                f"the Ubuntu archive keyring {path} does not exist (rootfs provider 'ubuntu' needs "
                f"it to check the archive's signatures)", hint=KEYRING_HINT)
        return path

    def base(self, ctx: api.Context) -> api.RootfsProvider:
        """The ``mmdebstrap`` driver, with this image's options mapped and validated."""
        cls = api.driver_class(*BASE)
        mapped = base_options(self.options, architecture=self.architecture(ctx),
                              keyring=str(self.keyring(ctx)))
        try:
            loaded = cls.Options().load(mapped)
        except marshmallow.ValidationError as e:
            raise api.UserError(
                f"the installed mmdebstrap driver does not take the options the ubuntu provider "
                f"gives it: {e.messages}",
                hint="install versions of lvh and lvh-plugin-ubuntu made for each other") from None
        driver = cls(loaded)
        assert isinstance(driver, api.RootfsProvider)
        return driver

    # -- the driver ------------------------------------------------------------------------

    @classmethod
    def check(cls, host: api.HostInfo) -> list[api.Requirement]:
        try:
            reqs = list(api.driver_class(*BASE).check(host))
        except api.LvhError as e:
            reqs = [api.Requirement("lvh rootfs driver mmdebstrap", False, e.message, e.hint)]
        found = Path(DEFAULT_KEYRING).is_file()
        reqs.append(api.Requirement("ubuntu-keyring", found, DEFAULT_KEYRING if found else "not found",
                                    None if found else KEYRING_HINT))
        return reqs

    def key_material(self, ctx: api.Context) -> Mapping[str, Any]:
        base = self.base(ctx)
        return {
            "base": f"{base.name} {base.version}",
            "base_options": base.options,
            "base_key": dict(base.key_material(ctx)),
            "keyring": api.hash_path(self.keyring(ctx)),
        }

    def describe(self, ctx: api.Context, *inputs: api.Artifact | None) -> list[list[str]]:
        return self.base(ctx).describe(ctx, *inputs)

    def build(self, ctx: api.Context) -> api.RootfsArtifact:
        base = self.base(ctx)
        suite = self.options.get("suite") or DEFAULT_SUITE
        ctx.log.info("Ubuntu {} ({}) {} from {}", suite, SUITES.get(suite, "?"),
                     base.options.get("architecture"), base.options.get("mirror"))
        artifact = base.build(ctx)
        artifact.meta = {**artifact.meta, "distro": "ubuntu", "suite": suite,
                         "release": SUITES.get(suite, ""), "architecture": base.options.get("architecture")}
        return artifact
