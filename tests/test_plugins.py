"""Plugin loading: only the named driver is imported; missing, broken, duplicate and
incompatible drivers are loud errors naming the distribution."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from lvh.api import RootfsProvider
from lvh.plugins import DriverRegistry, PluginError, list_plugins


@pytest.fixture
def dists(tmp_path, monkeypatch):
    """Install throw-away distributions (dist-info + modules) on sys.path."""
    root = tmp_path / "site"
    root.mkdir()

    def make(dist: str, version: str, eps: dict[str, dict[str, str]], modules: dict[str, str]) -> None:
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = []
        for group, entries in eps.items():
            lines.append(f"[{group}]")
            lines += [f"{k} = {v}" for k, v in entries.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for name, src in modules.items():
            (root / f"{name}.py").write_text(textwrap.dedent(src))

    monkeypatch.syspath_prepend(str(root))
    # Each test's fake modules and entry points are new: forget the previous test's.
    for mod in ("goodmod", "brokenmod"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    from stevedore import _cache
    from stevedore.extension import ExtensionManager

    _cache._c._internal.clear()
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})
    return make


GOOD = """
from lvh.api import RootfsProvider
class Good(RootfsProvider):
    name = "good"
class OldApi(RootfsProvider):
    name = "old"
    api_version = 99
class NotADriver:
    pass
"""


def test_loads_only_the_named_driver(dists):
    dists("lvh-good", "1.2", {"lvh.rootfs": {"good": "goodmod:Good", "broken": "brokenmod:X"}},
          {"goodmod": GOOD, "brokenmod": "raise ImportError('libfoo.so missing')"})
    cls = DriverRegistry().driver_class("lvh.rootfs", "good")
    assert issubclass(cls, RootfsProvider) and cls.name == "good"
    assert "brokenmod" not in sys.modules  # the other driver was never imported


def test_broken_driver_is_an_error_naming_the_distribution(dists):
    dists("lvh-broken", "0.3", {"lvh.rootfs": {"broken": "brokenmod:X"}},
          {"brokenmod": "raise ImportError('libfoo.so missing')"})
    with pytest.raises(PluginError) as ei:
        DriverRegistry().driver_class("lvh.rootfs", "broken")
    assert "rootfs driver 'broken' (brokenmod:X, from lvh-broken 0.3) failed to import" in ei.value.message
    assert "libfoo.so missing" in ei.value.message
    assert ei.value.exit_code == 2


def test_duplicate_driver_names_both_distributions(dists):
    dists("lvh-a", "1.0", {"lvh.rootfs": {"dup": "goodmod:Good"}}, {"goodmod": GOOD})
    dists("lvh-b", "2.0", {"lvh.rootfs": {"dup": "goodmod:Good"}}, {})
    with pytest.raises(PluginError, match=r"registered more than once: goodmod:Good from lvh-\w 1\.0|2\.0"):
        DriverRegistry().driver_class("lvh.rootfs", "dup")


def test_missing_driver_suggests_a_close_name(dists):
    dists("lvh-good", "1.2", {"lvh.rootfs": {"good": "goodmod:Good"}}, {"goodmod": GOOD})
    with pytest.raises(PluginError) as ei:
        DriverRegistry().driver_class("lvh.rootfs", "goood")
    assert ei.value.message == "no rootfs driver named 'goood' is installed"
    assert ei.value.hint == "did you mean 'good'?"


def test_incompatible_api_version_and_wrong_type(dists):
    dists("lvh-old", "0.1", {"lvh.rootfs": {"old": "goodmod:OldApi", "notone": "goodmod:NotADriver"}},
          {"goodmod": GOOD})
    with pytest.raises(PluginError, match=r"targets plugin API 99; this lvh supports \[1\]"):
        DriverRegistry().driver_class("lvh.rootfs", "old")
    with pytest.raises(PluginError, match=r"is not a subclass of lvh.api.RootfsProvider"):
        DriverRegistry().driver_class("lvh.rootfs", "notone")


def test_list_plugins_reports_versions_and_errors(dists):
    dists("lvh-mixed", "4.5", {"lvh.rootfs": {"good": "goodmod:Good", "broken": "brokenmod:X"}},
          {"goodmod": GOOD, "brokenmod": "raise RuntimeError('boom')"})
    infos = {i.name: i for i in list_plugins(["lvh.rootfs"]) if i.distribution == "lvh-mixed"}
    assert infos["good"].version == "4.5" and infos["good"].error is None
    assert infos["good"].module == "goodmod:Good" and infos["good"].kind == "rootfs"
    assert "RuntimeError: boom" in (infos["broken"].error or "")
    json.dumps([i.as_dict() for i in infos.values()])


def test_stevedore_test_instance_style_registration():
    from tests.fakes import FakeRootfs

    reg = DriverRegistry(entry_points=False)
    reg.register("lvh.rootfs", "fake", FakeRootfs)
    d = reg.load("lvh.rootfs", "fake", {"suite": "sid", "packages": [], "fail": False, "sleep": 0})
    assert d.options["suite"] == "sid"


HOOKS = """
import click
from lvh.api import hookimpl

