"""``lvh.kernel: make`` — configure and build a kernel from source with make.

Layout in the driver's state dir (persistent, not content-addressed):

- ``src/tar-<sha>/`` extracted tarballs; ``git/main.git`` + ``git/trees/<name>/`` git worktrees,
  ``git/shallow/<name>/`` shallow clones (see :mod:`lvh_kernel.source`);
- ``config/<build-id>/``: an out-of-tree dir where the ``.config`` is computed (cheap: the
  Kconfig tools only) — the final ``.config`` is part of the cache key;
- ``build/<build-id>/``: the out-of-tree build dir (``O=``), one per (source, arch, kernel name),
  kept across builds, so a changed option is an incremental make, not a fresh build.

The artifact (``ctx.out``) has upstream's ``tar-pkg`` layout: ``boot/vmlinuz-<ver>``,
``boot/System.map-<ver>``, ``boot/config-<ver>`` and ``lib/modules/<ver>/`` (depmod'ed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from lvh.api import (
    CommandFailed,
    ConfigError,
    Context,
    HostInfo,
    KernelArtifact,
    KernelBuilder,
    Requirement,
    Schema,
    StageError,
    ToolMissing,
    UserError,
    fields,
    hash_path,
    marshmallow,
    require_tool,
    validate,
)

from . import kconfig, source
from .groups import CONFIG_GROUPS, DEFAULT_GROUPS
from .source import state_dir

#: arch (as lvh names it) -> (ARCH for make, SRCARCH dir, default image target, image path in O=)
ARCHES: dict[str, tuple[str, str, str, str]] = {
    "x86_64": ("x86_64", "x86", "bzImage", "arch/x86/boot/bzImage"),
    "arm64": ("arm64", "arm64", "Image.gz", "arch/arm64/boot/Image.gz"),
}
_ARCH_ALIASES = {"amd64": "x86_64", "x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
#: CROSS_COMPILE prefixes used when the target arch is not the host's (as upstream).
CROSS_PREFIX = {"arm64": "aarch64-linux-gnu-", "x86_64": "x86_64-linux-gnu-"}
BASE_TARGETS = ("defconfig", "tinyconfig", "allnoconfig", "allyesconfig", "allmodconfig", "kvm_guest.config")

_PROGRESS_LINE = re.compile(r"^\s{2}(CC|AS|LD|AR|CC \[M\]|LD \[M\]|HOSTCC|OBJCOPY|BTF|GEN)\s")


def normalize_arch(arch: str | None) -> str:
    """lvh's name for ``arch`` (``x86_64``/``arm64``); the host's when None."""
    a = _ARCH_ALIASES.get((arch or platform.machine()).lower())
    if a is None:
        raise UserError(f"unsupported kernel arch {arch!r}", hint=f"use one of {', '.join(ARCHES)}")
    return a


class _Option(fields.Field):
    """A config option: ``[--enable, CONFIG_X]`` or a ``CONFIG_X=y`` line."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            if isinstance(value, (list, tuple)):
                kconfig.parse_option([str(v) for v in value])
                return [str(v) for v in value]
            if isinstance(value, str):
                kconfig.parse_option(value)
                return value
        except kconfig.OptionError as e:
            raise marshmallow.ValidationError(str(e)) from None
        raise marshmallow.ValidationError(f"not a config option: {value!r}")


