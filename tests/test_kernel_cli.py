"""``lvh kernels`` end to end (the real CLI in a subprocess) over D/kernels.json, and the
kernels.json ⇄ pipeline conversion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvh import upstream_kernels as uk
from lvh.api import ConfigError, UserError
from tests.kernels import SMALL_KERNEL_NAME, SMALL_KERNEL_OPTIONS, SOURCE, cache_root
from tests.test_kernel_source import commit, git, upstream  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GROUPS = ["basic", "bpf", "virtio", "minimize", "namespaces"]
needs_source = pytest.mark.skipif(not (os.path.exists(SOURCE) and shutil.which("make") and shutil.which("pahole")),
                                  reason=f"needs {SOURCE} and make/pahole")


@pytest.fixture
def lvh(tmp_path):
    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
        return subprocess.run([sys.executable, "-m", "lvh.cli.main", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)
    return run


def one_line_error(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1, r.stderr
    return errs[0]


HOOK_MODULE = """\
import click
from lvh.api import hookimpl


@click.command("frobnicate")
@click.argument("name")
def frob(name):
    \"\"\"Frobnicate a kernel.\"\"\"
    click.echo(f"frobnicated {name}")


@hookimpl
def lvh_cli_commands(cli):
    cli.get_command(None, "kernels").add_command(frob)
