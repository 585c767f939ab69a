"""lvh.testing, the pytest plugin for plugin authors: the fake executor, the fixtures, the
driver registration that config validation, the engine and api.driver_class all see."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvh import api
from lvh.api import Command, fields
from lvh.testing import FakeExecutor, make_context, registered_drivers

pytest_plugins = ["lvh.testing"]


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
