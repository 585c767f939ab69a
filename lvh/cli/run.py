"""``lvh run`` (upstream's flags; ``-- CMD`` for exec mode), ``lvh ssh RUN``, ``lvh stop RUN``.

Generic over runners: the runner is the ``lvh.runner`` driver named by ``--runner``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from lvh.cli.main import configure_hooks


def runs_dir() -> Path:
    """Where ``lvh run`` keeps a VM's state (pid file, QMP socket, console log, ssh key)."""
    from lvh.host import user_cache_dir

    return user_cache_dir() / "runs"


def _state_dir(name: str, workdir: Path | None) -> Path:
    candidates = [runs_dir() / name]
    if workdir is not None:
        candidates.insert(0, workdir / "runs" / name)
    candidates.append(Path("_data") / "runs" / name)
    for c in candidates:
        if (c / "vm.json").exists():
            return c
    from lvh.api import UserError

    raise UserError(f"no VM named {name!r} is known (looked in {', '.join(str(c) for c in candidates)})",
                    hint="start one with `lvh run --daemonize --name NAME ...`")


def _image(ref: str, root_dev: str, workdir: Path) -> Any:
    from lvh.api import DiskArtifact, UserError

    p = Path(ref).expanduser()
    if p.is_file():
        meta = p.resolve().parent / "artifact.json"  # an image in lvh's cache (_data/images/NAME.qcow2)
        if meta.exists():
            data = json.loads(meta.read_text()).get("artifact", {})
            if data.get("kind") == "disk":
                art = DiskArtifact.from_json(data, meta.parent)
                if Path(art.path).resolve() == p.resolve():
                    if root_dev != "vda":
                        art.root_device = root_dev
                    return art
        with p.open("rb") as fh:
            fmt = "qcow2" if fh.read(4) == b"QFI\xfb" else "raw"
        return DiskArtifact(root=p.parent, path=p.resolve(), format=fmt, root_device=root_dev)
    if p.exists():
        raise UserError(f"--image {ref}: not a file", hint="pass an image file (.qcow2 or raw)")
    from lvh.plugins import hooks

    art = hooks().lvh_resolve_artifact(kind="disk", ref=ref, workdir=workdir)
    if art is None:
        raise UserError(f"--image {ref}: no such file, and no plugin resolves this reference",
                        hint="check the path, or use an OCI reference like registry/name:tag")
    if not art.root_device or root_dev != "vda":
        art.root_device = root_dev
    return art


def _kernel(ref: str, workdir: Path) -> Any:
    from lvh.api import KernelArtifact, UserError

    p = Path(ref).expanduser()
    if p.is_dir():  # a kernel artifact directory (e.g. _data/kernels/NAME)
        meta = p / "artifact.json"
        if meta.exists():
            data = json.loads(meta.read_text())
            return KernelArtifact.from_json(data.get("artifact", data), p.resolve())
        for name in ("bzImage", "vmlinuz", "Image"):
            if (p / name).is_file():
                return KernelArtifact(root=p.resolve(), image=(p / name).resolve())
        raise UserError(f"--kernel {ref}: no kernel image in this directory", hint="pass a bzImage file")
    if p.is_file():
        return KernelArtifact(root=p.parent.resolve(), image=p.resolve())
    from lvh.plugins import hooks

    art = hooks().lvh_resolve_artifact(kind="kernel", ref=ref, workdir=workdir)
    if art is None:
        raise UserError(f"--kernel {ref}: no such file, and no plugin resolves this reference",
                        hint="pass a bzImage file or a kernel directory like _data/kernels/NAME")
    return art


def _mounts(values: tuple[str, ...]) -> list[Any]:
    """``--host-mount SRC[:TARGET[:ro]]``: upstream's plain ``SRC`` is exported with tag
    ``host_mount`` and not mounted; with a TARGET lvh mounts it in the guest."""
    from lvh.api import HostMount, UserError

    out = []
    for i, v in enumerate(values):
        parts = v.split(":")
        src = Path(parts[0]).expanduser()
        if not src.is_dir():
            raise UserError(f"--host-mount {v}: {src} is not a directory", hint="share an existing directory")
        target = parts[1] if len(parts) > 1 else ""
        ro = len(parts) > 2 and parts[2] == "ro"
        if target and not target.startswith("/"):
            raise UserError(f"--host-mount {v}: the guest path must be absolute", hint="e.g. .:/host:ro")
        out.append(HostMount(source=src.resolve(), target=target, readonly=ro,
                             tag="host_mount" if i == 0 else f"host_mount{i}"))
    return out