"""


def test_a_hook_plugin_adds_commands_to_the_kernels_group(tmp_path):
    site = tmp_path / "site"
    info = site / "kpush-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kpush\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lvh.hooks]\nkpush = kpushhooks\n")
    (site / "kpushhooks.py").write_text(HOOK_MODULE)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{site}")
    r = subprocess.run([sys.executable, "-m", "lvh.cli.main", "k", "frobnicate", "k61"], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "frobnicated k61\n", r.stderr
    r = subprocess.run([sys.executable, "-m", "lvh.cli.main", "kernels", "--help"], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert "Frobnicate a kernel." in r.stdout and "raw_configure" in r.stdout


def test_init_add_list_remove(lvh, tmp_path):
    from lvh_kernel.groups import group_options

    r = lvh("kernels", "init", "--dir", "D")
    assert r.returncode == 0, r.stderr
    kf = json.loads((tmp_path / "D" / "kernels.json").read_text())
    assert kf == {"kernels": [], "common_opts": group_options(DEFAULT_GROUPS)}
    assert "already exists" in one_line_error(lvh("kernels", "init", "--dir", "D"))
    assert lvh("kernels", "init", "--dir", "D", "--force", "--config-groups", "virtio").returncode == 0
    assert json.loads((tmp_path / "D" / "kernels.json").read_text())["common_opts"] == group_options(["virtio"])

    r = lvh("k", "add", "--dir", "D", "bpf-next", "git://git.kernel.org/pub/scm/linux/kernel/git/bpf/bpf-next.git",
            "--config-groups", "bpf,namespaces", "--just-print-config")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"name": "bpf-next",
                                    "url": "git://git.kernel.org/pub/scm/linux/kernel/git/bpf/bpf-next.git",
                                    "opts": group_options(["bpf", "namespaces"])}
    assert json.loads((tmp_path / "D" / "kernels.json").read_text())["kernels"] == []  # only printed

    r = lvh("kernel", "add", "--dir", "D", "k61", SOURCE)
    assert r.returncode == 0, r.stderr
    entry = json.loads((tmp_path / "D" / "kernels.json").read_text())["kernels"][0]
    assert entry["opts"] == group_options(DEFAULT_GROUPS)  # upstream's default groups
    assert "already exists" in one_line_error(lvh("k", "add", "--dir", "D", "k61", SOURCE))
    assert "unknown config group 'bfp'" in one_line_error(
        lvh("k", "add", "--dir", "D", "x", SOURCE, "--config-groups", "bfp"))
    assert "does not exist" in one_line_error(lvh("k", "add", "--dir", "D", "x", "/no/such/linux"))
    assert "invalid kernel name" in one_line_error(lvh("k", "add", "--dir", "D", "a/b", SOURCE))
    assert "lvh kernels init" in lvh("k", "list", "--dir", "E").stderr  # the hint

    r = lvh("k", "list", "--dir", "D", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert [k["name"] for k in listed["kernels"]] == ["k61"] and listed["kernels"][0]["built"] is None
    assert "k61" in lvh("kernels", "list", "--dir", "D").stdout

    assert "is not in" in one_line_error(lvh("k", "remove", "--dir", "D", "nope"))
    assert lvh("k", "remove", "--dir", "D", "k61").returncode == 0
    assert json.loads((tmp_path / "D" / "kernels.json").read_text())["kernels"] == []


def test_add_fetch_and_refetch_a_local_git_repo(lvh, tmp_path, upstream):  # noqa: F811
    assert lvh("k", "init", "--dir", "D").returncode == 0
    r = lvh("k", "add", "--dir", "D", "feat", f"file://{upstream}#feature", "--fetch")
    assert r.returncode == 0, r.stderr
    tree = tmp_path / "D" / "state" / "make" / "git" / "trees" / "feat"
    assert (tree / "feature.c").exists()
    git("checkout", "-q", "feature", cwd=upstream)
    new = commit(upstream, "feature.c", "f2")
    r = lvh("k", "fetch", "--dir", "D", "feat")
    assert r.returncode == 0, r.stderr
    assert new in r.stdout and (tree / "feature.c").read_text() == "f2"
    # remove takes the worktree with it (upstream removed the wrong path)
    assert lvh("k", "remove", "--dir", "D", "feat").returncode == 0
    assert not tree.exists()


def test_add_fetch_failure_leaves_kernels_json_as_it_was(lvh, tmp_path):
    assert lvh("k", "init", "--dir", "D").returncode == 0
    before = (tmp_path / "D" / "kernels.json").read_text()
    err = one_line_error(lvh("k", "add", "--dir", "D", "bad", "file:///no/such/repo.git#main", "--fetch"), 1)
    assert "git fetch failed for file:///no/such/repo.git (branch main)" in err
    assert (tmp_path / "D" / "kernels.json").read_text() == before


def test_unknown_kernel_in_every_command(lvh):
    assert lvh("k", "init", "--dir", "D").returncode == 0
    for cmd in ("fetch", "configure", "build"):
        assert "kernel 'ghost' is not in" in one_line_error(lvh("k", cmd, "--dir", "D", "ghost"))


# ------------------------------------------------------------------------------------------
# kernels.json <-> pipeline


def test_upstream_kernels_json_to_pipeline(tmp_path):
    (tmp_path / "kernels.json").write_text(json.dumps({
        "kernels": [{"name": "bpf-next", "url": "git://git.kernel.org/bpf-next.git#master",
                     "opts": [["--enable", "CONFIG_NETKIT"]], "extra_make_args": ["W=1"]},
                    {"name": "local", "url": "linux", "base": "tinyconfig", "config_groups": ["microvm"]}],
        "common_opts": [["--enable", "CONFIG_BPF"], ["--disable", "CONFIG_DRM"]]}))
    kf = uk.load(tmp_path)
    p = uk.to_pipeline(kf, tmp_path, names=["bpf-next", "local"], arch="arm64")
    assert p["workdir"] == str(tmp_path.resolve())
    k0, k1 = p["kernels"]
    assert k0 == {"name": "bpf-next", "builder": "make", "source": "git://git.kernel.org/bpf-next.git#master",
                  "base": "defconfig", "options": [["--enable", "CONFIG_BPF"], ["--disable", "CONFIG_DRM"],
                                                   ["--enable", "CONFIG_NETKIT"]],
                  "make_args": ["W=1"], "arch": "arm64"}
    assert k1["base"] == "tinyconfig" and k1["config_groups"] == ["microvm"]
    back = uk.from_pipeline({"kernels": [{**k0, "options": k0["options"][2:]}, k1]})
    assert back.kernels[0] == {"name": "bpf-next", "url": k0["source"], "opts": [["--enable", "CONFIG_NETKIT"]],
                               "extra_make_args": ["W=1"], "arch": "arm64"}
    # the config loader accepts what to_pipeline makes
    from lvh.config import load_data

    cfg = load_data(uk.to_pipeline(kf, tmp_path, names=["bpf-next"]), source="kernels.json", base_dir=tmp_path)
    assert list(cfg.kernels) == ["bpf-next"]


@pytest.mark.parametrize("content, match", [
    ("{", "not valid JSON"),
    ('{"kernels": [{"name": "a"}]}', "needs a 'url'"),
    ('{"kernels": [{"name": "a", "url": "x", "colour": 1}]}', "unknown key"),
    ('{"kernels": [{"name": "a", "url": "x"}, {"name": "a", "url": "y"}]}', "listed twice"),
    ('{"kernel": []}', "unknown key"),
])
def test_bad_kernels_json(tmp_path, content, match):
    (tmp_path / "kernels.json").write_text(content)
    with pytest.raises(ConfigError, match=match):
        uk.load(tmp_path)


def test_missing_kernels_json(tmp_path):
    with pytest.raises(UserError, match=r"no kernels\.json") as e:
        uk.load(tmp_path)
    assert "lvh kernels init" in e.value.hint


# ------------------------------------------------------------------------------------------
# the real thing: configure, raw_configure and build through the engine


def small_kernels_dir(tmp_path: Path) -> Path:
    """D with the small kernel's entry; D/state/make is the shared test state (kept trees)."""
    d = tmp_path / "D"
    (d / "state").mkdir(parents=True)
    (d / "state" / "make").symlink_to(cache_root() / "kernel" / "state")
    o = SMALL_KERNEL_OPTIONS
    uk.save(d, uk.KernelsFile(kernels=[{"name": SMALL_KERNEL_NAME, "url": o["source"], "base": o["base"],
                                        "config_groups": o["config_groups"], "opts": o["options"]}]))
    return d


