"""End-to-end tests of ``lvh run`` / ``lvh stop`` with real QEMU under TCG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from lvh_qemu.runner import _free_port

from .runner_fixtures import *  # noqa: F403 (session fixtures)
from .runner_fixtures import need

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def lvh(*args: str, env: dict[str, str], timeout: float = 200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvh.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    need("qemu-system-x86_64", "busybox")
    e = dict(os.environ)
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return e


def test_lvh_run_exec_returns_the_guest_exit_code(tmp_path, env, debian_image, runner_kernel):
    r = lvh("run", "--runner", "microvm", "--image", str(debian_image.path), "--kernel", str(runner_kernel.image),
            "--mem", "512M", "--cpu", "1", "--", "echo hi; echo oops >&2; exit 7", env=env)
    assert r.returncode == 7, r.stderr
    assert r.stdout == "hi\n"
    assert "oops" in r.stderr
    assert not list((tmp_path / "cache" / "lvh" / "runs").glob("*")), "exec state left behind"


def test_lvh_run_timeout_exit_code(tmp_path, env, debian_image, runner_kernel):
    r = lvh("run", "--runner", "microvm", "--image", str(debian_image.path), "--kernel", str(runner_kernel.image),
            "--mem", "512M", "--cpu", "1", "--timeout", "2", "--", "sleep 100", env=env)
    assert r.returncode == 124, r.stderr
    assert "console log" in r.stderr


def test_daemonize_ssh_key_port_and_stop(tmp_path, env, debian_image, runner_kernel):
    need("ssh-keygen")
    host = tmp_path / "host"
    host.mkdir()
    (host / "banner.sh").write_text("#!/run/lvh/busybox sh\necho SSH-2.0-lvh-test\nsleep 1\n")
    (host / "init.sh").write_text(
        "#!/run/lvh/busybox sh\nB=/run/lvh/busybox\n$B mkdir -p /srv/www\n"
        "$B cp /root/.ssh/authorized_keys /srv/www/ak\n"
        "$B httpd -p 8080 -h /srv/www\n"
        "$B nc -ll -p 22 -e /host/banner.sh &\n"
        "exec $B sleep 3600\n")
    for f in ("banner.sh", "init.sh"):
        (host / f).chmod(0o755)
    port, ssh_port = _free_port(), _free_port()
    r = lvh("run", "--name", "bg", "--daemonize", "--ssh", "--image", str(debian_image.path),
            "--kernel", str(runner_kernel.image), "--mem", "512M", "--cpu", "1", "--boot-timeout", "120",
            "-p", f"{port}:8080", "-p", f"{ssh_port}:22", "--host-mount", f"{host}:/host",
            "--append", "init=/host/init.sh", env=env)
    state = tmp_path / "cache" / "lvh" / "runs" / "bg"
    pid = int((state / "qemu.pid").read_text()) if (state / "qemu.pid").exists() else None
    try:
        assert r.returncode == 0, r.stderr
        assert "running" in r.stderr
        vm = json.loads((state / "vm.json").read_text())
        assert any(p["guest_port"] == 22 and p["host_addr"] == "127.0.0.1" for p in vm["ports"])
        # The readiness probe saw the SSH banner; the generated key was injected.
        ak = urllib.request.urlopen(f"http://127.0.0.1:{port}/ak", timeout=10).read().decode()
        assert ak.strip() == Path(vm["ssh_key"] + ".pub").read_text().strip()
        assert pid is not None and Path(f"/proc/{pid}").exists()
        s = lvh("stop", "bg", env=env, timeout=60)
        assert s.returncode == 0 and "stopped" in s.stderr, s.stderr
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "qemu still running after lvh stop"
    finally:
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)


def test_ctrl_c_stops_the_vm(tmp_path, env, debian_image, runner_kernel):
    import signal

    p = subprocess.Popen([sys.executable, "-m", "lvh.cli.main", "run", "--runner", "microvm", "--image",
                          str(debian_image.path), "--kernel", str(runner_kernel.image), "--mem", "512M", "--cpu",
                          "1", "--", "echo started; sleep 100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, text=True)
    assert p.stdout is not None
    assert p.stdout.readline() == "started\n"
    qemu = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and _ppid(d) == p.pid]
    assert qemu, "no qemu child"
    p.send_signal(signal.SIGINT)
    assert p.wait(30) == 130
    time.sleep(0.5)
    for q in qemu:
        cmd = Path(f"/proc/{q}/cmdline")
        assert not (cmd.exists() and b"qemu" in cmd.read_bytes()), "qemu left running"


def _ppid(d: Path) -> int:
    try:
        return int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def test_ssh_into_a_daemonized_vm(tmp_path, env, ssh_image, runner_kernel):
    """--ssh: the generated key is injected, readiness is sshd's banner, `lvh ssh` runs a command."""
    need("ssh-keygen", "ssh")
    host = tmp_path / "host"
    host.mkdir()
    (host / "init.sh").write_text(
        "#!/bin/sh\nB=/run/lvh/busybox\n$B mount -t proc proc /proc\n$B mount -t sysfs sys /sys\n"
        "$B mkdir -p /dev/pts /run/sshd\n$B mount -t devpts devpts /dev/pts\n"
        "/usr/sbin/sshd -e\nexec $B sleep 3600\n")
    (host / "init.sh").chmod(0o755)
    r = lvh("run", "--name", "sshvm", "--daemonize", "--ssh", "--image", str(ssh_image.path),
            "--kernel", str(runner_kernel.image), "--mem", "512M", "--cpu", "1", "--boot-timeout", "180",
            "--host-mount", f"{host}:/host:ro", "--append", "init=/host/init.sh", env=env)
    state = tmp_path / "cache" / "lvh" / "runs" / "sshvm"
    pid = int((state / "qemu.pid").read_text()) if (state / "qemu.pid").exists() else None
    try:
        assert r.returncode == 0, r.stderr + (state / "console.log").read_text()[-3000:]
        s = subprocess.run([sys.executable, "-m", "lvh.cli.main", "ssh", "sshvm", "echo", "hello-over-ssh",
                            "$(hostname)"], capture_output=True, text=True, env=env, timeout=120,
                           stdin=subprocess.DEVNULL)
        assert s.returncode == 0, s.stderr
        assert s.stdout.split()[0] == "hello-over-ssh", s.stdout
        assert lvh("stop", "sshvm", env=env, timeout=60).returncode == 0
    finally:
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)
