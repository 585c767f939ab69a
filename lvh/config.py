"""The pipeline config: YAML, validated in two phases with marshmallow.

Phase 1 checks the core shape (images, kernels, runs and their common keys). Phase 2 loads each
named driver (only those) and validates the options beside its driver key with the driver's own
schema. Then the references: names, parents (no cycles), runs' images and kernels.

Every error names the file, the line and the path in the document —
``conf.yaml:7 images[0].rootfs.suite: Unknown field.`` — and is a :class:`ConfigError` (exit 2).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import marshmallow
import yaml
from marshmallow import Schema, fields, validate

from lvh.api import ConfigError, Driver, HostMount, LvhError, PortForward, Size, parse_size
from lvh.plugins import DriverRegistry, default_registry, use_registry

API_VERSION = 1
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
NAME_HINT = "names start with a letter or digit and use only letters, digits, '.', '_', '+', '-'"

PathT = tuple[str | int, ...]


# --------------------------------------------------------------------------------------------
# YAML with line numbers
# --------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


def _compose(text: str, source: str) -> tuple[Any, dict[PathT, int]]:
    """Parse YAML into plain data and a map from document paths to 1-based line numbers.
    Duplicate keys are errors (YAML silently keeps the last)."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ConfigError(f"not valid YAML: {e.problem or e}", file=source,
                          line=mark.line + 1 if mark else None,
                          hint="check indentation and quoting on that line") from None
    lines: dict[PathT, int] = {}
    if node is None:
        return {}, lines
    constructor = _Loader(text)

    def walk(n: yaml.Node, path: PathT) -> Any:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for k, v in n.value:
                key = constructor.construct_object(k, deep=True)
                if not isinstance(key, (str, int)):
                    raise ConfigError("keys must be strings", file=source, line=k.start_mark.line + 1,
                                      path=fmt_path(path))
                if key in out:
                    raise ConfigError(f"duplicate key {key!r}", file=source, line=k.start_mark.line + 1,
                                      path=fmt_path(path), hint="remove one of them")
                # A key's own line is where an "Unknown field" error should point.
                lines[(*path, key)] = k.start_mark.line + 1
                out[key] = walk(v, (*path, key))
                lines[(*path, key)] = min(lines[(*path, key)], k.start_mark.line + 1)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, (*path, i)) for i, v in enumerate(n.value)]
        return constructor.construct_object(n, deep=True)

    return walk(node, ()), lines


def fmt_path(path: PathT) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


# --------------------------------------------------------------------------------------------
# Phase 1: the core schema
# --------------------------------------------------------------------------------------------


class _Strict(Schema):
    class Meta:
        unknown = marshmallow.RAISE


class ImageSchema(_Strict):
    name = fields.Str(required=True, validate=validate.Regexp(NAME_RE, error=f"Bad name; {NAME_HINT}."))
    parent = fields.Str(metadata={"description": "derive from this image (a qcow2 overlay on it)"})
    rootfs = fields.Dict(metadata={"description": "{provider: NAME, ...provider options}"})
    disk = fields.Dict(metadata={"description": "{formatter: NAME, ...formatter options}"})
    customize = fields.List(fields.Dict(), metadata={"description": "[{customizer: NAME, actions: [...]}]"})
    packages = fields.List(fields.Str(), metadata={"description": "packages to install (derived images)"})
    description = fields.Str()


class KernelSchema(Schema):
    class Meta:
        unknown = marshmallow.INCLUDE  # the builder's options, validated in phase 2

    name = fields.Str(required=True, validate=validate.Regexp(NAME_RE, error=f"Bad name; {NAME_HINT}."))
    builder = fields.Str(required=True, metadata={"description": "an lvh.kernel driver"})
    description = fields.Str()


class HostMountSchema(_Strict):
    source = fields.Str(required=True)
    target = fields.Str(required=True, validate=validate.Regexp(r"^/", error="Must be an absolute path."))
    readonly = fields.Bool(load_default=False)
    tag = fields.Str(load_default="")


