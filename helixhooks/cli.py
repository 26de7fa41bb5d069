"""The ``helixhooks`` command: list, check, run, graph and info for hosts and plugin authors."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from . import __version__
from .config import Config
from .dependencies import DependencyResolver
from .discovery import Discovery
from .errors import HelixError
from .plugin import PluginCandidate, PluginEvent, PluginState, Problem
from .system import PluginSystem

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        config = _config(args)
        result: int = args.command(config, args, sys.stdout)
    except HelixError as exc:
        print(f"helixhooks: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return result


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, help="helixhooks.toml or pyproject.toml (default: found upwards)"
    )
    common.add_argument(
        "--plugin-dir",
        dest="plugin_dirs",
        action="append",
        type=Path,
        help="a plugin directory; repeatable; replaces the config's plugin_dirs",
    )
    common.add_argument(
        "--hookspecs",
        action="append",
        default=[],
        help="the host's hookspecs as module:Class or file.py:Class; repeatable",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    parser = argparse.ArgumentParser(
        prog="helixhooks", description="Find, check and run helixhooks plugins."
    )
    parser.add_argument("--version", action="version", version=f"helixhooks {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    sub = commands.add_parser(
        "list", parents=[common], help="discovered plugins and problems (imports nothing)"
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(command=_list)

    sub = commands.add_parser(
        "check",
        parents=[common],
        help="resolve, load, init, start and health-check; exit 1 if not ok",
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(command=_check)

    sub = commands.add_parser(
        "run", parents=[common], help="start every plugin and serve until Ctrl-C or SIGTERM"
    )
    sub.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    sub.set_defaults(command=_run)

    sub = commands.add_parser("graph", parents=[common], help="the dependency order")
    sub.add_argument("--format", choices=("text", "dot"), default="text")
    sub.set_defaults(command=_graph)

    sub = commands.add_parser(
        "info", parents=[common], help="one plugin's manifest (imports nothing)"
    )
    sub.add_argument("path", type=Path, help="a plugin directory, its plugin.toml, or a .py plugin")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(command=_info)
    return parser


def _config(args: argparse.Namespace) -> Config:
    config = Config.from_file(args.config) if args.config else Config.load(Path.cwd())
    changes: dict[str, Any] = {}
    if args.plugin_dirs:
        changes["plugin_dirs"] = tuple(args.plugin_dirs)
    if args.hookspecs:
        changes["hookspecs"] = (*config.hookspecs, *args.hookspecs)
    return attrs.evolve(config, **changes) if changes else config


def _list(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    discovery = Discovery(config)
    candidates = discovery.scan()
    if args.json:
        _dump(
            {
                "plugins": [_candidate_data(c) for c in candidates],
                "problems": [_problem_data(p) for p in discovery.problems],
            },
            out,
        )
    else:
        rows = [(c.info.name, c.info.version, c.kind, c.location) for c in candidates]
        _table(("NAME", "VERSION", "KIND", "SOURCE"), rows, out)
        _print_problems(discovery.problems, out)
    return EXIT_PROBLEMS if discovery.problems else EXIT_OK


def _check(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    system = PluginSystem(config)
    system.load_all()
    system.start_all()
    try:
        health = system.health()
    finally:
        system.stop_all()
    problems = system.problems
    plugins: list[dict[str, Any]] = []
    for name in system.names():
        handle = system.get(name)
        status = health.get(name)
        plugins.append(
            {
                "name": name,
                "version": handle.version,
                "state": handle.state.value,
                "healthy": bool(status and status.healthy),
                "message": status.message if status else "",
            }
        )
    unhealthy = [p for p in plugins if not p["healthy"]]
    ok = not problems and not unhealthy
    if args.json:
        _dump({"ok": ok, "plugins": plugins, "problems": [_problem_data(p) for p in problems]}, out)
    else:
        rows = [
            (p["name"], p["version"], "ok" if p["healthy"] else "NOT OK", p["message"])
            for p in plugins
        ]
        _table(("NAME", "VERSION", "HEALTH", "MESSAGE"), rows, out)
        _print_problems(problems, out)
        print("all plugins ok" if ok else "problems found", file=out)
    return EXIT_OK if ok else EXIT_PROBLEMS


def _run(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    system = PluginSystem(config)
    system.subscribe(lambda event: _print_event(event, out))
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        system.load_all()
        system.start_all()
        rows = [
            (name, system.get(name).version, system.get(name).state.value)
            for name in system.names()
        ]
        print(file=out)
        _table(("NAME", "VERSION", "STATE"), rows, out)
        _print_problems(system.problems, out)
        started = sum(1 for row in rows if row[2] == PluginState.STARTED.value)
        until = f"for {args.duration:g}s" if args.duration is not None else "until Ctrl-C"
        print(f"\n{started} plugin(s) running {until}", file=out, flush=True)
        stop.wait(args.duration)
        print("stopping", file=out, flush=True)
        system.stop_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


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
    data = info.to_dict()
    if args.json:
        _dump(data, out)
    else:
        width = max(len(key) for key in data)
        for key, value in data.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key:<{width}}  {shown}", file=out)
    return EXIT_OK


def _print_event(event: PluginEvent, out: TextIO) -> None:
    took = f"  ({event.duration * 1000:.1f} ms)" if event.duration is not None else ""
    line = f"{time.strftime('%H:%M:%S')} {event.kind:<8} {event.name} {event.version or ''}{took}"
    if event.error is not None:
        line += f"\n           {event.error}"
    print(line, file=out, flush=True)


def _print_problems(problems: Sequence[Problem], out: TextIO) -> None:
    if problems:
        print(f"\n{len(problems)} problem(s):", file=out)
        for problem in problems:
            print(f"  {problem.name or '?'}: {problem.reason}\n    at {problem.source}", file=out)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=out)


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
