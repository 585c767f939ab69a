"""Kernel sources: a git URL, a local source folder, or a source tarball.

Git URLs are upstream's: ``git://…``, ``https://…``, ``file://…`` or a local repository path,
``#branch`` selects the branch (default: the remote's default branch), ``?depth=N`` makes a
shallow clone. Non-shallow sources share one bare repository (``<state>/git/main.git``, a remote
per kernel) with a worktree each (``<state>/git/trees/<id>``); shallow ones get their own clone
(``<state>/git/shallow/<id>``). Fetching again updates the tree to the branch's new head (upstream
pulled in the worktree and never updated shallow clones), refusing to throw away local changes.

Tarballs are extracted once into ``<state>/src/tar-<sha256>``; folders are built in place
(out-of-tree, so the folder is never written).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lvh.api import CommandFailed, Context, StageError, UserError

_TAR_SUFFIXES = (".tar", ".tar.xz", ".tar.gz", ".tgz", ".tar.bz2", ".tar.zst", ".txz")
_GIT_SCHEMES = ("git", "http", "https", "ssh", "file", "git+ssh")
_ID = re.compile(r"[^A-Za-z0-9._-]+")


def state_dir(ctx: Context) -> Path:
    """The driver's state dir, symlinks resolved: make records absolute paths in the build dir,
    so they must not change between runs (a workdir reached through a link, a symlinked state)."""
    return ctx.state_dir.resolve()


def safe_id(text: str) -> str:
    """``text`` made safe as a directory name."""
    return _ID.sub("_", text).strip("._") or "kernel"


@dataclass
class SourceSpec:
    """A parsed ``source``: ``kind`` is ``git``, ``tar`` or ``dir``."""

    kind: str
    location: str  # URL for git, absolute path otherwise
    branch: str | None = None
    depth: int | None = None
    text: str = ""

    @property
    def shallow(self) -> bool:
        return self.depth is not None


def parse_source(text: str, ctx: Context | None = None) -> SourceSpec:
    """Parse a ``source`` string. Raises :class:`UserError` with a hint for a bad one."""
    raw = str(text).strip()
    if not raw:
        raise UserError("empty kernel source", hint="give a git URL, a source folder or a tarball")
    parts = urlsplit(raw)
    if parts.scheme in _GIT_SCHEMES and "://" in raw:
        if parts.scheme in ("http", "https") and parts.path.endswith(_TAR_SUFFIXES):
            raise UserError(f"kernel source {raw}: downloading tarballs is not supported",
                            hint="download it and give its path, or use a git URL")
        depth = None
        q = parse_qs(parts.query)
        if "depth" in q:
            vals = q["depth"]
            if len(vals) != 1 or not vals[0].isdigit() or int(vals[0]) < 1:
                raise UserError(f"kernel source {raw}: invalid depth {vals!r}",
                                hint="use ?depth=N with N >= 1 for a shallow clone, or no depth")
            depth = int(vals[0])
        repo = f"{parts.scheme}://{parts.netloc}{parts.path}"
        return SourceSpec("git", repo, parts.fragment or None, depth, raw)
    # a local path, maybe with #branch / ?depth=N (then it is a git repository)
    path_text, _, branch = raw.partition("#")
    depth = None
    if "?" in path_text:
        path_text, _, query = path_text.partition("?")
        q = parse_qs(query)
        if "depth" in q and q["depth"][0].isdigit() and int(q["depth"][0]) >= 1:
            depth = int(q["depth"][0])
        else:
            raise UserError(f"kernel source {raw}: invalid query {query!r}", hint="use ?depth=N")
    path = ctx.resolve(path_text) if ctx else Path(os.path.expanduser(path_text)).absolute()
    if "*" in path_text:
        # e.g. /usr/src/linux-source-*.tar.xz: the newest version installed (natural order).
        matches = sorted(glob.glob(str(path)), key=_natural)
        if not matches:
            raise UserError(f"kernel source {path}: nothing matches",
                            hint="install a kernel source package (apt-get install linux-source) or give a path")
        path = Path(matches[-1])
    if not path.exists():
        raise UserError(f"kernel source {path} does not exist",
                        hint="give a git URL (git://, https://, file://), a kernel source folder, "
                             "or a source tarball such as /usr/src/linux-source-6.1.tar.xz")
    if branch or depth is not None:
        # a local git repository: --depth needs a file:// URL to be honoured
        return SourceSpec("git", f"file://{path.resolve()}", branch or None, depth, raw)
    if path.is_file():
        if not path.name.endswith(_TAR_SUFFIXES):
            raise UserError(f"kernel source {path} is a file but not a tarball",
                            hint=f"a source tarball ends with one of {', '.join(_TAR_SUFFIXES)}")
        return SourceSpec("tar", str(path.resolve()), text=raw)
    if not (path / "Makefile").exists() or not (path / "Kconfig").exists():
        raise UserError(f"kernel source {path} is not a kernel source tree (no Makefile/Kconfig)",
                        hint="point source: at the top of a Linux source tree")
    return SourceSpec("dir", str(path.resolve()), text=raw)


def _natural(text: str) -> list[Any]:
    """Sort key that orders 6.10 after 6.9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


