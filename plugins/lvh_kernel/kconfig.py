"""Kernel ``.config`` handling: requested options, applying them, and explaining the ones that
did not take.

Options come in the forms upstream and users write them:

- ``["--enable", "CONFIG_X"]`` / ``["--disable", X]`` / ``["--module", X]`` (also ``-e/-d/-m``),
  ``["--set-str", X, "v"]``, ``["--set-val", X, "3"]`` — ``scripts/config``'s switches;
- ``"CONFIG_X=y"``, ``"CONFIG_X=\\"text\\""``, ``"# CONFIG_X is not set"`` — ``.config`` lines
  (fragment files hold these).

After ``make olddefconfig`` some requests may not have taken (unmet dependencies, a select
forcing a symbol on, a symbol that does not exist in this kernel). :class:`KconfigIndex` scans
the source's Kconfig files (a plain text scan, no Kconfig library) to say why.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_SWITCHES = {
    "--enable": "y", "-e": "y",
    "--disable": "n", "-d": "n",
    "--module": "m", "-m": "m",
}
_LINE_SET = re.compile(r"^(?:CONFIG_)?([A-Za-z0-9_]+)=(.*)$")
_LINE_UNSET = re.compile(r"^#\s*(?:CONFIG_)?([A-Za-z0-9_]+) is not set\s*$")


@dataclass(frozen=True)
class Request:
    """One requested assignment: ``symbol`` (without ``CONFIG_``) = ``value`` (``y``/``m``/``n``,
    a quoted string or a number). ``origin`` says where it came from (``group bpf``, a file…)."""

    symbol: str
    value: str
    origin: str = "options"

    def line(self) -> str:
        """The ``.config`` line for this request."""
        if self.value == "n":
            return f"# CONFIG_{self.symbol} is not set"
        return f"CONFIG_{self.symbol}={self.value}"


class OptionError(ValueError):
    """An option that cannot be parsed (the message says which and how it should look)."""


def _strip(sym: str) -> str:
    sym = sym.strip()
    return sym[len("CONFIG_"):] if sym.startswith("CONFIG_") else sym


def parse_option(opt: str | list[str] | tuple[str, ...], origin: str = "options") -> Request | None:
    """Parse one option in any accepted form; None for a blank or comment line."""
    if isinstance(opt, str):
        text = opt.strip()
        if not text:
            return None
        m = _LINE_UNSET.match(text)
        if m:
            return Request(_strip(m.group(1)), "n", origin)
        if text.startswith("#"):
            return None
        m = _LINE_SET.match(text)
        if m:
            return Request(_strip(m.group(1)), m.group(2).strip(), origin)
        raise OptionError(f"not a config option: {opt!r} (use CONFIG_X=y, '# CONFIG_X is not set' "
                          "or [--enable, CONFIG_X])")
    parts = [str(p) for p in opt]
    if len(parts) == 2 and parts[0] in _SWITCHES:
        return Request(_strip(parts[1]), _SWITCHES[parts[0]], origin)
    if len(parts) == 3 and parts[0] == "--set-str":
        return Request(_strip(parts[1]), '"' + parts[2].replace('"', '\\"') + '"', origin)
    if len(parts) == 3 and parts[0] == "--set-val":
        return Request(_strip(parts[1]), parts[2], origin)
    raise OptionError(f"not a config option: {parts!r} (use [--enable|--disable|--module, CONFIG_X] "
                      "or [--set-str|--set-val, CONFIG_X, value])")


def parse_fragment(text: str, origin: str) -> list[Request]:
    """The requests of a config fragment (``.config`` lines)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            r = parse_option(line, f"{origin}:{n}")
        except OptionError as e:
            raise OptionError(f"{origin}:{n}: {e}") from None
        if r:
            out.append(r)
    return out


def read_config(path: Path) -> dict[str, str]:
    """A ``.config`` as ``{SYMBOL: value}``; ``n`` for ``# CONFIG_X is not set``."""
    values: dict[str, str] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        m = _LINE_UNSET.match(line)
        if m:
            values[_strip(m.group(1))] = "n"
            continue
        if line.startswith("CONFIG_"):
            m = _LINE_SET.match(line)
            if m:
                values[_strip(m.group(1))] = m.group(2)
    return values


def apply_requests(path: Path, requests: Iterable[Request]) -> None:
    """Write ``requests`` into the ``.config`` at ``path`` (later requests win), like
    ``scripts/config``: existing lines for those symbols are replaced."""
    final: dict[str, Request] = {}
    for r in requests:
        final.pop(r.symbol, None)
        final[r.symbol] = r
    keep = []
    for line in Path(path).read_text().splitlines():
        m = _LINE_UNSET.match(line) or (_LINE_SET.match(line) if line.startswith("CONFIG_") else None)
        if m and _strip(m.group(1)) in final:
            continue
        keep.append(line)
    keep.extend(r.line() for r in final.values())
    Path(path).write_text("\n".join(keep) + "\n")