def upstream_print(argv: list[str]) -> str:
    """The command the way upstream's ``--qemu-cmd-print`` shows it (one option per line)."""
    out = argv[0]
    for a in argv[1:]:
        out += " "
        if a.startswith("-"):
            out += "\\\n\t"
        out += shlex.quote(a) if (" " in a or not a) else a
    return out


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--image", "image_ref", help="Image file (qcow2 or raw), or a reference a plugin resolves.")
@click.option("--kernel", "kernel_ref", help="Kernel image (bzImage) or kernel directory; default: the "
              "kernel installed in the image.")
@click.option("--runner", "runner_name", default="qemu", show_default=True,
              help="Runner driver: qemu (pc machine) or microvm (faster boot), or any installed one.")
@click.option("--name", default="run", show_default=True, help="Name of this VM (for lvh ssh/stop).")
@click.option("--qemu-cmd-print", is_flag=True, help="Print the emulator command line and exit.")
@click.option("--no-hw-accel", "--qemu-disable-kvm", "no_accel", is_flag=True,
              help="Do not use KVM even where it works (TCG).")
@click.option("--daemonize", is_flag=True, help="Run the VM in the background (pid file, QMP socket).")
@click.option("--console-log-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the guest console here.")
@click.option("--host-mount", multiple=True, metavar="SRC[:TARGET[:ro]]",
              help="Share a host directory (9p, tag host_mount); with TARGET, mounted there.")
@click.option("-p", "--port", "ports", multiple=True, metavar="HOSTPORT[:VMPORT[:tcp|udp]]",
              help="Forward a port of 127.0.0.1 (or ADDR:HOSTPORT:VMPORT) to the VM.")
@click.option("--serial-port", type=int, default=0, help="Telnet serial port on localhost (0: none).")
@click.option("--cpu", type=int, default=2, show_default=True, help="Number of CPUs.")
@click.option("--mem", default="4G", show_default=True, help="Memory (e.g. 1G, 512M).")
@click.option("--cpu-kind", default=None, help="QEMU -cpu model (e.g. host, kvm64, max).")
@click.option("--qemu-monitor-port", type=int, default=0, help="Telnet monitor port on localhost.")
@click.option("--root-dev", default="vda", show_default=True, help="Root device in the guest (vda, vda1).")
@click.option("--qemu-arch", default=None, help="Guest architecture of the emulator (e.g. x86_64, aarch64).")
@click.option("--append", "append", multiple=True, help="Extra kernel command-line argument.")
@click.option("--timeout", type=float, default=None, help="Seconds the command may run (exec mode).")
@click.option("--boot-timeout", type=float, default=300.0, show_default=True,
              help="Seconds to reach the command (or sshd).")
