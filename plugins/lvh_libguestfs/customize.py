"""``lvh.customize: virt-customize`` — upstream's customizer: each action becomes virt-customize
arguments (``--run-command``, ``--copy-in``, ``--hostname``, …, ``--install``); consecutive actions
are merged into one virt-customize call (one appliance boot) unless ``merge_steps: false``.
``tar-in`` has no virt-customize flag and runs as a guestfish call of its own. Works on disks only
(it boots the libguestfs appliance on the image)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lvh.api import (
    CommandFailed,
    Context,
    CustomizeOptions,
    Customizer,
    DiskArtifact,
    HostInfo,
    Requirement,
    StageError,
    UserError,
    action_files_key,
    fields,
    install_kernel_image,
)

from .common import env, need, requirements, version


class VirtCustomizeOptions(CustomizeOptions):
    merge_steps = fields.Bool(load_default=True,
                              metadata={"description": "merge consecutive actions into one virt-customize call"})
    network = fields.Bool(load_default=True, metadata={"description": "give the appliance network access"})
    memsize = fields.Int(load_default=None, allow_none=True, metadata={"description": "appliance memory, MiB"})


class VirtCustomizer(Customizer):
    """Applies actions with virt-customize (upstream's semantics; boots the appliance)."""

    name = "virt-customize"
    version = "1"
    Options = VirtCustomizeOptions
    targets = frozenset({"disk"})

    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        return requirements(host, "virt-customize", "guestfish", by="customize virt-customize")

    def key_material(self, ctx: Context) -> dict[str, Any]:
        files = action_files_key(ctx, self.options.get("actions"))
        return {"files": files, "virt-customize": version("virt-customize")}

    # -- actions -> calls --------------------------------------------------------------------
    def steps(self, ctx: Context) -> list[tuple[str, list[str], str]]:
        """``(tool, args, label)`` per call, consecutive virt-customize actions merged into one
        call as upstream's --merge-steps does (unless ``merge_steps: false``)."""
        merge = self.options.get("merge_steps", True)
        calls: list[tuple[str, list[str], list[str]]] = []
        for i, a in enumerate(self.options.get("actions") or []):
            for tool, args in self._action(ctx, a):
                if merge and tool == "virt-customize" and calls and calls[-1][0] == tool:
                    calls[-1][1].extend(args)
                    if calls[-1][2][-1] != f"{i} {a['type']}":
                        calls[-1][2].append(f"{i} {a['type']}")
                else:
                    calls.append((tool, list(args), [f"{i} {a['type']}"]))
        return [(t, args, ("actions " if len(lb) > 1 else "action ") + ", ".join(lb)) for t, args, lb in calls]

    def _action(self, ctx: Context, a: dict[str, Any]) -> list[tuple[str, list[str]]]:
        t = a["type"]
        res = lambda k: str(ctx.resolve(a[k]))  # noqa: E731
        if t == "run-command":
            return [("virt-customize", ["--run-command", a["cmd"]])]
        if t == "copy-in":
            return [("virt-customize", ["--copy-in", f"{res('local_path')}:{a['remote_dir']}"])]
        if t == "set-hostname":
            return [("virt-customize", ["--hostname", a["hostname"]])]
        if t == "mkdir":
            return [("virt-customize", ["--mkdir", a["dir"]])]
        if t == "upload":
            return [("virt-customize", ["--upload", f"{res('file')}:{a['dest']}"])]
        if t == "chmod":
            return [("virt-customize", ["--chmod", f"{a['permissions']}:{a['file']}"])]
        if t == "append-line":
            return [("virt-customize", ["--append-line", f"{a['file']}:{a['line']}"])]
        if t == "link":
            return [("virt-customize", ["--link", f"{a['target']}:{a['link']}"])]
        if t == "install":
            return [("virt-customize", ["--install", ",".join(a["packages"])])]
        if t == "install-kernel":
            d = ctx.resolve(a["kernel_install_dir"])
            if not (d / "boot").is_dir():
                raise UserError(f"install-kernel: {d / 'boot'} is not a directory",
                                hint="kernel_install_dir must hold boot/ and lib/modules/<version>/")
            kernel = install_kernel_image(d / "boot")
            out = [("virt-customize", ["--copy-in", f"{d}/boot:/"])]
            if (d / "lib" / "modules").is_dir():
                out.append(("virt-customize", ["--copy-in", f"{d}/lib/modules:/lib/"]))
            out.append(("virt-customize", ["--link", f"/boot/{kernel}:/vmlinuz"]))
            return out
        if t == "tar-in":
            return [("guestfish", [res("tar_file"), a["remote_dir"]])]
        raise StageError(f"unknown action type {t!r}")

    def _argv(self, tool: str, image: Path, fmt: str, args: list[str]) -> list[str]:
        if tool == "guestfish":
            tar, remote = args
            comp = {".gz": ["compress:gzip"], ".tgz": ["compress:gzip"], ".xz": ["compress:xz"],
                    ".zst": ["compress:zstd"], ".bz2": ["compress:bzip2"]}.get(Path(tar).suffix, [])
            return ["guestfish", "--format=" + fmt, "-a", str(image), "-i", "tar-in", tar, remote, *comp]
        argv = ["virt-customize", "--format", fmt, "-a", str(image)]
        if not self.options.get("network", True):
            argv.append("--no-network")
        if self.options.get("memsize"):
            argv += ["-m", str(self.options["memsize"])]
        return argv + args

    def describe(self, ctx: Context, *inputs: Any) -> list[list[str]]:
        return [self._argv(tool, Path("OUT/disk.qcow2"), "qcow2", args) for tool, args, _ in self.steps(ctx)]

    def customize(self, ctx: Context, target: Any) -> DiskArtifact:
        assert ctx.out is not None
        if not isinstance(target, DiskArtifact):
            raise StageError("virt-customize works on disk images only")
        need("virt-customize", "customize virt-customize")
        steps = self.steps(ctx)
        if any(t == "guestfish" for t, _, _ in steps):
            need("guestfish", "customize virt-customize (tar-in)")
        path = ctx.out / target.path.name
        ctx.run("cp", "--sparse=always", "--reflink=auto", str(target.path), str(path))
        for tool, args, label in steps:
            try:
                with ctx.progress(f"{tool}: {label} (appliance VM)"):
                    ctx.run(*self._argv(tool, path, target.format, args), env=env(ctx))
            except CommandFailed as e:
                text = "\n".join(e.result.tail)
                if "No space left on device" in text or "enough free space" in text:
                    raise StageError(f"{label}: the image is full",
                                     hint="grow the image: a larger disk size") from e
                raise StageError(f"{label} failed: {e.message}", hint="see the virt-customize output above") from e
        kernel = target.kernel
        if any(a["type"] == "install-kernel" for a in self.options.get("actions") or []):
            kernel = "/vmlinuz"
        return DiskArtifact(root=ctx.out, path=path, format=target.format, size=target.size, backing=target.backing,
                            filesystem=target.filesystem, root_device=target.root_device,
                            bootable=target.bootable, kernel=kernel, initrd=target.initrd, meta=dict(target.meta))
