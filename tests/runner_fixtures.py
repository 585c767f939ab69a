"""Session fixtures for the runner tests: kernels and images, cached under ~/.cache/lvh-tests.

Swapping the kernel source is one line: ``_small_kernel_artifact`` (the bootstrap tinyconfig
bzImage today; the kernel builder's ``small_kernel`` at integration).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lvh.api import DiskArtifact, KernelArtifact

TEST_CACHE = Path(os.environ.get("LVH_TEST_CACHE", Path.home() / ".cache" / "lvh-tests"))
BOOTSTRAP_BZIMAGE = Path("/root/.cache/lvh-bootstrap/bzImage")


def need(*tools: str) -> None:
    for t in tools:
        if not (shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin")):
            pytest.skip(f"{t} is not installed")


def _small_kernel_artifact() -> KernelArtifact:
    if not BOOTSTRAP_BZIMAGE.exists():
        pytest.skip(f"no small test kernel at {BOOTSTRAP_BZIMAGE}")
    return KernelArtifact(root=BOOTSTRAP_BZIMAGE.parent, image=BOOTSTRAP_BZIMAGE, version="")


@pytest.fixture(scope="session")
def runner_kernel() -> KernelArtifact:
    """A small kernel with virtio (pci+mmio), blk, net, 9p, ext4 and virtio-console built in."""
    return _small_kernel_artifact()


@pytest.fixture(scope="session")
def modular_kernel() -> KernelArtifact:
    """Debian's distribution kernel: everything the guest needs is a module."""
    images = sorted(glob.glob("/boot/vmlinuz-*"))
    if not images:
        pytest.skip("no Debian kernel in /boot")
    ver = images[-1].removeprefix("/boot/vmlinuz-")
    if not Path(f"/lib/modules/{ver}/modules.dep").exists():
        pytest.skip(f"no modules for {ver} in /lib/modules")
    if not os.access(images[-1], os.R_OK):
        pytest.skip(f"{images[-1]} is not readable")
    return KernelArtifact(root=Path("/"), image=Path(images[-1]), version=ver, modules=Path("/"))


def minbase_tarball(include: tuple[str, ...] = ()) -> Path:
    """A Debian bookworm minbase tarball (mmdebstrap) with ``include``d packages, built once."""
    name = "bookworm-minbase" + "".join(f"+{p}" for p in include)
    out = TEST_CACHE / "runner" / f"{name}.tar"
    if out.exists():
        return out
    need("mmdebstrap")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}.tar")
    inc = [f"--include={','.join(include)}"] if include else []
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", *inc, "bookworm", str(tmp),
                    "http://deb.debian.org/debian"], check=True)
    tmp.replace(out)
    return out


def _tree(tmp: Path, include: tuple[str, ...] = ()) -> Path:
    root = tmp / "root"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(minbase_tarball(include))], check=True)
    return root


def _mkfs(root: Path, out: Path, size: str = "600M", *, partitioned: bool = False) -> Path:
    """An ext4 filesystem of ``root``: the whole file (lvh's layout), or, ``partitioned``, in a
    first MBR partition at 1 MiB (the layout of distribution and cloud images)."""
    need("mke2fs")
    extra: list[str] = []
    if partitioned:
        need("sfdisk")
        with out.open("wb") as fh:
            fh.truncate(int(size.rstrip("M")) * 1024**2 + 2 * 1024**2)
        subprocess.run(["sfdisk", "-q", str(out)], input=b"start=2048, type=83\n", check=True)
        extra = ["-E", "offset=1048576"]
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", *extra, "-d", str(root), "-L", "lvh", str(out), size],
                   check=True)
    return out


@pytest.fixture(scope="session")
def debian_image(tmp_path_factory: pytest.TempPathFactory) -> DiskArtifact:
    """A bare ext4 filesystem (lvh's image layout) of a minbase Debian, raw."""
    tmp = tmp_path_factory.mktemp("img")
    path = _mkfs(_tree(tmp), tmp / "base.raw")
    shutil.rmtree(tmp / "root")
    return DiskArtifact(root=tmp, path=path, format="raw", root_device="vda")


@pytest.fixture(scope="session")
def ssh_image(tmp_path_factory: pytest.TempPathFactory) -> DiskArtifact:
    """A minbase Debian with openssh-server (host keys made by its postinst)."""
    tmp = tmp_path_factory.mktemp("sshimg")
    path = _mkfs(_tree(tmp, ("openssh-server",)), tmp / "ssh.raw", "800M")
    shutil.rmtree(tmp / "root")
    return DiskArtifact(root=tmp, path=path, format="raw", root_device="vda")


@pytest.fixture(scope="session")
def kernel_image(tmp_path_factory: pytest.TempPathFactory, modular_kernel: KernelArtifact) -> DiskArtifact:
    """A Debian image with a distribution kernel installed the way linux-image-* installs it:
    /boot/vmlinuz-<ver> and the modules the boot needs under /lib/modules/<ver>."""
    return _kernel_image(tmp_path_factory, modular_kernel, partitioned=False)


@pytest.fixture(scope="session")
def partitioned_kernel_image(tmp_path_factory: pytest.TempPathFactory,
                             modular_kernel: KernelArtifact) -> DiskArtifact:
    """Like ``kernel_image``, on a partitioned disk (root on vda1), like a plain Debian image."""
    return _kernel_image(tmp_path_factory, modular_kernel, partitioned=True)


def _kernel_image(tmp_path_factory: pytest.TempPathFactory, modular_kernel: KernelArtifact, *,
                  partitioned: bool) -> DiskArtifact:
    from lvh_qemu.initramfs import WANTED_MODULES, module_plan

    tmp = tmp_path_factory.mktemp("kimg")
    root = _tree(tmp)
    ver = modular_kernel.version
    (root / "boot").mkdir(exist_ok=True)
    shutil.copy(modular_kernel.image, root / "boot" / f"vmlinuz-{ver}")
    src = Path("/lib/modules") / ver
    dst = root / "lib" / "modules" / ver
    dst.mkdir(parents=True)
    for f in ("modules.dep", "modules.builtin", "modules.order"):
        if (src / f).exists():
            shutil.copy(src / f, dst / f)
    wanted = set(WANTED_MODULES["pci"]) | set(WANTED_MODULES["mmio"])
    for p in module_plan(src, sorted(wanted)):
        rel = p.relative_to(src)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst / rel)
    path = _mkfs(root, tmp / "kernel.raw", partitioned=partitioned)
    shutil.rmtree(root)
    # A distribution image does not say where its kernel is: leave it to the runner to find.
    return DiskArtifact(root=tmp, path=path, format="raw", root_device="vda1" if partitioned else "vda",
                        kernel=None if partitioned else f"/boot/vmlinuz-{ver}")
