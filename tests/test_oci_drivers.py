"""The ``oci`` drivers against a real registry, driven as the engine drives them (validated
options, a real Context): kernel, rootfs (lvh's format and a container image squashed to a
tarball), whole disk + a qcow2 overlay derived from it; and ``lvh_resolve_artifact``."""

from __future__ import annotations

import json
import subprocess
import tarfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from lvh_oci import hooks, media, transfer
from lvh_oci.drivers import OciDisk, OciKernel, OciRootfs

from lvh.api import DiskArtifact, KernelArtifact, RootfsArtifact, UserError, marshmallow
from lvh.testing import make_context
from tests import registry_fixture
from tests.registry_fixture import (
    make_disk,
    make_kernel_dir,
    push_raw,
    start_registry,
    stop_registry,
    tar_bytes,
    tree_digest,
)

registry = registry_fixture.registry


def _driver(cls, **opts):
    return cls(cls.Options().load(opts))


def test_entry_points_name_the_drivers():
    for group, cls in (("lvh.kernel", OciKernel), ("lvh.rootfs", OciRootfs), ("lvh.disk", OciDisk)):
        (ep,) = [e for e in entry_points(group=group) if e.name == "oci"]
        assert ep.load() is cls
    assert OciDisk.needs_rootfs is False


def test_options_are_validated():
    with pytest.raises(marshmallow.ValidationError, match="ref"):
        OciKernel.Options().load({})
    with pytest.raises(marshmallow.ValidationError):
        OciKernel.Options().load({"ref": "x", "colour": "red"})
    assert OciDisk.Options().load({})["ref"] is None  # derive takes no ref


@pytest.mark.e2e
def test_kernel_driver_pulls_into_ctx_out_and_keys_on_the_digest(registry, tmp_path):
    kdir = make_kernel_dir(tmp_path / "k", "6.1.9")
    ref = f"{registry.host}/drv/kernel:6.1-main"
    transfer.push(transfer.kernel_from_dir(kdir), ref, name="6.1")
    ctx = make_context(tmp_path, real=True)
    d = _driver(OciKernel, ref=ref)
    km = d.key_material(ctx)
    assert km["digest"].startswith("sha256:")
    art = d.build(ctx)
    assert isinstance(art, KernelArtifact) and art.root == ctx.out and art.version == "6.1.9"
    assert tree_digest(ctx.out) == tree_digest(kdir)
    # moving the tag changes the key; a pinned digest needs no registry at all
    transfer.push(transfer.kernel_from_dir(make_kernel_dir(tmp_path / "k2", "6.1.10")), ref, name="6.1")
    assert _driver(OciKernel, ref=ref).key_material(ctx)["digest"] != km["digest"]
    pinned = f"{registry.host}/drv/kernel@{km['digest']}"
    assert _driver(OciKernel, ref=pinned).key_material(ctx) == km


@pytest.mark.e2e
def test_key_material_falls_back_to_last_seen_digest_when_offline(tmp_path):
    server = start_registry(tmp_path / "reg")  # our own registry, to stop it
    try:
        ref = f"{server.host}/drv/offline:v1"
        transfer.push(transfer.kernel_from_dir(make_kernel_dir(tmp_path / "k", "6.1.9")), ref, name="k")
        ctx = make_context(tmp_path, real=True)
        km = _driver(OciKernel, ref=ref).key_material(ctx)
    finally:
        stop_registry(server.proc)
    assert _driver(OciKernel, ref=ref).key_material(ctx) == km  # registry gone: last digest seen
    with pytest.raises(UserError, match="cannot reach"):
        _driver(OciKernel, ref=f"{server.host}/drv/never:seen").key_material(ctx)


