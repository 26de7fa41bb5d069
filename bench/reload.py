"""File save -> first hook call answered by the new version, with hot reload on; beside a restart.

DESIGN target: file save -> new version serving <= debounce + 50 ms at the median.
Run from the repo root: ``.venv/bin/python bench/reload.py`` (``--quick`` for fewer saves and
sizes; ``--debounce S`` for the debounce measured, default 0.05 s, and 0.2 s, the default
debounce, is measured too unless ``--quick``; ``--saves N`` saves per debounce, default 50;
``--plugins N`` plugins watched; ``--switch-interval MS`` sets ``sys.setswitchinterval``).

Ours: a started ``PluginSystem(Config(plugin_dirs=[root], hot_reload=True, debounce=D),
specs=[Spec])`` over ``--plugins`` directory plugins (plugin.toml + plugin.py; default 5). Each
save rewrites one plugin's plugin.py in place (``Path.write_text``), the plugins taken in turn,
so that its hook ``tag`` answers a new tag. t0 is taken right before the write; the main thread
then calls ``system.hook.tag()`` until the new tag is among the answers, and t1 is when it first
is. Latency = t1 - t0: debounce, the watcher's path from inotify to the reload thread, hashing,
and the reload transaction up to the swap. Before the next save, the reload's ``reloaded``
event is awaited; its time less its duration is about when the reload began, which splits
the latency: the last column is the part from the reload's start to the new tag seen. Two
callers, alternating save by save:

- tight: calls back to back (the brief's caller; a CPU-bound host thread). CPython lets another
  thread take the GIL from a busy one only every ``sys.getswitchinterval()`` (5 ms), so every
  hand-off along the way (watchdog's threads, the reload thread, the operation's worker) may
  wait that long;
- 1 ms: sleeps 1 ms between calls (a host that is mostly waiting, as servers are); 1 ms
  resolution.

Anchor: what a process-restart reloader (uvicorn --reload, hupper) costs for the same plugins:
a fresh interpreter (``sys.executable -c``) imports helixhooks, builds the same PluginSystem
(hot reload off) over a copy of the plugins (so that it does not wake our watcher), loads and
starts them, and prints one hook call's answer; measured from spawn to that line read, one run
after each pair of saves at the first debounce, median reported; ratio = ours / restart. The
anchor leaves out the file watching and debounce such a reloader needs too, which favours it.
Like an installed package, the child imports from bytecode (PYTHONDONTWRITEBYTECODE dropped,
PYTHONPYCACHEPREFIX in a scratch directory, warmed by one untimed run).

Last, ``system.reload(name)`` on demand (no watcher, no debounce): what the transaction itself
costs, and how it grows with the number of plugins loaded (10, 100, 400; ``--quick``: 10, 100),
reloading one plugin in the middle, its file rewritten with a new tag before each (untimed).
One system per size, all started first; the sizes take turns, reload by reload.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pluggy
from _report import print_results, result

import helixhooks as hh

TARGET_SLACK = 0.050  # seconds over the debounce allowed at the median
DEFAULT_DEBOUNCE = hh.Config().debounce
DEADLINE = 10.0  # seconds a save may take before the benchmark gives up
POLITE = 0.001  # seconds the second caller sleeps between calls
SIZES = (10, 100, 400)
QUICK_SIZES = (10, 100)

PLUGIN = """\
import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def helix_start(self, ctx):
        self.started = True

    @hh.hookimpl
    def tag(self):
        return "{name}:{tag}"
"""

CHILD = """\
import json, sys
import helixhooks as hh

class Spec:
    @hh.hookspec
    def tag(self): ...

system = hh.PluginSystem(hh.Config(plugin_dirs=[sys.argv[1]]), specs=[Spec])
system.load_all()
system.start_all()
print(json.dumps(sorted(system.hook.tag())), flush=True)
"""


class Spec:
    @hh.hookspec
    def tag(self) -> str:  # type: ignore[empty-body]
        """This plugin's name and the tag its current code carries."""


