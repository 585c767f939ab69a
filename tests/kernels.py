"""The small test kernel, built once per machine with the ``make`` driver and cached.

``small_kernel()`` returns a :class:`lvh.api.KernelArtifact` (upstream's layout:
``boot/vmlinuz-<ver>``, ``boot/config-<ver>``, ``boot/System.map-<ver>``, ``lib/modules/<ver>/``).
It is Debian's linux-source-6.1 with ``tinyconfig`` + the ``basic``, ``virtio``, ``bpf`` and
``microvm`` groups + what a runner needs (:data:`RUNNER_OPTIONS`): virtio pci/mmio, blk, net,
console, vsock, 9p, ext4, devtmpfs, serial console, initrd (gzip), ACPI (poweroff), BPF syscall
and JIT, BTF (``/sys/kernel/btf/vmlinux``), modules (``dummy.ko`` as a module to load).

Everything lives under ``$LVH_TEST_CACHE`` (default ``~/.cache/lvh-tests``)``/kernel``: the
extracted source and the build dir in ``state/`` (kept, so a config change is an incremental
make) and the artifacts in ``artifacts/<key>/``. The key is the driver's own key material
(source digest, final .config, make args, toolchain versions), so an unchanged config costs
~0.2 s and runs no make at all. Safe to call from concurrent test sessions (a file lock).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock

from lvh.api import KernelArtifact, StageInfo

SOURCE = "/usr/src/linux-source-6.1.tar.xz"

#: What a runner needs on top of tinyconfig + groups (CONFIG_ names without the prefix).
RUNNER_OPTIONS = """
64BIT PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE BINFMT_ELF BINFMT_SCRIPT
BLK_DEV_INITRD RD_GZIP DEVTMPFS DEVTMPFS_MOUNT PROC_FS SYSFS TMPFS SHMEM PCI PCI_MSI BLOCK EXT4_FS
NET INET IPV6 UNIX PACKET NETDEVICES NET_CORE VIRTIO_CONSOLE HW_RANDOM HW_RANDOM_VIRTIO FW_CFG_SYSFS
MULTIUSER FUTEX EPOLL POSIX_TIMERS PROC_SYSCTL FILE_LOCKING INOTIFY_USER SIGNALFD TIMERFD EVENTFD AIO
UNIX98_PTYS CGROUPS KALLSYMS RTC_CLASS RTC_DRV_CMOS VSOCKETS VIRTIO_VSOCKETS NET_SCHED NET_CLS_ACT
MODULES MODULE_UNLOAD
""".split()

#: The make driver's options for the small kernel (the lead's fixture config).
SMALL_KERNEL_OPTIONS: dict[str, Any] = {
    "source": SOURCE,
    "base": "tinyconfig",
    "config_groups": ["basic", "virtio", "bpf", "microvm"],
    "options": [["--enable", f"CONFIG_{o}"] for o in RUNNER_OPTIONS] + [["--module", "CONFIG_DUMMY"]],
    "jobs": 2,
}
#: Name of the kernel (its build dir under state/build/ is keyed by it).
SMALL_KERNEL_NAME = "lvh-test-small"


def cache_root() -> Path:
    return Path(os.environ.get("LVH_TEST_CACHE", Path.home() / ".cache" / "lvh-tests"))


def build_cached(options: dict[str, Any], name: str, root: Path, *, executor: Any = None) -> KernelArtifact:
    """Build a kernel with the make driver, cached under ``root`` by the driver's key material.
    ``executor``: a real-executor wrapper (tests record the commands run)."""
    from lvh_kernel.make import MakeBuilder

    from lvh.testing import make_context

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}.lock")):
        scratch = root / "scratch" / f"{name}-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            drv = MakeBuilder(MakeBuilder.Options().load(options))
            stage = StageInfo(id=f"kernel:{name}", kind="kernel", driver="make", target=name)
            ctx = make_context(scratch, real=True, stage=stage, state_dir=root / "state", executor=executor)
            material = drv.key_material(ctx)
            key = hashlib.sha256(json.dumps(
                {"driver": drv.name, "version": drv.version, "options": drv.options,
                 "material": material}, sort_keys=True, default=str).encode()).hexdigest()[:24]
            entry = root / "artifacts" / key
            if (entry / "artifact.json").exists():
                return KernelArtifact.from_json(json.loads((entry / "artifact.json").read_text()), entry)
            art = drv.build(ctx)
            art.key = key
            data = art.to_json()
            (ctx.out / "artifact.json").write_text(json.dumps(data, indent=1))
            entry.parent.mkdir(parents=True, exist_ok=True)
            ctx.out.rename(entry)
            return KernelArtifact.from_json(data, entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def small_kernel() -> KernelArtifact:
    """The small test kernel (built on the first call on this machine, then cached)."""
    return build_cached(SMALL_KERNEL_OPTIONS, SMALL_KERNEL_NAME, cache_root() / "kernel")
