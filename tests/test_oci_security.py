"""Hostile and broken input against a real registry: a corrupted blob, tars with ``../`` names,
escaping links, device nodes, size bombs — each rejected with nothing written; and interrupted
pulls (Ctrl-C, a connection cut mid-blob) resumed from where they stopped."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from pathlib import Path

import pytest
import zstandard
from lvh_oci import media, transfer
from lvh_oci.archive import Limits, UnsafeArchive
from lvh_oci.client import DigestMismatch

from lvh.api import Cancelled, DiskArtifact, StageError, UserError
from tests import registry_fixture
from tests.registry_fixture import make_disk, push_raw, tar_bytes

registry = registry_fixture.registry
pytestmark = pytest.mark.e2e


def _nothing_written(work: Path) -> None:
    """No cache entry, no extracted file, no partial download anywhere under ``work``."""
    cache = work / "cache"
    entries = [p for p in cache.rglob("*") if p.parent != cache or p.name != ".tmp"] if cache.exists() else []
    assert entries in ([], [cache / "disk"], [cache / "kernel"]), entries
    tmp = cache / ".tmp"
    assert not tmp.exists() or not list(tmp.iterdir()), list(tmp.iterdir())
    blobs = work / "state" / "oci" / "blobs"
    assert not blobs.exists() or not [p for p in blobs.iterdir() if p.name.endswith(".partial")]


def _push_lvh_disk(registry, tmp_path: Path, tag: str, *, random_mb: int = 3) -> DiskArtifact:
    entry = tmp_path / "src" / tag
    img = make_disk(entry, "base", random_mb=random_mb)
    art = DiskArtifact(root=entry, path=img, format="qcow2", size=64 * 1024**2, key="c" * 64)
    transfer.push(art, f"{registry.host}/sec/disk:{tag}", name="base")
    return art


def _manifest(registry, repo: str, tag: str) -> dict:
    import httpx

    return httpx.get(f"{registry.url}/v2/{repo}/manifests/{tag}",
                     headers={"accept": media.OCI_MANIFEST + "," + media.DOCKER_MANIFEST}).json()


def _lvh_config(kind: str = "disk", artifact: dict | None = None) -> dict:
    return {"lvh": 1, "kind": kind, "name": "evil",
            "artifact": artifact or {"kind": kind, "path": "@root/base.qcow2", "format": "qcow2"}}


def _push_hostile_lvh(registry, tag: str, entries: list, kind: str = "disk", artifact: dict | None = None):
    layer = zstandard.ZstdCompressor().compress(tar_bytes(entries))
    cfg = json.dumps(_lvh_config(kind, artifact)).encode()
    import httpx

    def blob(c, data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        loc = c.post("/v2/sec/hostile/blobs/uploads/").headers["location"]
        assert c.put(loc + "&digest=" + d, content=data).status_code == 201
        return d

    with httpx.Client(base_url=registry.url) as c:
        m = {"schemaVersion": 2, "mediaType": media.OCI_MANIFEST,
             "config": {"mediaType": media.LVH_CONFIG, "digest": blob(c, cfg), "size": len(cfg)},
             "layers": [{"mediaType": media.LAYER_ZSTD, "digest": blob(c, layer), "size": len(layer)}]}
        r = c.put(f"/v2/sec/hostile/manifests/{tag}", content=json.dumps(m).encode(),
                  headers={"content-type": media.OCI_MANIFEST})
        assert r.status_code == 201, r.text
    return f"{registry.host}/sec/hostile:{tag}"


# --- corrupted blobs ---------------------------------------------------------------------------


def test_corrupted_layer_blob_is_rejected_and_nothing_kept(registry, tmp_path):
    _push_lvh_disk(registry, tmp_path, "corrupt")
    layer = _manifest(registry, "sec/disk", "corrupt")["layers"][0]["digest"]
    stored = registry.blob_path(layer)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the registry's storage
    stored.write_bytes(bytes(data))
    work = tmp_path / "work"
    with pytest.raises(DigestMismatch, match="corrupted") as ei:
        transfer.pull(f"{registry.host}/sec/disk:corrupt", "disk", work)
    assert isinstance(ei.value, StageError) and "nothing was kept" in str(ei.value)
    _nothing_written(work)


def test_corrupted_config_blob_is_rejected(registry, tmp_path):
    _push_lvh_disk(registry, tmp_path, "badcfg")
    cfg = _manifest(registry, "sec/disk", "badcfg")["config"]["digest"]
    stored = registry.blob_path(cfg)
    stored.write_bytes(stored.read_bytes().replace(b'"disk"', b'"kern"'))
    with pytest.raises(DigestMismatch):
        transfer.pull(f"{registry.host}/sec/disk:badcfg", "disk", tmp_path / "work")
    _nothing_written(tmp_path / "work")


# --- hostile archives ----------------------------------------------------------------------------


@pytest.mark.parametrize("entries, match", [
    ([("base.qcow2", b"QFI\xfb" + b"\0" * 100), ("../evil", b"pwned")], "escapes the target"),
    ([("base.qcow2", b"x"), ("a/../../evil", b"pwned")], "escapes the target"),
    ([("/etc/evil", b"pwned")], "absolute"),
    ([("link", "symlink", "/etc"), ("link/evil", b"pwned")], "points outside"),
    ([("link", "symlink", "../../.."), ("base.qcow2", b"x")], "points outside"),
    ([("base.qcow2", "hardlink", "/etc/passwd")], "hard link"),
    ([("base.qcow2", b"x"), ("evil", "chr", None)], "device"),
])
def test_hostile_lvh_layer_is_rejected_with_nothing_written(registry, tmp_path, entries, match):
    ref = _push_hostile_lvh(registry, f"h{abs(hash(str(entries))) % 10**8}", entries)
    work = tmp_path / "work"
    with pytest.raises(UnsafeArchive, match=match) as ei:
        transfer.pull(ref, "disk", work)
    assert isinstance(ei.value, UserError) and ei.value.hint
    _nothing_written(work)
    assert not list(tmp_path.rglob("evil")) and not (Path("/etc/evil")).exists()


def test_config_naming_paths_outside_is_rejected(registry, tmp_path):
    ref = _push_hostile_lvh(registry, "abspath", [("base.qcow2", b"x")],
                            artifact={"kind": "disk", "path": "/etc/passwd", "format": "raw"})
    with pytest.raises(UnsafeArchive, match="absolute path"):
        transfer.pull(ref, "disk", tmp_path / "work")
    ref = _push_hostile_lvh(registry, "relpath", [("base.qcow2", b"x")],
                            artifact={"kind": "disk", "path": "@root/../../../etc/passwd", "format": "raw"})
    with pytest.raises(UnsafeArchive, match="outside itself"):
        transfer.pull(ref, "disk", tmp_path / "work")
    _nothing_written(tmp_path / "work")


def test_upstream_layer_with_dotdot_is_rejected(registry, tmp_path):
    zst = zstandard.ZstdCompressor().compress(b"QFI\xfb" + b"\0" * 1000)
    layer = tar_bytes([("data/", None), ("data/images/", None), ("data/images/base.qcow2.zst", zst),
                       ("data/images/../../../evil.qcow2.zst", zst)], gzip_it=True)
    push_raw(registry, "sec/upstream", ["dotdot"], [(layer, media.DOCKER_LAYER_GZIP)])
    with pytest.raises(UnsafeArchive, match="escapes"):
        transfer.pull(f"{registry.host}/sec/upstream:dotdot", "disk", tmp_path / "work")
    _nothing_written(tmp_path / "work")
    assert not list(tmp_path.rglob("evil*"))


def test_upstream_kernel_with_escaping_symlink_is_rejected(registry, tmp_path):
    layer = tar_bytes([("data/kernels/6.1/boot", "symlink", "/etc"),
                       ("data/kernels/6.1/boot/vmlinuz-6.1", b"k")], gzip_it=True)
    push_raw(registry, "sec/kernel", ["6.1-main"], [(layer, media.DOCKER_LAYER_GZIP)])
    with pytest.raises(UnsafeArchive, match="points outside"):
        transfer.pull(f"{registry.host}/sec/kernel:6.1-main", "kernel", tmp_path / "work")
    _nothing_written(tmp_path / "work")


def test_zstd_bomb_stops_at_the_size_limit(registry, tmp_path):
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\xab" * (64 * 1024**2))  # ~2 KiB → 64 MiB
    layer = tar_bytes([("data/images/base.qcow2.zst", bomb)])
    push_raw(registry, "sec/bomb", ["v1"], [(layer, "application/vnd.oci.image.layer.v1.tar")])
    opts = transfer.Options(limits=Limits(max_bytes=8 * 1024**2))
    with pytest.raises(UnsafeArchive, match="limit"):
        transfer.pull(f"{registry.host}/sec/bomb:v1", "disk", tmp_path / "work", opts=opts)
    _nothing_written(tmp_path / "work")


# --- interrupted pulls -----------------------------------------------------------------------------


class _CancelAfter:
    """A progress factory whose bar sets ``cancel`` once ``limit`` bytes have come (Ctrl-C)."""

    def __init__(self, limit: int) -> None:
        self.cancel = threading.Event()
        self.limit, self.seen = limit, 0

    def __call__(self, description, total):
        from contextlib import nullcontext

        outer = self

        class Bar:
            def update(self, *, advance=None, **kw):
                outer.seen += advance or 0
                if outer.seen >= outer.limit:
                    outer.cancel.set()

        return nullcontext(Bar())


def test_interrupted_pull_resumes_where_it_stopped(registry, tmp_path):
    src = _push_lvh_disk(registry, tmp_path, "resume", random_mb=6)
    layer = _manifest(registry, "sec/disk", "resume")["layers"][0]
    work = tmp_path / "work"
    stop = _CancelAfter(2 * 1024**2)
    with pytest.raises(Cancelled):
        transfer.pull(f"{registry.host}/sec/disk:resume", "disk", work,
                      opts=transfer.Options(progress=stop, cancel=stop.cancel))
    partial = work / "state/oci/blobs" / (layer["digest"].replace(":", "-") + ".partial")
    kept = partial.stat().st_size
    assert 0 < kept < layer["size"]
    assert not (work / "cache" / "disk" / ("c" * 64)).exists()

    got = transfer.pull(f"{registry.host}/sec/disk:resume", "disk", work)
    assert got.fetched == layer["size"] - kept, "only the missing bytes are fetched"
    assert got.artifact.path.read_bytes() == src.path.read_bytes()
    assert not partial.exists()


class _Proxy:
    """A TCP proxy on 127.0.0.1 (``port``); each connection goes to ``_handle`` in a thread."""

    def _listen(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class _CuttingProxy(_Proxy):
    """A TCP proxy to the registry that cuts the first blob download after ``cut`` bytes of the
    response — a network failure in the middle of a layer."""

    def __init__(self, upstream_port: int, digest: str, cut: int) -> None:
        self.upstream, self.digest, self.cut = upstream_port, digest, cut
        self.cuts = 0
        self._listen()

    def _handle(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.upstream))
        state = {"cut": False, "sent": 0}

        def up() -> None:
            try:
                while data := client.recv(65536):
                    if (f"GET /v2/sec/disk/blobs/{self.digest}".encode() in data and self.cuts == 0
                            and b"Range" not in data and b"range" not in data):
                        self.cuts += 1
                        state["cut"] = True
                    server.sendall(data)
            except OSError:
                pass

        threading.Thread(target=up, daemon=True).start()
        try:
            while data := server.recv(65536):
                client.sendall(data)
                state["sent"] += len(data)
                if state["cut"] and state["sent"] >= self.cut:
                    break
        except OSError:
            pass
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()



class _UploadProxy(_Proxy):
    """A TCP proxy that counts PATCH requests and cuts the ``cut_nth`` one after ``cut`` bytes."""

    def __init__(self, upstream_port: int, cut_nth: int, cut: int) -> None:
        self.upstream, self.cut_nth, self.cut = upstream_port, cut_nth, cut
        self.patches = 0
        self.cuts = 0
        self._listen()

    def _handle(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.upstream))

        def down() -> None:
            try:
                while data := server.recv(65536):
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=down, daemon=True).start()
        sent_in_patch = None
        try:
            while data := client.recv(65536):
                if data.startswith(b"PATCH "):
                    self.patches += 1
                    sent_in_patch = 0 if self.patches == self.cut_nth else None
                if sent_in_patch is not None:
                    sent_in_patch += len(data)
                    if sent_in_patch >= self.cut:
                        self.cuts += 1
                        server.sendall(data[: len(data) - (sent_in_patch - self.cut)])
                        break
                server.sendall(data)
        except OSError:
            pass
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()



def test_chunked_upload_survives_a_cut_chunk(registry, tmp_path, monkeypatch):
    from lvh_oci.client import RegistryClient

    monkeypatch.setattr(RegistryClient, "chunk_size", 1024 * 1024)
    img = make_disk(tmp_path / "src", "base", random_mb=6)
    art = DiskArtifact(root=img.parent, path=img, format="qcow2", size=64 * 1024**2)
    proxy = _UploadProxy(registry.port, cut_nth=3, cut=300 * 1024)
    try:
        transfer.push(art, f"127.0.0.1:{proxy.port}/sec/chunked:v1", name="base")
    finally:
        proxy.close()
    # distribution drops an upload whose PATCH broke (its status answers 404), so the blob is sent
    # again from its start; a registry that keeps it is resumed at the offset its status gives.
    assert proxy.cuts == 1 and proxy.patches >= 7, (proxy.cuts, proxy.patches)
    got = transfer.pull(f"{registry.host}/sec/chunked:v1", "disk", tmp_path / "w")
    assert got.artifact.path.read_bytes() == img.read_bytes()


def test_connection_cut_mid_blob_is_retried_from_the_break(registry, tmp_path):
    src = _push_lvh_disk(registry, tmp_path, "cut", random_mb=6)
    layer = _manifest(registry, "sec/disk", "cut")["layers"][0]
    proxy = _CuttingProxy(registry.port, layer["digest"], 3 * 1024**2)
    try:
        got = transfer.pull(f"127.0.0.1:{proxy.port}/sec/disk:cut", "disk", tmp_path / "work",
                            opts=transfer.Options(retries=3))
    finally:
        proxy.close()
    assert proxy.cuts == 1
    # resumed, not restarted: the bytes before the cut are not fetched twice
    assert got.fetched == layer["size"], (got.fetched, layer["size"])
    assert got.artifact.path.read_bytes() == src.path.read_bytes()



@pytest.mark.parametrize("layers, match", [
    ([{"mediaType": media.LAYER_ZSTD, "digest": "sha256:" + "a" * 64, "size": "12"}], "valid size"),
    ([{"mediaType": media.LAYER_ZSTD, "digest": "sha256:" + "a" * 64, "size": -1}], "valid size"),
    ([{"mediaType": media.LAYER_ZSTD, "digest": "md5:abc", "size": 1}], "bad digest"),
    ([{"mediaType": media.LAYER_ZSTD, "digest": "sha256:../../x", "size": 1}], "bad digest"),
    ("not a list", "malformed layer list"),
])
def test_malformed_layer_descriptors_are_one_clear_error(tmp_path, layers, match):
    # Real registries refuse such manifests; a hostile server would not. Nothing is fetched.
    from lvh_oci.reference import parse_reference

    res = transfer.Resolved(parse_reference("127.0.0.1:1/x:y"), "sha256:" + "0" * 64,
                            {"layers": layers}, media.LVH_CONFIG, {})
    with pytest.raises(UserError, match=match):
        transfer._download_layers(None, res, tmp_path, transfer.Options())  # type: ignore[arg-type]
