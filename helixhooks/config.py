"""The host's settings, from code or from helixhooks.toml / [tool.helixhooks] in pyproject.toml."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._entry_points import NotRegularFile, read_regular
from .errors import ManifestError, safe_repr

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_FILE = "helixhooks.toml"
PYPROJECT = "pyproject.toml"
ISOLATION_MODES = ("inprocess", "process")

logger = logging.getLogger("helixhooks.config")


def _paths(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> tuple[Path, ...]:
    if isinstance(value, (str, os.PathLike)):
        return (Path(value),)
    return tuple(Path(item) for item in value)


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    _check_number(attribute.name, value)
    # `not value > 0` also refuses nan, which every comparison answers False.
    if not value > 0 or not _finite(value):
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {safe_repr(value)}")


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    _check_number(attribute.name, value)
    if not value >= 0 or not _finite(value):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {safe_repr(value)}")


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__} {safe_repr(value)}")


def _finite(value: float) -> bool:
    """Whether ``value`` is a finite number a float can hold: seconds are added to floats."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _isolation(_instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and value not in ISOLATION_MODES:
        raise ValueError(f"{attribute.name} must be {_choices(value)}")


def _choices(value: object) -> str:
    """The allowed modes and ``value``, with a did-you-mean for a near miss."""
    allowed = " or ".join(repr(mode) for mode in ISOLATION_MODES)
    close = _close_matches(str(value), ISOLATION_MODES)
    return f"{allowed}, not {value!r}" + (f"; did you mean {close[0]!r}?" if close else "")


@attrs.frozen
class Limits:
    """Resource limits of a process-tier worker; None means no limit."""

    memory_mb: int | None = attrs.field(default=512, validator=_positive)
    cpu_seconds: float | None = attrs.field(default=None, validator=_positive)
    open_files: int | None = attrs.field(default=256, validator=_positive)
    file_size_mb: int | None = attrs.field(default=64, validator=_positive)
    #: Processes the worker may have at once, itself and its threads' tasks included.
    processes: int | None = attrs.field(default=64, validator=_positive)


def _limits(value: Limits | Mapping[str, Any]) -> Limits:
    return value if isinstance(value, Limits) else Limits(**value)


@attrs.frozen
class HookCall:
    """A hook ``helixhooks run`` calls on every tick, with these keyword arguments."""

    hook: str
    args: Mapping[str, Any] = attrs.field(factory=dict, converter=dict, hash=False)


def _hook_calls(value: Iterable[HookCall | Mapping[str, Any]]) -> tuple[HookCall, ...]:
    return tuple(call if isinstance(call, HookCall) else HookCall(**call) for call in value)


def _plugin_config(value: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: dict(table) for name, table in value.items()}


def _grants(value: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]] | None:
    if value is None:
        return None
    return {name: tuple(perms) for name, perms in value.items()}


