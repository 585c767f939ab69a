"""The pipeline engine: turns a validated config into ordered stages and runs what is not cached.

rootfs → (tree customizers) → disk → (disk customizers), per image — a derived image starts from
its parent's final disk · kernel, per kernel · run, needing its image and kernel. Each stage's
cache key hashes its driver, driver version, validated options, input keys and the driver's key
material; a stage whose key is published is not run again.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from lvh import __version__
from lvh.api import (
    API_VERSION,
    Artifact,
    Cancelled,
    Command,
    CommandResult,
    Context,
    DiskArtifact,
    Executor,
    KernelArtifact,
    LvhError,
    RootfsArtifact,
    RunResult,
    RunSpec,
    StageError,
    StageInfo,
)
from lvh.cache import BuildDir, Cache
from lvh.config import Config, DriverRef, PathT
from lvh.plugins import use_registry

STATUS_BUILT, STATUS_CACHED, STATUS_FAILED, STATUS_SKIPPED = "built", "cached", "failed", "skipped"


@dataclass
class Stage:
    """One node of the pipeline graph."""

    id: str
    kind: str  # rootfs | disk | customize | kernel | run
    target: str  # image, kernel or run name
    ref: DriverRef
    method: str  # build | derive | customize | run
    inputs: list[Stage] = field(default_factory=list)
    key: str = ""
    final: str | None = None  # "image" / "kernel" when this stage's output is the target's
    run_conf: Any = None
    artifact: Artifact | None = None
    status: str = ""
    duration: float = 0.0
    error: str | None = None
    failed_dir: Path | None = None

    @property
    def info(self) -> StageInfo:
        return StageInfo(id=self.id, kind=self.kind, driver=self.ref.name, target=self.target, key=self.key)

    @property
    def path(self) -> PathT:
        return self.ref.path


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if hasattr(v, "__dataclass_fields__"):
        return _jsonable(v.__dict__)
    return str(v)


def _inherit_meta(artifact: Any, inputs: list[Artifact | None]) -> None:
    """An artifact keeps what its inputs said about themselves (a disk knows the distro of its
    rootfs, a derived image its parent's): inputs' ``meta`` first, the driver's own keys win."""
    if not isinstance(artifact, Artifact):
        return
    inherited: dict[str, Any] = {}
    for a in inputs:
        if isinstance(a, Artifact):
            inherited.update(a.meta)
    if inherited:
        artifact.meta = {**inherited, **artifact.meta}


class _StageExecutor:
    """Tees every command and its output into the stage's log file (one line-buffered handle for
    the stage, not an open per output line: a kernel build prints thousands)."""

    def __init__(self, inner: Executor, log: Path) -> None:
        self.inner = inner
        self.log = log
        self.lock = threading.Lock()
        self._fh: Any = None

    def _write(self, text: str) -> None:
        with self.lock:
            if self._fh is None:
                self._fh = self.log.open("a", buffering=1)
            self._fh.write(text + "\n")

    def close(self) -> None:
        with self.lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def run(self, command: Command) -> CommandResult:
        import shlex
        from dataclasses import replace

        self._write(f"$ {shlex.join(str(a) for a in command.argv)}")
        user = command.on_line

        def on_line(stream: str, line: str) -> None:
            self._write(f"  {stream} | {line}")
            if user is not None:
                user(stream, line)

        result = self.inner.run(replace(command, on_line=on_line))
        self._write(f"# exit {result.returncode} after {result.duration:.2f}s")
        return result


class _HookProgress:
    def __init__(self, hooks: Any, stage: StageInfo | None, description: str, total: float | None) -> None:
        self.hooks, self.stage, self.description, self.total = hooks, stage, description, total
        self.completed = 0.0

    def update(self, *, completed: float | None = None, advance: float | None = None,
               total: float | None = None, description: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if advance is not None:
            self.completed += advance
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        self._emit(False)

    def _emit(self, finished: bool) -> None:
        if self.hooks is not None:
            self.hooks.lvh_progress(stage=self.stage, description=self.description, completed=self.completed,
                                    total=self.total, finished=finished)

    def __enter__(self) -> _HookProgress:
        self._emit(False)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._emit(True)


class Engine:
    """Plans and runs a pipeline. ``only``: targets to make (and what they need); ``force``:
    rebuild those targets' stages even if cached; ``dry_run``: walk the run path, change nothing."""

    def __init__(
        self,
        config: Config,
        *,
        workdir: Path | None = None,
        force: bool = False,
        only: list[str] | None = None,
        dry_run: bool = False,
        executor: Executor | None = None,
        hooks: Any = None,
        host: Any = None,
        cancel: threading.Event | None = None,
        on_output: Callable[[str, bytes], None] | None = None,
        registry: Any = None,
    ) -> None:
        self.config = config
        #: Where composed drivers find the drivers they build on (default: the config's).
        self.registry = registry or config.registry
        self.workdir = Path(workdir or config.workdir)
        self.cache = Cache(self.workdir)
        self.force = force
        self.only = list(only or [])
        self.dry_run = dry_run
        self.cancel = cancel or threading.Event()
        if executor is None:
            from lvh.executor import SubprocessExecutor

            executor = SubprocessExecutor(cancel=self.cancel)
        self.executor = executor
        if hooks is None:
            from lvh.plugins import hooks as _hooks

            hooks = _hooks()
        self.hooks = hooks
        if host is None:
            from lvh.host import host_info

            host = host_info()
        self.host = host
        self.on_output = on_output
        for name in self.only:
            if name not in config.targets():
                import difflib

                m = difflib.get_close_matches(name, config.targets(), n=1)
                raise config.error(f"--only {name!r}: no image, kernel or run of that name",
                                   hint=f"did you mean {m[0]!r}?" if m else
                                   f"targets: {', '.join(config.targets())}")
        self._stages: list[Stage] | None = None

    # -- graph --------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        """All stages needed for the selected targets, in execution order, keys computed."""
        if self._stages is not None:
            return self._stages
        with use_registry(self.registry):
            return self._graph()

    def _graph(self) -> list[Stage]:
        cfg = self.config
        order: list[Stage] = []
        image_final: dict[str, Stage] = {}
        kernel_final: dict[str, Stage] = {}

        def image(name: str) -> Stage:
            if name in image_final:
                return image_final[name]
            im = cfg.images[name]
            cur: Stage
            if im.parent:
                parent = image(im.parent)
                cur = Stage(f"image:{name}/disk", "disk", name, im.disk, "derive", [parent])
                order.append(cur)
                pending = list(im.customize)
            else:
                pending = list(im.customize)
                if im.rootfs is not None:
                    cur = Stage(f"image:{name}/rootfs", "rootfs", name, im.rootfs, "build")
                    order.append(cur)
                    while pending and "rootfs" in pending[0].cls.targets:
                        c = pending.pop(0)
                        cur = Stage(f"image:{name}/customize[{len(im.customize) - len(pending) - 1}]",
                                    "customize", name, c, "customize", [cur])
                        order.append(cur)
                    cur = Stage(f"image:{name}/disk", "disk", name, im.disk, "build", [cur])
                else:
                    cur = Stage(f"image:{name}/disk", "disk", name, im.disk, "build")
                order.append(cur)
            n_before = len(im.customize) - len(pending)
            for i, c in enumerate(pending):
                if "disk" not in c.cls.targets:
                    why = ("a derived image starts from its parent's disk" if im.parent else
                           "an earlier customize step already needed the disk")
                    raise cfg.error(f"customizer {c.name!r} works only on a rootfs, but here it would get "
                                    f"a disk image ({why})", c.path,
                                    hint="move it before the disk-only steps, or use a customizer that "
                                    "works on disks")
                label = "packages" if (im.parent and c.path and c.path[-1] == "packages") else \
                    f"customize[{n_before + i - (1 if im.raw.get('packages') else 0)}]"
                cur = Stage(f"image:{name}/{label}", "customize", name, c, "customize", [cur])
                order.append(cur)
            cur.final = "image"
            image_final[name] = cur
            return cur

        def kernel(name: str) -> Stage:
            if name not in kernel_final:
                k = cfg.kernels[name]
                st = Stage(f"kernel:{name}", "kernel", name, k.builder, "build", final="kernel")
                order.append(st)
                kernel_final[name] = st
            return kernel_final[name]

        wanted = self.only or cfg.targets()
        for t in wanted:
            if t in cfg.images:
                image(t)
            elif t in cfg.kernels:
                kernel(t)
        for t in wanted:
            if t in cfg.runs:
                r = cfg.runs[t]
                inputs = []
                if r.image:
                    inputs.append(image(r.image))
                if r.kernel:
                    inputs.append(kernel(r.kernel))
                order.append(Stage(f"run:{t}", "run", t, r.runner, "run", inputs, run_conf=r))
        for st in order:
            st.key = self._key(st)
        self._stages = order
        return order

    def _plan_context(self, st: Stage) -> Context:
        return Context(workdir=self.workdir, config_dir=self.config.base_dir, executor=self.executor,
                       host=self.host, log=logger.bind(stage=st.id), hooks=self.hooks, stage=st.info,
                       state_dir=self.workdir / "state" / st.ref.name, cancel=self.cancel)

    def _key(self, st: Stage) -> str:
        if st.kind == "run":
            return ""
        driver = st.ref.instance()
        try:
            material = driver.key_material(self._plan_context(st))
        except LvhError:
            raise
        except Exception as e:  # a driver bug must not look like a user error, but must say where
            raise StageError(f"{st.id}: driver {st.ref.name!r} failed to compute its cache key: "
                             f"{type(e).__name__}: {e}") from e
        doc = {
            "lvh-cache": 1, "api": API_VERSION, "kind": st.kind, "method": st.method,
            "driver": st.ref.name, "driver_version": st.ref.cls.version,
            "options": _jsonable(st.ref.options), "inputs": [i.key for i in st.inputs],
            "material": _jsonable(dict(material)),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]

    def _forced(self, st: Stage) -> bool:
        return self.force and (not self.only or st.target in self.only)

    # -- plan ---------------------------------------------------------------------------------
    def plan(self) -> list[dict[str, Any]]:
        """What ``run`` would do: per stage its driver, key, cached or not, and commands."""
        with use_registry(self.registry):
            return self._plan()

    def _plan(self) -> list[dict[str, Any]]:
        out = []
        for st in self.stages():
            cached = st.kind != "run" and not self._forced(st) and \
                self.cache.lookup(st.kind, st.key) is not None
            inputs = [self.cache.lookup(i.kind, i.key) for i in st.inputs]
            commands: list[list[str]] = []
            if not cached:
                try:
                    if st.kind == "run" and any(a is None for a in inputs):
                        commands = []  # the command line names the inputs' files: not built yet
                    elif st.kind == "run":
                        spec = self._run_spec(st, inputs)
                        commands = [st.ref.instance().command_line(self._plan_context(st), spec)]
                        commands = [c for c in commands if c]
                    else:
                        commands = st.ref.instance().describe(self._plan_context(st), *inputs)
                except LvhError as e:
                    if all(a is not None for a in inputs):
                        raise
                    # Its inputs are not built yet: the exact commands depend on them.
                    logger.debug("no commands for {} before its inputs exist: {}", st.id, e)
                except Exception as e:
                    logger.debug("describe() of {} failed: {}", st.id, e)
            out.append({"id": st.id, "kind": st.kind, "target": st.target, "driver": st.ref.name,
                        "key": st.key, "cached": cached, "inputs": [i.id for i in st.inputs],
                        "commands": commands})
        return out

    # -- run ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every stage not cached, in order. Returns the summary (also given to hooks).
        Raises the first stage error after publishing nothing for that stage."""
        with use_registry(self.registry):
            return self._run()

    def _run(self) -> dict[str, Any]:
        started = time.monotonic()
        stages = self.stages()
        runs: list[dict[str, Any]] = []
        error: BaseException | None = None
        try:
            for st in stages:
                if self.dry_run:
                    st.status = STATUS_CACHED if self.cache.lookup(st.kind, st.key) and not \
                        self._forced(st) else STATUS_SKIPPED
                    continue
                if st.kind == "run":
                    res = self._do_run(st)
                    runs.append({"name": st.target, "status": res.status, "exit_code": res.exit_code,
                                 "duration": round(res.duration, 3),
                                 "console_log": str(res.console_log) if res.console_log else None})
                else:
                    self._do_stage(st)
        except BaseException as e:
            error = e
        exit_code = 0
        if error is not None:
            exit_code = error.exit_code if isinstance(error, LvhError) else 1
        else:
            for r in runs:
                if r["exit_code"]:
                    exit_code = r["exit_code"]
                    break
        summary = {
            "ok": error is None and exit_code == 0,
            "exit_code": exit_code,
            "duration": round(time.monotonic() - started, 3),
            "workdir": str(self.workdir),
            "stages": [{"id": s.id, "kind": s.kind, "driver": s.ref.name, "target": s.target, "key": s.key,
                        "status": s.status or STATUS_SKIPPED, "duration": round(s.duration, 3),
                        "error": s.error, "failed_dir": str(s.failed_dir) if s.failed_dir else None}
                       for s in stages],
            "runs": runs,
            "outputs": self.outputs(),
        }
        if error is not None:
            summary["error"] = str(error)
        self.hooks.lvh_pipeline_finished(summary=summary)
        if error is not None:
            raise error
        return summary

    def outputs(self) -> dict[str, str]:
        out = {}
        for name, p in self.cache.named_outputs().items():
            out[name] = str(p)
        return out

    def _context(self, st: Stage, build: BuildDir | None, state: Path | None = None) -> Context:
        executor: Executor = self.executor
        if build is not None:
            executor = _StageExecutor(self.executor, build.log)
        return Context(
            workdir=self.workdir, config_dir=self.config.base_dir, executor=executor, host=self.host,
            log=logger.bind(stage=st.id), hooks=self.hooks, stage=st.info,
            out=build.out if build else state, tmp=build.tmp if build else state,
            state_dir=self.workdir / "state" / st.ref.name, cancel=self.cancel,
            progress_factory=lambda d, t: _HookProgress(self.hooks, st.info, d, t))

    @contextmanager
    def _stage_log(self, st: Stage, log: Path, tee: Any) -> Iterator[None]:
        """The stage's log file: driver log records (loguru) and, through ``tee``, its commands."""
        sink = logger.add(str(log), level="DEBUG", filter=lambda r: r["extra"].get("stage") == st.id,
                          format="{time:HH:mm:ss.SSS} {level: <7} {message}", catch=True)
        try:
            with logger.contextualize(stage=st.id):
                yield
        finally:
            logger.remove(sink)
            tee.close()

    def _do_stage(self, st: Stage) -> None:
        forced = self._forced(st)
        with self.cache.lock(st.key):
            art = None if forced else self.cache.lookup(st.kind, st.key)
            if art is not None:
                st.artifact, st.status = art, STATUS_CACHED
                self.hooks.lvh_stage_finish(stage=st.info, status=STATUS_CACHED, duration=0.0, error=None)
                self._name_output(st)
                return
            inputs = [i.artifact for i in st.inputs]
            self.hooks.lvh_stage_start(stage=st.info)
            t0 = time.monotonic()
            build = self.cache.new_build_dir(st.id)
            ctx = self._context(st, build)
            try:
                with self._stage_log(st, build.log, ctx.executor):
                    logger.debug("{}: {} ({})", st.id, st.method, st.ref.name)
                    driver = st.ref.instance()
                    result = self._call(driver, st, ctx, inputs)
                    _inherit_meta(result, inputs)
                    self._check_artifact(st, result, build)
                    record = {"stage": st.id, "driver": st.ref.name, "driver_version": st.ref.cls.version,
                              "options": _jsonable(st.ref.options), "inputs": [i.key for i in st.inputs],
                              "lvh": __version__, "target": st.target}
                published = self.cache.publish(st.kind, st.key, result, build, record)
            except BaseException as e:
                st.duration = time.monotonic() - t0
                st.status = STATUS_FAILED
                st.failed_dir = self.cache.fail(build, st.id)
                err = e
                if isinstance(e, KeyboardInterrupt):
                    err = Cancelled("interrupted")
                elif not isinstance(e, LvhError):
                    err = StageError(f"{st.id}: driver {st.ref.name!r} crashed: {type(e).__name__}: {e}",
                                     hint=f"see the log in {st.failed_dir}/stage.log; this is a bug in "
                                     "the driver")
                    err.__cause__ = e
                elif isinstance(e, StageError) and not e.message.startswith(st.id):
                    err = type(e).__new__(type(e))
                    err.__dict__.update(e.__dict__)
                    Exception.__init__(err, f"{st.id}: {e.message}")
                    err.message = f"{st.id}: {e.message}"
                    if not err.hint:
                        err.hint = f"partial output and log kept in {st.failed_dir}"
                st.error = str(err)
                self.hooks.lvh_stage_finish(stage=st.info, status=STATUS_FAILED, duration=st.duration, error=err)
                raise err from e
            st.duration = time.monotonic() - t0
            st.artifact, st.status = published, STATUS_BUILT
            self.hooks.lvh_artifact_published(stage=st.info, artifact=published)
            self.hooks.lvh_stage_finish(stage=st.info, status=STATUS_BUILT, duration=st.duration, error=None)
            self._name_output(st)

    def _call(self, driver: Any, st: Stage, ctx: Context, inputs: list[Artifact | None]) -> Artifact:
        if st.method == "build":
            if st.kind == "disk":
                return driver.build(ctx, inputs[0] if inputs else None)
            return driver.build(ctx)
        if st.method == "derive":
            return driver.derive(ctx, inputs[0])
        if st.method == "customize":
            return driver.customize(ctx, inputs[0])
        raise AssertionError(st.method)

    def _check_artifact(self, st: Stage, art: Any, build: BuildDir) -> None:
        expected = {"rootfs": RootfsArtifact, "disk": DiskArtifact, "kernel": KernelArtifact}.get(st.kind)
        if st.kind == "customize":
            expected = type(st.inputs[0].artifact) if st.inputs and st.inputs[0].artifact else None
        if not isinstance(art, Artifact) or (expected and not isinstance(art, expected)):
            raise StageError(f"{st.id}: driver {st.ref.name!r} returned {type(art).__name__}, "
                             f"not {expected.__name__ if expected else 'an artifact'}",
                             hint="this is a bug in the driver")
        if Path(art.root).resolve() != build.out.resolve():
            raise StageError(f"{st.id}: driver {st.ref.name!r} returned an artifact outside ctx.out",
                             hint="this is a bug in the driver")
        for p in art.files():
            if p.is_relative_to(art.root) and not (p.exists() or p.is_symlink()):
                raise StageError(f"{st.id}: driver {st.ref.name!r} returned a missing file {p}",
                                 hint="this is a bug in the driver")

    def _name_output(self, st: Stage) -> None:
        art = st.artifact
        if st.final == "image" and isinstance(art, DiskArtifact):
            self.cache.link(self.workdir / "images" / f"{st.target}.{art.format}", art.path)
        elif st.final == "kernel" and isinstance(art, KernelArtifact):
            self.cache.link(self.workdir / "kernels" / st.target, art.root)

    def _run_spec(self, st: Stage, inputs: list[Artifact | None]) -> RunSpec:
        r = st.run_conf
        image = next((a for a in inputs if isinstance(a, DiskArtifact)), None)
        kernel = next((a for a in inputs if isinstance(a, KernelArtifact)), None)
        if image is None and r.image:
            image = DiskArtifact(root=self.workdir, path=self.workdir / "images" / f"{r.image}.qcow2")
        rundir = self.workdir / "runs" / st.target
        console = Path(r.console_log) if r.console_log else rundir / "console.log"
        if r.console_log and not console.is_absolute():
            console = self.config.base_dir / console
        return RunSpec(
            name=st.target, image=image, kernel=kernel, command=r.command, cpus=r.cpus, memory=r.memory,
            cmdline=list(r.cmdline), timeout=r.timeout, boot_timeout=r.boot_timeout, ports=list(r.ports),
            host_mounts=list(r.host_mounts), console_log=console, ssh=r.ssh,
            interactive=r.command is None and sys.stdin.isatty(), state_dir=rundir,
            on_output=self.on_output)

    def _do_run(self, st: Stage) -> RunResult:
        spec = self._run_spec(st, [i.artifact for i in st.inputs])
        assert spec.state_dir is not None
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        self.hooks.lvh_stage_start(stage=st.info)
        t0 = time.monotonic()
        ctx = self._context(st, None, state=spec.state_dir)
        try:
            with logger.contextualize(stage=st.id):
                res = st.ref.instance().run(ctx, spec)
        except BaseException as e:
            st.status, st.duration, st.error = STATUS_FAILED, time.monotonic() - t0, str(e)
            self.hooks.lvh_stage_finish(stage=st.info, status=STATUS_FAILED, duration=st.duration, error=e)
            if isinstance(e, KeyboardInterrupt):
                raise Cancelled("interrupted") from None
            raise
        st.duration = time.monotonic() - t0
        st.status = STATUS_BUILT
        self.hooks.lvh_run_finished(spec=spec, result=res)
        self.hooks.lvh_stage_finish(stage=st.info, status="ran", duration=st.duration, error=None)
        return res