@dataclass
class SourceTree:
    """A source tree ready to configure: ``path``, a stable ``id`` (for build dir names) and the
    ``revision`` that goes into the cache key."""

    path: Path
    id: str
    revision: str


# ------------------------------------------------------------------------------------------
# tarballs
# ------------------------------------------------------------------------------------------


def tarball_digest(ctx: Context, path: Path) -> str:
    """sha256 of a tarball, memoized by (path, size, mtime) in the state dir (0.12 s for the
    138 MB linux-source-6.1.tar.xz, so the memo only matters for huge ones)."""
    st = path.stat()
    memo_file = state_dir(ctx) / "src" / "digests.json"
    memo: dict[str, str] = {}
    if memo_file.exists():
        try:
            memo = json.loads(memo_file.read_text())
        except ValueError:
            memo = {}
    k = f"{path}\0{st.st_size}\0{st.st_mtime_ns}"
    if k in memo:
        return memo[k]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    memo[k] = h.hexdigest()
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_file.with_suffix(f".{os.getpid()}")
    tmp.write_text(json.dumps(memo))
    tmp.replace(memo_file)
    return memo[k]


def prepare_tarball(ctx: Context, spec: SourceSpec) -> SourceTree:
    """Extract the tarball once (atomically) and return its tree."""
    path = Path(spec.location)
    digest = tarball_digest(ctx, path)
    sid = f"tar-{digest[:16]}"
    dest = state_dir(ctx) / "src" / sid
    if not (dest / "Makefile").exists():
        partial = state_dir(ctx) / "src" / f".partial-{sid}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            ctx.log.info(f"extracting {path} (once)")
            ctx.run("tar", "-xf", path, "-C", partial, hint=f"is {path} a complete tarball?")
            entries = list(partial.iterdir())
            top = entries[0] if len(entries) == 1 and entries[0].is_dir() else partial
            if not (top / "Makefile").exists():
                raise UserError(f"{path} does not hold a kernel source tree",
                                hint="use a Linux source tarball, e.g. from Debian's linux-source package")
            shutil.rmtree(dest, ignore_errors=True)
            top.rename(dest)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return SourceTree(dest, sid, f"sha256:{digest}")


def _is_tarfile(path: Path) -> bool:  # pragma: no cover - helper for future formats
    return tarfile.is_tarfile(path)


# ------------------------------------------------------------------------------------------
# folders
# ------------------------------------------------------------------------------------------


def folder_revision(ctx: Context, path: Path) -> str:
    """A revision for a source folder: git HEAD plus a hash of the local diff for a checkout,
    otherwise a hash of every file's (path, size, mtime) — ~0.5 s for a kernel tree."""
    if (path / ".git").exists():
        head = ctx.run("git", "-C", path, "rev-parse", "HEAD", capture=True, check=False)
        if head.returncode == 0:
            diff = ctx.run("git", "-C", path, "diff", "HEAD", capture=True, check=False)
            untracked = ctx.run("git", "-C", path, "status", "--porcelain", capture=True, check=False)
            dirty = hashlib.sha256((diff.stdout + untracked.stdout).encode()).hexdigest()[:16]
            return f"git:{head.stdout.strip()}+{dirty}"
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"stat:{h.hexdigest()}"


def prepare_folder(ctx: Context, spec: SourceSpec) -> SourceTree:
    path = Path(spec.location)
    if (path / ".config").exists() or (path / "include" / "config").exists():
        raise UserError(f"kernel source {path} is not clean (it holds a .config or build output)",
                        hint=f"lvh builds out of tree; run 'make -C {path} mrproper' first")
    sid = "dir-" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return SourceTree(path, sid, folder_revision(ctx, path))


# ------------------------------------------------------------------------------------------
# git
# ------------------------------------------------------------------------------------------


def git_dirs(ctx: Context, spec: SourceSpec, name: str) -> tuple[Path, Path]:
    """(bare repo or None-equivalent, tree) for a git source of kernel ``name``."""
    root = state_dir(ctx) / "git"
    if spec.shallow:
        return root / "shallow" / safe_id(name), root / "shallow" / safe_id(name)
    return root / "main.git", root / "trees" / safe_id(name)


def _git(ctx: Context, *args: str | os.PathLike[str], what: str, spec: SourceSpec, **kw) -> str:
    try:
        return ctx.run("git", *args, capture=True, **kw).stdout.strip()
    except CommandFailed as e:
        lines = [ln.strip() for ln in e.result.tail if ln.strip()]
        last = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[-1] if lines else "")
        branch = f" (branch {spec.branch})" if spec.branch else ""
        raise StageError(
            f"git {what} failed for {spec.location}{branch}: {last}",
            hint="check the URL and the branch name (git ls-remote URL shows what exists)",
        ) from None


