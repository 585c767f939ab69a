"""Shared fixtures. Expensive artifacts (kernels, rootfs) are cached under ~/.cache/lvh-tests."""

from __future__ import annotations

import os
from pathlib import Path

TEST_CACHE = Path(os.environ.get("LVH_TEST_CACHE", Path.home() / ".cache" / "lvh-tests"))

os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")

# lvh's own pytest plugin for driver tests (fixtures: fake_executor, lvh_context, lvh_workdir,
# lvh_drivers); declared here, in the root conftest, as pytest requires.
pytest_plugins = ["lvh.testing"]
