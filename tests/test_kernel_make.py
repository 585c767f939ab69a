"""The make builder with the real tools on Debian's linux-source-6.1.

The small kernel (tests/kernels.py) is built once per machine (~6 min on 2 cores) and cached;
these tests check it from outside (files, version in the bzImage header, .config, modules.dep),
that a second call runs no make, that the engine caches it and that a changed option reuses the
build tree (an incremental make of a few files), and the bad-input paths: unknown group,
nonexistent option, options that did not take (with Kconfig's reason), a failing build
(make's error and tail, nothing published).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pluggy
import pytest
from lvh_kernel.common import image_version
from lvh_kernel.make import MakeBuilder

from lvh import hookspecs
from lvh.api import ConfigError, StageError, StageInfo, ToolMissing, UserError, hookimpl
from lvh.testing import FakeExecutor, make_context
from tests.kernels import SMALL_KERNEL_NAME, SMALL_KERNEL_OPTIONS, SOURCE, build_cached, cache_root, small_kernel

HAVE_TOOLS = all(shutil.which(t) for t in ("make", "gcc", "flex", "bison", "bc", "pahole", "depmod"))
needs_source = pytest.mark.skipif(not (os.path.exists(SOURCE) and HAVE_TOOLS),
                                  reason=f"needs {SOURCE} (linux-source-6.1) and make/gcc/flex/bison/bc/"
                                         "pahole/depmod")
SHARED_STATE = cache_root() / "kernel" / "state"


class ProgressRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, float | None, float | None]] = []

    @hookimpl
    def lvh_progress(self, stage, description, completed, total, finished):
        self.events.append((description, completed, total))


def bare_hooks(*plugins):
    """A hook relay with only ``plugins`` (the engine without the installed hook plugins)."""
    pm = pluggy.PluginManager("lvh")
    pm.add_hookspecs(hookspecs)
    for p in plugins:
        pm.register(p)
    return pm.hook


class Recorder:
    """The real executor, recording every argv."""

    def __init__(self) -> None:
        from lvh.executor import SubprocessExecutor

        self.inner = SubprocessExecutor()
        self.argvs: list[list[str]] = []

    def run(self, command):
        self.argvs.append([str(a) for a in command.argv])
        return self.inner.run(command)


def engine_workdir(tmp_path: Path) -> Path:
    """A workdir whose make state is the shared test state (source + build trees kept)."""
    wd = tmp_path / "work"
    (wd / "state").mkdir(parents=True)
    SHARED_STATE.mkdir(parents=True, exist_ok=True)
    (wd / "state" / "make").symlink_to(SHARED_STATE)
    return wd


def run_engine(wd: Path, kernels: list[dict], *plugins, **kw):
    from lvh.config import load_data
    from lvh.engine import Engine

    cfg = load_data({"api_version": 1, "kernels": kernels}, source="test.yaml", base_dir=wd.parent)
    return Engine(cfg, workdir=wd, hooks=bare_hooks(*plugins), **kw).run()


@pytest.fixture(scope="module")
def kernel():
    return small_kernel()


# ------------------------------------------------------------------------------------------
# bad input that needs no kernel tree


def test_unknown_group_is_a_located_config_error(tmp_path):
    from lvh.config import load_config

    (tmp_path / "conf.yaml").write_text("api_version: 1\nkernels:\n  - name: k\n    builder: make\n"
                                        "    source: /usr/src/linux-source-6.1.tar.xz\n"
                                        "    config_groups: [bpf, bfp]\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "conf.yaml")
    msg = str(e.value)
    assert "conf.yaml:6" in msg and "kernels[0].config_groups" in msg
    assert "unknown config group 'bfp' (known: basic, bpf, microvm, minimize, namespaces, tiny, virtio)" in msg
    # and a driver built without the schema still refuses it before running anything
    ex = FakeExecutor()
    drv = MakeBuilder({"source": str(tmp_path), "config_groups": ["bfp"]})
    with pytest.raises(ConfigError, match="unknown config group 'bfp'"):
        drv.key_material(make_context(tmp_path, executor=ex))
    assert ex.commands == []


def test_arm64_cross_build_arguments():
    drv = MakeBuilder(MakeBuilder.Options().load({"source": "x", "arch": "aarch64", "make_args": ["W=1"]}))
    assert drv.arch == "arm64" and drv.targets() == ["Image.gz", "modules"]
    assert drv.make_env_args() == ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
    own = MakeBuilder(MakeBuilder.Options().load({"source": "x", "arch": "arm64", "cross_compile": "my-"}))
    assert own.make_env_args() == ["ARCH=arm64", "CROSS_COMPILE=my-"]
    x86 = MakeBuilder(MakeBuilder.Options().load({"source": "x", "arch": "amd64"}))
    assert x86.make_env_args() == ["ARCH=x86_64"] and x86.targets() == ["bzImage", "modules"]
    with pytest.raises(UserError, match="unsupported kernel arch"):
        MakeBuilder(MakeBuilder.Options().load({"source": "x", "arch": "sparc"})).make_env_args()


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is not None, reason="a cross compiler is installed")
def test_missing_cross_compiler_is_a_clear_error(tmp_path):
    ex = FakeExecutor()
    drv = MakeBuilder(MakeBuilder.Options().load({"source": str(tmp_path), "arch": "arm64"}))
    with pytest.raises(ToolMissing, match="aarch64-linux-gnu-gcc") as e:
        drv.key_material(make_context(tmp_path, executor=ex))
    assert e.value.hint == "apt-get install gcc-aarch64-linux-gnu" and ex.commands == []


def test_bad_option_forms_fail_validation():
    import marshmallow

    with pytest.raises(marshmallow.ValidationError, match="--enable"):
        MakeBuilder.Options().load({"source": "x", "options": [["--enabel", "CONFIG_X"]]})
    with pytest.raises(marshmallow.ValidationError):
        MakeBuilder.Options().load({"source": "x", "colour": "red"})


# ------------------------------------------------------------------------------------------
# the real small kernel


@pytest.mark.e2e
@needs_source
def test_small_kernel_artifact(kernel):
    assert kernel.version.startswith("6.1.")
    assert kernel.image == kernel.root / "boot" / f"vmlinuz-{kernel.version}"
    assert image_version(kernel.image) == kernel.version  # read from the bzImage header
    assert kernel.image.read_bytes()[0x202:0x206] == b"HdrS"
    assert kernel.system_map.read_text().count(" T ") > 1000
    cfg = kernel.config.read_text()
    for line in ("CONFIG_VIRTIO_MMIO=y", "CONFIG_VIRTIO_PCI=y", "CONFIG_VIRTIO_BLK=y", "CONFIG_EXT4_FS=y",
                 "CONFIG_9P_FS=y", "CONFIG_VIRTIO_CONSOLE=y", "CONFIG_BPF_SYSCALL=y", "CONFIG_BPF_JIT=y",
                 "CONFIG_DEBUG_INFO_BTF=y", "CONFIG_DEVTMPFS_MOUNT=y", "CONFIG_SERIAL_8250_CONSOLE=y",
                 "CONFIG_BLK_DEV_INITRD=y", "CONFIG_PVH=y", "CONFIG_MODULES=y", "CONFIG_DUMMY=m"):
        assert line in cfg.splitlines(), line
    mods = kernel.modules / "lib" / "modules" / kernel.version
    assert kernel.modules == kernel.root
    assert "kernel/drivers/net/dummy.ko:" in (mods / "modules.dep").read_text()
    assert not (mods / "build").exists() and not (mods / "source").is_symlink()
    # options of the bpf group that cannot take on tinyconfig are reported, with the reason
    not_taken = "\n".join(kernel.meta["not_taken"])
    assert "CONFIG_BPF_LSM=y (group bpf) did not take" in not_taken and "SECURITY=n" in not_taken
    assert kernel.meta["btf"] is True


@pytest.mark.e2e
@needs_source
def test_second_call_runs_no_make(kernel):
    rec = Recorder()
    again = build_cached(SMALL_KERNEL_OPTIONS, SMALL_KERNEL_NAME, cache_root() / "kernel", executor=rec)
    assert again.root == kernel.root and again.version == kernel.version
    builds = [a for a in rec.argvs if a[0] == "make" and ("bzImage" in a or "modules_install" in a)]
    assert builds == []
    # not even configuring: the .config is remembered by its inputs (source, options, toolchain)
    assert [a for a in rec.argvs if a[0] == "make"] == []
    assert {a[0] for a in rec.argvs} <= {"gcc", "ld", "pahole"}


@pytest.mark.e2e
@needs_source
def test_engine_caches_and_a_changed_option_is_incremental(tmp_path, kernel):
    wd = engine_workdir(tmp_path)
    base = {"name": SMALL_KERNEL_NAME, "builder": "make", **SMALL_KERNEL_OPTIONS}
    s1 = run_engine(wd, [base])
    assert [st["status"] for st in s1["stages"]] == ["built"]
    link = wd / "kernels" / SMALL_KERNEL_NAME
    art = json.loads((link / "artifact.json").read_text())["artifact"]
    assert art["version"] == kernel.version
    assert (link / "boot" / f"vmlinuz-{kernel.version}").read_bytes() == kernel.image.read_bytes()
    s2 = run_engine(wd, [base])
    assert [st["status"] for st in s2["stages"]] == ["cached"]

    build_dir = next(SHARED_STATE.glob(f"build/*-x86_64-{SMALL_KERNEL_NAME}"))
    fork_o = build_dir / "kernel" / "fork.o"
    before = fork_o.stat().st_mtime_ns
    for f in build_dir.glob("drivers/net/veth.*"):  # as if never built (an earlier run may have)
        f.unlink()
    changed = {**base, "options": [*base["options"], ["--module", "CONFIG_VETH"]]}
    progress = ProgressRecorder()
    s3 = run_engine(wd, [changed], progress)
    assert [st["status"] for st in s3["stages"]] == ["built"]
    assert fork_o.stat().st_mtime_ns == before  # the same tree, not a fresh build
    log = (wd / "kernels" / SMALL_KERNEL_NAME).resolve()
    assert (log / "lib" / "modules" / kernel.version / "kernel" / "drivers" / "net" / "veth.ko").exists()
    made = (build_dir / ".lvh-last-make.log").read_text().splitlines()
    compiled = [ln.split()[-1] for ln in made if ln.startswith("  CC")]
    assert "drivers/net/veth.o" in compiled and len(compiled) < 30, compiled  # only what changed
    # progress while building: one step per compile/link line, with the last build's count as total
    steps = [e for e in progress.events if e[1]]
    assert any("drivers/net/veth.o" in d for d, _c, _t in steps), progress.events[:20]
    assert progress.events[0][0].startswith("make bzImage modules")


# ------------------------------------------------------------------------------------------
# configuring: what did not take, and why


def configure(tmp_path: Path, **opts):
    st = StageInfo(id="kernel:lvh-test-cfg", kind="kernel", driver="make", target="lvh-test-cfg")
    ctx = make_context(tmp_path, real=True, stage=st, state_dir=SHARED_STATE)
    drv = MakeBuilder(MakeBuilder.Options().load({"source": SOURCE, "base": "tinyconfig", **opts}))
    return drv, ctx


@pytest.mark.e2e
@needs_source
def test_nonexistent_option_is_an_error(tmp_path):
    drv, ctx = configure(tmp_path, options=[["--enable", "CONFIG_VIRTIO"], ["--enable", "CONFIG_LVH_NO_SUCH"]])
    with pytest.raises(ConfigError) as e:
        drv.configure(ctx)
    assert "no such kernel config option in this kernel: CONFIG_LVH_NO_SUCH (options)" in str(e.value)
    assert "spelling" in e.value.hint


@pytest.mark.e2e
@needs_source
def test_options_that_did_not_take_warn_with_reasons_or_fail_when_strict(tmp_path):
    from loguru import logger

    opts = [["--enable", "CONFIG_VIRTIO_PCI"], ["--enable", "CONFIG_ARM64_VA_BITS_48"],
            ["--enable", "CONFIG_VIRTIO_MENU"], ["--enable", "CONFIG_VIRTIO_MMIO"]]
    drv, ctx = configure(tmp_path, options=opts)
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(m.record["message"]), level="WARNING")
    logger.enable("lvh_kernel")
    try:
        conf = drv.configure(ctx)
    finally:
        logger.remove(sink)
    reasons = {b.request.symbol: b.reason for b in conf.not_taken}
    assert set(reasons) == {"VIRTIO_PCI", "ARM64_VA_BITS_48"}  # VIRTIO_MMIO took
    assert reasons["VIRTIO_PCI"] == "unmet dependencies: PCI (PCI=n)"
    assert reasons["ARM64_VA_BITS_48"] == "only defined for arch arm64, not x86"
    assert any("CONFIG_VIRTIO_PCI=y (options) did not take" in m for m in seen)
    assert "CONFIG_VIRTIO_MMIO=y" in conf.config_text.splitlines()

    drv, ctx = configure(tmp_path, options=opts, strict=True)
    with pytest.raises(ConfigError, match="2 requested config option") as e:
        drv.configure(ctx)
    assert "strict: false" in e.value.hint


@pytest.mark.e2e
@needs_source
def test_failing_build_shows_the_error_and_publishes_nothing(tmp_path):
    wd = engine_workdir(tmp_path)
    bad = {"name": "lvh-test-fail", "builder": "make", "source": SOURCE, "base": "tinyconfig",
           "make_args": ["KCFLAGS=-include /nonexistent/lvh-missing.h"], "targets": ["bzImage"], "jobs": 2}
    with pytest.raises(StageError) as e:
        run_engine(wd, [bad])
    msg = str(e.value)
    assert "kernel build failed (make exit code 2)" in msg
    assert "lvh-missing.h: No such file or directory" in msg  # the compiler's error, not just make's
    assert "last output:" in msg and "make.log" in e.value.hint
    assert not (wd / "kernels" / "lvh-test-fail").exists()
    assert not list((wd / "cache").glob("kernel/*/artifact.json"))
    failed = list((wd / "failed").glob("*"))
    assert failed and list(failed[0].rglob("make.log"))


@pytest.mark.e2e
@needs_source
def test_fragments_then_groups_then_options_and_a_given_base_config(tmp_path):
    frag = tmp_path / "virtio.config"
    frag.write_text("# a fragment\nCONFIG_VIRTIO_MENU=y\nCONFIG_VIRTIO_MMIO=y\nCONFIG_NET=y\n")
    drv, ctx = configure(tmp_path, fragments=["virtio.config"], config_groups=["basic"],
                         options=["# CONFIG_VIRTIO_MMIO is not set", ["--module", "CONFIG_DUMMY"],
                                  ["--enable", "CONFIG_MODULES"], ["--enable", "CONFIG_NETDEVICES"],
                                  ["--enable", "CONFIG_NET_CORE"]])
    ctx.config_dir = tmp_path
    conf = drv.configure(ctx)
    lines = conf.config_text.splitlines()
    assert "CONFIG_VIRTIO_MENU=y" in lines and "CONFIG_NET=y" in lines  # from the fragment
    assert "# CONFIG_VIRTIO_MMIO is not set" in lines  # options win over fragments
    assert "CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y" in lines and "CONFIG_DUMMY=m" in lines
    assert drv.key_material(ctx)["fragment:virtio.config"]  # the fragment's content is in the key

    # that .config as the base of another kernel: kept as is (olddefconfig only)
    (tmp_path / "my.config").write_text(conf.config_text)
    drv2, ctx2 = configure(tmp_path / "b", base=str(tmp_path / "my.config"))
    assert drv2.configure(ctx2).config_text.splitlines() == lines
    drv3, ctx3 = configure(tmp_path / "c", base=str(tmp_path / "missing.config"))
    with pytest.raises(ConfigError, match=r"base config .* does not exist"):
        drv3.configure(ctx3)
