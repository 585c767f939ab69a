"""Helpers for tests of lvh and of lvh plugins.

An opt-in pytest plugin: put ``pytest_plugins = ["lvh.testing"]`` in your ``conftest.py`` and
get these fixtures:

- ``fake_executor``: a :class:`FakeExecutor` that records every command and answers from a
  script (``fake_executor.answer("mytool --version", stdout="mytool 1.3.5")``);
- ``lvh_workdir``: an empty workdir under ``tmp_path``;
- ``lvh_context``: a ready :class:`lvh.api.Context` on that workdir, running commands through
  ``fake_executor``;
- ``lvh_drivers``: register driver classes for the test (a stand-in for a driver yours builds
  on, or your own driver before it is installed), undone after the test;
- ``lvh_pipeline``: :func:`run_pipeline` bound to ``tmp_path`` and those drivers.

And, usable without pytest: :func:`make_context`, :func:`registered_drivers`, and
:func:`run_pipeline` (validate a config and run or plan it with lvh's real engine and the
drivers you give; commands go to a fake executor unless you ask for the real one).
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from lvh.api import Command, CommandResult, Context, Driver, HostInfo, StageInfo

__all__ = [
    "DriverRegistrar",
    "FakeExecutor",
    "PipelineRun",
    "make_context",
    "registered_drivers",
    "run_pipeline",
]

DriverMap = Mapping[tuple[str, str], type[Driver]]


# --------------------------------------------------------------------------------------------
# A fake executor
# --------------------------------------------------------------------------------------------


@dataclass
class _Answer:
    prefix: tuple[str, ...]
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    effect: Callable[[Command], None] | None = None
    times: int | None = None
    used: int = 0
    order: int = 0


def _argv(cmd: Sequence[str] | str) -> tuple[str, ...]:
    return tuple(shlex.split(cmd)) if isinstance(cmd, str) else tuple(os.fspath(a) for a in cmd)


def _matches(prefix: tuple[str, ...], argv: tuple[str, ...]) -> bool:
    if len(argv) < len(prefix) or not prefix:
        return False
    head, rest = prefix[0], prefix[1:]
    # "mytool" matches "/usr/bin/mytool": drivers may run tools by full path.
    if argv[0] != head and os.path.basename(argv[0]) != head:
        return False
    return tuple(argv[1 : len(prefix)]) == rest


class FakeExecutor:
    """An executor for tests: records every command and answers it without running anything.

    Answers are scripted by argv prefix with :meth:`answer`; the longest matching prefix wins
    (the latest one among equals). A command nothing answers exits 0 with no output. ``handler``
    (a function of the :class:`Command`, returning a CommandResult or None) is asked first.
    """

    def __init__(self, handler: Callable[[Command], CommandResult | None] | None = None) -> None:
        self.commands: list[Command] = []
        self.handler = handler
        self._answers: list[_Answer] = []
        self._lock = threading.Lock()

    def answer(
        self,
        prefix: Sequence[str] | str,
        *,
        stdout: str = "",
        stderr: str = "",
        returncode: int = 0,
        effect: Callable[[Command], None] | None = None,
        times: int | None = None,
    ) -> FakeExecutor:
        """Answer commands starting with ``prefix`` (a list, or a string split like a shell).

        ``effect`` is called with the command before answering, to fake its side effects (write
        the file the real tool would write); ``times`` limits how often this answer is used.
        Returns ``self``, so answers chain."""
        self._answers.append(_Answer(_argv(prefix), returncode, stdout, stderr, effect, times,
                                     order=len(self._answers)))
        return self

    def fail(self, prefix: Sequence[str] | str, *, returncode: int = 1, stderr: str = "failed",
             times: int | None = None) -> FakeExecutor:
        """Make commands starting with ``prefix`` exit with ``returncode``."""
        return self.answer(prefix, returncode=returncode, stderr=stderr, times=times)

    def run(self, command: Command) -> CommandResult:
        argv = _argv(command.argv)
        with self._lock:
            self.commands.append(command)
        if self.handler is not None:
            result = self.handler(command)
            if result is not None:
                return result
        candidates = [a for a in self._answers
                      if _matches(a.prefix, argv) and (a.times is None or a.used < a.times)]
        if not candidates:
            return CommandResult(list(argv), 0)
        ans = max(candidates, key=lambda a: (len(a.prefix), a.order))
        ans.used += 1
        if ans.effect is not None:
            ans.effect(command)
        tail = (ans.stdout.splitlines() + ans.stderr.splitlines())[-60:]
        for line in ans.stdout.splitlines():
            if command.on_line is not None:
                command.on_line("stdout", line)
        for line in ans.stderr.splitlines():
            if command.on_line is not None:
                command.on_line("stderr", line)
        return CommandResult(list(argv), ans.returncode, ans.stdout if command.capture else "",
                             ans.stderr, 0.0, tail)

    # -- inspecting what ran ------------------------------------------------------------

    @property
    def argvs(self) -> list[list[str]]:
        """Every command's argv, in order."""
        return [[os.fspath(a) for a in c.argv] for c in self.commands]

    @property
    def lines(self) -> list[str]:
        """Every command as a shell line (``shlex.join``), in order."""
        return [shlex.join(a) for a in self.argvs]

    def find(self, prefix: Sequence[str] | str) -> list[Command]:
        """The commands that started with ``prefix``."""
        p = _argv(prefix)
        return [c for c in self.commands if _matches(p, _argv(c.argv))]

    def ran(self, prefix: Sequence[str] | str) -> bool:
        """Whether a command starting with ``prefix`` ran."""
        return bool(self.find(prefix))

    def clear(self) -> None:
        """Forget the recorded commands (answers stay)."""
        with self._lock:
            self.commands.clear()


