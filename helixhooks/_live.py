"""What ``helixhooks run`` shows while it serves, and the per-plugin figures it leaves behind.

The view prints one timestamped line per event (loads, starts, reloads, refusals, health
changes, permission denials, worker crashes) and per hook call the command makes: plain text
when stdout is not a terminal, in colour with ``rich`` where it is one and rich is installed
(the ``helixhooks[rich]`` extra). The figures are one row per plugin (its calls of the host's
hooks, errors, mean and p95 latency, reloads); ``run`` writes them to a JSON snapshot file now
and then and at exit, which ``helixhooks stats`` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .config import Config
from .errors import HelixError
from .hookspecs import LIFECYCLE_HOOKS
from .plugin import PluginEvent

if TYPE_CHECKING:
    from rich.console import Console

    from .system import PluginSystem

SNAPSHOT_FORMAT = 1
STATS_HEADER = ("PLUGIN", "VERSION", "STATE", "CALLS", "ERRORS", "MEAN", "P95", "RELOADS")
# What each column holds in a row dict, after the header's order.
_STATS_KEYS = ("name", "version", "state", "calls", "errors", "mean", "p95", "reloads")

# Event kinds and calls by how they look in colour: trouble red, changes of code cyan.
_STYLES = {
    "failed": "bold red",
    "reload_failed": "bold red",
    "permission_denied": "bold red",
    "worker_crashed": "bold red",
    "health_failed": "red",
    "held_back": "yellow",
    "restarted": "yellow",
    "health_recovered": "green",
    "started": "green",
    "reloaded": "bold cyan",
    "loaded": "cyan",
    "stopped": "dim",
    "unloaded": "dim",
    "call": "blue",
    "raised": "bold red",
}


class PlainView:
    """Lines of text: for pipes, files and terminals without rich."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def event(self, event: PluginEvent, *, brief: bool = False) -> None:
        """One event's line; its error below it, unless ``brief`` defers a failure's reason."""
        took = f"  ({event.duration * 1000:.1f} ms)" if event.duration is not None else ""
        self._line(event.kind, f"{event.name} {event.version or ''}{took}", _reason(event, brief))

    def call(self, hook: str, result: object = None, error: BaseException | None = None) -> None:
        """One hook call the command made, with what it returned or raised."""
        if error is None:
            self._line("call", f"{hook} -> {result!r}", None)
        else:
            self._line("raised", hook, f"{type(error).__name__}: {error}")

    def text(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        if not rows:
            return
        columns = zip(header, *rows, strict=True)
        widths = [max(len(str(cell)) for cell in column) for column in columns]
        for row in (header, *rows):
            cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
            print("  ".join(cells).rstrip(), file=self.out)
        self.out.flush()

    def _line(self, kind: str, what: str, detail: str | None) -> None:
        line = f"{time.strftime('%H:%M:%S')} {kind:<8} {what}"
        if detail:
            line += f"\n           {detail}"
        print(line, file=self.out, flush=True)


class RichView(PlainView):
    """The same lines in colour, and tables drawn by rich."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        from rich.console import Console

        self.console: Console = Console(file=out, highlight=False)

    def text(self, line: str = "") -> None:
        self.console.print(line, markup=False)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        from rich.table import Table

        if not rows:
            return
        table = Table(*header, box=None, header_style="bold")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        self.console.print(table)

    def _line(self, kind: str, what: str, detail: str | None) -> None:
        from rich.text import Text

        line = Text.assemble(
            (time.strftime("%H:%M:%S"), "dim"),
            " ",
            (f"{kind:<8}", _STYLES.get(kind, "")),
            " ",
            what,
        )
        if detail:
            line.append("\n           " + detail, style="red")
        self.console.print(line)


def make_view(out: TextIO) -> PlainView:
    """A RichView on a terminal where rich is installed; else a PlainView."""
    if out.isatty():
        try:
            return RichView(out)
        except ImportError:
            pass
    return PlainView(out)


def _reason(event: PluginEvent, brief: bool) -> str | None:
    # While starting up, a failure's reason is printed with the problems that follow, once.
    if event.error is None or (brief and event.kind in ("failed", "held_back")):
        return None
    return str(event.error)


# --- the figures ----------------------------------------------------------------------------------


def stats_rows(system: PluginSystem) -> list[dict[str, Any]]:
    """One row per plugin: its calls of the host's hooks (not lifecycle or health hooks)."""
    rows = []
    for record in system.registry.list():
        stats = system.metrics.get_stats(record.name)
        hooks = set(stats.hooks) - LIFECYCLE_HOOKS
        totals = system.metrics.totals(record.name, hooks) if hooks else None
        rows.append(
            {
                "name": record.name,
                "version": record.info.version,
                "state": record.state.value,
                "calls": totals.count if totals else 0,
                "errors": totals.errors if totals else 0,
                "mean": totals.total / totals.count if totals else None,
                "p95": totals.p95 if totals else None,
                "reloads": stats.events.get("reloaded", 0),
                "refusals": stats.events.get("reload_failed", 0),
                "denials": sum(stats.denials.values()),
                "worker_crashes": stats.events.get("worker_crashed", 0),
            }
        )
    return rows


def table_cells(row: Mapping[str, Any]) -> list[str]:
    """A row's cells under STATS_HEADER: durations made readable, refusals beside reloads."""
    cells = []
    for key in _STATS_KEYS:
        value = row.get(key)
        if key in ("mean", "p95"):
            cells.append(_duration(value))
        elif key == "reloads" and row.get("refusals"):
            cells.append(f"{value} ({row['refusals']} refused)")
        else:
            cells.append(str(value))
    return cells


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-6:.3g} us"


def default_snapshot(config: Config) -> Path:
    """Where ``run`` keeps its figures unless told: the user's state directory, one file per set
    of plugin dirs, so ``stats`` run with the same config finds it."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    dirs = "\0".join(str(Path(d).resolve()) for d in config.plugin_dirs)
    key = hashlib.sha256(dirs.encode()).hexdigest()[:12]
    return Path(base) / "helixhooks" / f"run-{key}.json"


def write_snapshot(
    path: Path,
    system: PluginSystem,
    *,
    running: bool,
    rows: list[dict[str, Any]] | None = None,
) -> None:
    """Replace ``path`` with the system's figures (``rows``, or as they are now) in one step,
    so a reader never sees half of them."""
    data = {
        "format": SNAPSHOT_FORMAT,
        "pid": os.getpid(),
        "written_at": time.time(),
        "running": running,
        "plugin_dirs": [str(d) for d in system.config.plugin_dirs],
        "plugins": rows if rows is not None else stats_rows(system),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)


def read_snapshot(path: Path) -> dict[str, Any]:
    """A snapshot ``run`` wrote; a missing or foreign file is a HelixError saying what to do."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HelixError(
            f"no snapshot at {path}",
            hint="start `helixhooks run` with the same config (or --snapshot) first",
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise HelixError(f"cannot read the snapshot {path}: {exc}", hint="pass --snapshot") from exc
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise HelixError(
            f"{path} is not a snapshot this helixhooks writes",
            hint="pass the --snapshot path that `helixhooks run` was given",
        )
    return data