@click.command()
def hello():
    '''Say hello from a hook plugin.'''
    click.echo("hello from a plugin")

@hookimpl
def lvh_cli_commands(cli):
    cli.add_command(hello)
"""


def test_hook_plugin_adds_a_cli_command(dists, tmp_path):
    import os
    import subprocess

    dists("lvh-hello", "0.9", {"lvh.hooks": {"hello": "hellohooks"}}, {"hellohooks": HOOKS})
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    r = subprocess.run([sys.executable, "-m", "lvh.cli.main", "hello"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout == "hello from a plugin\n", r.stderr
    r = subprocess.run([sys.executable, "-m", "lvh.cli.main", "--help"], capture_output=True, text=True, env=env)
    assert "Say hello from a hook plugin." in r.stdout


def test_broken_hook_plugin_is_a_loud_error(dists, tmp_path):
    import os
    import subprocess

    dists("lvh-badhook", "0.1", {"lvh.hooks": {"bad": "badhooks"}}, {"badhooks": "import nonexistent_dep"})
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    r = subprocess.run([sys.executable, "-m", "lvh.cli.main", "plugins", "list", "--json"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0
    bad = next(p for p in json.loads(r.stdout) if p["name"] == "bad")
    assert bad["kind"] == "hooks" and "No module named 'nonexistent_dep'" in bad["error"]
    # Anything that needs the hooks refuses to run without them, loudly.
    (tmp_path / "empty.yaml").write_text("api_version: 1\n")
    r = subprocess.run([sys.executable, "-m", "lvh.cli.main", "pipeline", "plan", "empty.yaml"], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert r.returncode == 2
    assert "error: hook plugin 'bad' (badhooks, from lvh-badhook 0.1) failed to import" in r.stderr


def test_composed_driver_finds_its_base_in_the_registry_in_use(tmp_path):
    """A driver built on another (api.driver_class) sees the registry the config was loaded with."""
    from lvh.api import RootfsArtifact, Schema, driver_class, fields
    from lvh.config import load_data
    from lvh.engine import Engine
    from tests import fakes

    class Composed(RootfsProvider):
        name = "composed"

        class Options(Schema):
            flavour = fields.Str(load_default="x")

        def build(self, ctx) -> RootfsArtifact:
            base = driver_class("lvh.rootfs", "fake")
            return base(base.Options().load({"suite": self.options["flavour"]})).build(ctx)

    reg = fakes.registry()
    reg.register("lvh.rootfs", "composed", Composed)
    data = {"images": [{"name": "c", "rootfs": {"provider": "composed", "flavour": "trixie"},
                        "disk": {"formatter": "fakedisk"}}]}
    cfg = load_data(data, base_dir=tmp_path, registry=reg)
    with pytest.raises(PluginError):  # outside, the process-wide registry has no 'fake'
        driver_class("lvh.rootfs", "fake")
    summary = Engine(cfg, host=None).run()
    assert summary["ok"]
    disk = json.loads((tmp_path / "_data" / "images" / "c.raw").read_text())
    assert "etc/os-release" in disk["files"]
