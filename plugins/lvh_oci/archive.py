"""Tar layers: making them (deterministic, zstd multi-threaded or gzip) and extracting them,
hardened against hostile input.

Extraction rules: names are normalised and any absolute name or ``..`` component rejects the
whole archive; only regular files and directories are written, plus symlinks and hard links where
the caller says the format has them (symlinks must stay inside the target and are made last, so
nothing is ever written through one); device nodes, fifos and the like are rejected; the number
of entries and the bytes written are capped; files are written sparse (runs of zeros become
holes, which keeps raw disk images small). The caller extracts into a fresh directory and removes
it on any error, so a rejected archive leaves nothing behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from lvh.api import UserError

BLOCK = 64 * 1024
_ZERO = bytes(BLOCK)
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

DEFAULT_MAX_BYTES = 256 * 1024**3
DEFAULT_MAX_ENTRIES = 500_000


class UnsafeArchive(UserError):
    """An archive that breaks the extraction rules; nothing of it is kept."""

    def __init__(self, message: str, source: str = "") -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}rejected archive: {message}",
                         hint="the artifact is malformed or hostile; nothing was written — do not use it")


@dataclass
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES


# --- reading --------------------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """A write-only file object that hashes and counts what goes through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.h = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.fh.write(b)
        self.h.update(b)
        n = len(b)
        self.size += n
        return n

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def open_decompressed(path: Path, compression: str | None = None) -> IO[bytes]:
    """Open a layer blob for reading its tar stream; ``compression`` (none/gzip/zstd) or sniffed."""
    fh = open(path, "rb")
    if compression is None:
        magic = fh.read(4)
        fh.seek(0)
        compression = "gzip" if magic[:2] == GZIP_MAGIC else "zstd" if magic == ZSTD_MAGIC else "none"
    if compression == "gzip":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(fh, closefd=True)  # type: ignore[return-value]
    return fh