@attrs.frozen
class Config:
    """Everything the host decides; plugins decide nothing here.

    ``isolation=None`` runs each plugin as its manifest says; ``grants=None`` gives each plugin what
    its manifest requests, else ``grants[name]`` (or ``grants["*"]``) bounds it.
    ``entry_point_group=None`` turns entry-point discovery off.
    ``health_interval``: check every plugin this often while started, restarting one that stays
    unhealthy (see health.HealthMonitor); None checks only when asked.
    ``hookspecs`` names the host's hookspec classes or modules as ``"module:Attr"`` or
    ``"file.py:Attr"`` (relative to the config file), for hosts that configure, not code.
    Process plugins: ``limits`` bound each worker; ``strict`` refuses to start one whose needed
    confinement layer this machine lacks (see Sandbox.capabilities) rather than run it less
    confined; ``data_dir`` holds each plugin's own directory (its worker's working directory),
    by default ``helixhooks-<uid>`` in the temporary directory.
    ``run_calls`` are hooks ``helixhooks run`` calls every ``run_interval`` seconds, showing
    what they return: the command's stand-in for a host's own work.
    """

    plugin_dirs: tuple[Path, ...] = attrs.field(default=(Path("./plugins"),), converter=_paths)
    hot_reload: bool = False
    watch_interval: float = attrs.field(default=1.0, validator=_positive)
    load_timeout: float = attrs.field(default=30.0, validator=_positive)
    sandbox_enabled: bool = True
    entry_point_group: str | None = "helixhooks.plugins"
    debounce: float = attrs.field(default=0.2, validator=_non_negative)
    health_timeout: float = attrs.field(default=5.0, validator=_positive)
    health_interval: float | None = attrs.field(default=None, validator=_positive)
    call_timeout: float | None = attrs.field(default=None, validator=_positive)
    isolation: str | None = attrs.field(default=None, validator=_isolation)
    grants: dict[str, tuple[str, ...]] | None = attrs.field(
        default=None, converter=_grants, hash=False
    )
    plugin_config: dict[str, dict[str, Any]] = attrs.field(
        factory=dict, converter=_plugin_config, hash=False
    )
    limits: Limits = attrs.field(factory=Limits, converter=_limits)
    hookspecs: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    strict: bool = False
    data_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    run_calls: tuple[HookCall, ...] = attrs.field(default=(), converter=_hook_calls)
    run_interval: float = attrs.field(default=1.0, validator=_positive)

    def config_for(self, name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """A plugin's config: its manifest defaults with the host's table for it merged over.

        Tables merge deeply: a host's ``conn.port`` keeps the manifest's ``conn.host``. Any other
        value (a list included) the host gives replaces the default whole.
        """
        return _deep_merge(defaults, self.plugin_config.get(name, {}))

    def unknown_plugin_config(self, names: Iterable[str]) -> list[str]:
        """A warning for each ``plugin_config`` table naming none of the plugins in ``names``.

        Such a table is almost always a typo or a plugin that is not installed; its settings reach
        nobody. Each warning names the table and, for a near miss, the plugin it may mean.
        """
        known = sorted(set(names))
        warnings = []
        for table in sorted(self.plugin_config):
            if table in known:
                continue
            close = _close_matches(table, known)
            fix = f"did you mean {close[0]!r}?" if close else "remove it, or add the plugin"
            warnings.append(
                f"[plugin_config.{table}] configures a plugin that does not exist ({fix})"
            )
        return warnings

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Config:
        """Read helixhooks.toml (keys at top level) or pyproject.toml ([tool.helixhooks]).

        Relative plugin_dirs are taken relative to the file's directory, not the working directory.
        """
        path = Path(path)
        document = _read_toml(path)
        if path.name == PYPROJECT:
            tool = document.get("tool", {})
            if not isinstance(tool, Mapping):
                raise ManifestError(
                    f"'tool' must be a table, not {type(tool).__name__} {safe_repr(tool):.40}",
                    path=str(path),
                    hint="write the settings under a [tool.helixhooks] table",
                )
            table = tool.get("helixhooks", {})
        else:
            table = document
        return cls.from_mapping(table, source=path)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, source: Path | None = None) -> Config:
        """Build from plain data, checking every key and type; errors name the key and the file."""
        where = str(source) if source else None
        if not isinstance(table, Mapping):
            raise ManifestError(
                f"helixhooks settings must be a table, not {type(table).__name__}",
                path=where,
                hint="write them as a [tool.helixhooks] table"
                if source is not None and source.name == PYPROJECT
                else "write them as key = value lines",
            )
        values: dict[str, Any] = {}
        for key, value in table.items():
            expected = _KEY_TYPES.get(key)
            if expected is None:
                raise ManifestError(
                    f"unknown config key {key!r}",
                    path=where,
                    hint=_suggest(key),
                )
            if not _is_instance(value, expected):
                raise ManifestError(
                    f"config key {key!r} must be {_describe(expected)}, "
                    f"not {type(value).__name__} {safe_repr(value)}",
                    path=where,
                    hint=f"give {key} as {_describe(expected)}",
                )
            _check_value(key, value, where)
            values[key] = value
        if values.get("entry_point_group") is False:
            # TOML has no null: `entry_point_group = false` turns entry points off.
            values["entry_point_group"] = None
        if source is not None and "plugin_dirs" in values:
            values["plugin_dirs"] = [source.parent / p for p in _paths(values["plugin_dirs"])]
        if source is not None and "data_dir" in values:
            values["data_dir"] = source.parent / values["data_dir"]
        if source is not None and "hookspecs" in values:
            values["hookspecs"] = [
                _relative_spec(spec, source.parent) for spec in values["hookspecs"]
            ]
        if "limits" in values:
            _check_limits(values["limits"], where)
        if "run_calls" in values:
            _check_calls(values["run_calls"], where)
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"invalid config: {exc}", path=where) from exc

    @classmethod
    def load(cls, start_dir: str | os.PathLike[str] = ".") -> Config:
        """Find helixhooks.toml, or a pyproject.toml with [tool.helixhooks], walking upwards.

        With neither, the defaults apply.

        A pyproject.toml that cannot be read or parsed (not UTF-8, not TOML) may belong to any
        project above the start directory: it is skipped with a warning on the
        ``helixhooks.config`` logger, and the search goes on. One that has a ``[tool.helixhooks]``
        key is ours, and its faults are errors.
        """
        directory = Path(start_dir).resolve()
        for candidate in (directory, *directory.parents):
            own = candidate / CONFIG_FILE
            if own.is_file():
                return cls.from_file(own)
            pyproject = candidate / PYPROJECT
            if pyproject.is_file() and _has_tool_table(pyproject):
                return cls.from_file(pyproject)
        return cls()