class MakeOptions(Schema):
    """Options of the ``make`` kernel builder."""

    source = fields.String(required=True, metadata={
        "description": "git URL (#branch, ?depth=N), local git repo, source folder or tarball"})
    base = fields.String(load_default="defconfig", metadata={
        "description": "defconfig, tinyconfig, allnoconfig, … or the path of a .config"})
    config_groups = fields.List(fields.String(validate=validate.OneOf(
        sorted(CONFIG_GROUPS), error="unknown config group {input!r} (known: {choices})")), load_default=list,
        metadata={"description": "named sets of config options, applied after ``fragments``"})
    options = fields.List(_Option(), load_default=list, metadata={
        "description": "config options, applied last: ``CONFIG_X=y`` lines or ``[--enable, "
                       "CONFIG_X]`` (--disable, --module, --set-str, --set-val)"})
    fragments = fields.List(fields.String(), load_default=list, metadata={
        "description": "config fragment files (``CONFIG_X=y`` lines), applied first over ``base``"})
    make_args = fields.List(fields.String(), load_default=list, metadata={
        "description": "extra make arguments (e.g. ``CC=clang``), for configuring and building"})
    targets = fields.List(fields.String(), load_default=None, allow_none=True, metadata={
        "description": "make targets (default: the arch's image, e.g. bzImage, and modules)"})
    arch = fields.String(load_default=None, allow_none=True, metadata={
        "description": "target arch: x86_64 (amd64) or arm64 (aarch64); default: the host's"})
    cross_compile = fields.String(load_default=None, allow_none=True, metadata={
        "description": "CROSS_COMPILE prefix (default: none for the host's arch, else e.g. "
                       "aarch64-linux-gnu-)"})
    jobs = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1), metadata={
        "description": "make -j (default: the host's CPU count)"})
    strict = fields.Boolean(load_default=False, metadata={
        "description": "fail when a requested option did not take (default: a warning)"})
    vmlinux = fields.Boolean(load_default=False, metadata={"description": "keep vmlinux (debug info)"})
    strip_modules = fields.Boolean(load_default=True, metadata={
        "description": "strip debug info from installed modules (INSTALL_MOD_STRIP=1)"})
    name = fields.String(load_default=None, allow_none=True, metadata={
        "description": "name of the tree/build dir (default: the kernel's name)"})

    class Meta:
        unknown = marshmallow.RAISE


@dataclass
class Configured:
    """The result of configuring: where, and the final .config."""

    tree: source.SourceTree
    build_id: str
    config_dir: Path
    build_dir: Path
    config_text: str
    not_taken: list[kconfig.NotTaken]


