"""A tiny writer of ``newc`` cpio archives, the format the Linux kernel unpacks as an initramfs.

Written in Python (no cpio process) so the per-run archive costs a millisecond. The kernel
accepts concatenated archives, so a run appends its own small archive to the cached base one.
"""

from __future__ import annotations

import io
import stat
from collections.abc import Iterable

_TRAILER = "TRAILER!!!"


class CpioWriter:
    """Collects entries and renders them as one newc archive (``bytes()``)."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1) -> None:
        name = name.lstrip("/")
        raw = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(raw), 0))
        self._ino += 1
        out = self._buf
        out.write(hdr.encode() + raw)
        out.write(b"\0" * (-(110 + len(raw)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str, mode: int = 0o755) -> None:
        """Add a directory (and its parents, once each)."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self._dirs:
                self._dirs.add(d)
                self._entry(d, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file (its parent directories are added first)."""
        parent = name.strip("/").rpartition("/")[0]
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def files(self, items: Iterable[tuple[str, bytes, int]]) -> None:
        for name, data, mode in items:
            self.file(name, data, mode)

    def __bytes__(self) -> bytes:
        w = CpioWriter.__new__(CpioWriter)
        w._buf = io.BytesIO(self._buf.getvalue())
        w._buf.seek(0, io.SEEK_END)
        w._ino = self._ino
        w._dirs = set()
        w._entry(_TRAILER, 0, nlink=1)
        # The kernel wants each archive padded to a 512-byte block boundary when concatenated.
        data = w._buf.getvalue()
        return data + b"\0" * (-len(data) % 512)
