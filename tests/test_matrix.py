"""Matrix expansion (pure functions): combinations, names, ${{ matrix.X }} references,
include/exclude, errors with a location, and the GitHub Actions job matrix."""

from __future__ import annotations

import json

import pytest

from lvh.matrix import MatrixError, expand_runs, github_matrix


def test_run_without_matrix_is_unchanged_and_copied():
    runs = [{"name": "smoke", "image": "base", "cmdline": ["quiet"]}]
    out = expand_runs(runs)
    assert out == runs and out[0] is not runs[0] and out[0]["cmdline"] is not runs[0]["cmdline"]


def test_kernel_by_image_expands_in_axis_order_with_names():
    out = expand_runs([{"name": "smoke", "runner": "microvm", "command": "uname -r",
                        "matrix": {"kernel": ["k61", "k66"], "image": ["base", "tools"]}}])
    assert [(r["name"], r["kernel"], r["image"]) for r in out] == [
        ("smoke-k61-base", "k61", "base"), ("smoke-k61-tools", "k61", "tools"),
        ("smoke-k66-base", "k66", "base"), ("smoke-k66-tools", "k66", "tools")]
    assert all("matrix" not in r and r["runner"] == "microvm" and r["command"] == "uname -r" for r in out)


def test_commands_axis_named_by_index_and_references_substituted():
    out = expand_runs([{"name": "t", "image": "base", "command": "cd /host && ${{ matrix.test }}",
                        "cmdline": ["lvh.case=${{matrix.test}}"],
                        "matrix": {"kernel": ["k61"], "test": ["make check", "ip link"]}}])
    assert [r["name"] for r in out] == ["t-k61-test1", "t-k61-test2"]
    assert [r["command"] for r in out] == ["cd /host && make check", "cd /host && ip link"]
    assert out[1]["cmdline"] == ["lvh.case=ip link"]
    assert "test" not in out[0]  # a free axis sets no run key


def test_command_axis_sets_the_command_and_whole_references_keep_types():
    out = expand_runs([{"name": "c", "image": "base", "cpus": "${{ matrix.n }}",
                        "matrix": {"command": ["true", "false"], "n": [1, 4]}}])
    assert [(r["command"], r["cpus"]) for r in out] == [("true", 1), ("true", 4), ("false", 1), ("false", 4)]
    assert out[0]["name"] == "c-true-1"


def test_include_and_exclude():
    out = expand_runs([{"name": "m", "matrix": {
        "kernel": ["k61", "k66"], "image": ["base", "tools"],
        "exclude": [{"kernel": "k61", "image": "tools"}],
        "include": [{"kernel": "k66", "image": "tools", "cpus": 4},
                    {"kernel": "bpf-next", "image": "tools"}]}}])
    got = {(r["kernel"], r["image"]): r for r in out}
    assert set(got) == {("k61", "base"), ("k66", "base"), ("k66", "tools"), ("bpf-next", "tools")}
    assert got[("k66", "tools")]["cpus"] == 4 and "cpus" not in got[("k66", "base")]
    assert got[("bpf-next", "tools")]["name"] == "m-bpf-next-tools"


def test_scalar_axis_is_one_value():
    assert [r["kernel"] for r in expand_runs([{"name": "s", "matrix": {"kernel": "k61"}}])] == ["k61"]


@pytest.mark.parametrize("runs, match, path", [
    ([{"name": "a", "matrix": ["k61"]}], "must be a mapping", "runs[0].matrix"),
    ([{"name": "a", "matrix": {"kernel": []}}], "no values", "runs[0].matrix.kernel"),
    ([{"name": "a", "command": "${{ matrix.nope }}", "matrix": {"kernel": ["x"]}}], "names no axis",
     "runs[0].command"),
    ([{"name": "a", "matrix": {"kernel": ["x"], "exclude": [{"kernel": "x"}]}}], "no runs", "runs[0].matrix"),
    ([{"name": "a", "matrix": {"kernel": ["x"], "exclude": [{"colour": "x"}]}}], "do not exist",
     "runs[0].matrix.exclude"),
    ([{"name": "a-x"}, {"name": "a", "matrix": {"kernel": ["x"]}}], "two runs are named", "runs[1]"),
    (["smoke"], "must be a mapping", "runs[0]"),
])
def test_errors_are_config_errors_with_a_path(runs, match, path):
    with pytest.raises(MatrixError, match=match) as ei:
        expand_runs(runs)
    assert ei.value.path == path and ei.value.hint


def test_github_matrix_has_one_include_per_run():
    cfg = {"runs": [
        {"name": "plain", "image": "base"},
        {"name": "smoke", "image": "base", "matrix": {"kernel": ["k61", "k66"], "go": ["1.22"]}},
    ]}
    m = github_matrix(cfg)
    assert m == {"include": [
        {"run": "plain", "image": "base"},
        {"run": "smoke-k61-1.22", "image": "base", "kernel": "k61", "go": "1.22"},
        {"run": "smoke-k66-1.22", "image": "base", "kernel": "k66", "go": "1.22"},
    ]}
    json.dumps(m)  # what `lvh pipeline matrix --format github` prints


def test_github_matrix_accepts_loaded_config_objects():
    class Run:
        def __init__(self, name, image):
            self.name, self.image, self.kernel = name, image, None

    class Img:
        name = "base"

    class Cfg:
        runs = [Run("a", Img())]

    assert github_matrix(Cfg()) == {"include": [{"run": "a", "image": "base"}]}


def test_names_follow_the_config_name_rules():
    import re

    long = "x" * 40
    out = expand_runs([{"name": "smoke", "matrix": {"kernel": [long, long + "y"], "image": ["a/b", "c d"]}}])
    names = [r["name"] for r in out]
    assert all(re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", n) for n in names), names
    assert len(set(names)) == 4 and "smoke-kernel1-image2" in names


def test_the_config_loader_expands_a_matrix(tmp_path):
    from lvh.api import Runner
    from lvh.config import load_config
    from lvh.plugins import DriverRegistry

    class FakeMicrovm(Runner):  # the config loader needs a runner class; nothing is booted
        name = "microvm"

    registry = DriverRegistry()
    registry.register("lvh.runner", "microvm", FakeMicrovm)

    conf = tmp_path / "conf.yaml"
    conf.write_text("""api_version: 1
kernels:
  - {name: k61, builder: oci, ref: "127.0.0.1:1/kernels:6.1-main"}
  - {name: k66, builder: oci, ref: "127.0.0.1:1/kernels:6.6-main"}
runs:
  - name: smoke
    runner: microvm
    kernel: k61
    command: "echo ${{ matrix.word }}"
    matrix: {kernel: [k61, k66], word: [hi]}
""")
    cfg = load_config(conf, registry=registry)
    assert sorted(cfg.runs) == ["smoke-k61-hi", "smoke-k66-hi"]
    assert cfg.runs["smoke-k66-hi"].command == "echo hi"
    gm = github_matrix(cfg)["include"]
    assert [e["run"] for e in gm] == ["smoke-k61-hi", "smoke-k66-hi"]
    assert [e["kernel"] for e in gm] == ["k61", "k66"]
