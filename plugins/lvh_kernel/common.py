"""Helpers shared by the kernel drivers: reading a kernel image's version, laying out modules."""

from __future__ import annotations

import gzip
import re
import shutil
import struct
from pathlib import Path

from lvh.api import Context, StageError, UserError

_LINUX_VERSION = re.compile(rb"Linux version (\S+) ")


def image_version(path: Path) -> str | None:
    """The version (``uname -r``) a kernel image carries, or None.

    x86 bzImage: the setup header (``HdrS`` at 0x202) has at 0x20E the offset (minus 0x200) of a
    NUL-terminated ``"<release> (<builder>) #…"`` string. Otherwise (arm64 ``Image``/``Image.gz``,
    an ELF vmlinux): the ``Linux version <release> `` banner, after gunzip when gzipped."""
    data = Path(path).read_bytes()
    if len(data) > 0x210 and data[0x202:0x206] == b"HdrS":
        (off,) = struct.unpack_from("<H", data, 0x20E)
        start = off + 0x200
        if 0x200 < start < len(data):
            end = data.find(b"\0", start, start + 256)
            text = data[start:end if end > 0 else start + 256].decode("ascii", "replace")
            if text.strip():
                return text.split()[0]
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except OSError:
            return None
    m = _LINUX_VERSION.search(data)
    return m.group(1).decode("ascii", "replace") if m else None


def modules_root(path: Path) -> tuple[Path, str | None]:
    """Accept a dir holding ``lib/modules/<ver>/``, ``modules/<ver>``, or ``<ver>/`` itself:
    return (the ``<ver>`` dir's parent, the version if it can be told)."""
    p = Path(path)
    for cand in (p / "lib" / "modules", p / "usr" / "lib" / "modules", p):
        if cand.is_dir():
            vers = [d for d in cand.iterdir()
                    if d.is_dir() and ((d / "kernel").is_dir() or (d / "modules.order").exists())]
            if len(vers) == 1:
                return cand, vers[0].name
            if vers:
                return cand, None
    if (p / "kernel").is_dir() or (p / "modules.order").exists() or (p / "modules.dep").exists():
        return p.parent, p.name
    raise UserError(f"{p} holds no kernel modules (no lib/modules/<version>/ inside)",
                    hint="give the dir that holds lib/modules/<version>/, as make modules_install "
                         "INSTALL_MOD_PATH=DIR writes it")


def install_modules(ctx: Context, src_ver_dir: Path, out: Path, version: str, *, move: bool = False) -> Path:
    """Copy (or move) a ``<ver>`` modules dir to ``out/lib/modules/<version>``, drop the
    ``build``/``source`` links, and run depmod so ``modules.dep`` is there. Returns ``out``."""
    dest = out / "lib" / "modules" / version
    dest.parent.mkdir(parents=True, exist_ok=True)
    if move:
        shutil.move(str(src_ver_dir), dest)
    else:
        shutil.copytree(src_ver_dir, dest, symlinks=True)
    for link in ("build", "source"):
        p = dest / link
        if p.is_symlink() or p.is_file():
            p.unlink()
    ctx.run("depmod", "-b", out, version, hint="apt-get install kmod")
    if not (dest / "modules.dep").exists():
        raise StageError(f"depmod wrote no modules.dep in {dest}")
    return out


def copy_file(src: Path, dest: Path, what: str) -> Path:
    if not src.is_file():
        raise UserError(f"{what} {src} does not exist", hint=f"give the path of the {what}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest
