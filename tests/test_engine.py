"""Engine: order, caching (hit, miss, invalidation of exactly the dependants), failures, hooks."""

from __future__ import annotations

import json
from pathlib import Path

import pluggy
import pytest

from lvh import hookspecs
from lvh.api import StageError
from lvh.config import load_config
from lvh.engine import Engine
from tests import fakes


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.summary: dict | None = None

    @pluggy.HookimplMarker("lvh")
    def lvh_stage_finish(self, stage, status):
        self.calls.append(("finish", stage.id, status))

    @pluggy.HookimplMarker("lvh")
    def lvh_artifact_published(self, stage, artifact):
        self.calls.append(("published", stage.id, artifact.key))

    @pluggy.HookimplMarker("lvh")
    def lvh_pipeline_finished(self, summary):
        self.summary = summary


@pytest.fixture
def env(tmp_path, monkeypatch):
    log = tmp_path / "events.jsonl"
    monkeypatch.setenv(fakes.LOG_ENV, str(log))
    conf = tmp_path / "conf.yaml"
    conf.write_text(fakes.PIPELINE)
    return tmp_path, conf, log


def engine(conf: Path, **kw) -> tuple[Engine, Recorder]:
    pm = pluggy.PluginManager("lvh")
    pm.add_hookspecs(hookspecs)
    rec = Recorder()
    pm.register(rec)
    cfg = load_config(conf, registry=fakes.registry())
    return Engine(cfg, hooks=pm.hook, **kw), rec


def built(log: Path) -> list[str]:
    return [f"{e['event']}:{e['target']}" for e in fakes.events(log)]


def test_order_and_outputs(env):
    tmp, conf, log = env
    eng, rec = engine(conf)
    ids = [s.id for s in eng.stages()]
    assert ids == ["image:base/rootfs", "image:base/customize[0]", "image:base/disk", "image:tools/disk",
                   "image:tools/packages", "kernel:k1", "run:smoke"]
    summary = eng.run()
    assert summary["ok"] and summary["exit_code"] == 0
    assert built(log) == ["rootfs:base", "customize:base", "disk:base", "derive:tools", "customize:tools",
                          "kernel:k1", "run:smoke"]
    # The tree customizer ran before the disk was made: the disk lists its file.
    base = tmp / "_data" / "images" / "base.raw"
    assert "customized" in json.loads(base.read_text())["files"]
    # The derived image is an overlay on the parent's *published* disk.
    tools = tmp / "_data" / "images" / "tools.qcow2"
    backing = json.loads(tools.read_text().split("}")[0] + "}")["backing"]
    assert Path(backing).resolve() == base.resolve()
    assert (tmp / "_data" / "kernels" / "k1" / "boot" / "vmlinuz-6.1.0-fake").exists()
    assert rec.summary is not None and [r["name"] for r in rec.summary["runs"]] == ["smoke"]


def test_second_run_is_all_cache_hits(env):
    tmp, conf, log = env
    engine(conf)[0].run()
    n = len(fakes.events(log))
    summary = engine(conf)[0].run()
    assert built(log)[n:] == ["run:smoke"]  # runs are never cached
    assert {s["status"] for s in summary["stages"] if s["kind"] != "run"} == {"cached"}


def test_changing_an_option_rebuilds_exactly_the_dependants(env):
    tmp, conf, log = env
    engine(conf)[0].run()
    n = len(fakes.events(log))
    conf.write_text(fakes.PIPELINE.replace("packages: [bpftool]", "packages: [bpftool, strace]"))
    engine(conf)[0].run()
    assert built(log)[n:] == ["customize:tools", "run:smoke"]
    n = len(fakes.events(log))
    conf.write_text(fakes.PIPELINE.replace("hostname: lvh", "hostname: other"))
    engine(conf)[0].run()
    # The parent's customize changed: its disk, and the child built on it, rebuild; rootfs and kernel don't.
    assert built(log)[n:] == ["customize:base", "disk:base", "derive:tools", "customize:tools", "run:smoke"]