def _relative_spec(spec: str, base: Path) -> str:
    target, sep, attr = spec.partition(":")
    if target.endswith(".py") and not Path(target).is_absolute():
        return f"{base / target}{sep}{attr}"
    return spec


def _read_toml(path: Path) -> dict[str, Any]:
    """A config file's TOML document; every way it can fail is a ManifestError naming it."""
    try:
        # A FIFO or a device would block or never end; only a regular file is read.
        document: dict[str, Any] = tomllib.loads(read_regular(path).decode())
    except NotRegularFile as exc:
        raise ManifestError(
            f"config file is a {exc.kind}, not a regular file",
            path=str(path),
            hint="point to a helixhooks.toml or pyproject.toml file",
        ) from exc
    except OSError as exc:
        raise ManifestError(
            f"cannot read config file: {exc.strerror}",
            path=str(path),
            hint="check the path passed as the config file",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"config file is not UTF-8 text: {exc.reason} at byte {exc.start}",
            path=str(path),
            hint="save the file as UTF-8 (TOML files must be UTF-8)",
        ) from exc
    except ValueError as exc:
        # tomllib.TOMLDecodeError, or int() refusing an integer of thousands of digits (which
        # TOML's 64-bit integers do not allow anyway).
        raise ManifestError(
            f"config file is not valid TOML: {exc}", path=str(path), hint="fix the TOML syntax"
        ) from exc
    except RecursionError as exc:
        raise ManifestError(
            "config file is not valid TOML: arrays or inline tables are nested too deeply to read",
            path=str(path),
            hint="nest them less deeply",
        ) from exc
    return document


def _has_tool_table(pyproject: Path) -> bool:
    """Whether a pyproject.toml met on the way up holds helixhooks settings.

    One that cannot be read is skipped with a warning: it may be any project's, and must not stop
    every command. A ``tool.helixhooks`` of the wrong type counts as ours, so it is reported.
    """
    try:
        document = _read_toml(pyproject)
    except ManifestError as exc:
        logger.warning("skipping %s while looking for [tool.helixhooks]: %s", pyproject, exc)
        return False
    tool = document.get("tool")
    return isinstance(tool, Mapping) and "helixhooks" in tool


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


# Each duration key and an example value for its hint.
_DURATIONS = {
    "watch_interval": 1,
    "load_timeout": 30,
    "debounce": 0.2,
    "health_timeout": 5,
    "health_interval": 10,
    "call_timeout": 5,
    "run_interval": 2,
}
_LIMIT_TYPES: dict[str, tuple[type, ...]] = {
    "memory_mb": (int,),
    "cpu_seconds": (int, float),
    "open_files": (int,),
    "file_size_mb": (int,),
    "processes": (int,),
}


def _check_value(key: str, value: Any, where: str | None) -> None:
    """What a key's type allows but its meaning does not: non-finite times, unknown modes."""
    if key in _DURATIONS:
        if not _finite(value) or value < 0 or (key != "debounce" and value == 0):
            bound = ">= 0" if key == "debounce" else "> 0"
            leave_out = (
                f"; leave {key} out for none" if key in ("health_interval", "call_timeout") else ""
            )
            raise ManifestError(
                f"config key {key!r} must be a finite number of seconds {bound}, "
                f"got {safe_repr(value)}",
                path=where,
                hint=f"give {key} in seconds, e.g. {key} = {_DURATIONS[key]}{leave_out}",
            )
    elif key == "isolation" and value not in ISOLATION_MODES:
        raise ManifestError(
            f"config key 'isolation' must be {_choices(value)}",
            path=where,
            hint="set isolation to 'inprocess' or 'process', or leave it out to use each "
            "plugin's manifest",
        )


