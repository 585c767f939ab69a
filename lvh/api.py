"""The public plugin API of lvh.

Everything a plugin — built-in or third-party — may use is importable from this module, and
plugins import nothing else from ``lvh``. A test enforces that for the built-in plugins, so an
out-of-tree plugin can do everything a built-in can.

Versioning promise: ``API_VERSION`` is bumped only when a change here would break an existing
driver. A driver declares the ``api_version`` it was written for; lvh refuses to load a driver
whose ``api_version`` it does not support, with an error naming the distribution.

The shape, in one paragraph: a *driver* is a class with a ``name``, an ``api_version``, a
marshmallow ``Options`` schema for its own options, a ``check()`` telling which host tools are
missing and how to install them, and one method that does its stage's work (``build``,
``derive``, ``customize`` or ``run``). The engine hands that method a :class:`Context` (where to
write, how to run commands, how to log, how to report progress) and the input artifacts; the
method returns an :class:`Artifact` whose files lie under ``ctx.out``. The engine publishes it
into the content-addressed cache by an atomic rename.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import marshmallow
import pluggy
from marshmallow import Schema, fields, validate

if TYPE_CHECKING:  # pragma: no cover
    from loguru import Logger

__all__ = [
    "API_VERSION",
    "Artifact",
    "Cancelled",
    "Command",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConfigError",
    "Context",
    "Customizer",
    "DiskArtifact",
    "DiskFormatter",
    "Driver",
    "Executor",
    "HostInfo",
    "HostMount",
    "KernelArtifact",
    "KernelBuilder",
    "LvhError",
    "NoOptions",
    "PortForward",
    "Progress",
    "Requirement",
    "RootfsArtifact",
    "RootfsProvider",
    "RunResult",
    "RunSpec",
    "Runner",
    "Schema",
    "Size",
    "StageError",
    "StageInfo",
    "ToolMissing",
    "UserError",
    "driver_class",
    "fields",
    "hash_path",
    "hookimpl",
    "marshmallow",
    "parse_size",
    "require_tool",
    "validate",
]

#: The plugin API version this lvh provides. Drivers set ``api_version`` to the version they target.
API_VERSION = 1
#: The API versions this lvh can load.
SUPPORTED_API_VERSIONS = frozenset({1})

#: Marker for pluggy hook implementations in ``lvh.hooks`` plugins (see ``lvh.hookspecs``).
hookimpl = pluggy.HookimplMarker("lvh")


# --------------------------------------------------------------------------------------------
# Errors. Every error lvh shows a user is one line: what is wrong, where, and a hint to fix it.
# --------------------------------------------------------------------------------------------


class LvhError(Exception):
    """Base of every error lvh reports to a user without a traceback.

    ``hint`` says how to fix it; the CLI prints ``error: <message>`` then ``hint: <hint>``.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserError(LvhError):
    """Bad input from the user (a wrong flag, a missing file, a missing tool): exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A config problem, located: ``conf.yaml:7 images[0].rootfs.suite: Unknown field.``"""

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike[str] | None = None,
        line: int | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.path = path
        self.detail = message
        where = ""
        if self.file:
            where = self.file + (f":{line}" if line else "")
        if path:
            where = f"{where} {path}" if where else path
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class ToolMissing(UserError):
    """A host tool a driver needs is not installed. ``hint`` says how to install it."""

    def __init__(self, tool: str, *, hint: str | None = None, needed_by: str | None = None) -> None:
        by = f" (needed by {needed_by})" if needed_by else ""
        super().__init__(f"'{tool}' is not installed{by}", hint=hint)
        self.tool = tool


class StageError(LvhError):
    """A stage failed while doing its work: exit code 1. Its partial output goes to ``failed/``."""


class CommandFailed(StageError):
    """An external command exited non-zero. ``tail`` holds the last lines of its output."""

    def __init__(self, result: CommandResult, *, hint: str | None = None) -> None:
        self.result = result
        tail = "\n".join("    " + ln for ln in result.tail[-20:])
        msg = f"command failed with exit code {result.returncode}: {shlex.join(result.argv)}"
        if tail:
            msg += "\n  last output:\n" + tail
        super().__init__(msg, hint=hint)


class CommandTimeout(CommandFailed):
    """An external command ran past its timeout and was killed."""


class Cancelled(LvhError):
    """The user interrupted lvh (Ctrl-C). Children are stopped; the cache stays consistent."""

    exit_code = 130