class _PortField(fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> PortForward:
        try:
            return PortForward.parse(str(value))
        except ValueError as e:
            raise marshmallow.ValidationError(str(e)) from None


class _Cmdline(fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> list[str]:
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise marshmallow.ValidationError("Must be a string or a list of strings.")


class _Runner(fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> dict[str, Any]:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict):
            return dict(value)
        raise marshmallow.ValidationError("Must be a runner name or {name: RUNNER, ...options}.")


class RunSchema(_Strict):
    name = fields.Str(required=True, validate=validate.Regexp(NAME_RE, error=f"Bad name; {NAME_HINT}."))
    runner = _Runner(required=True, metadata={"description": "NAME or {name: NAME, ...runner options}"})
    image = fields.Str()
    kernel = fields.Str()
    command = fields.Str(metadata={"description": "exec mode: run this in the guest, exit with its code"})
    cpus = fields.Int(load_default=2, validate=validate.Range(min=1, max=256))
    memory = Size(load_default=1024**3, metadata={"description": "guest memory, e.g. 1G"})
    cmdline = _Cmdline(load_default=list)
    timeout = fields.Float(validate=validate.Range(min=0, min_inclusive=False))
    boot_timeout = fields.Float(load_default=300.0, validate=validate.Range(min=0, min_inclusive=False))
    ports = fields.List(_PortField(), load_default=list)
    host_mounts = fields.List(fields.Nested(HostMountSchema), load_default=list)
    ssh = fields.Bool(load_default=False)
    console_log = fields.Str()
    description = fields.Str()


class ConfigSchema(_Strict):
    api_version = fields.Int(load_default=API_VERSION, validate=validate.Equal(
        API_VERSION, error=f"This lvh reads config api_version {API_VERSION}."))
    workdir = fields.Str(metadata={"description": "default: _data beside the config file"})
    images = fields.List(fields.Nested(ImageSchema), load_default=list)
    kernels = fields.List(fields.Nested(KernelSchema), load_default=list)
    runs = fields.List(fields.Dict(), load_default=list)  # expanded (matrix) then RunSchema


# --------------------------------------------------------------------------------------------
# The validated config
# --------------------------------------------------------------------------------------------


@dataclass
class DriverRef:
    """A driver named in the config with its validated options."""

    group: str
    name: str
    cls: type[Driver]
    options: dict[str, Any]
    path: PathT = ()

    def instance(self) -> Driver:
        return self.cls(self.options)


@dataclass
class ImageConf:
    name: str
    parent: str | None
    rootfs: DriverRef | None
    disk: DriverRef
    customize: list[DriverRef]
    path: PathT
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class KernelConf:
    name: str
    builder: DriverRef
    path: PathT


@dataclass
class RunConf:
    name: str
    runner: DriverRef
    image: str | None
    kernel: str | None
    command: str | None
    cpus: int
    memory: int
    cmdline: list[str]
    timeout: float | None
    boot_timeout: float
    ports: list[PortForward]
    host_mounts: list[HostMount]
    ssh: bool
    console_log: str | None
    path: PathT


@dataclass
class Config:
    source: str
    base_dir: Path
    workdir: Path
    images: dict[str, ImageConf]
    kernels: dict[str, KernelConf]
    runs: dict[str, RunConf]
    lines: dict[PathT, int] = field(default_factory=dict)
    #: The driver registry the config was validated against (drivers composed on other drivers
    #: look theirs up in it while the engine runs).
    registry: DriverRegistry | None = None

    def error(self, message: str, path: PathT = (), hint: str | None = None) -> ConfigError:
        return _error(self.source, self.lines, path, message, hint)

    def targets(self) -> list[str]:
        return [*self.images, *self.kernels, *self.runs]


def _line_for(lines: Mapping[PathT, int], path: PathT) -> int | None:
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get(())


def _error(source: str, lines: Mapping[PathT, int], path: PathT, message: str,
           hint: str | None = None) -> ConfigError:
    return ConfigError(message, file=source, line=_line_for(lines, path), path=fmt_path(path) or None,
                       hint=hint)


def _flatten(messages: Any, path: PathT = ()) -> list[tuple[PathT, str]]:
    if isinstance(messages, dict):
        out = []
        for k, v in messages.items():
            key: str | int = k
            if isinstance(k, str) and k.isdigit():
                key = int(k)
            out += _flatten(v, (*path, key) if k != "_schema" else path)
        return out
    if isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            return [(path, " ".join(messages))]
        out = []
        for m in messages:
            out += _flatten(m, path)
        return out
    return [(path, str(messages))]


_HINTS = {
    "Unknown field.": "remove it or check its spelling (see docs/config.md)",
    "Missing data for required field.": "add it",
}


def _raise_validation(err: marshmallow.ValidationError, source: str, lines: Mapping[PathT, int],
                      prefix: PathT, hint_extra: str | None = None) -> None:
    problems = sorted(_flatten(err.messages), key=lambda pm: (_line_for(lines, (*prefix, *pm[0])) or 0))
    path, msg = problems[0]
    full = (*prefix, *path)
    hint = _HINTS.get(msg)
    if msg == "Unknown field." and hint_extra:
        hint = hint_extra
    more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
    raise _error(source, lines, full, msg + more, hint) from None


def validate_driver_options(cls: type[Driver], options: Mapping[str, Any], *, source: str = "",
                            lines: Mapping[PathT, int] | None = None, path: PathT = (),
                            partial: bool = False) -> dict[str, Any]:
    """Validate ``options`` with the driver's own schema; a located ConfigError if wrong."""
    schema = cls.Options()
    try:
        loaded = schema.load(dict(options), partial=partial)
    except marshmallow.ValidationError as err:
        names = sorted(schema.fields)
        _raise_validation(err, source, lines or {}, path,
                          f"{cls.kind} driver {cls.name!r} takes: {', '.join(names) or 'no options'}")
        raise AssertionError("unreachable") from None
    return dict(loaded)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, registry: DriverRegistry | None = None,
                workdir: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a pipeline file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no such config file: {p}", hint="give the path of a pipeline YAML file, "
                          "e.g. examples/quickstart.yaml") from None
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}") from None
    source = os.path.relpath(p) if not p.is_absolute() else str(p)
    data, lines = _compose(text, source)
    return load_data(data, source=source, base_dir=p.resolve().parent, lines=lines, registry=registry,
                     workdir=workdir)


