"""End-to-end image builds with the real tools (mmdebstrap, mke2fs, qemu-storage-daemon,
guestfish, virt-customize), checked from outside the image (debugfs on a raw copy, qemu-img info).

The bookworm minbase rootfs is bootstrapped once and cached under ~/.cache/lvh-tests/ (keyed by its
options and mmdebstrap's version); each test's workdir gets it by hard links, everything after it
is built for real in the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.images_support import BASE_ROOTFS, cached_rootfs, missing_tools, seed_rootfs

pytestmark = pytest.mark.e2e

NEEDED = ["mmdebstrap", "mke2fs", "debugfs", "qemu-img", "qemu-storage-daemon", "unshare", "chroot"]
LVH = str(Path(sys.executable).with_name("lvh"))


@pytest.fixture(scope="module")
def rootfs_entry() -> Path:
    miss = missing_tools(*NEEDED)
    if miss:
        pytest.skip(f"host tools missing: {', '.join(miss)} (make deps installs them)")
    if os.geteuid() != 0:
        pytest.skip("the fast-path customizer mounts and chroots: needs root")
    return cached_rootfs()


def engine_for(conf: dict[str, Any], tmp: Path, entry: Path, **kw: Any):
    from lvh.config import load_data
    from lvh.engine import Engine

    cfg = load_data(conf, source=str(tmp / "conf.yaml"), base_dir=tmp, workdir=tmp / "work")
    eng = Engine(cfg, workdir=tmp / "work", **kw)
    seed_rootfs(eng, entry)
    return eng


def debugfs(image: Path, cmd: str, tmp: Path) -> str:
    """Run a debugfs request on the filesystem of ``image`` (qcow2 or raw, read-only)."""
    raw = tmp / "inspect.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw)], check=True)
    try:
        p = subprocess.run(["debugfs", "-R", cmd, str(raw)], capture_output=True, text=True, check=True)
        return p.stdout
    finally:
        raw.unlink()


def img_info(image: Path) -> dict[str, Any]:
    p = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(image)], capture_output=True, text=True,
                       check=True)
    return json.loads(p.stdout)


def base_conf(tmp: Path) -> dict[str, Any]:
    (tmp / "motd").write_text("uploaded by lvh\n")
    return {"api_version": 1, "images": [
        {"name": "base", "rootfs": {"provider": "mmdebstrap", **BASE_ROOTFS},
         "disk": {"formatter": "mkfs", "size": "1G", "format": "qcow2"},
         "customize": [{"customizer": "chroot", "actions": [
             {"type": "set-hostname", "hostname": "lvh-base"},
             {"type": "upload", "file": "motd", "dest": "/etc/motd"},
             {"type": "run-command", "cmd": "echo built-in-chroot > /etc/lvh-marker"}]}]},
        {"name": "child", "parent": "base", "packages": ["less"],
         "customize": [{"customizer": "chroot", "actions": [
             {"type": "append-line", "file": "/etc/motd", "line": "child v1"},
             {"type": "install-kernel", "kernel_install_dir": "kernel"}]}]},
    ]}


def fake_kernel_install(tmp: Path) -> None:
    """A kernel builder's output layout: boot/vmlinuz-<ver> and lib/modules/<ver>/."""
    (tmp / "kernel" / "boot").mkdir(parents=True)
    (tmp / "kernel" / "boot" / "vmlinuz-6.1.0-lvh").write_bytes(b"not really a kernel")
    (tmp / "kernel" / "lib" / "modules" / "6.1.0-lvh").mkdir(parents=True)
    (tmp / "kernel" / "lib" / "modules" / "6.1.0-lvh" / "modules.dep").write_text("")


