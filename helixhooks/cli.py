"""The ``helixhooks`` command: list, check, run, stats, graph and info for hosts and plugin authors.

Output rules: stdout carries the report (and only the JSON with ``--json``); what plugins print
while they load, start and are checked goes to stderr. A problem is printed once, in the report:
the warnings helixhooks logs while a command works are collected and reported with it, unless
they repeat a problem (``-v`` logs everything to stderr as it happens, as well).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from . import __version__
from ._live import (
    STATS_HEADER,
    PlainView,
    default_snapshot,
    make_view,
    read_snapshot,
    stats_rows,
    table_cells,
    write_snapshot,
)
from .config import Config, HookCall
from .dependencies import DependencyResolver
from .discovery import MANIFEST, Discovery
from .errors import HelixError
from .hookspecs import LIFECYCLE_HOOKS
from .markers import PROJECT_NAME
from .plugin import PluginCandidate, PluginInfo, PluginState, Problem
from .system import PluginSystem

if TYPE_CHECKING:
    from .prometheus import MetricsServer

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
# How often `run` rewrites its snapshot file.
SNAPSHOT_EVERY = 2.0

# The common options, accepted before the command (stored under these prefixed names) and after.
_TOP = "top_"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _merge_common(parser, args)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not args.verbose:
        # Collected warnings are printed with the command's report; see _collecting.
        stderr.addFilter(_not_collected)
    root = logging.getLogger()
    level = root.level
    root.addHandler(stderr)
    root.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        config = _config(args)
        result: int = args.command(config, args, sys.stdout)
    except HelixError as exc:
        print(f"helixhooks: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # Whoever read our output went away (`helixhooks run | head`): the command has cleaned
        # up; nothing is left to tell, and the interpreter's own flush at exit must not fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        root.removeHandler(stderr)
        root.setLevel(level)
    return result


def _duration(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a finite number of seconds >= 0 (leave --duration out to run "
            "until Ctrl-C)"
        )
    return seconds


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def _add_snapshot(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--snapshot",
        type=Path,
        help=f"{what} (default: run-<hash of the plugin dirs>.json in "
        "$XDG_STATE_HOME/helixhooks or ~/.local/state/helixhooks, so `run` and `stats` with "
        "the same config agree)",
    )


def _add_common(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    parser.add_argument(
        "--config",
        dest=prefix + "config",
        type=Path,
        help="helixhooks.toml or pyproject.toml (default: found upwards)",
    )
    parser.add_argument(
        "--plugin-dir",
        dest=prefix + "plugin_dirs",
        action="append",
        default=[],
        type=Path,
        help="a plugin directory; repeatable; replaces the config's plugin_dirs",
    )
    parser.add_argument(
        "--hookspecs",
        dest=prefix + "hookspecs",
        action="append",
        default=[],
        help="the host's hookspecs as module:Class or file.py:Class; repeatable",
    )
    parser.add_argument(
        "-v", "--verbose", dest=prefix + "verbose", action="store_true", help="log debug messages"
    )


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common)

    parser = argparse.ArgumentParser(
        prog="helixhooks",
        description="Find, check and run helixhooks plugins. The options --config, "
        "--plugin-dir, --hookspecs and -v may come before or after the command.",
    )
    parser.add_argument("--version", action="version", version=f"helixhooks {__version__}")
    _add_common(parser, _TOP)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    sub = commands.add_parser(
        "list", parents=[common], help="discovered plugins and problems (imports nothing)"
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(command=_list)

    sub = commands.add_parser(
        "check",
        parents=[common],
        help="resolve, load, init, start and health-check; exit 1 if not ok or no plugin found",
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(command=_check)

    sub = commands.add_parser(
        "run",
        parents=[common],
        help="start every plugin and serve until Ctrl-C or SIGTERM; exit 1 if none started",
    )
    sub.add_argument("--duration", type=_duration, help="stop by itself after this many seconds")
    sub.add_argument(
        "--watch",
        action="store_true",
        help="reload a plugin when its files change (as hot_reload = true in the config does)",
    )
    sub.add_argument(
        "--metrics-port",
        type=_port,
        help="serve Prometheus metrics at http://ADDR:PORT/metrics (0: any free port); needs "
        "the helixhooks[prometheus] extra",
    )
    sub.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        help="the address --metrics-port listens on (default 127.0.0.1; 0.0.0.0 for every one)",
    )
    _add_snapshot(sub, "write the per-plugin figures there every few seconds and at exit")
    sub.set_defaults(command=_run)

    sub = commands.add_parser(
        "stats",
        parents=[common],
        help="the per-plugin figures of a `helixhooks run` (running or ended), from its snapshot",
    )
    _add_snapshot(sub, "the snapshot `helixhooks run` writes")
    sub.add_argument("--json", action="store_true", help="the snapshot as it is")
    sub.set_defaults(command=_stats)

    sub = commands.add_parser("graph", parents=[common], help="the dependency order")
    sub.add_argument("--format", choices=("text", "dot"), default="text")
    sub.set_defaults(command=_graph)

    sub = commands.add_parser(
        "info",
        parents=[common],
        help="one plugin's manifest (imports nothing); with --load, also what its helix_info says",
    )
    sub.add_argument("path", type=Path, help="a plugin directory, its plugin.toml, or a .py plugin")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_argument(
        "--load",
        action="store_true",
        help="also show what the plugin's helix_info hook returns; this runs plugin code: the "
        "configured plugins are loaded and started with it, for its dependencies",
    )
    sub.set_defaults(command=_info)
    return parser


def _merge_common(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The common options given before the command, joined with those given after it."""
    before, after = getattr(args, _TOP + "config"), args.config
    if before is not None and after is not None and before != after:
        parser.error(f"--config given twice: {before} and {after}")
    args.config = after if after is not None else before
    args.plugin_dirs = [*getattr(args, _TOP + "plugin_dirs"), *args.plugin_dirs]
    args.hookspecs = [*getattr(args, _TOP + "hookspecs"), *args.hookspecs]
    args.verbose = args.verbose or getattr(args, _TOP + "verbose")


