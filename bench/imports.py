"""``import helixhooks`` beside ``import pluggy``, each in a fresh interpreter.

DESIGN target: ``python -c "import helixhooks"`` <= 2x ``python -c "import pluggy"`` (wall time of
the whole process, interpreter start included, as a user meets it). Run from the repo root:

    .venv/bin/python bench/imports.py [runs]

Every command runs in a new process of this interpreter, interleaved (anchor, ours, ...), and the
median of ``runs`` (default 21) is reported. Both sides import from compiled bytecode, as an
installed package does: PYTHONDONTWRITEBYTECODE is dropped and PYTHONPYCACHEPREFIX points at a
scratch directory, warmed by one untimed run of each command (this also keeps ``__pycache__``
out of the source tree). The processes start in a scratch directory, so helixhooks is found the
way it is installed, not from the current directory.

Besides the target row, two rows show what users really import: a plugin module's
``helixhooks.hookimpl`` and a host's ``from helixhooks import PluginSystem`` (which loads the
whole host side). The ``-X importtime`` listing at the end (untimed) shows what the host path
spends its time on.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import print_results, result

ROOT = Path(__file__).resolve().parents[1]
TARGET = 2.0
ANCHOR = "import pluggy"
OURS = "import helixhooks"
ROWS = {
    "python (no import)": "pass",
    ANCHOR: ANCHOR,
    OURS: OURS,
    "plugin: helixhooks.hookimpl": "import helixhooks; helixhooks.hookimpl",
    "host: import PluginSystem": "from helixhooks import PluginSystem",
}


def _environment(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = cache
    probe = [sys.executable, "-c", "import helixhooks"]
    if subprocess.run(probe, env=env, cwd=cache, capture_output=True).returncode:
        # Not installed in this interpreter: import it from the source tree instead.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run(code: str, env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True)
    return time.perf_counter() - start


def _importtime(code: str, env: dict[str, str], cwd: str, top: int = 14) -> list[str]:
    """The costliest parts of an import: each helixhooks module's own time, and the whole
    subtree of each module outside helixhooks that a helixhooks module imports first."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    stack: list[tuple[int, str]] = []  # (indent, module) of the ancestors, read top-down
    for line in reversed(result.stderr.splitlines()):  # the listing is children first
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        indent = len(name) - len(name.lstrip())
        name = name.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        stack.append((indent, name))
        ours, by_ours = name.startswith("helixhooks"), parent.startswith("helixhooks")
        if ours:
            rows.append((int(parts[0]), f"{name} (own time)"))
        elif by_ours:
            rows.append((int(parts[1]), f"{name} (with what it imports), for {parent}"))
    rows.sort(reverse=True)
    return [f"{spent / 1e3:7.1f} ms  {what}" for spent, what in rows[:top]]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    with tempfile.TemporaryDirectory(prefix="helix-imports-") as cache:
        env = _environment(cache)
        for code in ROWS.values():  # compile to the bytecode cache, untimed
            _run(code, env, cache)
        times: dict[str, list[float]] = {label: [] for label in ROWS}
        for _ in range(runs):
            for label, code in ROWS.items():
                times[label].append(_run(code, env, cache))
        median = {label: statistics.median(values) for label, values in times.items()}
        bare, anchor = median["python (no import)"], median[ANCHOR]
        print(
            f"{sys.executable} (Python {sys.version.split()[0]}), median of {runs} fresh processes"
        )
        print(f"{'command':<30}{'wall ms':>9}{'vs pluggy':>11}{'import ms':>11}{'vs pluggy':>11}")
        for label in ROWS:
            own = median[label] - bare
            net = f"{own / (anchor - bare):>10.2f}x" if label != "python (no import)" else ""
            print(
                f"{label:<30}{median[label] * 1e3:>9.1f}{median[label] / anchor:>10.2f}x"
                f"{own * 1e3:>11.1f}{net}"
            )
        print("(import ms: wall time minus the interpreter's own start, 'python (no import)')")
        ratio = median[OURS] / anchor
        verdict = "met" if ratio <= TARGET else "MISSED"
        print(f"target: {OURS!r} <= {TARGET}x {ANCHOR!r} (wall): {ratio:.2f}x {verdict}")
        result(
            f"`{OURS}`, wall time of a fresh process (median of {runs})",
            anchor=f"`{ANCHOR}` {anchor * 1e3:.1f} ms",
            ours=f"{median[OURS] * 1e3:.1f} ms",
            ratio=ratio,
            target=f"<= {TARGET}x",
            met=ratio <= TARGET,
        )
        host = median["host: import PluginSystem"] / anchor
        print(f"the host's full import is {host:.2f}x {ANCHOR!r} (wall) - not the target row")
        print("\nwhere 'from helixhooks import PluginSystem' spends its time (-X importtime):")
        for line in _importtime(ROWS["host: import PluginSystem"], env, cache):
            print("  " + line)
    print_results()


if __name__ == "__main__":
    main()
