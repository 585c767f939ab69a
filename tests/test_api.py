"""lvh.api: artifacts round-trip through their JSON record; sizes and port forwards parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvh.api import DiskArtifact, KernelArtifact, PortForward, parse_size


def test_artifact_round_trip_rebases_own_paths_and_keeps_others(tmp_path):
    old, new = tmp_path / "tmp", tmp_path / "cache" / "k"
    d = DiskArtifact(root=old, path=old / "disk.qcow2", format="qcow2", backing=Path("/cache/parent/disk.qcow2"),
                     kernel="/vmlinuz", initrd="/initrd.img", meta={"note": "/not/a/path"})
    back = d.rebased(new)
    assert back.path == new / "disk.qcow2"
    assert back.backing == Path("/cache/parent/disk.qcow2")
    assert back.kernel == "/vmlinuz" and isinstance(back.kernel, str)
    assert back.meta == {"note": "/not/a/path"}
    k = KernelArtifact(root=old, image=old / "boot" / "vmlinuz", version="6.1", modules=old)
    kb = KernelArtifact.from_json(k.to_json(), new)
    assert kb.image == new / "boot" / "vmlinuz" and kb.modules == new and kb.config is None


@pytest.mark.parametrize("text,n", [("2G", 2 * 1024**3), ("512M", 512 * 1024**2), ("1.5G", int(1.5 * 1024**3)),
                                    ("4096", 4096), (1024, 1024), ("10GiB", 10 * 1024**3)])
def test_sizes(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "lots", "-1G", "0", True])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_port_forwards():
    assert PortForward.parse("2222:22") == PortForward(2222, 22, "tcp", "127.0.0.1")
    assert PortForward.parse("8080") == PortForward(8080, 8080)
    assert PortForward.parse("5353:53:udp") == PortForward(5353, 53, "udp")
    assert PortForward.parse("0.0.0.0:2222:22").host_addr == "0.0.0.0"
    with pytest.raises(ValueError, match="hostport"):
        PortForward.parse("22:ssh")
