"""Load + init + start of N plugins through PluginSystem, then close(), beside the same by hand.

DESIGN targets: load+init+start of 200 plugins <= 1.5x the anchor, and close() likewise; both
growing linearly from 100 to 800 plugins; memory per loaded plugin <= 1.5x the anchor's.
Run from the repo root: ``.venv/bin/python bench/startup.py``

Each plugin is a real directory with a ``plugin.toml`` (name, version, entry, a constrained
dependency on the previous plugin for three in four, a [config] table) and a ``plugin.py`` whose
class implements helix_init, helix_start, helix_stop and one host hook, ``work``.

Ours, the user's path with the default config (entry points on): ``PluginSystem(Config(
plugin_dirs=[root]), specs=[Spec])``, ``load_all()``, ``start_all()``; then ``close()``.
Anchor, the same work by hand: ``os.scandir``, ``tomllib.load`` of each manifest, the
entry-point listing, compile each plugin.py from source, exec it in a new module in sys.modules,
instantiate the class, call helix_init and helix_start directly, ``pm.register`` on one pluggy
PluginManager; close: ``pm.unregister``, helix_stop, and the module dropped from sys.modules.

Both sides start alike before every timed run: the same files (the OS page cache warm for both),
``importlib.invalidate_caches()``, every helixhooks ``lru_cache`` cleared, no plugin module left
in sys.modules. Runs are interleaved (anchor, ours, anchor, ours, ...); medians are reported.

Memory: a fresh interpreter per side loads and starts 1,000 plugins after a warm-up load of a
few others (so one-time imports are not counted) and reports the tracemalloc growth per plugin,
and the RSS growth per plugin without tracemalloc in another fresh interpreter. Before its first
RSS reading, that interpreter hands the allocator's free heap pages back to the system (glibc's
``malloc_trim``), so that neither side's growth depends on free memory left over from before
(see ``_release_free_heap``).
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pluggy
from _caches import helixhooks_lru_caches
from _report import print_results, result

import helixhooks as hh

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SIZES = (100, 200, 800)
TARGET_SIZE = 200
TARGET_RATIO = 1.5
MEMORY_PLUGINS = 1_000
GROUP = hh.Config().entry_point_group  # the default, as a host gets it

PLUGIN = """\
import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.factor = config.get("factor", 2)

    @hh.hookimpl
    def helix_start(self, ctx):
        self.started = True

    @hh.hookimpl
    def helix_stop(self, ctx):
        self.started = False

    @hh.hookimpl
    def work(self, value):
        return value * self.factor
