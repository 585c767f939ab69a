"""The progress display: a hook plugin of the core (``lvh.hooks: lvh-progress``).

On a terminal it shows a live line per long step (rich); elsewhere (CI logs) it prints one line
when a stage starts and one when it ends. Silent under ``--json`` and ``-q``.
"""

from __future__ import annotations

from typing import Any

from lvh.api import StageInfo, hookimpl

_state: dict[str, Any] = {"console": None, "enabled": False, "tty": False, "progress": None, "tasks": {}}


@hookimpl
def lvh_configure(settings: dict[str, Any]) -> None:
    _state["console"] = settings.get("console")
    _state["enabled"] = _state["console"] is not None and not settings.get("quiet")
    _state["tty"] = bool(settings.get("tty"))


def _say(text: str) -> None:
    if _state["enabled"]:
        _state["console"].print(text, highlight=False)


@hookimpl
def lvh_stage_start(stage: StageInfo) -> None:
    _say(f"[bold]▶[/] {stage.id} [dim]({stage.driver}, {stage.key[:12] or 'run'})[/]")


@hookimpl
def lvh_stage_finish(stage: StageInfo, status: str, duration: float, error: BaseException | None) -> None:
    _stop_progress(stage.id)
    mark = {"built": "[green]✓[/]", "cached": "[blue]=[/]", "ran": "[green]✓[/]", "failed": "[red]✗[/]"}.get(
        status, "·")
    _say(f"{mark} {stage.id} [dim]{status}" + (f" in {duration:.1f}s" if status != "cached" else "") + "[/]")


@hookimpl
def lvh_progress(stage: StageInfo | None, description: str, completed: float | None, total: float | None,
                 finished: bool) -> None:
    if not (_state["enabled"] and _state["tty"]):
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    key = stage.id if stage else "-"
    if finished:
        _stop_progress(key)
        return
    if _state["progress"] is None:
        _state["progress"] = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.completed:.0f}/{task.total}"), TimeElapsedColumn(),
                                      console=_real_console(), transient=True)
        _state["progress"].start()
    prog = _state["progress"]
    tasks = _state["tasks"]
    if key not in tasks:
        tasks[key] = prog.add_task(description, total=total)
    prog.update(tasks[key], description=f"{key}: {description}", completed=completed or 0, total=total)


def _real_console() -> Any:
    c = _state["console"]
    return c.real() if hasattr(c, "real") else c


def _stop_progress(key: str) -> None:
    prog, tasks = _state["progress"], _state["tasks"]
    if prog is None:
        return
    if key in tasks:
        prog.remove_task(tasks.pop(key))
    if not tasks:
        prog.stop()
        _state["progress"] = None


@hookimpl
def lvh_pipeline_finished(summary: dict[str, Any]) -> None:
    """The closing summary: stage, driver, cached or built, time; then the runs' exit codes."""
    if not _state["enabled"] or not summary.get("stages"):
        return
    from rich.table import Table

    t = Table(box=None, pad_edge=False, title=None)
    for col in ("stage", "driver", "result", "time"):
        t.add_column(col, justify="right" if col == "time" else "left")
    colour = {"built": "green", "cached": "blue", "failed": "red", "skipped": "dim", "ran": "green"}
    runs = {r["name"]: r for r in summary.get("runs", [])}
    for st in summary["stages"]:
        status = st["status"]
        if st["kind"] == "run" and st["target"] in runs:
            r = runs[st["target"]]
            status = f"exit {r['exit_code']}" if r["status"] == "exited" else r["status"]
        c = colour.get(st["status"], "white")
        t.add_row(st["id"], st["driver"], f"[{c}]{status}[/]", f"{st['duration']:.1f}s")
    _state["console"].print(t)
    verdict = "[green]ok[/]" if summary["ok"] else f"[red]exit {summary['exit_code']}[/]"
    _state["console"].print(f"{verdict} in {summary['duration']:.1f}s — outputs in {summary.get('workdir')}")
