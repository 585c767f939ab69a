"""Credentials: a real registry with basic auth (htpasswd), credentials from the environment,
docker's config.json and a credential helper (a real program on PATH); the bearer-token dance
against a small token server; references, platforms and loopback detection."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from lvh_oci import transfer
from lvh_oci.auth import find_credentials
from lvh_oci.client import RegistryClient
from lvh_oci.reference import is_loopback, looks_like_reference, parse_platform, parse_reference

from lvh.api import DiskArtifact, UserError
from tests.registry_fixture import make_disk, start_registry, stop_registry


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No credentials from the machine running the tests."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for k in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "LVH_REGISTRY_TOKEN",
              "LVH_REGISTRY_USERNAME", "LVH_REGISTRY_PASSWORD", "LVH_REGISTRY_HOST"):
        monkeypatch.delenv(k, raising=False)
    return home


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    server = start_registry(tmp_path_factory.mktemp("authreg"), users={"ci": "s3cret"})
    yield server
    stop_registry(server.proc)


def _art(tmp: Path) -> DiskArtifact:
    img = make_disk(tmp / "src", "base", random_mb=1)
    return DiskArtifact(root=img.parent, path=img, format="qcow2", size=64 * 1024**2)


@pytest.mark.e2e
def test_anonymous_access_to_a_locked_registry_is_refused_with_a_hint(locked, clean_env, tmp_path):
    with pytest.raises(UserError, match="access denied") as ei:
        transfer.push(_art(tmp_path), f"{locked.host}/auth/img:v1", name="base")
    assert "docker login" in ei.value.hint


@pytest.mark.e2e
def test_credentials_from_env(locked, clean_env, tmp_path, monkeypatch):
    monkeypatch.setenv("LVH_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("LVH_REGISTRY_PASSWORD", "s3cret")
    art = _art(tmp_path)
    transfer.push(art, f"{locked.host}/auth/img:env", name="base")
    got = transfer.pull(f"{locked.host}/auth/img:env", "disk", tmp_path / "w")
    assert got.artifact.path.read_bytes() == art.path.read_bytes()
    monkeypatch.setenv("LVH_REGISTRY_PASSWORD", "wrong")
    with pytest.raises(UserError, match="access denied") as ei:
        transfer.pull(f"{locked.host}/auth/img:env", "disk", tmp_path / "w2")
    assert "LVH_REGISTRY_USERNAME" in ei.value.hint


@pytest.mark.e2e
def test_credentials_from_docker_config(locked, clean_env, tmp_path, monkeypatch):
    cfg = tmp_path / "docker"
    cfg.mkdir()
    auth = base64.b64encode(b"ci:s3cret").decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {f"https://{locked.host}": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    transfer.push(_art(tmp_path), f"{locked.host}/auth/img:cfg", name="base")
    assert transfer.pull(f"{locked.host}/auth/img:cfg", "disk", tmp_path / "w").format == "lvh"


@pytest.mark.e2e
def test_credentials_from_a_credential_helper(locked, clean_env, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "asked"
    helper = bin_dir / "docker-credential-lvhtest"
    helper.write_text(f"""#!/bin/sh
