"""Kernel config groups: named lists of ``scripts/config``-style options.

``basic``, ``bpf``, ``virtio``, ``minimize`` and ``namespaces`` are cilium/little-vm-helper's
lists (pkg/kernels/conf.go), kept option for option, with one fix: upstream's ``minimize``
disables ``CONFIG_ISO9669_FS``, a typo for ``CONFIG_ISO9660_FS`` (the typo names no symbol, so
the option never did anything). ``microvm`` is ours: what QEMU's ``microvm`` machine needs
(virtio-mmio devices, described on the command line or by ACPI, an ISA serial console, a
virtio console, the PVH entry point for booting an uncompressed vmlinux).
"""

from __future__ import annotations

#: One option: ``[switch, SYMBOL]`` or ``[switch, SYMBOL, value]`` (``--set-str``/``--set-val``).
Option = list[str]


def _e(*names: str) -> list[Option]:
    return [["--enable", f"CONFIG_{n}"] for n in names]


def _d(*names: str) -> list[Option]:
    return [["--disable", f"CONFIG_{n}"] for n in names]


CONFIG_GROUPS: dict[str, list[Option]] = {
    "basic": [
        *_e("LOCALVERSION_AUTO", "DEBUG_INFO", "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT"),
        *_d("WERROR"),
    ],
    "minimize": _d(
        "DRM", "GPU", "ISO9660_FS", "CFG80211", "WIRELESS", "RFKILL", "MACINTOSH_DRIVERS",
        "SOUND", "AGP", "USB_SUPPORT", "USB", "WLAN", "HID", "I2C", "PCMCIA", "MD", "DMADEVICES",
        "THERMAL",
    ),
    "bpf": _e(
        "BPF", "BPF_SYSCALL", "NET_CLS_BPF", "NET_ACT_BPF", "BPF_JIT", "BPF_JIT_DEFAULT_ON",
        "BPF_EVENTS", "BPF_STREAM_PARSER", "DEBUG_INFO_BTF", "DEBUG_INFO_BTF_MODULES", "BPF_LSM",
        "CGROUP_BPF", "FTRACE_SYSCALLS", "SKB_EXTENSIONS", "NET_TC_SKB_EXT",
    ),
    "virtio": _e(
        "VIRTIO", "VIRTIO_MENU", "VIRTIO_PCI_LIB", "VIRTIO_PCI", "VIRTIO_NET", "NET_9P", "9P_FS",
        "NET_9P_VIRTIO", "VIRTIO_BLK",
    ),
    "namespaces": _e("NAMESPACES", "UTS_NS", "TIME_NS", "IPC_NS", "USER_NS", "PID_NS", "NET_NS"),
    # Ours: what a ``tinyconfig`` kernel lacks to be a useful lvh guest (console, initrd, devtmpfs,
    # ext4 on a block device, networking, modules, the syscalls busybox and systemd-less init use).
    "tiny": _e(
        "64BIT", "SMP", "PRINTK", "TTY", "SERIAL_8250", "SERIAL_8250_CONSOLE", "BINFMT_ELF", "BINFMT_SCRIPT",
        "BLK_DEV_INITRD", "RD_GZIP", "DEVTMPFS", "DEVTMPFS_MOUNT", "PROC_FS", "SYSFS", "TMPFS", "SHMEM",
        "PCI", "PCI_MSI", "BLOCK", "BLK_DEV", "EXT4_FS", "NET", "INET", "IPV6", "UNIX", "PACKET", "NETDEVICES",
        "NET_CORE", "MULTIUSER", "FUTEX", "EPOLL", "POSIX_TIMERS", "PROC_SYSCTL", "FILE_LOCKING",
        "INOTIFY_USER", "SIGNALFD", "TIMERFD", "EVENTFD", "AIO", "UNIX98_PTYS", "CGROUPS", "KALLSYMS",
        "RTC_CLASS", "RTC_DRV_CMOS", "FW_CFG_SYSFS", "NET_SCHED", "NET_CLS_ACT", "MODULES", "MODULE_UNLOAD",
    ),
    "microvm": _e(
        "VIRTIO", "VIRTIO_MENU", "VIRTIO_MMIO", "VIRTIO_MMIO_CMDLINE_DEVICES", "VIRTIO_BLK",
        "VIRTIO_CONSOLE", "HW_RANDOM", "HW_RANDOM_VIRTIO", "TTY", "SERIAL_8250",
        "SERIAL_8250_CONSOLE", "PRINTK", "ACPI", "HYPERVISOR_GUEST", "PARAVIRT", "KVM_GUEST", "PVH",
    ),
}

#: Upstream's default groups (``lvh kernels init`` / ``add`` without ``--config-groups``).
DEFAULT_GROUPS: list[str] = ["basic", "bpf", "virtio", "minimize", "namespaces"]


def group_options(names: list[str]) -> list[Option]:
    """The options of the groups ``names``, in order. Raises ``KeyError(name)`` for an unknown one."""
    out: list[Option] = []
    for n in names:
        out.extend([list(o) for o in CONFIG_GROUPS[n]])
    return out
