"""Tests of the ubuntu rootfs provider and the hook plugin, with lvh.testing's fixtures.

The mapping tests use a stand-in for lvh's mmdebstrap driver (registered with ``lvh_drivers``);
``test_real_mmdebstrap_*`` use the installed one and check the exact command it would run.
The Ubuntu archive is not fetched: building is lvh's mmdebstrap driver's job, tested there."""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

import pytest
from lvh_plugin_ubuntu import hooks
from lvh_plugin_ubuntu.rootfs import (
    ARCHIVE_MIRROR,
    DEFAULT_KEYRING,
    PORTS_MIRROR,
    UbuntuOptions,
    UbuntuProvider,
    suite_codename,
)

from lvh import api
from lvh.testing import make_context


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    k = tmp_path / "ubuntu-archive-keyring.gpg"
    k.write_bytes(b"not really a keyring, but a file")
    return k


def provider(**options) -> UbuntuProvider:
    return UbuntuProvider(UbuntuOptions().load(options))


def test_defaults(standin):
    o = UbuntuOptions().load({})
    assert o["suite"] == "noble"
    assert o["components"] == ["main", "universe"]
    assert o["keyring"] == DEFAULT_KEYRING
    assert o["variant"] == "minbase"


@pytest.mark.parametrize(("given", "codename"), [("noble", "noble"), ("Jammy", "jammy"), ("24.04", "noble"),
                                                  (22.04, "jammy"), ("20.04", "focal")])
def test_suite_by_codename_or_version(standin, given, codename):
    assert UbuntuOptions().load({"suite": given})["suite"] == codename


def test_unknown_suite_suggests(standin):
    with pytest.raises(api.marshmallow.ValidationError) as e:
        UbuntuOptions().load({"suite": "nobel"})
    assert "Did you mean 'noble'" in str(e.value.messages["suite"])
    with pytest.raises(ValueError, match=r"Known: .*noble"):
        suite_codename("bookworm")


@pytest.mark.parametrize("bad", [{"components": ["main", "contrib"]}, {"components": []},
                                 {"architecture": "x86_64"}, {"mirror": "archive.ubuntu.com"},
                                 {"variant": "tiny"}, {"sute": "noble"}])
def test_bad_options(standin, bad):
    with pytest.raises(api.marshmallow.ValidationError) as e:
        UbuntuOptions().load(bad)
    assert set(e.value.messages) == set(bad)


def test_amd64_uses_the_archive(standin, lvh_context, keyring):
    [argv] = provider(suite="jammy", keyring=str(keyring)).describe(lvh_context)
    assert argv[0] == "mmdebstrap"
    assert argv[-3:-1] == ["jammy", str(lvh_context.out / "rootfs.tar")]
    assert argv[-1] == ARCHIVE_MIRROR
    assert "--architectures=amd64" in argv  # the host's (x86_64)
    assert "--components=main,universe" in argv
    assert f"--keyring={keyring}" in argv


@pytest.mark.parametrize(("arch", "mirror"), [("arm64", PORTS_MIRROR), ("riscv64", PORTS_MIRROR),
                                              ("i386", ARCHIVE_MIRROR)])
def test_mirror_by_architecture(standin, lvh_context, keyring, arch, mirror):
    [argv] = provider(architecture=arch, keyring=str(keyring)).describe(lvh_context)
    assert argv[-1] == mirror
    assert f"--architectures={arch}" in argv


def test_host_architecture_picks_ports(standin, tmp_path, keyring):
    ctx = make_context(tmp_path, host=api.HostInfo(arch="aarch64", cpus=2, kvm=False))
    [argv] = provider(keyring=str(keyring)).describe(ctx)
    assert argv[-1] == PORTS_MIRROR and "--architectures=arm64" in argv


