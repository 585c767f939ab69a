"""The ``qemu`` (pc/q35) and ``microvm`` runners.

Exec mode (``spec.command`` set): the VM boots lvh's small initramfs (busybox + ``guest/init.sh``)
which mounts the image, runs the command in a chroot and sends its stdout, stderr and exit status
back over three virtio-serial ports (``lvh.stdout``, ``lvh.stderr``, ``lvh.status``) whose host
ends are files this process follows; then the guest resets and QEMU exits (``-no-reboot``).
Boot mode (no command): the image's own init runs (interactive on the terminal, or daemonized
with a pid file and a QMP socket), with ports forwarded to 127.0.0.1 and, with ``ssh``, a
generated key injected by the initramfs before it switches to the image's root.
The image is never written: its drive has ``snapshot=on`` (writes go to a temporary overlay).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lvh.api import (
    Cancelled,
    Context,
    DiskArtifact,
    HostInfo,
    HostMount,
    KernelArtifact,
    PortForward,
    Requirement,
    Runner,
    RunResult,
    RunSpec,
    Schema,
    StageError,
    UserError,
    fields,
    marshmallow,
    require_tool,
    validate,
)

from . import initramfs

QEMU_HINT = "apt-get install qemu-system-x86 (Debian/Ubuntu) or dnf install qemu-system-x86 (Fedora)"
PANIC_RE = re.compile(rb"Kernel panic - not syncing|BUG: kernel NULL pointer|Oops: ")
POLL = 0.01


class QemuOptions(Schema):
    """Options of the QEMU runners (beside ``runner:`` / ``name:`` in a run)."""

    class Meta:
        unknown = marshmallow.RAISE

    accel = fields.String(load_default="auto", validate=validate.OneOf(["auto", "kvm", "tcg"]), metadata={
        "description": "accelerator: auto (KVM where it works, TCG otherwise), kvm or tcg; "
                       "``lvh run --no-hw-accel`` forces tcg"})
    binary = fields.String(load_default=None, allow_none=True, metadata={
        "description": "the emulator binary (default: ``qemu-system-<arch>``)"})
    arch = fields.String(load_default=None, allow_none=True, metadata={
        "description": "the ``<arch>`` of ``qemu-system-<arch>`` (default: the host's)"})
    cpu_kind = fields.String(load_default=None, allow_none=True, metadata={
        "description": "``-cpu`` model (default: host with KVM, QEMU's default with TCG)"})
    machine = fields.String(load_default="pc", validate=validate.OneOf(["pc", "q35"]), metadata={
        "description": "the machine type of the qemu runner (microvm ignores it)"})
    extra_args = fields.List(fields.String(), load_default=list, metadata={
        "description": "extra emulator arguments, appended last"})
    serial_port = fields.Integer(load_default=None, allow_none=True, metadata={
        "description": "a serial port served by telnet on localhost:PORT (upstream's "
                       "``--serial-port``); in boot mode it is the kernel console"})
    monitor_port = fields.Integer(load_default=None, allow_none=True, metadata={
        "description": "serve the QEMU human monitor on TCP localhost:PORT (upstream's "
                       "``--qemu-monitor-port``)"})
    quiet = fields.Boolean(load_default=True, metadata={
        "description": "exec mode: add ``quiet`` to the kernel command line (faster under TCG; the "
                       "console log has the rest)"})
    show_console = fields.Boolean(load_default=False, metadata={
        "description": "exec mode: print the guest console while the VM runs, and log the emulator "
                       "command (``lvh run --verbose``)"})


@dataclass
class _Plan:
    argv: list[str]
    rundir: Path
    console: Path
    initrd: Path | None = None
    initrd_base: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    ports: list[PortForward] = field(default_factory=list)
    ssh_key: Path | None = None
    qmp: Path | None = None
    pidfile: Path | None = None
    accel: str = "tcg"
    files: dict[str, Path] = field(default_factory=dict)


def _mem(n: int) -> str:
    g = 1024**3
    return f"{n // g}G" if n % g == 0 else f"{max(1, n // 1024**2)}M"


def _detect_format(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e.strerror}", hint="check the --image path") from None
    return "qcow2" if magic == b"QFI\xfb" else "raw"


def _tsc_khz() -> int:
    """The host's TSC frequency in kHz (TCG's guest TSC runs at the host's): sysfs where the host
    kernel tells it, else the CPU's base frequency, else the model name's "@ 2.60GHz", else the
    current frequency."""
    cpu0 = Path("/sys/devices/system/cpu/cpu0")
    for f in (cpu0 / "tsc_freq_khz", cpu0 / "cpufreq" / "base_frequency",
              cpu0 / "cpufreq" / "amd_pstate_nominal_freq"):
        try:
            return int(f.read_text())
        except (OSError, ValueError):
            pass
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 2_000_000
    m = re.search(r"^model name\s*:.*@\s*([\d.]+)\s*GHz", info, re.M)
    if m:
        return int(float(m.group(1)) * 1_000_000)
    m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)
    return int(float(m.group(1)) * 1000) if m else 2_000_000


def _tag(i: int, tag: str) -> str:
    """The 9p mount tag of host mount ``i``: upstream's ``host_mount`` for the first one."""
    return tag or ("host_mount" if i == 0 else f"host_mount{i}")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _sigterm_cancels() -> Any:
    """SIGTERM to lvh stops the VM like Ctrl-C does (only possible in the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _daemonized(plan: _Plan) -> bool:
    return plan.pidfile is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class QemuRunner(Runner):
    """Boots a VM with QEMU's pc (or q35) machine: PCI virtio devices, direct kernel boot."""

    name = "qemu"
    version = "1"
    Options = QemuOptions
    #: virtio device suffix: ``pci`` or ``device`` (virtio-mmio).
    bus: ClassVar[str] = "pci"

    # ----------------------------------------------------------------------------- host
    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        qemu = f"qemu-system-{host.arch}"
        return [
            require_tool(qemu, hint=QEMU_HINT, needed_by=f"runner {cls.name}"),
            require_tool("busybox", hint="apt-get install busybox-static", needed_by=f"runner {cls.name}"),
            require_tool("debugfs", hint="apt-get install e2fsprogs",
                         needed_by="booting the kernel installed in an image"),
        ]

    def machine_name(self) -> str:
        return str(self.options.get("machine", "pc"))

    def _binary(self, ctx: Context) -> str:
        return self.options.get("binary") or f"qemu-system-{self.options.get('arch') or ctx.host.arch}"

    def _accel(self, ctx: Context, spec: RunSpec) -> str:
        want = spec.accel if spec.accel != "auto" else self.options.get("accel", "auto")
        if want == "auto":
            return "kvm" if ctx.host.kvm else "tcg"
        return want

    # ----------------------------------------------------------------------------- devices
    def _dev(self, kind: str) -> str:
        return f"virtio-{kind}-{self.bus}"

    def _machine_args(self, accel: str) -> list[str]:
        m = self.machine_name()
        return [] if m == "pc" else ["-M", m]

    def _drive_args(self, path: Path, fmt: str) -> list[str]:
        return ["-drive", f"file={path},if=virtio,index=0,media=disk,format={fmt},snapshot=on"]

    def _console_dev(self) -> str:
        return "ttyS0"

    def _extra_cmdline(self, accel: str) -> list[str]:
        return []

    # ----------------------------------------------------------------------------- planning
    def _kernel(self, ctx: Context, spec: RunSpec, image: DiskArtifact | None, root: str,
                dry: bool) -> KernelArtifact | None:
        if spec.kernel is not None:
            if not Path(spec.kernel.image).exists():
                raise UserError(f"kernel image {spec.kernel.image} does not exist",
                                hint="build the kernel first, or pass an existing file to --kernel")
            return spec.kernel
        if image is None:
            raise UserError("a run needs a kernel or an image with a kernel installed",
                            hint="pass --kernel, or --image of an image that has /boot/vmlinuz-*")
        from . import guestkernel

        if dry:
            d = guestkernel.cache_dir(ctx, image)
            return KernelArtifact(root=d, image=d / "vmlinuz")
        return guestkernel.extract(ctx, image, root)

    @staticmethod
    def _kernel_modules_dir(kernel: KernelArtifact | None) -> Path | None:
        if kernel is None or kernel.modules is None:
            return None
        base = Path(kernel.modules) / "lib" / "modules"
        if kernel.version and (base / kernel.version).is_dir():
            return base / kernel.version
        dirs = sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []
        return dirs[-1] if len(dirs) == 1 else None

    def _modules(self, kernel: KernelArtifact | None) -> list[Path]:
        if kernel is None or kernel.modules is None:
            return []
        base = Path(kernel.modules) / "lib" / "modules"
        moddir = base / kernel.version if kernel.version else None
        if moddir is None or not moddir.is_dir():
            dirs = sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []
            if not dirs:
                return []
            moddir = dirs[-1]
        return initramfs.module_plan(moddir, initramfs.WANTED_MODULES["mmio" if self.bus == "device" else "pci"])

    def _plan(self, ctx: Context, spec: RunSpec, *, dry: bool) -> _Plan:
        exec_mode = spec.command is not None
        rundir = Path(spec.state_dir) if spec.state_dir else Path(ctx.tmp or tempfile.mkdtemp(prefix="lvh-run-"))
        console = Path(spec.console_log) if spec.console_log else rundir / "console.log"
        accel = self._accel(ctx, spec)
        image = spec.image
        if image is not None and not Path(image.path).exists():
            raise UserError(f"image {image.path} does not exist", hint="build it first, or check --image")
        if image is not None and image.format == "raw" and image.path.suffix == ".qcow2":
            image.format = _detect_format(Path(image.path))
        root = spec.root_device or (image.root_device if image else "vda")
        kernel = self._kernel(ctx, spec, image, root, dry)
        modules = [] if dry else self._modules(kernel)

        argv = [self._binary(ctx), "-nodefaults", "-display", "none", "-no-reboot"]
        argv += self._machine_args(accel)
        argv += ["-smp", str(spec.cpus), "-m", _mem(spec.memory)]
        if accel == "kvm":
            argv.append("-enable-kvm")
        cpu = self.options.get("cpu_kind") or ("host" if accel == "kvm" else None)
        if cpu:
            argv += ["-cpu", cpu]
        plan = _Plan(argv=argv, rundir=rundir, console=console, accel=accel)
        telnet = ["-serial", f"telnet:localhost:{self.options['serial_port']},server,nowait"] \
            if self.options.get("serial_port") else []
        interactive_console = (not exec_mode and not spec.daemonize and spec.interactive
                               and spec.console_log is None)
        # The first serial port is the kernel's console (ttyS0). Upstream puts the telnet port
        # first; exec mode needs the console in its log file (panics, the failure tail).
        if exec_mode:
            argv += ["-serial", f"file:{console}", *telnet]
        else:
            argv += telnet
            if not interactive_console:
                argv += ["-serial", f"file:{console}"]
        if image is not None:
            argv += self._drive_args(Path(image.path).resolve(), image.format)

        # Exec mode gives no root=: if lvh's initramfs failed to unpack, the kernel panics at once
        # instead of booting the image's own init and hanging until the boot timeout.
        cmdline = [] if exec_mode else [f"root=/dev/{root}"]
        cmdline += [f"console={self._console_dev()}", "earlyprintk=ttyS0", "panic=-1"]
        cmdline += self._extra_cmdline(accel)
        mounts = list(spec.host_mounts)
        kmods = self._kernel_modules_dir(spec.kernel)
        if kmods is not None and image is not None and (exec_mode or modules):
            # The kernel's modules, where the guest's modprobe looks for them (upstream's
            # kernel_modules share, mounted for the user).
            mounts.append(HostMount(source=kmods, target=f"/lib/modules/{kmods.name}", readonly=True,
                                    tag="kernel_modules"))
        ssh = spec.ssh and not exec_mode
        ports = list(spec.ports)
        if ssh and not any(p.guest_port == 22 for p in ports):
            ports.append(PortForward(_free_port() if not dry else 2222, 22))
        plan.ports = ports
        needs_initrd = exec_mode or ssh or bool(modules) or any(m.target for m in mounts)
        settings: dict[str, str] = {}
        if needs_initrd:
            settings = {
                "LVH_MODE": "exec" if exec_mode else "boot",
                "LVH_ROOT": f"/dev/{root}" if image is not None else "",
                "LVH_FSTYPE": image.filesystem if image is not None else "ext4",
                "LVH_ROOTFLAGS": "rw",
                "LVH_NET": "1" if (ports or not exec_mode) else "0",
                "LVH_MOUNTS": " ".join(f"{_tag(i, m.tag)}:{m.target}:{'ro' if m.readonly else 'rw'}"
                                       for i, m in enumerate(mounts) if m.target),
            }
            if ssh:
                settings["LVH_SSH_KEY"] = "1"
                plan.ssh_key = rundir / "id_ed25519"
            if exec_mode:
                cmdline += ["reboot=t"]
                if self.options.get("quiet", True):
                    cmdline.append("quiet")
            plan.initrd = rundir / "initramfs.cpio"
            plan.settings = settings
            plan.initrd_base = None if dry else initramfs.base_initramfs(ctx, modules)
        if kernel is not None:
            argv += ["-kernel", str(kernel.image)]
            if plan.initrd is not None:
                argv += ["-initrd", str(plan.initrd)]
            elif kernel.initrd is not None:
                argv += ["-initrd", str(kernel.initrd)]
            hook_args: list[str] = []
            if ctx.hooks is not None:
                for extra in ctx.hooks.lvh_kernel_cmdline(spec=spec, kernel=kernel):
                    hook_args += list(extra or [])
            argv += ["-append", " ".join(cmdline + hook_args + list(spec.cmdline))]

        if not exec_mode or ports:
            netdev = "user,id=user.0" + "".join(
                f",hostfwd={p.proto}:{p.host_addr}:{p.host_port}-:{p.guest_port}" for p in ports)
            argv += ["-netdev", netdev, "-device", f"{self._dev('net')},netdev=user.0"]

        if exec_mode:
            argv += ["-device", self._dev("serial")]
            for name in ("stdout", "stderr", "status"):
                f = rundir / f"guest.{name}"
                plan.files[name] = f
                argv += ["-chardev", f"file,id=lvh_{name},path={f}",
                         "-device", f"virtserialport,chardev=lvh_{name},name=lvh.{name}"]
        elif spec.daemonize:
            plan.qmp = rundir / "qemu.qmp"
            plan.pidfile = rundir / "qemu.pid"
            argv += ["-daemonize", "-pidfile", str(plan.pidfile),
                     "-qmp", f"unix:{plan.qmp},server=on,wait=off"]
        else:
            argv += ["-serial", "mon:stdio", "-device", self._dev("serial")]
        if self.options.get("monitor_port"):
            argv += ["-monitor", f"tcp:localhost:{self.options['monitor_port']},server,nowait"]

        for i, m in enumerate(mounts):
            fid = "host_id" if i == 0 else (f"{m.tag}_id" if m.tag == "kernel_modules" else f"host_id{i}")
            tag = _tag(i, m.tag)
            ro = ",readonly=on" if m.readonly else ""
            argv += ["-fsdev", f"local,id={fid},path={Path(m.source).resolve()},security_model=none{ro}",
                     "-device", f"{self._dev('9p')},fsdev={fid},mount_tag={tag}"]
        if ctx.hooks is not None:
            for extra in ctx.hooks.lvh_qemu_args(spec=spec, machine=self.machine_name()):
                argv += list(extra or [])
        argv += list(self.options.get("extra_args") or [])
        return plan

    def command_line(self, ctx: Context, spec: RunSpec) -> list[str]:
        return self._plan(ctx, spec, dry=True).argv

    # ----------------------------------------------------------------------------- running
    def run(self, ctx: Context, spec: RunSpec) -> RunResult:
        if self._accel(ctx, spec) == "kvm" and not ctx.host.kvm:
            raise UserError(f"KVM was asked for but does not work here: {ctx.host.kvm_reason or 'unknown'}",
                            hint="use accel: tcg (lvh run --no-hw-accel), or fix KVM (see lvh doctor)")
        if self._accel(ctx, spec) == "tcg" and not ctx.host.kvm:
            ctx.log.warning("KVM is not available ({}): running under TCG (slow)",
                            ctx.host.kvm_reason or "unknown reason")
        plan = self._plan(ctx, spec, dry=False)
        plan.rundir.mkdir(parents=True, exist_ok=True)
        plan.console.parent.mkdir(parents=True, exist_ok=True)
        pubkey = None
        if plan.ssh_key is not None:
            pubkey = self._ssh_key(ctx, plan.ssh_key)
        if plan.initrd is not None:
            assert plan.initrd_base is not None
            initramfs.run_initramfs(ctx, plan.initrd_base, plan.initrd, settings=plan.settings,
                                    command=spec.command, ssh_pubkey=pubkey)
        for f in [plan.console, *plan.files.values()]:
            f.write_bytes(b"")
        if spec.command is not None:
            return self._run_exec(ctx, spec, plan)
        return self._run_boot(ctx, spec, plan)

    def _start(self, ctx: Context, plan: _Plan, **kw: Any) -> subprocess.Popen[bytes]:
        """Start QEMU in its own session, killed by the kernel if lvh dies (even by SIGKILL):
        never an orphan VM."""
        ctx.check_cancelled()
        kw.setdefault("preexec_fn", _die_with_parent)
        level = "INFO" if self.options.get("show_console") or _daemonized(plan) else "DEBUG"
        ctx.log.log(level, "$ {}", shlex.join(plan.argv))
        try:
            return subprocess.Popen(plan.argv, start_new_session=True, **kw)
        except FileNotFoundError:
            raise UserError(f"{plan.argv[0]} is not installed", hint=QEMU_HINT) from None

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Stop QEMU's process group: ``sig`` (SIGTERM: QEMU exits cleanly), SIGKILL if it lingers."""
        if proc.poll() is not None:
            return
        for s, wait in ((sig, 2.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, s)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _run_exec(self, ctx: Context, spec: RunSpec, plan: _Plan) -> RunResult:
        t0 = time.monotonic()
        qlog = plan.rundir / "qemu.log"
        with qlog.open("wb") as errf:
            proc = self._start(ctx, plan, stdin=subprocess.DEVNULL, stdout=errf, stderr=subprocess.STDOUT)
        handles = {k: plan.files[k].open("rb") for k in ("stdout", "stderr", "status")}
        con = plan.console.open("rb") if self.options.get("show_console") else None
        status_buf = b""
        started: float | None = None
        code: int | None = None
        init_error: str | None = None
        outcome = "exited"
        exited_at: float | None = None

        def emit(name: str, data: bytes) -> None:
            if spec.on_output is not None:
                spec.on_output(name, data)
            else:
                stream = sys.stdout.buffer if name == "stdout" else sys.stderr.buffer
                stream.write(data)
                stream.flush()

        def pump() -> None:
            nonlocal status_buf, started, code, init_error
            for name in ("stdout", "stderr"):
                data = handles[name].read()
                if data:
                    emit(name, data)
            if con is not None:
                data = con.read()
                if data:
                    sys.stderr.buffer.write(data)
                    sys.stderr.buffer.flush()
            status_buf += handles["status"].read()
            while b"\n" in status_buf:
                line, status_buf = status_buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace").strip()
                if text == "S" and started is None:
                    started = time.monotonic()
                    ctx.log.debug("guest command started after {:.2f}s", started - t0)
                elif text.startswith("X ") and code is None:
                    code = int(text[2:])
                elif text.startswith("E ") and init_error is None:
                    init_error = text[2:]

        with _sigterm_cancels():
            try:
                while True:
                    pump()
                    if proc.poll() is not None:
                        break
                    now = time.monotonic()
                    if code is not None:
                        # The guest wrote its output before its status (a virtio-serial write
                        # returns once QEMU has written it to the host file), and the disk is a
                        # throw-away snapshot: nothing is lost by not waiting for the reset.
                        pump()
                        self._kill(proc, sig=signal.SIGKILL)
                        break
                    if init_error is not None:
                        exited_at = exited_at or now
                        if now - exited_at > 3.0:  # the guest should have reset by now
                            self._kill(proc)
                            break
                    elif started is None and now - t0 > spec.boot_timeout:
                        outcome = "boot-timeout"
                        self._kill(proc)
                        break
                    elif started is not None and spec.timeout and now - started > spec.timeout:
                        outcome = "timeout"
                        self._kill(proc)
                        break
                    if ctx.cancel.is_set():
                        self._kill(proc)
                        raise Cancelled("interrupted")
                    time.sleep(POLL)
                pump()
            except KeyboardInterrupt:
                self._kill(proc)
                raise Cancelled("interrupted") from None
            finally:
                self._kill(proc)
                for h in handles.values():
                    h.close()
                if con is not None:
                    con.close()
        duration = time.monotonic() - t0
        result = RunResult(root=plan.rundir, console_log=plan.console, duration=duration)
        if code is not None:
            result.status, result.exit_code = "exited", code
            ctx.log.debug("guest command exited with {} after {:.2f}s", code, duration)
            return result
        console = plan.console.read_bytes() if plan.console.exists() else b""
        if outcome == "timeout":
            result.status, result.exit_code = "timeout", RunResult.EXIT_TIMEOUT
            why = f"the guest command did not finish within {spec.timeout:g}s"
        elif outcome == "boot-timeout":
            result.status, result.exit_code = "boot-failed", RunResult.EXIT_BOOT_FAILED
            why = f"the guest did not reach the command within the boot timeout ({spec.boot_timeout:g}s)"
        elif PANIC_RE.search(console):
            result.status, result.exit_code = "panic", RunResult.EXIT_PANIC
            why = "the guest kernel panicked"
        else:
            result.status, result.exit_code = "boot-failed", RunResult.EXIT_BOOT_FAILED
            qerr = qlog.read_text(errors="replace").strip() if qlog.exists() else ""
            why = ("lvh's guest init failed: " + init_error) if init_error else (
                f"QEMU exited ({proc.returncode}) before the guest command finished"
                + (f": {qerr.splitlines()[-1]}" if qerr else ""))
        tail = console.decode("utf-8", "replace").splitlines()[-25:]
        ctx.log.error("run {}: {}; console log: {}", spec.name, why, plan.console)
        if tail:
            ctx.log.error("last console lines:\n{}", "\n".join("    " + ln for ln in tail))
        return result

    # ----------------------------------------------------------------------------- boot mode
    def _ssh_key(self, ctx: Context, key: Path) -> str:
        if not key.exists():
            if not shutil.which("ssh-keygen"):
                raise UserError("ssh-keygen is not installed (needed for ssh: true)",
                                hint="apt-get install openssh-client")
            key.parent.mkdir(parents=True, exist_ok=True)
            ctx.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lvh", "-f", key)
        return key.with_suffix(".pub").read_text()

    def _run_boot(self, ctx: Context, spec: RunSpec, plan: _Plan) -> RunResult:
        t0 = time.monotonic()
        state = {"ports": [p.__dict__ for p in plan.ports], "ssh_key": str(plan.ssh_key or ""),
                 "console": str(plan.console), "qmp": str(plan.qmp or ""), "pidfile": str(plan.pidfile or ""),
                 "argv": plan.argv}
        (plan.rundir / "vm.json").write_text(json.dumps(state, indent=1))
        if spec.daemonize:
            res = ctx.run(*plan.argv, hint="see the QEMU error above")
            assert plan.pidfile is not None
            pid = int(plan.pidfile.read_text().strip())
            result = RunResult(root=plan.rundir, status="running", console_log=plan.console, pid=pid,
                               duration=res.duration)
            if spec.ssh:
                self._wait_ssh(ctx, spec, plan, t0, pid)
            return result
        proc = self._start(ctx, plan)
        try:
            if spec.ssh:
                self._wait_ssh(ctx, spec, plan, t0, proc.pid)
            rc = proc.wait()
        except KeyboardInterrupt:
            self._kill(proc)
            raise Cancelled("interrupted") from None
        finally:
            self._kill(proc)
        return RunResult(root=plan.rundir, status="stopped", exit_code=rc, console_log=plan.console,
                         duration=time.monotonic() - t0)

    def _wait_ssh(self, ctx: Context, spec: RunSpec, plan: _Plan, t0: float, pid: int) -> None:
        port = next(p for p in plan.ports if p.guest_port == 22)
        while time.monotonic() - t0 < spec.boot_timeout:
            ctx.check_cancelled()
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                raise StageError("the VM exited before sshd answered",
                                 hint=f"see the console log {plan.console}") from None
            with contextlib.suppress(OSError), socket.create_connection(
                    (port.host_addr, port.host_port), timeout=2) as s:
                s.settimeout(3)
                if s.recv(4).startswith(b"SSH-"):
                    ctx.log.info("ssh ready: lvh ssh {} (port {})", spec.name, port.host_port)
                    return
            time.sleep(0.5)
        raise StageError(f"sshd did not answer on port {port.host_port} within {spec.boot_timeout:g}s",
                         hint=f"does the image have openssh-server? see the console log {plan.console}")

    def stop(self, ctx: Context, state_dir: Path) -> bool:
        qmp = Path(state_dir) / "qemu.qmp"
        pidfile = Path(state_dir) / "qemu.pid"
        if not qmp.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(qmp))
                f = s.makefile("rwb")
                f.readline()
                for cmd in ("qmp_capabilities", "quit"):
                    f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                    f.flush()
                    f.readline()
        except OSError:
            return False
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        for _ in range(100):
            if pid is None:
                break
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        qmp.unlink(missing_ok=True)
        return True


class MicrovmRunner(QemuRunner):
    """Boots a VM with QEMU's microvm machine: virtio-mmio devices, qboot firmware, no PCI."""

    name = "microvm"
    bus = "device"

    def machine_name(self) -> str:
        return "microvm"

    def _machine_args(self, accel: str) -> list[str]:
        return ["-M", "microvm,x-option-roms=off,rtc=on"]

    def _drive_args(self, path: Path, fmt: str) -> list[str]:
        return ["-drive", f"file={path},if=none,id=root,format={fmt},snapshot=on",
                "-device", "virtio-blk-device,drive=root"]

    def _extra_cmdline(self, accel: str) -> list[str]:
        # No HPET/PM timer on microvm: under TCG the TSC calibration against the PIT fails and
        # the kernel hangs; tell it the TSC frequency (the host's: TCG's TSC is the host's).
        out = ["pci=off"]
        if accel != "kvm":
            out.append(f"tsc_early_khz={_tsc_khz()}")
        return out
