"""The plugin boundary: plugins import only lvh.api from lvh; the core names no tool."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = re.compile(r"mmdebstrap|guestfish|virt-customize|libguestfs|qemu-system|qemu-img|mke2fs|debugfs")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lvh":  # `from lvh import api` imports lvh.api (and lvh/__init__)
                out += [(node.lineno, f"lvh.{a.name}") for a in node.names]
            else:
                out += [(node.lineno, node.module)]
    return out


def plugin_files() -> list[Path]:
    files = sorted((ROOT / "plugins").rglob("*.py"))
    files += sorted((ROOT / "examples").rglob("lvh_plugin_*/**/*.py"))
    return files


def test_plugins_import_only_lvh_api():
    bad = []
    for f in plugin_files():
        for line, mod in _imports(f):
            if (mod == "lvh" or mod.startswith("lvh.")) and mod != "lvh.api":
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "plugins must import only lvh.api:\n" + "\n".join(bad)


def test_core_names_no_tool():
    bad = []
    for f in sorted((ROOT / "lvh").rglob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if TOOLS.search(line):
                bad.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "the core must not name tools (they belong in plugins):\n" + "\n".join(bad)


def test_the_boundary_check_sees_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from lvh.engine import Engine\nfrom lvh import config\nfrom lvh.api import Driver\n"
                 "from lvh import api\n")
    mods = [m for _, m in _imports(f)]
    assert "lvh.engine" in mods and "lvh.config" in mods
    assert "lvh" not in mods  # `from lvh import api` is lvh.api
