"""Customize actions applied to a root filesystem tree on the host, without a VM.

File actions (mkdir, copy-in, upload, chmod, append-line, link, set-hostname, tar-in,
install-kernel) are done directly in the tree, with paths resolved as the guest would (absolute
symlinks inside the tree stay inside it). ``run-command`` and ``install`` run in a ``chroot`` in a
private mount namespace (``unshare -m``): proc, sys and dev are mounted there and vanish with it,
so nothing is left mounted on the host whatever happens.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lvh.api import CommandFailed, Context, StageError, UserError, install_kernel_image

_CHROOT_SCRIPT = r"""
set -e
T="$1"; C="$2"; shift 2
for d in proc sys dev; do mkdir -p "$T/$d"; done
mount -t proc proc "$T/proc"
mount -t sysfs sysfs "$T/sys" 2>/dev/null || true
mount --rbind /dev "$T/dev"
for d in "$@"; do mkdir -p "$T/$d"; mount -t tmpfs -o mode=0755 lvh-scratch "$T/$d"; done
exec chroot "$T" /bin/sh -ec "$C"
"""

CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
    "LC_ALL": "C",
    "LANG": "C",
    "HOME": "/root",
}


def inside(tree: Path, path: str, *, follow_last: bool = True) -> Path:
    """``path`` as the guest sees it, as a host path under ``tree``; symlinks (absolute ones too)
    are resolved relative to ``tree`` and never lead out of it."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    cur = tree
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            cur = cur.parent if cur != tree else tree
            continue
        nxt = cur / name
        if nxt.is_symlink() and (parts or follow_last):
            hops += 1
            if hops > 40:
                raise StageError(f"too many levels of symbolic links resolving {path} in the image")
            link = os.readlink(nxt)
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            if link.startswith("/"):
                cur = tree
            continue
        cur = nxt
    return cur