[ "$1" = get ] || exit 1
cat > {asked}
echo '{{"ServerURL": "x", "Username": "ci", "Secret": "s3cret"}}'
""")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    (clean_env / ".docker").mkdir()
    (clean_env / ".docker" / "config.json").write_text(json.dumps({"credHelpers": {locked.host: "lvhtest"}}))
    transfer.push(_art(tmp_path), f"{locked.host}/auth/img:helper", name="base")
    assert asked.read_text() == locked.host
    c = find_credentials(locked.host)
    assert c.username == "ci" and "s3cret" not in repr(c)


def test_missing_credential_helper_is_a_user_error(clean_env):
    (clean_env / ".docker").mkdir()
    (clean_env / ".docker" / "config.json").write_text(json.dumps({"credsStore": "nonexistent-helper"}))
    with pytest.raises(UserError, match="docker-credential-nonexistent-helper"):
        find_credentials("quay.io")


def test_podman_auth_file_and_host_restriction(clean_env, tmp_path, monkeypatch):
    f = tmp_path / "auth.json"
    f.write_text(json.dumps({"auths": {"ghcr.io": {"auth": base64.b64encode(b"me:tok").decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(f))
    assert find_credentials("ghcr.io").password == "tok"
    assert find_credentials("quay.io") is None
    monkeypatch.setenv("LVH_REGISTRY_TOKEN", "bearer-tok")
    monkeypatch.setenv("LVH_REGISTRY_HOST", "quay.io")
    assert find_credentials("quay.io").token == "bearer-tok"
    assert find_credentials("ghcr.io").password == "tok"  # the env token is for quay.io only


class _TokenRegistry(BaseHTTPRequestHandler):
    """A registry that wants a bearer token from its token service (as Docker Hub, quay, ghcr do)."""

    token_requests: list[dict[str, str]] = []

    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path.startswith("/token"):
            from urllib.parse import parse_qs, urlparse

            q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            q["authorization"] = self.headers.get("Authorization", "")
            _TokenRegistry.token_requests.append(q)
            if q["authorization"] != "Basic " + base64.b64encode(b"bob:pw").decode():
                return self._send(401, {"errors": [{"code": "UNAUTHORIZED"}]})
            return self._send(200, {"token": "t0k", "expires_in": 300})
        if self.headers.get("Authorization") != "Bearer t0k":
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{port}/token",'
                             f'service="fake",scope="repository:lvh/k:pull"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.path.startswith("/v2/lvh/k/tags/list"):
            return self._send(200, {"name": "lvh/k", "tags": ["6.1-main", "6.1-20240101.000000"]})
        return self._send(404, {"errors": [{"code": "NAME_UNKNOWN"}]})

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_bearer_token_flow(clean_env, monkeypatch):
    srv = HTTPServer(("127.0.0.1", 0), _TokenRegistry)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{srv.server_address[1]}"
    try:
        monkeypatch.setenv("LVH_REGISTRY_USERNAME", "bob")
        monkeypatch.setenv("LVH_REGISTRY_PASSWORD", "pw")
        _TokenRegistry.token_requests = []
        with RegistryClient(host) as c:
            assert c.list_tags("lvh/k") == ["6.1-main", "6.1-20240101.000000"]
            assert c.list_tags("lvh/k")  # the token is reused
        assert len(_TokenRegistry.token_requests) == 1
        assert _TokenRegistry.token_requests[0]["scope"] == "repository:lvh/k:pull"
        assert _TokenRegistry.token_requests[0]["service"] == "fake"
        monkeypatch.setenv("LVH_REGISTRY_PASSWORD", "nope")
        with RegistryClient(host) as c, pytest.raises(UserError, match="refused the credentials"):
            c.list_tags("lvh/k")
    finally:
        srv.shutdown()


@pytest.mark.parametrize("text, want", [
    ("quay.io/lvh-images/kernel-images:6.6-main", ("quay.io", "lvh-images/kernel-images", "6.6-main", None)),
    ("oci://127.0.0.1:5000/a/b:v1", ("127.0.0.1:5000", "a/b", "v1", None)),
    ("debian:bookworm", ("docker.io", "library/debian", "bookworm", None)),
    ("localhost/x", ("localhost", "x", None, None)),
    ("ghcr.io/o/r@sha256:" + "a" * 64, ("ghcr.io", "o/r", None, "sha256:" + "a" * 64)),
])
def test_parse_reference(text, want):
    r = parse_reference(text)
    assert (r.registry, r.repository, r.tag, r.digest) == want


@pytest.mark.parametrize("text", ["", "Upper/Case:tag", "a/b:bad tag", "x@sha256:short", "a//b"])
def test_bad_references(text):
    with pytest.raises(UserError):
        parse_reference(text)


def test_reference_or_path():
    assert looks_like_reference("quay.io/lvh-images/kind:6.6-main")
    assert looks_like_reference("oci://anything:1")
    assert looks_like_reference("127.0.0.1:5000/a@sha256:" + "b" * 64)
    for path in ("_data/images/base.qcow2", "images/base.qcow2", "./x:y", "/abs/path.qcow2", "base.qcow2",
                 "quay.io/lvh-images/kind"):
        assert not looks_like_reference(path), path


def test_loopback_and_platform():
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:5000")
    assert not is_loopback("quay.io") and not is_loopback("10.0.0.1:5000")
    assert str(parse_platform("linux/aarch64")) == "linux/arm64"
    with pytest.raises(UserError):
        parse_platform("amd64")


class _ResumableUploads(BaseHTTPRequestHandler):
    """An upload endpoint that keeps the bytes of a broken PATCH and reports them (as the spec's
    upload status allows); the second PATCH breaks after half its body."""

    protocol_version = "HTTP/1.1"
    data = bytearray()
    patches = 0
    finished: list[str] = []

    def log_message(self, *a):
        pass

    def _empty(self, code, headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._empty(404)

    def do_POST(self):
        self._empty(202, [("Location", "/v2/r/blobs/uploads/u1")])

    def do_GET(self):
        self._empty(204, [("Location", "/v2/r/blobs/uploads/u1"), ("Range", f"0-{len(self.data) - 1}")])

    def do_PATCH(self):
        cls = type(self)
        cls.patches += 1
        start = int(self.headers["Content-Range"].split("-")[0])
        assert start == len(cls.data), (start, len(cls.data))
        n = int(self.headers["Content-Length"])
        if cls.patches == 2:
            cls.data += self.rfile.read(n // 2)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        cls.data += self.rfile.read(n)
        self._empty(202, [("Location", "/v2/r/blobs/uploads/u1"), ("Range", f"0-{len(cls.data) - 1}")])

    def do_PUT(self):
        n = int(self.headers.get("Content-Length") or 0)
        type(self).data += self.rfile.read(n)
        type(self).finished.append(self.path.split("digest=")[1])
        self._empty(201)


def test_chunked_upload_resumes_at_the_offset_the_registry_reports(clean_env):
    import hashlib
    import os

    srv = HTTPServer(("127.0.0.1", 0), _ResumableUploads)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    blob = os.urandom(5 * 1024 * 1024 + 123)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    _ResumableUploads.data, _ResumableUploads.patches, _ResumableUploads.finished = bytearray(), 0, []
    try:
        with RegistryClient(f"127.0.0.1:{srv.server_address[1]}", backoff=0.01) as c:
            c.chunk_size = 1024 * 1024
            assert c.upload_blob("r", digest, len(blob), lambda off: [blob[off:]])
    finally:
        srv.shutdown()
    assert bytes(_ResumableUploads.data) == blob and _ResumableUploads.finished == [digest]
    # chunks 0-1M, 1-2M (broke after 0.5M: kept), then 1.5M-2.5M … 4.5M-end: resumed, not restarted
    assert _ResumableUploads.patches == 6
