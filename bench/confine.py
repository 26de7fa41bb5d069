"""What the process tier's confinement costs: each layer, and a confined worker's cold start.

Run from the repo root: ``.venv/bin/python bench/confine.py [runs]`` (default 21). A part of
the ``bench/isolation`` row of DESIGN (the worker's cold start with all layers on, and the cost
of each layer); the hook call round trip is the worker's, not measured here.

Layers: each row is a fresh child interpreter that loads confine.py by path (untimed, as the
worker does) and times ``apply()`` on a plugin's policy (no net, no run, every limit, a plugin
and a data directory, the host as parent) with every other layer in the policy's ``disable``
list. The anchor is the same call with every layer disabled (parsing the policy, the thread
check, the report); each layer's own cost is its row minus that. The last row applies all of
them at once. Rows run interleaved (one child per row per round, the order rotated each round)
and the medians are reported, with each layer's outcome: a layer that is not active here
(``processes`` for root, say) costs nothing and says why. ``processes`` runs with
``namespaces``, since for a user other than root it is set inside the worker's own user
namespace; its own cost is that row minus the ``namespaces`` row.

Cold start: the wall time of a whole child process, start to exit, ``python -I -c pass`` (the
anchor) beside ``python -I`` loading confine.py and applying every layer; the ratio is ours over
the anchor. Interleaved likewise; medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import print_results, result

from helixhooks.isolation.confine import LAYERS

CONFINE = Path(__file__).resolve().parents[1] / "helixhooks" / "isolation" / "confine.py"
LOAD = (
    "import importlib.util, json, sys, time\n"
    "spec = importlib.util.spec_from_file_location('confine', sys.argv[1])\n"
    "confine = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(confine)\n"
    "policy = json.loads(sys.argv[2])\n"
)
TIMED = LOAD + (
    "start = time.perf_counter()\n"
    "report = confine.apply(policy)\n"
    "print(json.dumps([time.perf_counter() - start, report]))\n"
)
APPLY = LOAD + "confine.apply(policy)\n"
LIMITS = {
    "memory_mb": 1024,
    "cpu_seconds": 60,
    "open_files": 256,
    "file_size_mb": 64,
    "processes": 32,
}


def _policy(directory: str, only: tuple[str, ...] | None) -> dict[str, object]:
    """A plugin's policy; with ``only``, every layer but those disabled."""
    disable = [] if only is None else [layer for layer in LAYERS if layer not in only]
    return {
        "parent_pid": os.getpid(),
        "limits": LIMITS,
        "read": [os.path.join(directory, "plugin")],
        "write": [os.path.join(directory, "data")],
        "disable": disable,
    }


def _timed(policy: dict[str, object]) -> tuple[float, dict[str, str]]:
    done = subprocess.run(
        [sys.executable, "-I", "-c", TIMED, str(CONFINE), json.dumps(policy)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    elapsed, report = json.loads(done.stdout)
    return float(elapsed), report


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    # Output captured: the wait is then on the pipes (select), which ends as the child does;
    # a bare wait with a timeout polls with sleeps of up to 50 ms.
    subprocess.run(command, check=True, timeout=60, capture_output=True)
    return time.perf_counter() - start


def _outcome(report: dict[str, str], only: tuple[str, ...] | None) -> str:
    if only is not None:
        return ", ".join(report[layer] for layer in only)
    inactive = [f"{layer}: {report[layer]}" for layer in LAYERS if report[layer] != "active"]
    return f"{len(LAYERS) - len(inactive)} active" + "".join(f"; {what}" for what in inactive)


def _rotated(items: list[str], turn: int) -> list[str]:
    shift = turn % len(items)
    return items[shift:] + items[:shift]


def layers(directory: str, runs: int) -> None:
    rows: dict[str, tuple[str, ...] | None] = {"none (anchor)": ()}
    rows.update({layer: (layer,) for layer in LAYERS if layer != "processes"})
    # RLIMIT_NPROC is set only inside the worker's own user namespace (for a user but root).
    rows["namespaces+processes"] = ("namespaces", "processes")
    rows["all layers"] = None
    times: dict[str, list[float]] = {label: [] for label in rows}
    outcome: dict[str, str] = {}
    for turn in range(runs):
        for label in _rotated(list(rows), turn):
            elapsed, report = _timed(_policy(directory, rows[label]))
            times[label].append(elapsed)
            outcome[label] = _outcome(report, rows[label])
    anchor = statistics.median(times["none (anchor)"])
    print(f"apply(), median of {runs} fresh children each; anchor: every layer disabled")
    print(f"{'layer':<22}{'apply us':>10}{'own us':>10}{'vs anchor':>11}  outcome")
    for label in rows:
        median = statistics.median(times[label])
        own = "" if label == "none (anchor)" else f"{(median - anchor) * 1e6:>10.0f}"
        print(
            f"{label:<22}{median * 1e6:>10.0f}{own:>10}{median / anchor:>10.1f}x  {outcome[label]}"
        )
    # No DESIGN target of its own (a part of the process tier's): for information.
    every = statistics.median(times["all layers"])
    result(
        f"confinement: apply() of every layer ({outcome['all layers'].split(';')[0]})",
        anchor=f"every layer disabled {anchor * 1e6:.0f} us",
        ours=f"{every * 1e6:.0f} us",
        ratio=every / anchor,
        target=None,
        met=None,
    )


def cold_start(directory: str, runs: int) -> None:
    policy = json.dumps(_policy(directory, None))
    commands = {
        "python -I -c pass (anchor)": [sys.executable, "-I", "-c", "pass"],
        "load confine.py": [sys.executable, "-I", "-c", LOAD, str(CONFINE), policy],
        "load + apply all layers": [sys.executable, "-I", "-c", APPLY, str(CONFINE), policy],
    }
    times: dict[str, list[float]] = {label: [] for label in commands}
    for turn in range(runs):
        for label in _rotated(list(commands), turn):
            times[label].append(_wall(commands[label]))
    median = {label: statistics.median(values) for label, values in times.items()}
    anchor = median["python -I -c pass (anchor)"]
    print(f"\ncold start, wall time of the whole process, median of {runs}")
    print(f"{'child':<30}{'wall ms':>9}{'vs anchor':>11}")
    for label in commands:
        print(f"{label:<30}{median[label] * 1e3:>9.1f}{median[label] / anchor:>10.2f}x")
    confined = median["load + apply all layers"]
    result(
        "confinement: a confined child's cold start (load confine.py, apply every layer)",
        anchor=f"python -I -c pass {anchor * 1e3:.1f} ms",
        ours=f"{confined * 1e3:.1f} ms",
        ratio=confined / anchor,
        target=None,
        met=None,
    )


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    print(f"{sys.executable} (Python {sys.version.split()[0]}), uid {os.getuid()}, {os.uname()[2]}")
    with tempfile.TemporaryDirectory(prefix="helix-confine-") as directory:
        for name in ("plugin", "data"):
            os.mkdir(os.path.join(directory, name))
        layers(directory, runs)
        cold_start(directory, runs)
    print_results()


if __name__ == "__main__":
    main()
