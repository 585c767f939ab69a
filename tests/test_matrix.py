"""Matrix expansion (pure functions): combinations, names, ${{ matrix.X }} references,
include/exclude, errors with a location, and the GitHub Actions job matrix."""

from __future__ import annotations

import json

import pytest

from lvh.api import ConfigError
from lvh.matrix import expand_runs, github_matrix


def test_run_without_matrix_is_unchanged_and_copied():
    runs = [{"name": "smoke", "image": "base", "cmdline": ["quiet"]}]
    out = expand_runs(runs)
    assert out == runs and out[0] is not runs[0] and out[0]["cmdline"] is not runs[0]["cmdline"]


def test_kernel_by_image_expands_in_axis_order_with_names():
    out = expand_runs([{"name": "smoke", "runner": "microvm", "command": "uname -r",
                        "matrix": {"kernel": ["k61", "k66"], "image": ["base", "tools"]}}])
    assert [(r["name"], r["kernel"], r["image"]) for r in out] == [
        ("smoke-kernel=k61-image=base", "k61", "base"), ("smoke-kernel=k61-image=tools", "k61", "tools"),
        ("smoke-kernel=k66-image=base", "k66", "base"), ("smoke-kernel=k66-image=tools", "k66", "tools")]
    assert all("matrix" not in r and r["runner"] == "microvm" and r["command"] == "uname -r" for r in out)


def test_commands_axis_named_by_index_and_references_substituted():
    out = expand_runs([{"name": "t", "image": "base", "command": "cd /host && ${{ matrix.test }}",
                        "cmdline": ["lvh.case=${{matrix.test}}"],
                        "matrix": {"kernel": ["k61"], "test": ["make check", "ip link"]}}])
    assert [r["name"] for r in out] == ["t-kernel=k61-test=1", "t-kernel=k61-test=2"]
    assert [r["command"] for r in out] == ["cd /host && make check", "cd /host && ip link"]
    assert out[1]["cmdline"] == ["lvh.case=ip link"]
    assert "test" not in out[0]  # a free axis sets no run key


def test_command_axis_sets_the_command_and_whole_references_keep_types():
    out = expand_runs([{"name": "c", "image": "base", "cpus": "${{ matrix.n }}",
                        "matrix": {"command": ["true", "false"], "n": [1, 4]}}])
    assert [(r["command"], r["cpus"]) for r in out] == [("true", 1), ("true", 4), ("false", 1), ("false", 4)]
    assert out[0]["name"] == "c-command=true-n=1"


def test_include_and_exclude():
    out = expand_runs([{"name": "m", "matrix": {
        "kernel": ["k61", "k66"], "image": ["base", "tools"],
        "exclude": [{"kernel": "k61", "image": "tools"}],
        "include": [{"kernel": "k66", "image": "tools", "cpus": 4},
                    {"kernel": "bpf-next", "image": "tools"}]}}])
    got = {(r["kernel"], r["image"]): r for r in out}
    assert set(got) == {("k61", "base"), ("k66", "base"), ("k66", "tools"), ("bpf-next", "tools")}
    assert got[("k66", "tools")]["cpus"] == 4 and "cpus" not in got[("k66", "base")]
    assert got[("bpf-next", "tools")]["name"] == "m-kernel=bpf-next-image=tools"


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
    ([{"name": "a-kernel=x"}, {"name": "a", "matrix": {"kernel": ["x"]}}], "two runs are named", "runs[1]"),
    (["smoke"], "must be a mapping", "runs[0]"),
])
def test_errors_are_config_errors_with_a_path(runs, match, path):
    with pytest.raises(ConfigError, match=match) as ei:
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
        {"run": "smoke-kernel=k61-go=1.22", "image": "base", "kernel": "k61", "go": "1.22"},
        {"run": "smoke-kernel=k66-go=1.22", "image": "base", "kernel": "k66", "go": "1.22"},
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