def test_fast_path_base_and_derived_image(rootfs_entry, tmp_path):
    conf = base_conf(tmp_path)
    fake_kernel_install(tmp_path)
    eng = engine_for(conf, tmp_path, rootfs_entry)
    summary = eng.run()
    assert summary["ok"]
    status = {s["id"]: s["status"] for s in summary["stages"]}
    assert status["image:base/rootfs"] == "cached"  # seeded from ~/.cache/lvh-tests
    assert {v for k, v in status.items() if k != "image:base/rootfs"} == {"built"}

    images = tmp_path / "work" / "images"
    base, child = (images / "base.qcow2").resolve(), (images / "child.qcow2").resolve()
    assert debugfs(base, "cat /etc/hostname", tmp_path) == "lvh-base\n"
    assert debugfs(base, "cat /etc/lvh-marker", tmp_path) == "built-in-chroot\n"
    assert debugfs(base, "cat /etc/motd", tmp_path) == "uploaded by lvh\n"
    assert "less" not in debugfs(base, "ls -l /usr/bin", tmp_path).split()

    # the child: an overlay on the parent's published image, holding only its delta
    info = img_info(child)
    assert info["format"] == "qcow2" and info["backing-filename"] == str(base)
    assert "Package: less\n" in debugfs(child, "cat /var/lib/dpkg/status", tmp_path)
    assert debugfs(child, "cat /etc/motd", tmp_path) == "uploaded by lvh\nchild v1\n"
    assert debugfs(child, "cat /etc/hostname", tmp_path) == "lvh-base\n"
    assert "/boot/vmlinuz-6.1.0-lvh" in debugfs(child, "stat /vmlinuz", tmp_path)
    assert "modules.dep" in debugfs(child, "ls /usr/lib/modules/6.1.0-lvh", tmp_path)
    final = next(s for s in eng.stages() if s.id == "image:child/customize[0]")
    assert str(final.artifact.kernel) == "/vmlinuz"  # (a path inside the image; the cache turns it into a Path)
    assert child.stat().st_blocks * 512 < 32 << 20, "a derived image must cost about its delta"
    assert not debugfs(child, "ls /var/lib/apt/lists", tmp_path).count(".debian.org_"), \
        "apt's lists must not be written into the image"
    no_mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in no_mounts

    # unchanged: all cached, nothing rewritten
    mtime = child.stat().st_mtime_ns
    again = engine_for(conf, tmp_path, rootfs_entry).run()
    assert {s["status"] for s in again["stages"]} == {"cached"}
    assert child.stat().st_mtime_ns == mtime

    # one child action changed: only that step of the child is rebuilt
    conf["images"][1]["customize"][0]["actions"][0]["line"] = "child v2"
    third = engine_for(conf, tmp_path, rootfs_entry).run()
    built = sorted(s["id"] for s in third["stages"] if s["status"] == "built")
    assert built == ["image:child/customize[0]"]
    child2 = (images / "child.qcow2").resolve()
    assert debugfs(child2, "cat /etc/motd", tmp_path) == "uploaded by lvh\nchild v2\n"

    # a base action changed: the base and its child are rebuilt, the rootfs is not
    conf["images"][0]["customize"][0]["actions"][0]["hostname"] = "lvh-base2"
    fourth = engine_for(conf, tmp_path, rootfs_entry).run()
    built = {s["id"] for s in fourth["stages"] if s["status"] == "built"}
    assert built == {"image:base/customize[0]", "image:base/disk", "image:child/disk", "image:child/packages",
                     "image:child/customize[0]"}
    assert debugfs((images / "child.qcow2").resolve(), "cat /etc/hostname", tmp_path) == "lvh-base2\n"


def test_derived_image_via_virt_customize(rootfs_entry, tmp_path):
    if missing_tools("virt-customize"):
        pytest.skip("virt-customize missing (apt-get install libguestfs-tools)")
    conf = {"api_version": 1, "images": [
        {"name": "base", "rootfs": {"provider": "mmdebstrap", **BASE_ROOTFS},
         "disk": {"formatter": "mkfs", "size": "1G"}},
        {"name": "vc", "parent": "base", "customize": [{"customizer": "virt-customize", "actions": [
            {"type": "install", "packages": ["less"]},
            {"type": "set-hostname", "hostname": "vc"},
            {"type": "run-command", "cmd": "echo via-appliance > /root/vc"}]}]},
    ]}
    summary = engine_for(conf, tmp_path, rootfs_entry).run()
    vc = (tmp_path / "work" / "images" / "vc.qcow2").resolve()
    base = (tmp_path / "work" / "images" / "base.qcow2").resolve()
    assert summary["ok"] and img_info(vc)["backing-filename"] == str(base)
    assert "Package: less\n" in debugfs(vc, "cat /var/lib/dpkg/status", tmp_path)
    assert debugfs(vc, "cat /etc/hostname", tmp_path) == "vc\n"
    assert debugfs(vc, "cat /root/vc", tmp_path) == "via-appliance\n"


