"""Hook call cost through PluginSystem (metrics on), against bare pluggy on the same plugin objects.

Target (DESIGN.md): for every shape, 10 impls, metrics on, at most 1.25x the bare pluggy call.
Shapes: 1, 2, 3 and 5 arguments, firstresult, one old-style hookwrapper, one new-style wrapper;
each at 1, 10 and 100 impls, so growth shows too. Figures are medians of interleaved batches.
Run from the repository root: ``python bench/dispatch.py`` (``--quick`` for fewer repeats).
"""

from __future__ import annotations

import atexit
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pluggy
from _report import print_results, result

from helixhooks._dispatch import FOLD_EVERY
from helixhooks.config import Config
from helixhooks.markers import PROJECT_NAME, hookspec
from helixhooks.system import PluginSystem

# Whole multiples of the fold period give every batch the same share of the deferred folding.
CALLS_PER_BATCH = FOLD_EVERY
REPEATS = 41
TARGET = 1.25
SIZES = (1, 10, 100)


class Spec:
    @hookspec
    def one(self, a: int) -> int:  # type: ignore[empty-body]
        """One argument."""

    @hookspec
    def two(self, a: int, b: int) -> int:  # type: ignore[empty-body]
        """Two arguments."""

    @hookspec
    def three(self, a: int, b: int, c: int) -> int:  # type: ignore[empty-body]
        """Three arguments."""

    @hookspec
    def five(self, a: int, b: int, c: int, d: int, e: int) -> int:  # type: ignore[empty-body]
        """Five arguments."""

    @hookspec(firstresult=True)
    def first(self, a: int) -> int:  # type: ignore[empty-body]
        """First non-None answer wins; every impl but the last answers None."""

    @hookspec
    def old_wrapped(self, a: int) -> int:  # type: ignore[empty-body]
        """Plain impls plus one old-style hookwrapper."""

    @hookspec
    def new_wrapped(self, a: int) -> int:  # type: ignore[empty-body]
        """Plain impls plus one new-style wrapper."""


# (shape label, hook, kwargs)
SHAPES = (
    ("1 arg", "one", {"a": 1}),
    ("2 args", "two", {"a": 1, "b": 2}),
    ("3 args", "three", {"a": 1, "b": 2, "c": 3}),
    ("5 args", "five", {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}),
    ("firstresult", "first", {"a": 1}),
    ("old hookwrapper", "old_wrapped", {"a": 1}),
    ("new wrapper", "new_wrapped", {"a": 1}),
)

_PLAIN = """
import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def one(self, a):
        return a

    @hh.hookimpl
    def two(self, a, b):
        return b

    @hh.hookimpl
    def three(self, a, b, c):
        return c

    @hh.hookimpl
    def five(self, a, b, c, d, e):
        return e

    @hh.hookimpl
    def first(self, a):
        return None

    @hh.hookimpl
    def old_wrapped(self, a):
        return a

    @hh.hookimpl
    def new_wrapped(self, a):
        return a
"""

_WRAPPER = """
import helixhooks as hh


class Plugin:
    @hh.hookimpl(trylast=True)
    def first(self, a):
        return a

    @hh.hookimpl(hookwrapper=True)
    def old_wrapped(self, a):
        outcome = yield
        outcome.get_result()

    @hh.hookimpl(wrapper=True)
    def new_wrapped(self, a):
        result = yield
        return result
"""

_systems: list[PluginSystem] = []


def build(impl_count: int) -> tuple[pluggy.HookRelay, pluggy.HookRelay]:
    """(bare pluggy relay, system relay) over the same plugin objects."""
    root = Path(tempfile.mkdtemp(prefix="helix-dispatch-"))
    atexit.register(shutil.rmtree, root, True)
    for index in range(impl_count):
        _write(root / f"p{index:03d}", f"p{index:03d}", _PLAIN)
    _write(root / "wrapper", "wrapper", _WRAPPER)
    system = PluginSystem(Config(plugin_dirs=[root], entry_point_group=None), specs=[Spec])
    system.load_all()
    system.start_all()
    if system.problems:
        raise SystemExit(f"benchmark plugins did not load: {system.problems}")
    _systems.append(system)
    bare = pluggy.PluginManager(PROJECT_NAME)
    bare.add_hookspecs(Spec)
    for name in sorted(system.names()):
        bare.register(system.get(name).plugin, name=name)
    return bare.hook, system.hook


def _write(directory: Path, name: str, source: str) -> None:
    directory.mkdir()
    (directory / "plugin.toml").write_text(
        f'[plugin]\nname = "{name}"\nversion = "1.0.0"\nentry = "plugin:Plugin"\n'
    )
    (directory / "plugin.py").write_text(source)


def _batch(hook: Callable[..., object], kwargs: dict[str, object]) -> float:
    start = time.perf_counter()
    for _ in range(CALLS_PER_BATCH):
        hook(**kwargs)
    return (time.perf_counter() - start) / CALLS_PER_BATCH


def measure(
    bare: Callable[..., object], ours: Callable[..., object], kwargs: dict[str, object]
) -> tuple[float, float]:
    """Median ns/call of each side over interleaved batches (drifting load hits both alike)."""
    if bare(**kwargs) != ours(**kwargs):
        raise SystemExit("the dispatch changed the hook's results")
    bare_times, our_times = [], []
    for _ in range(REPEATS):
        bare_times.append(_batch(bare, kwargs))
        our_times.append(_batch(ours, kwargs))
    return statistics.median(bare_times) * 1e9, statistics.median(our_times) * 1e9


def main() -> None:
    global REPEATS
    if "--quick" in sys.argv:
        REPEATS = 9
    print(f"Python {platform.python_version()}, pluggy {pluggy.__version__}")
    print(f"{CALLS_PER_BATCH} calls per batch, median of {REPEATS} interleaved batches")
    print(f"{'shape':<16} {'impls':>5} {'bare ns':>9} {'ours ns':>9} {'ratio':>6}")
    at_ten: dict[str, tuple[float, float]] = {}  # shape -> (bare ns, ours ns) at 10 impls
    relays = {size: build(size) for size in SIZES}
    for label, hook_name, kwargs in SHAPES:
        for size in SIZES:
            bare, ours = (getattr(relay, hook_name) for relay in relays[size])
            bare_ns, our_ns = measure(bare, ours, kwargs)
            ratio = our_ns / bare_ns
            print(f"{label:<16} {size:>5} {bare_ns:>9.0f} {our_ns:>9.0f} {ratio:>6.3f}")
            if size == 10:
                at_ten[label] = (bare_ns, our_ns)
    label, (bare_ns, our_ns) = max(at_ten.items(), key=lambda item: item[1][1] / item[1][0])
    ratio = our_ns / bare_ns
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"10 impls: worst shape {label!r} at {ratio:.3f}x bare pluggy: {verdict} {TARGET}x")
    result(
        f"hook call, 10 impls, metrics on: worst shape ({label})",
        anchor=f"bare pluggy {bare_ns:.0f} ns",
        ours=f"{our_ns:.0f} ns",
        ratio=ratio,
        target=f"<= {TARGET}x",
        met=ratio <= TARGET,
    )
    print_results()


if __name__ == "__main__":
    main()
