"""Resolve 1k and 10k plugins with ~3 constrained dependencies each, against graphlib.

Ours cold: ``DependencyResolver(infos).resolve_order()`` with a fresh resolver each run, so
every dependency entry is split and every edge's constraint checked again (versioning's own
module-level parse caches stay warm, as they would in a running host). Ours warm: the same
resolver asked again, its per-resolver caches full. PluginInfos are built beforehand: that is
the manifest's cost, not the resolver's. Anchor: graphlib's ``TopologicalSorter(graph)
.static_order()`` on the same graph with no versions at all.
DESIGN target: ours <= 3x the anchor, and both growing about linearly (10k/1k ~ 10x).

Run from the repo root: .venv/bin/python bench/resolve.py
"""

from __future__ import annotations

import graphlib
import random
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helixhooks.dependencies import DependencyResolver
from helixhooks.plugin import PluginInfo

SIZES = (1_000, 10_000)
DEPENDENCIES = 3
RUNS = 9
# No digits and no "x": Dependency.parse would read them as the start of a constraint
# ("plugin-b1" as "plugin-b" "1").
_LETTERS = string.ascii_lowercase.replace("x", "")


def _name(index: int) -> str:
    code = ""
    while True:
        index, digit = divmod(index, len(_LETTERS))
        code = _LETTERS[digit] + code
        if not index:
            return f"plugin-{code}"


def _constraint(rng: random.Random, version: str) -> str:
    """A constraint the version satisfies, in either dialect."""
    major, minor, _ = (int(part) for part in version.split("."))
    return rng.choice(
        [
            f"^{major}.{minor}",
            f"~{major}.{minor}.0",
            f">={major}.0.0 <{major + 1}.0.0",
            f"{major}.x",
            f">={major}.{minor},<{major + 1}",
            f"~={major}.{minor}",
            f"=={major}.*",
        ]
    )


def make_plugins(size: int, seed: int = 2024) -> tuple[list[PluginInfo], dict[str, list[str]]]:
    """A random DAG: each plugin depends on up to DEPENDENCIES earlier ones, constrained."""
    rng = random.Random(seed)
    names = [_name(index) for index in range(size)]
    versions = [f"{rng.randint(1, 4)}.{rng.randint(0, 9)}.{rng.randint(0, 3)}" for _ in names]
    infos: list[PluginInfo] = []
    graph: dict[str, list[str]] = {}
    for index, name in enumerate(names):
        targets = rng.sample(range(index), min(index, DEPENDENCIES))
        entries = [f"{names[t]} {_constraint(rng, versions[t])}" for t in targets]
        infos.append(PluginInfo(name, versions[index], dependencies=entries))
        graph[name] = [names[t] for t in targets]
    rng.shuffle(infos)
    return infos, graph


def measure(size: int) -> tuple[float, float, float]:
    """Best seconds of RUNS for (ours cold, ours warm, graphlib) on ``size`` plugins.

    The three are interleaved in every round so a change in the machine's load hits all alike.
    """
    infos, graph = make_plugins(size)
    expected = DependencyResolver(infos).resolve_order()
    assert len(expected) == size
    warm = DependencyResolver(infos)
    warm.resolve_order()
    runs: list[Callable[[], object]] = [
        lambda: DependencyResolver(infos).resolve_order(),
        warm.resolve_order,
        lambda: list(graphlib.TopologicalSorter(graph).static_order()),
    ]
    best = [float("inf")] * len(runs)
    for _ in range(RUNS):
        for at, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[at] = min(best[at], time.perf_counter() - start)
    cold, warm_time, anchor = best
    return cold, warm_time, anchor


def main() -> None:
    print(f"resolve_order, ~{DEPENDENCIES} constrained dependencies per plugin, best of {RUNS}")
    header = f"{'plugins':>8} {'edges':>7} {'ours cold':>10} {'ours warm':>10}"
    print(header + f" {'graphlib':>9} {'cold/anchor':>12} {'warm/anchor':>12}")
    results = {}
    for size in SIZES:
        cold, warm, anchor = results[size] = measure(size)
        edges = sum(min(index, DEPENDENCIES) for index in range(size))
        print(
            f"{size:>8} {edges:>7} {cold * 1e3:>8.1f}ms {warm * 1e3:>8.1f}ms {anchor * 1e3:>7.1f}ms"
            f" {cold / anchor:>11.2f}x {warm / anchor:>11.2f}x"
        )
    small, large = SIZES
    growth = [results[large][i] / results[small][i] for i in range(3)]
    print(
        f"growth {large // 1000}k/{small // 1000}k: ours cold {growth[0]:.1f}x, "
        f"ours warm {growth[1]:.1f}x, graphlib {growth[2]:.1f}x (linear: {large / small:.0f}x)"
    )
    print("target: cold/anchor <= 3x at 10k, growth about linear")


if __name__ == "__main__":
    main()
