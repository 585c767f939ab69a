"""Plugin loading: stevedore picks the one driver for a stage, pluggy carries the hooks.

Only the driver a config names is imported. A driver that is not installed, fails to import,
is registered twice, or targets an API version this lvh does not support is a loud error naming
the distribution — never a logged-and-skipped extension (stevedore's default).
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import importlib.metadata as md
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pluggy

from lvh import hookspecs
from lvh.api import DRIVER_GROUPS, SUPPORTED_API_VERSIONS, Driver, UserError

HOOK_GROUP = "lvh.hooks"
KIND_OF_GROUP = {g: cls.kind for g, cls in DRIVER_GROUPS.items()}
GROUP_OF_KIND = {v: k for k, v in KIND_OF_GROUP.items()}


class PluginError(UserError):
    """A driver or hook plugin cannot be used (missing, broken, duplicate, incompatible)."""


def _entry_points(group: str) -> list[md.EntryPoint]:
    return list(md.entry_points(group=group))


def _dist_label(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


class DriverRegistry:
    """Finds driver classes by group and name: installed entry points, plus classes registered
    directly (tests, embedding). Registered classes win over entry points."""

    def __init__(self, extra: dict[tuple[str, str], type[Driver]] | None = None,
                 *, entry_points: bool = True) -> None:
        self.extra: dict[tuple[str, str], type[Driver]] = dict(extra or {})
        self.use_entry_points = entry_points

    def register(self, group: str, name: str, cls: type[Driver]) -> None:
        """Make ``cls`` the driver ``name`` of ``group`` (e.g. ``"lvh.rootfs"``)."""
        self.extra[(group, name)] = cls

    def names(self, group: str) -> list[str]:
        names = {n for (g, n) in self.extra if g == group}
        if self.use_entry_points:
            names |= {ep.name for ep in _entry_points(group)}
        return sorted(names)

    def driver_class(self, group: str, name: str) -> type[Driver]:
        """The class of driver ``name`` in ``group``; a :class:`PluginError` if unusable."""
        if group not in DRIVER_GROUPS:
            raise PluginError(f"unknown driver group {group!r}", hint=f"one of {', '.join(DRIVER_GROUPS)}")
        kind = KIND_OF_GROUP[group]
        if (group, name) in self.extra:
            return _checked(self.extra[(group, name)], group, name, "a registered class")
        eps = [ep for ep in _entry_points(group) if ep.name == name] if self.use_entry_points else []
        if not eps:
            known = self.names(group)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (
                f"installed {kind} drivers: {', '.join(known) or 'none'}; a third-party driver is "
                f"installed with pip (it registers in entry-point group {group})")
            raise PluginError(f"no {kind} driver named {name!r} is installed", hint=hint)
        if len(eps) > 1:
            by = ", ".join(f"{ep.value} from {_dist_label(ep)}" for ep in eps)
            raise PluginError(f"{kind} driver {name!r} is registered more than once: {by}",
                              hint="uninstall one of these distributions")
        return _load(eps[0], group, name)

    def load(self, group: str, name: str, options: dict[str, Any] | None = None) -> Driver:
        """An instance of driver ``name`` with already-validated ``options``."""
        return self.driver_class(group, name)(options or {})


def _load(ep: md.EntryPoint, group: str, name: str) -> type[Driver]:
    from stevedore import driver as sd

    def fail(_mgr: Any, _ep: Any, err: BaseException) -> None:
        raise PluginError(
            f"{KIND_OF_GROUP[group]} driver {name!r} ({ep.value}, from {_dist_label(ep)}) failed to "
            f"import: {type(err).__name__}: {err}",
            hint="reinstall or upgrade that distribution, or fix the plugin",
        ) from err

    mgr = sd.DriverManager(group, name, invoke_on_load=False, on_load_failure_callback=fail)
    return _checked(mgr.driver, group, name, f"{ep.value} from {_dist_label(ep)}")


def _checked(cls: Any, group: str, name: str, origin: str) -> type[Driver]:
    base = DRIVER_GROUPS[group]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{KIND_OF_GROUP[group]} driver {name!r} ({origin}) is not a subclass of "
                          f"lvh.api.{base.__name__}", hint="fix the plugin's entry point")
    if cls.api_version not in SUPPORTED_API_VERSIONS:
        raise PluginError(
            f"{KIND_OF_GROUP[group]} driver {name!r} ({origin}) targets plugin API "
            f"{cls.api_version}; this lvh supports {sorted(SUPPORTED_API_VERSIONS)}",
            hint="upgrade lvh or install a version of the plugin made for this lvh")
    return cls


#: The process-wide registry (installed entry points).
default_registry = DriverRegistry()

_current_registry: contextvars.ContextVar[DriverRegistry | None] = contextvars.ContextVar(
    "lvh_driver_registry", default=None)


@contextlib.contextmanager
def use_registry(registry: DriverRegistry | None) -> Iterator[None]:
    """Make ``registry`` the one :func:`driver_class` consults (for drivers composed on other
    drivers) while validating a config or running an engine that was given it."""
    token = _current_registry.set(registry)
    try:
        yield
    finally:
        _current_registry.reset(token)


def current_registry() -> DriverRegistry:
    return _current_registry.get() or default_registry


def driver_class(group: str, name: str) -> type[Driver]:
    """The driver class ``name`` of ``group`` from the registry in use (see :func:`use_registry`;
    by default the installed entry points)."""
    return current_registry().driver_class(group, name)


def load_driver(group: str, name: str, options: dict[str, Any] | None = None) -> Driver:
    """Load driver ``name`` of ``group`` and validate ``options`` with its schema."""
    from lvh.config import validate_driver_options

    cls = driver_class(group, name)
    return cls(validate_driver_options(cls, options or {}))


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    """The hook plugin manager with every ``lvh.hooks`` entry point loaded. A hook plugin that
    fails to import is an error (not skipped)."""
    pm = pluggy.PluginManager("lvh")
    pm.add_hookspecs(hookspecs)
    for ep in _entry_points(HOOK_GROUP):
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as err:
            raise PluginError(
                f"hook plugin {ep.name!r} ({ep.value}, from {_dist_label(ep)}) failed to import: "
                f"{type(err).__name__}: {err}", hint="reinstall or fix that distribution") from err
        pm.register(plugin, name=ep.name)
    return pm


def hooks() -> Any:
    """The hook relay: ``hooks().lvh_stage_start(stage=...)``."""
    return plugin_manager().hook


# --------------------------------------------------------------------------------------------
# Listing (``lvh plugins list``)
# --------------------------------------------------------------------------------------------


@dataclass
class PluginInfo:
    kind: str
    name: str
    distribution: str
    version: str
    module: str
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_plugins(groups: Iterable[str] | None = None) -> list[PluginInfo]:
    """Every installed driver and hook plugin, loaded to report load errors."""
    out: list[PluginInfo] = []
    for group in groups or [*DRIVER_GROUPS, HOOK_GROUP]:
        eps = _entry_points(group)
        counts: dict[str, int] = {}
        for ep in eps:
            counts[ep.name] = counts.get(ep.name, 0) + 1
        for ep in sorted(eps, key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                kind=KIND_OF_GROUP.get(group, "hooks"), name=ep.name,
                distribution=dist.metadata["Name"] if dist else "?", version=dist.version if dist else "?",
                module=ep.value)
            try:
                if counts[ep.name] > 1:
                    raise PluginError("registered more than once")
                obj = ep.load()
                if group in DRIVER_GROUPS:
                    _checked(obj, group, ep.name, ep.value)
            except Exception as err:
                msg = err.message if isinstance(err, PluginError) else f"{type(err).__name__}: {err}"
                info.error = msg
            out.append(info)
    return out