"""


class Spec:
    @hh.hookspec
    def work(self, value: int) -> int: ...


def generate(root: Path, count: int, prefix: str = "p") -> None:
    for i in range(count):
        directory = root / f"{prefix}{i:05d}"
        directory.mkdir()
        deps = f'dependencies = ["{prefix}{i - 1:05d} ^1.0"]\n' if i % 4 else ""
        (directory / "plugin.toml").write_text(
            f'[plugin]\nname = "{prefix}{i:05d}"\nversion = "1.{i}.0"\nentry = "plugin:Plugin"\n'
            f"{deps}[config]\nfactor = 3\n"
        )
        (directory / "plugin.py").write_text(PLUGIN)


# -- the two sides ---------------------------------------------------------------------------


def ours_start(root: Path) -> hh.PluginSystem:
    system = hh.PluginSystem(hh.Config(plugin_dirs=[root]), specs=[Spec])
    system.load_all()
    system.start_all()
    return system


def ours_close(system: hh.PluginSystem) -> None:
    system.close()


_runs = 0


class ByHand:
    """The least a host could do: one pluggy PluginManager and direct calls."""

    def __init__(self) -> None:
        global _runs
        _runs += 1
        self.prefix = f"_bench_by_hand_r{_runs}"
        self.pm = pluggy.PluginManager("helixhooks")
        self.pm.add_hookspecs(Spec)
        self.loaded: list[tuple[str, Any, str]] = []

    def start(self, root: Path) -> None:
        with os.scandir(root) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        importlib.metadata.entry_points(group=GROUP)
        for entry in entries:
            if not entry.is_dir():
                continue
            with open(os.path.join(entry.path, "plugin.toml"), "rb") as handle:
                document = tomllib.load(handle)
            table = document["plugin"]
            name = table["name"]
            module_name, _, attribute = table["entry"].partition(":")
            path = os.path.join(entry.path, module_name + ".py")
            with open(path, "rb") as handle:
                code = compile(handle.read(), path, "exec")
            qualified = f"{self.prefix}.{name}"
            module = types.ModuleType(qualified)
            module.__file__ = path
            sys.modules[qualified] = module
            exec(code, module.__dict__)
            plugin = getattr(module, attribute)()
            plugin.helix_init(dict(document.get("config", {})), None)
            plugin.helix_start(None)
            self.pm.register(plugin, name=name)
            self.loaded.append((name, plugin, qualified))

    def close(self) -> None:
        for name, plugin, qualified in reversed(self.loaded):
            self.pm.unregister(plugin, name=name)
            plugin.helix_stop(None)
            del sys.modules[qualified]
        self.loaded.clear()


_SCRATCH = os.path.join(tempfile.gettempdir(), "helix-")


def _plugin_modules() -> list[str]:
    return [
        name
        for name in sys.modules
        if name.startswith(("helixhooks._plugins", "_bench_by_hand"))
        or str(getattr(sys.modules[name], "__file__", "")).startswith(_SCRATCH)
    ]


def make_cold() -> None:
    """The same starting point for both sides."""
    leftover = _plugin_modules()
    for name in leftover:
        del sys.modules[name]
    importlib.invalidate_caches()
    for cache in helixhooks_lru_caches():
        cache.cache_clear()
    gc.collect()


def _timed(run: Callable[[], object]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="helix-startup-") as tmp:
        root = Path(tmp)
        generate(root, count)
        # Check both sides once, which also warms the OS page cache for both.
        system = ours_start(root)
        assert not system.problems, system.problems[:3]
        assert len(system.names()) == count
        assert system.hook.work(value=1) == [3] * count
        system.close()
        assert not [n for n in sys.modules if n.startswith("helixhooks._plugins.")], "left over"
        by_hand = ByHand()
        by_hand.start(root)
        assert by_hand.pm.hook.work(value=1) == [3] * count
        by_hand.close()
        rounds = {100: 9, 200: 7}.get(count, 5)
        times: dict[str, list[float]] = {"anchor": [], "anchor close": [], "ours": [], "close": []}
        for _ in range(rounds):
            make_cold()
            by_hand = ByHand()
            spent, _ = _timed(lambda: by_hand.start(root))  # noqa: B023 - called at once
            times["anchor"].append(spent)
            times["anchor close"].append(_timed(by_hand.close)[0])
            make_cold()
            spent, system = _timed(lambda: ours_start(root))
            times["ours"].append(spent)
            times["close"].append(_timed(system.close)[0])
        return {side: statistics.median(values) for side, values in times.items()}


# -- memory, each side in a fresh interpreter ------------------------------------------------------


def _memory_child(side: str, count: int, trace: bool) -> None:
    """Runs in a child: prints the growth of traced memory (or RSS) per plugin as JSON."""
    with tempfile.TemporaryDirectory(prefix="helix-memory-") as tmp:
        warm, root = Path(tmp) / "warm", Path(tmp) / "plugins"
        warm.mkdir()
        root.mkdir()
        generate(warm, 5, prefix="w")
        generate(root, count)
        # Warm up: a small load and close, so that one-time imports and caches are not counted.
        if side == "ours":
            ours_close(ours_start(warm))
        else:
            warmup = ByHand()
            warmup.start(warm)
            warmup.close()
        make_cold()
        if trace:
            tracemalloc.start()
        else:
            _release_free_heap()
        before = tracemalloc.get_traced_memory()[0] if trace else _rss()
        if side == "ours":
            keep: object = ours_start(root)
        else:
            by_hand = ByHand()
            by_hand.start(root)
            keep = by_hand
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] if trace else _rss()
        print(json.dumps((after - before) / count))
        del keep


def _release_free_heap() -> None:
    """Give the C allocator's free heap pages back to the system (glibc only; else nothing).

    glibc keeps a heap per thread. Free memory left in the main thread's heap before the first
    reading (mostly by imports: compiling helixhooks from source when it has no .pyc files) is
    reused, adding nothing to RSS, by whichever side allocates on the main thread: the anchor
    does, while ours loads and starts plugins on a lifecycle worker thread, whose heap cannot
    reuse it. The anchor's RSS growth per plugin then changed with the mere presence of .pyc
    files (about 8,600 bytes without, 9,200 with, on 3.11), its work unchanged. With the free
    pages returned first, the growth counts every page that loading the plugins touches, on
    both sides alike, .pyc files or not.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    gc.collect()
    trim(0)


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(side: str, trace: bool) -> float:
    command = [sys.executable, __file__, "--memory", side, str(MEMORY_PLUGINS)]
    if not trace:
        command.append("--rss")
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(json.loads(result.stdout.strip().splitlines()[-1]))