# --------------------------------------------------------------------------------------------
# Sizes ("2G", "512M") — one parser for the config and the plugins.
# --------------------------------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: str | int) -> int:
    """Parse a size like ``2G``, ``512M``, ``1.5G``, ``4096`` (bytes) into bytes.

    Units are binary (K=1024). Raises ``ValueError`` with a message fit for a user.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive, got {value}")
        return value
    text = str(value).strip().upper().removesuffix("IB").removesuffix("B") or "0"
    num, unit = text, ""
    if text[-1] in _UNITS:
        num, unit = text[:-1], text[-1]
    try:
        n = float(num)
    except ValueError:
        raise ValueError(f"not a size: {value!r} (use e.g. 2G, 512M, 10240K)") from None
    if n <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return int(n * _UNITS[unit])


class Size(fields.Field):
    """A marshmallow field for sizes: accepts ``2G``/``512M``/int bytes, loads to int bytes."""

    default_error_messages = {"invalid": "Not a valid size: {input!r} (use e.g. 2G, 512M)."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            return parse_size(value)
        except ValueError:
            raise self.make_error("invalid", input=value) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class NoOptions(Schema):
    """The options schema of a driver that takes no options. Unknown keys are errors."""

    class Meta:
        unknown = marshmallow.RAISE


# --------------------------------------------------------------------------------------------
# Running external commands: one method to implement (httpx-transport style).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """An external command to run. ``env`` is added to the inherited environment."""

    argv: Sequence[str]
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    timeout: float | None = None
    input: bytes | str | None = None
    #: Keep stdout in the result (``CommandResult.stdout``) instead of only logging it.
    capture: bool = False
    #: Raise :class:`CommandFailed` on a non-zero exit.
    check: bool = True
    #: Connect the command to the terminal (stdin/stdout/stderr inherited), e.g. an interactive VM.
    interactive: bool = False
    #: Called with ``(stream, line)`` for each output line, ``stream`` being "stdout" or "stderr".
    on_line: Callable[[str, str], None] | None = None
    #: Log output lines at DEBUG (default) — INFO would flood the console.
    log_level: str = "DEBUG"


@dataclass
class CommandResult:
    """What a command did. ``tail`` is the last lines of its combined output, for error messages."""

    argv: Sequence[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    tail: list[str] = field(default_factory=list)
    timed_out: bool = False


class Executor(Protocol):
    """Runs external commands. The real one streams output to the log line by line;
    ``lvh.testing.FakeExecutor`` records commands and answers them, for tests."""

    def run(self, command: Command) -> CommandResult:
        """Run ``command`` to completion (or its timeout) and return what it did.

        Must not raise on a non-zero exit; :meth:`Context.run` applies ``check``.
        Must stop the child when the current thread's context is cancelled.
        """
        ...


# --------------------------------------------------------------------------------------------
# Host
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One thing a driver needs from the host, as ``lvh doctor`` shows it."""

    name: str
    found: bool
    detail: str = ""
    hint: str | None = None


def require_tool(tool: str, *, hint: str, needed_by: str | None = None) -> Requirement:
    """A :class:`Requirement` for an executable on ``PATH`` (also searched: /usr/sbin, /sbin)."""
    import shutil

    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/local/sbin")
    return Requirement(tool, path is not None, path or "not found", None if path else hint)


@dataclass(frozen=True)
class HostInfo:
    """Facts about the host that drivers decide on. ``kvm`` is True only where KVM really works
    (a present /dev/kvm is not proof); ``kvm_reason`` says why it does not."""

    arch: str
    cpus: int
    kvm: bool
    kvm_reason: str = ""


# --------------------------------------------------------------------------------------------
# Artifacts: what stages produce. Paths point into the artifact's directory ``root``.
# --------------------------------------------------------------------------------------------

A = TypeVar("A", bound="Artifact")


