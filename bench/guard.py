"""What the in-process guard (one PEP 578 audit hook, helixhooks/_guard.py) costs, in two parts.

Run from the repo root: ``.venv/bin/python bench/guard.py`` (``--quick`` for a short run;
``--depth N``: how deep in the stack the host's workload runs, default 30; ``--io-dir DIR``:
where its files go, default /dev/shm where there is one, else the temp directory: tmpfs keeps
disk latency from hiding the hook's cost or adding noise; on a disk the I/O part is slower and
the hook's share of it smaller).

1. The host's own work, with and without the hook. DESIGN target: an unrelated host workload
   at most 1.1x slower with the hook installed than without, because an audit hook runs on
   every audited event in the process, plugin or not. A hook cannot be removed once added, so
   every run is a fresh interpreter (``--child``); the sides take turns, run by run (11 runs
   per side, 3 with ``--quick``), the order rotating:

   - anchor: the workload alone (helixhooks not imported);
   - no-op hook: ``sys.addaudithook`` of a Python function that does nothing, then the
     workload: the floor for any audit hook written in Python;
   - guard off: ``PluginSystem(Config(..., sandbox_enabled=False))`` with the plugins below
     loaded and started, then the workload: helixhooks in memory, no hook installed;
   - ours: the same with the default config (``sandbox_enabled=True``): the hook installed and
     engaged (``_guard._engaged`` > 0), the real case for a host with plugins loaded. The hook is
     the C one (``helixhooks._audit``) where it is built (``setup.py build_ext --inplace`` in a
     source tree), else the Python one; the first line printed says which;
   - ours+read: the same, but two plugins also declare a read scope, so that the guard looks
     at every open for reading too (with none, it skips reads).

   The workload runs on the host's own thread with no plugin code on its stack, so each event
   the guard checks walks the whole stack to find no plugin frame: in C with the C hook, which
   then returns without calling into Python; in Python with the Python hook. Plugins: 5
   directory plugins (plugin.toml + plugin.py, one host hook each); two declare
   ``net=api.example.com:443`` and ``write=./data`` (ours+read: ``read=./data`` as well);
   ``entry_point_group=None``.

   The workload, one repetition, called ``--depth`` frames deep (a host's request handler is
   some tens of frames deep, and the guard's walk is linear in it). Those frames are all this
   script's, one module: the C hook's walk reads a module's name once per run of consecutive
   frames from it, so a stack whose frames alternate between modules costs it about twice as
   much per frame (~15 ns instead of ~8 on 3.11-3.13; docs/security.md):

   - json: ``json.dumps`` + ``json.loads`` of a nested structure (300 records of dicts, lists,
     strings, floats, booleans, None), 6 times;
   - deepcopy: ``copy.deepcopy`` of the same structure, 3 times;
   - file I/O: 300 files written the way hosts save (``open(tmp, "w")``, write 2 KB,
     ``os.replace`` onto the final name), read back (``open`` + ``read``), and ``os.listdir``
     of their directory after every 10 reads.

   About 38% json, 30% deepcopy, 31% file I/O of the anchor's time on /dev/shm (printed each
   run). The audited events one repetition raises are counted in one "ours" run, after its
   timings, by a second audit hook: 43,212 ``builtins.id`` (``copy.deepcopy`` calls ``id()`` for
   every object it visits), 300 ``open`` for writing, 300 ``os.rename``, 300 ``open`` for
   reading, 30 ``os.listdir``, and ``sys._getframe``: one raised by this script (``_call_at``),
   and with the Python hook one per event its walk looks at (the C hook's walk raises none).
   Each run times one warm-up and then 7 repetitions (3 with ``--quick``) and reports their
   median; each side's figure is the median over its runs.

   Then, in every run, single events: ``open(path, "rb")`` and ``open(path, "wb")`` of a small
   file with the opening frame 10, ``--depth`` and 100 frames deep, ``os.listdir`` of a 10-entry
   directory and ``id()``, timed in batches (median batch). "+side" is what that side's hook
   adds: the side minus its baseline (no-op hook - anchor; ours, ours+read - guard off); its
   growth with depth is the stack walk's cost per frame. Last, the hooks' share of one
   repetition, estimated per event as (events per repetition) x (what the hook adds to one),
   beside the measured difference.

2. Hook calls with the guard on. The guard adds nothing per hook call by design (attribution
   reads the stack when an event fires; nothing is set around calls into plugins). Shown with
   bench/dispatch.py's own machinery, imported, not copied: its ``build(10)`` makes a
   PluginSystem with the default config (``sandbox_enabled=True``: the guard is installed and
   every plugin admitted, checked below) over 10 plugins plus a wrapper plugin, and a bare
   pluggy PluginManager over the same plugin objects (the anchor); ``measure`` times
   interleaved batches of each shape. DESIGN's target for it: <= 1.25x per shape.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import _report

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TARGET = 1.1
SIDES = ("anchor", "no-op hook", "guard off", "ours", "ours+read")
GUARDED = ("ours", "ours+read")
# Each hooked side beside the same process without its hook.
BASELINE = {"no-op hook": "anchor", "ours": "guard off", "ours+read": "guard off"}
PLUGINS = 5
RECORDS = 300
JSON_ROUNDS = 6
DEEPCOPY_ROUNDS = 3
FILES = 300
LIST_EVERY = 10
PAYLOAD = "x" * 2000
EVENT_CALLS = 500  # calls per batch when timing single events
EVENT_BATCHES = 5
SHALLOW, DEEP = 10, 100

_PLUGIN = """\
import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def work(self, value):
        return value + {index}