def test_explicit_mirror_and_components(standin, lvh_context, keyring):
    p = provider(mirror="http://mirror.example/ubuntu", components=["main", "restricted"],
                 keyring=str(keyring), packages=["iproute2"])
    [argv] = p.describe(lvh_context)
    assert argv[-1] == "http://mirror.example/ubuntu"
    assert "--components=main,restricted" in argv and "--include=iproute2" in argv


def test_keyring_relative_to_config(standin, tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "u.gpg").write_bytes(b"k")
    ctx = make_context(tmp_path, config_dir=tmp_path)
    [argv] = provider(keyring="keys/u.gpg").describe(ctx)
    assert f"--keyring={tmp_path / 'keys' / 'u.gpg'}" in argv


def test_missing_keyring_is_a_clear_user_error(standin, lvh_context, tmp_path):
    p = provider(keyring=str(tmp_path / "nope.gpg"))
    for call in (p.describe, p.key_material, p.build):
        with pytest.raises(api.UserError) as e:
            call(lvh_context)
        assert "Ubuntu archive keyring" in e.value.message and "nope.gpg" in e.value.message
        assert "apt-get install ubuntu-keyring" in (e.value.hint or "")
    assert lvh_context.executor.commands == []  # nothing ran


def test_check_reports_keyring(standin):
    reqs = {r.name: r for r in UbuntuProvider.check(api.HostInfo(arch="x86_64", cpus=1, kvm=False))}
    k = reqs["ubuntu-keyring"]
    assert k.found == Path(DEFAULT_KEYRING).is_file()
    if not k.found:
        assert "apt-get install ubuntu-keyring" in k.hint


def test_bootable_installs_ubuntus_kernel(standin, lvh_context, keyring):
    [argv] = provider(bootable=True, packages=["openssh-server"], keyring=str(keyring)).describe(lvh_context)
    assert "--include=openssh-server,systemd-sysv,udev,linux-image-virtual,initramfs-tools" in argv


def test_build_delegates_and_marks_the_artifact(standin, lvh_context, fake_executor, keyring):
    art = provider(suite="24.04", keyring=str(keyring)).build(lvh_context)
    assert fake_executor.ran("mmdebstrap")
    [cmd] = fake_executor.find("mmdebstrap")
    assert "noble" in cmd.argv
    assert art.path == lvh_context.out / "rootfs.tar"
    assert art.meta["distro"] == "ubuntu" and art.meta["suite"] == "noble" and art.meta["release"] == "24.04"


def test_key_changes_with_options_and_keyring(standin, lvh_context, keyring):
    a = provider(keyring=str(keyring)).key_material(lvh_context)
    b = provider(keyring=str(keyring), suite="jammy").key_material(lvh_context)
    assert a != b
    keyring.write_bytes(b"another key")
    assert provider(keyring=str(keyring)).key_material(lvh_context) != a


def test_base_driver_missing_is_located_at_config_time(lvh_drivers, monkeypatch):
    def missing(group, name):
        raise api.UserError(f"no rootfs driver named {name!r} is installed")

    monkeypatch.setattr(api, "driver_class", missing)
    with pytest.raises(api.marshmallow.ValidationError, match="builds on lvh's mmdebstrap"):
        UbuntuOptions().load({})


# -- the hook plugin ----------------------------------------------------------------------------


def spec(meta: dict, cmdline=()) -> api.RunSpec:
    disk = api.DiskArtifact(root=Path("/x"), path=Path("/x/disk.qcow2"), meta=meta)
    return api.RunSpec(name="r", image=disk, cmdline=list(cmdline))


def test_hook_kernel_cmdline(monkeypatch):
    monkeypatch.delenv("LVH_UBUNTU_IFNAMES", raising=False)
    assert hooks.lvh_kernel_cmdline(spec({"distro": "ubuntu"}), None) == ["net.ifnames=0"]
    assert hooks.lvh_kernel_cmdline(spec({"rootfs": {"distro": "ubuntu"}}), None) == ["net.ifnames=0"]
    assert hooks.lvh_kernel_cmdline(spec({"distro": "debian"}), None) == []
    assert hooks.lvh_kernel_cmdline(spec({"distro": "ubuntu"}, ["net.ifnames=1"]), None) == []
    assert hooks.lvh_kernel_cmdline(api.RunSpec(name="k"), None) == []
    monkeypatch.setenv("LVH_UBUNTU_IFNAMES", "1")
    assert hooks.lvh_kernel_cmdline(spec({"distro": "ubuntu"}), None) == []


