"""The customize-action schema shared by every customizer (re-exported by :mod:`lvh.api`).

An action is ``{type: …, comment: …}`` plus the fields of its type, in snake_case. The types are
little-vm-helper's ten (``run-command``, ``copy-in``, ``set-hostname``, ``mkdir``, ``upload``,
``chmod``, ``append-line``, ``link``, ``install-kernel``, ``tar-in``) plus ``install`` (packages).
Upstream's ``images.json`` spells an action ``{comment, type, op: {Cmd: …}}`` with Go-style field
names, matched case-insensitively as Go's JSON decoder does: :func:`from_upstream` turns that into
this shape, :func:`to_upstream` back.

Customizers validate their ``actions`` option with :class:`ActionField` (or subclass
:class:`CustomizeOptions`), then run the loaded dicts. Local paths in actions are relative to the
config file's folder (``ctx.resolve``); :func:`local_paths` lists them for ``key_material``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import marshmallow
from marshmallow import Schema, fields, validate

__all__ = [
    "ACTION_FIELDS",
    "ACTION_TYPES",
    "LOCAL_PATH_FIELDS",
    "ActionField",
    "CustomizeOptions",
    "from_upstream",
    "local_paths",
    "to_upstream",
]

#: Each action type and its fields (all required), in upstream's order.
ACTION_FIELDS: dict[str, tuple[str, ...]] = {
    "run-command": ("cmd",),
    "copy-in": ("local_path", "remote_dir"),
    "set-hostname": ("hostname",),
    "mkdir": ("dir",),
    "upload": ("file", "dest"),
    "chmod": ("permissions", "file"),
    "append-line": ("file", "line"),
    "link": ("target", "link"),
    "install-kernel": ("kernel_install_dir",),
    "tar-in": ("tar_file", "remote_dir"),
    "install": ("packages",),
}
ACTION_TYPES: tuple[str, ...] = tuple(ACTION_FIELDS)

#: Fields naming a file or directory on the host (relative to the config file's folder).
LOCAL_PATH_FIELDS: dict[str, str] = {
    "copy-in": "local_path",
    "upload": "file",
    "install-kernel": "kernel_install_dir",
    "tar-in": "tar_file",
}

_ALL_FIELDS = sorted({f for fs in ACTION_FIELDS.values() for f in fs})
#: Go-style / any-case spellings: lower-cased, without ``_`` and ``-``.
_NORMALIZED = {f.replace("_", ""): f for f in _ALL_FIELDS}


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


class _ActionSchema(Schema):
    class Meta:
        unknown = marshmallow.RAISE
        ordered = True

    type = fields.Str(required=True, validate=validate.OneOf(ACTION_TYPES),
                      metadata={"description": "the action: " + ", ".join(ACTION_TYPES)})
    comment = fields.Str(load_default="", metadata={"description": "what the action is for (shown in logs)"})
    cmd = fields.Str(metadata={"description": "run-command: a shell command run in the image"})
    local_path = fields.Str(metadata={"description": "copy-in: a host file or directory"})
    remote_dir = fields.Str(metadata={"description": "copy-in, tar-in: a directory in the image"})
    hostname = fields.Str(metadata={"description": "set-hostname"})
    dir = fields.Str(metadata={"description": "mkdir: a directory in the image (with parents)"})
    file = fields.Str(metadata={"description": "upload: a host file; chmod, append-line: a file in the image"})
    dest = fields.Str(metadata={"description": "upload: the path in the image"})
    permissions = fields.Str(validate=validate.Regexp(r"^[0-7]{3,4}$", error="must be octal, e.g. 0755"),
                             metadata={"description": "chmod: octal mode, e.g. 0755"})
    line = fields.Str(metadata={"description": "append-line: the line to append"})
    target = fields.Str(metadata={"description": "link: what the link points to"})
    link = fields.Str(metadata={"description": "link: the symlink to create"})
    kernel_install_dir = fields.Str(metadata={"description": "install-kernel: a host dir with boot/ and "
                                              "lib/modules/<version>/"})
    tar_file = fields.Str(metadata={"description": "tar-in: a host tarball (may be compressed)"})
    packages = fields.List(fields.Str(validate=validate.Length(min=1)), validate=validate.Length(min=1),
                           metadata={"description": "install: packages to install"})

    @marshmallow.pre_load
    def _coerce(self, data: Any, **kw: Any) -> Any:
        if not isinstance(data, Mapping):
            raise marshmallow.ValidationError("an action must be a mapping like {type: run-command, cmd: ...}")
        out = dict(data)
        if isinstance(out.get("type"), str):
            out["type"] = out["type"].strip().lower()
        if isinstance(out.get("permissions"), int) and not isinstance(out.get("permissions"), bool):
            # YAML reads 0755 as the integer 493: ambiguous, so ask for text
            raise marshmallow.ValidationError({"permissions": ["write the mode as a quoted string, e.g. '0755'"]})
        if out.get("type") == "install" and isinstance(out.get("packages"), str):
            out["packages"] = [p for p in out["packages"].replace(",", " ").split() if p]
        return out

    @marshmallow.validates_schema
    def _fields_of_type(self, data: dict[str, Any], **kw: Any) -> None:
        t = data.get("type")
        if t not in ACTION_FIELDS:
            return
        want = ACTION_FIELDS[t]
        errors: dict[str, list[str]] = {}
        for f in want:
            if data.get(f) in (None, "", []):
                errors[f] = [f"missing: a {t} action needs {', '.join(want)}"]
        for f in data:
            if f not in want and f not in ("type", "comment"):
                errors[f] = [f"not a field of {t} (it takes {', '.join(want)})"]
        if errors:
            raise marshmallow.ValidationError(errors)

    @marshmallow.post_load
    def _shape(self, data: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return {"type": data["type"], "comment": data.get("comment", ""),
                **{f: data[f] for f in ACTION_FIELDS[data["type"]]}}


class ActionField(fields.List):
    """A list of actions, validated and loaded to ``[{type, comment, <fields>}]`` dicts."""

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("metadata", {"description": "customize actions: [{type: ..., <fields>}]"})
        super().__init__(fields.Nested(_ActionSchema), **kw)


class CustomizeOptions(Schema):
    """The options every customizer takes: ``actions``. Subclass it to add driver options."""

    class Meta:
        unknown = marshmallow.RAISE

    actions = ActionField(required=True)


def local_paths(action: Mapping[str, Any]) -> list[str]:
    """The host paths an action reads (as written: resolve with ``ctx.resolve``)."""
    f = LOCAL_PATH_FIELDS.get(str(action.get("type")))
    return [str(action[f])] if f and action.get(f) else []


def from_upstream(action: Mapping[str, Any]) -> dict[str, Any]:
    """An upstream ``images.json`` action (``{comment, type, op: {Cmd: …}}``; op field names in
    any case, ``LocalPath``/``local_path``/``localpath``) in lvh's flat shape, not yet validated.
    Raises ``ValueError`` for an op field no action type has."""
    if not isinstance(action, Mapping):
        raise ValueError("an action must be an object like {\"type\": \"run-command\", \"op\": {\"Cmd\": ...}}")
    out: dict[str, Any] = {}
    for k, v in action.items():
        nk = _norm(str(k))
        if nk == "op":
            if not isinstance(v, Mapping):
                raise ValueError("'op' must be an object of the action's fields")
            for ok, ov in v.items():
                field = _NORMALIZED.get(_norm(str(ok)))
                if field is None:
                    raise ValueError(f"unknown op field {ok!r}")
                out[field] = ov
        elif nk in ("type", "comment"):
            out[nk] = v
        else:
            raise ValueError(f"unknown action key {k!r} (an action has comment, type and op)")
    return out


_GO_NAMES = {f: "".join(p.capitalize() for p in f.split("_")) for f in _ALL_FIELDS}


def to_upstream(action: Mapping[str, Any]) -> dict[str, Any]:
    """A loaded action in upstream's ``{comment, type, op: {GoName: …}}`` shape."""
    t = str(action["type"])
    out: dict[str, Any] = {}
    if action.get("comment"):
        out["comment"] = action["comment"]
    out["type"] = t
    out["op"] = {_GO_NAMES[f]: action[f] for f in ACTION_FIELDS.get(t, ()) if f in action}
    return out