def write_plugin(root: Path, name: str, tag: str) -> Path:
    """A directory plugin: plugin.toml, and plugin.py answering ``name:tag``; returns plugin.py."""
    directory = root / name
    directory.mkdir(exist_ok=True)
    (directory / "plugin.toml").write_text(
        f'[plugin]\nname = "{name}"\nversion = "1.0.0"\nentry = "plugin:Plugin"\n'
    )
    path = directory / "plugin.py"
    path.write_text(PLUGIN.format(name=name, tag=tag))
    return path


def p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


# -- ours: save -> first call answered by the new version -------------------------------------


class Watched:
    """A started system with hot reload on, and the time of each ``reloaded`` event."""

    def __init__(self, root: Path, count: int, debounce: float) -> None:
        self.root = root
        self.tags = {f"p{i}": "v0" for i in range(count)}
        for name, tag in self.tags.items():
            write_plugin(root, name, tag)
        config = hh.Config(plugin_dirs=[root], hot_reload=True, debounce=debounce)
        self.system = hh.PluginSystem(config, specs=[Spec])
        self._reloaded: list[tuple[float, hh.PluginEvent]] = []
        self._seen = threading.Condition()
        self.system.subscribe(self._note)
        self.system.load_all()
        self.system.start_all()
        if self.system.problems or self.system._reloader is None:
            raise SystemExit(f"benchmark plugins did not load: {self.system.problems}")
        self.saves = 0

    def _note(self, event: hh.PluginEvent) -> None:
        if event.kind in ("reloaded", "reload_failed"):
            with self._seen:
                self._reloaded.append((time.perf_counter(), event))
                self._seen.notify_all()

    def save(self, pause: float) -> tuple[float, float]:
        """One save; returns (latency, time from the reload's start to the new tag seen).

        The reload's start is its ``reloaded`` event's time less the event's duration: close,
        though the event reaches subscribers a little after the transaction timed it.
        """
        name = f"p{self.saves % len(self.tags)}"
        self.saves += 1
        tag = f"s{self.saves}"
        wanted = f"{name}:{tag}"
        path = self.root / name / "plugin.py"
        code = PLUGIN.format(name=name, tag=tag)
        system, before = self.system, len(self._reloaded)
        t0 = time.perf_counter()
        path.write_text(code)
        while wanted not in system.hook.tag():
            if pause:
                time.sleep(pause)
            if time.perf_counter() - t0 > DEADLINE:
                raise SystemExit(f"{name}'s new version did not serve within {DEADLINE}s")
        t1 = time.perf_counter()
        self.tags[name] = tag
        with self._seen:
            if not self._seen.wait_for(lambda: len(self._reloaded) > before, DEADLINE):
                raise SystemExit(f"no reloaded event for {name}")
            if len(self._reloaded) != before + 1:
                raise SystemExit(f"one save gave {len(self._reloaded) - before} reloads")
            when, event = self._reloaded[-1]
        if event.kind != "reloaded" or event.name != name:
            raise SystemExit(f"unexpected event after saving {name}: {event}")
        began = when - (event.duration or 0.0)
        return t1 - t0, t1 - began


# -- anchor: a fresh process --------------------------------------------------------------------


def child_environment(cache: str) -> dict[str, str]:
    """As bench/imports.py: bytecode cached in ``cache``, helixhooks as installed."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = cache
    probe = [sys.executable, "-c", "import helixhooks"]
    if subprocess.run(probe, env=env, cwd=cache, capture_output=True).returncode:
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def restart(root: Path, env: dict[str, str], cwd: str, expected: list[str]) -> float:
    """Spawn -> the hook's answer read from a fresh interpreter; checked against ``expected``."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    spent = time.perf_counter() - start
    child.stdout.close()
    if child.wait(DEADLINE) or json.loads(line) != expected:
        raise SystemExit(f"the restarted process answered {line!r}, not {expected}")
    return spent


# -- on demand: system.reload(name) -------------------------------------------------------------


