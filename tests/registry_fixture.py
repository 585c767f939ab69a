"""A real OCI registry for tests: Debian's ``docker-registry`` (distribution 2.x) on 127.0.0.1.

``registry`` (session-scoped) starts one server on a free port with a temporary storage dir, waits
until ``/v2/`` answers, yields a :class:`RegistryServer`, and stops it after the session. Tests skip
with a clear reason only when the binary is absent (``apt-get install docker-registry``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REGISTRY_BIN = os.environ.get("LVH_TEST_REGISTRY_BIN") or shutil.which("docker-registry") or (
    "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None)

CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
{auth}"""

AUTH = """auth:
  htpasswd:
    realm: lvh-test
    path: {htpasswd}
"""


@dataclass
class RegistryServer:
    """A running registry: ``host`` is ``127.0.0.1:PORT`` (use it in references)."""

    host: str
    port: int
    storage: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (to corrupt it in a test)."""
        algo, hexd = digest.split(":", 1)
        return (self.storage / "docker/registry/v2/blobs" / algo / hexd[:2] / hexd / "data")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(workdir: Path, timeout: float = 20.0, *, users: dict[str, str] | None = None) -> RegistryServer:
    """Start a registry storing under ``workdir``; ``users`` ({name: password}) turns on basic auth
    (htpasswd, bcrypt)."""
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # a free port may be taken between probe and bind: retry
        port = _free_port()
        cfg = workdir / "config.yml"
        auth = ""
        if users:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    import crypt  # bcrypt from libcrypt; the registry only reads bcrypt htpasswd
                except ImportError:  # Python >= 3.13
                    pytest.skip("no crypt module to write a bcrypt htpasswd for the registry")
            htpasswd = workdir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n"
                                        for u, p in users.items()))
            auth = AUTH.format(htpasswd=htpasswd)
        cfg.write_text(CONFIG.format(storage=storage, port=port, auth=auth))
        log = workdir / "registry.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
                    if r.status == 200:
                        return RegistryServer(f"127.0.0.1:{port}", port, storage, log, proc)
            except urllib.error.HTTPError as e:
                if e.code == 401 and users:  # up, and asking for credentials
                    return RegistryServer(f"127.0.0.1:{port}", port, storage, log, proc)
                time.sleep(0.05)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        stop_registry(proc)
        last_error = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"docker-registry did not start: {last_error}")


def stop_registry(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_shared: dict[str, object] = {"server": None, "tmp": None, "users": 0}


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """One registry for the whole session. Test modules import this fixture, which makes one
    fixture definition per module: they share the server (counted), the last one stops it."""
    if _shared["server"] is None:
        tmp = Path(tempfile.mkdtemp(prefix="lvh-registry-"))
        _shared.update(server=start_registry(tmp), tmp=tmp)
    _shared["users"] = int(_shared["users"]) + 1  # type: ignore[call-overload]
    server = _shared["server"]
    assert isinstance(server, RegistryServer)
    try:
        yield server
    finally:
        _shared["users"] = int(_shared["users"]) - 1  # type: ignore[call-overload]
        if _shared["users"] == 0:
            stop_registry(server.proc)
            shutil.rmtree(_shared["tmp"], ignore_errors=True)  # type: ignore[arg-type]
            _shared.update(server=None, tmp=None)


# --- small, real test artifacts ---------------------------------------------------------------


def make_disk(root: Path, name: str = "base", *, random_mb: int = 3, seed: int = 1) -> Path:
    """A qcow2 image (64 MiB virtual) holding ``random_mb`` MiB of incompressible data and holes,
    made with the real ``qemu-img``. Returns its path."""
    import random

    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        pytest.skip("qemu-img is not installed (apt-get install qemu-utils)")
    root.mkdir(parents=True, exist_ok=True)
    raw = root / f"{name}.raw"
    rng = random.Random(seed)
    with raw.open("wb") as fh:
        fh.truncate(64 * 1024**2)
        fh.seek(1024**2)
        fh.write(rng.randbytes(random_mb * 1024**2))
        fh.seek(40 * 1024**2)
        fh.write(b"lvh-test-marker" * 100)
    out = root / f"{name}.qcow2"
    subprocess.run([qemu_img, "convert", "-O", "qcow2", str(raw), str(out)], check=True)
    raw.unlink()
    return out


def make_kernel_dir(root: Path, version: str = "6.1.0-lvhtest", *, seed: int = 2) -> Path:
    """A kernel in upstream's layout: boot/vmlinuz-<v> (this host's real kernel when there is one,
    else random bytes), boot/config-<v>, boot/System.map-<v>, lib/modules/<v>/{modules.dep,kernel/…}."""
    import glob
    import random

    rng = random.Random(seed)
    boot = root / "boot"
    mods = root / "lib" / "modules" / version
    (mods / "kernel" / "net").mkdir(parents=True, exist_ok=True)
    boot.mkdir(parents=True, exist_ok=True)
    host = sorted(glob.glob("/boot/vmlinuz-*"))
    if host and os.access(host[-1], os.R_OK):
        shutil.copyfile(host[-1], boot / f"vmlinuz-{version}")
    else:
        (boot / f"vmlinuz-{version}").write_bytes(rng.randbytes(2 * 1024**2))
    (boot / f"config-{version}").write_text("CONFIG_BPF=y\nCONFIG_VIRTIO_BLK=y\n")
    (boot / f"System.map-{version}").write_text("ffffffff81000000 T _text\n")
    (mods / "modules.dep").write_text("kernel/net/dummy.ko:\n")
    (mods / "kernel" / "net" / "dummy.ko").write_bytes(rng.randbytes(300 * 1024))
    (mods / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every regular file under ``root`` (artifact.json excluded)."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != "artifact.json":
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def push_raw(server: RegistryServer, repo: str, tags: list[str], layers: list[tuple[bytes, str]],
             config: dict | None = None, *, docker: bool = True) -> str:
    """Push an image by plain HTTP calls (independent of lvh's client): ``layers`` are
    (blob bytes, media type). Docker schema 2 media types by default, as upstream's images have.
    Returns the manifest digest."""
    import hashlib
    import json

    import httpx

    def put_blob(c: httpx.Client, data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        r = c.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        loc = r.headers["location"]
        r = c.put(loc + ("&" if "?" in loc else "?") + f"digest={d}", content=data)
        assert r.status_code == 201, r.text
        return d

    config = config or {"architecture": "amd64", "os": "linux", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": []}}
    with httpx.Client(base_url=server.url) as c:
        cfg = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": ("application/vnd.docker.distribution.manifest.v2+json" if docker
                          else "application/vnd.oci.image.manifest.v1+json"),
            "config": {"mediaType": ("application/vnd.docker.container.image.v1+json" if docker
                                     else "application/vnd.oci.image.config.v1+json"),
                       "digest": put_blob(c, cfg), "size": len(cfg)},
            "layers": [{"mediaType": mt, "digest": put_blob(c, data), "size": len(data)}
                       for data, mt in layers],
        }
        body = json.dumps(manifest).encode()
        for t in tags:
            r = c.put(f"/v2/{repo}/manifests/{t}", content=body,
                      headers={"content-type": manifest["mediaType"]})
            assert r.status_code == 201, r.text
    return "sha256:" + hashlib.sha256(body).hexdigest()


def tar_bytes(entries: list[tuple], *, gzip_it: bool = False) -> bytes:
    """A tar made by hand: entries are (name, bytes) files, (name, None) dirs, or
    (name, "symlink"|"hardlink"|"chr", target) specials — to build hostile layers too."""
    import gzip as _gzip
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e[0])
            ti.mtime = 1700000000
            if len(e) == 3:
                ti.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                           "chr": tarfile.CHRTYPE}[e[1]]
                ti.linkname = e[2] or ""
                tf.addfile(ti)
            elif e[1] is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(e[1]), 0o644
                tf.addfile(ti, io.BytesIO(e[1]))
    data = buf.getvalue()
    return _gzip.compress(data, mtime=0) if gzip_it else data


def lvh_cli():
    """The ``lvh`` click group with lvh_oci's commands added by its hook (the real CLI when it
    exists, else a bare group), for CliRunner."""
    import click

    try:
        from lvh.cli.main import cli as real  # the lead's CLI, once merged
        return real
    except ImportError:
        pass

    @click.group()
    def cli() -> None:
        pass

    from lvh_oci.hooks import lvh_cli_commands

    lvh_cli_commands(cli=cli)
    return cli
