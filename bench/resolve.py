"""Resolve N plugins with ~3 constrained dependencies each, parse caches cold, beside graphlib.

DESIGN target: ours <= 3x the anchor at 10,000 plugins / 30,000 edges, and linear growth.
Run from the repo root: ``.venv/bin/python bench/resolve.py``

Ours: ``DependencyResolver(infos).resolve_order()``, a fresh resolver every run, and before every
run ``cache_clear()`` of every ``functools.lru_cache`` in helixhooks (version, constraint and
dependency parses) and a ``gc.collect()`` (on the anchor's side too), so that every version and
constraint is parsed again and every edge's constraint checked again. The PluginInfos are built
beforehand: reading manifests is discovery's cost, not the resolver's. Versions are varied
(distinct ones about a third of the plugins at every size) so that cold parsing is real work, as it
is for a host whose plugins have their own versions.
Anchor: ``graphlib.TopologicalSorter(graph).static_order()`` on the same graph given as a plain
dict of names, with no versions at all.
Runs are interleaved (anchor, ours, anchor, ours, ...); each side's median is reported.
"""

from __future__ import annotations

import gc
import graphlib
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _caches import helixhooks_lru_caches
from _report import print_results, result

from helixhooks.dependencies import DependencyResolver
from helixhooks.plugin import PluginInfo

SIZES = (1_000, 5_000, 10_000, 20_000)
TARGET_SIZE = 10_000
TARGET_RATIO = 3.0
DEPENDENCIES = 3
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
    # Distinct versions grow with the graph (about a third of the plugins have a version no other
    # has), so that every size does the same parsing work per plugin.
    patches = max(1, size // 200)
    versions = [
        f"{rng.randint(1, 4)}.{rng.randint(0, 19)}.{rng.randint(0, patches)}" for _ in names
    ]
    infos: list[PluginInfo] = []
    graph: dict[str, list[str]] = {}
    for index, name in enumerate(names):
        targets = rng.sample(range(index), min(index, DEPENDENCIES))
        entries = [f"{names[t]} {_constraint(rng, versions[t])}" for t in targets]
        infos.append(PluginInfo(name, versions[index], dependencies=entries))
        graph[name] = [names[t] for t in targets]
    rng.shuffle(infos)
    return infos, graph


def clear_parse_caches() -> None:
    for cache in helixhooks_lru_caches():
        cache.cache_clear()


def _timed(run: Callable[[], object]) -> float:
    clear_parse_caches()
    gc.collect()  # both sides start with the collector's counts at zero
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(size: int) -> tuple[float, float, int]:
    """Median seconds of (anchor, ours) on ``size`` plugins, and the number of edges."""
    infos, graph = make_plugins(size)
    order = DependencyResolver(infos).resolve_order()
    assert len(order) == size
    position = {name: at for at, name in enumerate(order)}
    assert all(position[dep] < position[name] for name, deps in graph.items() for dep in deps)
    rounds = max(7, min(25, 100_000 // size))
    anchor, ours = [], []
    for _ in range(rounds):
        anchor.append(_timed(lambda: list(graphlib.TopologicalSorter(graph).static_order())))
        ours.append(_timed(lambda: DependencyResolver(infos).resolve_order()))
    edges = sum(len(deps) for deps in graph.values())
    return statistics.median(anchor), statistics.median(ours), edges


def main() -> None:
    print(f"resolve_order, ~{DEPENDENCIES} constrained dependencies per plugin, parse caches cold;")
    print("median of interleaved runs")
    print(
        f"{'plugins':>8}{'edges':>8}{'graphlib':>11}{'ours':>11}{'ratio':>8}"
        f"{'graphlib/node':>15}{'ours/node':>11}"
    )
    results = {}
    for size in SIZES:
        anchor, ours, edges = results[size] = measure(size)
        print(
            f"{size:>8}{edges:>8}{anchor * 1e3:>9.1f}ms{ours * 1e3:>9.1f}ms{ours / anchor:>7.2f}x"
            f"{anchor / size * 1e6:>13.2f}us{ours / size * 1e6:>9.2f}us"
        )
    first = SIZES[0]
    growth = ", ".join(
        f"{size // first}x plugins: ours x{results[size][1] / results[first][1]:.1f}, "
        f"graphlib x{results[size][0] / results[first][0]:.1f}"
        for size in SIZES[1:]
    )
    print(f"growth from {first:,}: {growth}")
    anchor, ours, _ = results[TARGET_SIZE]
    verdict = "met" if ours / anchor <= TARGET_RATIO else "MISSED"
    per_node = [results[size][1] / size for size in SIZES]
    linear = "met" if max(per_node) <= 1.5 * min(per_node) else "MISSED"
    print(f"target <= {TARGET_RATIO}x at {TARGET_SIZE:,} plugins: {ours / anchor:.2f}x {verdict}")
    print(
        f"target linear growth (ours per node within 1.5x across sizes): "
        f"{min(per_node) * 1e6:.2f}-{max(per_node) * 1e6:.2f} us {linear}"
    )
    edges = results[TARGET_SIZE][2]
    result(
        f"resolve {TARGET_SIZE:,} plugins / {edges:,} constrained edges, parse caches cold",
        anchor=f"graphlib {anchor * 1e3:.1f} ms",
        ours=f"{ours * 1e3:.1f} ms",
        ratio=ours / anchor,
        target=f"<= {TARGET_RATIO}x",
        met=ours / anchor <= TARGET_RATIO,
    )
    spread = max(per_node) / min(per_node)
    result(
        f"resolve, linear growth {SIZES[0]:,}-{SIZES[-1]:,} plugins: most/least time per node",
        anchor=f"{min(per_node) * 1e6:.2f} us/node",
        ours=f"{max(per_node) * 1e6:.2f} us/node",
        ratio=spread,
        target="<= 1.5x",
        met=spread <= 1.5,
    )
    print_results()


if __name__ == "__main__":
    main()
