"""Upstream little-vm-helper's ``images.json`` ⇄ an lvh pipeline config (the conf.yaml dict).

``images.json`` is an array of ``{name, parent, image_size, bootable, packages, actions}``; an
action is ``{comment, type, op: {Cmd: …}}`` with Go-style op field names, matched
case-insensitively. A name may carry its format as upstream's does (``base.img`` is raw,
``k8s.qcow2`` qcow2); ``parent`` may name its parent with or without that suffix. Base images
get a ``rootfs`` (the packages) and a ``disk``; derived images get ``parent`` and ``packages``
(installed by the formatter's default customizer); actions become one ``customize`` step.
Which drivers do the work is the caller's choice (see ``lvh images build --help``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import marshmallow

from lvh.actions import CustomizeOptions, from_upstream, to_upstream
from lvh.api import ConfigError, parse_size

#: upstream's example (``lvh images example-config``).
EXAMPLE: list[dict[str, Any]] = [
    {
        "name": "base.img",
        "packages": ["less", "vim", "sudo", "openssh-server", "curl"],
        "actions": [{"comment": "disable password for root", "type": "run-command",
                     "op": {"Cmd": "passwd -d root"}}],
    },
    {"name": "k8s.qcow2", "parent": "base", "packages": ["docker.io"]},
]

DEFAULT_SIZE = "8G"
_SUFFIX_FORMAT = {".img": "raw", ".raw": "raw", ".qcow2": "qcow2"}
_KEYS = {"name", "parent", "image_size", "bootable", "packages", "actions"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def split_name(name: str) -> tuple[str, str | None]:
    """``base.img`` → ``("base", "raw")``; a name without a known suffix → ``(name, None)``."""
    for suf, fmt in _SUFFIX_FORMAT.items():
        if name.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)], fmt
    return name, None


def read_images_json(path: Path) -> list[dict[str, Any]]:
    """Read and check ``images.json``: a located :class:`ConfigError` for anything wrong."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no images.json in {path.parent}",
                          hint="create one (lvh images example-config > DIR/images.json) or pass --dir") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON: {e.msg}", file=path, line=e.lineno) from None
    return check_images(data, source=str(path))


def check_images(data: Any, *, source: str = "images.json") -> list[dict[str, Any]]:
    """Validate upstream image entries; actions are returned in lvh's flat, loaded shape."""
    if not isinstance(data, list):
        raise ConfigError("images.json must be a JSON array of images", file=source,
                          hint="see `lvh images example-config`")
    out: list[dict[str, Any]] = []
    names: dict[str, int] = {}
    for i, im in enumerate(data):
        where = f"[{i}]"
        if not isinstance(im, Mapping):
            raise ConfigError("an image must be an object with a name", file=source, path=where)
        unknown = sorted(set(im) - _KEYS)
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r}", file=source, path=where,
                              hint=f"an image has: {', '.join(sorted(_KEYS))}")
        name = im.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError("missing 'name'", file=source, path=where)
        stem, fmt = split_name(name)
        if not _NAME.match(stem):
            raise ConfigError(f"bad image name {name!r}", file=source, path=f"{where}.name",
                              hint="use lower-case letters, digits, '.', '_' and '-'")
        if stem in names:
            raise ConfigError(f"duplicate image name {name!r}", file=source, path=f"{where}.name",
                              hint=f"already used by [{names[stem]}]")
        names[stem] = i
        pkgs = im.get("packages") or []
        if not isinstance(pkgs, list) or not all(isinstance(p, str) and p for p in pkgs):
            raise ConfigError("'packages' must be a list of package names", file=source, path=f"{where}.packages")
        size = im.get("image_size")
        if size is not None:
            try:
                parse_size(size)
            except ValueError as e:
                raise ConfigError(str(e), file=source, path=f"{where}.image_size") from None
        if not isinstance(im.get("bootable", False), bool):
            raise ConfigError("'bootable' must be true or false", file=source, path=f"{where}.bootable")
        acts = im.get("actions") or []
        if not isinstance(acts, list):
            raise ConfigError("'actions' must be a list", file=source, path=f"{where}.actions")
        flat = []
        for j, a in enumerate(acts):
            try:
                flat.append(from_upstream(a))
            except ValueError as e:
                raise ConfigError(str(e), file=source, path=f"{where}.actions[{j}]") from None
        try:
            loaded = CustomizeOptions().load({"actions": flat})["actions"]
        except marshmallow.ValidationError as err:
            j, msg = _first_error(err.messages.get("actions", err.messages))
            raise ConfigError(msg, file=source, path=f"{where}.actions{j}",
                              hint="an action is {\"type\": ..., \"op\": {...}}; see `lvh images example-config`") \
                from None
        parent = im.get("parent") or None
        out.append({"name": stem, "format": fmt, "parent": split_name(parent)[0] if parent else None,
                    "image_size": size, "bootable": bool(im.get("bootable", False)), "packages": list(pkgs),
                    "actions": loaded, "upstream_name": name})
    for i, im in enumerate(out):
        if im["parent"] and im["parent"] not in names:
            raise ConfigError(f"unknown parent {im['parent']!r}", file=source, path=f"[{i}].parent",
                              hint=f"images: {', '.join(names)}")
    return out