@dataclass
class Artifact:
    """A stage's output. Its files lie under ``root``: ``ctx.out`` while it is built, its cache
    entry once published (the engine rewrites the paths). ``meta`` is free-form JSON for drivers;
    the engine starts it from the input artifacts' ``meta`` (a disk carries its rootfs's, e.g.
    ``distro``; a derived image its parent's), the keys the driver sets winning."""

    kind: ClassVar[str] = "artifact"
    root: Path
    key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Serialise; paths under ``root`` are stored relative to it."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            if f.name == "root":
                continue
            v = getattr(self, f.name)
            out[f.name] = _path_out(v, self.root)
        return out

    @classmethod
    def from_json(cls: type[A], data: Mapping[str, Any], root: Path) -> A:
        kw: dict[str, Any] = {}
        names = {f.name: f for f in dataclasses.fields(cls)}
        for k, v in data.items():
            if k == "kind" or k not in names:
                continue
            # Only fields typed Path turn absolute strings into paths (``DiskArtifact.kernel`` is a
            # path *inside* the image and stays a str).
            kw[k] = _path_in(v, root, "Path" in str(names[k].type))
        return cls(root=root, **kw)

    def rebased(self: A, new_root: Path) -> A:
        """The same artifact with every path under ``root`` moved under ``new_root``."""
        return type(self).from_json(self.to_json(), new_root)

    def files(self) -> Iterator[Path]:
        """Every path field of this artifact that is set."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path) and f.name != "root":
                yield v


_REL = "@root/"


def _path_out(v: Any, root: Path) -> Any:
    if isinstance(v, Path):
        try:
            return _REL + str(v.relative_to(root))
        except ValueError:
            return str(v)
    if isinstance(v, (list, tuple)):
        return [_path_out(x, root) for x in v]
    if isinstance(v, dict):
        return {k: _path_out(x, root) for k, x in v.items()}
    return v


def _path_in(v: Any, root: Path, absolute: bool = False) -> Any:
    if isinstance(v, str) and v.startswith(_REL):
        return root / v[len(_REL) :]
    if absolute and isinstance(v, str) and v.startswith("/"):
        return Path(v)
    if isinstance(v, list):
        return [_path_in(x, root, absolute) for x in v]
    if isinstance(v, dict):
        return {k: _path_in(x, root, absolute) for k, x in v.items()}
    return v


@dataclass
class RootfsArtifact(Artifact):
    """A root filesystem: a tarball (``format="tar"``) or a directory tree (``format="dir"``)."""

    kind: ClassVar[str] = "rootfs"
    path: Path = Path()
    format: str = "tar"


@dataclass
class DiskArtifact(Artifact):
    """A disk image. ``backing`` is the parent image of a qcow2 overlay. ``root_device`` is what
    the guest kernel mounts as ``/`` (``vda`` for a bare filesystem, ``vda1`` if partitioned).
    ``kernel``/``initrd`` are paths *inside* the image of a distro kernel, where one is installed."""

    kind: ClassVar[str] = "disk"
    path: Path = Path()
    format: str = "raw"
    size: int = 0
    backing: Path | None = None
    filesystem: str = "ext4"
    root_device: str = "vda"
    bootable: bool = False
    kernel: str | None = None
    initrd: str | None = None


@dataclass
class KernelArtifact(Artifact):
    """A bootable kernel. ``modules`` is a directory holding ``lib/modules/<version>/``."""

    kind: ClassVar[str] = "kernel"
    image: Path = Path()
    version: str = ""
    arch: str = "x86_64"
    config: Path | None = None
    system_map: Path | None = None
    modules: Path | None = None
    initrd: Path | None = None
    vmlinux: Path | None = None


@dataclass
class RunResult(Artifact):
    """What a run did. ``status``: ``exited`` (the command ran; ``exit_code`` is its code),
    ``timeout``, ``panic``, ``boot-failed``, ``running`` (daemonized) or ``stopped``."""

    kind: ClassVar[str] = "run"
    status: str = "exited"
    exit_code: int = 0
    console_log: Path | None = None
    duration: float = 0.0
    pid: int | None = None

    #: lvh's own exit codes for a run that did not return the guest command's code.
    EXIT_TIMEOUT: ClassVar[int] = 124
    EXIT_PANIC: ClassVar[int] = 125
    EXIT_BOOT_FAILED: ClassVar[int] = 126


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortForward:
    """``host_port`` on ``host_addr`` (127.0.0.1 unless asked otherwise) to ``guest_port``."""

    host_port: int
    guest_port: int
    proto: str = "tcp"
    host_addr: str = "127.0.0.1"

    @classmethod
    def parse(cls, text: str) -> PortForward:
        """Parse upstream's ``hostport[:vmport[:tcp|udp]]`` (or ``addr:hostport:vmport``)."""
        parts = str(text).split(":")
        addr = "127.0.0.1"
        if parts and not parts[0].isdigit():
            addr, parts = parts[0], parts[1:]
        try:
            if len(parts) == 1:
                return cls(int(parts[0]), int(parts[0]), "tcp", addr)
            if len(parts) == 2:
                if parts[1] in ("tcp", "udp"):
                    return cls(int(parts[0]), int(parts[0]), parts[1], addr)
                return cls(int(parts[0]), int(parts[1]), "tcp", addr)
            if len(parts) == 3 and parts[2] in ("tcp", "udp"):
                return cls(int(parts[0]), int(parts[1]), parts[2], addr)
        except ValueError:
            pass
        raise ValueError(f"not a port forward: {text!r} (use hostport[:vmport[:tcp|udp]], e.g. 2222:22)")