def safe_name(name: str, source: str = "") -> str | None:
    """The normalised relative path of a tar entry, None for the root itself; raises
    :class:`UnsafeArchive` for an absolute name or a ``..`` component."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise UnsafeArchive(f"entry {name!r} has an absolute or odd path", source)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchive(f"entry {name!r} escapes the target directory", source)
    return "/".join(parts) or None


def _inside(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def copy_sparse(src: IO[bytes], dst_fd: int, *, limit: int, counter: list[int], source: str,
                expected: int | None = None) -> int:
    """Copy ``src`` into ``dst_fd`` leaving holes for 64 KiB blocks of zeros. ``counter[0]`` counts
    bytes against ``limit`` across files. Returns the bytes copied."""
    total = 0
    pending_hole = 0
    while True:
        chunk = src.read(16 * BLOCK)
        if not chunk:
            break
        mv = memoryview(chunk)
        for off in range(0, len(mv), BLOCK):
            block = mv[off:off + BLOCK]
            if len(block) == BLOCK and block == _ZERO:
                pending_hole += BLOCK
            else:
                if pending_hole:
                    os.lseek(dst_fd, pending_hole, os.SEEK_CUR)
                    pending_hole = 0
                os.write(dst_fd, block)
        total += len(chunk)
        counter[0] += len(chunk)
        if counter[0] > limit:
            raise UnsafeArchive(f"extracted size passes the limit of {limit} bytes", source)
        if expected is not None and total > expected:
            raise UnsafeArchive("an entry is longer than its header says", source)
    if pending_hole:
        os.lseek(dst_fd, pending_hole, os.SEEK_CUR)
    os.ftruncate(dst_fd, total)
    return total


#: A transform gets (relative path, entry stream) and writes into the target itself, returning
#: the relative paths it wrote; or returns None to let the entry be extracted as is.
Transform = Callable[[str, IO[bytes], Path, list[int]], list[str] | None]


def extract_tar(
    stream: IO[bytes],
    dest: Path,
    *,
    select: Callable[[str], str | None] = lambda rel: rel,
    symlinks: bool = False,
    hardlinks: bool = False,
    whiteouts: bool = False,
    transform: Transform | None = None,
    limits: Limits | None = None,
    counter: list[int] | None = None,
    source: str = "",
) -> list[str]:
    """Extract the tar ``stream`` into ``dest`` (which must exist) under the rules above.

    ``select(rel)`` maps an entry's path to where it goes under ``dest`` (None = skip it).
    ``whiteouts``: apply OCI whiteout files (``.wh.NAME``, ``.wh..wh..opq``) of layered images.
    Returns the relative paths of the regular files written."""
    limits = limits or Limits()
    counter = counter if counter is not None else [0]
    dest_real = os.path.realpath(dest)
    written: list[str] = []
    links: list[tuple[str, str]] = []
    entries = 0
    try:
        tf = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as e:
        raise UnsafeArchive(f"not a tar archive ({e})", source) from None
    try:
        for m in tf:
            entries += 1
            if entries > limits.max_entries:
                raise UnsafeArchive(f"more than {limits.max_entries} entries", source)
            rel0 = safe_name(m.name, source)
            if rel0 is None:
                continue
            base = posixpath.basename(rel0)
            if whiteouts and base.startswith(".wh."):
                parent = posixpath.dirname(rel0)
                sel_parent = select(parent + "/") if parent else select("")
                if base == ".wh..wh..opq":
                    if sel_parent is not None:
                        d = dest / sel_parent if sel_parent else dest
                        if d.is_dir() and _inside(dest_real, str(d)):
                            for child in d.iterdir():
                                _remove(child)
                else:
                    victim = select(posixpath.join(parent, base[4:]))
                    if victim:
                        p = dest / victim
                        if _inside(dest_real, str(p.parent)):
                            _remove(p)
                continue
            rel = select(rel0)
            if not rel:
                continue
            target = dest / rel
            if not _inside(dest_real, str(target.parent)):
                raise UnsafeArchive(f"entry {m.name!r} would be written through a link", source)
            if m.isdir():
                if target.is_symlink():
                    raise UnsafeArchive(f"directory {m.name!r} replaces a link", source)
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target, 0o700 | (m.mode & 0o755))
            elif m.isreg():
                target.parent.mkdir(parents=True, exist_ok=True)
                f = tf.extractfile(m)
                assert f is not None
                if transform is not None:
                    done = transform(rel, f, dest, counter)
                    if done is not None:
                        written.extend(done)
                        continue
                if target.is_symlink() or target.exists():
                    if target.is_dir() and not target.is_symlink():
                        raise UnsafeArchive(f"file {m.name!r} replaces a directory", source)
                    target.unlink()
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600)
                try:
                    n = copy_sparse(f, fd, limit=limits.max_bytes, counter=counter, source=source,
                                    expected=m.size)
                finally:
                    os.close(fd)
                if n != m.size:
                    raise UnsafeArchive(f"entry {m.name!r} is truncated", source)
                os.chmod(target, 0o600 | (m.mode & 0o755))
                os.utime(target, (m.mtime, m.mtime))
                written.append(rel)
            elif m.issym():
                if not symlinks:
                    raise UnsafeArchive(f"entry {m.name!r} is a symlink, which this format does not have",
                                        source)
                if m.linkname.startswith("/"):
                    raise UnsafeArchive(f"symlink {m.name!r} points outside ({m.linkname!r})", source)
                resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), m.linkname))
                if resolved == ".." or resolved.startswith("../"):
                    raise UnsafeArchive(f"symlink {m.name!r} points outside ({m.linkname!r})", source)
                links.append((rel, m.linkname))
            elif m.islnk():
                if not hardlinks:
                    raise UnsafeArchive(f"entry {m.name!r} is a hard link, which this format does not have",
                                        source)
                src_rel = safe_name(m.linkname, source)
                src_sel = select(src_rel) if src_rel else None
                src = dest / src_sel if src_sel else None
                if src is None or not src.is_file() or src.is_symlink() or not _inside(dest_real, str(src)):
                    raise UnsafeArchive(f"hard link {m.name!r} points outside ({m.linkname!r})", source)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists() or target.is_symlink():
                    target.unlink()
                os.link(src, target)
            else:
                raise UnsafeArchive(f"entry {m.name!r} is a device, fifo or other special file", source)
    except (tarfile.TarError, EOFError) as e:
        raise UnsafeArchive(f"broken tar stream ({e})", source) from None
    finally:
        tf.close()
    for rel, linkname in links:
        target = dest / rel
        if not _inside(dest_real, str(target.parent)):
            raise UnsafeArchive(f"symlink {rel!r} would be made through a link", source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.is_file():
            target.unlink()
        os.symlink(linkname, target)
    return written


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


# --- writing --------------------------------------------------------------------------------


def _tarinfo(name: str, path: Path | None, *, kind: str = "file", size: int = 0, mtime: int | None = None,
             mode: int | None = None, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    st = path.lstat() if path is not None else None
    ti.mtime = int(mtime if mtime is not None else (st.st_mtime if st else 0))
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
        ti.mode = mode if mode is not None else 0o755
    elif kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = linkname
        ti.mode = 0o777
    else:
        ti.type = tarfile.REGTYPE
        ti.size = size if path is None else st.st_size  # type: ignore[union-attr]
        ti.mode = mode if mode is not None else (stat.S_IMODE(st.st_mode) if st else 0o644)
    return ti


def tree_entries(root: Path, prefix: str = "") -> Iterable[tuple[str, Path]]:
    """(archive name, path) for every dir, file and symlink under ``root``, sorted, dirs first."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        if rel_dir:
            yield posixpath.join(prefix, rel_dir), Path(dirpath)
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            yield posixpath.join(prefix, rel_dir, name), Path(dirpath, name)


