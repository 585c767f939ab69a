"""Test matrices: a run's ``matrix:`` expands to one run per combination, and a pipeline's runs
become a GitHub Actions job matrix. Pure functions on plain config data (dicts), no I/O.

```yaml
runs:
  - name: smoke
    runner: microvm
    command: "uname -r && ${{ matrix.test }}"
    matrix:
      kernel: [k61, k66]               # an axis named like a run key sets that key
      image: [base, tools]
      test: ["bpftool version", "ip link"]   # any other axis is only for ${{ matrix.X }}
      exclude: [{kernel: k61, image: tools}]
      include: [{kernel: bpf-next, image: tools, test: "bpftool prog"}]
```

Expanded names are ``<name>-<value>-<value>…`` in axis order (``smoke-k61-base-test1``), within
the config's name rules (``[A-Za-z0-9][A-Za-z0-9._+-]{0,63}``): a value that is not a short word
(spaces, slashes, more than 32 characters) is named ``<axis><index>`` (1-based on its axis), and a
name that would pass 64 characters ends in a hash of its values instead.
``${{ matrix.X }}`` in any string of the run is replaced by the value.
GitHub's ``include``/``exclude`` semantics, simplified: ``exclude`` removes every combination it
matches; an ``include`` entry extends the combinations that agree with it on the axes it shares
with them, and is added as a combination of its own when it agrees with none.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MatrixError", "expand_runs", "github_matrix"]


class MatrixError(ValueError):
    """A malformed matrix. ``path`` is where in the runs list (``runs[0].matrix.exclude``), ``hint``
    how to fix it; ``str()`` is the message alone, for the config loader to locate."""

    def __init__(self, message: str, *, path: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.hint = hint



_REF = re.compile(r"\$\{\{\s*matrix\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")
_WORD = re.compile(r"^[A-Za-z0-9._+-]{1,32}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
#: Keys of a run that a matrix axis of the same name sets (everything else is a free variable).
RUN_KEYS = frozenset({"runner", "image", "kernel", "command", "cpus", "memory", "cmdline", "timeout",
                      "boot_timeout", "ports", "host_mounts", "ssh", "accel", "daemonize", "root_device"})
_SPECIAL = ("include", "exclude")


def _axes(matrix: Any, where: str) -> dict[str, list[Any]]:
    if not isinstance(matrix, Mapping):
        raise MatrixError("matrix must be a mapping of axis names to lists of values", path=where,
                          hint="e.g. matrix: {kernel: [k61, k66], image: [base]}")
    axes: dict[str, list[Any]] = {}
    for k, v in matrix.items():
        if k in _SPECIAL:
            continue
        if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", k):
            raise MatrixError(f"bad matrix axis name {k!r}", path=where, hint="use letters, digits, _ and -")
        vals = list(v) if isinstance(v, (list, tuple)) else [v]
        if not vals:
            raise MatrixError(f"matrix axis {k!r} has no values", path=f"{where}.{k}",
                              hint="give at least one value, or remove the axis")
        axes[k] = vals
    return axes


def _entries(matrix: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    v = matrix.get(key) or []
    if not isinstance(v, list) or not all(isinstance(e, Mapping) for e in v):
        raise MatrixError(f"matrix.{key} must be a list of mappings", path=f"{where}.{key}",
                          hint=f"e.g. {key}: [{{kernel: k61, image: base}}]")
    return [dict(e) for e in v]


def _combinations(matrix: Mapping[str, Any], where: str) -> tuple[list[str], list[dict[str, Any]]]:
    axes = _axes(matrix, where)
    names = list(axes)
    combos = ([dict(zip(names, vals, strict=True)) for vals in itertools.product(*axes.values())]
              if axes else [])
    for ex in _entries(matrix, "exclude", where):
        unknown = set(ex) - set(names)
        if unknown:
            raise MatrixError(f"matrix.exclude names axes that do not exist: {', '.join(sorted(unknown))}",
                              path=f"{where}.exclude", hint=f"axes: {', '.join(names) or 'none'}")
        combos = [c for c in combos if any(c.get(k) != v for k, v in ex.items())]
    orig = list(names)
    for inc in _entries(matrix, "include", where):
        matched = False
        for c in combos:
            shared = [k for k in inc if k in orig]
            if shared and all(c.get(k) == inc[k] for k in shared) and all(
                    k not in c or c[k] == inc[k] for k in inc if k not in orig):
                c.update(inc)
                matched = True
        if not matched:
            combos.append(dict(inc))
        for k in inc:
            if k not in names:
                names.append(k)
    if not combos:
        raise MatrixError("the matrix expands to no runs (everything excluded?)", path=where,
                          hint="check matrix.exclude")
    return names, combos


def _label(axis: str, value: Any, index: int) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text if _WORD.match(text) else f"{axis}{index}"


def _run_name(base: str, labels: list[str]) -> str:
    name = "-".join([base, *labels]) if labels else base
    if _NAME.match(name) or not labels:
        return name
    import hashlib

    digest = hashlib.sha256("\0".join(labels).encode()).hexdigest()[:10]
    return f"{base[:52]}-{digest}"


def _substitute(value: Any, combo: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            k = m.group(1)
            if k not in combo:
                raise MatrixError(f"${{{{ matrix.{k} }}}} names no axis of this run's matrix", path=where,
                                  hint=f"axes: {', '.join(combo) or 'none'}")
            return str(combo[k])

        whole = _REF.fullmatch(value.strip())
        if whole and whole.group(1) in combo:  # a whole-value reference keeps the value's type
            return copy.deepcopy(combo[whole.group(1)])
        return _REF.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, combo, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {k: _substitute(v, combo, f"{where}.{k}") for k, v in value.items()}
    return value


def _expand(runs: Sequence[Mapping[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(run, its matrix values) for every expanded run."""
    out: list[tuple[dict[str, Any], dict[str, Any], str]] = []
    for i, run in enumerate(runs):
        where = f"runs[{i}]"
        if not isinstance(run, Mapping):
            raise MatrixError("a run must be a mapping", path=where, hint="e.g. - {name: smoke, image: base}")
        if "matrix" not in run:
            out.append((copy.deepcopy(dict(run)), {}, where))
            continue
        base = {k: copy.deepcopy(v) for k, v in run.items() if k != "matrix"}
        names, combos = _combinations(run["matrix"], f"{where}.matrix")
        indexes: dict[str, list[Any]] = {}
        for c in combos:
            for k in names:
                if k in c and c[k] not in indexes.setdefault(k, []):
                    indexes[k].append(c[k])
        for c in combos:
            r = dict(base)
            for k, v in c.items():
                if k in RUN_KEYS:
                    r[k] = copy.deepcopy(v)
            r = _substitute(r, c, where)
            labels = [_label(k, c[k], indexes[k].index(c[k]) + 1) for k in names if k in c]
            r["name"] = _run_name(str(base.get("name", "run")), labels)
            out.append((r, dict(c), where))
    seen: dict[str, str] = {}
    for r, _, where in out:
        n = str(r.get("name", ""))
        if n and n in seen:
            raise MatrixError(f"two runs are named {n!r} ({seen[n]} and {where})", path=where,
                              hint="rename one; matrix runs are named <name>-<value>-<value>…")
        if n:
            seen[n] = where
    return [(r, v) for r, v, _ in out]


