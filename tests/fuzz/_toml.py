"""TOML text for the fuzzers: a small writer, and values of every type TOML has, odd ones included.

Python's tomllib reads TOML but cannot write it, and the fuzzers need documents that are valid
TOML with any values in them, so that the code under test, not the TOML parser, meets them.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class Huge:
    """Stands for 2**20000 in a document, written in hex: TOML (like Python) reads a hex integer
    without int()'s digit limit (4,300 decimal digits), so the code under test gets an int it
    cannot even repr. Not the int itself: Hypothesis could not print an example holding it.
    """

    TEXT = hex(2**20000)

    def __repr__(self) -> str:
        return "HUGE"


HUGE = Huge()


def string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else string(name)


def value(item: Any) -> str:
    """One value, inline: tables as inline tables."""
    if isinstance(item, Huge):
        return Huge.TEXT
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if math.isnan(item):
            return "nan"
        return ("inf" if item > 0 else "-inf") if math.isinf(item) else repr(item)
    if isinstance(item, str):
        return string(item)
    if isinstance(item, (datetime.datetime, datetime.date, datetime.time)):
        return item.isoformat()
    if isinstance(item, list):
        return "[" + ", ".join(value(element) for element in item) + "]"
    if isinstance(item, Mapping):
        return "{" + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items()) + "}"
    raise TypeError(f"no TOML for {item!r:.40}")


def document(tables: Mapping[str, Any]) -> str:
    """Top-level keys first, then each table's ``[header]`` with its keys (inline below that)."""
    lines = [f"{key(k)} = {value(v)}" for k, v in tables.items() if not isinstance(v, Mapping)]
    for name, table in tables.items():
        if isinstance(table, Mapping):
            lines.append(f"[{key(name)}]")
            lines += [f"{key(k)} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.just(HUGE),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["", " ", "1.0.0", "^1", "./x", "net", "..", "\x00", "\u202e"]),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)),
    st.dates(),
    st.times(),
)
# Any TOML value: scalars, arrays and inline tables, a few levels deep.
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def nested(depth: int) -> str:
    """An array nested ``depth`` levels deep: past tomllib's recursion at a few hundred."""
    return "[" * depth + "]" * depth