def _config(args: argparse.Namespace) -> Config:
    config = Config.from_file(args.config) if args.config else Config.load(Path.cwd())
    changes: dict[str, Any] = {}
    if args.plugin_dirs:
        changes["plugin_dirs"] = tuple(args.plugin_dirs)
    if args.hookspecs:
        changes["hookspecs"] = (*config.hookspecs, *args.hookspecs)
    return attrs.evolve(config, **changes) if changes else config


# --- collecting what helixhooks logs, to print each problem once ---------------------------------


class _Collector(logging.Handler):
    """The warnings helixhooks itself logs (not its plugins' own loggers) while a command works."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("helixhooks.plugin."):
            return  # a plugin's own log line is the plugin's output, not a finding
        record.helix_collected = True
        self.messages.append(record.getMessage())

    def warnings(self, problems: Sequence[Problem], extra: Sequence[str] = ()) -> list[str]:
        """What was collected and is not already one of ``problems``, each once."""
        reasons = [problem.reason for problem in problems]
        fresh = [m for m in self.messages if not any(reason in m for reason in reasons)]
        return list(dict.fromkeys([*extra, *fresh]))


def _not_collected(record: logging.LogRecord) -> bool:
    # helix_event: also published as an event, which `run` prints.
    return not getattr(record, "helix_collected", False) and not getattr(
        record, "helix_event", False
    )


@contextlib.contextmanager
def _collecting() -> Iterator[_Collector]:
    collector = _Collector()
    logger = logging.getLogger(PROJECT_NAME)
    logger.addHandler(collector)
    try:
        yield collector
    finally:
        logger.removeHandler(collector)


@contextlib.contextmanager
def _plugins_print_to_stderr() -> Iterator[None]:
    """Plugin code's print() goes to stderr: stdout is the report's (the JSON's) alone."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


# --- the commands -------------------------------------------------------------------------------


def _list(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    discovery = Discovery(config)
    with _collecting() as collected:
        candidates = discovery.scan()
    problems = discovery.problems
    names = [c.info.name for c in candidates] + [p.name for p in problems if p.name]
    warnings = collected.warnings(problems, config.unknown_plugin_config(names))
    if args.json:
        _dump(
            {
                "plugins": [_candidate_data(c) for c in candidates],
                "problems": [_problem_data(p) for p in problems],
                "warnings": warnings,
            },
            out,
        )
    else:
        rows = [(c.info.name, c.info.version, c.kind, c.location) for c in candidates]
        PlainView(out).table(("NAME", "VERSION", "KIND", "SOURCE"), rows)
        if not candidates:
            print(_nothing_found(config), file=out)
        _print_warnings(warnings, out)
        _print_problems(problems, out)
    return EXIT_PROBLEMS if problems else EXIT_OK


def _check(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    with _plugins_print_to_stderr(), _collecting() as collected:
        system = PluginSystem(config)
        try:
            system.load_all()
            system.start_all()
            health = system.health()
            plugins = [_checked(system, name, health.get(name)) for name in system.names()]
        finally:
            system.stop_all()
        problems = system.problems
    names = system.names() + [p.name for p in problems if p.name]
    warnings = collected.warnings(problems, config.unknown_plugin_config(names))
    for plugin in plugins:
        warnings.extend(plugin.pop("warnings"))
    unhealthy = [p for p in plugins if not p["healthy"]]
    ok = bool(plugins) and not problems and not unhealthy
    if args.json:
        data = {"ok": ok, "plugins": plugins, "problems": [_problem_data(p) for p in problems]}
        _dump({**data, "warnings": warnings}, out)
        return EXIT_OK if ok else EXIT_PROBLEMS
    # A plugin's problem is printed once, in the list below; its row points there.
    with_problem = {p.name for p in problems}
    rows = [
        (
            p["name"],
            p["version"],
            p["state"],
            "ok" if p["healthy"] else "NOT OK",
            "see its problem below" if p["name"] in with_problem else p["message"],
        )
        for p in plugins
    ]
    PlainView(out).table(("NAME", "VERSION", "STATE", "HEALTH", "MESSAGE"), rows)
    for plugin in plugins:
        if plugin.get("layers"):
            print(f"\n{plugin['name']} runs in a worker process, confined by:", file=out)
            _print_mapping(plugin["layers"], out, indent="  ")
    for plugin in plugins:
        if plugin.get("info"):
            print(f"\n{plugin['name']} says (helix_info):", file=out)
            _print_mapping(plugin["info"], out, indent="  ")
    _print_warnings(warnings, out)
    _print_problems(problems, out)
    if not plugins and not problems:
        print(_nothing_found(config), file=out)
    elif ok:
        print("all plugins ok", file=out)
    else:
        print("problems found", file=out)
    return EXIT_OK if ok else EXIT_PROBLEMS


def _checked(system: PluginSystem, name: str, status: Any) -> dict[str, Any]:
    """One plugin's row of ``check``, taken while it is still as the check found it."""
    handle = system.get(name)
    state = status.state if status is not None else handle.state
    healthy = bool(status is not None and status.healthy)
    message = status.message if status is not None else ""
    error = handle.error
    if error is not None and not healthy and str(error) not in message:
        # A held-back plugin, say: its reason belongs in its row.
        message = f"{message}: {error}" if message else str(error)
    row: dict[str, Any] = {
        "name": name,
        "version": handle.version,
        "state": state.value,
        "healthy": healthy,
        "message": message,
    }
    layers = handle.layers
    if layers is not None:
        row["layers"] = layers
    info, warnings = _helix_info(system, name)
    if info is not None:
        row["info"] = info
    row["warnings"] = warnings
    return row


def _helix_info(system: PluginSystem, name: str) -> tuple[Any, list[str]]:
    """What a started plugin's helix_info returns (None if it has none), and warnings about it."""
    handle = system.get(name)
    if handle.state is not PluginState.STARTED or not _implements(handle.plugin, "helix_info"):
        return None, []
    try:
        info = handle.call("helix_info")
    except Exception as exc:  # noqa: BLE001 - the plugin's bug is reported as a warning
        return None, [f"plugin {name!r}: helix_info raised {type(exc).__name__}: {exc}"]
    if info is not None and not isinstance(info, Mapping):
        return None, [
            f"plugin {name!r}: helix_info returned {type(info).__name__}, not a mapping "
            "(fix: return a dict of facts about the plugin, or None)"
        ]
    return (dict(info) if info is not None else None), []


def _implements(plugin: object, hook: str) -> bool:
    """Whether ``plugin`` (a module or object) has a hookimpl for ``hook``, running none of it."""
    if plugin is None:
        return False
    marker = PROJECT_NAME + "_impl"
    for attribute in dir(plugin):
        value = inspect.getattr_static(plugin, attribute, None)
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        opts = getattr(value, marker, None) if inspect.isfunction(value) else None
        if isinstance(opts, dict) and (opts.get("specname") or attribute) == hook:
            return True
    return False


def _run(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    if args.watch:
        config = attrs.evolve(config, hot_reload=True)
    view = make_view(out)
    system = PluginSystem(config)
    starting = [True]
    unsubscribe = system.subscribe(lambda event: view.event(event, brief=starting[0]))
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    server = None
    try:
        if args.metrics_port is not None:
            # Before loading: a scrape sees plugins come up, and a busy port stops us first.
            server = _serve_metrics(system, args)
            view.text(f"serving metrics at {server.url}")
        with _collecting() as collected:
            system.load_all()
            system.start_all()
        starting[0] = False
        rows = [
            (name, system.get(name).version, system.get(name).state.value)
            for name in system.names()
        ]
        view.text()
        view.table(("NAME", "VERSION", "STATE"), rows)
        problems = system.problems
        names = system.names() + [p.name for p in problems if p.name]
        _print_warnings(collected.warnings(problems, config.unknown_plugin_config(names)), out)
        _print_problems(problems, out)
        started = sum(1 for row in rows if row[2] == PluginState.STARTED.value)
        if not started:
            view.text(
                "\nno plugin is running: "
                + ("see the problems above" if rows or problems else _nothing_found(config))
            )
            system.stop_all()
            return EXIT_PROBLEMS
        until = f"for {args.duration:g}s" if args.duration is not None else "until Ctrl-C"
        view.text(f"\n{started} plugin(s) running {until}")
        if config.hot_reload:
            watched = ", ".join(str(d) for d in config.plugin_dirs if d.is_dir())
            view.text(f"watching {watched or 'no plugin dir'} for changes")
        snapshot = args.snapshot or default_snapshot(config)
        _serve(system, view, stop, args.duration, snapshot)
        figures = stats_rows(system)  # as they were while serving, states included
        view.text("stopping")
        system.stop_all()
        view.text("\nper plugin, while it served (calls of its hooks, lifecycle hooks aside):")
        view.table(STATS_HEADER, [table_cells(row) for row in figures])
        if _snapshot(snapshot, system, view, running=False, rows=figures):
            view.text(f"figures kept in {snapshot} (helixhooks stats)")
    finally:
        # Whatever ended it (an output pipe closed, say): no plugin or worker outlives the run,
        # and the view, whose reader may be gone, tells no more.
        unsubscribe()
        system.close()
        if server is not None:
            server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def _serve(
    system: PluginSystem,
    view: PlainView,
    stop: threading.Event,
    duration: float | None,
    snapshot: Path,
) -> None:
    """Until ``stop`` is set or ``duration`` is over: make the config's run_calls on their
    interval, showing what they return, and keep the snapshot file fresh."""
    calls = _callable(system, view)
    interval = system.config.run_interval
    now = time.monotonic()
    end = math.inf if duration is None else now + duration
    next_call = next_snapshot = now
    keep_snapshot = True
    while True:
        now = time.monotonic()
        if calls and now >= next_call:
            for call in calls:
                try:
                    result = getattr(system.hook, call.hook)(**call.args)
                except Exception as exc:  # noqa: BLE001 - a plugin's error is shown, not fatal
                    view.call(call.hook, error=exc)
                else:
                    view.call(call.hook, result)
            next_call = max(next_call + interval, time.monotonic())
        if keep_snapshot and now >= next_snapshot:
            keep_snapshot = _snapshot(snapshot, system, view, running=True)
            next_snapshot = now + SNAPSHOT_EVERY
        wake = min(
            end, next_call if calls else math.inf, next_snapshot if keep_snapshot else math.inf
        )
        if now >= end or stop.wait(min(max(wake - time.monotonic(), 0.0), threading.TIMEOUT_MAX)):
            return


def _callable(system: PluginSystem, view: PlainView) -> list[HookCall]:
    """The config's run_calls that name a hook the host declares; the others are reported."""
    calls = []
    for call in system.config.run_calls:
        if getattr(system.hook, call.hook, None) is None:
            declared = ", ".join(sorted(n for n in vars(system.hook) if n not in LIFECYCLE_HOOKS))
            view.text(
                f"run_calls: no hook named {call.hook!r}, not calling it (the host's hooks: "
                f"{declared or 'none; give the hookspecs with --hookspecs'})"
            )
        else:
            calls.append(call)
    return calls


def _snapshot(
    path: Path,
    system: PluginSystem,
    view: PlainView,
    *,
    running: bool,
    rows: list[dict[str, Any]] | None = None,
) -> bool:
    """Write the snapshot; False (said once) if it cannot be written: serving goes on."""
    try:
        write_snapshot(path, system, running=running, rows=rows)
    except OSError as exc:
        view.text(
            f"cannot write the snapshot {path}: {exc.strerror}; `stats` will not see this run"
        )
        return False
    return True


def _serve_metrics(system: PluginSystem, args: argparse.Namespace) -> MetricsServer:
    try:
        from .prometheus import serve
    except ImportError as exc:
        raise HelixError(
            f"--metrics-port needs prometheus_client, which is not installed ({exc})",
            hint="pip install 'helixhooks[prometheus]'",
        ) from None
    try:
        return serve(system, args.metrics_port, args.metrics_addr)
    except OSError as exc:
        raise HelixError(
            f"cannot serve metrics on {args.metrics_addr}:{args.metrics_port}: {exc.strerror}",
            hint="pick another --metrics-port, or 0 for any free one",
        ) from exc


def _stats(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    path = args.snapshot or default_snapshot(config)
    data = read_snapshot(path)
    if args.json:
        _dump(data, out)
        return EXIT_OK
    written = time.strftime("%H:%M:%S", time.localtime(data["written_at"]))
    age = time.time() - data["written_at"]
    if not data["running"]:
        status = "the run has ended"
    elif _alive(data["pid"]):
        status = "still running"
    else:
        status = "its process is gone (killed?)"
    view = make_view(out)
    view.text(f"helixhooks run, pid {data['pid']}: {status}; figures of {written} ({age:.0f}s ago)")
    view.table(STATS_HEADER, [table_cells(row) for row in data["plugins"]])
    if not data["plugins"]:
        view.text("no plugins")
    return EXIT_OK


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process by now: alive, though maybe not ours
    return True


def _graph(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    discovery = Discovery(config)
    infos = [c.info for c in discovery.scan()]
    resolution = DependencyResolver(infos).resolve()
    by_name = {info.name: info for info in infos}
    if args.format == "dot":
        print("digraph helixhooks {", file=out)
        for name in sorted(by_name):
            info = by_name[name]
            broken = ' color="red"' if name in resolution.problems else ""
            print(f'  "{name}" [label="{name} {info.version}"{broken}];', file=out)
            for dep in info.parsed_dependencies:
                label = f' [label="{dep.constraint}"]' if dep.constraint else ""
                print(f'  "{name}" -> "{dep.name}"{label};', file=out)
        print("}", file=out)
    else:
        for position, name in enumerate(resolution.order, 1):
            info = by_name[name]
            needs = ", ".join(info.dependencies)
            print(
                f"{position:>3}. {name} {info.version}" + (f"  <- {needs}" if needs else ""),
                file=out,
            )
        for name, error in sorted(resolution.problems.items()):
            print(f"  x  {name}: {error}", file=out)
    return EXIT_PROBLEMS if resolution.problems else EXIT_OK


def _info(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    info = Discovery(config).get_info(args.path)
    data: dict[str, Any] = info.to_dict()
    problems: list[Problem] = []
    warnings: list[str] = []
    if args.load:
        extra, problems, warnings = _loaded_info(config, Path(args.path), info)
        data["helix_info"] = extra
    if args.json:
        if args.load:
            data["problems"] = [_problem_data(p) for p in problems]
            data["warnings"] = warnings
        _dump(data, out)
    else:
        _print_mapping({k: v for k, v in data.items() if k != "helix_info"}, out)
        if args.load:
            if data["helix_info"] is not None:
                print("\nhelix_info:", file=out)
                _print_mapping(data["helix_info"], out, indent="  ")
            elif not problems:
                print("\nhelix_info: (the plugin does not implement it)", file=out)
            _print_warnings(warnings, out)
            _print_problems(problems, out)
    return EXIT_PROBLEMS if problems else EXIT_OK


def _loaded_info(
    config: Config, path: Path, info: PluginInfo
) -> tuple[dict[str, Any] | None, list[Problem], list[str]]:
    """Load and start the plugin at ``path`` among the configured plugins; its helix_info.

    The configured plugin dirs are kept, so the plugin's dependencies are found; the plugin's
    own directory (a .py plugin's parent) goes first unless a scan of them finds it already.
    """
    directory = path.parent if path.name == MANIFEST or path.suffix == ".py" else path
    target = path.parent if path.name == MANIFEST else path
    with _collecting():  # this scan only looks for the plugin; the load below reports
        found = Discovery(config).scan()
    if not any(
        c.info.name == info.name
        and isinstance(c.source, Path)
        and c.source.resolve() == target.resolve()
        for c in found
    ):
        config = attrs.evolve(config, plugin_dirs=(directory, *config.plugin_dirs))
    with _plugins_print_to_stderr(), _collecting() as collected:
        system = PluginSystem(config)
        try:
            system.load_all()
            system.start_all()
            extra, warnings = _helix_info(system, info.name)
        finally:
            system.stop_all()
        problems = [p for p in system.problems if p.name == info.name]
    # The other plugins' findings are for `helixhooks check`; this is about one plugin.
    about = f"plugin {info.name!r}"
    own = [m for m in collected.warnings(problems, warnings) if about in m]
    return extra, problems, own


# --- output ---------------------------------------------------------------------------------------


def _nothing_found(config: Config) -> str:
    where = ", ".join(str(d) for d in config.plugin_dirs) or "no plugin dirs"
    group = config.entry_point_group
    points = f" nor in entry point group {group!r}" if group else ""
    return (
        f"no plugins found in {where}{points} (a plugin is a directory with {MANIFEST} or a .py "
        "file with PLUGIN_INFO; pass --plugin-dir)"
    )


def _print_mapping(data: Mapping[str, Any], out: TextIO, indent: str = "") -> None:
    if not data:
        return
    width = max(len(str(key)) for key in data)
    for key, value in data.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{indent}{key!s:<{width}}  {shown}", file=out)


def _print_warnings(warnings: Sequence[str], out: TextIO) -> None:
    if warnings:
        print(f"\n{len(warnings)} warning(s):", file=out)
        for warning in warnings:
            print(f"  {warning}", file=out)


def _print_problems(problems: Sequence[Problem], out: TextIO) -> None:
    if problems:
        print(f"\n{len(problems)} problem(s):", file=out)
        for problem in problems:
            print(f"  {problem.name or '?'}: {problem.reason}\n    at {problem.source}", file=out)


def _candidate_data(candidate: PluginCandidate) -> dict[str, Any]:
    return {
        **candidate.info.to_dict(),
        "kind": candidate.kind,
        "source": candidate.location,
        "distribution": candidate.distribution,
    }


def _problem_data(problem: Problem) -> dict[str, Any]:
    return {"source": problem.source, "name": problem.name, "reason": problem.reason}


def _dump(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, default=str)
    out.write("\n")
