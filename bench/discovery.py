"""Discovery of N manifest plugins against the anchor: os.scandir + tomllib.load of the same files.

Target (DESIGN.md): <= 1.5x the anchor at 1,000 plugins. Run from the repo root:

    .venv/bin/python bench/discovery.py

"cold" clears the version/constraint parse caches before each run, as on a host's first scan;
"warm" keeps them, as on a rescan. Each figure is the best of several interleaved runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helixhooks import versioning
from helixhooks.config import Config
from helixhooks.discovery import Discovery

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SIZES = (100, 1_000, 5_000)
TARGET_SIZE = 1_000
TARGET_RATIO = 1.5

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


def anchor(root: Path) -> None:
    for entry in os.scandir(root):
        if entry.is_dir():
            with open(os.path.join(entry.path, "plugin.toml"), "rb") as handle:
                tomllib.load(handle)


def clear_parse_caches() -> None:
    versioning._parse_version_cached.cache_clear()
    versioning._parse_constraint_cached.cache_clear()


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(count: int) -> tuple[float, float, float]:
    """Best anchor, cold and warm times; interleaved so that load from other processes on the
    machine hits all three alike."""
    with tempfile.TemporaryDirectory(prefix="helix-bench-") as tmp:
        root = Path(tmp)
        generate(root, count)
        discovery = Discovery(Config(plugin_dirs=[root], entry_point_group=None))
        found = discovery.scan()  # also warms the OS file cache
        assert not discovery.problems, discovery.problems[:3]
        assert len(found) == count
        anchor(root)
        base, cold, warm = [], [], []
        for _ in range(max(5, min(21, 20_000 // count))):
            base.append(timed(lambda: anchor(root)))
            clear_parse_caches()
            cold.append(timed(discovery.scan))
            warm.append(timed(discovery.scan))
        return min(base), min(cold), min(warm)


def main() -> None:
    header = ("plugins", "anchor ms", "cold ms", "warm ms", "cold x", "warm x")
    print("".join(f"{title:>10}" for title in header))
    results = {}
    for count in SIZES:
        base, cold, warm = measure(count)
        results[count] = (base, cold, warm)
        print(
            f"{count:>10}{base * 1e3:>10.1f}{cold * 1e3:>10.1f}{warm * 1e3:>10.1f}"
            f"{cold / base:>10.2f}{warm / base:>10.2f}"
        )
    print("growth: time per plugin (cold discovery / anchor), and relative to the smallest size")
    first_base, first_cold, _ = (t / SIZES[0] for t in results[SIZES[0]])
    for count in SIZES:
        base, cold, _ = (t / count for t in results[count])
        print(
            f"{count:>10}: {cold * 1e6:6.1f} us / {base * 1e6:6.1f} us"
            f"   x{cold / first_cold:.2f} / x{base / first_base:.2f}"
        )
    base, cold, _ = results[TARGET_SIZE]
    verdict = "met" if cold / base <= TARGET_RATIO else "MISSED"
    print(f"target <= {TARGET_RATIO}x at {TARGET_SIZE:,} (cold): {cold / base:.2f}x {verdict}")


if __name__ == "__main__":
    main()
