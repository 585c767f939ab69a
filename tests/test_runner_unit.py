"""Unit tests of the QEMU runners that boot nothing: command lines (upstream's layout for
upstream's flags, microvm's virtio-mmio devices), the cpio writer, module ordering, CLI errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from lvh_qemu.cpio import CpioWriter
from lvh_qemu.initramfs import module_plan
from lvh_qemu.runner import MicrovmRunner, QemuRunner

from lvh.api import DiskArtifact, HostInfo, HostMount, KernelArtifact, PortForward, RunSpec
from lvh.cli.main import cli
from lvh.testing import make_context


@pytest.fixture
def files(tmp_path: Path) -> tuple[DiskArtifact, KernelArtifact]:
    img = tmp_path / "image.qcow2"
    img.write_bytes(b"QFI\xfb" + b"\0" * 100)
    k = tmp_path / "bzImage"
    k.write_bytes(b"kernel")
    return (DiskArtifact(root=tmp_path, path=img, format="qcow2"),
            KernelArtifact(root=tmp_path, image=k))


def _argv(cls, tmp_path, spec, kvm=False, **opts):
    ctx = make_context(tmp_path, host=HostInfo("x86_64", 2, kvm, "" if kvm else "test"))
    return cls(cls.Options().load(opts)).command_line(ctx, spec)


def test_boot_command_matches_upstream(tmp_path, files):
    img, k = files
    share = tmp_path / "share"
    share.mkdir()
    log = tmp_path / "console.log"
    spec = RunSpec(name="r", image=img, kernel=k, cpus=2, memory=4 * 1024**3, console_log=log,
                   ports=[PortForward.parse("2222:22"), PortForward.parse("8080:80:udp")],
                   host_mounts=[HostMount(source=share, target="")])
    argv = _argv(QemuRunner, tmp_path, spec, kvm=True, serial_port=4444, monitor_port=5555)
    # What upstream's BuildQemuArgs builds for the same flags (pkg/runner/qemu.go), with lvh's two
    # deliberate differences: the drive names its format and is snapshot=on (the image is never
    # written), and forwarded ports bind 127.0.0.1 instead of every address.
    assert argv == [
        "qemu-system-x86_64", "-nodefaults", "-display", "none", "-no-reboot", "-smp", "2", "-m", "4G",
        "-enable-kvm", "-cpu", "host",
        "-serial", "telnet:localhost:4444,server,nowait",
        "-serial", f"file:{log}",
        "-drive", f"file={img.path},if=virtio,index=0,media=disk,format=qcow2,snapshot=on",
        "-kernel", str(k.image), "-append", "root=/dev/vda console=ttyS0 earlyprintk=ttyS0 panic=-1",
        "-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.1:8080-:80",
        "-device", "virtio-net-pci,netdev=user.0",
        "-serial", "mon:stdio", "-device", "virtio-serial-pci",
        "-monitor", "tcp:localhost:5555,server,nowait",
        "-fsdev", f"local,id=host_id,path={share},security_model=none",
        "-device", "virtio-9p-pci,fsdev=host_id,mount_tag=host_mount",
    ]


def test_cli_qemu_cmd_print(tmp_path, files):
    img, k = files
    res = CliRunner().invoke(cli, ["run", "--image", str(img.path), "--kernel", str(k.image), "--qemu-cmd-print",
                                   "-p", "2222:22", "--cpu", "1", "--mem", "1G", "--no-hw-accel"])
    assert res.exit_code == 0, res.output
    lines = [ln.strip().rstrip("\\").strip() for ln in res.output.splitlines()]
    assert lines[:5] == ["qemu-system-x86_64", "-nodefaults", "-display none", "-no-reboot", "-smp 1"]
    assert "-netdev user,id=user.0,hostfwd=tcp:127.0.0.1:2222-:22" in lines
    assert "-enable-kvm" not in lines


def test_microvm_uses_virtio_mmio_and_exec_ports(tmp_path, files):
    img, k = files
    spec = RunSpec(name="r", image=img, kernel=k, command="true", memory=512 * 1024**2,
                   host_mounts=[HostMount(source=tmp_path, target="/host", readonly=True)])
    argv = _argv(MicrovmRunner, tmp_path, spec)
    text = " ".join(argv)
    assert argv[argv.index("-M") + 1].startswith("microvm")
    assert "virtio-blk-device,drive=root" in argv
    assert "virtio-serial-device" in argv
    assert f"local,id=host_id,path={tmp_path},security_model=none,readonly=on" in argv
    assert "virtio-9p-device,fsdev=host_id,mount_tag=host_mount" in argv
    assert "-pci" not in text
    for port in ("stdout", "stderr", "status"):
        assert f"virtserialport,chardev=lvh_{port},name=lvh.{port}" in argv
    append = argv[argv.index("-append") + 1]
    assert "root=" not in append and "tsc_early_khz=" in append  # TCG: no PIT calibration on microvm
    assert "-netdev" not in argv  # exec mode without ports needs no network


def test_hooks_contribute_cmdline_and_args(tmp_path, files):
    img, k = files

    class Relay:
        def lvh_kernel_cmdline(self, spec, kernel):
            return [["lvh.hooked=1"]]

        def lvh_qemu_args(self, spec, machine):
            return [["-name", f"hooked-{machine}"]]

    ctx = make_context(tmp_path, hooks=Relay())
    spec = RunSpec(name="r", image=img, kernel=k, command="true", cmdline=["user=1"])
    argv = MicrovmRunner(MicrovmRunner.Options().load({})).command_line(ctx, spec)
    append = argv[argv.index("-append") + 1]
    assert append.endswith("lvh.hooked=1 user=1")
    assert argv[argv.index("-name") + 1] == "hooked-microvm"


@pytest.mark.skipif(not shutil.which("cpio"), reason="cpio is not installed")
def test_cpio_writer_is_read_by_cpio(tmp_path):
    w = CpioWriter()
    w.file("lvh/cmd", b"echo hi\n")
    w.file("init", b"#!/bin/sh\n", 0o755)
    data = bytes(w)
    assert len(data) % 512 == 0
    out = subprocess.run(["cpio", "-t"], input=data + data, capture_output=True, check=True).stdout.decode()
    assert out.split() == ["lvh", "lvh/cmd", "init"]


def test_module_plan_orders_dependencies(tmp_path):
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko\n"
        "kernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\n"
        "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio.ko:\n")
    names = [p.name for p in module_plan(tmp_path, ["virtio_blk", "ext4", "not_there"])]
    assert names == ["virtio.ko", "virtio_blk.ko.xz", "jbd2.ko", "mbcache.ko", "ext4.ko"]


@pytest.mark.parametrize("args, msg", [
    (["--image", "/nonexistent.qcow2", "--kernel", "/nonexistent"], "--image /nonexistent.qcow2"),
    (["--kernel", "/etc/hostname", "-p", "nope"], "not a port forward"),
    (["--image", "/etc/hostname", "--mem", "lots"], "not a size"),
    (["--image", "/etc/hostname", "--runner", "microvn"], "did you mean 'microvm'"),
    ([], "nothing to boot"),
])
def test_bad_input_is_one_line_exit_2(args, msg):
    res = subprocess.run([sys.executable, "-m", "lvh.cli.main", "run", *args], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2, res.stderr
    assert msg in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ")


@pytest.mark.skipif(not shutil.which("sfdisk", path="/usr/sbin:/sbin:/usr/bin"), reason="sfdisk is not installed")
@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_partition_offset(tmp_path, label):
    from lvh_qemu.guestkernel import partition_offset

    from lvh.api import UserError

    disk = tmp_path / "d.raw"
    with disk.open("wb") as fh:
        fh.truncate(64 * 1024**2)
    table = f"label: {label}\nstart=2048, size=20480\nstart=40960\n"
    sfdisk = shutil.which("sfdisk", path="/usr/sbin:/sbin:/usr/bin")
    subprocess.run([sfdisk, "-q", str(disk)], input=table.encode(), check=True)
    assert partition_offset(disk, "vda") == 0
    assert partition_offset(disk, "vda1") == 2048 * 512
    assert partition_offset(disk, "vda2") == 40960 * 512
    with pytest.raises(UserError):
        partition_offset(disk, "vda3")


def test_kvm_asked_where_it_does_not_work(tmp_path, files):
    from lvh.api import UserError

    img, k = files
    ctx = make_context(tmp_path, host=HostInfo("x86_64", 2, False, "no vmx"))
    r = MicrovmRunner(MicrovmRunner.Options().load({"accel": "kvm"}))
    with pytest.raises(UserError, match="no vmx"):
        r.run(ctx, RunSpec(name="r", image=img, kernel=k, command="true", state_dir=tmp_path / "run"))
