"""The CLI, end to end over fake drivers: exit codes, one-line errors, JSON output, locking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import fakes

ROOT = Path(__file__).resolve().parent.parent


def lvh(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "tests.fakes", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def conf(tmp_path, monkeypatch):
    c = tmp_path / "conf.yaml"
    c.write_text(fakes.PIPELINE)
    monkeypatch.setenv(fakes.LOG_ENV, str(tmp_path / "events.jsonl"))
    return c


def test_version_and_help(tmp_path):
    r = lvh("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("lvh, version ")
    r = lvh("--help", cwd=tmp_path)
    assert r.returncode == 0
    for cmd in ("pipeline", "plugins", "doctor", "cache"):
        assert cmd in r.stdout
    r = lvh("pipeline", "run", "--help", cwd=tmp_path)
    assert "--only" in r.stdout and "--dry-run" in r.stdout


def test_validate_ok_and_config_error_is_one_line_exit_2(conf):
    r = lvh("pipeline", "validate", str(conf), cwd=conf.parent)
    assert r.returncode == 0, r.stderr
    assert "2 image(s), 1 kernel(s), 1 run(s)" in r.stdout
    conf.write_text(fakes.PIPELINE.replace("suite: bookworm,", "suite: bookworm, colour: red,"))
    r = lvh("pipeline", "validate", "conf.yaml", cwd=conf.parent)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "error: conf.yaml:4 images[0].rootfs.colour: Unknown field."
    assert lines[1].startswith("hint: rootfs driver 'fake' takes: ")
    assert "Traceback" not in r.stderr and len(lines) == 2


def test_plan_then_run_then_all_cached(conf):
    r = lvh("pipeline", "plan", str(conf), "--json", cwd=conf.parent)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["stages"][0]["id"] == "image:base/rootfs"
    assert not any(s["cached"] for s in plan["stages"])
    r = lvh("pipeline", "run", str(conf), "--json", cwd=conf.parent)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert [s["status"] for s in summary["stages"]][:6] == ["built"] * 6
    assert summary["runs"][0]["exit_code"] == 0
    r = lvh("pipeline", "run", str(conf), "--json", cwd=conf.parent)
    summary = json.loads(r.stdout)
    assert [s["status"] for s in summary["stages"]][:6] == ["cached"] * 6


def test_guest_exit_code_is_lvh_exit_code_and_output_streams(conf):
    conf.write_text(fakes.PIPELINE.replace('command: "exit 0"', 'command: "exit 7"'))
    r = lvh("pipeline", "run", str(conf), cwd=conf.parent)
    assert r.returncode == 7
    assert "ran exit 7" in r.stdout


def test_stage_failure_exit_1_with_hint_and_report(conf, tmp_path):
    conf.write_text(fakes.PIPELINE.replace("suite: bookworm,", "suite: bookworm, fail: true,"))
    r = lvh("pipeline", "run", str(conf), "--report", "rep.json", "--junit", "junit.xml", cwd=conf.parent)
    assert r.returncode == 1
    assert "error: image:base/rootfs: command failed with exit code 3" in r.stderr
    assert "hint: partial output and log kept in" in r.stderr
    assert "Traceback" not in r.stderr
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["ok"] is False and rep["stages"][0]["status"] == "failed"
    assert "<failure" in (tmp_path / "junit.xml").read_text()


def test_dry_run_changes_nothing(conf, tmp_path):
    r = lvh("pipeline", "run", str(conf), "--dry-run", "--json", cwd=conf.parent)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["dry_run"] is True
    assert not (tmp_path / "_data" / "cache").exists()
    assert not (tmp_path / "events.jsonl").exists()


def test_unknown_only_target(conf):
    r = lvh("pipeline", "run", str(conf), "--only", "toolz", cwd=conf.parent)
    assert r.returncode == 2
    assert "--only 'toolz': no image, kernel or run of that name" in r.stderr
    assert "did you mean 'tools'?" in r.stderr


def test_cache_list_and_gc(conf, tmp_path):
    lvh("pipeline", "run", str(conf), cwd=conf.parent)
    conf.write_text(fakes.PIPELINE.replace("hostname: lvh", "hostname: other"))
    lvh("pipeline", "run", str(conf), cwd=conf.parent)
    r = lvh("cache", "list", "--workdir", "_data", "--json", cwd=conf.parent)
    entries = json.loads(r.stdout)["entries"]
    stale = [e for e in entries if not e["live"]]
    # The old customize, disk and derived images are stale; rootfs and kernel are still used.
    assert {e["stage"] for e in stale} == {"image:base/customize[0]", "image:base/disk", "image:tools/disk",
                                           "image:tools/packages"}
    r = lvh("cache", "gc", "--workdir", "_data", cwd=conf.parent)
    assert r.returncode == 0 and "4 entries" in r.stdout
    r = lvh("pipeline", "run", str(conf), "--json", cwd=conf.parent)
    assert {s["status"] for s in json.loads(r.stdout)["stages"] if s["kind"] != "run"} == {"cached"}


def test_two_concurrent_runs_build_each_stage_once(conf, tmp_path):
    conf.write_text(fakes.PIPELINE.replace("suite: bookworm,", "suite: bookworm, sleep: 1.5,"))
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.fakes", "pipeline", "run", str(conf), "--json"],
                              cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    statuses = sorted(json.loads(o[0])["stages"][0]["status"] for o in outs)
    assert statuses == ["built", "cached"]
    evs = fakes.events(tmp_path / "events.jsonl")
    assert sum(1 for ev in evs if ev["event"] == "rootfs") == 1
    assert sum(1 for ev in evs if ev["event"] == "run") == 2


def test_ctrl_c_stops_the_child_and_leaves_the_cache_consistent(conf, tmp_path):
    # A rootfs stage whose command hangs (LVH_FAKE_HANG): `sleep` as a child process.
    conf.write_text(fakes.PIPELINE.replace("suite: bookworm,", "suite: bookworm, fail: true,"))
    e = dict(os.environ, PYTHONPATH=str(ROOT), LVH_FAKE_HANG="1")
    p = subprocess.Popen([sys.executable, "-m", "tests.fakes", "pipeline", "run", str(conf)], cwd=tmp_path, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    pidfile = tmp_path / "hang.pid"
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert pidfile.exists(), p.stderr.read() if p.poll() is not None else "no child started"
    child = int(pidfile.read_text())
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert not list((tmp_path / "_data" / "cache" / ".tmp").iterdir())
    assert len(list((tmp_path / "_data" / "failed").iterdir())) == 1


def test_log_json_records_commands_and_library_is_quiet(conf, tmp_path):
    r = lvh("--log-json", "log.jsonl", "pipeline", "run", str(conf), "--only", "base", cwd=conf.parent)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line)["record"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any(rec["message"] == "image:base/rootfs: build (fake)" for rec in records)
    # The summary closes the run on stderr.
    assert "image:base/disk" in r.stderr and "built" in r.stderr
    # Imported as a library, lvh logs nothing until a program enables it.
    code = "import lvh, loguru, sys; loguru.logger.remove(); loguru.logger.add(sys.stderr); " \
           "from lvh.executor import SubprocessExecutor; from lvh.api import Command; " \
           "SubprocessExecutor().run(Command(['true']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stderr == ""