# --------------------------------------------------------------------------------------------
# A Context
# --------------------------------------------------------------------------------------------


def make_context(
    tmp_path: Path,
    *,
    executor: Any = None,
    stage: StageInfo | None = None,
    real: bool = False,
    host: HostInfo | None = None,
    planning: bool = False,
    **kw: Any,
) -> Context:
    """A Context rooted in ``tmp_path`` (workdir ``tmp_path/work``, ``out`` and ``tmp`` made).

    ``real=True`` uses the real subprocess executor and this host's facts; otherwise a
    :class:`FakeExecutor` (or ``executor``) and an x86_64 host without KVM. ``planning=True``
    gives a Context with ``out=None``, like the engine's while it plans. Other keywords go to
    :class:`~lvh.api.Context` (``config_dir`` defaults to ``tmp_path``)."""
    if real:
        from lvh.executor import SubprocessExecutor
        from lvh.host import host_info

        executor = executor or SubprocessExecutor()
        host = host or host_info()
    executor = executor or FakeExecutor()
    host = host or HostInfo(arch="x86_64", cpus=2, kvm=False, kvm_reason="test")
    work = tmp_path / "work"
    out = None if planning else kw.pop("out", tmp_path / "out")
    tmp = kw.pop("tmp", tmp_path / "tmp")
    for d in (work, out, tmp):
        if d is not None:
            Path(d).mkdir(parents=True, exist_ok=True)
    stage = stage or StageInfo(id="test:stage", kind="test", driver="test", target="test")
    kw.setdefault("user_cache", tmp_path / "user-cache")
    return Context(
        workdir=work, config_dir=kw.pop("config_dir", tmp_path), executor=executor, host=host,
        log=logger.bind(stage=stage.id), stage=stage, out=out, tmp=tmp,
        cancel=kw.pop("cancel", threading.Event()), **kw,
    )


# --------------------------------------------------------------------------------------------
# Drivers and pipelines
# --------------------------------------------------------------------------------------------


@contextmanager
def registered_drivers(drivers: DriverMap | None) -> Iterator[None]:
    """Make ``drivers`` (``{("lvh.rootfs", "name"): cls}``) findable by name everywhere —
    config validation, the engine, and :func:`lvh.api.driver_class` (composition) — for the
    duration of the ``with``. Registered classes win over installed entry points."""
    from lvh.plugins import default_registry

    saved = dict(default_registry.extra)
    try:
        for (group, name), cls in (drivers or {}).items():
            default_registry.register(group, name, cls)
        yield
    finally:
        default_registry.extra.clear()
        default_registry.extra.update(saved)


@dataclass
class PipelineRun:
    """What :func:`run_pipeline` did: the engine's ``summary`` (``None`` when planning), its
    ``plan`` (the stages, their keys and commands), the executor that got the commands, the
    validated ``config`` and the ``workdir``."""

    config: Any
    engine: Any
    executor: Any
    workdir: Path
    summary: dict[str, Any] | None = None
    plan: list[dict[str, Any]] = field(default_factory=list)

    def stage(self, stage_id: str) -> dict[str, Any]:
        """A stage of the summary (or of the plan) by id, e.g. ``image:base/rootfs``."""
        for s in (self.summary or {}).get("stages", []) or self.plan:
            if s["id"] == stage_id:
                return s
        raise KeyError(f"no stage {stage_id!r}; stages: {[s['id'] for s in self.stages]}")

    @property
    def stages(self) -> list[dict[str, Any]]:
        return list((self.summary or {}).get("stages", []) or self.plan)

    @property
    def commands(self) -> list[list[str]]:
        """The commands the stages ran (or, when planning, would run)."""
        if self.summary is None:
            return [c for s in self.plan for c in s["commands"]]
        return list(getattr(self.executor, "argvs", []))


def _hook_relay(hook_plugins: Sequence[Any] | None) -> Any:
    import pluggy

    from lvh import hookspecs

    pm = pluggy.PluginManager("lvh")
    pm.add_hookspecs(hookspecs)
    for i, plugin in enumerate(hook_plugins or []):
        pm.register(plugin, name=f"test-hook-{i}")
    return pm.hook


