"""What each benchmark checks, as machine-readable lines for bench/run_all.py.

A benchmark records one result per target it checks while it prints its own report, then
``print_results()`` ends its output with one line per result::

    RESULT {"what": ..., "anchor": ..., "ours": ..., "ratio": ..., "target": ..., "met": ...}

``anchor`` and ``ours`` are figures as shown (with their unit), ``ratio`` is ours / anchor or
None where the target is not a ratio, ``target`` says what is required (None for a figure shown
for information only) and ``met`` whether it was (None when there is no target).
"""

from __future__ import annotations

import json

PREFIX = "RESULT "

_results: list[dict[str, object]] = []


def result(
    what: str,
    *,
    anchor: str,
    ours: str,
    ratio: float | None,
    target: str | None,
    met: bool | None,
) -> None:
    """Record one result, for print_results() to print at the end."""
    _results.append(
        {"what": what, "anchor": anchor, "ours": ours, "ratio": ratio, "target": target, "met": met}
    )


def print_results() -> None:
    """The recorded results, one ``RESULT`` line each, after the benchmark's own report."""
    for entry in _results:
        print(PREFIX + json.dumps(entry), flush=True)
    _results.clear()