# ------------------------------------------------------------------------------------------
# Why an option did not take
# ------------------------------------------------------------------------------------------


@dataclass
class Symbol:
    name: str
    files: list[str] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)
    has_prompt: bool = False
    selected_by: list[tuple[str, str]] = field(default_factory=list)  # (selector, condition)


_ENTRY = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$")
_TYPE_PROMPT = re.compile(r'^\s*(bool|tristate|string|int|hex)\s+["\']')
_PROMPT = re.compile(r'^\s*prompt\s+["\']')
_DEPENDS = re.compile(r"^\s*depends\s+on\s+(.+)$")
_SELECT = re.compile(r"^\s*(?:select|imply)\s+([A-Za-z0-9_]+)(?:\s+if\s+(.+))?\s*$")
_IF = re.compile(r"^\s*if\s+(.+)$")
_BLOCK_START = re.compile(r"^\s*(menu|choice)\b")
_BLOCK_END = re.compile(r"^\s*(endmenu|endchoice|endif)\b")
_OTHER_ENTRY = re.compile(r"^\s*(comment|source|rsource|osource|orsource|mainmenu)\b")


class KconfigIndex:
    """A text scan of every ``Kconfig*`` file of a kernel source tree: which symbols exist, in
    which files, their dependencies (own ``depends on`` plus enclosing ``if``/``menu``), whether
    they have a prompt, and who selects them. Good enough to explain, not to evaluate Kconfig."""

    def __init__(self, srctree: Path, srcarch: str) -> None:
        self.srctree = Path(srctree)
        self.srcarch = srcarch
        self.symbols: dict[str, Symbol] = {}
        self._scan()

    def _files(self) -> Iterable[Path]:
        skip = {"Documentation", "tools", ".git", "samples"}
        for dirpath, dirnames, filenames in os.walk(self.srctree):
            rel = os.path.relpath(dirpath, self.srctree)
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d not in skip]
            if rel.startswith("scripts/kconfig"):
                dirnames[:] = []
                continue
            for f in filenames:
                if f.startswith("Kconfig"):
                    yield Path(dirpath, f)

    def _scan(self) -> None:
        for path in self._files():
            rel = str(path.relative_to(self.srctree))
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            # block stack: ("if", expr) / ("menu", [deps]) / ("choice", [deps])
            stack: list[tuple[str, list[str]]] = []
            cur: Symbol | None = None
            cur_block: list[str] | None = None  # deps list of a just-opened menu/choice
            in_help = False
            help_indent = 0
            for raw in text.replace("\\\n", " ").splitlines():
                line = raw.split("#", 1)[0] if "#" in raw and '"' not in raw else raw
                if in_help:
                    if not raw.strip():
                        continue
                    indent = len(raw) - len(raw.lstrip())
                    if indent > help_indent or (indent == help_indent and raw.startswith("\t\t")):
                        continue
                    in_help = False
                stripped = line.strip()
                if not stripped:
                    continue
                if stripped in ("help", "---help---"):
                    in_help = True
                    help_indent = len(raw) - len(raw.lstrip())
                    continue
                m = _ENTRY.match(line)
                if m:
                    name = m.group(1)
                    cur = self.symbols.setdefault(name, Symbol(name))
                    cur.files.append(rel)
                    for _kind, deps in stack:
                        cur.deps.extend(deps)
                    cur_block = None
                    continue
                m = _BLOCK_START.match(line)
                if m:
                    cur = None
                    cur_block = []
                    stack.append((m.group(1), cur_block))
                    continue
                m = _IF.match(line)
                if m:
                    cur = None
                    cur_block = None
                    stack.append(("if", [m.group(1).strip()]))
                    continue
                if _BLOCK_END.match(line):
                    cur = None
                    cur_block = None
                    if stack:
                        stack.pop()
                    continue
                if _OTHER_ENTRY.match(line):
                    cur = None
                    cur_block = None
                    continue
                m = _DEPENDS.match(line)
                if m:
                    if cur is not None:
                        cur.deps.append(m.group(1).strip())
                    elif cur_block is not None:
                        cur_block.append(m.group(1).strip())
                    continue
                if cur is None:
                    continue
                if _TYPE_PROMPT.match(line) or _PROMPT.match(line):
                    cur.has_prompt = True
                    continue
                m = _SELECT.match(line)
                if m:
                    target = self.symbols.setdefault(m.group(1), Symbol(m.group(1)))
                    target.selected_by.append((cur.name, (m.group(2) or "").strip()))

    def exists(self, name: str) -> bool:
        s = self.symbols.get(name)
        return bool(s and s.files)

    def for_this_arch(self, name: str) -> bool:
        s = self.symbols.get(name)
        if not s or not s.files:
            return False
        return any(not f.startswith("arch/") or f.startswith(f"arch/{self.srcarch}/") for f in s.files)

    def explain(self, req: Request, got: str | None, values: dict[str, str]) -> str:
        """Why ``req`` did not take, given the final config ``values``."""
        s = self.symbols.get(req.symbol)
        if not s or not s.files:
            return "no such option in this kernel"
        if not self.for_this_arch(req.symbol):
            arches = sorted({f.split("/")[1] for f in s.files if f.startswith("arch/")})
            return f"only defined for arch {', '.join(arches)}, not {self.srcarch}"
        if req.value == "n":
            on = [sel for sel, _cond in s.selected_by if values.get(sel, "n") in ("y", "m")]
            if on:
                return "selected by " + ", ".join(f"{x}={values[x]}" for x in on)
            return f"forced to {got} (a default or select)"
        unmet = []
        for dep in s.deps:
            val = evaluate(dep, values)
            if val == "n" or (req.value == "y" and val == "m"):
                bad = [f"{x}={values.get(x, 'n')}" for x in _idents(dep) if values.get(x, "n") != "y"]
                unmet.append(f"{dep}" + (f" ({', '.join(bad)})" if bad else ""))
        if unmet:
            return "unmet dependencies: " + "; ".join(unmet)
        if not s.has_prompt:
            sels = [sel for sel, _c in s.selected_by]
            via = f" (selected by {', '.join(sels[:5])}{'…' if len(sels) > 5 else ''})" if sels else ""
            return "has no prompt: only a select or default sets it" + via
        if req.value == "m" and got == "y":
            return "forced built-in (selected by a built-in option, or a bool)"
        if req.value == "m" and values.get("MODULES") != "y":
            return "modules are disabled (CONFIG_MODULES)"
        return f"olddefconfig set it to {got or 'n'}"


