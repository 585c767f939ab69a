"""Image references (``[registry[:port]/]repository[:tag][@digest]``) and platforms (``os/arch``).

The rules are Docker's: the first path component is a registry when it holds a ``.`` or a ``:``
or is ``localhost``; otherwise the registry is Docker Hub and a one-component repository gets the
``library/`` prefix. An ``oci://`` prefix is accepted and ignored.
"""

from __future__ import annotations

import ipaddress
import platform as _platform
import re
from dataclasses import dataclass

from lvh.api import UserError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$")
_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")

_REF_HINT = "use [registry/]repository[:tag][@sha256:…], e.g. quay.io/lvh-images/kernel-images:6.6-main"


@dataclass(frozen=True)
class Reference:
    """A parsed reference. ``registry`` is as written (``docker.io`` for Docker Hub)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """The host[:port] the HTTP API is at."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag (default ``latest``)."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def looks_like_reference(text: str) -> bool:
    """True if ``text`` is clearly meant as a registry reference (not a local path): it starts
    with ``oci://``, or names a registry host and a tag or digest."""
    if text.startswith("oci://"):
        return True
    if text.startswith(("/", "./", "../", "~")) or "/" not in text:
        return False
    try:
        r = parse_reference(text)
    except UserError:
        return False
    first = text.split("/", 1)[0]
    return (r.tag is not None or r.digest is not None) and _is_registry(first)


def _is_registry(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost" or first.startswith("[")


def parse_reference(text: str, *, default_registry: str = DOCKER_HUB) -> Reference:
    """Parse ``text``; raise :class:`UserError` with a hint for a malformed reference."""
    raw = text
    text = text.strip().removeprefix("oci://")
    if not text:
        raise UserError("empty image reference", hint=_REF_HINT)
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise UserError(f"bad digest in reference {raw!r}",
                            hint="a digest looks like sha256:<64 hex digits>")
    registry = default_registry
    parts = text.split("/", 1)
    if len(parts) == 2 and _is_registry(parts[0]):
        registry, text = parts
        if not _HOST_RE.match(registry):
            raise UserError(f"bad registry host in reference {raw!r}", hint=_REF_HINT)
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise UserError(f"bad tag {tag!r} in reference {raw!r}",
                            hint="a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -")
    if not _REPO_RE.match(text):
        raise UserError(f"bad repository name {text!r} in reference {raw!r}",
                        hint="repository names are lowercase [a-z0-9] components joined by / . _ -")
    if registry == DOCKER_HUB and "/" not in text:
        text = f"library/{text}"
    return Reference(registry, text, tag, digest)


def is_loopback(host: str) -> bool:
    """True for localhost / 127.0.0.0/8 / ::1, with or without a port."""
    h = host
    if h.startswith("["):
        h = h[1:].split("]", 1)[0]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


# --- platforms ------------------------------------------------------------------------------

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}
#: OCI architecture → the kernel's ``uname -m`` (KernelArtifact.arch).
KERNEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "ppc64le": "ppc64le",
               "s390x": "s390x", "riscv64": "riscv64", "386": "i686"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    def to_json(self) -> dict[str, str]:
        d = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            d["variant"] = self.variant
        return d

    def matches(self, d: dict[str, str] | None) -> bool:
        if not d:
            return False
        if d.get("os") != self.os or d.get("architecture") != self.architecture:
            return False
        return self.variant is None or d.get("variant") in (None, self.variant)


def host_platform() -> Platform:
    return Platform("linux", _ARCH.get(_platform.machine(), _platform.machine()))


def parse_platform(text: str | None) -> Platform:
    """``linux/amd64``, ``linux/arm64/v8``; ``None`` or empty = this host's platform."""
    if not text:
        return host_platform()
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UserError(f"bad platform {text!r}", hint="use <os>/<arch>[/<variant>], e.g. linux/amd64")
    return Platform(parts[0], _ARCH.get(parts[1], parts[1]), parts[2] if len(parts) == 3 else None)