def _ensure_clean(ctx: Context, tree: Path, spec: SourceSpec) -> None:
    st = _git(ctx, "-C", tree, "status", "--porcelain", "--untracked-files=no", what="status", spec=spec)
    if st:
        raise UserError(f"kernel tree {tree} has local changes; fetching would overwrite them",
                        hint="commit or stash them (git -C TREE stash), or remove the tree")


def git_fetch(ctx: Context, spec: SourceSpec, name: str) -> SourceTree:
    """Fetch (or update) the git source of kernel ``name`` and return its tree."""
    bare, tree = git_dirs(ctx, spec, name)
    sid = f"git-{safe_id(name)}"
    ref = spec.branch or "HEAD"
    if spec.shallow:
        if not (tree / ".git").exists():
            partial = tree.with_name(f".partial-{tree.name}-{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
            args = ["clone", "--depth", str(spec.depth), "--single-branch", "--no-tags"]
            if spec.branch:
                args += ["--branch", spec.branch]
            try:
                _git(ctx, *args, spec.location, partial, what="clone", spec=spec)
                shutil.rmtree(tree, ignore_errors=True)
                partial.rename(tree)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        else:
            _ensure_clean(ctx, tree, spec)
            _git(ctx, "-C", tree, "remote", "set-url", "origin", spec.location, what="remote", spec=spec)
            _git(ctx, "-C", tree, "fetch", "--depth", str(spec.depth), "--no-tags", "origin", ref,
                 what="fetch", spec=spec)
            _git(ctx, "-C", tree, "reset", "--hard", "FETCH_HEAD", what="reset", spec=spec)
        rev = _git(ctx, "-C", tree, "rev-parse", "HEAD", what="rev-parse", spec=spec)
        return SourceTree(tree, sid, f"git:{rev}")

    if not (bare / "HEAD").exists():
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git(ctx, "init", "--bare", "-q", bare, what="init", spec=spec)
    remote = safe_id(name)
    remotes = _git(ctx, "-C", bare, "remote", what="remote", spec=spec).split()
    if remote in remotes:
        _git(ctx, "-C", bare, "remote", "set-url", remote, spec.location, what="remote", spec=spec)
    else:
        _git(ctx, "-C", bare, "remote", "add", remote, spec.location, what="remote", spec=spec)
    tracking = f"refs/remotes/{remote}/lvh-source"
    try:
        _git(ctx, "-C", bare, "fetch", "--no-tags", remote, f"+{ref}:{tracking}", what="fetch", spec=spec)
    except StageError:
        if remote not in remotes:  # leave no trace of a source that never fetched
            ctx.run("git", "-C", bare, "remote", "remove", remote, check=False)
        raise
    commit = _git(ctx, "-C", bare, "rev-parse", f"{tracking}^{{commit}}", what="rev-parse", spec=spec)
    branch = f"lvh/{remote}"
    if not (tree / ".git").exists():
        shutil.rmtree(tree, ignore_errors=True)
        _git(ctx, "-C", bare, "worktree", "prune", what="worktree prune", spec=spec)
        tree.parent.mkdir(parents=True, exist_ok=True)
        _git(ctx, "-C", bare, "worktree", "add", "-f", "-B", branch, tree, commit,
             what="worktree add", spec=spec)
    else:
        _ensure_clean(ctx, tree, spec)
        _git(ctx, "-C", tree, "reset", "-q", "--hard", commit, what="reset", spec=spec)
    return SourceTree(tree, sid, f"git:{commit}")


def git_tree(ctx: Context, spec: SourceSpec, name: str, *, fetch_missing: bool = True) -> SourceTree | None:
    """The git tree of kernel ``name`` as it is (fetched if missing and ``fetch_missing``)."""
    _bare, tree = git_dirs(ctx, spec, name)
    if not (tree / ".git").exists():
        return git_fetch(ctx, spec, name) if fetch_missing else None
    rev = folder_revision(ctx, tree)
    return SourceTree(tree, f"git-{safe_id(name)}", rev)


def git_remove(ctx: Context, spec: SourceSpec, name: str) -> None:
    """Remove the tree of kernel ``name`` (and its remote in the shared repository)."""
    bare, tree = git_dirs(ctx, spec, name)
    shutil.rmtree(tree, ignore_errors=True)
    if not spec.shallow and (bare / "HEAD").exists():
        ctx.run("git", "-C", bare, "worktree", "prune", check=False)
        ctx.run("git", "-C", bare, "remote", "remove", safe_id(name), check=False)
        ctx.run("git", "-C", bare, "branch", "-D", f"lvh/{safe_id(name)}", check=False)


def prepare(ctx: Context, spec: SourceSpec, name: str, *, fetch_missing: bool = True) -> SourceTree | None:
    """The source tree for ``spec`` (extracting / fetching it if it is not there yet)."""
    if spec.kind == "tar":
        return prepare_tarball(ctx, spec)
    if spec.kind == "dir":
        return prepare_folder(ctx, spec)
    return git_tree(ctx, spec, name, fetch_missing=fetch_missing)
