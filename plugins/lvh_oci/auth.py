"""Registry credentials, found where the usual tools keep them. First match wins:

1. the environment: ``LVH_REGISTRY_TOKEN`` (a bearer token, e.g. a GitHub token for ghcr.io), or
   ``LVH_REGISTRY_USERNAME`` + ``LVH_REGISTRY_PASSWORD``; restricted to one host when
   ``LVH_REGISTRY_HOST`` is set;
2. docker's ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``): ``credHelpers``
   for the host, then ``auths`` (``auth`` = base64 ``user:password``, or ``identitytoken``), then
   ``credsStore``; a helper is the program ``docker-credential-<name> get``;
3. podman/skopeo's ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
   ``~/.config/containers/auth.json`` (same ``auths`` shape).

None found = anonymous (public repositories on most registries).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lvh.api import UserError

from .reference import DOCKER_HUB, DOCKER_HUB_API


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    #: A bearer token to send as is (``LVH_REGISTRY_TOKEN``).
    token: str | None = None
    source: str = ""

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r}, source={self.source!r})"


def _host_keys(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in (DOCKER_HUB, DOCKER_HUB_API, "index.docker.io"):
        keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"]
    return keys


def _config_files() -> list[tuple[Path, bool]]:
    """(path, is_docker) in lookup order."""
    files: list[tuple[Path, bool]] = []
    docker_dir = os.environ.get("DOCKER_CONFIG")
    files.append((Path(docker_dir) / "config.json" if docker_dir else Path.home() / ".docker/config.json",
                  True))
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append((Path(os.environ["REGISTRY_AUTH_FILE"]), False))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append((Path(os.environ["XDG_RUNTIME_DIR"]) / "containers/auth.json", False))
    files.append((Path.home() / ".config/containers/auth.json", False))
    return files


def _helper(name: str, host: str, source: str) -> Credentials | None:
    prog = f"docker-credential-{name}"
    try:
        p = subprocess.run([prog, "get"], input=host.encode(), capture_output=True, timeout=30)
    except FileNotFoundError:
        raise UserError(f"credential helper {prog!r} named in {source} is not installed",
                        hint=f"install {prog}, or remove it from {source}") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"credential helper {prog!r} did not answer in 30 s") from None
    if p.returncode != 0:
        # "credentials not found in native keychain": not an error, just none for this host.
        return None
    try:
        d = json.loads(p.stdout)
    except ValueError:
        raise UserError(f"credential helper {prog!r} printed something that is not JSON") from None
    user, secret = d.get("Username"), d.get("Secret")
    if not secret:
        return None
    return Credentials(user if user != "<token>" else None, secret, source=f"{prog}")


def _from_auths(auths: dict, host: str, source: str) -> Credentials | None:
    for k in _host_keys(host):
        entry = auths.get(k)
        if not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(entry.get("username") or None, entry["identitytoken"], source=source)
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                raise UserError(f"{source}: the 'auth' of {k} is not base64 user:password",
                                hint="log in again with docker/podman login") from None
            return Credentials(user, pw, source=source)
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"], source=source)
    return None


def find_credentials(host: str) -> Credentials | None:
    """The credentials for registry ``host`` (host[:port]), or None for anonymous access."""
    only = os.environ.get("LVH_REGISTRY_HOST")
    if not only or only == host:
        if os.environ.get("LVH_REGISTRY_TOKEN"):
            return Credentials(token=os.environ["LVH_REGISTRY_TOKEN"], source="LVH_REGISTRY_TOKEN")
        if os.environ.get("LVH_REGISTRY_USERNAME") and os.environ.get("LVH_REGISTRY_PASSWORD"):
            return Credentials(os.environ["LVH_REGISTRY_USERNAME"], os.environ["LVH_REGISTRY_PASSWORD"],
                               source="LVH_REGISTRY_USERNAME/PASSWORD")
    for path, is_docker in _config_files():
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read registry credentials from {path}: {e}",
                            hint="fix or remove the file") from None
        if not isinstance(data, dict):
            continue
        if is_docker:
            helpers = data.get("credHelpers") or {}
            for k in _host_keys(host):
                if k in helpers:
                    c = _helper(helpers[k], k, str(path))
                    if c:
                        return c
        c = _from_auths(data.get("auths") or {}, host, str(path))
        if c:
            return c
        if is_docker and data.get("credsStore"):
            for k in _host_keys(host)[:2]:
                c = _helper(data["credsStore"], k, str(path))
                if c:
                    return c
    return None