@click.option("--ssh", is_flag=True, help="Inject a generated key, forward a port to 22, wait for sshd.")
@click.option("--verbose", "show_console", is_flag=True, help="Print the emulator command and the console.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("_data"),
              show_default=True, help="Where fetched artifacts are cached.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, image_ref: str | None, kernel_ref: str | None, runner_name: str, name: str,
        qemu_cmd_print: bool, no_accel: bool, daemonize: bool, console_log_file: Path | None,
        host_mount: tuple[str, ...], ports: tuple[str, ...], serial_port: int, cpu: int, mem: str,
        cpu_kind: str | None, qemu_monitor_port: int, root_dev: str, qemu_arch: str | None,
        append: tuple[str, ...], timeout: float | None, boot_timeout: float, ssh: bool,
        show_console: bool, workdir: Path, command: tuple[str, ...]) -> None:
    """Boot an image with a kernel. With `-- CMD`, run CMD in the guest, stream its output and
    exit with its exit code (124 timeout, 125 kernel panic, 126 boot failure)."""
    from loguru import logger

    from lvh.api import Context, PortForward, RunSpec, UserError, parse_size
    from lvh.plugins import hooks, load_driver

    if not image_ref and not kernel_ref:
        raise UserError("nothing to boot", hint="pass --image FILE (and --kernel FILE)")
    if command and daemonize:
        raise UserError("--daemonize cannot be used with a command", hint="drop one of them")
    try:
        memory = parse_size(mem)
        fwd = [PortForward.parse(p) for p in ports]
    except ValueError as e:
        raise UserError(str(e), hint="see lvh run --help") from None
    cmd = None
    if command:
        cmd = command[0] if len(command) == 1 else shlex.join(command)
    options: dict[str, Any] = {}
    if cpu_kind:
        options["cpu_kind"] = cpu_kind
    if serial_port:
        options["serial_port"] = serial_port
    if qemu_monitor_port:
        options["monitor_port"] = qemu_monitor_port
    if qemu_arch:
        options["arch"] = qemu_arch
    if show_console:
        options["show_console"] = True
    if no_accel:
        options["accel"] = "tcg"
    runner = load_driver("lvh.runner", runner_name, options)
    if not qemu_cmd_print:
        configure_hooks(ctx)
    image = _image(image_ref, root_dev, workdir) if image_ref else None
    kernel = _kernel(kernel_ref, workdir) if kernel_ref else None
    # Exec runs get their own state dir (two `lvh run -- CMD` may run at once); removed on success.
    state = runs_dir() / (name if cmd is None else f"{name}.exec-{os.getpid()}")
    spec = RunSpec(
        name=name, image=image, kernel=kernel, command=cmd, cpus=cpu, memory=memory, cmdline=list(append),
        timeout=timeout, boot_timeout=boot_timeout, ports=fwd, host_mounts=_mounts(host_mount),
        console_log=console_log_file.resolve() if console_log_file else None,
        interactive=cmd is None and not daemonize and sys.stdin.isatty(), daemonize=daemonize, ssh=ssh,
        accel="tcg" if no_accel else "auto", root_device=root_dev, state_dir=state)
    from lvh.executor import SubprocessExecutor
    from lvh.host import host_info

    rctx = Context(workdir=workdir.resolve(), config_dir=Path.cwd(), executor=SubprocessExecutor(),
                   host=host_info(), log=logger.bind(stage=f"run:{name}"), hooks=hooks(), tmp=state,
                   state_dir=state)
    if qemu_cmd_print:
        click.echo(upstream_print(runner.command_line(rctx, spec)))
        return
    if daemonize and (state / "qemu.qmp").exists() and runner.stop(rctx, state):
        logger.info("stopped the previous VM {!r}", name)
    state.mkdir(parents=True, exist_ok=True)
    result = runner.run(rctx, spec)
    hooks().lvh_run_finished(spec=spec, result=result)
    if result.status == "boot-failed" and spec.accel == "auto" and rctx.host.kvm:
        qlog = state / "qemu.log"
        if qlog.exists() and "kvm" in qlog.read_text(errors="replace").lower():
            from lvh.host import record_kvm_verdict

            record_kvm_verdict(False, "QEMU could not use KVM: " + qlog.read_text().strip().splitlines()[-1])
    if result.status == "running":
        click.echo(f"VM {name!r} running (pid {result.pid}); `lvh ssh {name}` for a shell, "
                   f"`lvh stop {name}` to stop it", err=True)
        return
    if cmd is not None and result.status != "exited":
        click.echo(f"error: run {name}: {result.status} (exit code {result.exit_code}); console log: "
                   f"{result.console_log}", err=True)
    elif cmd is not None and not console_log_file:
        import shutil

        shutil.rmtree(state, ignore_errors=True)
    ctx.exit(result.exit_code if cmd is not None else 0)


@click.command()
@click.argument("name", default="run")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ssh(name: str, workdir: Path | None, args: tuple[str, ...]) -> None:
    """Open a shell (or run ARGS) in the running VM NAME over ssh."""
    from lvh.api import UserError

    state = _state_dir(name, workdir)
    vm = json.loads((state / "vm.json").read_text())
    port = next((p for p in vm.get("ports", []) if p.get("guest_port") == 22), None)
    if port is None:
        raise UserError(f"VM {name!r} has no port forwarded to 22", hint="start it with --ssh or -p 2222:22")
    argv = ["ssh", "-p", str(port["host_port"]), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    if vm.get("ssh_key"):  # lvh's own key: never fall back to asking for a password
        argv += ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
    if vm.get("ssh_key"):
        argv += ["-i", vm["ssh_key"]]
    argv += [f"root@{port.get('host_addr', '127.0.0.1')}", *args]
    try:
        os.execvp("ssh", argv)
    except FileNotFoundError:
        raise UserError("ssh is not installed", hint="apt-get install openssh-client") from None


@click.command()
@click.argument("name", default="run")
@click.option("--runner", "runner_name", default="qemu", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None)
def stop(name: str, runner_name: str, workdir: Path | None) -> None:
    """Stop the daemonized VM NAME (cleanly, over its QMP socket)."""
    from loguru import logger

    from lvh.api import Context
    from lvh.executor import SubprocessExecutor
    from lvh.host import host_info
    from lvh.plugins import load_driver

    state = _state_dir(name, workdir)
    runner = load_driver("lvh.runner", runner_name, {})
    rctx = Context(workdir=Path.cwd(), config_dir=Path.cwd(), executor=SubprocessExecutor(), host=host_info(),
                   log=logger, state_dir=state)
    if runner.stop(rctx, state):
        click.echo(f"stopped {name}", err=True)
    else:
        click.echo(f"{name} was not running", err=True)
