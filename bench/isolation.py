"""The process tier: a hook call's round trip to a worker, beside a bare JSON echo; cold starts.

DESIGN target: process-tier hook call round trip <= 1.5x a JSON echo over a pipe to a bare child.
Run from the repo root: ``.venv/bin/python bench/isolation.py`` (``--quick`` for fewer rounds).

1. Round trip. Ours: the user's real path, ``system.hook.<name>(...)`` on a started
   ``PluginSystem`` (metrics on, as by default) whose one plugin has ``isolation = "process"``
   and no permissions, so every layer is on (namespaces, Landlock, seccomp, rlimits). Anchor: a
   bare child (``python -I -c``) reading the same 4-byte-length JSON frames from a socketpair
   (the transport our worker uses) and answering each with ``{"id", "ok"}``, the parent encoding
   and decoding with ``json`` and ``struct``: the floor any process boundary with JSON costs.
   Shapes, each on both sides with the same payload: 1 argument (a short string); 3 arguments;
   a 2 KB dict argument; a firstresult hook. Each round times ``--calls`` calls per side per
   shape, the sides alternating call by call (the first side alternating by round), so both
   are as warm; p50 and p99 per side are the medians over rounds of each round's percentile.
2. Cold start. Ours: ``load_all() + start_all()`` of that plugin and its first call answered
   (spawn, confinement, handshake, import of the plugin and helixhooks in the worker). Anchor:
   spawning the bare child and its first echo. Medians of interleaved runs. What each layer
   costs to apply is bench/confine.py's part.
"""

from __future__ import annotations

import argparse
import functools
import json
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _report import print_results, result

import helixhooks as hh

CHILD = r"""
import json, socket, struct, sys
sock = socket.socket(fileno=int(sys.argv[1]))
header = struct.Struct(">I")
buffer = b""
def read(size):
    global buffer
    while len(buffer) < size:
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit(0)
        buffer += chunk
    data, buffer = buffer[:size], buffer[size:]
    return data
while True:
    (size,) = header.unpack(read(4))
    message = json.loads(read(size))
    answer = json.dumps({"id": message["id"], "ok": message["args"]}).encode()
    sock.sendall(header.pack(len(answer)) + answer)
"""

PLUGIN = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def one(self, text):
        return text

    @hh.hookimpl
    def three(self, a, b, c):
        return [a, b, c]

    @hh.hookimpl
    def blob(self, data):
        return data

    @hh.hookimpl
    def first(self, text):
        return text
