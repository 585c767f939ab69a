"""The small initramfs lvh boots with: busybox (static) + lvh's guest init (``guest/init.sh``),
plus, for a modular kernel, the modules needed to reach the root disk, the virtio-serial ports,
9p host mounts and the network, in dependency order (from ``modules.dep``).

The base archive is cached under the user cache, keyed by its inputs (busybox and init content,
the module files); a run appends a tiny per-run archive (command, settings, ssh key).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shlex
import subprocess
from collections.abc import Iterable
from pathlib import Path

from lvh.api import Context, StageError, ToolMissing

from .cpio import CpioWriter

INIT = Path(__file__).with_name("guest") / "init.sh"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

#: Modules the guest init may need; the ones built into the kernel or absent are skipped.
WANTED_MODULES = {
    "pci": ["virtio_pci", "virtio_blk", "virtio_console", "crc32c_generic", "ext4",
            "9pnet_virtio", "9p", "virtio_net"],
    "mmio": ["virtio_mmio", "virtio_blk", "virtio_console", "crc32c_generic", "ext4",
             "9pnet_virtio", "9p", "virtio_net"],
}


def find_busybox() -> Path:
    """The host's static busybox (Debian: busybox-static)."""
    dynamic = None
    for c in BUSYBOX_CANDIDATES:
        p = Path(c)
        if p.exists():
            with p.open("rb") as fh:
                head = fh.read(4096)
            if b"ld-linux" in head or b"ld-musl" in head:  # has an ELF interpreter: not static
                dynamic = p
                continue
            return p
    why = f" ({dynamic} is dynamically linked)" if dynamic else ""
    raise ToolMissing(f"busybox (static){why}", hint="apt-get install busybox-static",
                      needed_by="lvh's guest init")


def _modname(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


def module_plan(moddir: Path, wanted: Iterable[str]) -> list[Path]:
    """The module files to load, dependencies first, for the kernel whose modules are in
    ``moddir`` (``lib/modules/<version>``). Built-in and absent modules are skipped."""
    dep_file = moddir / "modules.dep"
    if not dep_file.exists():
        return []
    deps: dict[str, list[str]] = {}
    path_of: dict[str, str] = {}
    for line in dep_file.read_text().splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        name = _modname(mod)
        path_of[name] = mod
        deps[name] = [_modname(d) for d in rest.split()]
    order: list[str] = []

    def visit(name: str, seen: set[str]) -> None:
        if name in order or name not in path_of or name in seen:
            return
        seen.add(name)
        for d in deps.get(name, []):
            visit(d, seen)
        order.append(name)

    for w in wanted:
        visit(w.replace("-", "_"), set())
    return [moddir / path_of[n] for n in order]


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    if path.name.endswith(".gz"):
        import gzip

        return gzip.decompress(data)
    return data


def base_initramfs(ctx: Context, modules: list[Path]) -> Path:
    """The cached base archive (busybox, init, modules) for this set of module files."""
    busybox = find_busybox()
    h = hashlib.sha256()
    h.update(INIT.read_bytes())
    h.update(b"applet-links-v1")
    st = busybox.stat()
    h.update(f"{busybox}:{st.st_size}:{st.st_mtime_ns}".encode())
    for m in modules:
        ms = m.stat()
        h.update(f"{m}:{ms.st_size}:{ms.st_mtime_ns}".encode())
    key = h.hexdigest()[:24]
    cache = Path(ctx.user_cache) / "qemu" / "initramfs"
    out = cache / f"base-{key}.cpio"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    w = CpioWriter()
    for d in ("bin", "sbin", "dev", "proc", "sys", "newroot", "tmp", "lvh/modules"):
        w.dir(d)
    w.file("bin/busybox", busybox.read_bytes(), 0o755)
    # The applet links, made here rather than by `busybox --install` at boot (slow under TCG).
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                             check=False).stdout.split()
    for a in applets:
        if a.count("/") and a != "bin/busybox" and a.rsplit("/", 1)[-1] not in ("init", "linuxrc"):
            w.dir(a.rsplit("/", 1)[0])
            w.symlink(a, "/bin/busybox")
    w.file("init", INIT.read_bytes(), 0o755)
    names = []
    for m in modules:
        fname = _modname(m.name) + ".ko"
        try:
            w.file(f"lvh/modules/{fname}", _module_bytes(m))
        except (OSError, subprocess.CalledProcessError, lzma.LZMAError) as e:
            raise StageError(f"cannot read kernel module {m}: {e}") from e
        names.append(fname)
    if names:
        w.file("lvh/modules.list", ("\n".join(names) + "\n").encode())
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.write_bytes(bytes(w))
    tmp.replace(out)
    ctx.log.debug("built the base initramfs {} ({} modules)", out, len(names))
    return out


def run_initramfs(ctx: Context, base: Path, dest: Path, *, settings: dict[str, str],
                  command: str | None, ssh_pubkey: str | None = None) -> Path:
    """Write ``dest``: the base archive followed by this run's settings archive."""
    w = CpioWriter()
    conf = "".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items())
    w.file("lvh/run.conf", conf.encode())
    if command is not None:
        w.file("lvh/cmd", command.encode())
    if ssh_pubkey:
        w.file("lvh/ssh_key.pub", ssh_pubkey.encode())
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as fh:
        fh.write(base.read_bytes())
        fh.write(bytes(w))
    return dest
