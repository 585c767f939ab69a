"""Kernel config options, groups and the "did not take" explanations (unit tests, no make)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from lvh_kernel import kconfig
from lvh_kernel.groups import CONFIG_GROUPS, DEFAULT_GROUPS, group_options
from lvh_kernel.kconfig import KconfigIndex, Request, check_requests, evaluate, parse_option

# cilium/little-vm-helper pkg/kernels/conf.go, ConfigOptGroups, copied option for option
# (the only change: minimize's CONFIG_ISO9669_FS typo is CONFIG_ISO9660_FS here).
UPSTREAM = {
    "basic": [("--enable", "CONFIG_LOCALVERSION_AUTO"), ("--enable", "CONFIG_DEBUG_INFO"),
              ("--enable", "CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT"), ("--disable", "CONFIG_WERROR")],
    "minimize": [("--disable", f"CONFIG_{n}") for n in (
        "DRM", "GPU", "ISO9660_FS", "CFG80211", "WIRELESS", "RFKILL", "MACINTOSH_DRIVERS", "SOUND", "AGP",
        "USB_SUPPORT", "USB", "WLAN", "HID", "I2C", "PCMCIA", "MD", "DMADEVICES", "THERMAL")],
    "bpf": [("--enable", f"CONFIG_{n}") for n in (
        "BPF", "BPF_SYSCALL", "NET_CLS_BPF", "NET_ACT_BPF", "BPF_JIT", "BPF_JIT_DEFAULT_ON", "BPF_EVENTS",
        "BPF_STREAM_PARSER", "DEBUG_INFO_BTF", "DEBUG_INFO_BTF_MODULES", "BPF_LSM", "CGROUP_BPF",
        "FTRACE_SYSCALLS", "SKB_EXTENSIONS", "NET_TC_SKB_EXT")],
    "virtio": [("--enable", f"CONFIG_{n}") for n in (
        "VIRTIO", "VIRTIO_MENU", "VIRTIO_PCI_LIB", "VIRTIO_PCI", "VIRTIO_NET", "NET_9P", "9P_FS",
        "NET_9P_VIRTIO", "VIRTIO_BLK")],
    "namespaces": [("--enable", f"CONFIG_{n}") for n in (
        "NAMESPACES", "UTS_NS", "TIME_NS", "IPC_NS", "USER_NS", "PID_NS", "NET_NS")],
}


def test_groups_are_upstreams_lists():
    for name, opts in UPSTREAM.items():
        assert [tuple(o) for o in CONFIG_GROUPS[name]] == opts, name
    assert DEFAULT_GROUPS == ["basic", "bpf", "virtio", "minimize", "namespaces"]


def test_microvm_group_has_what_the_machine_needs():
    syms = {o[1] for o in CONFIG_GROUPS["microvm"]}
    for s in ("CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES", "CONFIG_VIRTIO_CONSOLE",
              "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_VIRTIO_BLK", "CONFIG_PVH"):
        assert s in syms


def test_group_options_unknown_group():
    with pytest.raises(KeyError):
        group_options(["basic", "nope"])


@pytest.mark.parametrize("opt, want", [
    (["--enable", "CONFIG_X"], ("X", "y")),
    (["-e", "X"], ("X", "y")),
    (["--disable", "CONFIG_X"], ("X", "n")),
    (["--module", "CONFIG_X"], ("X", "m")),
    (["--set-str", "CONFIG_LOCALVERSION", "-lvh"], ("LOCALVERSION", '"-lvh"')),
    (["--set-val", "CONFIG_NR_CPUS", "4"], ("NR_CPUS", "4")),
    ("CONFIG_X=y", ("X", "y")),
    ("CONFIG_X=m", ("X", "m")),
    ("# CONFIG_X is not set", ("X", "n")),
    ('CONFIG_CMDLINE="a b"', ("CMDLINE", '"a b"')),
])
def test_parse_option_forms(opt, want):
    r = parse_option(opt)
    assert (r.symbol, r.value) == want


@pytest.mark.parametrize("bad", [["--frobnicate", "X"], ["--enable"], "enable X", ["--set-str", "X"]])
def test_parse_option_errors_say_the_forms(bad):
    with pytest.raises(kconfig.OptionError, match="--enable"):
        parse_option(bad)


def test_fragment_skips_comments_and_locates_errors():
    reqs = kconfig.parse_fragment("# a comment\n\nCONFIG_A=y\n# CONFIG_B is not set\n", "frag.config")
    assert [(r.symbol, r.value) for r in reqs] == [("A", "y"), ("B", "n")]
    with pytest.raises(kconfig.OptionError, match=r"frag\.config:2"):
        kconfig.parse_fragment("CONFIG_A=y\nbogus line\n", "frag.config")


def test_apply_requests_replaces_and_last_wins(tmp_path):
    cfg = tmp_path / ".config"
    cfg.write_text("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n")
    kconfig.apply_requests(cfg, [Request("B", "y"), Request("A", "n"), Request("B", "m"), Request("D", "y")])
    values = kconfig.read_config(cfg)
    assert values == {"A": "n", "B": "m", "C": "m", "D": "y"}
    assert cfg.read_text().count("CONFIG_B") == 1


@pytest.mark.parametrize("expr, want", [
    ("A", "y"), ("B", "m"), ("N", "n"), ("MISSING", "n"), ("!N", "y"), ("!B", "m"),
    ("A && B", "m"), ("A || N", "y"), ("N && A", "n"), ("(N || B) && A", "m"),
    ("COUNT >= 4", "y"), ("COUNT < 4", "n"), ('S = "x"', "y"), ("A && !(B || N)", "m"),
])
def test_evaluate(expr, want):
    values = {"A": "y", "B": "m", "N": "n", "COUNT": "8", "S": '"x"'}
    assert evaluate(expr, values) == want


KCONFIG = """\
config PCI
\tbool "PCI support"

menu "Virtio"
\tdepends on HAS_IOMEM

config VIRTIO_PCI
\ttristate "PCI driver for virtio devices"
\tdepends on PCI
\tselect VIRTIO
\thelp
\t  config NOT_A_SYMBOL
\t  depends on this is help text

config VIRTIO
\ttristate

endmenu

if NET
config NET_THING
\tbool "a net thing"
endif

config PROMPTLESS
\tbool
\tdefault n
"""


@pytest.fixture
def index(tmp_path) -> KconfigIndex:
    (tmp_path / "drivers").mkdir()
    (tmp_path / "drivers" / "Kconfig").write_text(KCONFIG)
    (tmp_path / "arch" / "arm64").mkdir(parents=True)
    (tmp_path / "arch" / "arm64" / "Kconfig").write_text('config ARM64_ONLY\n\tbool "arm64 thing"\n')
    (tmp_path / "arch" / "x86").mkdir(parents=True)
    (tmp_path / "arch" / "x86" / "Kconfig").write_text('config X86_THING\n\tbool "x86 thing"\n')
    return KconfigIndex(Path(tmp_path), "x86")


def test_index_scans_deps_prompts_selects(index):
    s = index.symbols["VIRTIO_PCI"]
    assert s.deps == ["HAS_IOMEM", "PCI"] and s.has_prompt
    assert not index.symbols["VIRTIO"].has_prompt
    assert ("VIRTIO_PCI", "") in index.symbols["VIRTIO"].selected_by
    assert index.symbols["NET_THING"].deps == ["NET"]
    assert "NOT_A_SYMBOL" not in index.symbols


def explain(index, values, *reqs):
    return {b.request.symbol: b.reason for b in check_requests(list(reqs), values, index)}


def test_explanations(index):
    values = {"HAS_IOMEM": "y", "PCI": "n", "VIRTIO": "y", "VIRTIO_PCI": "y", "NET": "n"}
    got = explain(index, {**values, "VIRTIO_PCI": "n"}, Request("VIRTIO_PCI", "y"))
    assert got["VIRTIO_PCI"] == "unmet dependencies: PCI (PCI=n)"
    got = explain(index, values, Request("NET_THING", "y"), Request("NO_SUCH", "y"),
                  Request("ARM64_ONLY", "y"), Request("PROMPTLESS", "y"), Request("VIRTIO", "n"))
    assert got["NET_THING"] == "unmet dependencies: NET (NET=n)"
    assert got["NO_SUCH"] == "no such option in this kernel"
    assert got["ARM64_ONLY"] == "only defined for arch arm64, not x86"
    assert got["PROMPTLESS"].startswith("has no prompt")
    assert got["VIRTIO"] == "selected by VIRTIO_PCI=y"


def test_requests_that_took_are_not_reported(index):
    values = {"PCI": "y", "X86_THING": "y"}
    assert check_requests([Request("PCI", "y"), Request("X86_THING", "y"), Request("GONE", "n")],
                          values, index) == []


def test_not_taken_message_names_origin_and_final_value(index):
    (b,) = check_requests([Request("NET_THING", "y", "group virtio")], {"NET": "n"}, index)
    assert str(b) == ("CONFIG_NET_THING=y (group virtio) did not take (final: not set): "
                      "unmet dependencies: NET (NET=n)")


def test_help_text_with_tabs_is_skipped(tmp_path):
    (tmp_path / "Kconfig").write_text(textwrap.dedent("""\
        config A
        \tbool "a"
        \thelp
        \t  config B
        \t  select C

        config D
        \tbool "d"
        \tselect E
        """))
    idx = KconfigIndex(tmp_path, "x86")
    assert set(idx.symbols) == {"A", "D", "E"}
