"""Generate the config reference (``docs/config.md``) from the marshmallow schemas.

    python -m lvh.docgen > docs/config.md          # the core schema + lvh's built-in drivers
    python -m lvh.docgen --all                     # + every installed third-party driver

The core file shape comes from the schemas in :mod:`lvh.config`, each driver's options from its
``Options`` schema (``metadata={"description": ...}`` on a field becomes its description, the
class docstring the driver's). A test checks that the committed ``docs/config.md`` is what this
prints, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

import marshmallow
from marshmallow import Schema, fields, validate

from lvh.api import DRIVER_GROUPS, Driver, Size

#: The key that names the driver of each stage kind, and where it sits in the file.
DRIVER_KEY = {
    "rootfs": ("provider", "images[].rootfs: {provider: NAME, ...options}"),
    "disk": ("formatter", "images[].disk: {formatter: NAME, ...options}"),
    "customize": ("customizer", "images[].customize[]: {customizer: NAME, ...options}"),
    "kernel": ("builder", "kernels[]: {name: NAME, builder: DRIVER, ...options}"),
    "runner": ("name", "runs[].runner: NAME or {name: NAME, ...options}"),
}
KIND_TITLE = {
    "rootfs": "Root filesystem providers",
    "disk": "Disk formatters",
    "customize": "Customizers",
    "kernel": "Kernel builders",
    "runner": "Runners",
}
CORE_TITLES = {
    "ConfigSchema": "The file",
    "ImageSchema": "`images[]`",
    "KernelSchema": "`kernels[]`",
    "RunSchema": "`runs[]`",
    "HostMountSchema": "`runs[].host_mounts[]`",
}
CORE_BLURB = {
    "ConfigSchema": "The top level of a pipeline file (`conf.yaml`).",
    "ImageSchema": "An image: a base image (`rootfs` + `disk`) or a derived one (`parent`).",
    "KernelSchema": "A kernel. Every key besides these is an option of its `builder` (see Kernel "
                    "builders below).",
    "RunSchema": "A VM run: boot `image` (and `kernel`), run `command` or boot to init.",
    "HostMountSchema": "A host directory shared into the guest (9p).",
}


class DocgenError(Exception):
    """A driver could not be documented (it failed to load)."""


# --------------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------------

_TYPE_NAMES: list[tuple[type[fields.Field], str]] = [
    (Size, "size (`2G`, `512M`)"),
    (fields.Url, "URL"),
    (fields.Email, "email"),
    (fields.Boolean, "boolean"),
    (fields.Integer, "integer"),
    (fields.Float, "number"),
    (fields.Decimal, "number"),
    (fields.Number, "number"),
    (fields.DateTime, "date-time"),
    (fields.String, "string"),
    (fields.Dict, "mapping"),
    (fields.Mapping, "mapping"),
    (fields.Raw, "any"),
]


def type_name(field: fields.Field) -> str:
    """A reader's name for the type of ``field``."""
    if "type" in field.metadata:
        return str(field.metadata["type"])
    if isinstance(field, fields.List):
        return f"list of {type_name(field.inner)}"
    if isinstance(field, fields.Tuple):
        return "list (" + ", ".join(type_name(f) for f in field.tuple_fields) + ")"
    if isinstance(field, fields.Nested):
        return "mapping (below)"
    for cls, name in _TYPE_NAMES:
        if type(field) is cls:
            return name
    own = type(field).__dict__.get("__doc__")  # a custom field's own docstring, not inherited
    if own and type(field).__module__ != fields.__name__:
        first = inspect.cleandoc(own).split("\n")[0].split(":")[0].rstrip(".")
        return _md(re.sub(r"^(An?|The) ", "", first))
    for cls, name in _TYPE_NAMES:
        if isinstance(field, cls):
            return name
    return "any"


def _constraints(field: fields.Field) -> list[str]:
    out: list[str] = []
    for v in getattr(field, "validators", []) or []:
        if isinstance(v, validate.OneOf):
            out.append("one of: " + ", ".join(f"`{c}`" for c in v.choices))
        elif isinstance(v, validate.Range):
            lo = "" if v.min is None else f"{v.min}"
            hi = "" if v.max is None else f"{v.max}"
            if v.min is not None and v.max is not None:
                out.append(f"{lo} to {hi}")
            elif v.min is not None:
                out.append(f"{'>' if not v.min_inclusive else '≥'} {lo}")
            elif v.max is not None:
                out.append(f"{'<' if not v.max_inclusive else '≤'} {hi}")
        elif isinstance(v, validate.Length):
            if v.equal is not None:
                out.append(f"exactly {v.equal} long")
            elif v.min and v.max:
                out.append(f"{v.min} to {v.max} long")
            elif v.min:
                out.append("not empty" if v.min == 1 else f"at least {v.min} long")
            elif v.max:
                out.append(f"at most {v.max} long")
        elif isinstance(v, validate.Equal):
            out.append(f"must be `{v.comparable}`")
        elif isinstance(v, validate.Regexp):
            out.append(f"matches `{v.regex.pattern}`")
    if isinstance(field, fields.List):
        out += [f"each {c}" for c in _constraints(field.inner)]
    return out