class OnDemand:
    """A started system of ``count`` plugins (hot reload off), one of which gets reloaded."""

    def __init__(self, root: Path, count: int) -> None:
        for i in range(count):
            write_plugin(root, f"p{i:04d}", "v0")
        self.root = root
        self.system = hh.PluginSystem(hh.Config(plugin_dirs=[root]), specs=[Spec])
        self.system.load_all()
        self.system.start_all()
        if self.system.problems or len(self.system.names()) != count:
            raise SystemExit(f"benchmark plugins did not load: {self.system.problems}")
        self.name = f"p{count // 2:04d}"
        self.handle = self.system.get(self.name)
        self.reloads = 0

    def reload(self) -> float:
        """Seconds of one ``system.reload``, its file rewritten with a new tag first (untimed)."""
        self.reloads += 1
        tag = f"r{self.reloads}"
        write_plugin(self.root, self.name, tag)
        start = time.perf_counter()
        self.system.reload(self.name)
        spent = time.perf_counter() - start
        if self.handle.call("tag") != f"{self.name}:{tag}":
            raise SystemExit(f"{self.name} does not answer with its new code")
        return spent


def on_demand(sizes: Sequence[int], reloads: int) -> dict[int, list[float]]:
    """Seconds of each reload per size; the sizes take turns, reload by reload."""
    times: dict[int, list[float]] = {count: [] for count in sizes}
    with tempfile.TemporaryDirectory(prefix="helix-reload-") as tmp:
        systems = {}
        try:
            for count in sizes:
                root = Path(tmp) / str(count)
                root.mkdir()
                systems[count] = OnDemand(root, count)
            for _ in range(reloads):
                for count, system in systems.items():
                    times[count].append(system.reload())
        finally:
            for system in systems.values():
                system.system.close()
    return times


def growth(medians: dict[int, float]) -> str:
    """How the reload time grows with the plugins loaded, from the per-size medians."""
    sizes = sorted(medians)
    first, last = sizes[0], sizes[-1]
    ratio = medians[last] / medians[first]
    slopes = [(medians[b] - medians[a]) / (b - a) for a, b in itertools.pairwise(sizes)]
    per_plugin = (medians[last] - medians[first]) / (last - first)
    if ratio <= 1.2:
        shape = "flat"
    elif min(slopes) < 0:
        shape = "not monotonic, so noise: run it again"
    elif slopes[-1] > 2 * slopes[0]:
        shape = "faster than linear in the plugins loaded"
    else:
        shape = "a fixed cost plus a part linear in the plugins loaded"
    return (
        f"{ratio:.2f}x from {first} to {last} plugins, {per_plugin * 1e6:+.2f} us per loaded "
        f"plugin (by step: {', '.join(f'{s * 1e6:+.2f}' for s in slopes)} us): {shape}"
    )


# -- report -------------------------------------------------------------------------------------


