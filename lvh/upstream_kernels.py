"""Upstream's ``kernels.json`` (cilium/little-vm-helper) ⇄ lvh's config.

The file::

    {
        "kernels": [
            {"name": "bpf-next", "url": "git://…/bpf-next.git#master",
             "opts": [["--enable", "CONFIG_X"], …], "extra_make_args": ["W=1"]}
        ],
        "common_opts": [["--enable", "CONFIG_BPF"], …]
    }

Each kernel becomes a ``make`` kernel of a pipeline: ``source`` = ``url`` (a relative local path
is relative to the kernels dir), ``options`` = ``common_opts`` then ``opts`` (later wins, as
upstream applies them in that order), ``make_args`` = ``extra_make_args``, base ``defconfig``.
Keys lvh adds (ignored by upstream): ``base``, ``config_groups``, ``fragments``, ``arch``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvh.api import ConfigError, UserError

FILENAME = "kernels.json"
#: Keys of a kernel entry: upstream's, then lvh's additions.
KERNEL_KEYS = ("name", "url", "opts", "extra_make_args", "base", "config_groups", "fragments", "arch")


@dataclass
class KernelsFile:
    """The content of a ``kernels.json``."""

    kernels: list[dict[str, Any]] = field(default_factory=list)
    common_opts: list[list[str]] = field(default_factory=list)

    def get(self, name: str) -> dict[str, Any] | None:
        return next((k for k in self.kernels if k.get("name") == name), None)

    def names(self) -> list[str]:
        return [k["name"] for k in self.kernels]

    def to_json(self) -> dict[str, Any]:
        return {"kernels": self.kernels, "common_opts": self.common_opts}


def path_of(directory: Path) -> Path:
    return Path(directory) / FILENAME


def load(directory: Path) -> KernelsFile:
    """Read ``directory/kernels.json``; a ConfigError (with a hint) if missing or malformed."""
    p = path_of(directory)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"no {FILENAME} in {directory}",
                        hint=f"create one with: lvh kernels init --dir {directory}") from None
    except ValueError as e:
        raise ConfigError(f"not valid JSON: {e}", file=p, hint="fix the file or re-create it with init") from None
    if not isinstance(data, dict):
        raise ConfigError("must be an object with 'kernels' and 'common_opts'", file=p)
    unknown = set(data) - {"kernels", "common_opts"}
    if unknown:
        raise ConfigError(f"unknown key(s): {', '.join(sorted(unknown))}", file=p,
                          hint="kernels.json has 'kernels' and 'common_opts'")
    kernels = data.get("kernels") or []
    if not isinstance(kernels, list):
        raise ConfigError("'kernels' must be a list", file=p, path="kernels")
    seen = set()
    for i, k in enumerate(kernels):
        where = f"kernels[{i}]"
        if not isinstance(k, dict) or not isinstance(k.get("name"), str) or not k.get("name"):
            raise ConfigError("each kernel needs a 'name'", file=p, path=where)
        if not isinstance(k.get("url"), str) or not k["url"]:
            raise ConfigError(f"kernel {k['name']!r} needs a 'url'", file=p, path=where)
        bad = set(k) - set(KERNEL_KEYS)
        if bad:
            raise ConfigError(f"unknown key(s): {', '.join(sorted(bad))}", file=p, path=where,
                              hint=f"a kernel has: {', '.join(KERNEL_KEYS)}")
        if k["name"] in seen:
            raise ConfigError(f"kernel {k['name']!r} is listed twice", file=p, path=where)
        seen.add(k["name"])
    common = data.get("common_opts") or []
    if not isinstance(common, list):
        raise ConfigError("'common_opts' must be a list of options", file=p, path="common_opts")
    return KernelsFile(kernels=list(kernels), common_opts=list(common))


def save(directory: Path, kf: KernelsFile) -> Path:
    """Write ``directory/kernels.json`` atomically (4-space indent, as upstream)."""
    p = path_of(directory)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{FILENAME}.{os.getpid()}")
    tmp.write_text(json.dumps(kf.to_json(), indent=4) + "\n")
    tmp.replace(p)
    return p


def kernel_options(kf: KernelsFile, entry: dict[str, Any], *, arch: str | None = None) -> dict[str, Any]:
    """The ``make`` builder options of one kernel entry (the dict beside ``builder: make``)."""
    opts: dict[str, Any] = {
        "source": entry["url"],
        "base": entry.get("base") or "defconfig",
        "options": [list(o) if isinstance(o, list) else o for o in [*kf.common_opts, *(entry.get("opts") or [])]],
    }
    for key in ("config_groups", "fragments"):
        if entry.get(key):
            opts[key] = list(entry[key])
    if entry.get("extra_make_args"):
        opts["make_args"] = list(entry["extra_make_args"])
    a = arch or entry.get("arch")
    if a:
        opts["arch"] = a
    return opts


def to_pipeline(kf: KernelsFile, directory: Path, *, names: list[str] | None = None,
                arch: str | None = None) -> dict[str, Any]:
    """A pipeline config (the conf.yaml shape) building the kernels ``names`` (default: all).
    The workdir is the kernels dir itself: ``D/kernels/<name>`` links to the built kernel."""
    kernels = []
    for entry in kf.kernels:
        if names and entry["name"] not in names:
            continue
        kernels.append({"name": entry["name"], "builder": "make", **kernel_options(kf, entry, arch=arch)})
    return {"api_version": 1, "workdir": str(Path(directory).resolve()), "kernels": kernels}


def from_pipeline(data: dict[str, Any]) -> KernelsFile:
    """The reverse, for the ``make`` kernels of a pipeline config (other builders are skipped)."""
    kf = KernelsFile()
    for k in data.get("kernels") or []:
        if k.get("builder") != "make":
            continue
        entry: dict[str, Any] = {"name": k["name"], "url": k["source"]}
        if k.get("options"):
            entry["opts"] = [list(o) if isinstance(o, list) else o for o in k["options"]]
        if k.get("make_args"):
            entry["extra_make_args"] = list(k["make_args"])
        for key in ("base", "config_groups", "fragments", "arch"):
            if k.get(key) and not (key == "base" and k[key] == "defconfig"):
                entry[key] = k[key]
        kf.kernels.append(entry)
    return kf
