"""The docs cannot drift: docs/config.md is what `python -m lvh.docgen` prints, and the code in
docs/plugins.md runs (its examples are executed against lvh.api and lvh.testing)."""

from __future__ import annotations

import importlib.metadata as md
import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lvh import api, docgen, hookspecs
from lvh.api import Schema, fields, validate
from lvh.testing import FakeExecutor, make_context, registered_drivers

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_MD = ROOT / "docs" / "plugins.md"
CONFIG_MD = ROOT / "docs" / "config.md"


# -- docs/config.md -----------------------------------------------------------------------------


def test_config_md_is_generated_from_the_schemas():
    generated = docgen.generate()
    assert CONFIG_MD.read_text() == generated, (
        "docs/config.md is out of date: run  python -m lvh.docgen > docs/config.md")


def test_config_md_documents_every_builtin_driver():
    text = CONFIG_MD.read_text()
    for group, base in api.DRIVER_GROUPS.items():
        key = docgen.DRIVER_KEY[base.kind][0]
        for ep in md.entry_points(group=group):
            if ep.dist is not None and ep.dist.metadata["Name"] == "lvh":
                assert f"### `{key}: {ep.name}`" in text


class _Inner(Schema):
    """An inner thing."""

    depth = fields.Int(load_default=3)


class _Sample(Schema):
    name = fields.Str(required=True, metadata={"description": "what it is | called"})
    size = api.Size(load_default="2G")
    mode = fields.Str(load_default="fast", validate=validate.OneOf(["fast", "slow"]))
    count = fields.Int(validate=validate.Range(min=1, max=8))
    tags = fields.List(fields.Str(validate=validate.Length(min=1)), load_default=list)
    flag = fields.Bool(load_default=True)
    empty = fields.Str(load_default="")
    inner = fields.Nested(_Inner)


def test_schema_table_renders_types_defaults_and_constraints():
    rows, nested = docgen.schema_table(_Sample)
    text = "\n".join(rows)
    assert "| `name` | string | **required** | what it is \\| called |" in text
    assert "| `size` | size (`2G`, `512M`) | `2G` |  |" in text
    assert "| `mode` | string | `fast` | one of: `fast`, `slow` |" in text
    assert "| `count` | integer |  | 1 to 8 |" in text
    assert "| `tags` | list of string | `[]` | each not empty |" in text
    assert "| `flag` | boolean | `true` |  |" in text
    assert '| `empty` | string | `""` |  |' in text
    assert "| `inner` | mapping (below) |  |  |" in text
    assert nested == [("inner", _Inner)]


def test_lenient_lists_drivers_that_fail_to_load():
    def load(ep):
        raise ImportError("boom")

    text = docgen.generate(strict=False, load=load)
    assert "## Not documented" in text and "ImportError: boom" in text
    if any(True for g in api.DRIVER_GROUPS for _ in md.entry_points(group=g)):
        with pytest.raises(docgen.DocgenError, match="failed to load"):
            docgen.generate(strict=True, load=load)