class TreeCustomizer:
    """Applies loaded actions to ``tree`` (a writable host directory holding a root filesystem)."""

    def __init__(self, ctx: Context, tree: Path) -> None:
        self.ctx = ctx
        self.tree = tree

    def apply(self, actions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Run every action in order; returns facts for the artifact (e.g. an installed kernel)."""
        facts: dict[str, Any] = {}
        for i, a in enumerate(actions):
            self.ctx.check_cancelled()
            t = a["type"]
            label = f"action {i} ({t}{': ' + a['comment'] if a.get('comment') else ''})"
            self.ctx.log.info("{}", label)
            try:
                getattr(self, "do_" + t.replace("-", "_"))(a, facts)
            except CommandFailed as e:
                raise self._explain(label, e) from e
            except OSError as e:
                if e.errno == 28:  # ENOSPC
                    raise StageError(f"{label}: the image is full ({e.strerror})",
                                     hint="grow the image: a larger disk size") from e
                raise StageError(f"{label}: {e.strerror or e}: {e.filename or ''}".rstrip(": ")) from e
        return facts

    def _explain(self, label: str, e: CommandFailed) -> StageError:
        text = "\n".join(e.result.tail)
        if "No space left on device" in text or "You don't have enough free space" in text:
            return StageError(f"{label}: the image is full", hint="grow the image: a larger disk size "
                              "(disk: {size: ...})")
        m = re.search(r"Unable to locate package (\S+)", text)
        if m:
            err = StageError(f"{label}: package {m.group(1)!r} does not exist in the image's apt sources",
                             hint="check the package name and the image's suite/components")
            return err
        return StageError(f"{label} failed: {e.message}", hint=e.hint or "see the command output above")

    # -- chroot ------------------------------------------------------------------------------
    def chroot(self, cmd: str, scratch: Sequence[str] = ()) -> None:
        """Run ``cmd`` with /bin/sh inside the tree (host network, host resolv.conf). ``scratch``:
        directories of the tree hidden under a tmpfs while it runs (never written to the image)."""
        resolv = self.tree / "etc" / "resolv.conf"
        saved: tuple[str, bytes | str] | None = None
        if resolv.is_symlink():
            saved = ("link", os.readlink(resolv))
        elif resolv.exists():
            saved = ("file", resolv.read_bytes())
        try:
            if Path("/etc/resolv.conf").exists() and (self.tree / "etc").is_dir():
                if resolv.is_symlink() or resolv.exists():
                    resolv.unlink()
                shutil.copyfile("/etc/resolv.conf", resolv)
            self.ctx.run("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _CHROOT_SCRIPT,
                         "lvh-chroot", str(self.tree), cmd, *scratch, env=CHROOT_ENV)
        finally:
            if resolv.is_symlink() or resolv.exists():
                resolv.unlink()
            if saved and saved[0] == "link":
                os.symlink(saved[1], resolv)
            elif saved:
                resolv.write_bytes(saved[1])  # type: ignore[arg-type]

    def do_run_command(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        self.chroot(a["cmd"])

    def do_install(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        import shlex

        policy = self.tree / "usr" / "sbin" / "policy-rc.d"
        made = False
        if not policy.exists() and policy.parent.is_dir():
            policy.write_text("#!/bin/sh\n# lvh: no daemons start while packages are installed\nexit 101\n")
            policy.chmod(0o755)
            made = True
        try:
            pkgs = " ".join(shlex.quote(p) for p in a["packages"])
            # apt's lists and downloaded .debs live in a tmpfs: they never reach the image (as
            # mmdebstrap leaves the base image), so a derived overlay holds only the packages.
            self.chroot("apt-get -q update && apt-get -y -q -o Dpkg::Options::=--force-confnew install "
                        f"{pkgs}", scratch=("var/lib/apt/lists", "var/cache/apt"))
        finally:
            if made:
                policy.unlink(missing_ok=True)

    # -- files -------------------------------------------------------------------------------
    def do_mkdir(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        inside(self.tree, a["dir"]).mkdir(parents=True, exist_ok=True)

    def _existing_dir(self, remote: str, what: str) -> Path:
        d = inside(self.tree, remote)
        if not d.is_dir():
            raise UserError(f"{what}: {remote} is not a directory in the image",
                            hint="create it first with a mkdir action")
        return d

    def do_copy_in(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        src = self.ctx.resolve(a["local_path"])
        if not src.exists():
            raise UserError(f"copy-in: {src} does not exist", hint="local_path is relative to the config file")
        dest = self._existing_dir(a["remote_dir"], "copy-in")
        self.ctx.run("cp", "-a", "--no-preserve=ownership", str(src), str(dest) + "/")

    def do_upload(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        src = self.ctx.resolve(a["file"])
        if not src.is_file():
            raise UserError(f"upload: {src} is not a file", hint="file is relative to the config file")
        dest = inside(self.tree, a["dest"])
        if dest.is_dir():
            dest = dest / src.name
        if dest.is_symlink():
            dest.unlink()
        shutil.copyfile(src, dest)
        shutil.copymode(src, dest)

    def do_chmod(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        p = inside(self.tree, a["file"])
        if not p.exists():
            raise UserError(f"chmod: {a['file']} does not exist in the image")
        os.chmod(p, int(a["permissions"], 8))

    def do_append_line(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        p = inside(self.tree, a["file"])
        data = p.read_bytes() if p.exists() else b""
        nl = b"\r\n" if b"\r\n" in data else b"\n"
        if data and not data.endswith(b"\n"):
            data += nl
        p.write_bytes(data + a["line"].encode() + nl)

    def do_link(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        p = inside(self.tree, a["link"], follow_last=False)
        if p.is_symlink() or p.is_file():
            p.unlink()
        os.symlink(a["target"], p)

    def do_set_hostname(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        name = a["hostname"]
        etc = inside(self.tree, "/etc")
        (etc / "hostname").write_text(name + "\n")
        hosts = etc / "hosts"
        lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
        lines = [ln for ln in lines if not ln.startswith("127.0.1.1")]
        lines.insert(1 if lines else 0, f"127.0.1.1\t{name}")
        hosts.write_text("\n".join(lines) + "\n")

    def do_tar_in(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        src = self.ctx.resolve(a["tar_file"])
        if not src.is_file():
            raise UserError(f"tar-in: {src} is not a file", hint="tar_file is relative to the config file")
        dest = self._existing_dir(a["remote_dir"], "tar-in")
        self.ctx.run("tar", "-C", str(dest), "--numeric-owner", "-xpf", str(src))

    def do_install_kernel(self, a: Mapping[str, Any], facts: dict[str, Any]) -> None:
        d = self.ctx.resolve(a["kernel_install_dir"])
        boot = d / "boot"
        if not boot.is_dir():
            raise UserError(f"install-kernel: {boot} is not a directory",
                            hint="kernel_install_dir must hold boot/ and lib/modules/<version>/")
        kernel = install_kernel_image(boot)
        tboot = inside(self.tree, "/boot")
        tboot.mkdir(parents=True, exist_ok=True)
        self.ctx.run("cp", "-a", "--no-preserve=ownership", str(boot) + "/.", str(tboot) + "/")
        mods = d / "lib" / "modules"
        if mods.is_dir():
            tmods = inside(self.tree, "/lib/modules")
            tmods.mkdir(parents=True, exist_ok=True)
            self.ctx.run("cp", "-a", "--no-preserve=ownership", str(mods) + "/.", str(tmods) + "/")
        self.do_link({"target": f"/boot/{kernel}", "link": "/vmlinuz"}, facts)
        facts["kernel"] = "/vmlinuz"
