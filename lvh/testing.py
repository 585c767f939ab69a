"""Helpers for tests of lvh and of lvh plugins (an opt-in pytest plugin: ``pytest_plugins =
["lvh.testing"]``): a fake executor that records commands, and a ready Context."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from lvh.api import Command, CommandResult, Context, HostInfo, StageInfo

__all__ = ["FakeExecutor", "make_context"]


class FakeExecutor:
    """Records every command; answers with ``handler(command)`` (a CommandResult, or None for
    exit 0 with no output)."""

    def __init__(self, handler: Callable[[Command], CommandResult | None] | None = None) -> None:
        self.commands: list[Command] = []
        self.handler = handler

    @property
    def argvs(self) -> list[list[str]]:
        return [list(c.argv) for c in self.commands]

    def run(self, command: Command) -> CommandResult:
        self.commands.append(command)
        result = self.handler(command) if self.handler else None
        return result or CommandResult(list(command.argv), 0)


def make_context(
    tmp_path: Path,
    *,
    executor: Any = None,
    stage: StageInfo | None = None,
    real: bool = False,
    host: HostInfo | None = None,
    **kw: Any,
) -> Context:
    """A Context rooted in ``tmp_path`` (workdir ``tmp_path/work``, ``out`` and ``tmp`` made).
    ``real=True`` uses the real subprocess executor and this host's facts."""
    if real:
        from lvh.executor import SubprocessExecutor
        from lvh.host import host_info

        executor = executor or SubprocessExecutor()
        host = host or host_info()
    executor = executor or FakeExecutor()
    host = host or HostInfo(arch="x86_64", cpus=2, kvm=False, kvm_reason="test")
    work = tmp_path / "work"
    out = kw.pop("out", tmp_path / "out")
    tmp = kw.pop("tmp", tmp_path / "tmp")
    for d in (work, out, tmp):
        if d is not None:
            Path(d).mkdir(parents=True, exist_ok=True)
    stage = stage or StageInfo(id="test:stage", kind="test", driver="test", target="test")
    return Context(
        workdir=work, config_dir=kw.pop("config_dir", tmp_path), executor=executor, host=host,
        log=logger.bind(stage=stage.id), stage=stage, out=out, tmp=tmp,
        cancel=kw.pop("cancel", threading.Event()), **kw,
    )