@pytest.mark.e2e
def test_disk_driver_builds_without_rootfs_and_derives_an_overlay(registry, tmp_path):
    img = make_disk(tmp_path / "src", "base")
    ref = f"{registry.host}/drv/disk:base"
    src = DiskArtifact(root=img.parent, path=img, format="qcow2", size=64 * 1024**2)
    transfer.push(src, ref, name="base")
    ctx = make_context(tmp_path / "a", real=True)
    d = _driver(OciDisk, ref=ref)
    d.key_material(ctx)
    disk = d.build(ctx, None)
    assert disk.path.read_bytes() == img.read_bytes() and disk.format == "qcow2"

    ctx2 = make_context(tmp_path / "b", real=True)
    child = _driver(OciDisk, size="128M").derive(ctx2, disk)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(child.path)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["backing-filename"] == str(disk.path) and info["virtual-size"] == 128 * 1024**2
    assert child.backing == disk.path


def _container_image(registry) -> str:
    busybox = Path("/bin/busybox")
    bb = busybox.read_bytes() if busybox.exists() else b"\x7fELF-fake"
    base = tar_bytes([("bin/", None), ("bin/busybox", bb), ("bin/sh", "symlink", "busybox"),
                      ("etc/", None), ("etc/hostname", b"old\n"), ("etc/os-release", b"ID=test\n"),
                      ("opt/", None), ("opt/old/", None), ("opt/old/file", b"gone"),
                      ("dev/", None), ("dev/null", "chr", None), ("usr/", None),
                      ("usr/bin/", None), ("usr/bin/ln", "hardlink", "bin/busybox")], gzip_it=True)
    top = tar_bytes([("etc/", None), ("etc/.wh.hostname", b""), ("opt/", None), ("opt/.wh..wh..opq", b""),
                     ("opt/new", b"new\n")], gzip_it=True)
    ref = "drv/container"
    push_raw(registry, ref, ["bookworm"], [(base, media.DOCKER_LAYER_GZIP), (top, media.DOCKER_LAYER_GZIP)])
    return f"{registry.host}/{ref}:bookworm"


@pytest.mark.e2e
def test_rootfs_driver_squashes_a_container_image(registry, tmp_path):
    ref = _container_image(registry)
    ctx = make_context(tmp_path, real=True)
    art = _driver(OciRootfs, ref=ref).build(ctx)
    assert isinstance(art, RootfsArtifact) and art.format == "tar" and art.path.parent == ctx.out
    with tarfile.open(art.path) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert "etc/hostname" not in members and "opt/old/file" not in members and "opt/old" not in members
        assert tf.extractfile("opt/new").read() == b"new\n"
        assert members["bin/sh"].issym() and members["dev/null"].ischr()
        assert members["usr/bin/ln"].islnk() and members["usr/bin/ln"].linkname == "bin/busybox"
        assert tf.extractfile("bin/busybox").read() == (Path("/bin/busybox").read_bytes()
                                                        if Path("/bin/busybox").exists() else b"\x7fELF-fake")
    # the real tar tool reads it (as a rootfs provider's consumer would)
    listing = subprocess.run(["tar", "-tf", str(art.path)], check=True, capture_output=True, text=True).stdout
    assert "opt/new" in listing.split()


@pytest.mark.e2e
def test_resolve_artifact_hook_pulls_registry_refs_only(registry, tmp_path):
    img = make_disk(tmp_path / "src", "base")
    ref = f"{registry.host}/drv/run:base"
    src = DiskArtifact(root=img.parent, path=img, format="qcow2", size=64 * 1024**2, key="e" * 64)
    transfer.push(src, ref, name="base")
    work = tmp_path / "work"
    art = hooks.lvh_resolve_artifact(kind="disk", ref=ref, workdir=work)
    assert isinstance(art, DiskArtifact) and art.root == work / "cache" / "disk" / ("e" * 64)
    assert art.path.read_bytes() == img.read_bytes()
    assert hooks.lvh_resolve_artifact(kind="disk", ref="oci://" + ref, workdir=work).root == art.root
    assert hooks.lvh_resolve_artifact(kind="disk", ref=str(img), workdir=work) is None  # a local file
    assert hooks.lvh_resolve_artifact(kind="disk", ref="images/base.qcow2", workdir=work) is None
    assert hooks.lvh_resolve_artifact(kind="run", ref=ref, workdir=work) is None