"""


class Spec:
    @hh.hookspec
    def one(self, text: str) -> str: ...

    @hh.hookspec
    def three(self, a: int, b: str, c: list[int]) -> list[object]: ...

    @hh.hookspec
    def blob(self, data: dict[str, object]) -> dict[str, object]: ...

    @hh.hookspec(firstresult=True)
    def first(self, text: str) -> str: ...


BLOB = {f"key{i}": {"n": i, "text": "x" * 40, "ok": True} for i in range(30)}
SHAPES: dict[str, dict[str, object]] = {
    "1 arg": {"text": "hello"},
    "3 args": {"a": 1, "b": "two", "c": [3, 4]},
    "2 KB dict": {"data": BLOB},
    "firstresult": {"text": "hello"},
}
HOOKS = {"1 arg": "one", "3 args": "three", "2 KB dict": "blob", "firstresult": "first"}


class BareChild:
    def __init__(self) -> None:
        parent, child = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", CHILD, str(child.fileno())], pass_fds=(child.fileno(),)
        )
        child.close()
        self.sock = parent
        self.header = struct.Struct(">I")
        self.ids = 0
        self.buffer = b""

    def call(self, hook: str, args: dict[str, object]) -> object:
        self.ids += 1
        data = json.dumps({"id": self.ids, "op": "call", "hook": hook, "args": args}).encode()
        self.sock.sendall(self.header.pack(len(data)) + data)
        (size,) = self.header.unpack(self._read(4))
        return json.loads(self._read(size))["ok"]

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self.sock.recv(65536)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def close(self) -> None:
        self.sock.close()
        self.process.wait(timeout=10)


def make_system(root: Path) -> hh.PluginSystem:
    plugin = root / "plugins" / "echo"
    plugin.mkdir(parents=True, exist_ok=True)
    (plugin / "plugin.toml").write_text(
        '[plugin]\nname = "echo"\nversion = "1.0.0"\nentry = "plugin:Plugin"\n'
        'isolation = "process"\n'
    )
    (plugin / "plugin.py").write_text(PLUGIN)
    config = hh.Config(
        plugin_dirs=[root / "plugins"], entry_point_group=None, data_dir=root / "data"
    )
    return hh.PluginSystem(config, specs=[Spec])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def round_trips(system: hh.PluginSystem, bare: BareChild, rounds: int, calls: int) -> None:
    print(f"1. round trip, {rounds} rounds x {calls} calls per side and shape (microseconds)")
    print(
        f"{'shape':<12} {'anchor p50':>10} {'ours p50':>9} {'ratio':>6} "
        f"{'anchor p99':>10} {'ours p99':>9} {'ratio':>6}  target <= 1.5x at p50"
    )
    for shape, args in SHAPES.items():
        hook = HOOKS[shape]
        ours_call = getattr(system.hook, hook)
        ours: dict[str, list[float]] = {"p50": [], "p99": []}
        anchor: dict[str, list[float]] = {"p50": [], "p99": []}
        for _ in range(max(calls // 10, 20)):  # both warm
            ours_call(**args)
            bare.call(hook, args)
        ours_fn = functools.partial(ours_call, **args)
        anchor_fn = functools.partial(bare.call, hook, args)
        for index in range(rounds):
            # Call by call, the sides alternating: both are exactly as warm (caches, CPU state).
            first, second = (ours_fn, anchor_fn) if index % 2 == 0 else (anchor_fn, ours_fn)
            times: dict[Callable[[], object], list[float]] = {ours_fn: [], anchor_fn: []}
            for _ in range(calls):
                for call in (first, second):
                    began = time.perf_counter()
                    call()
                    times[call].append(time.perf_counter() - began)
            for side, into in ((ours_fn, ours), (anchor_fn, anchor)):
                into["p50"].append(percentile(times[side], 0.50))
                into["p99"].append(percentile(times[side], 0.99))
        a50, o50 = statistics.median(anchor["p50"]), statistics.median(ours["p50"])
        a99, o99 = statistics.median(anchor["p99"]), statistics.median(ours["p99"])
        met = "met" if o50 <= 1.5 * a50 else "NOT met"
        print(
            f"{shape:<12} {a50 * 1e6:>10.1f} {o50 * 1e6:>9.1f} {o50 / a50:>5.2f}x "
            f"{a99 * 1e6:>10.1f} {o99 * 1e6:>9.1f} {o99 / a99:>5.2f}x  {met}"
        )
        result(
            f"process-tier hook call round trip, {shape} (p50)",
            anchor=f"JSON echo to a bare child {a50 * 1e6:.1f} us",
            ours=f"{o50 * 1e6:.1f} us",
            ratio=o50 / a50,
            target="<= 1.5x",
            met=o50 <= 1.5 * a50,
        )


def cold_starts(root: Path, runs: int) -> None:
    ours, anchor = [], []
    for index in range(runs):
        for side in ("ours", "anchor") if index % 2 == 0 else ("anchor", "ours"):
            began = time.perf_counter()
            if side == "ours":
                system = make_system(root / f"cold{index}")
                system.load_all()
                system.start_all()
                system.hook.one(text="hi")
                ours.append(time.perf_counter() - began)
                layers = system.get("echo").layers
                system.close()
            else:
                bare = BareChild()
                bare.call("one", {"text": "hi"})
                anchor.append(time.perf_counter() - began)
                bare.close()
    a, o = statistics.median(anchor), statistics.median(ours)
    print(f"\n2. cold start, median of {runs} interleaved runs (milliseconds)")
    print(f"anchor (bare child, first echo): {a * 1e3:.1f} ms")
    print(f"ours (load + start + first call, all layers): {o * 1e3:.1f} ms ({o / a:.2f}x)")
    print("layers: " + ", ".join(f"{k} {v}" for k, v in (layers or {}).items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and runs")
    parser.add_argument("--calls", type=int, default=500, help="calls per side per round")
    options = parser.parse_args()
    rounds, runs = (5, 5) if options.quick else (15, 15)
    print(f"python {sys.version.split()[0]}; capabilities: {hh.Sandbox.capabilities()}")
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        system = make_system(root / "hot")
        system.load_all()
        system.start_all()
        bare = BareChild()
        try:
            round_trips(system, bare, rounds, options.calls)
        finally:
            bare.close()
            system.close()
        cold_starts(root, runs)
    print_results()


if __name__ == "__main__":
    main()
