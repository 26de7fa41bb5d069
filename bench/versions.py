"""Version-check throughput in both dialects, beside node-semver (PyPI) and packaging.

Run from the repository root: ``.venv/bin/python bench/versions.py``. Figures are ns per check,
the best of several runs; the ratio is ours / anchor (below 1 means we are faster).

* parsed: ``Constraint.matches`` on a pre-parsed ``Version`` vs node-semver's ``Range.test`` on a
  pre-parsed ``SemVer`` / packaging's ``SpecifierSet.contains`` on a pre-parsed ``Version``.
* cold: ``Versioner.is_compatible`` on strings never seen before (more of them than the parse
  caches hold) vs ``nodesemver.satisfies`` / ``SpecifierSet(c).contains(v)``, which always parse.
* warm: ``Versioner.is_compatible`` on a small set of strings, so every parse is a cache hit, vs
  the same anchors (neither caches).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from packaging.specifiers import SpecifierSet
from packaging.version import Version as Pep440Version

from helixhooks.versioning import Constraint, Versioner, parse_constraint, parse_version

try:
    import nodesemver  # type: ignore[import-not-found, import-untyped, unused-ignore]
except ImportError:
    nodesemver = None

REPEATS = 5
COLD_CHECKS = 20_000  # well above the parse caches' 4,096 entries, so every parse misses
ANCHOR_CHECKS = 4_000  # the anchors parse every time; fewer checks keep the run short

Pair = tuple[str, str]

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


def _best_ns(run: Callable[[], object], checks: int) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / checks * 1e9


def _cold_ns(check: Callable[[str, str], object], shapes: Sequence[str], checks: int) -> float:
    """Like _best_ns, but every run gets pairs no earlier run has seen."""
    best = float("inf")
    for run in range(REPEATS):
        pairs = _pairs(shapes, checks, offset=1_000_000 * (run + 1) + 7 * checks)
        start = time.perf_counter()
        for version, constraint in pairs:
            check(version, constraint)
        best = min(best, time.perf_counter() - start)
    return best / checks * 1e9


def _row(label: str, ours: float, anchor: float | None, anchor_name: str) -> None:
    if anchor is None:
        print(f"{label:<26}{ours:>10.0f}   anchor unavailable ({anchor_name})")
        return
    print(f"{label:<26}{ours:>10.0f}{anchor:>12.0f}   {ours / anchor:>6.2f}x   {anchor_name}")


def _npm(versioner: Versioner) -> None:
    warm = _pairs(NPM_SHAPES, 64, offset=0)
    parsed = [(parse_version(v), parse_constraint(c)) for v, c in warm]
    ours_parsed = _best_ns(
        lambda: [c.matches(v) for _ in range(100) for v, c in parsed], 100 * len(parsed)
    )
    ours_cold = _cold_ns(versioner.is_compatible, NPM_SHAPES, COLD_CHECKS)
    ours_warm = _best_ns(
        lambda: [versioner.is_compatible(v, c) for _ in range(100) for v, c in warm],
        100 * len(warm),
    )
    node_parsed = node_cold = None
    if nodesemver is not None:
        node_pairs = [
            (nodesemver.make_semver(v, False), nodesemver.make_range(c, False)) for v, c in warm
        ]
        node_parsed = _best_ns(
            lambda: [r.test(v) for _ in range(10) for v, r in node_pairs], 10 * len(node_pairs)
        )
        node_cold = _cold_ns(
            lambda v, c: nodesemver.satisfies(v, c, loose=False), NPM_SHAPES, ANCHOR_CHECKS
        )
    for version, constraint in warm:
        expected = versioner.is_compatible(version, constraint)
        if nodesemver is not None and nodesemver.satisfies(version, constraint) != expected:
            raise SystemExit(f"disagreement with node-semver on {version} vs {constraint}")
    print("npm ranges (anchor: node-semver from PyPI)")
    _row("  parsed", ours_parsed, node_parsed, "Range.test(SemVer)")
    _row("  unparsed, cache cold", ours_cold, node_cold, "satisfies(v, r)")
    _row("  unparsed, cache warm", ours_warm, node_cold, "satisfies(v, r)")


def _pep440(versioner: Versioner) -> None:
    warm = _pairs(PEP440_SHAPES, 64, offset=0)
    parsed = [(parse_version(v), parse_constraint(c)) for v, c in warm]
    anchor_parsed = [(Pep440Version(v), SpecifierSet(c)) for v, c in warm]
    for (version, constraint), (anchor_v, anchor_s) in zip(parsed, anchor_parsed, strict=True):
        if constraint.matches(version) != anchor_s.contains(anchor_v):
            raise SystemExit(f"disagreement with packaging on {version} vs {constraint}")
    ours_parsed = _best_ns(
        lambda: [c.matches(v) for _ in range(20) for v, c in parsed], 20 * len(parsed)
    )
    packaging_parsed = _best_ns(
        lambda: [s.contains(v) for _ in range(20) for v, s in anchor_parsed],
        20 * len(anchor_parsed),
    )
    ours_cold = _cold_ns(versioner.is_compatible, PEP440_SHAPES, COLD_CHECKS)
    packaging_cold = _cold_ns(
        lambda v, c: SpecifierSet(c).contains(v), PEP440_SHAPES, ANCHOR_CHECKS
    )
    ours_warm = _best_ns(
        lambda: [versioner.is_compatible(v, c) for _ in range(20) for v, c in warm],
        20 * len(warm),
    )
    print("PEP 440 specifiers (anchor: packaging)")
    _row("  parsed", ours_parsed, packaging_parsed, "SpecifierSet.contains(Version)")
    _row("  unparsed, cache cold", ours_cold, packaging_cold, "SpecifierSet(c).contains(v)")
    _row("  unparsed, cache warm", ours_warm, packaging_cold, "SpecifierSet(c).contains(v)")


def _growth() -> None:
    """A parsed check against k alternatives, the version matching only the last one."""
    print("npm growth with alternatives (parsed, version matches only the last alternative)")
    version = parse_version("99.0.0")
    checks = 20_000
    for k in (1, 4, 16, 64):
        constraint = parse_constraint(" || ".join([f"^{i}.0.0" for i in range(k - 1)] + ["^99"]))

        def run(constraint: Constraint = constraint) -> list[bool]:
            return [constraint.matches(version) for _ in range(checks)]

        print(f"  k={k:<4}{_best_ns(run, checks):>10.0f} ns/check")


def main() -> None:
    versioner = Versioner()
    print(f"{'ns per check':<26}{'ours':>10}{'anchor':>12}   {'ratio':>6}")
    if nodesemver is None:
        print("(node-semver is not installed: anchor unavailable; pip install node-semver)")
    _npm(versioner)
    _pep440(versioner)
    _growth()


if __name__ == "__main__":
    main()