def measure_saves(
    debounce: float, saves: int, count: int, anchor: Callable[[], float] | None
) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float]]:
    """Latencies and start->serving times per caller, and restart times (if ``anchor``)."""
    callers = {"tight": 0.0, f"{POLITE * 1e3:g} ms": POLITE}
    latencies: dict[str, list[float]] = {label: [] for label in callers}
    serving: dict[str, list[float]] = {label: [] for label in callers}
    restarts: list[float] = []
    with tempfile.TemporaryDirectory(prefix="helix-hot-") as tmp:
        watched = Watched(Path(tmp), count, debounce)
        try:
            for pause in callers.values():  # one untimed save each, to warm up
                watched.save(pause)
            for _ in range(saves):
                for label, pause in callers.items():
                    latency, since_start = watched.save(pause)
                    latencies[label].append(latency)
                    serving[label].append(since_start)
                if anchor is not None:
                    restarts.append(anchor())
        finally:
            watched.system.close()
    return latencies, serving, restarts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer saves, sizes and debounces")
    parser.add_argument("--debounce", type=float, default=0.05, help="Config.debounce, seconds")
    parser.add_argument("--saves", type=int, help="saves per debounce (default 50, quick 10)")
    parser.add_argument("--plugins", type=int, default=5, help="plugins in the watched dir")
    parser.add_argument(
        "--switch-interval", type=float, help="sys.setswitchinterval, ms (CPython's is 5)"
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval / 1e3)
    saves = args.saves or (10 if args.quick else 50)
    debounces = [args.debounce]
    if not args.quick and args.debounce != DEFAULT_DEBOUNCE:
        debounces.append(DEFAULT_DEBOUNCE)
    sizes = QUICK_SIZES if args.quick else SIZES
    reloads = 15 if args.quick else 40

    print(
        f"save -> first call answered by the new version, hot reload on, {args.plugins} "
        f"directory plugins, in-place writes; Python {sys.version.split()[0]}, "
        f"pluggy {pluggy.__version__}, GIL switch interval {sys.getswitchinterval() * 1e3:g} ms"
    )
    print(f"median and p95 of {saves} saves per caller, saves alternating with restarts")
    with tempfile.TemporaryDirectory(prefix="helix-restart-") as cache:
        env = child_environment(cache)
        with tempfile.TemporaryDirectory(prefix="helix-anchor-") as tmp:
            # The restart's plugins: the same files, in a directory of their own (a restart
            # reading the watched directory would wake the watcher during a timed save).
            anchor_root = Path(tmp)
            for i in range(args.plugins):
                write_plugin(anchor_root, f"p{i}", "v0")
            anchor_expected = sorted(f"p{i}:v0" for i in range(args.plugins))
            restart(anchor_root, env, cache, anchor_expected)  # untimed: fills the cache

            def anchor() -> float:
                return restart(anchor_root, env, cache, anchor_expected)

            restarts: list[float] = []
            rows = []
            for debounce in debounces:
                latencies, serving, spent = measure_saves(
                    debounce, saves, args.plugins, anchor if not restarts else None
                )
                restarts += spent
                rows.append((debounce, latencies, serving))

    restart_median = statistics.median(restarts)
    print(
        f"{'debounce':>8} {'caller':>7} {'median ms':>10} {'p95 ms':>7} {'target ms':>10} "
        f"{'met':>6} {'restart ms':>11} {'ratio':>6} {'reload start->serving ms':>25}"
    )
    for debounce, latencies, serving in rows:
        target = debounce + TARGET_SLACK
        for label, values in latencies.items():
            median = statistics.median(values)
            verdict = "met" if median <= target else "MISSED"
            print(
                f"{debounce * 1e3:>6.0f}ms {label:>7} {ms(median):>10} {ms(p95(values)):>7} "
                f"{ms(target):>10} {verdict:>6} {ms(restart_median):>11} "
                f"{median / restart_median:>5.2f}x {ms(statistics.median(serving[label])):>25}"
            )
            result(
                f"file save -> new version serving, debounce {ms(debounce)} ms, {label} caller "
                f"(median of {len(values)})",
                anchor=f"debounce {ms(debounce)} ms",
                ours=f"{ms(median)} ms",
                ratio=None,
                target=f"<= debounce + {ms(TARGET_SLACK)} ms",
                met=median <= target,
            )
    print(
        f"restart anchor: fresh interpreter, import + load + start {args.plugins} plugins + one "
        f"call, median of {len(restarts)} (p95 {ms(p95(restarts))} ms); its own file watch "
        "and debounce are not counted"
    )

    print(
        f"\nsystem.reload(name) on demand, no watcher: {reloads} reloads of one plugin per size, "
        "the sizes taking turns"
    )
    print(f"{'plugins':>8} {'median ms':>10} {'p95 ms':>7}")
    medians = {}
    for count, times in on_demand(sizes, reloads).items():
        medians[count] = statistics.median(times)
        print(f"{count:>8} {ms(medians[count]):>10} {ms(p95(times)):>7}")
    print(f"growth with plugins loaded: {growth(medians)}")
    print_results()


if __name__ == "__main__":
    main()
