"""Version-check throughput in both dialects, beside node-semver (PyPI) and packaging.

Run from the repository root: ``.venv/bin/python bench/versions.py``. Figures are ns per check,
the median of interleaved runs (ours, anchor, ours, anchor, ...); the ratio is ours / anchor
(below 1 means we are faster). Every row compares like with like:

* parsed vs parsed: ``Constraint.matches`` on a pre-parsed ``Version`` vs node-semver's
  ``Range.test`` on a pre-parsed ``SemVer`` / packaging's ``SpecifierSet.contains`` on a
  pre-parsed ``Version``. No parsing and no cache on either side.
* strings, cache hits vs cache hits: ``Versioner.is_compatible(v, c)`` on a small set of strings
  seen before, so both of its parses are hits in its ``functools.lru_cache``s, vs the anchor's
  equivalent cached path: the same strings through ``lru_cache``-wrapped parsers
  (``make_range``/``make_semver``, ``SpecifierSet``/``Version``, caches as large as ours, also
  all hits) and then the anchor's check.
* strings, cache misses vs cache misses: the same two paths on strings never seen before, with
  every cache cleared before each run, so every parse on both sides is a miss.

node-semver is optional (``pip install node-semver``); without it the npm anchor is skipped.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import print_results, result
from packaging.specifiers import SpecifierSet
from packaging.version import Version as Pep440Version

from helixhooks import versioning
from helixhooks.versioning import Constraint, Versioner, parse_constraint, parse_version

try:
    import nodesemver  # type: ignore[import-not-found, import-untyped, unused-ignore]
except ImportError:
    nodesemver = None

REPEATS = 7
CACHE_SIZE = versioning._CACHE_SIZE  # the anchors' caches are as large as ours
MISS_CHECKS = 20_000  # more than the caches hold, and fresh strings in every run
ANCHOR_MISS_CHECKS = 4_000  # node-semver parses slowly; fewer checks keep the run short

Pair = tuple[str, str]
Check = Callable[[str, str], object]

# Each shape uses {c}, which grows with the index, so that no two constraints are the same.
NPM_SHAPES = ("^{a}.{b}.{c}", "~{a}.{c}", ">={a}.{b}.0 <{d}.{c}.0", "{a}.x || >={d}.{b}.{c}-rc.1")
PEP440_SHAPES = (">={a}.{b},<{d}.{c}", "~={a}.{c}", "=={a}.{c}.*", ">={a}.{b}.0,!={a}.{b}.{c}")


def _pairs(shapes: Sequence[str], count: int, offset: int) -> list[Pair]:
    """Version/constraint pairs; a number that grows with the index makes every string new."""
    pairs = []
    for i in range(offset, offset + count):
        a, b = i % 5, i % 7
        version = f"{a}.{b + i % 2}.{i}"
        constraint = shapes[i % len(shapes)].format(a=a, b=b, c=i, d=a + 1)
        pairs.append((version, constraint))
    return pairs


def _interleaved(
    ours: Callable[[], object], anchor: Callable[[], object] | None, checks: int, anchor_checks: int
) -> tuple[float, float | None]:
    """Median ns per check of ours and the anchor, run alternately REPEATS times."""
    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        ours()
        mine.append((time.perf_counter() - start) / checks * 1e9)
        if anchor is not None:
            start = time.perf_counter()
            anchor()
            theirs.append((time.perf_counter() - start) / anchor_checks * 1e9)
    return statistics.median(mine), statistics.median(theirs) if theirs else None


def _ours_caches() -> list[Any]:
    return [
        value
        for value in vars(versioning).values()
        if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info")
    ]


def _loop(check: Check, pairs: list[Pair], rounds: int = 1) -> Callable[[], None]:
    def run() -> None:
        for _ in range(rounds):
            for version, constraint in pairs:
                check(version, constraint)

    return run


def _misses(
    ours: Check, anchor: Check | None, anchor_caches: Sequence[Any], shapes: Sequence[str]
) -> tuple[float, float | None]:
    """Both sides on strings never seen before, every cache cleared first: all parses miss."""
    runs = iter(range(1, 2 * REPEATS + 1))

    def fresh(count: int) -> list[Pair]:
        return _pairs(shapes, count, offset=1_000_000 * next(runs) + 7 * count)

    def mine() -> None:
        for cache in _ours_caches():
            cache.cache_clear()
        for version, constraint in pairs_ours.pop():
            ours(version, constraint)

    def theirs() -> None:
        for cache in anchor_caches:
            cache.cache_clear()
        assert anchor is not None
        for version, constraint in pairs_anchor.pop():
            anchor(version, constraint)

    # Generated up front, outside the timing; popped one list per run.
    pairs_ours = [fresh(MISS_CHECKS) for _ in range(REPEATS)]
    pairs_anchor = [fresh(ANCHOR_MISS_CHECKS) for _ in range(REPEATS)] if anchor else []
    return _interleaved(mine, theirs if anchor else None, MISS_CHECKS, ANCHOR_MISS_CHECKS)


def _row(library: str, label: str, ours: float, anchor: float | None, anchor_name: str) -> None:
    # No DESIGN target: each row goes to run_all for information.
    result(
        f"version check, {label.strip()} (anchor: {library})",
        anchor=f"{anchor:.0f} ns" if anchor is not None else "unavailable",
        ours=f"{ours:.0f} ns",
        ratio=ours / anchor if anchor is not None else None,
        target=None,
        met=None,
    )
    if anchor is None:
        print(f"{label:<34}{ours:>9.0f}   anchor unavailable ({anchor_name})")
        return
    print(f"{label:<34}{ours:>9.0f}{anchor:>10.0f}   {ours / anchor:>6.2f}x   {anchor_name}")


def _npm(versioner: Versioner) -> None:
    warm = _pairs(NPM_SHAPES, 64, offset=0)
    parsed = [(parse_version(v), parse_constraint(c)) for v, c in warm]
    anchor_parsed = anchor_hit = anchor_miss = None
    caches: list[Any] = []
    if nodesemver is not None:
        for version, constraint in warm:
            if nodesemver.satisfies(version, constraint) != versioner.is_compatible(
                version, constraint
            ):
                raise SystemExit(f"disagreement with node-semver on {version} vs {constraint}")
        node_parsed = [
            (nodesemver.make_semver(v, False), nodesemver.make_range(c, False)) for v, c in warm
        ]

        def anchor_parsed(rounds: int = 10) -> None:
            for _ in range(rounds):
                for version, node_range in node_parsed:
                    node_range.test(version)

        semver = functools.lru_cache(maxsize=CACHE_SIZE)(
            lambda text: nodesemver.make_semver(text, False)
        )
        node_range = functools.lru_cache(maxsize=CACHE_SIZE)(
            lambda text: nodesemver.make_range(text, False)
        )
        caches = [semver, node_range]

        def anchor_hit(version: str, constraint: str) -> object:
            return node_range(constraint).test(semver(version))

        anchor_miss = anchor_hit

    def ours_parsed(rounds: int = 100) -> None:
        for _ in range(rounds):
            for version, constraint in parsed:
                constraint.matches(version)

    n = len(warm)
    print("npm ranges (anchor: node-semver from PyPI)")
    _row(
        "node-semver",
        "  parsed vs parsed",
        *_interleaved(ours_parsed, anchor_parsed, 100 * n, 10 * n),
        "Range.test(SemVer)",
    )
    hit_anchor = None
    if anchor_hit is not None:
        _loop(anchor_hit, warm)()  # fill the anchor's caches: every later parse is a hit
        hit_anchor = _loop(anchor_hit, warm, 10)
    _row(
        "node-semver",
        "  strings, cache hits both sides",
        *_interleaved(_loop(versioner.is_compatible, warm, 100), hit_anchor, 100 * n, 10 * n),
        "cached make_range(c).test(cached make_semver(v))",
    )
    _row(
        "node-semver",
        "  strings, cache misses both sides",
        *_misses(versioner.is_compatible, anchor_miss, caches, NPM_SHAPES),
        "the same, every parse a miss",
    )


def _pep440(versioner: Versioner) -> None:
    warm = _pairs(PEP440_SHAPES, 64, offset=0)
    parsed = [(parse_version(v), parse_constraint(c)) for v, c in warm]
    anchor_pairs = [(Pep440Version(v), SpecifierSet(c)) for v, c in warm]
    for (version, constraint), (anchor_v, anchor_s) in zip(parsed, anchor_pairs, strict=True):
        if constraint.matches(version) != anchor_s.contains(anchor_v):
            raise SystemExit(f"disagreement with packaging on {version} vs {constraint}")

    def ours_parsed(rounds: int = 20) -> None:
        for _ in range(rounds):
            for version, constraint in parsed:
                constraint.matches(version)

    def anchor_parsed(rounds: int = 20) -> None:
        for _ in range(rounds):
            for version, specifier in anchor_pairs:
                specifier.contains(version)

    specifier_set = functools.lru_cache(maxsize=CACHE_SIZE)(SpecifierSet)
    pep440_version = functools.lru_cache(maxsize=CACHE_SIZE)(Pep440Version)

    def anchor_check(version: str, constraint: str) -> bool:
        return specifier_set(constraint).contains(pep440_version(version))

    n = len(warm)
    print("PEP 440 specifiers (anchor: packaging)")
    _row(
        "packaging",
        "  parsed vs parsed",
        *_interleaved(ours_parsed, anchor_parsed, 20 * n, 20 * n),
        "SpecifierSet.contains(Version)",
    )
    _loop(anchor_check, warm)()  # fill the anchor's caches: every later parse is a hit
    _row(
        "packaging",
        "  strings, cache hits both sides",
        *_interleaved(
            _loop(versioner.is_compatible, warm, 20), _loop(anchor_check, warm, 20), 20 * n, 20 * n
        ),
        "cached SpecifierSet(c).contains(cached Version(v))",
    )
    _row(
        "packaging",
        "  strings, cache misses both sides",
        *_misses(
            versioner.is_compatible, anchor_check, [specifier_set, pep440_version], PEP440_SHAPES
        ),
        "the same, every parse a miss",
    )


def _growth() -> None:
    """A parsed check against k alternatives, the version matching only the last one."""
    print("npm growth with alternatives (parsed, version matches only the last alternative)")
    version = parse_version("99.0.0")
    checks = 20_000
    for k in (1, 4, 16, 64):
        constraint = parse_constraint(" || ".join([f"^{i}.0.0" for i in range(k - 1)] + ["^99"]))

        def run(constraint: Constraint = constraint) -> None:
            for _ in range(checks):
                constraint.matches(version)

        print(f"  k={k:<4}{_interleaved(run, None, checks, checks)[0]:>10.0f} ns/check")


def main() -> None:
    versioner = Versioner()
    print(f"median of {REPEATS} interleaved runs; ns per check")
    print(f"{'':<34}{'ours':>9}{'anchor':>10}   {'ratio':>6}")
    if nodesemver is None:
        print("(node-semver is not installed: npm anchor unavailable; pip install node-semver)")
    _npm(versioner)
    _pep440(versioner)
    _growth()
    print_results()


if __name__ == "__main__":
    main()
