"""The content-addressed artifact cache under ``<workdir>/cache``.

An entry is ``cache/<kind>/<key>/``: the artifact's files and ``artifact.json``. Entries are
built in ``cache/.tmp/`` (same filesystem) and published by one atomic rename, under a file
lock per key, so concurrent pipelines on one workdir never see half an entry and never build
the same key twice. A failed build moves to ``failed/<stage>-<timestamp>/`` with its log.
Named outputs (``images/<name>.<format>``, ``kernels/<name>``) are symlinks into the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from lvh.api import Artifact, DiskArtifact, KernelArtifact, RootfsArtifact, RunResult

ARTIFACT_TYPES: dict[str, type[Artifact]] = {
    c.kind: c for c in (RootfsArtifact, DiskArtifact, KernelArtifact, RunResult)
}
META = "artifact.json"


@dataclass
class BuildDir:
    root: Path
    out: Path
    tmp: Path
    log: Path


@dataclass
class Entry:
    kind: str
    key: str
    path: Path
    meta: dict[str, Any]
    size: int


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


class Cache:
    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.root = self.workdir / "cache"
        self.tmp_root = self.root / ".tmp"
        self.locks = self.workdir / "locks"
        self.failed = self.workdir / "failed"

    # -- lookups ------------------------------------------------------------------------------
    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lookup(self, kind: str, key: str) -> Artifact | None:
        """The published artifact for ``key``, or None."""
        d = self.entry_dir(kind, key)
        try:
            meta = json.loads((d / META).read_text())
        except (OSError, ValueError):
            return None
        data = meta["artifact"]
        cls = ARTIFACT_TYPES.get(data.get("kind", ""), Artifact)
        art = cls.from_json(data, d)
        art.key = key
        return art

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the lock of ``key`` (blocks while another process builds it)."""
        self.locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.locks / f"{key}.lock")):
            yield

    # -- building -----------------------------------------------------------------------------
    def new_build_dir(self, stage: str) -> BuildDir:
        root = self.tmp_root / f"{_safe(stage)}-{uuid.uuid4().hex[:8]}"
        out, tmp = root / "out", root / "tmp"
        out.mkdir(parents=True)
        tmp.mkdir()
        return BuildDir(root, out, tmp, root / "stage.log")

    def publish(self, kind: str, key: str, artifact: Artifact, build: BuildDir,
                record: dict[str, Any]) -> Artifact:
        """Move ``build.out`` into place as entry ``key`` (atomic rename) and return the artifact
        with its paths rewritten."""
        dest = self.entry_dir(kind, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        art = artifact.rebased(dest)
        art.key = key
        meta = dict(record, artifact=artifact.to_json(), created=time.time())
        (build.out / META).write_text(json.dumps(meta, indent=1, default=str))
        if build.log.exists():
            shutil.copy2(build.log, build.out / "stage.log")
        if dest.exists():  # a stale entry without metadata (crash before rename can't leave one)
            shutil.rmtree(dest)
        os.rename(build.out, dest)
        shutil.rmtree(build.root, ignore_errors=True)
        return art

    def fail(self, build: BuildDir, stage: str) -> Path:
        """Keep a failed build's partial output and log under ``failed/``; return where."""
        self.failed.mkdir(parents=True, exist_ok=True)
        dest = self.failed / f"{_safe(stage)}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        try:
            os.rename(build.root, dest)
        except OSError:
            shutil.move(str(build.root), dest)
        return dest

    def discard(self, build: BuildDir) -> None:
        shutil.rmtree(build.root, ignore_errors=True)

    # -- named outputs ------------------------------------------------------------------------
    def link(self, link: Path, target: Path) -> None:
        """Point the named output ``link`` at ``target`` (atomically, relative symlink)."""
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:6]}")
        os.symlink(os.path.relpath(target, link.parent), tmp)
        os.replace(tmp, link)

    def named_outputs(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for sub in ("images", "kernels"):
            d = self.workdir / sub
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    if p.is_symlink():
                        out[f"{sub}/{p.name}"] = p
        return out

    # -- listing and gc -----------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        out = []
        if not self.root.is_dir():
            return out
        for kind_dir in sorted(self.root.iterdir()):
            if kind_dir.name.startswith(".") or not kind_dir.is_dir():
                continue
            for d in sorted(kind_dir.iterdir()):
                try:
                    meta = json.loads((d / META).read_text())
                except (OSError, ValueError):
                    meta = {}
                out.append(Entry(kind_dir.name, d.name, d, meta, _du(d)))
        return out

    def live_keys(self) -> set[str]:
        """Keys that named outputs point to, and everything they were built from."""
        by_key = {e.key: e for e in self.entries()}
        todo = []
        for link in self.named_outputs().values():
            try:
                target = link.resolve()
            except OSError:
                continue
            rel = target.relative_to(self.root.resolve()) if target.is_relative_to(self.root.resolve()) else None
            if rel is not None and len(rel.parts) >= 2:
                todo.append(rel.parts[1])
        live: set[str] = set()
        while todo:
            k = todo.pop()
            if k in live or k not in by_key:
                continue
            live.add(k)
            todo += list(by_key[k].meta.get("inputs", []))
        return live

    def gc(self, *, dry_run: bool = False) -> list[Entry]:
        """Drop entries no named output needs (and stale temp dirs); return what was dropped."""
        live = self.live_keys()
        dropped = []
        for e in self.entries():
            if e.key in live:
                continue
            with self.lock(e.key):
                dropped.append(e)
                if not dry_run:
                    shutil.rmtree(e.path, ignore_errors=True)
        if not dry_run and self.tmp_root.is_dir():
            for d in self.tmp_root.iterdir():
                # A build in progress holds its key's lock; a temp dir older than a day is a crash's.
                if time.time() - d.stat().st_mtime > 86400:
                    shutil.rmtree(d, ignore_errors=True)
        return dropped


def _du(path: Path) -> int:
    """Allocated bytes (sparse files count what they use)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total
