"""Config errors: each bad config gives one located message (file:line path: what) and a hint."""

from __future__ import annotations

import pytest

from lvh.api import ConfigError
from lvh.config import load_config
from tests import fakes

BASE = fakes.PIPELINE

# (description, replace-this, with-this, expected line, expected "path: message" fragment)
BAD = [
    ("unknown top-level key", "api_version: 1\n", "api_version: 1\nimagez: []\n", 2, "imagez: Unknown field."),
    ("unknown driver option", "suite: bookworm,", "suit: bookworm,", 4, "images[0].rootfs.suit: Unknown field."),
    ("bad option type", "size: 2G}", "size: lots}", 5, "images[0].disk.size: Not a valid size: 'lots'"),
    ("unknown driver with a close name", "provider: fake,", "provider: fakee,", 4,
     "images[0].rootfs.provider: no rootfs driver named 'fakee' is installed"),
    ("missing driver key", "rootfs: {provider: fake, ", "rootfs: {", 4, "images[0].rootfs: missing 'provider'"),
    ("duplicate image name", "  - name: tools\n", "  - name: base\n", 9, "images[1].name: duplicate image name 'base'"),
    ("unknown parent", "parent: base", "parent: bsae", 10, "images[1].parent: unknown parent image 'bsae'"),
    ("bad name", "- name: tools", "- name: 'to ols'", 9, "images[1].name: Bad name"),
    ("unknown kernel in a run", "kernel: k1\n    command", "kernel: k2\n    command", 19,
     "runs[0].kernel: unknown kernel 'k2'"),
    ("unknown image in a run", "image: tools", "image: tool", 18, "runs[0].image: unknown image 'tool'"),
    ("bad memory", "    command:", "    memory: 1X\n    command:", 20, "runs[0].memory: Not a valid size"),
    ("bad port", "    command:", "    ports: ['22:ab']\n    command:", 20, "runs[0].ports[0]: not a port forward"),
    ("unknown run key", "    command:", "    comand: x\n    command:", 20, "runs[0].comand: Unknown field."),
    ("derived image with a rootfs", "    parent: base\n", "    parent: base\n    rootfs: {provider: fake}\n", 11,
     "images[1].rootfs: a derived image has no rootfs of its own"),
    ("base image without disk", "    disk: {formatter: fakedisk, size: 2G}\n", "", 3,
     "images[0]: image 'base' has no 'disk'"),
    ("duplicate yaml key", "    command:", "    cpus: 2\n    cpus: 3\n    command:", 21,
     "runs[0]: duplicate key 'cpus'"),
    ("bad yaml", "images:\n", "images:\n  - name: [\n", 4, "not valid YAML"),
    ("wrong api version", "api_version: 1", "api_version: 2", 1, "api_version: This lvh reads config api_version 1."),
    ("runner missing", "    runner: fakerun\n", "", 16, "runs[0].runner: Missing data for required field."),
]


@pytest.mark.parametrize("desc,old,new,line,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_config(tmp_path, desc, old, new, line, fragment):
    assert old in BASE, desc
    conf = tmp_path / "conf.yaml"
    conf.write_text(BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as ei:
        load_config(conf, registry=fakes.registry())
    e = ei.value
    assert e.exit_code == 2
    assert fragment in e.message, e.message
    assert e.line == line, (e.message, e.line)
    assert e.message.startswith(f"{conf}:{line}")
    assert "\n" not in e.message


def test_did_you_mean_for_a_driver_typo(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(BASE.replace("provider: fake,", "provider: fakee,"))
    with pytest.raises(ConfigError) as ei:
        load_config(conf, registry=fakes.registry())
    assert ei.value.hint == "did you mean 'fake'?"


def test_unknown_option_hint_lists_the_driver_options(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(BASE.replace("suite: bookworm,", "suit: bookworm,"))
    with pytest.raises(ConfigError) as ei:
        load_config(conf, registry=fakes.registry())
    assert "fail, packages, sleep, suite" in (ei.value.hint or "")


def test_parent_cycle(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("""\
images:
  - name: a
    parent: b
  - name: b
    parent: a
""")
    with pytest.raises(ConfigError, match=r"c.yaml:3 images\[0\].parent: parent cycle: a -> b -> a"):
        load_config(conf, registry=fakes.registry())


def test_valid_config_loads_with_defaults(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(BASE)
    cfg = load_config(conf, registry=fakes.registry())
    assert cfg.workdir == tmp_path / "_data"
    assert cfg.images["base"].disk.options == {"size": 2 * 1024**3, "format": "raw"}
    assert cfg.images["tools"].disk.name == "fakedisk"  # inherited from the parent
    assert cfg.images["tools"].customize[0].options == {"actions": [{"type": "install", "packages": ["bpftool"]}]}
    run = cfg.runs["smoke"]
    assert run.runner.name == "fakerun" and run.memory == 1024**3 and run.cpus == 2


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