def test_only_builds_the_target_and_what_it_needs(env):
    tmp, conf, log = env
    eng, _ = engine(conf, only=["base"])
    assert [s.id for s in eng.stages()] == ["image:base/rootfs", "image:base/customize[0]", "image:base/disk"]
    eng.run()
    assert built(log) == ["rootfs:base", "customize:base", "disk:base"]


def test_force_rebuilds_only_the_named_target(env):
    tmp, conf, log = env
    engine(conf)[0].run()
    n = len(fakes.events(log))
    engine(conf, only=["tools"], force=True)[0].run()
    assert built(log)[n:] == ["derive:tools", "customize:tools"]


def test_plan_reports_cached_state_and_commands(env):
    tmp, conf, _ = env
    plan = engine(conf)[0].plan()
    assert not any(p["cached"] for p in plan)
    assert plan[-1]["commands"] == []  # its command line names files that do not exist yet
    engine(conf, only=["base"])[0].run()
    plan = engine(conf)[0].plan()
    assert [p["cached"] for p in plan][:3] == [True, True, True]
    assert not any(p["cached"] for p in plan[3:])
    engine(conf)[0].run()
    run = engine(conf)[0].plan()[-1]
    kernel = tmp / "_data" / "kernels" / "k1" / "boot" / "vmlinuz-6.1.0-fake"
    assert run["commands"] == [["fake-vm", "-kernel", str(kernel.resolve()), "-cmd", "exit 0"]]


def test_run_exit_code_is_the_pipeline_exit_code(env):
    tmp, conf, _ = env
    conf.write_text(fakes.PIPELINE.replace('command: "exit 0"', 'command: "exit 7"'))
    summary = engine(conf)[0].run()
    assert summary["exit_code"] == 7 and not summary["ok"]


def test_failed_stage_publishes_nothing_and_keeps_output_and_log(env):
    tmp, conf, log = env
    conf.write_text(fakes.PIPELINE.replace("suite: bookworm,", "suite: bookworm, fail: true,"))
    eng, rec = engine(conf)
    with pytest.raises(StageError) as ei:
        eng.run()
    msg = str(ei.value)
    assert msg.startswith("image:base/rootfs: command failed with exit code 3")
    assert "bootstrap failed: no such package" in msg
    failed = list((tmp / "_data" / "failed").iterdir())
    assert len(failed) == 1 and failed[0].name.startswith("image_base_rootfs-")
    assert (failed[0] / "out" / "tree" / "partial").read_text() == "half done"
    stage_log = (failed[0] / "stage.log").read_text()
    assert "exit 3" in stage_log and "no such package" in stage_log
    cache = tmp / "_data" / "cache"
    assert not any(p.name != ".tmp" for p in cache.iterdir()) if cache.exists() else True
    assert not list((cache / ".tmp").iterdir())
    assert ("finish", "image:base/rootfs", "failed") in rec.calls
    assert rec.summary is not None and rec.summary["ok"] is False
    # The next run starts clean and succeeds once the input is fixed.
    conf.write_text(fakes.PIPELINE)
    assert engine(conf)[0].run()["ok"]


def test_driver_crash_is_a_stage_error_naming_the_driver(env, monkeypatch):
    tmp, conf, _ = env

    def boom(self, ctx):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(fakes.FakeKernel, "build", boom)
    with pytest.raises(StageError, match=r"kernel:k1: driver 'fakekernel' crashed: ZeroDivisionError"):
        engine(conf)[0].run()


def test_tree_only_customizer_after_disk_is_a_config_error(env):
    tmp, conf, _ = env
    conf.write_text(fakes.PIPELINE.replace("    packages: [bpftool]\n",
                                           "    customize:\n      - customizer: treeonly\n        actions: []\n"))
    from lvh.api import ConfigError

    with pytest.raises(ConfigError, match=r"conf.yaml:12 images\[1\].customize\[0\]: customizer 'treeonly'"):
        load_config(conf, registry=fakes.registry())