@pytest.mark.e2e
@needs_source
def test_build_through_the_engine_then_cached(lvh, tmp_path):
    from tests.kernels import small_kernel

    version = small_kernel().version
    d = small_kernels_dir(tmp_path)
    r = lvh("k", "build", "--dir", "D", SMALL_KERNEL_NAME)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "built" in r.stdout
    link = d / "kernels" / SMALL_KERNEL_NAME
    assert (link / "boot" / f"vmlinuz-{version}").exists()
    assert (link / "lib" / "modules" / version / "modules.dep").exists()
    r = lvh("k", "build", "--dir", "D", SMALL_KERNEL_NAME, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [s["status"] for s in json.loads(r.stdout)["stages"]] == ["cached"]
    listed = json.loads(lvh("k", "list", "--dir", "D", "--json").stdout)
    assert listed["kernels"][0]["built"] == version
    r = lvh("k", "configure", "--dir", "D", SMALL_KERNEL_NAME)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3 option(s) did not take" in r.stdout  # the bpf group's tracing/LSM options
    assert "CONFIG_BPF_LSM=y (group bpf) did not take" in r.stderr


@pytest.mark.e2e
@needs_source
def test_raw_configure_in_place_with_and_without_a_name(lvh, tmp_path):
    from tests.kernels import small_kernel

    small_kernel()  # the source is extracted
    src = next((cache_root() / "kernel" / "state" / "src").glob("tar-*"))
    tree = tmp_path / "linux"
    subprocess.run(["cp", "-al", str(src), str(tree)], check=True)  # hard links: cheap, and make
    d = small_kernels_dir(tmp_path)                                   # only adds files in-tree
    uk.save(d, uk.KernelsFile(kernels=uk.load(d).kernels, common_opts=[["--enable", "CONFIG_BPF_SYSCALL"]]))
    r = lvh("k", "raw_configure", "--dir", "D", str(tree))  # upstream crashed without a name
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = (tree / ".config").read_text().splitlines()
    assert "CONFIG_BPF_SYSCALL=y" in cfg and "CONFIG_PCI=y" in cfg  # defconfig + the common opts
    r = lvh("k", "raw_configure", "--dir", "D", str(tree), SMALL_KERNEL_NAME)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = (tree / ".config").read_text().splitlines()
    assert "CONFIG_DUMMY=m" in cfg and "CONFIG_VIRTIO_MMIO=y" in cfg and "CONFIG_PCI=y" in cfg
    assert not (src / ".config").exists()