"""


# -- the child: one side in a fresh interpreter -------------------------------------------------


def _start_plugins(root: Path, side: str) -> object:
    from helixhooks import _guard
    from helixhooks.config import Config
    from helixhooks.markers import hookspec
    from helixhooks.system import PluginSystem

    class Spec:
        @hookspec
        def work(self, value: int) -> int:  # type: ignore[empty-body]
            """The host's one hook (defined here: the anchor does not import helixhooks)."""

    asked = ["net=api.example.com:443", "write=./data"]
    if side == "ours+read":
        asked.append("read=./data")
    for index in range(PLUGINS):
        directory = root / f"p{index}"
        (directory / "data").mkdir(parents=True)
        permissions = f"permissions = {json.dumps(asked)}\n" if index < 2 else ""
        (directory / "plugin.toml").write_text(
            f'[plugin]\nname = "p{index}"\nversion = "1.0.0"\nentry = "plugin:Plugin"\n'
            + permissions
        )
        (directory / "plugin.py").write_text(_PLUGIN.format(index=index))
    guarded = side in GUARDED
    config = Config(plugin_dirs=[root], entry_point_group=None, sandbox_enabled=guarded)
    system = PluginSystem(config, specs=[Spec])
    system.load_all()
    system.start_all()
    if system.problems or len(system.names()) != PLUGINS:
        raise SystemExit(f"benchmark plugins did not load: {system.problems}")
    if guarded != (_guard._installed and _guard._engaged >= PLUGINS):
        raise SystemExit(f"guard state unexpected: {_guard._installed=} {_guard._engaged=}")
    return system


def _records() -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "name": f"record-{i}",
            "tags": ["alpha", "beta", str(i)],
            "scores": [i * 0.5, i / 3, -i],
            "active": i % 2 == 0,
            "owner": None,
            "nested": {"depth": {"x": i, "y": [1, 2, {"z": "s" * 10}]}, "note": "n" * 20},
        }
        for i in range(RECORDS)
    ]


def _json(data: object) -> None:
    for _ in range(JSON_ROUNDS):
        json.loads(json.dumps(data))


def _deepcopy(data: object) -> None:
    for _ in range(DEEPCOPY_ROUNDS):
        copy.deepcopy(data)


def _io(directory: str) -> None:
    for i in range(FILES):
        final = os.path.join(directory, f"f{i:03d}.json")
        temporary = final + ".tmp"
        with open(temporary, "w") as handle:
            handle.write(PAYLOAD)
        os.replace(temporary, final)
    for i in range(FILES):
        with open(os.path.join(directory, f"f{i:03d}.json")) as handle:
            handle.read()
        if i % LIST_EVERY == 0:
            os.listdir(directory)