def _first_error(messages: Any) -> tuple[str, str]:
    """The first (path suffix, message) in a nested marshmallow error dict."""
    path = ""
    while isinstance(messages, dict) and messages:
        k = sorted(messages, key=str)[0]
        messages = messages[k]
        path += f"[{k}]" if isinstance(k, int) else f".{k}"
    if isinstance(messages, list):
        messages = messages[0] if messages else "invalid"
    return path, str(messages)


def to_config(
    images: Sequence[Mapping[str, Any]],
    *,
    rootfs_provider: str,
    formatter: str,
    customizer: str,
    rootfs_options: Mapping[str, Any] | None = None,
    customizer_options: Mapping[str, Any] | None = None,
    disk_format: str | None = None,
    workdir: str | None = None,
) -> dict[str, Any]:
    """The lvh pipeline config (conf.yaml shape) for checked upstream images."""
    out: list[dict[str, Any]] = []
    for im in images:
        conf: dict[str, Any] = {"name": im["name"]}
        fmt = im.get("format") or disk_format or "qcow2"
        if im.get("parent"):
            conf["parent"] = im["parent"]
            disk: dict[str, Any] = {}
            if im.get("image_size"):
                disk["size"] = im["image_size"]
            if disk:
                conf["disk"] = disk
            if im.get("packages"):
                conf["packages"] = list(im["packages"])
        else:
            rootfs = {"provider": rootfs_provider, **dict(rootfs_options or {})}
            if im.get("packages"):
                rootfs["packages"] = list(im["packages"])
            if im.get("bootable"):
                rootfs["bootable"] = True
            conf["rootfs"] = rootfs
            conf["disk"] = {"formatter": formatter, "size": im.get("image_size") or DEFAULT_SIZE, "format": fmt}
        if im.get("actions"):
            conf["customize"] = [{"customizer": customizer, **dict(customizer_options or {}),
                                  "actions": [dict(a) for a in im["actions"]]}]
        out.append(conf)
    doc: dict[str, Any] = {"api_version": 1, "images": out}
    if workdir is not None:
        doc["workdir"] = workdir
    return doc


def from_config(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Upstream ``images.json`` entries for a pipeline config's images (the other way round:
    packages of a base image come from its rootfs, actions from every customize step)."""
    out = []
    for im in config.get("images") or []:
        entry: dict[str, Any] = {"name": im["name"]}
        if im.get("parent"):
            entry["parent"] = im["parent"]
            entry["packages"] = list(im.get("packages") or [])
        else:
            entry["packages"] = list((im.get("rootfs") or {}).get("packages") or [])
            if (im.get("rootfs") or {}).get("bootable"):
                entry["bootable"] = True
        size = (im.get("disk") or {}).get("size")
        if size:
            entry["image_size"] = size
        acts = [to_upstream(a) for c in im.get("customize") or [] for a in c.get("actions") or []]
        if acts:
            entry["actions"] = acts
        out.append(entry)
    return out
