"""Discovery of N manifest plugins, every cache cold, beside the least a host could do by hand.

DESIGN target: <= 1.3x the anchor at 1,000 plugins, growing linearly. Run from the repo root:

    .venv/bin/python bench/discovery.py

Ours: the user's path with the default config, entry points on: a fresh
``Discovery(Config(plugin_dirs=[root])).scan()`` (``entry_point_group="helixhooks.plugins"``).
Anchor: ``os.scandir`` of the same directory, ``tomllib.load`` of every ``plugin.toml``, and
``importlib.metadata.entry_points(group="helixhooks.plugins")``.

Cold, on both sides alike, before every timed run: ``importlib.invalidate_caches()`` (which drops
importlib.metadata's path cache and the import system's directory caches), ``cache_clear()`` of
every ``functools.lru_cache`` in the helixhooks modules (version, constraint and dependency
parses) and a ``gc.collect()``. The OS page cache is warm for both: the files are read once
before timing. Runs are interleaved (anchor, ours, anchor, ours, ...) and the median of each side
is reported.
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _caches import helixhooks_lru_caches
from _report import print_results, result

from helixhooks.config import Config
from helixhooks.discovery import Discovery

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SIZES = (100, 1_000, 5_000)
TARGET_SIZE = 1_000
TARGET_RATIO = 1.3
GROUP = Config().entry_point_group  # the default: what a host gets without configuring it

MANIFEST = """\
[plugin]
name = "plugin_{index:05d}"
version = "1.{minor}.{index}"
description = "Benchmark plugin number {index}"
author = "Bench"
dependencies = ["base ^1.{minor}", "cache >=2,<3"]
capabilities = ["analyze", "report"]
permissions = ["net=api.example.com:443", "read=./data"]
requires = ">=0.1"

[config]
threshold = 0.5
labels = ["a", "b"]
"""


def generate(root: Path, count: int) -> None:
    for index in range(count):
        directory = root / f"plugin_{index:05d}"
        directory.mkdir()
        (directory / "plugin.toml").write_text(MANIFEST.format(index=index, minor=index % 50))
        (directory / "plugin.py").write_text("class Plugin:\n    pass\n")


def anchor(root: Path) -> tuple[list[dict[str, Any]], list[Any]]:
    documents = []
    with os.scandir(root) as listing:
        for entry in listing:
            if entry.is_dir():
                with open(os.path.join(entry.path, "plugin.toml"), "rb") as handle:
                    documents.append(tomllib.load(handle))
    return documents, list(importlib.metadata.entry_points(group=GROUP))


def ours(root: Path) -> list[Any]:
    return Discovery(Config(plugin_dirs=[root])).scan()


def make_cold() -> None:
    importlib.invalidate_caches()
    for cache in helixhooks_lru_caches():
        cache.cache_clear()
    gc.collect()  # both sides start with the collector's counts at zero


def timed_cold(run: Callable[[], object]) -> float:
    make_cold()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(count: int) -> tuple[float, float]:
    """Median anchor and ours seconds, interleaved so the machine's load hits both alike."""
    with tempfile.TemporaryDirectory(prefix="helix-bench-") as tmp:
        root = Path(tmp)
        generate(root, count)
        discovery = Discovery(Config(plugin_dirs=[root]))
        found = discovery.scan()  # checks the setup, and warms the OS page cache
        assert not discovery.problems, discovery.problems[:3]
        assert sum(candidate.kind == "directory" for candidate in found) == count
        assert len(anchor(root)[0]) == count
        base, mine = [], []
        for _ in range(max(7, min(31, 10_000 // count))):
            base.append(timed_cold(lambda: anchor(root)))
            mine.append(timed_cold(lambda: ours(root)))
        return statistics.median(base), statistics.median(mine)


def main() -> None:
    distributions = len(list(importlib.metadata.distributions()))
    entry_points = len(importlib.metadata.entry_points(group=GROUP))
    print(
        f"discovery, caches cold, entry points on (group {GROUP!r}: {entry_points} entry points "
        f"among {distributions} distributions); median of interleaved runs"
    )
    header = ("plugins", "anchor ms", "ours ms", "ratio", "anchor us/pl", "ours us/pl")
    print("".join(f"{title:>13}" for title in header))
    results = {}
    for count in SIZES:
        base, mine = results[count] = measure(count)
        print(
            f"{count:>13}{base * 1e3:>13.1f}{mine * 1e3:>13.1f}{mine / base:>12.2f}x"
            f"{base / count * 1e6:>13.1f}{mine / count * 1e6:>13.1f}"
        )
    first = SIZES[0]
    growth = ", ".join(
        f"{count // first}x plugins: ours x{results[count][1] / results[first][1]:.1f}, "
        f"anchor x{results[count][0] / results[first][0]:.1f}"
        for count in SIZES[1:]
    )
    print(f"growth from {first}: {growth}")
    base, mine = results[TARGET_SIZE]
    verdict = "met" if mine / base <= TARGET_RATIO else "MISSED"
    print(f"target <= {TARGET_RATIO}x at {TARGET_SIZE:,} plugins: {mine / base:.2f}x {verdict}")
    result(
        f"discovery of {TARGET_SIZE:,} manifest plugins, caches cold",
        anchor=f"scandir + tomllib + entry points {base * 1e3:.1f} ms",
        ours=f"{mine * 1e3:.1f} ms",
        ratio=mine / base,
        target=f"<= {TARGET_RATIO}x",
        met=mine / base <= TARGET_RATIO,
    )
    print_results()


if __name__ == "__main__":
    main()
