"""Upstream's layout (cilium/little-vm-helper-images) both ways, through the CLI commands and a
real registry: images as a layer holding data/images/<name>.qcow2.zst (compressed by the real
zstd tool, pushed by plain HTTP with Docker media types, over a busybox-like base layer), kernels
as data/kernels/<version>/{boot,lib/modules}, upstream's tag scheme and catalog."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvh.api import UserError
from tests import registry_fixture
from tests.registry_fixture import lvh_cli, make_disk, make_kernel_dir, push_raw, tar_bytes, tree_digest

registry = registry_fixture.registry
pytestmark = pytest.mark.e2e

GZ = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _run(*args: str, ok: bool = True):
    r = CliRunner().invoke(lvh_cli(), list(args), catch_exceptions=True)
    if ok:
        assert r.exit_code == 0, (r.output, r.exception)
    return r


def _busybox_layer() -> bytes:
    # What a busybox base layer looks like: dirs, a binary, hardlinks and symlinks to it, a device
    # node. None of it is under data/images, so none of it is extracted (nor rejected).
    return tar_bytes([("bin/", None), ("bin/busybox", b"\x7fELF" + b"x" * 5000),
                      ("bin/sh", "hardlink", "bin/busybox"), ("bin/ls", "symlink", "busybox"),
                      ("dev/", None), ("dev/null", "chr", None), ("etc/", None),
                      ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")], gzip_it=True)


def test_upstream_image_built_by_hand_is_pulled_by_lvh_images_pull(registry, tmp_path):
    zstd = shutil.which("zstd")
    if zstd is None:
        pytest.skip("zstd is not installed (apt-get install zstd)")
    img = make_disk(tmp_path / "build", "kind_6.1")
    # Exactly upstream's recipe: zstd --compress --rm --threads=0 data/images/*.qcow2
    data = tmp_path / "layer" / "data" / "images"
    data.mkdir(parents=True)
    shutil.copyfile(img, data / img.name)
    subprocess.run([zstd, "--compress", "--rm", "-q", "--threads=0", str(data / img.name)], check=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(tmp_path / "layer" / "data", arcname="data")
    push_raw(registry, "lvh-images/kind", ["6.1-20240101.120000", "6.1-main"],
             [(_busybox_layer(), GZ), (buf.getvalue(), "application/vnd.docker.image.rootfs.diff.tar")])

    work = tmp_path / "_data"
    r = _run("images", "pull", f"{registry.host}/lvh-images/kind:6.1-main", "--dir", str(work), "--json")
    out = json.loads(r.output)
    link = work / "images" / "kind_6.1.qcow2"
    assert out["image"] == str(link) and out["format"] == "upstream" and not out["cached"]
    assert link.is_symlink() and _sha(link) == _sha(img)
    # the result is a real qcow2 that qemu-img reads, with the marker we wrote at 40 MiB
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(link)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * 1024**2
    entry = link.resolve().parent
    assert entry.parent == work / "cache" / "disk"
    saved = json.loads((entry / "artifact.json").read_text())["artifact"]
    assert saved["kind"] == "disk" and saved["format"] == "qcow2" and saved["size"] == 64 * 1024**2
    assert sorted(p.name for p in entry.iterdir()) == ["artifact.json", "kind_6.1.qcow2"]

    again = json.loads(_run("images", "pull", f"{registry.host}/lvh-images/kind:6.1-main", "--dir",
                            str(work), "--json").output)
    assert again["cached"] and again["fetched"] == 0


def test_image_push_upstream_format_has_upstream_layout(registry, tmp_path):
    img = make_disk(tmp_path / "build", "base")
    _run("images", "push", str(img), f"{registry.host}/lvh-images/base:6.6-main", "--format", "upstream")
    # Read it back by hand: one layer, a tar holding data/images/base.qcow2.zst, zstd of the image.
    import httpx

    with httpx.Client(base_url=registry.url) as c:
        m = c.get("/v2/lvh-images/base/manifests/6.6-main",
                  headers={"accept": "application/vnd.oci.image.manifest.v1+json"}).json()
        cfg = c.get(f"/v2/lvh-images/base/blobs/{m['config']['digest']}").json()
        layer = c.get(f"/v2/lvh-images/base/blobs/{m['layers'][0]['digest']}").content
    assert cfg["os"] == "linux" and cfg["architecture"] and cfg["config"]["Cmd"]
    assert cfg["rootfs"]["diff_ids"] == [m["layers"][0]["digest"]]  # an uncompressed layer
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        names = tf.getnames()
        zst = tf.extractfile("data/images/base.qcow2.zst").read()
    assert names == ["data", "data/images", "data/images/base.qcow2.zst"]
    (tmp_path / "x.zst").write_bytes(zst)
    subprocess.run(["zstd", "-d", "-q", str(tmp_path / "x.zst"), "-o", str(tmp_path / "x.qcow2")], check=True)
    assert _sha(tmp_path / "x.qcow2") == _sha(img)


def test_kernel_upstream_layout_catalog_and_pull(registry, tmp_path):
    repo = f"{registry.host}/lvh-images/kernel-images"
    kdir = make_kernel_dir(tmp_path / "k" / "tar-install", "6.1.55")
    # Upstream's layout built by hand: data/kernels/6.1/{boot,lib/modules}, gzip layer.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(kdir, arcname="data/kernels/6.1")
    layer = buf.getvalue()
    push_raw(registry, "lvh-images/kernel-images", ["6.1-20240101.010101", "6.1-main"], [(layer, GZ)])
    bpf = tar_bytes([("data/kernels/bpf-next/boot/vmlinuz-6.9.0", b"k" * 1000)], gzip_it=True)
    push_raw(registry, "lvh-images/kernel-images", ["bpf-next-20240404.012646", "bpf-next-main",
                                                     "bpf-next-latest-main", "latest"], [(bpf, GZ)])
    # and one pushed by lvh in upstream's format
    k510 = make_kernel_dir(tmp_path / "k510", "5.10.200")
    _run("kernels", "push", str(k510), repo, "--format", "upstream", "--version", "5.10", "--main")

    assert _run("kernels", "catalog", "--repo", repo).output.split() == ["5.10", "6.1", "bpf-next"]
    tags = _run("kernels", "catalog", "6.1", "--repo", repo).output.split()
    assert tags == ["6.1-20240101.010101", "6.1-main"]
    r = _run("kernels", "catalog", "4.19", "--repo", repo, ok=False)
    assert isinstance(r.exception, UserError) and "5.10, 6.1, bpf-next" in r.exception.hint

    work = tmp_path / "_data"
    out = _run("kernels", "pull", "6.1-main", "--repo", repo, "--dir", str(work)).output.strip()
    assert out == str(work / "kernels" / "6.1-main" / "boot" / "vmlinuz-6.1.55")
    got = work / "kernels" / "6.1-main"
    assert got.is_symlink() and tree_digest(got.resolve()) == tree_digest(kdir)
    saved = json.loads((got / "artifact.json").read_text())["artifact"]
    assert saved["version"] == "6.1.55" and saved["modules"] == "@root/."

    out = json.loads(_run("kernels", "pull", f"{repo}:5.10-main", "--dir", str(work), "--json").output)
    assert out["version"] == "5.10.200" and out["format"] == "upstream"
    assert tree_digest(Path(out["kernel"]).resolve()) == tree_digest(k510)


def test_kernel_push_pull_lvh_format_via_cli(registry, tmp_path):
    kdir = make_kernel_dir(tmp_path / "src" / "k61", "6.1.0-lvh")
    ref = f"{registry.host}/me/kernels:k61"
    _run("kernels", "push", str(kdir), ref)
    work = tmp_path / "_data"
    out = json.loads(_run("kernels", "pull", ref, "--dir", str(work), "--json").output)
    assert out["format"] == "lvh" and out["version"] == "6.1.0-lvh"
    assert tree_digest(Path(out["kernel"]).resolve()) == tree_digest(kdir)


def test_bad_reference_and_bad_tag_are_user_errors(tmp_path):
    r = _run("images", "pull", "Not A Ref", "--dir", str(tmp_path), ok=False)
    assert isinstance(r.exception, UserError)
    r = _run("kernels", "pull", "not-a-kernel-tag", "--dir", str(tmp_path), ok=False)
    assert isinstance(r.exception, UserError) and "catalog" in r.exception.hint
