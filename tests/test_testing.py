"""lvh.testing, the pytest plugin for plugin authors: the fake executor, the fixtures, the
driver registration that config validation, the engine and api.driver_class all see."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvh import api
from lvh.api import Command, fields
from lvh.testing import FakeExecutor, make_context, registered_drivers, run_pipeline


def run(fake: FakeExecutor, *argv: str, **kw) -> api.CommandResult:
    return fake.run(Command(argv=list(argv), **kw))


def test_fake_executor_records_and_defaults_to_success():
    fake = FakeExecutor()
    r = run(fake, "true", "x")
    assert r.returncode == 0 and r.argv == ["true", "x"]
    assert fake.argvs == [["true", "x"]] and fake.lines == ["true x"]


def test_answers_by_longest_prefix():
    fake = FakeExecutor()
    fake.answer("git", stdout="generic\n").answer("git rev-parse HEAD", stdout="abc123\n")
    assert run(fake, "git", "rev-parse", "HEAD", capture=True).stdout == "abc123\n"
    assert run(fake, "git", "status", capture=True).stdout == "generic\n"
    assert run(fake, "gitk", capture=True).stdout == ""  # a prefix is whole words, not letters


def test_answers_match_tools_by_full_path_and_later_wins():
    fake = FakeExecutor()
    fake.answer(["mmdebstrap", "--version"], stdout="mmdebstrap 1.3.5\n")
    fake.answer(["mmdebstrap", "--version"], stdout="mmdebstrap 1.4.0\n")
    assert run(fake, "/usr/bin/mmdebstrap", "--version", capture=True).stdout == "mmdebstrap 1.4.0\n"
    assert fake.ran("mmdebstrap") and not fake.ran("qemu-img")


def test_stdout_only_when_captured_but_always_streamed():
    fake = FakeExecutor().answer("make", stdout="CC a.o\nLD vmlinux\n", stderr="warning\n")
    lines: list[tuple[str, str]] = []
    r = run(fake, "make", "-j2", on_line=lambda s, ln: lines.append((s, ln)))
    assert r.stdout == "" and r.stderr == "warning\n"
    assert lines == [("stdout", "CC a.o"), ("stdout", "LD vmlinux"), ("stderr", "warning")]
    assert r.tail == ["CC a.o", "LD vmlinux", "warning"]


def test_fail_times_and_effect(tmp_path):
    fake = FakeExecutor().fail("flaky", returncode=3, times=1)
    assert run(fake, "flaky").returncode == 3
    assert run(fake, "flaky").returncode == 0
    target = tmp_path / "made"
    fake.answer("touch", effect=lambda c: Path(c.argv[1]).write_text("x"))
    run(fake, "touch", str(target))
    assert target.read_text() == "x"
    assert [c.argv[0] for c in fake.find("touch")] == ["touch"]
    fake.clear()
    assert fake.commands == []


def test_handler_is_asked_first():
    fake = FakeExecutor(lambda c: api.CommandResult(list(c.argv), 7) if c.argv[0] == "x" else None)
    fake.answer("x", returncode=1).answer("y", returncode=2)
    assert run(fake, "x").returncode == 7 and run(fake, "y").returncode == 2


def test_context_run_raises_command_failed_with_tail(tmp_path):
    fake = FakeExecutor().fail("mke2fs", stderr="mke2fs: no space left", returncode=1)
    ctx = make_context(tmp_path, executor=fake)
    with pytest.raises(api.CommandFailed, match="no space left") as e:
        ctx.run("mke2fs", "-q", "img", hint="free some space")
    assert e.value.hint == "free some space" and e.value.result.returncode == 1


def test_make_context_planning_and_real(tmp_path):
    plan = make_context(tmp_path / "p", planning=True)
    assert plan.planning and plan.out is None
    real = make_context(tmp_path / "r", real=True)
    r = real.run("sh", "-c", "echo hi; exit 0", capture=True)
    assert r.stdout == "hi\n"
    assert real.resolve("a/b") == tmp_path / "r" / "a" / "b"
    assert real.state_dir.is_dir()


def test_fixtures(lvh_context, fake_executor, lvh_workdir):
    assert lvh_context.executor is fake_executor
    assert lvh_context.workdir == lvh_workdir and lvh_workdir.is_dir()
    assert lvh_context.out.is_dir() and not any(lvh_context.out.iterdir())
    lvh_context.run("echo", "hi")
    assert fake_executor.argvs == [["echo", "hi"]]


class _Opts(api.Schema):
    size = fields.Int(load_default=1)


class _Fake(api.RootfsProvider):
    name = "fake-rootfs"
    Options = _Opts


def test_registered_drivers_are_found_by_name_and_removed_after():
    with pytest.raises(api.UserError, match="no rootfs driver named 'fake-rootfs'"):
        api.driver_class("lvh.rootfs", "fake-rootfs")
    with registered_drivers({("lvh.rootfs", "fake-rootfs"): _Fake}):
        assert api.driver_class("lvh.rootfs", "fake-rootfs") is _Fake
    with pytest.raises(api.UserError):
        api.driver_class("lvh.rootfs", "fake-rootfs")


def test_lvh_drivers_fixture(lvh_drivers):
    assert lvh_drivers.register("lvh.rootfs", "fake-rootfs", _Fake) is _Fake
    assert api.driver_class("lvh.rootfs", "fake-rootfs") is _Fake


def test_lvh_drivers_fixture_undone():
    with pytest.raises(api.UserError):
        api.driver_class("lvh.rootfs", "fake-rootfs")


# -- run_pipeline: the real engine with the drivers you give ----------------------------------


class _Tool(api.RootfsProvider):
    """A rootfs driver that runs a tool (so the fake executor sees it) and writes a tree."""

    name = "tool-rootfs"

    class Options(api.Schema):
        suite = fields.Str(load_default="bookworm")

    def describe(self, ctx, *inputs):
        return [["bootstrap-tool", self.options["suite"], str(ctx.out or "OUT")]]

    def build(self, ctx):
        ctx.run(*self.describe(ctx)[0])
        (ctx.out / "tree").mkdir()
        return api.RootfsArtifact(root=ctx.out, path=ctx.out / "tree", format="dir")


def _drivers():
    from tests import fakes

    return {**fakes.FAKES, ("lvh.rootfs", "tool-rootfs"): _Tool}


CONF = {
    "images": [{"name": "base", "rootfs": {"provider": "tool-rootfs", "suite": "trixie"},
                "disk": {"formatter": "fakedisk", "size": "1G"}}],
    "kernels": [{"name": "k", "builder": "fakekernel"}],
    "runs": [{"name": "r", "runner": "fakerun", "image": "base", "kernel": "k", "command": "exit 3"}],
}


def test_run_pipeline_runs_with_given_drivers_and_fake_executor(tmp_path):
    class Seen:
        summary = None

        @api.hookimpl
        def lvh_pipeline_finished(self, summary):
            Seen.summary = summary

    res = run_pipeline(CONF, drivers=_drivers(), tmp_path=tmp_path, hook_plugins=[Seen()])
    assert res.summary["exit_code"] == 3  # the guest command's code
    assert [(s["id"], s["status"]) for s in res.stages] == [
        ("image:base/rootfs", "built"), ("image:base/disk", "built"), ("kernel:k", "built"), ("run:r", "built")]
    assert res.summary["runs"][0]["exit_code"] == 3
    [argv] = res.executor.argvs
    assert argv[:2] == ["bootstrap-tool", "trixie"]
    assert (res.workdir / "images").is_dir()
    assert Seen.summary is res.summary
    # The drivers were registered only for the call.
    with pytest.raises(api.UserError):
        api.driver_class("lvh.rootfs", "tool-rootfs")


def test_run_pipeline_second_run_is_cached(tmp_path):
    run_pipeline(CONF, drivers=_drivers(), tmp_path=tmp_path)
    again = run_pipeline(CONF, drivers=_drivers(), tmp_path=tmp_path)
    assert again.stage("image:base/rootfs")["status"] == "cached"
    assert again.executor.argvs == []


def test_run_pipeline_plan(tmp_path):
    res = run_pipeline(CONF, drivers=_drivers(), tmp_path=tmp_path, plan=True)
    assert res.summary is None
    assert res.stage("image:base/rootfs")["commands"] == [["bootstrap-tool", "trixie", "OUT"]]
    # The run's command line names its inputs' files, which a plan has not built: none yet.
    assert res.plan[-1]["kind"] == "run" and res.plan[-1]["commands"] == []
    assert res.executor.argvs == []  # planning runs nothing


def test_run_pipeline_yaml_errors_carry_lines(tmp_path):
    text = "images:\n  - name: base\n    rootfs: {provider: tool-rootfs, suit: x}\n" \
           "    disk: {formatter: fakedisk}\n"
    with pytest.raises(api.ConfigError) as e:
        run_pipeline(text, drivers=_drivers(), tmp_path=tmp_path)
    assert e.value.line == 3 and "images[0].rootfs.suit" in e.value.message


def test_run_pipeline_raises_a_failing_stage(tmp_path):
    fake = FakeExecutor().fail("bootstrap-tool", stderr="E: no such suite")
    with pytest.raises(api.CommandFailed, match="no such suite"):
        run_pipeline(CONF, drivers=_drivers(), tmp_path=tmp_path, executor=fake)


def test_lvh_pipeline_fixture(lvh_pipeline, lvh_drivers):
    for key, cls in _drivers().items():
        lvh_drivers.register(*key, cls)
    res = lvh_pipeline(CONF, plan=True)
    assert res.stage("image:base/rootfs")["driver"] == "tool-rootfs"
    assert res.workdir.parent.is_dir()


def test_artifacts_inherit_their_inputs_meta(tmp_path):
    """A hook or a later stage can tell what an image was made from (the engine carries meta)."""

    class Marked(_Tool):
        name = "marked-rootfs"

        def build(self, ctx):
            art = super().build(ctx)
            art.meta = {"distro": "testix", "suite": "one"}
            return art

    conf = {"images": [{"name": "base", "rootfs": {"provider": "marked-rootfs"},
                        "disk": {"formatter": "fakedisk"}},
                       {"name": "child", "parent": "base"}]}
    res = run_pipeline(conf, drivers={**_drivers(), ("lvh.rootfs", "marked-rootfs"): Marked}, tmp_path=tmp_path)
    arts = {s.id: s.artifact for s in res.engine.stages()}
    assert arts["image:base/disk"].meta == {"distro": "testix", "suite": "one"}
    # The derived image: its parent's meta, and what its own driver says.
    assert arts["image:child/disk"].meta["distro"] == "testix"
