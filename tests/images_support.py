"""Shared helpers for the image tests and the image benchmark: a bookworm minbase rootfs built
once with the real mmdebstrap and cached under ~/.cache/lvh-tests/ keyed by its options, and a
way to seed an engine workdir's cache with it (hard links: customizers copy before writing)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from filelock import FileLock

TEST_CACHE = Path(os.environ.get("LVH_TEST_CACHE", Path.home() / ".cache" / "lvh-tests"))
MIRROR = os.environ.get("LVH_TEST_MIRROR", "http://deb.debian.org/debian")
BASE_ROOTFS = {"suite": "bookworm", "variant": "minbase", "mirror": MIRROR}


def missing_tools(*tools: str) -> list[str]:
    return [t for t in tools if not (shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin"))]


def cached_rootfs(options: dict[str, Any] | None = None) -> Path:
    """The directory of a cache entry (``artifact.json`` + files) holding the rootfs built with
    ``options`` (default: bookworm minbase); built on first use."""
    from lvh_mmdebstrap.driver import MmdebstrapProvider

    from lvh.testing import make_context

    opts = dict(options or BASE_ROOTFS)
    drv = MmdebstrapProvider(MmdebstrapProvider.Options().load(opts))
    ver = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True).stdout.strip()
    key = hashlib.sha256(json.dumps([opts, ver, drv.version, os.geteuid() == 0],
                                    sort_keys=True).encode()).hexdigest()[:16]
    entry = TEST_CACHE / "rootfs" / key
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(TEST_CACHE / f"rootfs-{key}.lock")):
        if (entry / "artifact.json").exists():
            return entry
        work = TEST_CACHE / "rootfs" / f".build-{key}"
        shutil.rmtree(work, ignore_errors=True)
        ctx = make_context(work, real=True)
        art = drv.build(ctx)
        (ctx.out / "artifact.json").write_text(json.dumps({"artifact": art.to_json(), "options": opts}))
        shutil.rmtree(entry, ignore_errors=True)
        os.rename(ctx.out, entry)
        shutil.rmtree(work, ignore_errors=True)
    return entry


def load_rootfs(entry: Path):
    from lvh.api import RootfsArtifact

    data = json.loads((entry / "artifact.json").read_text())["artifact"]
    return RootfsArtifact.from_json(data, entry)


def seed_rootfs(engine: Any, entry: Path) -> int:
    """Put ``entry`` into ``engine``'s cache for every rootfs stage with the same driver options
    as ``entry``, by hard links. Returns how many stages were seeded."""
    from lvh_mmdebstrap.driver import MmdebstrapProvider

    meta = json.loads((entry / "artifact.json").read_text())
    want = MmdebstrapProvider.Options().load(meta.get("options") or BASE_ROOTFS)
    n = 0
    for st in engine.stages():
        if st.kind != "rootfs" or st.ref.name != "mmdebstrap" or dict(st.ref.options) != dict(want):
            continue
        dest = engine.cache.entry_dir("rootfs", st.key)
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".seed")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["cp", "-al", str(entry), str(tmp)], check=True)
        os.rename(tmp, dest)
        n += 1
    return n
