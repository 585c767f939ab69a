"""The provider and the hook plugin inside lvh's real engine (``lvh.testing.run_pipeline``),
with stand-ins for the other stages: the engine validates the options with the plugin's schema,
computes the cache key, plans the mmdebstrap command, runs the stage, and calls the hooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lvh_plugin_ubuntu import hooks
from lvh_plugin_ubuntu.rootfs import UbuntuProvider

from lvh import api
from lvh.api import fields
from lvh.testing import FakeExecutor, run_pipeline


class TarDisk(api.DiskFormatter):
    """A disk stand-in (it sets no ``meta``: lvh's engine carries the rootfs's along)."""

    name = "stand-in-disk"

    class Options(api.Schema):
        size = api.Size(load_default="1G")

    def build(self, ctx, rootfs):
        (ctx.out / "disk.raw").write_bytes(b"disk")
        return api.DiskArtifact(root=ctx.out, path=ctx.out / "disk.raw")


class CmdlineRunner(api.Runner):
    """A runner stand-in that asks the hooks for kernel arguments, like lvh's runners do."""

    name = "stand-in-runner"

    class Options(api.Schema):
        accel = fields.Str(load_default="tcg")

    def run(self, ctx, spec):
        extra = [a for part in ctx.hooks.lvh_kernel_cmdline(spec=spec, kernel=spec.kernel) for a in part]
        (spec.state_dir / "cmdline").write_text(" ".join(["console=ttyS0", *spec.cmdline, *extra]))
        return api.RunResult(root=spec.state_dir, status="exited", exit_code=0)


@pytest.fixture
def drivers(standin):
    return {("lvh.rootfs", "ubuntu"): UbuntuProvider, ("lvh.disk", "stand-in-disk"): TarDisk,
            ("lvh.runner", "stand-in-runner"): CmdlineRunner}


def conf(tmp_path: Path, **rootfs) -> dict:
    (tmp_path / "ubuntu-archive-keyring.gpg").write_bytes(b"key")
    return {"images": [{"name": "noble", "rootfs": {"provider": "ubuntu", "suite": "noble",
                                                    "keyring": "ubuntu-archive-keyring.gpg", **rootfs},
                        "disk": {"formatter": "stand-in-disk"}}],
            "runs": [{"name": "r", "runner": "stand-in-runner", "image": "noble", "command": "true"}]}


def touch_tar(cmd: api.Command) -> None:
    Path(cmd.argv[-2]).write_bytes(b"tar")


def test_plan_shows_the_mmdebstrap_command(tmp_path, drivers):
    res = run_pipeline(conf(tmp_path), drivers=drivers, tmp_path=tmp_path, plan=True)
    [cmd] = res.stage("image:noble/rootfs")["commands"]
    assert cmd == ["mmdebstrap", "--variant=minbase", "--components=main,universe", "--architectures=amd64",
                   f"--keyring={tmp_path / 'ubuntu-archive-keyring.gpg'}", "noble", "OUT/rootfs.tar",
                   "http://archive.ubuntu.com/ubuntu"]
    assert res.executor.argvs == []


def test_bad_option_is_located(tmp_path, drivers):
    with pytest.raises(api.ConfigError) as e:
        run_pipeline(conf(tmp_path, suite="nobel"), drivers=drivers, tmp_path=tmp_path, plan=True)
    assert e.value.path == "images[0].rootfs.suite" and "Did you mean 'noble'" in e.value.message


def test_run_builds_once_and_the_hooks_contribute(tmp_path, drivers, monkeypatch):
    monkeypatch.setenv("LVH_UBUNTU_REPORT", str(tmp_path / "report.json"))
    fake = FakeExecutor().answer("mmdebstrap", effect=touch_tar)
    res = run_pipeline(conf(tmp_path), drivers=drivers, tmp_path=tmp_path, executor=fake, hook_plugins=[hooks])
    assert res.summary["ok"]
    assert [a[0] for a in fake.argvs] == ["mmdebstrap"]
    cmdline = (res.workdir / "runs" / "r" / "cmdline").read_text()
    assert cmdline == "console=ttyS0 net.ifnames=0"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and [i["target"] for i in report["images"]] == ["noble"]
    assert report["images"][0]["status"] == "built"

    again = run_pipeline(conf(tmp_path), drivers=drivers, tmp_path=tmp_path, executor=FakeExecutor(),
                         hook_plugins=[hooks])
    assert again.stage("image:noble/rootfs")["status"] == "cached"
    assert again.executor.argvs == []
    changed = run_pipeline(conf(tmp_path, components=["main"]), drivers=drivers, tmp_path=tmp_path,
                           executor=FakeExecutor().answer("mmdebstrap", effect=touch_tar))
    assert changed.stage("image:noble/rootfs")["status"] == "built"