# -- report --------------------------------------------------------------------------------------


def main() -> None:
    print(
        f"load+init+start through PluginSystem (default config, entry points on) vs by hand; "
        f"median of interleaved runs; Python {sys.version.split()[0]}, pluggy {pluggy.__version__}"
    )
    print(
        f"{'plugins':>8}{'ours ms':>10}{'anchor ms':>11}{'ratio':>8}"
        f"{'close ms':>10}{'anchor ms':>11}{'ratio':>8}"
        f"{'ours us/pl':>12}{'anchor us/pl':>14}{'close us/pl':>13}{'anchor us/pl':>14}"
    )
    results = {}
    for count in SIZES:
        r = results[count] = measure(count)
        print(
            f"{count:>8}{r['ours'] * 1e3:>10.1f}{r['anchor'] * 1e3:>11.1f}"
            f"{r['ours'] / r['anchor']:>7.2f}x{r['close'] * 1e3:>10.1f}"
            f"{r['anchor close'] * 1e3:>11.1f}{r['close'] / r['anchor close']:>7.2f}x"
            f"{r['ours'] / count * 1e6:>12.0f}{r['anchor'] / count * 1e6:>14.0f}"
            f"{r['close'] / count * 1e6:>13.0f}{r['anchor close'] / count * 1e6:>14.0f}"
        )
    first, last = SIZES[0], SIZES[-1]

    def per_plugin_growth(side: str) -> float:
        return (results[last][side] / last) / (results[first][side] / first)

    growth = {side: per_plugin_growth(side) for side in ("ours", "anchor", "close", "anchor close")}
    print(
        f"per-plugin time at {last} / at {first} (1.0 = linear): load+start ours "
        f"{growth['ours']:.2f} (anchor {growth['anchor']:.2f}), close ours "
        f"{growth['close']:.2f} (anchor {growth['anchor close']:.2f})"
    )
    r = results[TARGET_SIZE]
    for label, ours, anchor in (
        ("load+init+start", r["ours"], r["anchor"]),
        ("close", r["close"], r["anchor close"]),
    ):
        verdict = "met" if ours / anchor <= TARGET_RATIO else "MISSED"
        print(f"target {label} <= {TARGET_RATIO}x at {TARGET_SIZE}: {ours / anchor:.2f}x {verdict}")
        result(
            f"{label} of {TARGET_SIZE} plugins",
            anchor=f"by hand {anchor * 1e3:.1f} ms",
            ours=f"{ours * 1e3:.1f} ms",
            ratio=ours / anchor,
            target=f"<= {TARGET_RATIO}x",
            met=ours / anchor <= TARGET_RATIO,
        )
    for label, side in (("load+start", "ours"), ("close", "close")):
        verdict = "met" if growth[side] <= 1.5 else "MISSED"
        print(f"target {label} linear 100->800 (per-plugin time within 1.5x): {verdict}")
        anchor_side = "anchor" if side == "ours" else "anchor close"
        result(
            f"{label}, linear {first}->{last} plugins: time per plugin at {last} / at {first}",
            anchor=f"by hand {growth[anchor_side]:.2f}",
            ours=f"{growth[side]:.2f}",
            ratio=None,
            target="<= 1.5",
            met=growth[side] <= 1.5,
        )

    print(f"\nmemory per loaded+started plugin, {MEMORY_PLUGINS:,} plugins, fresh interpreters")
    for label, trace in (("tracemalloc", True), ("RSS, no tracemalloc", False)):
        ours, anchor = memory("ours", trace), memory("anchor", trace)
        verdict = "met" if ours / anchor <= TARGET_RATIO else "MISSED"
        print(
            f"  {label:<20} ours {ours / 1024:7.1f} KiB  anchor {anchor / 1024:7.1f} KiB  "
            f"{ours / anchor:.2f}x (target <= {TARGET_RATIO}x: {verdict})"
        )
        result(
            f"memory per loaded plugin ({label}), {MEMORY_PLUGINS:,} plugins",
            anchor=f"by hand {anchor / 1024:.1f} KiB",
            ours=f"{ours / 1024:.1f} KiB",
            ratio=ours / anchor,
            target=f"<= {TARGET_RATIO}x",
            met=ours / anchor <= TARGET_RATIO,
        )
    print_results()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        _memory_child(sys.argv[2], int(sys.argv[3]), trace="--rss" not in sys.argv)
    else:
        main()