def run_pipeline(
    config: Mapping[str, Any] | str | os.PathLike[str],
    *,
    tmp_path: Path,
    drivers: DriverMap | None = None,
    executor: Any = None,
    plan: bool = False,
    hook_plugins: Sequence[Any] | None = None,
    host: HostInfo | None = None,
    real: bool = False,
    **engine_kw: Any,
) -> PipelineRun:
    """Validate a pipeline and run it (``plan=True``: only plan it) with lvh's real engine.

    ``config`` is a dict in the ``conf.yaml`` shape, YAML text, or a path to a YAML file (its
    errors then carry the file's lines). ``drivers`` (``{("lvh.rootfs", "name"): cls}``) are
    registered for the duration, next to the installed ones. Commands go to ``executor``
    (default: a new :class:`FakeExecutor`; ``real=True``: the real one, with this host's facts).
    Hooks: only ``hook_plugins`` (modules or objects with ``@hookimpl`` functions), not the
    installed ones, so tests are deterministic. The workdir is ``tmp_path/work``. Other
    keywords go to :class:`lvh.engine.Engine` (``force``, ``only``…). A failing pipeline raises
    its error, as ``lvh pipeline run`` would."""
    from lvh.config import load_config, load_data
    from lvh.engine import Engine
    from lvh.plugins import default_registry

    if real:
        from lvh.executor import SubprocessExecutor
        from lvh.host import host_info

        executor = executor or SubprocessExecutor()
        host = host or host_info()
    executor = executor if executor is not None else FakeExecutor()
    host = host or HostInfo(arch="x86_64", cpus=2, kvm=False, kvm_reason="test")
    workdir = Path(tmp_path) / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    with registered_drivers(drivers):
        if isinstance(config, Mapping):
            cfg = load_data(dict(config), source="<test config>", base_dir=Path(tmp_path),
                            registry=default_registry, workdir=workdir)
        else:
            path = Path(config) if not (isinstance(config, str) and "\n" in config) else None
            if path is None:
                path = Path(tmp_path) / "conf.yaml"
                path.write_text(str(config))
            cfg = load_config(path, registry=default_registry, workdir=workdir)
        engine = Engine(cfg, workdir=workdir, executor=executor, hooks=_hook_relay(hook_plugins),
                        host=host, **engine_kw)
        result = PipelineRun(config=cfg, engine=engine, executor=executor, workdir=workdir)
        if plan:
            result.plan = engine.plan()
        else:
            result.summary = engine.run()
    return result


# --------------------------------------------------------------------------------------------
# The pytest plugin (opt-in: ``pytest_plugins = ["lvh.testing"]``)
# --------------------------------------------------------------------------------------------


class DriverRegistrar:
    """The ``lvh_drivers`` fixture: ``lvh_drivers.register("lvh.rootfs", "name", cls)``."""

    def __init__(self) -> None:
        self.drivers: dict[tuple[str, str], type[Driver]] = {}
        self._stack: list[Any] = []

    def register(self, group: str, name: str, cls: type[Driver]) -> type[Driver]:
        """Register ``cls`` as driver ``name`` of ``group`` until the test ends; returns ``cls``."""
        cm = registered_drivers({(group, name): cls})
        cm.__enter__()
        self._stack.append(cm)
        self.drivers[(group, name)] = cls
        return cls

    def _undo(self) -> None:
        while self._stack:
            self._stack.pop().__exit__(None, None, None)


try:
    import pytest
except ImportError:  # pragma: no cover - lvh.testing's helpers work without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def fake_executor() -> FakeExecutor:
        """A :class:`FakeExecutor`: script answers with ``.answer(prefix, ...)``, read ``.argvs``."""
        return FakeExecutor()

    @pytest.fixture
    def lvh_workdir(tmp_path: Path) -> Path:
        """An empty lvh workdir (``tmp_path/work``)."""
        d = tmp_path / "work"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @pytest.fixture
    def lvh_context(tmp_path: Path, lvh_workdir: Path, fake_executor: FakeExecutor) -> Context:
        """A Context whose commands go to ``fake_executor``; ``out``/``tmp`` are empty dirs."""
        return make_context(tmp_path, executor=fake_executor)

    @pytest.fixture
    def lvh_drivers() -> Iterator[DriverRegistrar]:
        """Register driver classes for one test: ``lvh_drivers.register(group, name, cls)``."""
        reg = DriverRegistrar()
        try:
            yield reg
        finally:
            reg._undo()

    @pytest.fixture
    def lvh_pipeline(tmp_path: Path, lvh_drivers: DriverRegistrar) -> Callable[..., PipelineRun]:
        """:func:`run_pipeline` bound to ``tmp_path``, with the drivers registered through
        ``lvh_drivers``: ``lvh_pipeline(config_dict, plan=True)``."""

        def call(config: Any, **kw: Any) -> PipelineRun:
            kw.setdefault("tmp_path", tmp_path)
            kw["drivers"] = {**lvh_drivers.drivers, **(kw.get("drivers") or {})}
            return run_pipeline(config, **kw)

        return call
