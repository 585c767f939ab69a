"""Image drivers and images.json without the slow tools: command lines (fake executor), error
explanations, the tree actions on a real directory, upstream conversion and the CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from lvh_e2fs.disk import MkfsFormatter
from lvh_e2fs.treeops import TreeCustomizer, inside
from lvh_libguestfs.customize import VirtCustomizer
from lvh_libguestfs.disk import GuestfishFormatter
from lvh_mmdebstrap.driver import MmdebstrapProvider

from lvh.api import CommandResult, ConfigError, DiskArtifact, ToolMissing, UserError
from lvh.testing import FakeExecutor, make_context
from lvh.upstream_images import EXAMPLE, check_images, from_config, to_config


def drv(cls, **opts):
    return cls(cls.Options().load(opts))


# -- mmdebstrap ---------------------------------------------------------------------------------
def test_mmdebstrap_command_line():
    d = drv(MmdebstrapProvider, suite="bookworm", variant="minbase", packages=["iproute2"], bootable=True,
            architecture="amd64", mode="root", format="dir", hooks={"customize": ["echo hi > $1/x"]})
    argv = d.argv("OUT")
    assert argv[:5] == ["mmdebstrap", "--mode=root", "--format=directory", "--variant=minbase",
                        "--components=main"]
    assert "--include=linux-image-amd64,iproute2" in argv
    assert "--customize-hook=echo hi > $1/x" in argv
    assert argv[-3:] == ["bookworm", "OUT", "http://deb.debian.org/debian"]


def test_mmdebstrap_defaults_follow_upstream():
    d = drv(MmdebstrapProvider)
    assert d.options["suite"] == "sid" and d.options["mirror"] == "http://deb.debian.org/debian"


@pytest.mark.parametrize("output, expect", [
    ("E: Unable to locate package nosuchpkg", "package 'nosuchpkg' does not exist in bookworm"),
    ("E: Failed to fetch http://127.0.0.1:9/debian/dists  Could not connect", "cannot be reached"),
])
def test_mmdebstrap_failures_are_one_clear_line(tmp_path, output, expect, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda *a, **k: "/usr/bin/mmdebstrap")

    def fail(cmd):
        return CommandResult(list(cmd.argv), 1, "", output, 0.1, [output])

    ctx = make_context(tmp_path, executor=FakeExecutor(fail))
    with pytest.raises(UserError) as e:
        drv(MmdebstrapProvider, suite="bookworm").build(ctx)
    assert expect in e.value.message and e.value.hint and "\n" not in e.value.message


def test_missing_tool_is_a_user_error_with_apt_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)
    with pytest.raises(ToolMissing) as e:
        drv(MmdebstrapProvider).build(make_context(tmp_path))
    assert e.value.exit_code == 2 and "apt-get install mmdebstrap" in e.value.hint
    reqs = MmdebstrapProvider.check(make_context(tmp_path).host)
    assert not reqs[0].found and "apt-get install" in reqs[0].hint


# -- formatters ---------------------------------------------------------------------------------
def test_mkfs_command_line_and_bootable_refused():
    d = drv(MkfsFormatter, size="2G", label="root")
    assert d.describe(None)[0] == ["mke2fs", "-q", "-F", "-t", "ext4", "-d", "ROOTFS", "-E", "root_owner=0:0",
                                   "-L", "root", "OUT/disk.raw", "2097152k"]
    import marshmallow

    with pytest.raises(marshmallow.ValidationError, match="guestfish"):
        MkfsFormatter.Options().load({"bootable": True})


def test_mkfs_derive_is_an_overlay_on_the_published_parent(tmp_path):
    ex = FakeExecutor()
    ctx = make_context(tmp_path, executor=ex)
    parent = DiskArtifact(root=tmp_path / "p", path=tmp_path / "p" / "disk.qcow2", format="qcow2", size=2 << 30)
    child = MkfsFormatter(MkfsFormatter.Options().load({}, partial=True)).derive(ctx, parent)
    assert ex.argvs == [["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(parent.path),
                         str(ctx.out / "disk.qcow2")]]
    assert child.backing == parent.path and child.format == "qcow2"


def test_guestfish_script_as_upstream():
    plain = drv(GuestfishFormatter, size="2G")._script("img", "r.tar", None)
    assert plain == ["guestfish", "-N", "img=disk:2097152K", "--", "mkfs", "ext4", "/dev/sda", ":",
                     "mount", "/dev/sda", "/", ":", "tar-in", "r.tar", "/"]
    boot = drv(GuestfishFormatter, bootable=True)._script("img", "r.tar", "ext.conf")
    assert ["part-disk", "/dev/sda", "mbr"] == boot[4:7] and boot[-3:] == ["copy-in", "ext.conf", "/"]
    assert "extlinux" in boot


# -- virt-customize -----------------------------------------------------------------------------
def test_virt_customize_merges_steps_and_splits_tar_in(tmp_path):
    (tmp_path / "t.tar").write_bytes(b"")
    acts = [{"type": "install", "packages": ["less"]}, {"type": "set-hostname", "hostname": "h"},
            {"type": "tar-in", "tar_file": "t.tar", "remote_dir": "/opt"},
            {"type": "run-command", "cmd": "true"}, {"type": "chmod", "permissions": "0755", "file": "/x"}]
    ctx = make_context(tmp_path)
    merged = drv(VirtCustomizer, actions=acts).steps(ctx)
    assert [s[0] for s in merged] == ["virt-customize", "guestfish", "virt-customize"]
    assert merged[0][1] == ["--install", "less", "--hostname", "h"]
    assert merged[2][1] == ["--run-command", "true", "--chmod", "0755:/x"]
    assert merged[1][1] == [str(tmp_path / "t.tar"), "/opt"]
    single = drv(VirtCustomizer, actions=acts, merge_steps=False).steps(ctx)
    assert len(single) == 5


def test_virt_customize_install_kernel_as_upstream(tmp_path):
    k = tmp_path / "k"
    (k / "boot").mkdir(parents=True)
    (k / "boot" / "vmlinuz-6.1.0").write_bytes(b"k")
    (k / "lib" / "modules" / "6.1.0").mkdir(parents=True)
    steps = drv(VirtCustomizer, actions=[{"type": "install-kernel", "kernel_install_dir": "k"}]).steps(
        make_context(tmp_path))
    assert steps[0][1] == ["--copy-in", f"{k}/boot:/", "--copy-in", f"{k}/lib/modules:/lib/",
                           "--link", "/boot/vmlinuz-6.1.0:/vmlinuz"]


def test_key_material_hashes_local_files_and_refuses_missing_ones(tmp_path):
    f = tmp_path / "motd"
    f.write_text("a")
    d = drv(VirtCustomizer, actions=[{"type": "upload", "file": "motd", "dest": "/etc/motd"}])
    ctx = make_context(tmp_path)
    k1 = d.key_material(ctx)["files"]
    f.write_text("b")
    assert d.key_material(ctx)["files"] != k1
    f.unlink()
    with pytest.raises(UserError, match="does not exist"):
        d.key_material(ctx)


# -- tree actions (real files, no root needed) --------------------------------------------------
def test_inside_keeps_absolute_links_in_the_tree(tmp_path):
    tree = tmp_path / "t"
    (tree / "usr" / "lib").mkdir(parents=True)
    (tree / "lib").symlink_to("usr/lib")
    (tree / "etc").mkdir()
    (tree / "etc" / "evil").symlink_to("/etc")
    assert inside(tree, "/lib/modules") == tree / "usr" / "lib" / "modules"
    assert inside(tree, "/etc/evil/passwd") == tree / "etc" / "passwd"
    assert inside(tree, "/../../x") == tree / "x"


def test_file_actions_on_a_tree(tmp_path):
    tree = tmp_path / "t"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n")
    (tree / "etc" / "motd").write_text("no newline")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("A")
    (tmp_path / "up").write_text("U")
    k = tmp_path / "k"
    (k / "boot").mkdir(parents=True)
    (k / "boot" / "vmlinuz-9.9").write_text("K")
    (k / "lib" / "modules" / "9.9").mkdir(parents=True)
    (k / "lib" / "modules" / "9.9" / "m.ko").write_text("M")
    ex_ctx = make_context(tmp_path, real=True)
    acts = CustomizeOptionsLoad([
        {"type": "set-hostname", "hostname": "lvh"},
        {"type": "mkdir", "dir": "/opt/a/b"},
        {"type": "copy-in", "local_path": "src", "remote_dir": "/opt/a"},
        {"type": "upload", "file": "up", "dest": "/opt/a/b"},
        {"type": "chmod", "permissions": "0600", "file": "/opt/a/b/up"},
        {"type": "append-line", "file": "/etc/motd", "line": "hello"},
        {"type": "append-line", "file": "/etc/new", "line": "x"},
        {"type": "link", "target": "/opt/a", "link": "/srv"},
        {"type": "install-kernel", "kernel_install_dir": "k"},
    ])
    facts = TreeCustomizer(ex_ctx, tree).apply(acts)
    assert (tree / "etc" / "hostname").read_text() == "lvh\n"
    assert "127.0.1.1\tlvh" in (tree / "etc" / "hosts").read_text()
    assert (tree / "opt" / "a" / "src" / "a.txt").read_text() == "A"
    assert stat.S_IMODE((tree / "opt" / "a" / "b" / "up").stat().st_mode) == 0o600
    assert (tree / "etc" / "motd").read_text() == "no newline\nhello\n"
    assert (tree / "etc" / "new").read_text() == "x\n"
    assert os.readlink(tree / "srv") == "/opt/a"
    assert os.readlink(tree / "vmlinuz") == "/boot/vmlinuz-9.9"
    assert (tree / "lib" / "modules" / "9.9" / "m.ko").read_text() == "M"
    assert facts["kernel"] == "/vmlinuz"


def test_copy_in_needs_an_existing_remote_dir(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="not a directory in the image"):
        TreeCustomizer(make_context(tmp_path, real=True), tmp_path / "t").apply(
            CustomizeOptionsLoad([{"type": "copy-in", "local_path": "f", "remote_dir": "/nope"}]))


def CustomizeOptionsLoad(actions):
    from lvh.api import CustomizeOptions

    return CustomizeOptions().load({"actions": actions})["actions"]


# -- images.json --------------------------------------------------------------------------------
def test_example_converts_as_upstream_means_it():
    ims = check_images(EXAMPLE)
    conf = to_config(ims, rootfs_provider="R", formatter="F", customizer="C")
    base, k8s = conf["images"]
    assert base["name"] == "base" and base["disk"] == {"formatter": "F", "size": "8G", "format": "raw"}
    assert base["rootfs"] == {"provider": "R", "packages": ["less", "vim", "sudo", "openssh-server", "curl"]}
    assert base["customize"][0]["actions"] == [{"type": "run-command", "comment": "disable password for root",
                                                "cmd": "passwd -d root"}]
    assert k8s == {"name": "k8s", "parent": "base", "packages": ["docker.io"]}
    back = from_config(conf)
    assert back[0]["actions"] == EXAMPLE[0]["actions"] and back[1]["packages"] == ["docker.io"]


@pytest.mark.parametrize("data, where, text", [
    ([{"name": "a", "actions": [{"type": "copy-in", "op": {"RemoteDir": "/"}}]}], "[0].actions[0].local_path",
     "missing"),
    ([{"name": "a", "actions": [{"type": "nope", "op": {}}]}], "[0].actions[0].type", "Must be one of"),
    ([{"name": "a", "parent": "zz"}], "[0].parent", "unknown parent"),
    ([{"name": "a", "colour": 1}], "[0]", "unknown key 'colour'"),
    ([{"name": "a"}, {"name": "a.img"}], "[1].name", "duplicate"),
    ({"name": "a"}, "", "JSON array"),
])
def test_images_json_errors_are_located(data, where, text):
    with pytest.raises(ConfigError) as e:
        check_images(data, source="d/images.json")
    assert text in str(e.value) and where in str(e.value) and "d/images.json" in str(e.value)


def test_cli_example_config_and_bad_json(tmp_path):
    from lvh.cli.main import cli

    r = CliRunner().invoke(cli, ["images", "example-config"])
    assert r.exit_code == 0 and json.loads(r.output) == EXAMPLE
    (tmp_path / "images.json").write_text("[{\"name\": \"a\",}]")
    import subprocess
    import sys

    lvh = Path(sys.executable).with_name("lvh")
    p = subprocess.run([str(lvh), "images", "build", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2 and "images.json:1: not valid JSON" in p.stderr and "Traceback" not in p.stderr


def test_cli_to_pipeline_validates_with_the_real_drivers(tmp_path):
    import yaml

    from lvh.cli.main import cli
    from lvh.config import load_data

    (tmp_path / "images.json").write_text(json.dumps(EXAMPLE))
    r = CliRunner().invoke(cli, ["images", "to-pipeline", "--dir", str(tmp_path), "--suite", "bookworm"])
    assert r.exit_code == 0, r.output
    conf = yaml.safe_load(r.output)
    cfg = load_data(conf, source="x", base_dir=tmp_path)
    assert cfg.images["base"].rootfs.name == "mmdebstrap" and cfg.images["base"].disk.name == "mkfs"
    assert cfg.images["k8s"].customize[0].name == "chroot"