def _check_limits(limits: Mapping[str, Any], where: str | None) -> None:
    for key, value in limits.items():
        expected = _LIMIT_TYPES.get(key)
        if expected is None:
            close = _close_matches(str(key), list(_LIMIT_TYPES))
            raise ManifestError(
                f"unknown key 'limits.{key}'",
                path=where,
                hint=(f"did you mean {close[0]!r}? " if close else "")
                + "limits takes "
                + ", ".join(_LIMIT_TYPES),
            )
        whole = expected == (int,)
        kind = "a whole number" if whole else "a number"
        if (
            isinstance(value, bool)
            or not isinstance(value, expected)
            or not isinstance(value, (int, float))
        ):
            raise ManifestError(
                f"config key 'limits.{key}' must be {kind}, not {type(value).__name__} "
                f"{safe_repr(value)}",
                path=where,
                hint=f"give limits.{key} as {kind} > 0, or leave it out for the default",
            )
        if not _finite(value) or value <= 0:
            raise ManifestError(
                f"config key 'limits.{key}' must be {kind} > 0, got {safe_repr(value)}",
                path=where,
                hint=f"give limits.{key} as {kind} > 0, or leave it out for the default",
            )


def _check_calls(calls: list[Mapping[str, Any]], where: str | None) -> None:
    example = 'write each as [[run_calls]] with hook = "name" and args = { key = value }'
    for position, call in enumerate(calls, 1):
        unknown = sorted(set(call) - {"hook", "args"})
        if unknown:
            raise ManifestError(
                f"run_calls entry {position} has unknown key(s): {', '.join(map(repr, unknown))}",
                path=where,
                hint=example,
            )
        if not isinstance(call.get("hook"), str):
            raise ManifestError(
                f'run_calls entry {position} needs hook = "name" (a string)',
                path=where,
                hint=example,
            )
        if not isinstance(call.get("args", {}), Mapping):
            raise ManifestError(
                f"run_calls entry {position}: args must be a table of keyword arguments",
                path=where,
                hint=example,
            )


_NUMBER = (int, float)
_KEY_TYPES: dict[str, tuple[type, ...] | str] = {
    "plugin_dirs": "paths",
    "hot_reload": (bool,),
    "watch_interval": _NUMBER,
    "load_timeout": _NUMBER,
    "sandbox_enabled": (bool,),
    "entry_point_group": (str, bool),
    "debounce": _NUMBER,
    "health_timeout": _NUMBER,
    "health_interval": _NUMBER,
    "call_timeout": _NUMBER,
    "isolation": (str,),
    "grants": "grants",
    "plugin_config": "tables",
    "limits": "table",
    "hookspecs": "strings",
    "strict": (bool,),
    "data_dir": (str,),
    "run_calls": "list of tables",
    "run_interval": _NUMBER,
}


def _is_instance(value: Any, expected: tuple[type, ...] | str) -> bool:
    if expected == "paths":
        return isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        )
    if expected == "strings":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if expected == "grants":
        return isinstance(value, Mapping) and all(
            isinstance(perms, list) and all(isinstance(p, str) for p in perms)
            for perms in value.values()
        )
    if expected == "tables":
        return isinstance(value, Mapping) and all(isinstance(t, Mapping) for t in value.values())
    if expected == "table":
        return isinstance(value, Mapping)
    if expected == "list of tables":
        return isinstance(value, list) and all(isinstance(t, Mapping) for t in value)
    assert isinstance(expected, tuple)
    # bool is an int subclass; a number key given `true` is a mistake, not 1.
    if isinstance(value, bool) and bool not in expected:
        return False
    if value is True and expected == (str, bool):
        return False
    return isinstance(value, expected)


def _describe(expected: tuple[type, ...] | str) -> str:
    words = {
        "paths": "a path or a list of paths",
        "grants": "a table of plugin name -> list of permissions",
        "tables": "a table of plugin name -> table",
        "table": "a table",
        "strings": "a list of strings",
        "list of tables": "a list of tables",
    }
    if isinstance(expected, str):
        return words[expected]
    names = {int: "a number", float: "a number", bool: "true or false", str: "a string"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in expected))


def _close_matches(word: str, options: Iterable[str]) -> list[str]:
    """The best near miss of ``word`` among ``options``, for a "did you mean" (maybe none)."""
    # Imported here: only a mistake needs it, and every host imports this module.
    import difflib

    return difflib.get_close_matches(word, list(options), n=1)


def _suggest(key: str) -> str:
    close = _close_matches(key, list(_KEY_TYPES))
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys are " + ", ".join(sorted(_KEY_TYPES))