def _repetition(data: object, directory: str) -> dict[str, float]:
    clock = time.perf_counter
    t0 = clock()
    _json(data)
    t1 = clock()
    _deepcopy(data)
    t2 = clock()
    _io(directory)
    t3 = clock()
    return {"json": t1 - t0, "deepcopy": t2 - t1, "io": t3 - t2, "total": t3 - t0}


def _depth() -> int:
    """The caller's frame's depth: the bottom frame (the script's module) is 1."""
    frame: FrameType | None = sys._getframe(1)
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


def _call_at(depth: int, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with its frame at ``depth`` (or deeper, if the caller already is)."""

    def down(level: int) -> Any:
        return fn() if level >= depth - 1 else down(level + 1)

    return down(_depth() + 1)


def _event_cost(fn: Callable[[], object], depth: int) -> float:
    """ns per call of ``fn``, whose frame is at ``depth``; median batch."""

    def batches() -> list[float]:
        times = []
        for _ in range(EVENT_BATCHES):
            start = time.perf_counter()
            for _ in range(EVENT_CALLS):
                fn()
            times.append((time.perf_counter() - start) / EVENT_CALLS)
        return times

    times: list[float] = _call_at(depth - 1, batches)
    return statistics.median(times) * 1e9


def _single_events(directory: Path, depth: int) -> dict[str, float]:
    listed = directory / "listed"
    listed.mkdir()
    for i in range(10):
        (listed / f"e{i}").write_text("e")
    read_target, write_target = str(listed / "e0"), str(directory / "written")
    something = object()

    def open_read() -> None:
        with open(read_target, "rb"):
            pass

    def open_write() -> None:
        with open(write_target, "wb"):
            pass

    def list_dir() -> None:
        os.listdir(listed)

    def identity() -> None:
        id(something)

    costs = {}
    for frames in sorted({SHALLOW, depth, DEEP}):
        costs[f"open rb @{frames}"] = _event_cost(open_read, frames)
        costs[f"open wb @{frames}"] = _event_cost(open_write, frames)
    costs[f"os.listdir @{depth}"] = _event_cost(list_dir, depth)
    costs[f"id() @{depth}"] = _event_cost(identity, depth)
    return costs


def _census(data: object, directory: str, depth: int) -> dict[str, int]:
    """The audited events one repetition raises (adds a second audit hook: run it last)."""
    counts: collections.Counter[str] = collections.Counter()
    counting = False

    def count(event: str, args: tuple[Any, ...]) -> None:
        if counting:
            if event == "open":
                mode = args[1] if isinstance(args[1], str) else "r"
                event = "open (write)" if mode.strip("rbtU") else "open (read)"
            counts[event] += 1

    sys.addaudithook(count)
    counting = True
    _call_at(depth, lambda: _repetition(data, directory))
    counting = False
    return dict(counts.most_common())


def _no_op(event: str, args: tuple[Any, ...]) -> None:
    """The least an audit hook written in Python can be."""


def child(side: str, reps: int, depth: int, io_dir: str, census: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="helix-guard-bench-") as tmp:
        keep = None
        if side == "no-op hook":
            sys.addaudithook(_no_op)
        elif side != "anchor":
            (Path(tmp) / "plugins").mkdir()
            keep = _start_plugins(Path(tmp) / "plugins", side)
        with tempfile.TemporaryDirectory(prefix="helix-guard-io-", dir=io_dir) as io:
            directory = Path(io) / "workload"
            directory.mkdir()
            data = _records()
            run: Callable[[], dict[str, float]] = lambda: _repetition(data, str(directory))  # noqa: E731
            _call_at(depth, run)  # warm-up
            reps_taken = [_call_at(depth, run) for _ in range(reps)]
            result: dict[str, Any] = {
                part: statistics.median(rep[part] for rep in reps_taken) for part in reps_taken[0]
            }
            result["events"] = _single_events(Path(io), depth)
            if census:
                result["census"] = _census(data, str(directory), depth)
        del keep
    print(json.dumps(result))


# -- the parent ---------------------------------------------------------------------------------


def run_child(side: str, reps: int, depth: int, io_dir: str, census: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", side, "--reps", str(reps)]
    command += ["--depth", str(depth), "--io-dir", io_dir] + (["--census"] if census else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child {side!r} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# Which single event stands for each counted event, to estimate the hook's share.
_STANDS_FOR = {
    "builtins.id": "id() @{depth}",
    "open (write)": "open wb @{depth}",
    "open (read)": "open rb @{depth}",
    "os.rename": "open wb @{depth}",  # checked like a write: the same walk
    "os.listdir": "os.listdir @{depth}",
}


def host_workload(runs: int, reps: int, depth: int, io_dir: str) -> None:
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    census: dict[str, int] = {}
    for index in range(runs):
        # Interleaved; the order turns each run so that no side always goes first.
        turn = index % len(SIDES)
        for side in SIDES[turn:] + SIDES[:turn]:
            result = run_child(side, reps, depth, io_dir, census=side == "ours" and not census)
            census = result.pop("census", census)
            results[side].append(result)

    def median(side: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[side]))

    def event(side: str, name: str) -> float:
        return float(statistics.median(r["events"][name] for r in results[side]))

    print(
        f"1. host workload called {depth} frames deep, files in {io_dir}; a fresh interpreter "
        f"per run, median of {runs} runs per side, each the median of {reps} repetitions"
    )
    print(f"{'side':<11}{'total ms':>10}{'json ms':>10}{'deepcopy ms':>13}{'file I/O ms':>13}")
    for side in SIDES:
        print(
            f"{side:<11}{median(side, 'total') * 1e3:>10.2f}{median(side, 'json') * 1e3:>10.2f}"
            f"{median(side, 'deepcopy') * 1e3:>13.2f}{median(side, 'io') * 1e3:>13.2f}"
        )
    anchor = median("anchor", "total")
    parts = ("json", "deepcopy", "io")
    shares = ", ".join(f"{part} {median('anchor', part) / anchor:.0%}" for part in parts)
    print(f"composition (anchor's time): {shares}")
    print("audited events per repetition: " + ", ".join(f"{e} {n}" for e, n in census.items()))
    print(f"guard off / anchor {median('guard off', 'total') / anchor:.3f}x (no hook)")
    for side, baseline in BASELINE.items():
        total, base = median(side, "total"), median(baseline, "total")
        verdict = "met" if total / anchor <= TARGET else "MISSED"
        by_part = ", ".join(f"{p} {median(side, p) / median(baseline, p):.2f}x" for p in parts)
        print(
            f"{side}: {total / anchor:.3f}x anchor (target <= {TARGET}x: {verdict}); "
            f"{total / base:.3f}x {baseline}, by part: {by_part}"
        )
        if side in GUARDED:
            _report.result(
                f"guard ({side}): an unrelated host workload, {depth} frames deep",
                anchor=f"no hook {anchor * 1e3:.2f} ms",
                ours=f"{total * 1e3:.2f} ms",
                ratio=total / anchor,
                target=f"<= {TARGET}x",
                met=total / anchor <= TARGET,
            )

    names = list(results["anchor"][0]["events"])
    print("\nsingle events, ns per call (median over runs of the median batch; @ = stack depth)")
    print(
        "'+side': what its hook adds, the side minus its baseline ("
        + ", ".join(f"{side} - {baseline}" for side, baseline in BASELINE.items())
        + ")"
    )
    print(
        f"{'event':<15}"
        + "".join(f"{side:>11}" for side in SIDES)
        + "".join(f"{'+' + side:>12}" for side in BASELINE)
    )
    added: dict[str, dict[str, float]] = {side: {} for side in BASELINE}
    for name in names:
        figures = {side: event(side, name) for side in SIDES}
        for side, baseline in BASELINE.items():
            added[side][name] = figures[side] - figures[baseline]
        print(
            f"{name:<15}"
            + "".join(f"{figures[side]:>11.0f}" for side in SIDES)
            + "".join(f"{added[side][name]:>12.0f}" for side in BASELINE)
        )
    for side in GUARDED:
        for kind in ("rb", "wb"):
            shallow = added[side][f"open {kind} @{SHALLOW}"]
            per_frame = (added[side][f"open {kind} @{DEEP}"] - shallow) / (DEEP - SHALLOW)
            print(
                f"{side}, open {kind}: the hook adds {shallow - per_frame * SHALLOW:.0f} ns "
                f"+ {per_frame:.0f} ns per frame on the stack"
            )

    print(f"\nthe hooks' share of one repetition, estimated: events x ns added at depth {depth}")
    print(f"{'event':<16}{'count':>7}" + "".join(f"{side + ' ms':>15}" for side in BASELINE))
    for name, count in census.items():
        single = _STANDS_FOR.get(name, "").format(depth=depth)
        if not single:
            note = "_call_at's, and the Python hook's walks: counted in theirs"
            print(f"{name:<16}{count:>7}   ({note})")
            continue
        print(
            f"{name:<16}{count:>7}"
            + "".join(f"{count * added[side][single] / 1e6:>15.2f}" for side in BASELINE)
        )
    measured = (median(s, "total") - median(b, "total") for s, b in BASELINE.items())
    print(f"{'measured':<23}" + "".join(f"{m * 1e3:>15.2f}" for m in measured))


def hook_calls(quick: bool) -> None:
    sys.path.insert(0, str(HERE))
    import dispatch

    from helixhooks import _guard

    if quick:
        dispatch.REPEATS = 9
    bare_relay, our_relay = dispatch.build(10)
    if not (_guard._installed and _guard._engaged >= 11):
        raise SystemExit(f"the guard is not engaged: {_guard._installed=} {_guard._engaged=}")
    print(
        f"\n2. hook calls, 10 impls (+1 wrapper plugin), the guard installed and {_guard._engaged}"
        f" plugins admitted (sandbox_enabled=True, metrics on) vs bare pluggy; "
        f"{dispatch.CALLS_PER_BATCH} calls per batch, median of {dispatch.REPEATS} "
        f"interleaved batches (bench/dispatch.py's build and measure)"
    )
    print(f"{'shape':<16}{'bare ns':>9}{'ours ns':>9}{'ratio':>8}")
    worst = ("", 0.0, 0.0, 0.0)  # shape, ratio, bare ns, ours ns
    for label, hook_name, kwargs in dispatch.SHAPES:
        bare, ours = getattr(bare_relay, hook_name), getattr(our_relay, hook_name)
        bare_ns, our_ns = dispatch.measure(bare, ours, dict(kwargs))
        print(f"{label:<16}{bare_ns:>9.0f}{our_ns:>9.0f}{our_ns / bare_ns:>7.3f}x")
        worst = max(worst, (label, our_ns / bare_ns, bare_ns, our_ns), key=lambda item: item[1])
    verdict = "met" if worst[1] <= dispatch.TARGET else "MISSED"
    print(f"worst shape {worst[0]!r} at {worst[1]:.3f}x (target <= {dispatch.TARGET}x: {verdict})")
    _report.result(
        f"hook call, 10 impls, guard on: worst shape ({worst[0]})",
        anchor=f"bare pluggy {worst[2]:.0f} ns",
        ours=f"{worst[3]:.0f} ns",
        ratio=worst[1],
        target=f"<= {dispatch.TARGET}x",
        met=worst[1] <= dispatch.TARGET,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and repetitions")
    parser.add_argument("--depth", type=int, default=30, help="stack depth of the workload")
    shm = "/dev/shm"
    default_dir = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    parser.add_argument("--io-dir", default=default_dir or tempfile.gettempdir())
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=7, help=argparse.SUPPRESS)
    parser.add_argument("--census", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child, options.reps, options.depth, options.io_dir, options.census)
        return
    import importlib.util

    import pluggy

    built = importlib.util.find_spec("helixhooks._audit") is not None
    front = "C (helixhooks._audit)" if built else "Python (helixhooks._audit is not built)"
    version = sys.version.split()[0]
    print(f"Python {version}, pluggy {pluggy.__version__}, the guard's hook: {front}")
    runs, reps = (3, 3) if options.quick else (11, 7)
    host_workload(runs, reps, options.depth, options.io_dir)
    hook_calls(options.quick)
    _report.print_results()


if __name__ == "__main__":
    main()
