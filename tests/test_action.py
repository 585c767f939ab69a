"""action.yml, the composite GitHub Action: its YAML shape (required keys, every input used and
every reference declared, steps well-formed, inputs reach scripts only through env), its bash
scripts' syntax, and the two scripts that matter run for real: the pull step with the real
``lvh`` against a real registry, and the run step's exit-code reporting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lvh_oci import transfer

from lvh.api import DiskArtifact
from tests import registry_fixture
from tests.registry_fixture import make_disk, make_kernel_dir

registry = registry_fixture.registry
ACTION = Path(__file__).resolve().parent.parent / "action.yml"
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@pytest.fixture(scope="module")
def action() -> dict:
    return yaml.safe_load(ACTION.read_text())


def _steps(action: dict) -> list[dict]:
    return action["runs"]["steps"]


def _step(action: dict, sid: str) -> dict:
    (s,) = [s for s in _steps(action) if s.get("id") == sid]
    return s


def test_top_level_shape(action):
    for key in ("name", "description", "inputs", "outputs", "runs"):
        assert action.get(key), key
    assert action["runs"]["using"] == "composite"
    for name, spec in action["inputs"].items():
        assert re.match(r"^[a-z][a-z0-9-]*$", name) and spec.get("description"), name
        assert "default" in spec or spec.get("required"), f"input {name} has neither default nor required"
    for name, spec in action["outputs"].items():
        assert spec.get("description") and EXPR.search(str(spec.get("value"))), name


def test_steps_are_well_formed(action):
    ids = []
    for i, s in enumerate(_steps(action)):
        assert s.get("name"), f"step {i} has no name"
        assert ("uses" in s) != ("run" in s), f"step {s['name']}: exactly one of uses/run"
        if "run" in s:
            assert s.get("shell") == "bash", f"step {s['name']}: composite run steps need shell"
        else:
            assert re.match(r"^[\w.-]+/[\w.-]+@v\d+", s["uses"]), f"{s['uses']} is not pinned to a version"
        assert set(s) <= {"name", "id", "if", "uses", "with", "run", "shell", "env", "working-directory",
                          "continue-on-error"}, s.keys()
        if "id" in s:
            assert s["id"] not in ids
            ids.append(s["id"])
    # every steps.X reference names a step that comes before it (or an output of the action)
    seen: list[str] = []
    for s in _steps(action):
        for expr in EXPR.findall(yaml.safe_dump(s)):
            for ref in re.findall(r"steps\.([\w-]+)\.outputs", expr):
                assert ref in seen, f"{s['name']} uses steps.{ref} before it runs"
        if "id" in s:
            seen.append(s["id"])
    for out in action["outputs"].values():
        for ref in re.findall(r"steps\.([\w-]+)\.outputs\.([\w-]+)", out["value"]):
            assert ref[0] in ids
            script = _step(action, ref[0])["run"]
            assert f"{ref[1]}=" in script, f"step {ref[0]} never writes output {ref[1]}"


def test_every_input_is_used_and_every_reference_declared(action):
    text = yaml.safe_dump(action["runs"]) + yaml.safe_dump(action["outputs"])
    used = set(re.findall(r"inputs\.([\w-]+)", text))
    assert used == set(action["inputs"]), (set(action["inputs"]) - used, used - set(action["inputs"]))


def test_inputs_reach_scripts_only_through_env(action):
    for s in _steps(action):
        if "run" in s:
            assert not EXPR.search(s["run"]), f"step {s['name']} interpolates an expression into its script"


def test_scripts_are_valid_bash(action, tmp_path):
    for s in _steps(action):
        if "run" in s:
            f = tmp_path / "step.sh"
            f.write_text(s["run"])
            p = subprocess.run(["bash", "-n", str(f)], capture_output=True, text=True)
            assert p.returncode == 0, (s["name"], p.stderr)


def _env(step: dict, values: dict[str, str], tmp: Path, path_dirs: list[Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    for k, v in (step.get("env") or {}).items():
        m = EXPR.fullmatch(str(v))
        env[k] = values.get(m.group(1), "") if m else str(v)
    env["GITHUB_OUTPUT"] = str(tmp / "github_output")
    env["RUNNER_TEMP"] = str(tmp)
    env["PATH"] = os.pathsep.join([*map(str, path_dirs), env.get("PATH", "")])
    return env


def _outputs(tmp: Path) -> dict[str, str]:
    f = tmp / "github_output"
    return dict(line.split("=", 1) for line in f.read_text().splitlines()) if f.exists() else {}


@pytest.mark.e2e
def test_pull_step_pulls_with_the_real_lvh(action, registry, tmp_path):
    img = make_disk(tmp_path / "src", "base")
    transfer.push(DiskArtifact(root=img.parent, path=img, format="qcow2", size=64 * 1024**2),
                  f"{registry.host}/action/img:v1", name="base")
    kdir = make_kernel_dir(tmp_path / "k", "6.1.7")
    transfer.push(transfer.kernel_from_dir(kdir), f"{registry.host}/action/kernel:6.1-main", name="6.1")
    step = _step(action, "pull")
    values = {"inputs.image": f"{registry.host}/action/img:v1",
              "inputs.kernel": f"{registry.host}/action/kernel:6.1-main",
              "inputs.workdir": str(tmp_path / "_lvh"), "inputs.platform": "", "inputs.insecure": "false",
              "inputs.verbose": "false"}
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "lvh").exists():
        pytest.skip("the lvh console script is not installed beside this python")
    p = subprocess.run(["bash", "-c", step["run"]], env=_env(step, values, tmp_path, [venv_bin]),
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = _outputs(tmp_path)
    assert Path(out["image-path"]).read_bytes() == img.read_bytes()
    assert out["kernel-path"].endswith("boot/vmlinuz-6.1.7") and Path(out["kernel-path"]).is_file()


@pytest.mark.parametrize("rc", [0, 7])
def test_run_step_reports_the_exit_code(action, tmp_path, rc):
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "lvh").write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/argv"\nexit {rc}\n')
    (stub / "lvh").chmod(0o755)
    step = _step(action, "run")
    values = {"inputs.cmd": "make -C /host test; echo 'quoted $HOME'", "inputs.config": "", "inputs.run": "",
              "inputs.runner": "microvm", "inputs.cpu": "2", "inputs.mem": "1G", "inputs.host-mount": "/src",
              "inputs.workdir": "_lvh", "inputs.verbose": "false",
              "steps.pull.outputs.image-path": "_lvh/images/base.qcow2",
              "steps.pull.outputs.kernel-path": "_lvh/kernels/6.1-main/boot/vmlinuz"}
    p = subprocess.run(["bash", "-c", step["run"]], env=_env(step, values, tmp_path, [stub]),
                       capture_output=True, text=True)
    assert p.returncode == rc
    assert _outputs(tmp_path)["exit-code"] == str(rc)
    argv = (tmp_path / "argv").read_text().strip()
    assert argv.startswith("run --runner microvm --image _lvh/images/base.qcow2 --cpu 2 --mem 1G --host-mount /src")
    assert "--kernel _lvh/kernels/6.1-main/boot/vmlinuz" in argv
    assert argv.endswith("-- make -C /host test; echo 'quoted $HOME'")  # passed as one argument, unexpanded


def test_run_step_pipeline_mode(action, tmp_path):
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "lvh").write_text(f'#!/bin/sh\nprintf "%s|" "$@" > "{tmp_path}/argv"\nexit 0\n')
    (stub / "lvh").chmod(0o755)
    step = _step(action, "run")
    values = {"inputs.config": "ci.yaml", "inputs.run": "smoke-k61-base", "inputs.workdir": "_lvh",
              "inputs.verbose": "true"}
    p = subprocess.run(["bash", "-c", step["run"]], env=_env(step, values, tmp_path, [stub]),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "argv").read_text() == "-v|pipeline|run|ci.yaml|--workdir|_lvh|--only|smoke-k61-base|"


def test_run_step_without_image_or_cmd_fails_clearly(action, tmp_path):
    step = _step(action, "run")
    p = subprocess.run(["bash", "-c", step["run"]], env=_env(step, {}, tmp_path, []), capture_output=True,
                       text=True)
    assert p.returncode == 2 and "needs 'image' and 'cmd'" in p.stdout
    assert _outputs(tmp_path)["exit-code"] == "2"



def test_install_step_defaults_to_this_revision(action, tmp_path):
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/pip"\n')
    (stub / "lvh").write_text("#!/bin/sh\necho lvh 0.1.0\n")
    for f in stub.iterdir():
        f.chmod(0o755)
    (step,) = [s for s in _steps(action) if s["name"] == "Install lvh"]
    for spec, want in (("", "/action/checkout"), ("lvh==0.1.0", "lvh==0.1.0")):
        (tmp_path / "pip").unlink(missing_ok=True)
        env = _env(step, {"inputs.lvh-version": spec}, tmp_path, [stub])
        env["GITHUB_ACTION_PATH"] = "/action/checkout"
        p = subprocess.run(["bash", "-c", step["run"]], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "pip").read_text().splitlines()[-1] == f"-m pip install --quiet {want}"
