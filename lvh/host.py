"""Facts about the host, decided once: architecture, cores, and whether KVM really works.

A present /dev/kvm is not proof: on nested or odd hosts the module is loaded but the CPU lacks
vmx/svm, so creating a VM fails or guests hang. We check what the kernel says (cpu flags), that
/dev/kvm opens read-write, and that KVM_CREATE_VM succeeds. Runners may probe further (boot a
guest) and record a stricter verdict with :func:`record_kvm_verdict`.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import platform
from pathlib import Path

from lvh.api import HostInfo

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lvh"


def _verdict_file() -> Path:
    return user_cache_dir() / "host-kvm.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _probe_kvm() -> tuple[bool, str]:
    if os.environ.get("LVH_NO_KVM"):
        return False, "disabled by LVH_NO_KVM"
    arch = platform.machine()
    if arch in ("x86_64", "i686", "i386"):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        if " vmx" not in flags and " svm" not in flags:
            return False, "the CPU has no vmx/svm flag (no hardware virtualization exposed)"
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"/dev/kvm cannot be opened read-write ({e.strerror}); add yourself to group kvm"
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION, 0) != 12:
            return False, "unexpected KVM API version"
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
    except OSError as e:
        return False, f"KVM_CREATE_VM failed ({e.strerror})"
    finally:
        os.close(fd)
    return True, ""


def record_kvm_verdict(works: bool, reason: str) -> None:
    """Record a stricter verdict (e.g. a runner booted a guest with KVM and it failed)."""
    f = _verdict_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps({"boot_id": _boot_id(), "kvm": works, "reason": reason}))
    tmp.replace(f)
    host_info.cache_clear()


@functools.lru_cache(maxsize=1)
def host_info() -> HostInfo:
    """This host's facts. The KVM verdict is cached per boot in the user cache dir."""
    works, reason = None, ""
    try:
        data = json.loads(_verdict_file().read_text())
        if data.get("boot_id") == _boot_id():
            works, reason = bool(data["kvm"]), str(data.get("reason", ""))
    except (OSError, ValueError, KeyError):
        pass
    if works is None or os.environ.get("LVH_NO_KVM"):
        works, reason = _probe_kvm()
    return HostInfo(arch=platform.machine(), cpus=os.cpu_count() or 1, kvm=works, kvm_reason=reason)