def test_hook_report(tmp_path, monkeypatch):
    out = tmp_path / "r" / "ubuntu.json"
    monkeypatch.setenv("LVH_UBUNTU_REPORT", str(out))
    hooks.lvh_pipeline_finished({"ok": True, "stages": [
        {"id": "image:u/rootfs", "kind": "rootfs", "driver": "ubuntu", "target": "u", "key": "k1",
         "status": "built", "duration": 3.5, "error": None},
        {"id": "image:d/rootfs", "kind": "rootfs", "driver": "mmdebstrap", "target": "d", "key": "k2",
         "status": "built", "duration": 1.0, "error": None}]})
    report = json.loads(out.read_text())
    assert report == {"ok": True, "images": [
        {"target": "u", "status": "built", "key": "k1", "duration": 3.5, "error": None}]}


def test_hooks_follow_the_hookspecs():
    import pluggy

    from lvh import hookspecs

    pm = pluggy.PluginManager("lvh")
    pm.add_hookspecs(hookspecs)
    pm.register(hooks)  # raises if an implementation does not match its spec
    pm.check_pending()


# -- installed, with lvh's own mmdebstrap driver -------------------------------------------------


def test_installed_entry_points():
    eps = {(ep.group, ep.name): ep.value for ep in md.distribution("lvh-plugin-ubuntu").entry_points}
    assert eps[("lvh.rootfs", "ubuntu")] == "lvh_plugin_ubuntu.rootfs:UbuntuProvider"
    assert eps[("lvh.hooks", "lvh-plugin-ubuntu")] == "lvh_plugin_ubuntu.hooks"
    assert api.driver_class("lvh.rootfs", "ubuntu") is UbuntuProvider


def _real_mmdebstrap():
    try:
        return api.driver_class("lvh.rootfs", "mmdebstrap")
    except api.LvhError as e:
        pytest.skip(f"lvh's mmdebstrap driver is not installed: {e}")


def test_real_mmdebstrap_command(tmp_path, keyring):
    _real_mmdebstrap()
    ctx = make_context(tmp_path, planning=True)
    cmds = provider(suite="noble", keyring=str(keyring), packages=["iproute2"]).describe(ctx)
    [argv] = [c for c in cmds if c and Path(c[0]).name == "mmdebstrap"]
    assert "noble" in argv and ARCHIVE_MIRROR in " ".join(argv)
    assert str(keyring) in " ".join(argv)
    assert "main,universe" in " ".join(argv) or ("main" in " ".join(argv) and "universe" in " ".join(argv))


def test_passes_hooks_format_mode_but_not_debians_bootable(standin, lvh_context, keyring):
    p = provider(bootable=True, hooks={"customize": ["echo hi > $1/etc/motd"]}, format="tar", mode="unshare",
                 keyring=str(keyring))
    base = p.base(lvh_context)
    assert base.options["bootable"] is False  # it would add Debian's linux-image-amd64
    assert "linux-image-virtual" in base.options["packages"]
    assert base.options["hooks"] == {"customize": ["echo hi > $1/etc/motd"]}
    assert (base.options["format"], base.options["mode"]) == ("tar", "unshare")
    assert base.options["keyring"] == [str(keyring)]


def test_real_mmdebstrap_rejects_bad_hooks_at_config_time():
    _real_mmdebstrap()
    with pytest.raises(api.marshmallow.ValidationError) as e:
        UbuntuOptions().load({"hooks": {"setupp": ["true"]}})
    assert "setupp" in str(e.value.messages)