def expand_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Expand every run that has a ``matrix:`` into one run per combination (see the module doc);
    runs without one are returned as they are (copied). Raises :class:`MatrixError` (a
    ValueError with ``path`` like ``runs[i].matrix`` and a ``hint``) for a malformed matrix, an
    unknown ``${{ matrix.X }}``, or duplicate names."""
    return [r for r, _ in _expand(runs)]


def github_matrix(config: Any) -> dict[str, Any]:
    """The ``{"include": [...]}`` job matrix for GitHub Actions: one entry per (expanded) run, with
    ``run`` (its name), ``image``/``kernel`` when set, and its matrix values. ``config`` is the
    config mapping (or an object with ``runs``). Use it as
    ``strategy: {matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}}`` and run
    ``lvh pipeline run conf.yaml --run ${{ matrix.run }}`` in the job."""
    runs = config.get("runs") if isinstance(config, Mapping) else getattr(config, "runs", None)
    if isinstance(runs, Mapping):  # a loaded Config keeps its runs by name
        runs = list(runs.values())
    runs = [_as_dict(r) for r in (runs or [])]  # type: ignore[union-attr]
    include = []
    for run, values in _expand(runs):
        entry: dict[str, Any] = {"run": run.get("name")}
        for k in ("image", "kernel"):
            if isinstance(run.get(k), str):
                entry[k] = run[k]
        for k, v in values.items():
            entry.setdefault(k, v if isinstance(v, (str, int, float, bool)) or v is None else str(v))
        include.append(entry)
    return {"include": include}


def _as_dict(run: Any) -> dict[str, Any]:
    if isinstance(run, Mapping):
        return dict(run)
    d = {k: getattr(run, k) for k in ("name", "image", "kernel", "command") if hasattr(run, k)}
    for k in ("image", "kernel"):
        v = d.get(k)
        if v is not None and not isinstance(v, str):
            d[k] = getattr(v, "name", str(v))
    return d
