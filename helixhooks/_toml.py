"""A small TOML writer, for the files helixhooks writes itself (the test fixtures' manifests).

The standard library reads TOML but does not write it. This writes the plain data a manifest or
a config holds (tables, arrays, strings, booleans, integers, floats) so that ``tomllib`` reads
back exactly what was given; anything else is a TypeError naming the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
# What a basic string may not hold as itself: the quote, the backslash and control characters.
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


def dumps(document: Mapping[str, Any]) -> str:
    """``document`` as TOML text: its plain values first, then each table under its header."""
    lines: list[str] = []
    _table(document, (), lines)
    return "\n".join(lines) + "\n" if lines else ""


def _table(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    subtables = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            subtables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value, (*path, key))}")
    for key, value in subtables:
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_key(part) for part in (*path, key)) + "]")
        _table(value, (*path, key), lines)


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"TOML keys are strings, not {type(key).__name__} {key!r}")
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: object, path: tuple[str, ...]) -> str:
    # bool before int: True is an int too.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        items = (f"{_key(k)} = {_value(v, (*path, k))}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }" if value else "{}"
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return "[" + ", ".join(_value(item, path) for item in value) + "]"
    where = ".".join(path)
    raise TypeError(f"cannot write {type(value).__name__} {value!r:.40} as TOML (key {where!r})")


def _string(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"