def test_guestfish_base_image(rootfs_entry, tmp_path):
    if missing_tools("guestfish"):
        pytest.skip("guestfish missing (apt-get install libguestfs-tools)")
    conf = {"api_version": 1, "images": [
        {"name": "gf", "rootfs": {"provider": "mmdebstrap", **BASE_ROOTFS},
         "disk": {"formatter": "guestfish", "size": "1G", "format": "raw"}}]}
    summary = engine_for(conf, tmp_path, rootfs_entry).run()
    gf = (tmp_path / "work" / "images" / "gf.raw").resolve()
    assert summary["ok"] and img_info(gf)["format"] == "raw" and img_info(gf)["virtual-size"] == 1 << 30
    assert debugfs(gf, "cat /etc/debian_version", tmp_path).startswith("12.")


def test_lvh_images_build_reads_upstream_images_json(rootfs_entry, tmp_path):
    from lvh.cli.images import build_config
    from lvh.config import load_data
    from lvh.engine import Engine

    d = tmp_path / "d"
    d.mkdir()
    (d / "images.json").write_text(json.dumps([
        {"name": "base.img", "image_size": "1G",
         "actions": [{"comment": "name it", "type": "set-hostname", "op": {"Hostname": "up"}}]},
        {"name": "k.qcow2", "parent": "base",
         "actions": [{"type": "run-command", "op": {"cmd": "echo derived > /etc/k"}}]}]))
    conf, _ = build_config(d, formatter="mkfs", customizer="chroot", rootfs_provider=None, pkg_repo=None,
                           merge_steps=True, disk_format=None, suite="bookworm", variant="minbase")
    cfg = load_data(conf, source=str(d / "images.json"), base_dir=d, workdir=d)
    seed_rootfs(Engine(cfg, workdir=d), rootfs_entry)
    p = subprocess.run([LVH, "images", "build", "--dir", str(d), "--suite", "bookworm", "--variant", "minbase"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    assert (d / "images" / "base.img").resolve() == (d / "images" / "base.raw").resolve()
    assert img_info(d / "images" / "base.img")["format"] == "raw"
    k = (d / "images" / "k.qcow2").resolve()
    assert img_info(k)["backing-filename"] == str((d / "images" / "base.raw").resolve())
    assert debugfs(k, "cat /etc/k", tmp_path) == "derived\n"
    assert debugfs(k, "cat /etc/hostname", tmp_path) == "up\n"
    again = subprocess.run([LVH, "images", "build", "--dir", str(d), "--suite", "bookworm", "--variant", "minbase"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 stage(s) built" in again.stdout


# -- bad input: one clear line, the right exit code, nothing in the cache, a clean next run ------
def run_cli(tmp: Path, conf: dict[str, Any], entry: Path | None, env: dict[str, str] | None = None):
    (tmp / "conf.yaml").write_text(yaml.safe_dump(conf))
    if entry is not None:
        from lvh.config import load_config
        from lvh.engine import Engine

        seed_rootfs(Engine(load_config(tmp / "conf.yaml", workdir=tmp / "work"), workdir=tmp / "work"), entry)
    return subprocess.run([LVH, "pipeline", "run", str(tmp / "conf.yaml"), "--workdir", str(tmp / "work")],
                          capture_output=True, text=True, env=env, cwd=tmp, timeout=900)


def error_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert any(ln.startswith("hint: ") for ln in p.stderr.splitlines()), p.stderr
    return lines[0]


def cache_entries(tmp: Path, kind: str) -> list[str]:
    d = tmp / "work" / "cache" / kind
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def one_image(rootfs: dict[str, Any], disk: dict[str, Any] | None = None,
              actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    im: dict[str, Any] = {"name": "img", "rootfs": {"provider": "mmdebstrap", **rootfs},
                          "disk": disk or {"formatter": "mkfs", "size": "1G"}}
    if actions:
        im["customize"] = [{"customizer": "chroot", "actions": actions}]
    return {"api_version": 1, "images": [im]}


def test_failing_run_command(rootfs_entry, tmp_path):
    conf = one_image(BASE_ROOTFS, actions=[{"type": "run-command", "cmd": "echo boom >&2; exit 3"}])
    p = run_cli(tmp_path, conf, rootfs_entry)
    assert p.returncode == 1
    line = error_line(p)
    assert "image:img/customize[0]" in line and "action 0 (run-command) failed" in line
    assert cache_entries(tmp_path, "customize") == [] and cache_entries(tmp_path, "disk") == []
    failed = list((tmp_path / "work" / "failed").iterdir())
    assert len(failed) == 1 and "boom" in (failed[0] / "stage.log").read_text()
    conf["images"][0]["customize"][0]["actions"][0]["cmd"] = "true"
    p = run_cli(tmp_path, conf, rootfs_entry)
    assert p.returncode == 0, p.stderr
    assert len(cache_entries(tmp_path, "customize")) == 1


def test_full_disk(rootfs_entry, tmp_path):
    p = run_cli(tmp_path, one_image(BASE_ROOTFS, disk={"formatter": "mkfs", "size": "48M"}), rootfs_entry)
    assert p.returncode == 2
    assert "does not fit in a 48 MiB disk" in error_line(p)
    assert cache_entries(tmp_path, "disk") == []


def test_package_missing_in_a_derived_image(rootfs_entry, tmp_path):
    conf = {"api_version": 1, "images": [
        {"name": "base", "rootfs": {"provider": "mmdebstrap", **BASE_ROOTFS}, "disk": {"formatter": "mkfs"}},
        {"name": "kid", "parent": "base", "packages": ["lvh-no-such-package"]}]}
    p = run_cli(tmp_path, conf, rootfs_entry)
    assert p.returncode == 1
    assert "package 'lvh-no-such-package' does not exist" in error_line(p)
    assert len(cache_entries(tmp_path, "disk")) == 2 and cache_entries(tmp_path, "customize") == []


def test_package_missing_in_a_bootstrap(rootfs_entry, tmp_path):
    p = run_cli(tmp_path, one_image({**BASE_ROOTFS, "packages": ["lvh-no-such-package"]}), None)
    assert p.returncode == 2
    assert "package 'lvh-no-such-package' does not exist in bookworm" in error_line(p)
    assert cache_entries(tmp_path, "rootfs") == []


def test_unreachable_mirror(rootfs_entry, tmp_path):
    p = run_cli(tmp_path, one_image({**BASE_ROOTFS, "mirror": "http://127.0.0.1:9/debian"}), None)
    assert p.returncode == 2
    assert "the mirror http://127.0.0.1:9/debian cannot be reached" in error_line(p)
    assert cache_entries(tmp_path, "rootfs") == []


def test_missing_tool(rootfs_entry, tmp_path):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))
    p = run_cli(tmp_path, one_image(BASE_ROOTFS), None, env=env)
    assert p.returncode == 2
    assert "'mmdebstrap' is not installed" in error_line(p)
    assert "apt-get install mmdebstrap" in p.stderr


# -- the fast path without root -----------------------------------------------------------------
UNPRIV_USER = "lvh-unpriv-test"


@pytest.fixture()
def unprivileged_user():
    """A user with subordinate ids (made for the test if missing, removed afterwards)."""
    if missing_tools("runuser", "useradd", "newuidmap"):
        pytest.skip("runuser/useradd/newuidmap missing (apt-get install util-linux passwd uidmap)")
    made = subprocess.run(["id", UNPRIV_USER], capture_output=True).returncode != 0
    if made:
        subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        UNPRIV_USER], check=True)
    for f in ("/etc/subuid", "/etc/subgid"):
        if not any(ln.startswith(UNPRIV_USER + ":") for ln in Path(f).read_text().splitlines()):
            with open(f, "a") as fh:
                fh.write(f"{UNPRIV_USER}:1300000:65536\n")
    yield UNPRIV_USER
    if made:
        subprocess.run(["userdel", UNPRIV_USER], check=False)
        for f in ("/etc/subuid", "/etc/subgid"):
            lines = [ln for ln in Path(f).read_text().splitlines() if not ln.startswith(UNPRIV_USER + ":")]
            Path(f).write_text("".join(ln + "\n" for ln in lines))


class AsUser:
    """An executor running every command as ``user`` (runuser), to drive a driver unprivileged."""

    def __init__(self, user: str) -> None:
        from lvh.executor import SubprocessExecutor

        self.user, self.inner = user, SubprocessExecutor()

    def run(self, command):
        from dataclasses import replace

        return self.inner.run(replace(command, argv=["runuser", "-u", self.user, "--", *command.argv]))


def test_mkfs_from_a_tarball_without_root(rootfs_entry, unprivileged_user, monkeypatch):
    import shutil
    import tempfile

    from lvh_e2fs.disk import MkfsFormatter

    from lvh.api import RootfsArtifact
    from lvh.testing import make_context

    work = Path(tempfile.mkdtemp(prefix="lvh-unpriv-", dir="/tmp"))
    try:
        tar = work / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs_entry / "rootfs"), "--numeric-owner", "-cf", str(tar), "."],
                       check=True)
        ctx = make_context(work / "stage", executor=AsUser(unprivileged_user))
        subprocess.run(["chown", "-R", unprivileged_user, str(work)], check=True)
        monkeypatch.setattr(os, "geteuid", lambda: 4242)  # the driver decides as a non-root user would
        art = MkfsFormatter(MkfsFormatter.Options().load({"size": "1G"})).build(
            ctx, RootfsArtifact(root=work, path=tar, format="tar"))
        monkeypatch.undo()
        assert art.path.stat().st_uid != 0, "the image must have been written by the unprivileged user"
        assert "Group:    42" in debugfs(art.path, "stat /etc/shadow", work)  # owners kept (shadow)
        assert "Device major/minor number: 01:03" in debugfs(art.path, "stat /dev/null", work)
        assert "pts" in debugfs(art.path, "ls /dev", work)
        assert not (work / "stage" / "tmp" / "rootfs").exists(), "the unpacked tree is removed"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_guestfish_bootable_image(rootfs_entry, tmp_path):
    """bootable: the distro kernel in the rootfs, an MBR partition marked bootable, extlinux
    installed with upstream's extlinux.conf."""
    if missing_tools("guestfish", "sfdisk"):
        pytest.skip("guestfish/sfdisk missing (apt-get install libguestfs-tools fdisk)")
    opts = {**BASE_ROOTFS, "bootable": True}
    entry = cached_rootfs(opts)
    conf = {"api_version": 1, "images": [
        {"name": "boot", "rootfs": {"provider": "mmdebstrap", **opts},
         "disk": {"formatter": "guestfish", "size": "2G", "format": "raw", "bootable": True}}]}
    eng = engine_for(conf, tmp_path, entry)
    assert eng.run()["ok"]
    img = (tmp_path / "work" / "images" / "boot.raw").resolve()
    art = eng.stages()[-1].artifact
    assert art.root_device == "vda1" and art.bootable and str(art.kernel) == "/vmlinuz"
    table = json.loads(subprocess.run(["sfdisk", "-J", str(img)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["label"] == "dos" and len(table["partitions"]) == 1 and table["partitions"][0].get("bootable")
    part = f"{img}?offset={table['partitions'][0]['start'] * 512}"  # e2fsprogs opens a partition so
    ls = subprocess.run(["debugfs", "-R", "ls /", part], capture_output=True, text=True, check=True).stdout
    assert "ldlinux.sys" in ls and "extlinux.conf" in ls and "vmlinuz" in ls
    conf_text = subprocess.run(["debugfs", "-R", "cat /extlinux.conf", part], capture_output=True, text=True,
                               check=True).stdout
    assert "kernel /vmlinuz" in conf_text and "root=/dev/vda1" in conf_text