def test_docgen_cli_writes_the_file(tmp_path):
    out = tmp_path / "config.md"
    r = subprocess.run([sys.executable, "-m", "lvh.docgen", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == docgen.generate()
    assert not list(tmp_path.glob("*.tmp"))


# -- docs/plugins.md ----------------------------------------------------------------------------


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", PLUGINS_MD.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def examples() -> dict:
    ns: dict = {"__name__": "plugins_md_examples"}
    for code in _blocks("python"):
        exec(compile(code, str(PLUGINS_MD), "exec"), ns)
    return ns


def test_plugins_md_entry_point_groups_are_the_real_ones():
    text = PLUGINS_MD.read_text()
    documented = set(re.findall(r"^\| `(lvh\.[a-z]+)`", text, flags=re.M))
    assert documented == {*api.DRIVER_GROUPS, "lvh.hooks"}
    [toml] = _blocks("toml")
    eps = tomllib.loads(toml)["project"]["entry-points"]
    assert set(eps) <= documented


def test_plugins_md_lists_every_hook():
    text = PLUGINS_MD.read_text()
    specs = {n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("lvh_")}
    listed = set(re.findall(r"^\| `(lvh_[a-z_]+)\(", text, flags=re.M))
    listed |= set(re.findall(r"/ `(lvh_[a-z_]+)\(", text))
    assert listed == specs


def test_plugins_md_tarball_example(examples, tmp_path):
    examples["test_tarball_copies"](tmp_path)
    reqs = examples["TarballProvider"].check(api.HostInfo(arch="x86_64", cpus=1, kvm=False))
    assert reqs[0].name == "tar" and reqs[0].found
    ctx = make_context(tmp_path / "missing")
    drv = examples["TarballProvider"](examples["TarballOptions"]().load({"path": "nope.tar"}))
    with pytest.raises(api.UserError, match="no such tarball"):
        drv.build(ctx)


def test_plugins_md_drivers_are_valid(examples, tmp_path):
    for name, base in [("TarballProvider", api.RootfsProvider), ("RawFormatter", api.DiskFormatter),
                       ("MotdCustomizer", api.Customizer), ("EchoRunner", api.Runner),
                       ("UbuntuLike", api.RootfsProvider)]:
        cls = examples[name]
        assert issubclass(cls, base) and cls.api_version in api.SUPPORTED_API_VERSIONS
        opts = {"TarballProvider": {"path": "x"}, "MotdCustomizer": {"text": "hi"}}.get(name, {})
        cls.Options().load(opts)


def test_plugins_md_formatter_example(examples, tmp_path):
    fake = FakeExecutor()
    ctx = make_context(tmp_path, executor=fake)
    fmt = examples["RawFormatter"](examples["RawOptions"]().load({"size": "64M"}))
    rootfs = api.RootfsArtifact(root=tmp_path, path=tmp_path / "tree", format="dir")
    disk = fmt.build(ctx, rootfs)
    assert fake.argvs[-1][:2] == ["mke2fs", "-q"] and fake.argvs[-1][-1] == "65536k"
    assert disk.size == 64 * 1024**2
    child = fmt.derive(ctx, disk)
    assert fake.argvs[-1][:2] == ["qemu-img", "create"] and child.backing == disk.path


def test_plugins_md_customizer_example(examples, tmp_path):
    ctx = make_context(tmp_path)
    c = examples["MotdCustomizer"](examples["MotdOptions"]().load({"text": "hello", "actions": [
        {"type": "append-line", "file": "/etc/motd", "line": "and more"}]}))
    out = c.customize(ctx, api.RootfsArtifact(root=tmp_path, path=tmp_path / "tree", format="dir"))
    assert (out.path / "etc" / "motd").read_text() == "hello\nand more\n"
    assert ctx.executor.argvs[0][:2] == ["cp", "-a"]
    other = examples["MotdCustomizer"](examples["MotdOptions"]().load(
        {"text": "x", "actions": [{"type": "mkdir", "dir": "/srv"}]}))
    with pytest.raises(api.UserError, match="cannot mkdir"):
        other.customize(make_context(tmp_path / "2"), api.RootfsArtifact(root=tmp_path, path=tmp_path, format="dir"))


def test_plugins_md_runner_example_really_runs(examples, tmp_path):
    ctx = make_context(tmp_path, real=True)
    r = examples["EchoRunner"]().run(ctx, api.RunSpec(name="t", command="exit 3"))
    assert r.status == "exited" and r.exit_code == 3


def test_plugins_md_composition_example(examples, lvh_drivers, tmp_path):
    seen = {}

    class StandIn(api.RootfsProvider):
        name = "mmdebstrap"

        class Options(Schema):
            suite = fields.Str()
            mirror = fields.Str()
            components = fields.List(fields.Str())

        def describe(self, ctx, *inputs):
            seen.update(self.options)
            return [["mmdebstrap", self.options["suite"], "OUT", self.options["mirror"]]]

    lvh_drivers.register("lvh.rootfs", "mmdebstrap", StandIn)
    cmds = examples["UbuntuLike"]().describe(make_context(tmp_path, planning=True))
    assert cmds == [["mmdebstrap", "noble", "OUT", "http://archive.ubuntu.com/ubuntu"]]
    assert seen["components"] == ["main", "universe"]
    with registered_drivers({}):
        pass


def test_plugins_md_hook_example(examples, tmp_path, monkeypatch):
    disk = api.DiskArtifact(root=tmp_path, meta={"distro": "ubuntu"})
    assert examples["lvh_kernel_cmdline"](api.RunSpec(name="r", image=disk)) == ["net.ifnames=0"]
    monkeypatch.setenv("MY_REPORT", str(tmp_path / "r.json"))
    examples["lvh_pipeline_finished"]({"ok": True})
    assert (tmp_path / "r.json").read_text() == '{"ok": true}'


def test_inherited_docstrings_are_not_shown():
    class Quiet(api.RootfsProvider):
        name = "quiet"

    class Told(api.RootfsProvider):
        """Says what it does."""

        name = "told"

    assert docgen._first_paragraph(Quiet) == ""
    assert docgen._first_paragraph(Told) == "Says what it does."
    assert docgen._first_paragraph(_Sample) == ""  # not marshmallow's Schema docstring
