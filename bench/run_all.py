"""Every benchmark in bench/, one after another, then one table of what each found.

The table's columns: what, anchor, ours, ratio, target, met. Run from the repo root:
``python bench/run_all.py`` (``--quick``: each benchmark's short mode, where it has one;
``--write``: the table to bench/RESULTS.md too; ``-v``: each benchmark's own report as it runs;
benchmark names, e.g. ``dispatch resolve``, to run only those).

Each benchmark runs in a fresh interpreter (this one), alone: they time things, and two at once
would skew both. What it found is read from the ``RESULT {json}`` lines that end its output
(bench/_report.py), not from its report. Exit status 1 if a benchmark failed or gave no result;
a target missed is shown as such in the table, not an error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _report import PREFIX

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_MD = HERE / "RESULTS.md"
# Benchmarks whose short mode is not ``--quick``: these take a run count.
QUICK_ARGS = {"confine": ["5"], "imports": ["7"]}
# Generous: the longest full benchmark takes some minutes on a quiet machine.
TIMEOUT = 3600
COLUMNS = ("what", "anchor", "ours", "ratio", "target", "met")


def benchmarks() -> list[Path]:
    """Every runnable benchmark: bench/*.py but helpers (``_*.py``) and this file."""
    return sorted(
        path
        for path in HERE.glob("*.py")
        if not path.name.startswith("_") and path.name != Path(__file__).name
    )


def arguments(bench: Path, quick: bool) -> list[str]:
    if not quick:
        return []
    if bench.stem in QUICK_ARGS:
        return QUICK_ARGS[bench.stem]
    return ["--quick"] if "--quick" in bench.read_text(encoding="utf-8") else []


Result = dict[str, object]


def run(bench: Path, args: list[str], verbose: bool) -> tuple[list[Result], str | None]:
    """The benchmark's results, and why it failed (None if it did not)."""
    try:
        done = subprocess.run(
            [sys.executable, str(bench), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return [], f"did not finish within {TIMEOUT} s"
    if verbose:
        sys.stderr.write(done.stdout + done.stderr)
    results = [
        json.loads(line[len(PREFIX) :])
        for line in done.stdout.splitlines()
        if line.startswith(PREFIX)
    ]
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return results, f"exit status {done.returncode}: {last}"
    return results, None if results else "no RESULT line in its output"


def cells(entry: Result, bench: str) -> list[str]:
    ratio, met = entry["ratio"], entry["met"]
    return [
        f"{bench}: {entry['what']}",
        str(entry["anchor"]),
        str(entry["ours"]),
        f"{ratio:.2f}x" if isinstance(ratio, (int, float)) else "-",
        str(entry["target"] or "-"),
        "-" if met is None else "yes" if met else "NO",
    ]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    lines = [list(COLUMNS), ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def markdown(rows: list[list[str]], mode: str, spent: dict[str, float], load: str) -> str:
    import pluggy

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    runtimes = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in spent.items())
    escaped = [[cell.replace("|", "\\|") for cell in row] for row in rows]
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"The last `python bench/run_all.py {'--quick ' if mode == 'quick' else ''}--write`:",
            f"{when}, Python {platform.python_version()}, pluggy {pluggy.__version__}, "
            f"{platform.machine()} with {os.cpu_count()} CPUs ({load}), {mode} mode. Each row "
            "is one target of DESIGN.md's performance table (a row with no target is shown for "
            "information); each benchmark's own output says how it measures.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "|".join(["---", "---", "---", "--:", "---", "---"]) + "|",
            *("| " + " | ".join(row) + " |" for row in escaped),
            "",
            f"Runtimes: {runtimes} ({sum(spent.values()) / 60:.1f} min in all).",
            "",
        ]
    )


def _load() -> str:
    """The load average when the run began, where the system tells it."""
    if not hasattr(os, "getloadavg"):
        return "load average unknown"
    return "load average at the start " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="each benchmark's short mode")
    parser.add_argument("--write", action="store_true", help=f"write the table to {RESULTS_MD}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each report")
    options = parser.parse_args()
    chosen = [b for b in benchmarks() if not options.names or b.stem in options.names]
    unknown = set(options.names) - {b.stem for b in chosen}
    if unknown:
        parser.error(f"no benchmark named {', '.join(sorted(unknown))}")
    # Other work on the machine skews every figure: said beside them.
    load = _load()
    rows: list[list[str]] = []
    spent: dict[str, float] = {}
    failed = False
    for bench in chosen:
        args = arguments(bench, options.quick)
        print(f"running {bench.name} {' '.join(args)}".rstrip(), file=sys.stderr, flush=True)
        began = time.perf_counter()
        results, failure = run(bench, args, options.verbose)
        spent[bench.stem] = time.perf_counter() - began
        rows += [cells(entry, bench.stem) for entry in results]
        if failure is not None:
            failed = True
            rows.append([f"{bench.stem}: FAILED, {failure}", "", "", "-", "-", "NO"])
        print(f"  {spent[bench.stem]:.0f} s", file=sys.stderr, flush=True)
    print(text_table(rows))
    total = sum(spent.values())
    print(f"\n{len(chosen)} benchmarks in {total / 60:.1f} min ({load})")
    if options.write:
        mode = "quick" if options.quick else "full"
        RESULTS_MD.write_text(markdown(rows, mode, spent, load), encoding="utf-8")
        print(f"written to {RESULTS_MD.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
