"""A disk image (qcow2 overlay or raw) seen as a raw block file, without a VM and without nbd:
``qemu-storage-daemon`` exports it through FUSE; writes land in the image itself (for an overlay:
only the changed clusters). The export can then be loop-mounted, or checked and resized in place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lvh.api import Context, StageError

from .tools import need


def _is_mountpoint(p: Path) -> bool:
    target = str(p.resolve())
    try:
        with open("/proc/self/mountinfo") as fh:
            return any(line.split()[4] == target for line in fh)
    except OSError:
        return os.path.ismount(p)


@contextmanager
def exported(ctx: Context, image: Path, fmt: str, scratch: Path) -> Iterator[Path]:
    """Yield a raw file under ``scratch`` whose bytes are ``image``'s virtual disk (read-write)."""
    qsd = need("qemu-storage-daemon", "the chroot customizer and the mkfs formatter (disk images)")
    scratch.mkdir(parents=True, exist_ok=True)
    export = scratch / "export.raw"
    export.touch()
    log = scratch / "qemu-storage-daemon.log"
    argv = [qsd,
            "--blockdev", f"driver=file,node-name=file0,filename={image},discard=unmap",
            "--blockdev", f"driver={fmt},node-name=disk0,file=file0,discard=unmap",
            "--export", f"type=fuse,id=exp0,node-name=disk0,mountpoint={export},writable=on"]
    ctx.log.info("$ {}", " ".join(argv))
    with log.open("wb") as lf:
        proc = subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not _is_mountpoint(export):
            if proc.poll() is not None:
                raise StageError(f"qemu-storage-daemon could not export {image.name}: "
                                 + log.read_text(errors="replace").strip()[-400:],
                                 hint="it needs /dev/fuse (and fusermount3 when not root)")
            if time.monotonic() > deadline:
                raise StageError(f"qemu-storage-daemon did not export {image.name} within 20 s")
            time.sleep(0.02)
        yield export
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # flushes and unmounts the FUSE export
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if _is_mountpoint(export):
            subprocess.run(["fusermount3", "-u", "-z", str(export)], check=False)


@contextmanager
def mounted(ctx: Context, image: Path, fmt: str, scratch: Path, fstype: str = "ext4") -> Iterator[Path]:
    """Yield a directory where ``image``'s (unpartitioned) filesystem is mounted read-write.
    Needs root (a loop mount). Unmounted, and the image closed, on the way out."""
    mnt = scratch / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    with exported(ctx, image, fmt, scratch) as raw:
        ctx.run("mount", "-t", fstype, "-o", "loop", str(raw), str(mnt))
        try:
            yield mnt
            # blocks written then freed (temp files) go back to the image's holes
            ctx.run("fstrim", str(mnt), check=False)
        finally:
            r = ctx.run("umount", str(mnt), check=False)
            if r.returncode != 0:  # something still holds it: detach lazily so the export can close
                ctx.run("umount", "-l", str(mnt), check=False)
