"""The prebuilt and debian kernel drivers, the initrd for modular kernels, and boots under TCG
that check the kernels from outside (uname -r, BTF, an ext4 virtio root through the initrd)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from lvh_kernel.common import image_version
from lvh_kernel.debian import DebianKernel
from lvh_kernel.initrd import load_order
from lvh_kernel.prebuilt import PrebuiltKernel

from lvh.api import StageError, UserError
from lvh.testing import make_context
from tests.kernels import SOURCE, small_kernel

HAVE_QEMU = shutil.which("qemu-system-x86_64") is not None
needs_small = pytest.mark.skipif(not (os.path.exists(SOURCE) and shutil.which("make") and shutil.which("pahole")),
                                 reason=f"needs {SOURCE} and make/pahole to build the small kernel")
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="qemu-system-x86_64 is not installed")
needs_apt = pytest.mark.skipif(not (shutil.which("apt-get") and shutil.which("dpkg-deb")),
                               reason="apt-get/dpkg-deb not installed")


@pytest.fixture(scope="module")
def kernel():
    return small_kernel()


def prebuilt(tmp_path: Path, **opts):
    ctx = make_context(tmp_path, real=True)
    drv = PrebuiltKernel(PrebuiltKernel.Options().load(opts))
    return drv, ctx


# ------------------------------------------------------------------------------------------
# version from an image


def test_image_version_from_banner_gzip(tmp_path):
    img = tmp_path / "Image.gz"
    img.write_bytes(gzip.compress(b"\0" * 100 + b"Linux version 6.9.0-lvh (me@host) #1 SMP\n" + b"\0" * 10))
    assert image_version(img) == "6.9.0-lvh"
    (tmp_path / "junk").write_bytes(os.urandom(4096))
    assert image_version(tmp_path / "junk") is None


def test_prebuilt_without_a_readable_version(tmp_path):
    (tmp_path / "junk").write_bytes(os.urandom(4096))
    drv, ctx = prebuilt(tmp_path, image=str(tmp_path / "junk"))
    with pytest.raises(UserError, match="cannot read the kernel version") as e:
        drv.build(ctx)
    assert "version:" in e.value.hint
    drv, ctx = prebuilt(tmp_path, image=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="does not exist"):
        drv.key_material(ctx)


# ------------------------------------------------------------------------------------------
# prebuilt from the small kernel


@pytest.mark.e2e
@needs_small
def test_prebuilt_copies_image_and_modules(tmp_path, kernel):
    drv, ctx = prebuilt(tmp_path, image=str(kernel.image), modules=str(kernel.modules), config=str(kernel.config))
    key = drv.key_material(ctx)
    art = drv.build(ctx)
    assert art.version == kernel.version  # from the bzImage header
    assert art.image == ctx.out / "boot" / f"vmlinuz-{kernel.version}"
    assert art.image.read_bytes() == kernel.image.read_bytes()
    assert art.config.read_text() == kernel.config.read_text()
    assert (ctx.out / "lib" / "modules" / kernel.version / "modules.dep").exists()
    assert art.modules == ctx.out
    # the <version> dir itself works too, and the key follows the files' content
    drv2, ctx2 = prebuilt(tmp_path / "b", image=str(kernel.image),
                          modules=str(kernel.modules / "lib" / "modules" / kernel.version))
    assert drv2.build(ctx2).modules == ctx2.out
    assert drv2.key_material(ctx2)["image"] == key["image"]


# ------------------------------------------------------------------------------------------
# initrd


def test_load_order_puts_dependencies_first(tmp_path):
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko kernel/fs/mbcache.ko\n"
        "kernel/fs/jbd2/jbd2.ko:\nkernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\n"
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio.ko:\nkernel/crypto/crc32c_generic.ko.xz:\n")
    order = load_order(tmp_path, ["virtio_blk", "crc32c_generic", "ext4", "not_there"])
    assert order.index("kernel/drivers/virtio/virtio.ko") < order.index("kernel/drivers/block/virtio_blk.ko")
    assert order[-1] == "kernel/fs/ext4/ext4.ko"
    assert {"kernel/fs/jbd2/jbd2.ko", "kernel/lib/crc16.ko", "kernel/fs/mbcache.ko",
            "kernel/crypto/crc32c_generic.ko.xz"} <= set(order)
    assert len(order) == len(set(order))


# ------------------------------------------------------------------------------------------
# debian: a local .deb made from the small kernel, and the real archive


def make_deb(tmp_path: Path, kernel) -> Path:
    root = tmp_path / "pkg"
    ver = kernel.version
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: linux-image-{ver}\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\n"
        "Description: test kernel\n")
    (root / "boot").mkdir()
    shutil.copyfile(kernel.image, root / "boot" / f"vmlinuz-{ver}")
    shutil.copyfile(kernel.config, root / "boot" / f"config-{ver}")
    mods = root / "lib" / "modules" / ver / "kernel" / "drivers" / "net"
    mods.mkdir(parents=True)
    shutil.copyfile(next((kernel.modules / "lib" / "modules" / ver).rglob("dummy.ko")), mods / "dummy.ko")
    deb = tmp_path / f"linux-image-{ver}_1_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.e2e
@needs_small
@needs_apt
def test_debian_local_deb(tmp_path, kernel):
    deb = make_deb(tmp_path, kernel)
    ctx = make_context(tmp_path / "c", real=True)
    drv = DebianKernel(DebianKernel.Options().load({"package": str(deb)}))
    assert drv.key_material(ctx)["deb"]
    art = drv.build(ctx)
    assert art.version == kernel.version and art.image.read_bytes() == kernel.image.read_bytes()
    dep = (ctx.out / "lib" / "modules" / kernel.version / "modules.dep").read_text()
    assert "kernel/drivers/net/dummy.ko:" in dep  # depmod ran (packages ship none)
    listing = subprocess.run(f"zcat {art.initrd} | cpio -t", shell=True, capture_output=True, text=True).stdout
    assert {"init", "bin/busybox"} <= set(listing.split())


def test_debian_bad_inputs(tmp_path):
    ctx = make_context(tmp_path, real=True)
    with pytest.raises(UserError, match="does not exist"):
        DebianKernel(DebianKernel.Options().load({"package": str(tmp_path / "x.deb")})).key_material(ctx)
    if shutil.which("apt-cache"):
        drv = DebianKernel(DebianKernel.Options().load({"package": "linux-image-lvh-no-such-flavour"}))
        with pytest.raises(UserError, match="not found in the apt lists") as e:
            drv.key_material(ctx)
        assert "apt-cache search" in e.value.hint


@pytest.mark.e2e
@needs_apt
def test_debian_not_a_kernel_package(tmp_path):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: hello\nVersion: 1\nArchitecture: all\n"
                                             "Maintainer: t <t@t>\nDescription: x\n")
    (root / "usr").mkdir()
    deb = tmp_path / "hello.deb"
    subprocess.run(["dpkg-deb", "-b", str(root), str(deb)], check=True, capture_output=True)
    ctx = make_context(tmp_path / "c", real=True)
    with pytest.raises(UserError, match="not a kernel image package"):
        DebianKernel(DebianKernel.Options().load({"package": str(deb)})).build(ctx)


@pytest.fixture(scope="module")
def debian_kernel(tmp_path_factory):
    """linux-image-amd64 from the archive (the download is kept in ~/.cache/lvh/debian)."""
    tmp = tmp_path_factory.mktemp("debian")
    ctx = make_context(tmp, real=True)
    drv = DebianKernel(DebianKernel.Options().load({"package": "linux-image-amd64"}))
    try:
        drv.key_material(ctx)
    except (UserError, StageError) as e:
        pytest.skip(f"no linux-image-amd64 in this host's apt lists: {e}")
    return drv.build(ctx)


@pytest.mark.e2e
@needs_apt
def test_debian_by_name_from_the_archive(debian_kernel):
    k = debian_kernel
    assert k.version.endswith("-amd64") and k.image.name == f"vmlinuz-{k.version}"
    mdir = k.modules / "lib" / "modules" / k.version
    dep = (mdir / "modules.dep").read_text()
    assert "virtio_blk.ko" in dep and "ext4.ko" in dep
    assert "CONFIG_VIRTIO_BLK=m" in k.config.read_text()
    listing = subprocess.run(f"zcat {k.initrd} | cpio -t", shell=True, capture_output=True, text=True).stdout.split()
    mods = [os.path.basename(x) for x in listing if x.endswith(".ko")]
    for m in ("virtio_pci.ko", "virtio_blk.ko", "ext4.ko", "jbd2.ko", "crc32c_generic.ko", "9p.ko"):
        assert m in mods, m


def qemu(*args: str, timeout: float = 240) -> str:
    r = subprocess.run(["qemu-system-x86_64", "-nographic", "-no-reboot", "-m", "512", *args],
                       capture_output=True, text=True, timeout=timeout)
    return r.stdout + r.stderr


@pytest.mark.e2e
@needs_apt
@needs_qemu
@pytest.mark.skipif(not shutil.which("mke2fs") or not os.path.exists("/bin/busybox"), reason="needs e2fsprogs, busybox")
def test_debian_kernel_boots_an_ext4_virtio_root_through_its_initrd(tmp_path, debian_kernel):
    k = debian_kernel
    root = tmp_path / "root"
    for d in ("bin", "sbin", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    init = root / "sbin" / "init"
    init.write_text("#!/bin/busybox sh\n/bin/busybox mount -t proc p /proc\n"
                    "echo \"LVH-ROOT-OK $(/bin/busybox uname -r) $(/bin/busybox grep -c ^virtio_blk /proc/modules)\"\n"
                    "/bin/busybox poweroff -f\n")
    init.chmod(0o755)
    img = tmp_path / "root.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(root), str(img), "32M"], check=True)
    out = qemu("-M", "q35", "-kernel", str(k.image), "-initrd", str(k.initrd),
               "-append", "console=ttyS0 root=/dev/vda rw quiet panic=-1",
               "-drive", f"file={img},if=virtio,format=raw")
    assert f"LVH-ROOT-OK {k.version} 1" in out, out[-2000:]


@pytest.mark.e2e
@needs_small
@needs_qemu
@pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static")
def test_small_kernel_boots_on_microvm_with_btf_and_bpf(tmp_path, kernel):
    tree = tmp_path / "ird"
    for d in ("bin", "proc", "sys", "dev"):
        (tree / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", tree / "bin" / "busybox")
    (tree / "init").write_text(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc p /proc\nmount -t sysfs s /sys\n"
        "echo \"UNAME=$(uname -r)\"\n[ -s /sys/kernel/btf/vmlinux ] && echo BTF=yes\n"
        "grep -q bpf /proc/kallsyms && grep -q ' __sys_bpf$' /proc/kallsyms && echo BPF=yes\n"
        "poweroff -f\n")
    (tree / "init").chmod(0o755)
    ird = tmp_path / "ird.cpio.gz"
    subprocess.run(f"cd {tree} && find . | cpio -o -H newc --quiet | gzip > {ird}", shell=True, check=True)
    out = qemu("-M", "microvm", "-kernel", str(kernel.image), "-initrd", str(ird),
               "-append", "console=ttyS0 quiet panic=-1", timeout=120)
    assert f"UNAME={kernel.version}" in out and "BTF=yes" in out and "BPF=yes" in out, out[-2000:]


def _archive_reachable() -> bool:
    import urllib.request

    try:
        urllib.request.urlopen("http://deb.debian.org/debian/dists/bookworm/Release", timeout=10).close()
        return True
    except OSError:
        return False


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="dpkg-deb not installed")
def test_debian_from_the_archive_index_without_apt(tmp_path):
    if not _archive_reachable():
        pytest.skip("deb.debian.org is not reachable")
    ctx = make_context(tmp_path, real=True)
    drv = DebianKernel(DebianKernel.Options().load({"package": "linux-image-amd64", "suite": "bookworm",
                                                    "initrd": False}))
    key = drv.key_material(ctx)
    assert key["package"].startswith("linux-image-6.1.0-") and key["sha256"]  # the meta package followed
    art = drv.build(ctx)
    assert art.version == key["package"].removeprefix("linux-image-")
    assert (art.modules / "lib" / "modules" / art.version / "modules.dep").exists() and art.initrd is None
    bad = DebianKernel(DebianKernel.Options().load({"package": "linux-image-amd64", "suite": "no-such-suite"}))
    with pytest.raises(StageError, match="cannot read the Packages index") as e:
        bad.key_material(ctx)
    assert "suite" in e.value.hint