def default_text(field: fields.Field) -> str:
    """The default as YAML would show it, ``required``, or empty."""
    if field.required:
        return "**required**"
    d = field.load_default
    if d is marshmallow.missing:
        return ""
    if callable(d):
        try:
            d = d()
        except Exception:  # a default computed from the host (e.g. its architecture)
            return "(computed)"
    if d is None:
        return ""
    if isinstance(d, bool):
        return f"`{str(d).lower()}`"
    if isinstance(d, str) and not d:
        return '`""`'
    if isinstance(d, (int, float, str)):
        return f"`{d}`"
    try:
        return f"`{json.dumps(d, default=str)}`"
    except (TypeError, ValueError):
        return f"`{d!r}`"


def _md(text: str) -> str:
    """reStructuredText literals (``x``) as Markdown ones (`x`)."""
    return re.sub(r"(?<!`)``(?!`)", "`", text)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def schema_table(schema: type[Schema] | Schema, *, skip: Iterable[str] = ()) -> tuple[list[str], list[
        tuple[str, type[Schema]]]]:
    """A Markdown table of ``schema``'s fields, and the nested schemas to describe after it."""
    inst = schema() if isinstance(schema, type) else schema
    nested: list[tuple[str, type[Schema]]] = []
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    skipped = set(skip)
    for name, field in inst.fields.items():
        if name in skipped or field.dump_only:
            continue
        key = field.data_key or name
        desc = _md(str(field.metadata.get("description", "")))
        cons = _constraints(field)
        if cons:
            desc = (desc + ("; " if desc else "")) + "; ".join(cons)
        rows.append(f"| `{key}` | {_cell(type_name(field))} | {_cell(default_text(field))} | {_cell(desc)} |")
        target = field.inner if isinstance(field, fields.List) else field
        if isinstance(target, fields.Nested):
            sch = target.nested
            if callable(sch) and not isinstance(sch, type):
                sch = sch()
            if isinstance(sch, Schema):
                sch = type(sch)
            if isinstance(sch, type) and issubclass(sch, Schema):
                nested.append((key, sch))
    if len(rows) == 2:
        rows = ["No options."]
    return rows, nested


def _unknown_policy(schema: type[Schema]) -> str:
    unknown = getattr(schema.Meta, "unknown", marshmallow.RAISE)
    return unknown


# --------------------------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------------------------


