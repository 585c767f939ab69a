"""Shared fixtures. Expensive artifacts (kernels, rootfs) are cached under ~/.cache/lvh-tests."""

from __future__ import annotations

import os
from pathlib import Path

TEST_CACHE = Path(os.environ.get("LVH_TEST_CACHE", Path.home() / ".cache" / "lvh-tests"))

os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
