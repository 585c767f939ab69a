"""examples/lvh-plugin-ubuntu installed like a user would: into a fresh virtual environment
(no system site-packages) from wheels of this checkout's lvh and of the plugin — then lvh sees
it (`lvh plugins list`), validates a config with its schema (errors with file:line) and plans the
exact mmdebstrap command. The Ubuntu archive is not reachable here: fetching is the mmdebstrap
driver's job, proven end to end with Debian by its own tests.

The dependency wheels are downloaded once into ~/.cache/lvh-tests/wheels, and the venv is
cached under ~/.cache/lvh-tests/venvs keyed by the sources' content, so a repeated run with
unchanged sources takes seconds."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from filelock import FileLock

from tests.conftest import TEST_CACHE

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "lvh-plugin-ubuntu"
WHEELS = TEST_CACHE / "wheels"
VENVS = TEST_CACHE / "venvs"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".venv",
                                 ".pytest_cache", ".ruff_cache", "_data")
_KEEP_VENVS = 3

pytestmark = pytest.mark.e2e


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    plugin = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    build = ["setuptools>=68", "wheel"]
    return sorted({*project["dependencies"], *plugin["optional-dependencies"]["test"], *build})


def _pip(*args: str, python: str = sys.executable) -> None:
    r = subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise AssertionError(f"pip {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def ensure_wheels() -> Path:
    """Wheels of every dependency (and of the build backend), downloaded once."""
    reqs = _requirements()
    WHEELS.mkdir(parents=True, exist_ok=True)
    stamp = WHEELS / f".ok-{hashlib.sha256(json.dumps(reqs).encode()).hexdigest()[:16]}"
    with FileLock(str(WHEELS / ".lock")):
        if not stamp.exists():
            _pip("download", "--quiet", "--dest", str(WHEELS), *reqs)
            stamp.touch()
    return WHEELS


def _sources_key() -> str:
    h = hashlib.sha256(json.dumps(_requirements()).encode())
    h.update(sys.version.encode())
    for base in (ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "lvh", ROOT / "plugins", PLUGIN):
        if not base.exists():
            continue
        files = [base] if base.is_file() else sorted(
            p for p in base.rglob("*") if p.is_file() and not any(
                part in {"__pycache__", "build", "dist", ".pytest_cache"} or part.endswith(".egg-info")
                for part in p.relative_to(base).parts))
        for p in files:
            h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _copy_project(dest: Path) -> Path:
    """A copy of lvh's sources to build from (a build must not write into the checkout)."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    if not (dest / "README.md").exists():
        (dest / "README.md").write_text("lvh\n")
    for name in ("lvh", "plugins"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dest / name, ignore=_IGNORE)
    return dest