def load_data(data: Any, *, source: str = "<config>", base_dir: Path | None = None,
              lines: dict[PathT, int] | None = None, registry: DriverRegistry | None = None,
              workdir: str | os.PathLike[str] | None = None) -> Config:
    """Validate an already-parsed config (a dict in the conf.yaml shape)."""
    reg = registry or default_registry
    with use_registry(reg):
        cfg = _load_data(data, source=source, base_dir=base_dir, lines=lines, reg=reg, workdir=workdir)
    cfg.registry = reg
    return cfg


def _load_data(data: Any, *, source: str, base_dir: Path | None, lines: dict[PathT, int] | None,
               reg: DriverRegistry, workdir: str | os.PathLike[str] | None) -> Config:
    lines = dict(lines or {})
    base_dir = Path(base_dir or Path.cwd())
    if not isinstance(data, dict):
        raise _error(source, lines, (), "the config must be a mapping with images, kernels and runs",
                     "see examples/quickstart.yaml")
    try:
        doc = ConfigSchema().load(data)
    except marshmallow.ValidationError as err:
        _raise_validation(err, source, lines, ())
        raise AssertionError("unreachable") from None

    runs_raw = _expand_runs(doc["runs"], source, lines)

    wd = Path(workdir) if workdir is not None else Path(os.path.expanduser(doc.get("workdir") or "_data"))
    if not wd.is_absolute():
        wd = (Path.cwd() if workdir is not None else base_dir) / wd

    def driver(group: str, name: Any, options: Mapping[str, Any], path: PathT, key: str,
               partial: bool = False) -> DriverRef:
        if not isinstance(name, str) or not name:
            raise _error(source, lines, (*path, key), f"'{key}' must name a driver",
                         f"e.g. {key}: {', '.join(reg.names(group)) or 'NAME'}")
        try:
            cls = reg.driver_class(group, name)
        except LvhError as e:
            raise _error(source, lines, (*path, key), e.message, e.hint) from None
        opts = validate_driver_options(cls, options, source=source, lines=lines, path=path, partial=partial)
        return DriverRef(group, name, cls, opts, path)

    def section(group: str, value: Any, path: PathT, key: str, partial: bool = False) -> DriverRef:
        if not isinstance(value, dict):
            raise _error(source, lines, path, f"must be a mapping with '{key}: NAME'")
        if key not in value:
            raise _error(source, lines, path, f"missing '{key}'",
                         f"add '{key}: NAME' ({', '.join(reg.names(group)) or 'no driver installed'})")
        opts = {k: v for k, v in value.items() if k != key}
        return driver(group, value[key], opts, path, key, partial)

    # Names first, so reference errors can point at them.
    def unique(items: list[dict[str, Any]], what: str) -> None:
        seen: dict[str, int] = {}
        for i, it in enumerate(items):
            if it["name"] in seen:
                raise _error(source, lines, (what, i, "name"), f"duplicate {what[:-1]} name {it['name']!r}",
                             f"already used by {what}[{seen[it['name']]}]; names must be unique")
            seen[it["name"]] = i

    unique(doc["images"], "images")
    unique(doc["kernels"], "kernels")

    raw_images = {im["name"]: (i, im) for i, im in enumerate(doc["images"])}
    # Parents exist and form no cycle.
    for name, (i, im) in raw_images.items():
        parent = im.get("parent")
        if parent is None:
            continue
        if parent not in raw_images:
            close = _close(parent, raw_images)
            raise _error(source, lines, ("images", i, "parent"), f"unknown parent image {parent!r}",
                         close or "parent must name another image in this file")
        chain, cur = [name], parent
        while cur is not None:
            if cur in chain:
                raise _error(source, lines, ("images", i, "parent"),
                             f"parent cycle: {' -> '.join([*chain, cur])}", "an image cannot derive from itself")
            chain.append(cur)
            cur = raw_images[cur][1].get("parent")

    images: dict[str, ImageConf] = {}

    def build_image(name: str) -> ImageConf:
        if name in images:
            return images[name]
        i, im = raw_images[name]
        path: PathT = ("images", i)
        parent = im.get("parent")
        rootfs = None
        if parent:
            pconf = build_image(parent)
            if "rootfs" in im:
                raise _error(source, lines, (*path, "rootfs"), "a derived image has no rootfs of its own",
                             "remove 'rootfs' (it starts from its parent's disk) or remove 'parent'")
            d = dict(im.get("disk") or {})
            fname = d.pop("formatter", pconf.disk.name)
            disk = driver("lvh.disk", fname, d, (*path, "disk"), "formatter", partial=True)
        else:
            if "disk" not in im:
                raise _error(source, lines, path, f"image {name!r} has no 'disk'",
                             "add disk: {formatter: NAME, size: 2G} (see lvh plugins list)")
            disk = section("lvh.disk", im["disk"], (*path, "disk"), "formatter")
            if disk.cls.needs_rootfs:
                if "rootfs" not in im:
                    raise _error(source, lines, path, f"image {name!r} has neither 'rootfs' nor 'parent'",
                                 "add rootfs: {provider: NAME, ...} or parent: IMAGE")
                rootfs = section("lvh.rootfs", im["rootfs"], (*path, "rootfs"), "provider")
            elif "rootfs" in im:
                raise _error(source, lines, (*path, "rootfs"),
                             f"disk formatter {disk.name!r} makes its disk without a rootfs", "remove 'rootfs'")
        custom: list[DriverRef] = []
        if im.get("packages"):
            if not parent:
                raise _error(source, lines, (*path, "packages"),
                             "'packages' is for derived images",
                             "for a base image, list packages in its rootfs (e.g. rootfs.packages)")
            cname = disk.cls.default_customizer
            if not cname:
                raise _error(source, lines, (*path, "packages"),
                             f"disk formatter {disk.name!r} names no default customizer for 'packages'",
                             "add a customize step with {type: install, packages: [...]}")
            custom.append(driver("lvh.customize", cname,
                                 {"actions": [{"type": "install", "packages": list(im["packages"])}]},
                                 (*path, "packages"), "customizer"))
        for j, c in enumerate(im.get("customize") or []):
            custom.append(section("lvh.customize", c, (*path, "customize", j), "customizer"))
        on_disk = parent is not None or rootfs is None
        for c in custom:
            if not on_disk and "rootfs" in c.cls.targets:
                continue
            on_disk = True
            if "disk" not in c.cls.targets:
                why = ("a derived image starts from its parent's disk" if parent else
                       "an earlier customize step already needed the disk")
                raise _error(source, lines, c.path, f"customizer {c.name!r} works only on a rootfs, but here it "
                             f"would get a disk image ({why})",
                             "move it before the disk-only steps, or use a customizer that works on disks")
        conf = ImageConf(name, parent, rootfs, disk, custom, path, im)
        images[name] = conf
        return conf

    for name in raw_images:
        build_image(name)
    # Keep file order.
    images = {n: images[n] for n in raw_images}

    kernels: dict[str, KernelConf] = {}
    for i, k in enumerate(doc["kernels"]):
        opts = {key: v for key, v in k.items() if key not in ("name", "builder", "description")}
        kernels[k["name"]] = KernelConf(k["name"], driver("lvh.kernel", k["builder"], opts, ("kernels", i),
                                                          "builder"), ("kernels", i))

    runs: dict[str, RunConf] = {}
    for i, (r, rpath) in enumerate(runs_raw):
        try:
            rr = RunSchema().load(r)
        except marshmallow.ValidationError as err:
            _raise_validation(err, source, lines, rpath)
            raise AssertionError("unreachable") from None
        if rr["name"] in runs:
            raise _error(source, lines, (*rpath, "name"), f"duplicate run name {rr['name']!r}",
                         "names must be unique")
        for key, pool in (("image", images), ("kernel", kernels)):
            ref = rr.get(key)
            if ref is not None and ref not in pool:
                raise _error(source, lines, (*rpath, key), f"unknown {key} {ref!r}",
                             _close(ref, pool) or f"{key} must name one of this file's {key}s")
        if rr.get("image") is None and rr.get("kernel") is None:
            raise _error(source, lines, rpath, f"run {rr['name']!r} names neither an image nor a kernel",
                         "add image: NAME and/or kernel: NAME")
        runner = dict(rr["runner"])
        rname = runner.pop("name", None)
        ref = driver("lvh.runner", rname, runner, (*rpath, "runner"), "name")
        mounts = [HostMount(source=_resolve(m["source"], base_dir), target=m["target"],
                            readonly=m["readonly"], tag=m["tag"]) for m in rr["host_mounts"]]
        runs[rr["name"]] = RunConf(
            name=rr["name"], runner=ref, image=rr.get("image"), kernel=rr.get("kernel"),
            command=rr.get("command"), cpus=rr["cpus"], memory=rr["memory"], cmdline=rr["cmdline"],
            timeout=rr.get("timeout"), boot_timeout=rr["boot_timeout"], ports=rr["ports"],
            host_mounts=mounts, ssh=rr["ssh"], console_log=rr.get("console_log"), path=rpath)
        del i
    return Config(source=source, base_dir=base_dir, workdir=wd, images=images, kernels=kernels, runs=runs,
                  lines=lines)


def _expand_runs(runs: list[dict[str, Any]], source: str,
                 lines: dict[PathT, int]) -> list[tuple[dict[str, Any], PathT]]:
    """Runs with a ``matrix:`` become one run per combination (lvh.matrix)."""
    out: list[tuple[dict[str, Any], PathT]] = []
    for i, r in enumerate(runs):
        path: PathT = ("runs", i)
        if isinstance(r, dict) and "matrix" in r:
            from lvh.matrix import expand_runs

            try:
                expanded = expand_runs([r])
            except (ValueError, TypeError) as e:
                raise _error(source, lines, (*path, "matrix"), str(e)) from None
            out += [(x, path) for x in expanded]
        else:
            out.append((r, path))
    return out


def _resolve(p: str, base: Path) -> Path:
    q = Path(os.path.expanduser(p))
    return q if q.is_absolute() else (base / q)


def _close(name: str, pool: Mapping[str, Any]) -> str | None:
    import difflib

    m = difflib.get_close_matches(name, list(pool), n=1)
    return f"did you mean {m[0]!r}?" if m else None


__all__ = ["Config", "ConfigError", "load_config", "load_data", "parse_size", "validate_driver_options"]