@dataclass(frozen=True)
class HostMount:
    """A host directory shared into the guest (9p), mounted at ``target``."""

    source: Path
    target: str
    readonly: bool = False
    tag: str = ""


@dataclass
class RunSpec:
    """Everything a runner needs for one VM. ``command`` set = exec mode (boot, run, return
    its exit code); unset = boot the image's own init (interactive, ssh, daemonize)."""

    name: str
    image: DiskArtifact | None = None
    kernel: KernelArtifact | None = None
    command: str | None = None
    cpus: int = 2
    memory: int = 4 * 1024**3
    cmdline: list[str] = field(default_factory=list)
    timeout: float | None = None
    boot_timeout: float = 300.0
    ports: list[PortForward] = field(default_factory=list)
    host_mounts: list[HostMount] = field(default_factory=list)
    console_log: Path | None = None
    interactive: bool = False
    daemonize: bool = False
    ssh: bool = False
    accel: str = "auto"
    root_device: str | None = None
    #: Called with ``(stream, data)`` for guest command output ("stdout"/"stderr"), as it comes.
    on_output: Callable[[str, bytes], None] | None = None
    #: Where a daemonized VM keeps its pid file, QMP socket and console log.
    state_dir: Path | None = None


# --------------------------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageInfo:
    """Which stage is running: ``id`` like ``image:base/disk``, ``target`` the image/kernel/run name."""

    id: str
    kind: str
    driver: str
    target: str
    key: str = ""


class Progress(Protocol):
    """A long step's progress, shown by the progress hook plugin."""

    def update(self, *, completed: float | None = None, advance: float | None = None,
               total: float | None = None, description: str | None = None) -> None: ...


class _NullProgress:
    def update(self, **kw: Any) -> None:
        pass


