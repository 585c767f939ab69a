"""Hook specifications for ``lvh.hooks`` plugins (pluggy).

A hook plugin is a module (or object) registered under the ``lvh.hooks`` entry-point group whose
functions are decorated with :data:`lvh.api.hookimpl` and named like the specs below. Each hook
is documented where it is declared; arguments may be omitted from an implementation's signature.
Hooks observe and contribute; the work of a stage belongs to its driver (stevedore), not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from lvh.api import Artifact, KernelArtifact, RunResult, RunSpec, StageInfo

hookspec = pluggy.HookspecMarker("lvh")


@hookspec
def lvh_configure(settings: dict[str, Any]) -> None:
    """Called once by the CLI before any work, with its global settings.

    Keys: ``verbose`` (int), ``json`` (bool: a machine reads stdout — print nothing else there),
    ``tty`` (bool: stderr is a terminal), ``report`` (path or None: write a JSON report there),
    ``junit`` (path or None: write a JUnit XML report there), ``console`` (a rich Console on stderr).
    """


@hookspec
def lvh_cli_commands(cli: click.Group) -> None:
    """Add commands to the ``lvh`` command line: ``cli.add_command(cmd)``, or add a subcommand
    to an existing group, e.g. ``cli.get_command(None, "images").add_command(push)``.

    Called lazily, only when the command line needs the full command list or a name the core
    does not know. Keep the hook module light: import heavy things inside the commands."""


@hookspec
def lvh_stage_start(stage: StageInfo) -> None:
    """A stage is about to run (it was not in the cache, or ``--force``)."""


@hookspec
def lvh_stage_finish(stage: StageInfo, status: str, duration: float, error: BaseException | None) -> None:
    """A stage ended. ``status``: ``built``, ``cached``, ``failed`` or ``skipped``."""


@hookspec
def lvh_progress(stage: StageInfo | None, description: str, completed: float | None,
                 total: float | None, finished: bool) -> None:
    """A long step inside a stage moved on (``ctx.progress``). ``finished`` is set once at the end."""


@hookspec
def lvh_artifact_published(stage: StageInfo, artifact: Artifact) -> None:
    """An artifact was published into the cache (after the atomic rename)."""


@hookspec
def lvh_run_finished(spec: RunSpec, result: RunResult) -> None:
    """A VM run ended (exec mode), with the guest command's exit code or a failure status."""


@hookspec
def lvh_pipeline_finished(summary: dict[str, Any]) -> None:
    """A pipeline ended. ``summary``: ``{"ok": bool, "exit_code": int, "duration": float,
    "stages": [{"id", "kind", "driver", "target", "key", "status", "duration", "error"}],
    "runs": [{"name", "status", "exit_code", "duration", "console_log"}]}``."""


@hookspec(firstresult=True)
def lvh_resolve_artifact(kind: str, ref: str, workdir: Path) -> Artifact | None:
    """Turn a reference that is not a local file (e.g. an OCI image reference given to
    ``lvh run --image``) into a local artifact of ``kind`` (``disk`` or ``kernel``), fetching it
    into ``workdir``'s cache if needed. Return None if the reference is not yours."""


@hookspec
def lvh_kernel_cmdline(spec: RunSpec, kernel: KernelArtifact | None) -> list[str]:
    """Contribute kernel command-line arguments to a VM boot. Return a list (may be empty);
    the runner appends all contributions, in plugin order, after its own and before the run's."""


@hookspec
def lvh_qemu_args(spec: RunSpec, machine: str) -> list[str]:
    """Contribute extra arguments to a VM's emulator command line (``machine``: e.g. ``microvm``,
    ``q35``). Return a list (may be empty); appended after the runner's own arguments."""
