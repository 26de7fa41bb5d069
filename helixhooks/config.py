"""The host's settings, from code or from helixhooks.toml / [tool.helixhooks] in pyproject.toml."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .errors import ManifestError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_FILE = "helixhooks.toml"
PYPROJECT = "pyproject.toml"


def _paths(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> tuple[Path, ...]:
    if isinstance(value, (str, os.PathLike)):
        return (Path(value),)
    return tuple(Path(item) for item in value)


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class Limits:
    """Resource limits of a process-tier worker; None means no limit."""

    memory_mb: int | None = attrs.field(default=512, validator=_positive)
    cpu_seconds: float | None = attrs.field(default=None, validator=_positive)
    open_files: int | None = attrs.field(default=256, validator=_positive)
    file_size_mb: int | None = attrs.field(default=64, validator=_positive)


def _limits(value: Limits | Mapping[str, Any]) -> Limits:
    return value if isinstance(value, Limits) else Limits(**value)


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
    isolation: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.in_(("inprocess", "process"))),
    )
    grants: dict[str, tuple[str, ...]] | None = attrs.field(
        default=None, converter=_grants, hash=False
    )
    plugin_config: dict[str, dict[str, Any]] = attrs.field(
        factory=dict, converter=_plugin_config, hash=False
    )
    limits: Limits = attrs.field(factory=Limits, converter=_limits)
    hookspecs: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def config_for(self, name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """A plugin's config: its manifest defaults with the host's table for it merged over."""
        merged = dict(defaults)
        merged.update(self.plugin_config.get(name, {}))
        return merged

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Config:
        """Read helixhooks.toml (keys at top level) or pyproject.toml ([tool.helixhooks]).

        Relative plugin_dirs are taken relative to the file's directory, not the working directory.
        """
        path = Path(path)
        try:
            with path.open("rb") as handle:
                document = tomllib.load(handle)
        except OSError as exc:
            raise ManifestError(
                f"cannot read config file: {exc.strerror}",
                path=str(path),
                hint="check the path passed as the config file",
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(
                f"config file is not valid TOML: {exc}", path=str(path), hint="fix the TOML syntax"
            ) from exc
        if path.name == PYPROJECT:
            table = document.get("tool", {}).get("helixhooks", {})
        else:
            table = document
        return cls.from_mapping(table, source=path)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, source: Path | None = None) -> Config:
        """Build from plain data, checking every key and type; errors name the key and the file."""
        where = str(source) if source else None
        if not isinstance(table, Mapping):
            raise ManifestError("helixhooks settings must be a table", path=where)
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
                    f"not {type(value).__name__} {value!r}",
                    path=where,
                    hint=f"give {key} as {_describe(expected)}",
                )
            values[key] = value
        if values.get("entry_point_group") is False:
            # TOML has no null: `entry_point_group = false` turns entry points off.
            values["entry_point_group"] = None
        if source is not None and "plugin_dirs" in values:
            values["plugin_dirs"] = [source.parent / p for p in _paths(values["plugin_dirs"])]
        if source is not None and "hookspecs" in values:
            values["hookspecs"] = [
                _relative_spec(spec, source.parent) for spec in values["hookspecs"]
            ]
        if "limits" in values:
            unknown = set(values["limits"]) - {f.name for f in attrs.fields(Limits)}
            if unknown:
                raise ManifestError(
                    f"unknown key(s) in limits: {', '.join(sorted(unknown))}",
                    path=where,
                    hint="limits takes memory_mb, cpu_seconds, open_files, file_size_mb",
                )
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"invalid config: {exc}", path=where) from exc

    @classmethod
    def load(cls, start_dir: str | os.PathLike[str] = ".") -> Config:
        """Find helixhooks.toml, or a pyproject.toml with [tool.helixhooks], walking upwards.

        With neither, the defaults apply.
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


def _has_tool_table(pyproject: Path) -> bool:
    try:
        with pyproject.open("rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        # A broken pyproject.toml that is not ours to read must not stop the search upwards.
        return False
    return isinstance(document.get("tool", {}).get("helixhooks"), Mapping)


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
    }
    if isinstance(expected, str):
        return words[expected]
    names = {int: "a number", float: "a number", bool: "true or false", str: "a string"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in expected))


def _suggest(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(_KEY_TYPES), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys are " + ", ".join(sorted(_KEY_TYPES))