_TOKEN = re.compile(r'\s*(\|\||&&|!=|<=|>=|=|<|>|!|\(|\)|"[^"]*"|[A-Za-z0-9_$.-]+)')


def _idents(expr: str) -> list[str]:
    out = []
    for tok in _TOKEN.findall(expr):
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", tok) and tok not in out:
            out.append(tok)
    return out


_ORDER = {"n": 0, "m": 1, "y": 2}


def evaluate(expr: str, values: dict[str, str]) -> str:
    """Evaluate a Kconfig dependency expression to ``y``/``m``/``n`` (tristate logic); ``y`` for
    anything it cannot parse (so it never invents a reason)."""
    toks = _TOKEN.findall(expr)
    pos = 0

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def value(tok: str) -> str:
        if tok in ("y", "m", "n"):
            return tok
        if tok.startswith('"'):
            return tok.strip('"')
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", tok):
            return tok
        v = values.get(tok, "n")
        return v[1:-1] if len(v) >= 2 and v.startswith('"') and v.endswith('"') else v

    def primary() -> str:
        t = take()
        if t == "!":
            v = primary()
            return {"y": "n", "m": "m", "n": "y"}[v]
        if t == "(":
            v = or_expr()
            if peek() == ")":
                take()
            return v
        if peek() in ("=", "!=", "<", ">", "<=", ">="):
            op = take()
            a, b = value(t), value(take())
            try:
                ia, ib = int(a, 0), int(b, 0)
                res = {"=": ia == ib, "!=": ia != ib, "<": ia < ib, ">": ia > ib,
                       "<=": ia <= ib, ">=": ia >= ib}[op]
            except ValueError:
                res = {"=": a == b, "!=": a != b}.get(op, True)
            return "y" if res else "n"
        v = value(t)
        return v if v in _ORDER else ("y" if v else "n")

    def and_expr() -> str:
        v = primary()
        while peek() == "&&":
            take()
            w = primary()
            v = v if _ORDER[v] <= _ORDER[w] else w
        return v

    def or_expr() -> str:
        v = and_expr()
        while peek() == "||":
            take()
            w = and_expr()
            v = v if _ORDER[v] >= _ORDER[w] else w
        return v

    try:
        return or_expr()
    except (IndexError, KeyError):
        return "y"


@dataclass
class NotTaken:
    """A requested option whose final value differs from the request."""

    request: Request
    got: str | None
    reason: str
    exists: bool = True

    def __str__(self) -> str:
        got = "not set" if self.got in (None, "n") else f"={self.got}"
        return (f"CONFIG_{self.request.symbol}={self.request.value} ({self.request.origin}) "
                f"did not take (final: {got}): {self.reason}")


def check_requests(requests: Iterable[Request], values: dict[str, str],
                   index: KconfigIndex | None) -> list[NotTaken]:
    """The requests whose final value (in ``values``) differs. The last request of a symbol wins."""
    final: dict[str, Request] = {}
    for r in requests:
        final.pop(r.symbol, None)
        final[r.symbol] = r
    out = []
    for r in final.values():
        got = values.get(r.symbol)
        want = r.value
        if want == "n":
            ok = got in (None, "n")
        else:
            ok = got == want
        if ok:
            continue
        if index is None:
            out.append(NotTaken(r, got, "see the Kconfig dependencies"))
        else:
            out.append(NotTaken(r, got, index.explain(r, got, values), index.exists(r.symbol)))
    return out
