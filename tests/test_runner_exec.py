"""End-to-end tests of exec mode with real QEMU under TCG: exit codes, streamed output, timeout,
panic, the image never written, 9p mounts, port forwards, modular and in-image kernels."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from lvh_qemu.runner import MicrovmRunner, QemuRunner, _free_port

from lvh.api import DiskArtifact, HostMount, KernelArtifact, PortForward, RunResult, RunSpec
from lvh.testing import make_context

from .runner_fixtures import *  # noqa: F403 (session fixtures)
from .runner_fixtures import need

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RUNNERS = {"microvm": MicrovmRunner, "qemu": QemuRunner}


@pytest.fixture(autouse=True)
def _qemu() -> None:
    need("qemu-system-x86_64", "busybox")


def _qemu_pids(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmd and marker.encode() in cmd:
                pids.append(int(d.name))
    return pids


def run(tmp_path: Path, runner: str, command: str, image: DiskArtifact | None,
        kernel: KernelArtifact | None, **kw) -> tuple[RunResult, dict[str, bytes], list[tuple[float, str, bytes]]]:
    cls = RUNNERS[runner]
    ctx = make_context(tmp_path, real=True)
    chunks: list[tuple[float, str, bytes]] = []
    spec = RunSpec(name="t", image=image, kernel=kernel, command=command, cpus=1, memory=512 * 1024**2,
                   boot_timeout=kw.pop("boot_timeout", 120), state_dir=tmp_path / "run",
                   on_output=lambda s, d: chunks.append((time.monotonic(), s, d)), **kw)
    res = cls(cls.Options().load({})).run(ctx, spec)
    out = {"stdout": b"".join(d for _, s, d in chunks if s == "stdout"),
           "stderr": b"".join(d for _, s, d in chunks if s == "stderr")}
    assert _qemu_pids(str(tmp_path / "run")) == [], "qemu left running"
    return res, out, chunks


@pytest.mark.parametrize("code", [0, 1, 7])
def test_exit_code_is_the_guest_commands(tmp_path, debian_image, runner_kernel, code):
    res, out, _ = run(tmp_path, "microvm", f"echo out-{code}; echo err-{code} >&2; exit {code}",
                      debian_image, runner_kernel)
    assert (res.status, res.exit_code) == ("exited", code)
    assert out["stdout"] == f"out-{code}\n".encode()
    assert out["stderr"] == f"err-{code}\n".encode()


def test_pc_machine_runs_the_command_in_the_image(tmp_path, debian_image, runner_kernel):
    res, out, _ = run(tmp_path, "qemu", "cat /etc/debian_version; exit 7", debian_image, runner_kernel)
    assert res.exit_code == 7
    assert out["stdout"].decode().strip().startswith("12")


def test_output_is_streamed_while_the_command_runs(tmp_path, debian_image, runner_kernel):
    res, out, chunks = run(tmp_path, "microvm", "echo first; sleep 3; echo second", debian_image,
                           runner_kernel)
    assert res.exit_code == 0 and out["stdout"] == b"first\nsecond\n"
    t_first = next(t for t, s, d in chunks if b"first" in d)
    t_second = next(t for t, s, d in chunks if b"second" in d)
    assert t_second - t_first > 1.0, "output arrived only at the end"


def test_hanging_command_times_out_without_orphan(tmp_path, debian_image, runner_kernel):
    t0 = time.monotonic()
    res, _, _ = run(tmp_path, "microvm", "echo started; sleep 600", debian_image, runner_kernel, timeout=3)
    assert (res.status, res.exit_code) == ("timeout", RunResult.EXIT_TIMEOUT)
    assert time.monotonic() - t0 < 60


def test_kernel_panic_gives_its_own_code(tmp_path, debian_image, runner_kernel):
    # No usable init: the kernel panics ("No working init found" / "VFS: Unable to mount root").
    res, _, _ = run(tmp_path, "microvm", "true", debian_image, runner_kernel, cmdline=["rdinit=/nonexistent"])
    assert (res.status, res.exit_code) == ("panic", RunResult.EXIT_PANIC)
    assert b"Kernel panic" in Path(res.console_log).read_bytes()


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_image_is_never_written(tmp_path, debian_image, runner_kernel):
    before = _sha(debian_image.path)
    res, out, _ = run(tmp_path, "microvm", "echo changed > /etc/motd; rm -rf /usr/share/doc; sync; cat /etc/motd",
                      debian_image, runner_kernel)
    assert res.exit_code == 0 and out["stdout"] == b"changed\n"
    assert _sha(debian_image.path) == before


def test_qcow2_overlay_with_backing_file(tmp_path, debian_image, runner_kernel):
    need("qemu-img")
    overlay = tmp_path / "child.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(debian_image.path),
                    str(overlay)], check=True)
    before = _sha(overlay)
    img = DiskArtifact(root=tmp_path, path=overlay, format="qcow2", backing=debian_image.path)
    res, out, _ = run(tmp_path, "qemu", "touch /new; ls /new", img, runner_kernel)
    assert (res.exit_code, out["stdout"]) == (0, b"/new\n")
    assert _sha(overlay) == before


def test_9p_host_mount_is_readable(tmp_path, debian_image, runner_kernel):
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("hello from the host\n")
    res, out, _ = run(tmp_path, "microvm", "cat /host/hello.txt; touch /host/x 2>/dev/null || echo ro",
                      debian_image, runner_kernel,
                      host_mounts=[HostMount(source=share, target="/host", readonly=True)])
    assert res.exit_code == 0
    assert out["stdout"] == b"hello from the host\nro\n"


def test_port_forward_reaches_a_guest_service(tmp_path, debian_image, runner_kernel):
    share = tmp_path / "ctl"
    share.mkdir()
    port = _free_port()
    cmd = ("mkdir -p /tmp/www && echo hello-from-guest > /tmp/www/index.html && "
           "/run/lvh/busybox httpd -p 8080 -h /tmp/www && "
           "i=0; while [ ! -e /ctl/stop ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done")
    box: dict[str, object] = {}
    th = threading.Thread(target=lambda: box.update(r=run(
        tmp_path, "microvm", cmd, debian_image, runner_kernel,
        ports=[PortForward(port, 8080)], host_mounts=[HostMount(source=share, target="/ctl")])))
    th.start()
    body = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and th.is_alive():
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3).read()
                break
            except OSError:
                time.sleep(0.3)
    finally:
        (share / "stop").touch()
        th.join(120)
    assert body == b"hello-from-guest\n"
    res = box["r"][0]  # type: ignore[index]
    assert res.exit_code == 0


def test_modular_kernel_loads_its_modules(tmp_path, debian_image, modular_kernel):
    res, out, _ = run(tmp_path, "microvm", "grep -o '^virtio_blk' /proc/modules; uname -r; "
                      "ls /lib/modules/$(uname -r)/modules.dep; exit 3", debian_image, modular_kernel)
    assert res.exit_code == 3, Path(res.console_log).read_text()[-2000:]
    v = modular_kernel.version
    assert out["stdout"].decode().split() == ["virtio_blk", v, f"/lib/modules/{v}/modules.dep"]


def test_kernel_installed_in_the_image(tmp_path, kernel_image, modular_kernel):
    res, out, _ = run(tmp_path, "qemu", "uname -r", kernel_image, None)
    assert res.exit_code == 0, Path(res.console_log).read_text()[-2000:]
    assert out["stdout"].decode().strip() == modular_kernel.version


def test_kernel_only_runs_in_the_initramfs(tmp_path, runner_kernel):
    res, out, _ = run(tmp_path, "microvm", "cat /proc/cmdline >/dev/null && echo in-initramfs; exit 4", None,
                      runner_kernel)
    assert (res.exit_code, out["stdout"]) == (4, b"in-initramfs\n")


def test_guest_that_never_reaches_the_command(tmp_path, debian_image, runner_kernel):
    # The root device does not exist: lvh's init reports it and the run fails with 126.
    img = DiskArtifact(root=debian_image.root, path=debian_image.path, format="raw", root_device="vdb")
    res, _, _ = run(tmp_path, "microvm", "true", img, runner_kernel)
    assert (res.status, res.exit_code) == ("boot-failed", RunResult.EXIT_BOOT_FAILED)


def test_partitioned_image_with_its_own_kernel(tmp_path, partitioned_kernel_image, modular_kernel):
    need("qemu-img")
    # As a qcow2 (how distribution cloud images come), root on the first partition.
    qcow = tmp_path / "debian.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(partitioned_kernel_image.path),
                    str(qcow)], check=True)
    img = DiskArtifact(root=tmp_path, path=qcow, format="qcow2", root_device="vda1")
    res, out, _ = run(tmp_path, "microvm", "uname -r; findmnt -n -o SOURCE / || mount | grep ' / '", img, None)
    assert res.exit_code == 0, Path(res.console_log).read_text()[-2000:]
    lines = out["stdout"].decode().splitlines()
    assert lines[0] == modular_kernel.version
    assert "/dev/vda1" in lines[1]
