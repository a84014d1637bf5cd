"""Map config paths (``peers[1].spiffe_id``) back to line numbers in the TOML text.

``tomllib`` reports positions only for syntax errors, so for semantic errors we re-scan the
text: table headers (``[a.b]``, ``[[peers]]``) and ``key = value`` lines.  This is a best-effort
index for error messages -- keys inside multi-line inline tables or arrays fall back to their
nearest enclosing path -- and never affects what the config *means*.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def _split_dotted(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def line_index(text: str) -> dict[str, int]:
    """Return ``{path: first line}`` for every table and key the scan recognises."""
    index: dict[str, int] = {}
    counts: dict[str, int] = {}
    current = ""
    depth = 0  # bracket depth of multi-line values; keys inside are not top-level keys
    for lineno, line in enumerate(text.splitlines(), start=1):
        if depth == 0:
            header = _HEADER.match(line)
            if header:
                parts = _split_dotted(header.group(2))
                base = _join(_resolve(parts[:-1], counts))
                name = _join_key(base, parts[-1])
                if header.group(1) == "[[":
                    n = counts.get(name, -1) + 1
                    counts[name] = n
                    current = f"{name}[{n}]"
                else:
                    current = name
                index.setdefault(current, lineno)
                continue
            key = _KEY.match(line)
            if key:
                path = current
                for part in _split_dotted(key.group(1)):
                    path = _join_key(path, part)
                index.setdefault(path, lineno)
        depth += _depth_change(line)
        depth = max(depth, 0)
    return index


def _resolve(parts: list[str], counts: dict[str, int]) -> list[str]:
    """Turn ``['peers', 'tls']`` into ``['peers[2]', 'tls']`` using array-of-table counters."""
    out: list[str] = []
    for part in parts:
        name = _join_key(_join(out), part)
        out = [f"{name}[{counts[name]}]"] if name in counts else [name]
    return out


def _join(parts: list[str]) -> str:
    return parts[0] if parts else ""


def _join_key(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


def _depth_change(line: str) -> int:
    in_str: str | None = None
    delta = 0
    for ch in line:
        if in_str:
            if ch == in_str:
                in_str = None
            continue
        if ch in "\"'":
            in_str = ch
        elif ch == "#":
            break
        elif ch in "[{":
            delta += 1
        elif ch in "]}":
            delta -= 1
    return delta


def find_line(index: dict[str, int], path: str) -> int | None:
    """The line of ``path`` or of its nearest ancestor that the index knows."""
    while path:
        if path in index:
            return index[path]
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            break
        path = path[:cut]
    return index.get(path)
