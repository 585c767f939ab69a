"""Push and pull artifacts (disks, kernels, rootfs tarballs) to and from OCI registries.

Pull lands an artifact either in the workdir cache (``<workdir>/cache/<kind>/<key>/`` with its
files and ``artifact.json``, published by an atomic rename — the layout docs/internals.md gives,
so the engine sees it as if built here) or in a directory the caller owns (a driver's ``ctx.out``).
Blobs are downloaded to ``<workdir>/state/oci/blobs/`` first (resumable, digest-verified) and only
then extracted, into a fresh directory that is removed on any error.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lvh.api import (
    Artifact,
    DiskArtifact,
    KernelArtifact,
    RootfsArtifact,
    StageError,
    UserError,
)

from . import media
from .archive import (
    Limits,
    UnsafeArchive,
    copy_sparse,
    extract_tar,
    make_layer,
    open_decompressed,
    tree_entries,
)
from .client import RegistryClient
from .reference import KERNEL_ARCH, Platform, Reference, host_platform, parse_platform, parse_reference

KINDS: dict[str, type[Artifact]] = {"disk": DiskArtifact, "kernel": KernelArtifact, "rootfs": RootfsArtifact}
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{8,128}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LVH_FORMAT_VERSION = 1
META = "artifact.json"

#: ``factory(description, total)`` → a context manager whose value has ``update(advance=...)``
#: (the shape of ``Context.progress``).
ProgressFactory = Callable[[str, float | None], Any]


class _NullBar:
    def update(self, **kw: Any) -> None:
        pass


def _null_progress(description: str, total: float | None) -> Any:
    return nullcontext(_NullBar())


@dataclass
class Options:
    """How to talk to the registry and what to accept."""

    platform: Platform | None = None
    insecure: bool = False
    limits: Limits = field(default_factory=Limits)
    progress: ProgressFactory = _null_progress
    cancel: threading.Event | None = None
    log: Any = None
    retries: int = 5


@dataclass
class PullResult:
    artifact: Artifact
    name: str
    ref: Reference
    digest: str
    format: str
    fetched: int = 0
    cached: bool = False


@dataclass
class PushResult:
    ref: Reference
    digest: str
    tags: list[str]
    format: str
    uploaded: int = 0


def client_for(ref: Reference, opts: Options) -> RegistryClient:
    return RegistryClient(ref.api_host, insecure=opts.insecure, cancel=opts.cancel, log=opts.log,
                          retries=opts.retries)


# --------------------------------------------------------------------------------------------
# Resolving a reference to one manifest
# --------------------------------------------------------------------------------------------


@dataclass
class Resolved:
    ref: Reference
    digest: str
    manifest: dict[str, Any]
    config_type: str
    config: dict[str, Any]

    @property
    def is_lvh(self) -> bool:
        return self.config_type == media.LVH_CONFIG


def resolve(client: RegistryClient, ref: Reference, platform: Platform | None) -> Resolved:
    """Fetch the manifest ``ref`` names, choosing the platform's entry of an index, and its config."""
    want = platform or host_platform()
    body, mt, digest = client.get_manifest(ref.repository, ref.ref)
    doc = json.loads(body)
    if mt in media.INDEXES or "manifests" in doc:
        entries = doc.get("manifests") or []
        chosen = [e for e in entries if want.matches(e.get("platform"))]
        if not chosen:
            have = ", ".join(str(Platform(p.get("os", "?"), p.get("architecture", "?"), p.get("variant")))
                             for e in entries if (p := e.get("platform")))
            raise UserError(f"{ref} has no image for platform {want}",
                            hint=f"it has: {have or 'no platforms'}; pick one with --platform")
        body, mt, digest = client.get_manifest(ref.repository, chosen[0]["digest"])
        doc = json.loads(body)
    if mt not in media.MANIFESTS and doc.get("schemaVersion") != 2:
        raise UserError(f"{ref} is a {mt or 'schema 1'} manifest, which lvh does not read",
                        hint="push it again with a current tool (OCI or Docker schema 2)")
    cdesc = doc.get("config") or {}
    ctype = cdesc.get("mediaType", "")
    config: dict[str, Any] = {}
    if cdesc.get("digest"):
        raw = client.get_blob_bytes(ref.repository, cdesc["digest"])
        try:
            config = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise UserError(f"the config of {ref} is not JSON") from None
    if ctype != media.LVH_CONFIG and config.get("architecture") and platform is not None:
        if config.get("architecture") != want.architecture or config.get("os", want.os) != want.os:
            raise UserError(f"{ref} is for {config.get('os')}/{config.get('architecture')}, not {want}",
                            hint="pick the matching --platform or another tag")
    if ctype == media.LVH_CONFIG and platform is not None and config.get("platform"):
        if not want.matches(config["platform"]):
            raise UserError(f"{ref} is for {Platform(**config['platform'])}, not {want}",
                            hint="pick the matching --platform or another tag")
    return Resolved(ref.with_digest(digest), digest, doc, ctype, config)


