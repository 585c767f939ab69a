"""Push and pull through a real registry (Debian's docker-registry on 127.0.0.1): lvh's own
format both ways, byte-identical, landing in the workdir cache under the key it was built with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from lvh_oci import transfer
from lvh_oci.reference import parse_platform

from lvh.api import DiskArtifact, KernelArtifact, RootfsArtifact, UserError
from tests import registry_fixture
from tests.registry_fixture import make_disk, make_kernel_dir, tree_digest

registry = registry_fixture.registry

pytestmark = pytest.mark.e2e

KEY_DISK = "d" * 64
KEY_KERNEL = "k" * 64


def _on(platform: str) -> transfer.Options:
    return transfer.Options(platform=parse_platform(platform))


def _disk_entry(tmp: Path) -> DiskArtifact:
    entry = tmp / "src" / "cache" / "disk" / KEY_DISK
    img = make_disk(entry, "base")
    art = DiskArtifact(root=entry, path=img, format="qcow2", size=64 * 1024**2, key=KEY_DISK,
                       meta={"built_by": "test"})
    (entry / "artifact.json").write_text(json.dumps(art.to_json()))
    return art


def _kernel_entry(tmp: Path) -> KernelArtifact:
    entry = tmp / "src" / "cache" / "kernel" / KEY_KERNEL
    make_kernel_dir(entry)
    art = transfer.kernel_from_dir(entry)
    art.key = KEY_KERNEL
    return art


def test_disk_push_pull_lvh_format_is_byte_identical_and_lands_in_cache(registry, tmp_path):
    src = _disk_entry(tmp_path)
    ref = f"{registry.host}/lvh/disks:base-1"
    pushed = transfer.push(src, ref, name="base")
    assert pushed.tags == ["base-1"] and pushed.uploaded > 0

    work = tmp_path / "work"
    got = transfer.pull(ref, "disk", work)
    entry = work / "cache" / "disk" / KEY_DISK
    assert got.artifact.root == entry and got.format == "lvh" and got.name == "base"
    assert got.artifact.path == entry / "base.qcow2"
    assert hashlib.sha256(got.artifact.path.read_bytes()).digest() == \
        hashlib.sha256(src.path.read_bytes()).digest()
    saved = json.loads((entry / "artifact.json").read_text())["artifact"]
    assert saved["key"] == KEY_DISK and saved["format"] == "qcow2" and saved["path"] == "@root/base.qcow2"
    assert saved["meta"]["built_by"] == "test" and saved["meta"]["oci"]["digest"] == got.digest
    assert not list((work / "state" / "oci" / "blobs").iterdir()), "blobs are dropped once extracted"

    again = transfer.pull(ref, "disk", work)
    assert again.cached and again.fetched == 0

    # re-pushing the same artifact sends no layer bytes (the registry has the blob)
    assert transfer.push(src, ref, name="base").uploaded == 0


def test_kernel_push_pull_lvh_format_is_byte_identical(registry, tmp_path):
    src = _kernel_entry(tmp_path)
    ref = f"{registry.host}/lvh/kernels:k61"
    transfer.push(src, ref, name="k61")
    got = transfer.pull(ref, "kernel", tmp_path / "work")
    art = got.artifact
    assert isinstance(art, KernelArtifact) and art.version == "6.1.0-lvhtest" and art.key == KEY_KERNEL
    assert tree_digest(art.root) == tree_digest(src.root)
    assert art.image.read_bytes() == src.image.read_bytes()
    assert (art.modules / "lib/modules/6.1.0-lvhtest/modules.dep").is_file()


def test_pull_of_wrong_kind_is_a_user_error(registry, tmp_path):
    src = _kernel_entry(tmp_path)
    ref = f"{registry.host}/lvh/kernels:kind-check"
    transfer.push(src, ref, name="k")
    with pytest.raises(UserError, match="holds a kernel artifact, not a disk"):
        transfer.pull(ref, "disk", tmp_path / "work")
    assert not (tmp_path / "work" / "cache" / "disk").exists()


def test_pull_into_driver_out_dir(registry, tmp_path):
    src = _disk_entry(tmp_path)
    ref = f"{registry.host}/lvh/disks:into-out"
    transfer.push(src, ref, name="base")
    out = tmp_path / "out"
    out.mkdir()
    got = transfer.pull(ref, "disk", tmp_path / "work", out=out)
    assert got.artifact.root == out and got.artifact.path == out / "base.qcow2"
    assert got.artifact.path.read_bytes() == src.path.read_bytes()
    assert not (tmp_path / "work" / "cache").exists()


def test_rootfs_tarball_push_pull(registry, tmp_path):
    entry = tmp_path / "src"
    entry.mkdir()
    (entry / "rootfs.tar").write_bytes(b"not really a tar but bytes" * 1000)
    src = RootfsArtifact(root=entry, path=entry / "rootfs.tar", format="tar", key="r" * 64)
    ref = f"{registry.host}/lvh/rootfs:bookworm"
    transfer.push(src, ref, name="bookworm")
    got = transfer.pull(ref, "rootfs", tmp_path / "work")
    assert got.artifact.path.read_bytes() == (entry / "rootfs.tar").read_bytes()


def test_untagged_push_uses_upstream_tag_scheme_and_main(registry, tmp_path):
    src = _kernel_entry(tmp_path)
    res = transfer.push(src, f"{registry.host}/lvh/kernel-images", name="6.1", main_tag=True)
    assert res.tags[1] == "6.1-main"
    assert transfer.re.match(r"^6\.1-\d{8}\.\d{6}$", res.tags[0])
    versions = transfer.catalog(f"{registry.host}/lvh/kernel-images")
    assert versions == ["6.1"]
    assert transfer.catalog(f"{registry.host}/lvh/kernel-images", "6.1") == sorted(res.tags)


def test_platform_index_merges_architectures(registry, tmp_path):
    src = _disk_entry(tmp_path)
    ref = f"{registry.host}/lvh/multi:base"
    amd = transfer.Options(platform=parse_platform("linux/amd64"))
    arm = transfer.Options(platform=parse_platform("linux/arm64"))
    a = transfer.push(src, ref, name="base", opts=amd, platform_explicit=True)
    b = transfer.push(src, ref, name="base", opts=arm, platform_explicit=True)
    assert a.digest != b.digest
    got_arm = transfer.pull(ref, "disk", tmp_path / "w1", opts=_on("linux/arm64"))
    got_amd = transfer.pull(ref, "disk", tmp_path / "w2", opts=_on("linux/amd64"))
    assert (got_arm.digest, got_amd.digest) == (b.digest, a.digest)
    with pytest.raises(UserError, match="no image for platform linux/riscv64"):
        transfer.pull(ref, "disk", tmp_path / "w3", opts=_on("linux/riscv64"))


def test_missing_tag_is_one_clear_error(registry, tmp_path):
    with pytest.raises(UserError, match="not found") as ei:
        transfer.pull(f"{registry.host}/lvh/nothing:here", "disk", tmp_path)
    assert ei.value.hint