def write_tar(out: BinaryIO, items: Iterable[tuple[str, Path | None, Any]]) -> None:
    """Write a tar of ``items``: (name, path, None) for a file/dir/symlink on disk, or
    (name, None, (size, reader)) for generated content."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for name, path, extra in items:
            if path is not None:
                if path.is_symlink():
                    tf.addfile(_tarinfo(name, path, kind="symlink", linkname=os.readlink(path)))
                elif path.is_dir():
                    tf.addfile(_tarinfo(name, path, kind="dir", mode=stat.S_IMODE(path.stat().st_mode)))
                else:
                    with open(path, "rb") as fh:
                        tf.addfile(_tarinfo(name, path), fh)
            elif extra is None:
                tf.addfile(_tarinfo(name, None, kind="dir", mtime=0))
            else:
                size, reader = extra
                tf.addfile(_tarinfo(name, None, size=size, mtime=0, mode=0o644), reader)


def make_layer(dest: Path, items: Iterable[tuple[str, Path | None, Any]], compression: str,
               *, level: int = 3, threads: int = -1) -> tuple[str, int, str]:
    """Write a layer blob to ``dest``: a tar of ``items``, compressed (``zstd`` multi-threaded,
    ``gzip``, or ``none``). Returns (digest, size, diff_id: the uncompressed tar's digest)."""
    with open(dest, "wb") as raw:
        outer = _HashingWriter(raw)
        if compression == "zstd":
            import zstandard

            cctx = zstandard.ZstdCompressor(level=level, threads=threads)
            with cctx.stream_writer(outer, closefd=False) as zw:
                inner = _HashingWriter(zw)  # type: ignore[arg-type]
                write_tar(inner, items)  # type: ignore[arg-type]
        elif compression == "gzip":
            with gzip.GzipFile(fileobj=outer, mode="wb", compresslevel=6, mtime=0) as gz:  # type: ignore[arg-type]
                inner = _HashingWriter(gz)  # type: ignore[arg-type]
                write_tar(inner, items)  # type: ignore[arg-type]
        else:
            inner = outer
            write_tar(outer, items)  # type: ignore[arg-type]
    return outer.digest, outer.size, inner.digest


def zstd_file(src: Path, dest: Path, *, level: int = 3, threads: int = -1) -> int:
    """Compress ``src`` to ``dest`` with multi-threaded zstd; returns the compressed size."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=level, threads=threads)
    with open(src, "rb") as fi, open(dest, "wb") as fo:
        cctx.copy_stream(fi, fo, read_size=1 << 20, write_size=1 << 20)
    return dest.stat().st_size