# --------------------------------------------------------------------------------------------
# Pull
# --------------------------------------------------------------------------------------------


def _state(workdir: Path, *parts: str) -> Path:
    p = workdir.joinpath("state", "oci", *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _layer_compression(desc: dict[str, Any]) -> str | None:
    return media.LAYER_TYPES.get(desc.get("mediaType", ""))


def _download_layers(client: RegistryClient, res: Resolved, workdir: Path,
                     opts: Options) -> tuple[list[Path], int]:
    layers = res.manifest.get("layers") or []
    if not isinstance(layers, list) or len(layers) > 256:
        raise UserError(f"{res.ref} has a malformed layer list", hint="the manifest is malformed; push it again")
    total = sum(d["size"] for d in layers if isinstance(d, dict) and isinstance(d.get("size"), int)) or 0
    paths: list[Path] = []
    fetched = 0
    blobs = _state(workdir, "blobs")
    with opts.progress(f"pull {res.ref.repository}:{res.ref.tag or res.digest[7:19]}", total or None) as bar:
        def cb(n: int, _total: int | None) -> None:
            bar.update(advance=n)

        for d in layers:
            digest = d.get("digest", "") if isinstance(d, dict) else ""
            if not isinstance(digest, str) or not re.match(r"^sha(256|512):[a-f0-9]{64,128}$", digest):
                raise UserError(f"{res.ref} has a layer with a bad digest {digest!r}",
                                hint="the manifest is malformed; push it again")
            if not isinstance(d.get("size"), int) or isinstance(d.get("size"), bool) or d["size"] < 0:
                raise UserError(f"{res.ref} has a layer without a valid size",
                                hint="the manifest is malformed; push it again")
            dest = blobs / digest.replace(":", "-")
            if dest.exists():
                # Finished earlier but not extracted (a failure after the download): verify again.
                from .client import sha256_file

                if "sha256:" + sha256_file(dest).hexdigest() == digest:
                    cb(dest.stat().st_size, None)
                    paths.append(dest)
                    continue
                dest.unlink()
            fetched += client.download_blob(res.ref.repository, digest, dest, size=d.get("size"),
                                            progress=cb, max_size=opts.limits.max_bytes)
            paths.append(dest)
    return paths, fetched


def _check_files(artifact: Artifact, root: Path, ref: Reference) -> None:
    root_real = os.path.realpath(root)
    for f in artifact.files():
        real = os.path.realpath(f)
        if not (real == root_real or real.startswith(root_real + os.sep)):
            raise UnsafeArchive(f"the artifact names a file outside itself: {f}", str(ref))
        if not os.path.lexists(f):
            raise UserError(f"{ref}: the artifact names {os.path.relpath(f, root)}, which its layer lacks",
                            hint="the artifact is incomplete; push it again")


def _lvh_artifact(res: Resolved, kind: str, root: Path) -> tuple[Artifact, str]:
    cfg = res.config
    if cfg.get("lvh") != LVH_FORMAT_VERSION:
        raise UserError(f"{res.ref} is in lvh artifact format {cfg.get('lvh')!r}, this lvh reads "
                        f"{LVH_FORMAT_VERSION}", hint="upgrade lvh")
    got = cfg.get("kind")
    if got != kind:
        raise UserError(f"{res.ref} holds a {got} artifact, not a {kind}",
                        hint=f"use the {got} command or driver for it")
    data = dict(cfg.get("artifact") or {})
    cls = KINDS[kind]
    for k, v in list(data.items()):
        if isinstance(v, str) and v.startswith("/"):
            raise UnsafeArchive(f"the artifact names an absolute path {k}={v!r}", str(res.ref))
    art = cls.from_json(data, root)
    return art, str(cfg.get("name") or "")


def _cache_key(res: Resolved, kind: str, name: str) -> str:
    key = (res.manifest.get("annotations") or {}).get(media.A_KEY, "")
    if res.is_lvh and key and _KEY_RE.match(key):
        return key
    return hashlib.sha256(f"lvh-oci\0{kind}\0{res.digest}\0{name}".encode()).hexdigest()


def pull(ref: str | Reference, kind: str, workdir: Path, *, opts: Options | None = None,
         name: str | None = None, out: Path | None = None, tmp: Path | None = None) -> PullResult:
    """Pull the artifact ``ref`` names, of ``kind`` (``disk``, ``kernel`` or ``rootfs``).

    ``out`` None: land it in ``<workdir>/cache/<kind>/<key>/`` (nothing fetched if it is there).
    ``out`` set: write its files into that (existing, empty) directory, e.g. a driver's ctx.out.
    ``name`` picks one image of several in an upstream-layout image (``data/images/<name>...``).
    """
    opts = opts or Options()
    if kind not in KINDS:
        raise UserError(f"unknown artifact kind {kind!r}", hint="disk, kernel or rootfs")
    r = ref if isinstance(ref, Reference) else parse_reference(ref)
    with client_for(r, opts) as client, ExitStack() as locks:
        res = resolve(client, r, opts.platform)
        fmt = "lvh" if res.is_lvh else "upstream"
        art_name = name or (res.config.get("name") if res.is_lvh else None) or ""
        key = _cache_key(res, kind, name or "")
        entry = workdir / "cache" / kind / key
        # The engine's per-key lock (lvh.cache): a pull and a build of one key never race; and one
        # lock per blob, taken in order, for pulls of different keys that share a layer.
        if out is None:
            locks.enter_context(_lock(workdir, key))
            cached = _load_entry(entry, kind)
            if cached is not None:
                return PullResult(cached, art_name or _default_name(kind, r, cached), res.ref, res.digest,
                                  fmt, 0, True)
        for d in sorted({str(d.get("digest", "")) for d in res.manifest.get("layers") or []}):
            locks.enter_context(_lock(workdir, "oci-blob-" + re.sub(r"[^a-z0-9]", "-", d)[:80]))
        layers, fetched = _download_layers(client, res, workdir, opts)
        return _land(res, r, kind, layers, workdir, opts, name, out, tmp, key, entry, art_name, fmt, fetched)


def _lock(workdir: Path, name: str) -> Any:
    from filelock import FileLock

    locks = workdir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{name}.lock"))


def _land(res: Resolved, r: Reference, kind: str, layers: list[Path], workdir: Path, opts: Options,
          name: str | None, out: Path | None, tmp: Path | None, key: str, entry: Path, art_name: str,
          fmt: str, fetched: int) -> PullResult:
    """Extract the downloaded layers into a fresh dir and publish it (or move it into ``out``)."""
    if out is None:
        tmp = workdir / "cache" / ".tmp"  # the engine's build area: same filesystem as the entries
        tmp.mkdir(parents=True, exist_ok=True)
    elif tmp is None:
        tmp = out.parent
    work = Path(tempfile.mkdtemp(prefix=f"oci-{kind}-", dir=tmp))
    try:
        if res.is_lvh:
            root = work
            counter = [0]
            for p, d in zip(layers, res.manifest.get("layers") or [], strict=True):
                with open_decompressed(p, _layer_compression(d)) as stream:
                    extract_tar(stream, root, symlinks=True, limits=opts.limits, counter=counter,
                                source=str(res.ref))
            art, cfg_name = _lvh_artifact(res, kind, root)
            art_name = art_name or cfg_name
        else:
            root, art = _extract_upstream(res, kind, layers, work, opts, name)
        _check_files(art, root, res.ref)
        art_name = art_name or _default_name(kind, r, art)
        art.key = key
        art.meta = dict(art.meta or {})
        art.meta.setdefault("oci", {}).update({"ref": str(r), "digest": res.digest, "format": fmt})
        if out is not None:
            for child in root.iterdir():
                shutil.move(child, out / child.name)
            art = art.rebased(out)
        else:
            entry.parent.mkdir(parents=True, exist_ok=True)
            record = dict(res.config.get("record") or {}) if res.is_lvh else {}
            record.setdefault("stage", f"oci:pull/{kind}")
            record.setdefault("driver", "oci")
            record.setdefault("target", art_name)
            record["pulled"] = {"ref": str(r), "digest": res.digest, "format": fmt}
            write_entry(root, art, record)
            try:
                os.replace(root, entry) if not entry.exists() else None
            except OSError:
                pass  # another pull published the same key first: theirs is as good
            art = _load_entry(entry, kind) or art.rebased(entry)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    for p in layers:  # extracted: the compressed blobs are not needed any more
        p.unlink(missing_ok=True)
    return PullResult(art, art_name, res.ref, res.digest, fmt, fetched, False)


def read_entry(entry: Path, kind: str | None = None) -> tuple[Artifact, dict[str, Any]] | None:
    """(artifact, build record) of a cache entry ``entry`` (its ``artifact.json``: the engine's
    record with the artifact under ``"artifact"``, or a bare ``Artifact.to_json()``), or None.
    An entry under ``cache/<kind>/<key>/`` gets ``key`` from its folder, as the engine does."""
    try:
        data = json.loads((entry / META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    record: dict[str, Any] = {}
    if isinstance(data.get("artifact"), dict):
        record = {k: v for k, v in data.items() if k != "artifact"}
        data = data["artifact"]
    got = data.get("kind")
    if got not in KINDS or (kind is not None and got != kind):
        return None
    art = KINDS[got].from_json(data, entry)
    if entry.parent.name == got and entry.parent.parent.name == "cache":
        art.key = entry.name
    return art, record


def write_entry(root: Path, art: Artifact, record: dict[str, Any]) -> None:
    """Write ``root/artifact.json`` the way the engine does (its record, the artifact inside)."""
    meta = dict(record, artifact=art.to_json(), created=time.time())
    (root / META).write_text(json.dumps(meta, indent=1, default=str))


def _load_entry(entry: Path, kind: str) -> Artifact | None:
    got = read_entry(entry, kind)
    return got[0] if got else None


def image_stem(filename: str) -> str:
    """``kind_6.1.qcow2.zst`` → ``kind_6.1``."""
    for suffix in (".zst", ".qcow2", ".img", ".raw"):
        filename = filename.removesuffix(suffix)
    return filename


def _default_name(kind: str, ref: Reference, art: Artifact) -> str:
    if kind == "disk" and isinstance(art, DiskArtifact) and art.path.name:
        return image_stem(art.path.name)
    if ref.tag:
        return ref.tag
    return ref.repository.rsplit("/", 1)[-1]


# --- upstream layout ------------------------------------------------------------------------


def disk_format(path: Path) -> tuple[str, int]:
    """(``qcow2`` or ``raw``, virtual size in bytes) from the file's header."""
    with open(path, "rb") as fh:
        head = fh.read(32)
    if head[:4] == b"QFI\xfb" and len(head) >= 32:
        return "qcow2", struct.unpack(">Q", head[24:32])[0]
    return "raw", path.stat().st_size


def _zst_transform(limits: Limits, source: str) -> Any:
    def transform(rel: str, f: IO[bytes], dest: Path, counter: list[int]) -> list[str] | None:
        if not rel.endswith(".zst"):
            return None
        import zstandard

        out_rel = rel[:-4]
        target = dest / out_rel
        if target.exists() or target.is_symlink():
            target.unlink()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            with zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True) as zr:
                copy_sparse(zr, fd, limit=limits.max_bytes, counter=counter, source=source)
        except zstandard.ZstdError as e:
            raise UnsafeArchive(f"{rel}: broken zstd stream ({e})", source) from None
        finally:
            os.close(fd)
        return [out_rel]

    return transform


def _extract_upstream(res: Resolved, kind: str, layers: list[Path], work: Path, opts: Options,
                      name: str | None) -> tuple[Path, Artifact]:
    descs = res.manifest.get("layers") or []
    counter = [0]
    src = str(res.ref)
    if kind == "disk":
        prefix = media.UPSTREAM_IMAGES_DIR + "/"
        exts = (".qcow2.zst", ".qcow2", ".img.zst", ".img", ".raw.zst", ".raw")

        def select(rel: str) -> str | None:
            if rel.endswith("/"):  # a whiteout's parent dir
                rel = rel[:-1]
            if rel + "/" == prefix:
                return ""
            if not rel.startswith(prefix) or "/" in rel[len(prefix):]:
                return None
            base = rel[len(prefix):]
            if name and image_stem(base) != name:
                return None
            return base if base.endswith(exts) or base.startswith(".wh.") else None

        for p, d in zip(layers, descs, strict=True):
            with open_decompressed(p, _layer_compression(d)) as stream:
                extract_tar(stream, work, select=select, whiteouts=True, limits=opts.limits, counter=counter,
                            transform=_zst_transform(opts.limits, src), source=src)
        images = sorted(p for p in work.iterdir() if p.is_file())
        if not images:
            what = f"data/images/{name}.qcow2.zst" if name else "data/images/*.qcow2.zst"
            raise UserError(f"{res.ref} holds no {what}",
                            hint="is it an lvh image? (upstream images keep data/images/<name>.qcow2.zst)")
        if len(images) > 1:
            raise UserError(f"{res.ref} holds several images: {', '.join(p.name for p in images)}",
                            hint="pick one with --name NAME")
        fmt, vsize = disk_format(images[0])
        return work, DiskArtifact(root=work, path=images[0], format=fmt, size=vsize)

    if kind == "kernel":
        prefix = media.UPSTREAM_KERNELS_DIR + "/"

        def kselect(rel: str) -> str | None:
            rel = rel.rstrip("/")
            if not rel.startswith(prefix):
                return "" if rel + "/" == prefix else None
            return rel[len(prefix):]

        for p, d in zip(layers, descs, strict=True):
            with open_decompressed(p, _layer_compression(d)) as stream:
                extract_tar(stream, work, select=kselect, whiteouts=True, symlinks=True, hardlinks=True,
                            limits=opts.limits, counter=counter, source=src)
        versions = sorted(p.name for p in work.iterdir() if p.is_dir())
        want = None
        m = re.match(media.KERNEL_TAG_RE, res.ref.tag or "")
        if m and m.group(1) in versions:
            want = m.group(1)
        elif name and name in versions:
            want = name
        elif len(versions) == 1:
            want = versions[0]
        if want is None:
            raise UserError(f"{res.ref} holds {'kernels ' + ', '.join(versions) if versions else 'no kernel'}"
                            " under data/kernels/", hint="pick one with --name VERSION" if versions else
                            "upstream kernel images keep data/kernels/<version>/{boot,lib/modules}")
        root = work / want
        arch = KERNEL_ARCH.get(res.config.get("architecture", ""), "x86_64")
        return root, kernel_from_dir(root, arch=arch, source=src)

    # rootfs: lvh's format only, or any container image flattened into a tarball.
    out = work / "rootfs.tar"
    flatten_layers(layers, descs, out, limits=opts.limits, source=src)
    return work, RootfsArtifact(root=work, path=out, format="tar")


def kernel_from_dir(root: Path, *, arch: str = "x86_64", source: str = "") -> KernelArtifact:
    """A :class:`KernelArtifact` for upstream's kernel layout (``boot/vmlinuz-<v>``, ``config-<v>``,
    ``System.map-<v>``, ``lib/modules/<v>``) or a directory holding a ``bzImage``/``vmlinuz``."""
    boot = root / "boot"
    cands = sorted(boot.glob("vmlinuz-*")) if boot.is_dir() else []
    cands += [p for p in (boot / "bzImage", root / "bzImage", root / "vmlinuz", boot / "vmlinuz",
                          root / "arch/x86/boot/bzImage") if p.is_file()]
    cands = [p for p in cands if p.is_file() and not p.is_symlink()]
    if not cands:
        raise UserError(f"{source or root}: no kernel image (boot/vmlinuz-<version> or bzImage) found",
                        hint="a kernel dir holds boot/vmlinuz-<version> and lib/modules/<version>")
    image = cands[0]
    version = image.name[len("vmlinuz-"):] if image.name.startswith("vmlinuz-") else ""
    mods = root / "lib" / "modules"
    if not version and mods.is_dir():
        subs = sorted(p.name for p in mods.iterdir() if p.is_dir())
        version = subs[0] if len(subs) == 1 else ""

    def opt(*names: str) -> Path | None:
        for n in names:
            if (boot / n).is_file():
                return boot / n
            if (root / n).is_file():
                return root / n
        return None

    return KernelArtifact(
        root=root, image=image, version=version, arch=arch,
        config=opt(f"config-{version}", "config", ".config") if version else opt("config", ".config"),
        system_map=opt(f"System.map-{version}", "System.map") if version else opt("System.map"),
        modules=root if mods.is_dir() else None,
        vmlinux=opt("vmlinux"),
    )


def flatten_layers(layers: list[Path], descs: list[dict[str, Any]], out: Path, *, limits: Limits,
                   source: str) -> None:
    """Squash a container image's layers into one tarball (whiteouts applied), without extracting:
    pass 1 finds which layer's entry wins for each path, pass 2 copies the winners."""
    import tarfile

    from .archive import safe_name

    owner: dict[str, int] = {}
    for i, (p, d) in enumerate(zip(layers, descs, strict=True)):
        with open_decompressed(p, _layer_compression(d)) as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tf:
            for m in tf:
                rel = safe_name(m.name, source)
                if rel is None:
                    continue
                base = rel.rsplit("/", 1)[-1]
                parent = rel[: -len(base)].rstrip("/")
                if base == ".wh..wh..opq":
                    pre = parent + "/" if parent else ""
                    for k in [k for k, li in owner.items() if k.startswith(pre) and li < i]:
                        del owner[k]
                    continue
                if base.startswith(".wh."):
                    victim = (parent + "/" if parent else "") + base[4:]
                    for k in [k for k in owner if k == victim or k.startswith(victim + "/")]:
                        del owner[k]
                    continue
                if m.ischr() or m.isblk() or m.isfifo() or m.isdir() or m.isreg() or m.issym() or m.islnk():
                    if not m.isdir():
                        # a file replacing a directory hides what was under it
                        for k in [k for k in owner if k.startswith(rel + "/") and owner[k] < i]:
                            del owner[k]
                    owner[rel] = i
                if len(owner) > limits.max_entries:
                    raise UnsafeArchive(f"more than {limits.max_entries} entries", source)
    total = 0
    with open(out, "wb") as fo, tarfile.open(fileobj=fo, mode="w|", format=tarfile.PAX_FORMAT) as outtar:
        for i, (p, d) in enumerate(zip(layers, descs, strict=True)):
            with open_decompressed(p, _layer_compression(d)) as stream, \
                    tarfile.open(fileobj=stream, mode="r|") as tf:
                for m in tf:
                    rel = safe_name(m.name, source)
                    if rel is None or owner.get(rel) != i:
                        continue
                    m.name = rel
                    if m.islnk():
                        m.linkname = safe_name(m.linkname, source) or ""
                    total += m.size
                    if total > limits.max_bytes:
                        raise UnsafeArchive(f"the image passes the limit of {limits.max_bytes} bytes", source)
                    outtar.addfile(m, tf.extractfile(m) if m.isreg() else None)


# --------------------------------------------------------------------------------------------
# Push
# --------------------------------------------------------------------------------------------


def _utc_stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%d.%H%M%S")


def default_tag(version: str) -> str:
    """Upstream's tag scheme: ``<version>-<YYYYMMDD.HHMMSS>`` (UTC)."""
    return f"{version}-{_utc_stamp()}"


@contextmanager
def _standalone_disk(disk: DiskArtifact, tmp: Path) -> Iterator[DiskArtifact]:
    """The disk itself, or — for an overlay with a backing file — a flattened standalone copy."""
    if not disk.backing:
        yield disk
        return
    qemu_img = shutil.which("qemu-img")
    if not qemu_img:
        raise UserError("pushing a derived image needs qemu-img to flatten it",
                        hint="apt-get install qemu-utils")
    flat = tmp / disk.path.name
    p = subprocess.run([qemu_img, "convert", "-O", disk.format or "qcow2", str(disk.path), str(flat)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise StageError(f"qemu-img convert failed: {p.stderr.strip()}")
    d = DiskArtifact(root=tmp, path=flat, format=disk.format, size=disk.size, backing=None,
                     filesystem=disk.filesystem, root_device=disk.root_device, bootable=disk.bootable,
                     kernel=disk.kernel, initrd=disk.initrd, key=disk.key, meta=dict(disk.meta))
    yield d


def _file_opener(path: Path) -> Callable[[int], Iterator[bytes]]:
    def gen(offset: int) -> Iterator[bytes]:
        with open(path, "rb") as fh:
            fh.seek(offset)
            yield from iter(lambda: fh.read(1 << 20), b"")
    return gen


def _upload(client: RegistryClient, repo: str, path: Path, digest: str, size: int, bar: Any) -> int:
    sent = client.upload_blob(repo, digest, size, _file_opener(path),
                              progress=lambda n, _t: bar.update(advance=n))
    return size if sent else 0


def _upload_bytes(client: RegistryClient, repo: str, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.upload_blob(repo, digest, len(data), lambda offset: [data[offset:]])
    return digest, len(data)


def push(artifact: Artifact, ref: str | Reference, *, name: str, fmt: str = "lvh",
         version: str | None = None, main_tag: bool = False, opts: Options | None = None,
         platform_explicit: bool = False, annotations: dict[str, str] | None = None,
         record: dict[str, Any] | None = None) -> PushResult:
    """Push ``artifact`` to ``ref``. Without a tag in ``ref`` the tag is upstream's
    ``<version>-<YYYYMMDD.HHMMSS>`` (``version`` defaults to ``name``); ``main_tag`` also tags
    ``<version>-main``. ``fmt``: ``lvh`` (own format, lands in a cache as built) or ``upstream``."""
    opts = opts or Options()
    r = ref if isinstance(ref, Reference) else parse_reference(ref)
    if r.digest:
        raise UserError(f"cannot push to a digest reference {r}", hint="push to a tag: repo:tag")
    if fmt not in ("lvh", "upstream"):
        raise UserError(f"unknown format {fmt!r}", hint="--format lvh or --format upstream")
    kind = artifact.kind
    if kind not in KINDS:
        raise UserError(f"cannot push a {kind} artifact", hint="push images, kernels or rootfs tarballs")
    if fmt == "upstream" and kind == "rootfs":
        raise UserError("upstream has no rootfs layout", hint="use --format lvh for a rootfs")
    if not _NAME_RE.match(name):
        raise UserError(f"bad artifact name {name!r}", hint="use letters, digits, . _ -")
    if kind == "kernel" and opts.platform is None:
        arch = getattr(artifact, "arch", "x86_64")
        plat = Platform("linux", {v: k for k, v in KERNEL_ARCH.items()}.get(arch, arch))
    else:
        plat = opts.platform or host_platform()
    version = version or name
    tags = [r.tag] if r.tag else [default_tag(version)]
    if main_tag:
        tags.append(f"{version}-main")
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="lvh-oci-push-") as tmpd, client_for(r, opts) as client:
        tmp = Path(tmpd)
        if isinstance(artifact, DiskArtifact):
            ctx = _standalone_disk(artifact, tmp)
        else:
            ctx = nullcontext(artifact)
        with ctx as art:
            _check_files(art, art.root, r)
            layer = tmp / "layer"
            if fmt == "lvh":
                items = artifact_items(art)
                digest, size, diff_id = make_layer(layer, items, "zstd")
                layer_type = media.LAYER_ZSTD
                adata = art.to_json()
                adata.pop("key", None)
                config = {"lvh": LVH_FORMAT_VERSION, "kind": kind, "name": name, "version": version,
                          "created": created, "platform": plat.to_json(), "artifact": adata}
                if record:
                    config["record"] = {k: v for k, v in record.items() if k not in ("created", "pulled")}
                config_type = media.LVH_CONFIG
                artifact_type: str | None = media.lvh_artifact_type(kind)
            else:
                digest, size, diff_id, layer_type = _upstream_layer(art, name, version, tmp, layer)
                # Cmd: upstream's Go `images pull` does `docker create` on the image (never starts
                # it), which refuses an image without a command.
                config = {"created": created, "architecture": plat.architecture, "os": plat.os,
                          "config": {"Cmd": ["/bin/true"]},
                          "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                          "history": [{"created": created, "created_by": "lvh push"}]}
                if plat.variant:
                    config["variant"] = plat.variant
                config_type = media.OCI_CONFIG
                artifact_type = None
            with opts.progress(f"push {r.repository}", size) as bar:
                uploaded = _upload(client, r.repository, layer, digest, size, bar)
            cdigest, csize = _upload_bytes(client, r.repository,
                                           json.dumps(config, sort_keys=True).encode())
            ann = {media.A_CREATED: created, media.A_KIND: kind, media.A_NAME: name,
                   media.A_VERSION: version, media.A_TITLE: name}
            if artifact.key:
                ann[media.A_KEY] = artifact.key
            for k in ("driver", "driver_version", "stage", "lvh"):
                if record and record.get(k):
                    ann[f"dev.lvh.build.{k.replace('_', '-')}"] = str(record[k])
            ann.update(annotations or {})
            layer_desc: dict[str, Any] = {"mediaType": layer_type, "digest": digest, "size": size}
            if fmt == "lvh":
                layer_desc["annotations"] = {media.A_TITLE: f"{name}.tar.zst"}
            manifest: dict[str, Any] = {
                "schemaVersion": 2, "mediaType": media.OCI_MANIFEST,
                "config": {"mediaType": config_type, "digest": cdigest, "size": csize},
                "layers": [layer_desc], "annotations": ann,
            }
            if artifact_type:
                manifest["artifactType"] = artifact_type
            body = json.dumps(manifest, sort_keys=True).encode()
            mdigest = "sha256:" + hashlib.sha256(body).hexdigest()
            for tag in tags:
                if platform_explicit:
                    _put_in_index(client, r, tag, body, mdigest, plat)
                else:
                    client.put_manifest(r.repository, tag, body, media.OCI_MANIFEST)
    return PushResult(r.with_tag(tags[0]).with_digest(mdigest), mdigest, tags, fmt, uploaded)


def artifact_items(art: Artifact) -> list[tuple[str, Path | None, Any]]:
    """The tar items of an artifact: every file it names (a directory with its tree) and their
    parent directories, relative to its root, sorted — not whatever else lies beside them."""
    items: dict[str, Path] = {}
    root = art.root
    for f in art.files():
        rel = f.relative_to(root).as_posix()
        rel = "" if rel == "." else rel
        parts = rel.split("/") if rel else []
        for i in range(1, len(parts)):
            items.setdefault("/".join(parts[:i]), root.joinpath(*parts[:i]))
        if rel:
            items[rel] = f
        if f.is_dir() and not f.is_symlink():
            for n, p in tree_entries(f, rel):
                items[n] = p
    return [(n, items[n], None) for n in sorted(items)]


def _put_in_index(client: RegistryClient, r: Reference, tag: str, body: bytes, mdigest: str,
                  plat: Platform) -> None:
    """Push the manifest by digest and make ``tag`` an index holding it for ``plat``, keeping the
    other platforms an existing index at ``tag`` has (multi-arch tags built one arch at a time)."""
    client.put_manifest(r.repository, mdigest, body, media.OCI_MANIFEST)
    entries: list[dict[str, Any]] = []
    if client.head_manifest(r.repository, tag):
        old, mt, _ = client.get_manifest(r.repository, tag)
        if mt in media.INDEXES:
            entries = [e for e in json.loads(old).get("manifests") or []
                       if not plat.matches(e.get("platform"))]
    entries.append({"mediaType": media.OCI_MANIFEST, "digest": mdigest, "size": len(body),
                    "platform": plat.to_json()})
    index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries}
    client.put_manifest(r.repository, tag, json.dumps(index, sort_keys=True).encode(), media.OCI_INDEX)


def _upstream_layer(art: Artifact, name: str, version: str, tmp: Path,
                    layer: Path) -> tuple[str, int, str, str]:
    from .archive import zstd_file

    if isinstance(art, DiskArtifact):
        zst = tmp / f"{name}.qcow2.zst" if art.format == "qcow2" else tmp / f"{name}.img.zst"
        zstd_file(art.path, zst)
        items: list[tuple[str, Path | None, Any]] = [
            ("data", None, None), (media.UPSTREAM_IMAGES_DIR, None, None),
            (f"{media.UPSTREAM_IMAGES_DIR}/{zst.name}", zst, None)]
        digest, size, diff_id = make_layer(layer, items, "none")
        return digest, size, diff_id, media.LAYER_TAR
    assert isinstance(art, KernelArtifact)
    base = f"{media.UPSTREAM_KERNELS_DIR}/{version}"
    kver = art.version or version
    items = [("data", None, None), (media.UPSTREAM_KERNELS_DIR, None, None), (base, None, None),
             (f"{base}/boot", None, None), (f"{base}/boot/vmlinuz-{kver}", art.image, None)]
    if art.config:
        items.append((f"{base}/boot/config-{kver}", art.config, None))
    if art.system_map:
        items.append((f"{base}/boot/System.map-{kver}", art.system_map, None))
    if art.modules and (art.modules / "lib" / "modules").is_dir():
        items += [(f"{base}/lib", None, None), (f"{base}/lib/modules", None, None)]
        mods = art.modules / "lib" / "modules"
        items += [(f"{base}/lib/modules/{n}", p, None) for n, p in tree_entries(mods)]
    digest, size, diff_id = make_layer(layer, items, "gzip")
    return digest, size, diff_id, media.LAYER_GZIP


# --------------------------------------------------------------------------------------------
# Catalog (upstream's kernel tag scheme)
# --------------------------------------------------------------------------------------------


def _version_key(v: str) -> tuple[Any, ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.-]", v))


def catalog(ref: str | Reference, version: str | None = None, *, opts: Options | None = None) -> list[str]:
    """Upstream's ``kernels catalog``: without ``version`` the versions that have tags
    ``<version>-<YYYYMMDD.HHMMSS>|-main`` (sorted as versions), with it that version's tags."""
    opts = opts or Options()
    r = ref if isinstance(ref, Reference) else parse_reference(ref)
    with client_for(r, opts) as client:
        tags = client.list_tags(r.repository)
    groups: dict[str, list[str]] = {}
    for t in tags:
        m = re.match(media.KERNEL_TAG_RE, t)
        if not m or "-latest" in m.group(1):
            continue
        groups.setdefault(m.group(1), []).append(t)
    if version is None:
        return sorted(groups, key=_version_key)
    if version not in groups:
        raise UserError(f"kernel version {version!r} not found in {r.registry}/{r.repository}",
                        hint=f"versions there: {', '.join(sorted(groups, key=_version_key)) or 'none'}")
    return sorted(groups[version])


def platform_option(text: str | None) -> Platform | None:
    return parse_platform(text) if text else None