class MakeBuilder(KernelBuilder):
    """Build a kernel from source: fetch, configure (base + fragments + groups + options), make."""

    name = "make"
    version = "1"
    Options = MakeOptions

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._configured: Configured | None = None

    # -- host -----------------------------------------------------------------------------

    @classmethod
    def check(cls, host: HostInfo) -> list[Requirement]:
        hint = "apt-get install build-essential flex bison bc libelf-dev libssl-dev"
        return [
            require_tool("make", hint=hint, needed_by="kernel builder make"),
            require_tool("gcc", hint=hint, needed_by="kernel builder make"),
            require_tool("flex", hint=hint, needed_by="kernel builder make"),
            require_tool("bison", hint=hint, needed_by="kernel builder make"),
            require_tool("bc", hint=hint, needed_by="kernel builder make"),
            require_tool("git", hint="apt-get install git", needed_by="git kernel sources"),
            require_tool("pahole", hint="apt-get install dwarves", needed_by="CONFIG_DEBUG_INFO_BTF"),
            require_tool("depmod", hint="apt-get install kmod", needed_by="modules_install"),
        ]

    @classmethod
    def config_groups(cls) -> dict[str, list[list[str]]]:
        """The config groups this builder knows (name -> options)."""
        return {k: [list(o) for o in v] for k, v in CONFIG_GROUPS.items()}

    @classmethod
    def default_groups(cls) -> list[str]:
        """Upstream's default groups (``lvh kernels init``/``add`` without ``--config-groups``)."""
        return list(DEFAULT_GROUPS)

    # -- options --------------------------------------------------------------------------

    @property
    def arch(self) -> str:
        return normalize_arch(self.options.get("arch"))

    def kernel_name(self, ctx: Context) -> str:
        return self.options.get("name") or (ctx.stage.target if ctx.stage else "kernel")

    def source_spec(self, ctx: Context) -> source.SourceSpec:
        return source.parse_source(self.options["source"], ctx)

    def make_env_args(self) -> list[str]:
        """ARCH= / CROSS_COMPILE= for make."""
        arch = self.arch
        args = [f"ARCH={ARCHES[arch][0]}"]
        cross = self.options.get("cross_compile")
        if cross is None and arch != normalize_arch(None):
            cross = CROSS_PREFIX.get(arch)
        if cross:
            args.append(f"CROSS_COMPILE={cross}")
        return args

    def requests(self, ctx: Context) -> list[kconfig.Request]:
        """Every requested option, in order: fragments, groups, options (later wins)."""
        reqs: list[kconfig.Request] = []
        for frag in self.options.get("fragments") or []:
            p = ctx.resolve(frag)
            if not p.is_file():
                raise ConfigError(f"config fragment {p} does not exist", path="fragments",
                                  hint="give the path of a file of CONFIG_X=y lines")
            try:
                reqs += kconfig.parse_fragment(p.read_text(), str(p))
            except kconfig.OptionError as e:
                raise ConfigError(str(e), path="fragments") from None
        for g in self.options.get("config_groups") or []:
            if g not in CONFIG_GROUPS:
                raise ConfigError(f"unknown config group {g!r}", path="config_groups",
                                  hint=f"known groups: {', '.join(sorted(CONFIG_GROUPS))}")
            for o in CONFIG_GROUPS[g]:
                r = kconfig.parse_option(o, f"group {g}")
                assert r is not None
                reqs.append(r)
        for o in self.options.get("options") or []:
            r = kconfig.parse_option(o, "options")
            if r:
                reqs.append(r)
        return reqs

    # -- fetch ----------------------------------------------------------------------------

    def fetch(self, ctx: Context) -> source.SourceTree:
        """Fetch the source (git: clone/fetch and update the tree; tarball: extract once)."""
        spec = self.source_spec(ctx)
        with self._lock(ctx, "source-" + source.safe_id(self.kernel_name(ctx))):
            if spec.kind == "git":
                return source.git_fetch(ctx, spec, self.kernel_name(ctx))
            tree = source.prepare(ctx, spec, self.kernel_name(ctx))
            assert tree is not None
            return tree

    def remove(self, ctx: Context) -> None:
        """Remove the kernel's source tree (git) and its build and config dirs."""
        spec = self.source_spec(ctx)
        name = self.kernel_name(ctx)
        if spec.kind == "git":
            source.git_remove(ctx, spec, name)
        for sub in ("build", "config"):
            d = state_dir(ctx) / sub
            if d.is_dir():
                for p in d.iterdir():
                    if p.name.endswith(f"-{self.arch}-{source.safe_id(name)}"):
                        shutil.rmtree(p, ignore_errors=True)

    # -- configure ------------------------------------------------------------------------

    def _lock(self, ctx: Context, what: str) -> FileLock:
        d = state_dir(ctx) / "locks"
        d.mkdir(parents=True, exist_ok=True)
        return FileLock(str(d / f"{what}.lock"))

    def _source_tree(self, ctx: Context) -> source.SourceTree:
        spec = self.source_spec(ctx)
        with self._lock(ctx, "source-" + source.safe_id(self.kernel_name(ctx))):
            tree = source.prepare(ctx, spec, self.kernel_name(ctx))
        assert tree is not None
        return tree

    def _make(self, ctx: Context, tree: Path, out_dir: Path, *targets: str, **kw: Any):
        return ctx.run("make", "-C", tree, f"O={out_dir}", *self.make_env_args(),
                       *self.options.get("make_args", []), *targets, **kw)

    def configure(self, ctx: Context) -> Configured:
        """Compute the final ``.config`` (in the config dir; the build dir is not touched) and
        report the requested options that did not take (warning, or error when ``strict``).

        The result is remembered (``config/<build-id>.memo.json``) by everything the .config
        depends on: source revision, base, requests, arch, make args and the toolchain's
        versions (gcc, ld, pahole: Kconfig probes them). A cache hit thus runs no make at all."""
        if self._configured is not None:
            return self._configured
        reqs = self.requests(ctx)
        self._check_compiler()
        tree = self._source_tree(ctx)
        name = source.safe_id(self.kernel_name(ctx))
        build_id = f"{tree.id}-{self.arch}-{name}"
        cfg_dir = state_dir(ctx) / "config" / build_id
        build_dir = state_dir(ctx) / "build" / build_id
        base = self.options.get("base") or "defconfig"
        base_file = ctx.resolve(base)
        inputs = hashlib.sha256(json.dumps({
            "source": tree.revision, "base": base,
            "base_content": hash_path(base_file) if base_file.is_file() else None,
            "requests": [[r.symbol, r.value, r.origin] for r in reqs],
            "make": self.make_env_args() + list(self.options.get("make_args", [])),
            "toolchain": self.toolchain(ctx),
        }, sort_keys=True).encode()).hexdigest()
        memo_file = cfg_dir.parent / f"{build_id}.memo.json"
        with self._lock(ctx, "config-" + build_id):
            memo = self._read_memo(memo_file)
            if inputs in memo:
                text = memo[inputs]["config"]
                bad = [kconfig.NotTaken(kconfig.Request(b["symbol"], b["value"], b["origin"]), b["got"],
                                        b["reason"], b["exists"]) for b in memo[inputs]["not_taken"]]
                self._report(ctx, bad, seen=ctx.planning)
            else:
                cfg_dir.mkdir(parents=True, exist_ok=True)
                text, bad = self._configure_into(ctx, tree.path, cfg_dir, reqs)
                memo[inputs] = {"config": text, "not_taken": [
                    {"symbol": b.request.symbol, "value": b.request.value, "origin": b.request.origin,
                     "got": b.got, "reason": b.reason, "exists": b.exists} for b in bad]}
                while len(memo) > 8:  # a few recent configs of this kernel
                    memo.pop(next(iter(memo)))
                tmp = memo_file.with_suffix(f".{os.getpid()}")
                tmp.write_text(json.dumps(memo))
                tmp.replace(memo_file)
        self._configured = Configured(tree, build_id, cfg_dir, build_dir, text, bad)
        return self._configured

    @staticmethod
    def _read_memo(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def toolchain(self, ctx: Context) -> dict[str, str]:
        """First lines of ``--version`` of the compiler, linker and pahole (Kconfig probes them)."""
        cross = next((a.split("=", 1)[1] for a in self.make_env_args() if a.startswith("CROSS_COMPILE=")), "")
        out = {}
        for name, argv in (("cc", [*self._compiler().split(), "--version"]), ("ld", [f"{cross}ld", "--version"]),
                           ("pahole", ["pahole", "--version"])):
            r = ctx.run(*argv, capture=True, check=False)
            out[name] = r.stdout.splitlines()[0] if r.returncode == 0 and r.stdout else "missing"
        return out

    def configure_tree(self, ctx: Context, tree: Path) -> tuple[Path, list[kconfig.NotTaken]]:
        """Configure a kernel tree prepared by other means in place (``tree/.config``), with this
        kernel's base and options (``lvh kernels raw_configure``)."""
        if not (tree / "Kconfig").exists():
            raise UserError(f"{tree} is not a kernel source tree (no Kconfig)",
                            hint="give the top directory of a Linux source tree")
        _text, bad = self._configure_into(ctx, tree, None, self.requests(ctx))
        return tree / ".config", bad

    def _configure_into(self, ctx: Context, tree: Path, out_dir: Path | None,
                        reqs: list[kconfig.Request]) -> tuple[str, list[kconfig.NotTaken]]:
        cfg = (out_dir or tree) / ".config"
        base = self.options.get("base") or "defconfig"

        def make(*targets: str, **kw: Any) -> None:
            if out_dir is None:
                ctx.run("make", "-C", tree, *self.make_env_args(), *self.options.get("make_args", []),
                        *targets, **kw)
            else:
                self._make(ctx, tree, out_dir, *targets, **kw)

        try:
            if base in BASE_TARGETS or (base.endswith("config") and "/" not in base
                                        and not ctx.resolve(base).exists()):
                cfg.unlink(missing_ok=True)
                make(base, capture=True, hint=f"is {base!r} a config target of this kernel?")
            else:
                p = ctx.resolve(base)
                if not p.is_file():
                    raise ConfigError(f"base config {p} does not exist", path="base",
                                      hint="use defconfig, tinyconfig, allnoconfig or a .config path")
                shutil.copyfile(p, cfg)
            kconfig.apply_requests(cfg, reqs)
            make("olddefconfig", capture=True)
        except CommandFailed as e:
            raise StageError(f"configuring the kernel failed: {e.message}", hint=e.hint) from None
        text = cfg.read_text()
        values = kconfig.read_config(cfg)
        bad = kconfig.check_requests(reqs, values, None)
        if bad:
            index = kconfig.KconfigIndex(tree, ARCHES[self.arch][1])
            bad = kconfig.check_requests(reqs, values, index)
        self._report(ctx, bad)
        return text, bad

    def _report(self, ctx: Context, bad: list[kconfig.NotTaken], *, seen: bool = False) -> None:
        """Options that did not take: a warning when configuring or building, debug when only a
        cache key is computed from a configuration already reported (``seen``), so warm runs stay
        quiet; an error with ``strict``."""
        # an option the user named that does not exist in this kernel is an error; the
        # groups' lists are shared across kernel versions, so there it is only a warning
        missing = [b for b in bad if not b.exists and not b.request.origin.startswith("group ")]
        if missing:
            names = ", ".join(f"CONFIG_{b.request.symbol} ({b.request.origin})" for b in missing)
            raise ConfigError(f"no such kernel config option in this kernel: {names}",
                              path="options",
                              hint="check the spelling (grep -rn 'config NAME' in the source's "
                                   "Kconfig files), or drop it for this kernel version")
        for b in bad:
            ctx.log.log("DEBUG" if seen else "WARNING", str(b))
        if bad and self.options.get("strict"):
            raise ConfigError(
                f"{len(bad)} requested config option(s) did not take: "
                + "; ".join(str(b) for b in bad[:10]) + (" …" if len(bad) > 10 else ""),
                path="options", hint="enable their dependencies too, or set strict: false")

    # -- key ------------------------------------------------------------------------------

    def _compiler(self) -> str:
        cross = next((a.split("=", 1)[1] for a in self.make_env_args() if a.startswith("CROSS_COMPILE=")), "")
        cc = f"{cross}gcc"
        for a in self.options.get("make_args", []):
            if a.startswith("CC="):
                cc = a.split("=", 1)[1]
        return cc

    def _check_compiler(self) -> None:
        cc = self._compiler()
        if shutil.which(cc.split()[0]) is None:
            pkg = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
                   "x86_64-linux-gnu-gcc": "gcc-x86-64-linux-gnu"}.get(cc, "build-essential")
            raise ToolMissing(cc, hint=f"apt-get install {pkg}", needed_by=f"building a {self.arch} kernel")

    def key_material(self, ctx: Context) -> Mapping[str, Any]:
        # the key needs the final .config, so a missing source is fetched/extracted here (into
        # the state dir; the engine computes keys with a planning context even for a real run)
        conf = self.configure(ctx)
        mat: dict[str, Any] = {
            "source": conf.tree.revision,
            "config": hashlib.sha256(conf.config_text.encode()).hexdigest(),
            "make_args": self.make_env_args() + list(self.options.get("make_args", [])),
            "targets": self.targets(),
            "toolchain": self.toolchain(ctx),
        }
        for frag in self.options.get("fragments") or []:
            mat[f"fragment:{frag}"] = hash_path(ctx.resolve(frag))
        return mat

    def targets(self) -> list[str]:
        t = self.options.get("targets")
        return list(t) if t else [ARCHES[self.arch][2], "modules"]

    # -- build ----------------------------------------------------------------------------

    def describe(self, ctx: Context, *inputs: Any) -> list[list[str]]:
        return [["make", "O=<state>/build/…", *self.make_env_args(), f"-j{self._jobs(ctx)}",
                 *self.options.get("make_args", []), *self.targets()]]

    def _jobs(self, ctx: Context) -> int:
        return int(self.options.get("jobs") or ctx.host.cpus or os.cpu_count() or 1)

    def build(self, ctx: Context) -> KernelArtifact:
        """Configure, make (incrementally, in the kept build dir) and write the artifact."""
        assert ctx.out is not None
        conf = self.configure(ctx)
        bdir = conf.build_dir
        bdir.mkdir(parents=True, exist_ok=True)
        with self._lock(ctx, "build-" + conf.build_id):
            cfg = bdir / ".config"
            if not cfg.exists() or cfg.read_text() != conf.config_text:
                cfg.write_text(conf.config_text)
            self._run_make(ctx, conf)
            return self._collect(ctx, conf)

    def _run_make(self, ctx: Context, conf: Configured) -> None:
        count_file = conf.build_dir / ".lvh-steps"
        try:
            total = float(count_file.read_text()) if count_file.exists() else None
        except ValueError:
            total = None
        log_path = (ctx.tmp or conf.build_dir) / "make.log"
        errors: list[str] = []
        steps = 0
        with log_path.open("w") as log, ctx.progress(f"make {' '.join(self.targets())}", total) as prog:
            def on_line(stream: str, line: str) -> None:
                nonlocal steps
                log.write(line.rstrip("\n") + "\n")
                if _PROGRESS_LINE.match(line):
                    steps += 1
                    prog.update(completed=steps, total=max(total or 0, steps) if total else None,
                                description=line.strip()[:60])
                elif ("error:" in line or "Error " in line) and len(errors) < 8:
                    errors.append(line.strip())

            try:
                self._make(ctx, conf.tree.path, conf.build_dir, f"-j{self._jobs(ctx)}", *self.targets(),
                           on_line=on_line)
            except CommandFailed as e:
                log.flush()
                shutil.copyfile(log_path, conf.build_dir / ".lvh-last-make.log")
                first = "\n".join("    " + x for x in errors)
                raise StageError(
                    f"kernel build failed (make exit code {e.result.returncode})"
                    + (f"\n  first errors:\n{first}" if first else "")
                    + "\n  last output:\n" + "\n".join("    " + x for x in e.result.tail[-20:]),
                    hint=f"full make log: {conf.build_dir / '.lvh-last-make.log'} (also kept with "
                         "the failed build)",
                ) from None
        shutil.copyfile(log_path, conf.build_dir / ".lvh-last-make.log")
        if steps:
            count_file.write_text(str(steps))

    def _collect(self, ctx: Context, conf: Configured) -> KernelArtifact:
        assert ctx.out is not None
        bdir = conf.build_dir
        out = ctx.out
        rel_file = bdir / "include" / "config" / "kernel.release"
        if not rel_file.exists():
            raise StageError(f"make did not write {rel_file}", hint="is the build dir complete?")
        version = rel_file.read_text().strip()
        boot = out / "boot"
        boot.mkdir(parents=True, exist_ok=True)
        image_src = bdir / ARCHES[self.arch][3]
        if not image_src.exists():
            raise StageError(f"make did not produce {image_src}",
                             hint=f"targets {self.targets()} must include {ARCHES[self.arch][2]}")
        image = boot / f"vmlinuz-{version}"
        shutil.copyfile(image_src, image)
        system_map = boot / f"System.map-{version}"
        shutil.copyfile(bdir / "System.map", system_map)
        config = boot / f"config-{version}"
        shutil.copyfile(bdir / ".config", config)
        vmlinux = None
        if self.options.get("vmlinux"):
            vmlinux = boot / f"vmlinux-{version}"
            shutil.copyfile(bdir / "vmlinux", vmlinux)
        values = kconfig.read_config(bdir / ".config")
        modules = None
        if values.get("MODULES") == "y" and "modules" in self.targets():
            args = [f"INSTALL_MOD_PATH={out}", "modules_install"]
            if self.options.get("strip_modules", True):
                args.insert(0, "INSTALL_MOD_STRIP=1")
            self._make(ctx, conf.tree.path, bdir, *args, capture=True)
            mdir = out / "lib" / "modules" / version
            for link in ("build", "source"):  # they point into the state dir
                p = mdir / link
                if p.is_symlink() or p.exists():
                    p.unlink()
            if not (mdir / "modules.dep").exists():
                ctx.run("depmod", "-b", out, version)
            modules = out
        n_mods = sum(1 for _ in (out / "lib" / "modules").rglob("*.ko")) if modules else 0
        return KernelArtifact(
            root=out, image=image, version=version, arch=self.arch, config=config,
            system_map=system_map, modules=modules, vmlinux=vmlinux,
            meta={
                "source": conf.tree.revision,
                "builder": "make",
                "modules": n_mods,
                "not_taken": [str(b) for b in conf.not_taken],
                "btf": values.get("DEBUG_INFO_BTF") == "y",
            },
        )