class Context:
    """What a driver gets to do its work.

    - ``out``: the empty directory its artifact's files go into (``None`` when planning).
    - ``tmp``: scratch space, removed after the stage.
    - ``state_dir``: a persistent directory for this driver (build trees, git mirrors), kept across
      runs and not content-addressed; ``user_cache``: shared by all workdirs (downloads).
    - ``run()``: run an external command through the executor (logged, streamed, cancellable).
    - ``log``: a loguru logger bound to the stage; ``progress()``: report a long step.
    - ``resolve()``: a path from the config, relative to the config file's folder.
    - ``hooks``: the pluggy hook relay (e.g. ``ctx.hooks.lvh_kernel_cmdline``).
    """

    def __init__(
        self,
        *,
        workdir: Path,
        config_dir: Path,
        executor: Executor,
        host: HostInfo,
        log: Logger,
        hooks: Any = None,
        stage: StageInfo | None = None,
        out: Path | None = None,
        tmp: Path | None = None,
        state_dir: Path | None = None,
        user_cache: Path | None = None,
        cancel: threading.Event | None = None,
        progress_factory: Callable[[str, float | None], Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.config_dir = config_dir
        self.executor = executor
        self.host = host
        self.log = log
        self.hooks = hooks
        self.stage = stage
        self.out = out
        self.tmp = tmp
        self._state_dir = state_dir
        self.user_cache = user_cache or Path(
            os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lvh"
        self.cancel = cancel or threading.Event()
        self._progress_factory = progress_factory

    @property
    def state_dir(self) -> Path:
        """A persistent per-driver directory (created on first use)."""
        d = self._state_dir or (self.workdir / "state" / (self.stage.driver if self.stage else "misc"))
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def planning(self) -> bool:
        """True when the engine only plans (``out`` is None): compute, but change nothing."""
        return self.out is None

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """A path from the config: ``~`` expanded, relative ones against the config's folder."""
        p = Path(os.path.expanduser(str(path)))
        return p if p.is_absolute() else (self.config_dir / p)

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the user interrupted lvh."""
        if self.cancel.is_set():
            raise Cancelled("interrupted")

    def run(self, *argv: str | os.PathLike[str], hint: str | None = None, **kw: Any) -> CommandResult:
        """Run a command (``Command`` fields as keywords); raise :class:`CommandFailed` on failure
        when ``check`` (default), with ``hint`` attached."""
        self.check_cancelled()
        cmd = Command(argv=[os.fspath(a) for a in argv], **kw)
        result = self.executor.run(cmd)
        self.check_cancelled()
        if cmd.check and result.returncode != 0:
            cls = CommandTimeout if result.timed_out else CommandFailed
            raise cls(result, hint=hint)
        return result

    @contextmanager
    def progress(self, description: str, total: float | None = None) -> Iterator[Progress]:
        """Report a long step: ``with ctx.progress("compiling", total=n) as p: p.update(advance=1)``."""
        if self._progress_factory is None:
            yield _NullProgress()
            return
        with self._progress_factory(description, total) as p:
            yield p


# --------------------------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------------------------


class Driver:
    """Base of every driver. Subclasses set ``name`` and ``Options`` and implement their stage's
    one method. ``version`` is part of every cache key: bump it when the same inputs would now
    give a different artifact."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    api_version: ClassVar[int] = API_VERSION
    version: ClassVar[str] = "1"
    #: The marshmallow schema of this driver's options (unknown keys must be errors).
    Options: ClassVar[type[Schema]] = NoOptions

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        #: The validated options (as loaded by ``Options``).
        self.options: dict[str, Any] = dict(options or {})

    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        """What this driver needs from the host, found or not (``lvh doctor``, and before a run)."""
        return []

    def key_material(self, ctx: Context) -> Mapping[str, Any]:
        """Extra inputs of the cache key beyond the options: host tool versions, the content of
        files the options name, a resolved source revision. Must be cheap and change nothing."""
        return {}

    def describe(self, ctx: Context, *inputs: Artifact | None) -> list[list[str]]:
        """The commands this stage would run, for ``lvh pipeline plan`` (best effort)."""
        return []


class RootfsProvider(Driver):
    """Group ``lvh.rootfs``: makes a root filesystem from nothing (a distro bootstrap)."""

    kind = "rootfs"

    def build(self, ctx: Context) -> RootfsArtifact:
        """Write the root filesystem under ``ctx.out`` and return it."""
        raise NotImplementedError


class DiskFormatter(Driver):
    """Group ``lvh.disk``: turns a rootfs into a disk image, and derives child images."""

    kind = "disk"
    #: The customizer used for a derived image's ``packages`` when the config names none.
    default_customizer: ClassVar[str | None] = None
    #: False for a formatter that makes its disk from its options alone (e.g. pulled from a
    #: registry): the image then needs no ``rootfs:`` and ``build`` gets ``rootfs=None``.
    needs_rootfs: ClassVar[bool] = True

    def build(self, ctx: Context, rootfs: RootfsArtifact | None) -> DiskArtifact:
        """Write a disk image holding ``rootfs`` under ``ctx.out`` and return it."""
        raise NotImplementedError

    def derive(self, ctx: Context, parent: DiskArtifact) -> DiskArtifact:
        """Write a child image of ``parent`` (a qcow2 overlay whose backing file is the parent's
        published image, grown to ``options['size']`` if larger) under ``ctx.out``."""
        raise NotImplementedError


class Customizer(Driver):
    """Group ``lvh.customize``: applies ``options['actions']`` to a rootfs or a disk.

    ``targets`` says what it can work on: ``"rootfs"`` (a tree or tarball, before the disk is
    made — no VM needed) and/or ``"disk"`` (a disk image, e.g. a derived image's overlay). The
    engine gives it a rootfs where it can and the image's formatter takes a rootfs."""

    kind = "customize"
    targets: ClassVar[frozenset[str]] = frozenset({"disk"})

    def customize(self, ctx: Context, target: RootfsArtifact | DiskArtifact) -> Artifact:
        """Write a customized copy of ``target`` under ``ctx.out`` (the input is read-only: it is
        a cache entry) and return it, of the same kind."""
        raise NotImplementedError


class KernelBuilder(Driver):
    """Group ``lvh.kernel``: builds or fetches a kernel."""

    kind = "kernel"

    def build(self, ctx: Context) -> KernelArtifact:
        """Write the kernel (image, config, modules…) under ``ctx.out`` and return it."""
        raise NotImplementedError


class Runner(Driver):
    """Group ``lvh.runner``: boots a VM."""

    kind = "runner"

    def run(self, ctx: Context, spec: RunSpec) -> RunResult:
        """Boot ``spec``; in exec mode return the guest command's exit code in the result."""
        raise NotImplementedError

    def command_line(self, ctx: Context, spec: RunSpec) -> list[str]:
        """The exact command line :meth:`run` would start (``--qemu-cmd-print``, plans)."""
        return []

    def stop(self, ctx: Context, state_dir: Path) -> bool:
        """Stop a daemonized VM whose state is in ``state_dir``; False if it was not running."""
        raise NotImplementedError


#: The stage base class for each entry-point group.
DRIVER_GROUPS: dict[str, type[Driver]] = {
    "lvh.rootfs": RootfsProvider,
    "lvh.disk": DiskFormatter,
    "lvh.customize": Customizer,
    "lvh.kernel": KernelBuilder,
    "lvh.runner": Runner,
}


# --------------------------------------------------------------------------------------------
# Helpers for drivers
# --------------------------------------------------------------------------------------------


def driver_class(group: str, name: str) -> type[Driver]:
    """The installed driver class ``name`` of entry-point ``group`` (e.g. ``"lvh.rootfs"``), for a
    driver built on another one by composition (instantiate it with validated options).
    Raises :class:`UserError` if it is not installed."""
    from lvh.plugins import driver_class as _driver_class

    return _driver_class(group, name)


def hash_path(path: Path, *, follow: bool = True) -> str:
    """A content hash of a file or a directory tree (names, modes, contents, link targets),
    for ``key_material`` of options that name local files."""
    h = hashlib.sha256()
    path = Path(path)
    if path.is_file():
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    if not path.exists():
        return "missing"
    for dirpath, dirnames, filenames in os.walk(path, followlinks=follow):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath, name)
            rel = str(p.relative_to(path))
            h.update(rel.encode() + b"\0")
            if p.is_symlink():
                h.update(b"L" + os.readlink(p).encode())
            elif p.is_file():
                h.update(b"F%o" % (p.stat().st_mode & 0o7777))
                h.update(hash_path(p).encode())
    return h.hexdigest()

from lvh.actions import (  # noqa: E402  (re-exported: the customize-action schema)
    ACTION_TYPES,
    ActionField,
    CustomizeOptions,
    from_upstream,
    local_paths,
    to_upstream,
)

__all__ += ["ACTION_TYPES", "ActionField", "CustomizeOptions", "from_upstream", "local_paths", "to_upstream"]


def action_files_key(ctx: Context, actions: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    """Content hashes of the host files customize ``actions`` read, for a customizer's
    ``key_material`` (so editing a copied-in file rebuilds the image). A file that does not exist
    is a :class:`UserError` naming the action."""
    files: dict[str, str] = {}
    for i, a in enumerate(actions or []):
        for p in local_paths(a):
            path = ctx.resolve(p)
            if not path.exists():
                raise UserError(f"customize action {i} ({a['type']}): {path} does not exist",
                                hint="local paths are relative to the config file's folder")
            files[p] = hash_path(path)
    return files


def install_kernel_image(boot: Path) -> str:
    """The file name of the kernel image an ``install-kernel`` action installs from ``boot``
    (upstream's order: ``vmlinuz-*``, ``vmlinuz``, then ``bzImage*``, ``vmlinux-*``, ``Image*``;
    the last in name order). A :class:`UserError` with a hint if there is none."""
    for pat in ("vmlinuz-*", "vmlinuz", "bzImage*", "vmlinux-*", "Image*"):
        found = sorted(p.name for p in boot.glob(pat) if p.is_file())
        if found:
            return found[-1]
    raise UserError(f"install-kernel: no kernel image (vmlinuz-*, bzImage) in {boot}",
                    hint="kernel_install_dir must hold boot/<kernel> and lib/modules/<version>/ "
                    "(as `make install modules_install INSTALL_PATH=D/boot INSTALL_MOD_PATH=D` writes)")


__all__ += ["action_files_key", "install_kernel_image"]