def _dist_name(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "?"


def driver_entry_points(group: str, *, all_dists: bool) -> list[md.EntryPoint]:
    eps = [ep for ep in md.entry_points(group=group) if all_dists or _dist_name(ep) == "lvh"]
    return sorted(eps, key=lambda ep: (ep.name, _dist_name(ep)))


def _first_paragraph(obj: Any) -> str:
    """The first paragraph of ``obj``'s own docstring (a class's, not one it inherits)."""
    own = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    doc = inspect.cleandoc(own) if isinstance(own, str) else ""
    return _md(" ".join(doc.split("\n\n")[0].split()))


def driver_section(kind: str, name: str, cls: type[Driver], dist: str, *, show_dist: bool,
                   seen: dict[type[Schema], str] | None = None) -> list[str]:
    key, _ = DRIVER_KEY[kind]
    head = f"### `{key}: {name}`"
    lines = [head, ""]
    about = _first_paragraph(cls)
    if about:
        lines += [about, ""]
    if show_dist and dist != "lvh":
        lines += [f"From the distribution `{dist}`.", ""]
    skip = {key} if kind == "runner" else set()
    rows, nested = schema_table(cls.Options, skip=skip)
    lines += rows
    lines += _nested_sections(nested, prefix=f"{name}.", level="####", seen=seen)
    return lines


def _nested_sections(nested: list[tuple[str, type[Schema]]], *, prefix: str, level: str,
                     seen: dict[type[Schema], str] | None = None) -> list[str]:
    """A table per nested schema; one already shown (e.g. the actions every customizer takes)
    is referred to, not repeated."""
    seen = {} if seen is None else seen
    out: list[str] = []
    for key, sch in nested:
        title = f"{prefix}{key}"
        out += ["", f"{level} `{title}`", ""]
        if sch in seen:
            out += [f"The same fields as `{seen[sch]}` above."]
            continue
        seen[sch] = title
        rows, more = schema_table(sch)
        about = _first_paragraph(sch)
        if about:
            out += [about, ""]
        out += rows
        out += _nested_sections(more, prefix=f"{title}.", level=level, seen=seen)
    return out


# --------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------


def core_schemas() -> list[tuple[str, type[Schema]]]:
    """The public schemas of :mod:`lvh.config`, in the order they are defined."""
    from lvh import config

    found = []
    for name, obj in vars(config).items():
        if (isinstance(obj, type) and issubclass(obj, Schema) and obj.__module__ == config.__name__
                and not name.startswith("_")):
            found.append((name, obj))
    order = list(CORE_TITLES)
    found.sort(key=lambda it: order.index(it[0]) if it[0] in order else len(order))
    return found


def _matrix_section() -> list[str]:
    """``runs[].matrix``, from the docstring of :mod:`lvh.matrix` (where it is implemented)."""
    try:
        from lvh import matrix
    except ImportError:
        return []
    paragraphs = inspect.cleandoc(matrix.__doc__ or "").split("\n\n")
    if len(paragraphs) < 2:
        return []
    # The first paragraph is about the module; the rest is about the config.
    return ["## `runs[].matrix`", "", "A run with `matrix:` becomes one run per combination "
            "(`lvh pipeline matrix` prints them, e.g. for a CI job matrix).", "",
            _md("\n\n".join(paragraphs[1:])), ""]


def generate(*, all_dists: bool = False, strict: bool = True,
             load: Callable[[md.EntryPoint], Any] | None = None) -> str:
    """The config reference, as Markdown. ``strict``: a driver that fails to load is a
    :class:`DocgenError` (otherwise it is listed as such)."""
    load = load or (lambda ep: ep.load())
    out = [
        "# Config reference",
        "",
        "<!-- Generated by `python -m lvh.docgen > docs/config.md` from the schemas; do not edit. -->",
        "",
        "A pipeline file (`conf.yaml`) is YAML. Unknown keys are errors, and every error names the "
        "file, line and path (`conf.yaml:7 images[0].rootfs.suite: …`). Sizes take `K`, `M`, `G`, "
        "`T` (binary units). Relative paths are relative to the config file's folder. "
        "`examples/` has complete pipelines; `lvh plugins list` shows the installed drivers.",
        "",
    ]
    for name, sch in core_schemas():
        out += [f"## {CORE_TITLES.get(name, name)}", ""]
        blurb = _first_paragraph(sch) or CORE_BLURB.get(name)
        if blurb:
            out += [blurb, ""]
        rows, nested = schema_table(sch)
        out += rows
        out += [ln for ln in _nested_sections([n for n in nested if n[1].__name__ not in CORE_TITLES],
                                              prefix="", level="###")]
        out.append("")
    out += _matrix_section()
    seen: dict[type[Schema], str] = {}
    failed: list[str] = []
    for group, base in DRIVER_GROUPS.items():
        kind = base.kind
        where = DRIVER_KEY[kind][1]
        eps = driver_entry_points(group, all_dists=all_dists)
        out += [f"## {KIND_TITLE[kind]}", "", f"`{where}` — entry-point group `{group}`.", ""]
        if not eps:
            out += ["None installed.", ""]
        for ep in eps:
            try:
                cls = load(ep)
            except Exception as e:
                msg = f"{kind} driver {ep.name!r} ({ep.value}, from {_dist_name(ep)}) failed to load: " \
                      f"{type(e).__name__}: {e}"
                if strict:
                    raise DocgenError(msg) from e
                failed.append(msg)
                continue
            out += driver_section(kind, ep.name, cls, _dist_name(ep), show_dist=all_dists, seen=seen)
            out.append("")
    if failed:
        out += ["## Not documented", "", *[f"- {m}" for m in failed], ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lvh.docgen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="also document third-party drivers")
    ap.add_argument("--lenient", action="store_true",
                    help="list drivers that fail to load instead of failing")
    ap.add_argument("-o", "--output", help="write here (atomically) instead of stdout")
    args = ap.parse_args(argv)
    try:
        text = generate(all_dists=args.all, strict=not args.lenient)
    except DocgenError as e:
        print(f"error: {e}", file=sys.stderr)
        print("hint: fix or reinstall that plugin, or pass --lenient", file=sys.stderr)
        return 1
    if args.output:
        from pathlib import Path

        p = Path(args.output)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(p)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