def ensure_venv() -> Path:
    """A venv with lvh (from this checkout) and lvh-plugin-ubuntu installed from wheels."""
    wheels = ensure_wheels()
    key = _sources_key()
    venv = VENVS / key
    VENVS.mkdir(parents=True, exist_ok=True)
    with FileLock(str(VENVS / f"{key}.lock")):
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            # pip into the venv from the running interpreter's pip (no download, no ensurepip).
            src = venv / "src"
            lvh_src = _copy_project(src / "lvh")
            plugin_src = src / "lvh-plugin-ubuntu"
            shutil.copytree(PLUGIN, plugin_src, ignore=_IGNORE)
            py = str(venv / "bin" / "python")
            subprocess.run([py, "-m", "ensurepip", "--default-pip"], check=True, capture_output=True)
            _pip("install", "--quiet", "--no-index", "--find-links", str(wheels),
                 str(lvh_src), str(plugin_src), "pytest", python=py)
            shutil.rmtree(src)
            (venv / ".complete").touch()
    # Keep the newest few.
    olds = sorted((p for p in VENVS.iterdir() if p.is_dir() and p != venv),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for old in olds[_KEEP_VENVS - 1:]:
        with FileLock(str(VENVS / f"{old.name}.lock")):
            shutil.rmtree(old, ignore_errors=True)
    for lock in VENVS.glob("*.lock"):  # of pruned venvs (old ones: a fresh one may be in use)
        try:
            if not (VENVS / lock.stem).exists() and time.time() - lock.stat().st_mtime > 3600:
                lock.unlink()
        except FileNotFoundError:
            pass
    venv.touch()
    return venv


@pytest.fixture(scope="module")
def venv() -> Path:
    return ensure_venv()


def run(venv: Path, *argv: str, cwd: Path | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    e["PATH"] = f"{venv / 'bin'}:{e.get('PATH', '')}"
    e.update(env or {})
    return subprocess.run(list(argv), cwd=cwd, env=e, capture_output=True, text=True, timeout=300)


def test_venv_is_isolated(venv, tmp_path):
    r = run(venv, str(venv / "bin" / "python"), "-c",
            "import lvh, lvh_plugin_ubuntu; print(lvh.__file__, lvh_plugin_ubuntu.__file__)", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(ROOT) not in r.stdout  # installed from wheels, not this checkout
    assert str(venv) in r.stdout


def test_the_plugins_own_tests_pass_in_the_venv(venv, tmp_path):
    """What a plugin author runs: their tests, on lvh.testing from an installed lvh."""
    tests = tmp_path / "plugin"
    shutil.copytree(PLUGIN, tests, ignore=_IGNORE)
    r = run(venv, str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
            "tests", cwd=tests)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout
    # lvh ships the mmdebstrap driver: the tests against the real one ran too.
    assert "skipped" not in r.stdout, r.stdout[-2000:]


def test_plugins_list_shows_it_with_its_version(venv, tmp_path):
    r = run(venv, "lvh", "plugins", "list", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    mine = {(p["kind"], p["name"]): p for p in json.loads(r.stdout) if p["distribution"] == "lvh-plugin-ubuntu"}
    assert mine[("rootfs", "ubuntu")]["version"] == "0.1.0"
    assert mine[("rootfs", "ubuntu")]["error"] is None
    assert mine[("hooks", "lvh-plugin-ubuntu")]["error"] is None
    table = run(venv, "lvh", "plugins", "list", cwd=tmp_path)
    [line] = [ln for ln in table.stdout.splitlines() if " ubuntu " in f" {ln} "]
    assert line.split()[:4] == ["rootfs", "ubuntu", "lvh-plugin-ubuntu", "0.1.0"]


CONF = """\
api_version: 1
images:
  - name: noble
    rootfs:
      provider: ubuntu
      suite: {suite}
      keyring: {keyring}
      packages: [iproute2]
    disk: {{formatter: mkfs, size: 2G, format: qcow2}}
"""


def EXPECTED_MMDEBSTRAP(tmp_path: Path) -> list[str]:
    """The command lvh's mmdebstrap driver runs for the CONF above, on this host."""
    root = os.geteuid() == 0
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    mirror = "http://archive.ubuntu.com/ubuntu" if arch == "amd64" else "http://ports.ubuntu.com/ubuntu-ports"
    return ["mmdebstrap", f"--mode={'root' if root else 'unshare'}",
            f"--format={'directory' if root else 'tar'}", "--variant=minbase", "--components=main,universe",
            f"--architectures={arch}", "--include=iproute2",
            f"--keyring={tmp_path / 'ubuntu-archive-keyring.gpg'}",
            "noble", "OUT/rootfs" if root else "OUT/rootfs.tar", mirror]


def write_conf(tmp_path: Path, suite: str = "noble", keyring: str = "ubuntu-archive-keyring.gpg") -> Path:
    (tmp_path / "ubuntu-archive-keyring.gpg").write_bytes(b"a keyring")
    conf = tmp_path / "conf.yaml"
    conf.write_text(CONF.format(suite=suite, keyring=keyring))
    return conf


def test_plan_shows_the_exact_mmdebstrap_command(venv, tmp_path):
    write_conf(tmp_path)
    r = run(venv, "lvh", "pipeline", "plan", "--json", "conf.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["stages"]
    [stage] = [s for s in plan if s["id"] == "image:noble/rootfs"]
    assert stage["driver"] == "ubuntu" and not stage["cached"]
    [cmd] = [c for c in stage["commands"] if Path(c[0]).name == "mmdebstrap"]
    assert cmd == EXPECTED_MMDEBSTRAP(tmp_path)
    human = run(venv, "lvh", "pipeline", "plan", "conf.yaml", cwd=tmp_path)
    assert human.returncode == 0, human.stderr
    assert f"image:noble/rootfs: $ {shlex.join(EXPECTED_MMDEBSTRAP(tmp_path))}" in human.stdout


def test_validate_accepts_it(venv, tmp_path):
    write_conf(tmp_path)
    r = run(venv, "lvh", "pipeline", "validate", "conf.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(("suite", "line", "message"), [
    ("nobel", 6, "images[0].rootfs.suite: Unknown Ubuntu suite 'nobel'. Did you mean 'noble'?"),
    ("bookworm", 6, "images[0].rootfs.suite: Unknown Ubuntu suite 'bookworm'."),
])
def test_bad_values_are_errors_with_file_and_line(venv, tmp_path, suite, line, message):
    write_conf(tmp_path, suite=suite)
    for cmd in ("validate", "plan"):
        r = run(venv, "lvh", "pipeline", cmd, "conf.yaml", cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert f"conf.yaml:{line} {message}" in r.stderr
        assert "Traceback" not in r.stderr


def test_unknown_option_is_located_with_the_options_it_takes(venv, tmp_path):
    conf = write_conf(tmp_path)
    conf.write_text(conf.read_text().replace("      packages:", "      component: [main]\n      packages:"))
    r = run(venv, "lvh", "pipeline", "validate", "conf.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert "conf.yaml:8 images[0].rootfs.component: Unknown field." in r.stderr
    assert "components" in r.stderr  # the hint lists what the driver takes


def test_missing_keyring_is_one_clear_error(venv, tmp_path):
    write_conf(tmp_path, keyring="/nonexistent/ubuntu-archive-keyring.gpg")
    for cmd in ("plan", "run"):
        r = run(venv, "lvh", "pipeline", cmd, "conf.yaml", cwd=tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "the Ubuntu archive keyring /nonexistent/ubuntu-archive-keyring.gpg does not exist" in r.stderr
        assert "apt-get install ubuntu-keyring" in r.stderr
        assert "Traceback" not in r.stderr
    # Nothing ran, nothing half-written.
    assert not list((tmp_path / "_data").glob("cache/*/*")) and not (tmp_path / "_data" / "failed").exists()


def test_doctor_reports_what_the_plugin_needs(venv, tmp_path):
    r = run(venv, "lvh", "doctor", "--json", cwd=tmp_path)
    reqs = {(q["driver"], q["requirement"]): q for q in json.loads(r.stdout)["requirements"]}
    mine = {k[1]: q for k, q in reqs.items() if k[0] == "rootfs:ubuntu"}
    # It composes the mmdebstrap driver, so it needs what that needs…
    assert mine["mmdebstrap"]["found"] == bool(shutil.which("mmdebstrap"))
    # …and Ubuntu's keyring, with how to get it.
    keyring = mine["ubuntu-keyring"]
    assert keyring["found"] == Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg").is_file()
    if not keyring["found"]:
        assert "apt-get install ubuntu-keyring" in keyring["hint"]
