"""What a plugin is: its manifest (PluginInfo), its lifecycle state and the context it is handed."""

from __future__ import annotations

import enum
import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
import pluggy

from .errors import ManifestError, VersionError, safe_repr
from .versioning import parse_constraint, parse_version_uncached

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
# The name is greedy: a constraint must be set off by spaces or start with an operator.
_DEPENDENCY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.\-]{0,127})(?:\s+|(?=[\^~<>=!*|])|$)(.*)", re.S)
_ENTRY = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?")

ISOLATION_MODES = ("inprocess", "process")


class PluginState(enum.Enum):
    """Where a plugin is in its life; see lifecycle.TRANSITIONS for the allowed moves."""

    DISCOVERED = "discovered"
    RESOLVED = "resolved"
    LOADED = "loaded"
    INITIALIZED = "initialized"
    STARTED = "started"
    STOPPED = "stopped"
    FAILED = "failed"
    UNLOADED = "unloaded"


@attrs.frozen
class Dependency:
    """One ``dependencies`` entry: a plugin name and an optional version constraint."""

    name: str
    constraint: str | None = None

    @classmethod
    def parse(cls, text: object, *, plugin: str | None = None) -> Dependency:
        """Parse ``"name"``, ``"name ^1.2"`` or ``"name>=1,<2"``; a bad entry is a ManifestError."""
        if not isinstance(text, str):
            raise ManifestError(
                f"dependency entry {safe_repr(text)} is not a string",
                plugin=plugin,
                hint="write entries like 'tokenizer' or 'tokenizer ^1.0' or 'cache >=2,<3'",
            )
        try:
            return _parse_dependency(text)
        except ManifestError as exc:
            raise ManifestError(exc.message, plugin=plugin, hint=exc.hint) from exc.__cause__

    def __str__(self) -> str:
        return f"{self.name} {self.constraint}" if self.constraint else self.name


# Many plugins repeat the same entries ("tokenizer ^1.0"); discovery of thousands of manifests
# parses each distinct one once. Failures are not cached: they name the plugin at fault.
@functools.lru_cache(maxsize=4096)
def _parse_dependency(text: str) -> Dependency:
    match = _DEPENDENCY.fullmatch(text)
    if match is None or not match.group(1):
        raise ManifestError(
            f"dependency entry {text!r} is not 'name' or 'name constraint'",
            hint="write entries like 'tokenizer' or 'tokenizer ^1.0' or 'cache >=2,<3'",
        )
    name, rest = match.group(1), match.group(2).strip()
    if not rest:
        return Dependency(name)
    try:
        constraint = parse_constraint(rest)
    except VersionError as exc:
        raise ManifestError(
            f"dependency {name!r} has an invalid constraint {rest!r}: {exc.message}",
            hint="use an npm range (^1.2, ~1.2.3, >=1 <2) or a PEP 440 specifier (>=1,<2)",
        ) from exc
    # The parsed constraint's own text (equal to ``rest``): every dependency with the same
    # constraint then shares one string, not a copy per manifest entry.
    return Dependency(name, constraint.text)


@functools.cache
def _permission_syntax() -> Callable[..., object]:
    """security.check_syntax, imported on first use: the Sandbox's module may import this one."""
    # Cached: an import statement per manifest costs more than checking its permissions.
    from .security import check_syntax

    return check_syntax


def _tuple_of_str(value: Iterable[str] | str) -> tuple[str, ...]:
    # A bare string would otherwise be split into characters.
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


@attrs.frozen
class PluginInfo:
    """A plugin's manifest: everything known about it without importing its code."""

    name: str
    version: str
    description: str = ""
    author: str = ""
    dependencies: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    capabilities: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    permissions: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    requires: str | None = None
    isolation: str = "inprocess"
    entry: str | None = None
    config: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)
    # Validation parses every entry anyway; keeping the result saves the resolver re-parsing
    # tens of thousands of entries on a large graph.
    _parsed_dependencies: tuple[Dependency, ...] = attrs.field(
        init=False, eq=False, repr=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        self._check_strings()
        name = self.name
        if not NAME_PATTERN.fullmatch(name):
            raise ManifestError(
                f"name {name!r} is not a valid plugin name",
                plugin=name or None,
                hint="use letters, digits, '_', '-' and '.', starting with a letter or '_'",
            )
        try:
            parse_version_uncached(self.version)
        except VersionError as exc:
            raise ManifestError(
                f"version {self.version!r} is not a valid version: {exc.message}",
                plugin=name,
                hint="use SemVer (1.2.3) or PEP 440 (1.2, 1.0rc1)",
            ) from exc
        object.__setattr__(
            self,
            "_parsed_dependencies",
            tuple(Dependency.parse(entry, plugin=name) for entry in self.dependencies),
        )
        if self.permissions:
            # Syntax only: paths are resolved against the plugin's directory when it loads.
            check = _permission_syntax()
            for permission in self.permissions:
                check(permission, plugin=name)
        if self.requires is not None:
            try:
                parse_constraint(self.requires)
            except VersionError as exc:
                raise ManifestError(
                    f"requires {self.requires!r} is not a valid constraint: {exc.message}",
                    plugin=name,
                    hint="give the helixhooks API versions as a range, e.g. '>=0.1'",
                ) from exc
        if self.isolation not in ISOLATION_MODES:
            allowed = " or ".join(repr(mode) for mode in ISOLATION_MODES)
            raise ManifestError(
                f"isolation must be {allowed}, not {self.isolation!r}",
                plugin=name,
                hint=_did_you_mean([self.isolation], ISOLATION_MODES)
                + f"set isolation to {allowed}",
            )
        if self.entry is not None and not _ENTRY.fullmatch(self.entry):
            raise ManifestError(
                f"entry {self.entry!r} is not 'module' or 'module:attribute'",
                plugin=name,
                hint="write entry like 'plugin' or 'plugin:Analyzer'",
            )

    def _check_strings(self) -> None:
        for field in ("name", "version", "description", "author", "isolation"):
            value = getattr(self, field)
            if not isinstance(value, str):
                raise ManifestError(
                    f"{field} must be a string, not {type(value).__name__}",
                    plugin=self.name if isinstance(self.name, str) else None,
                    hint=f"quote the {field} value in the manifest",
                )
        for field in ("requires", "entry"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise ManifestError(
                    f"{field} must be a string, not {type(value).__name__}",
                    plugin=self.name,
                    hint=f"quote the {field} value in the manifest",
                )
        for field in ("dependencies", "capabilities", "permissions"):
            for item in getattr(self, field):
                if not isinstance(item, str):
                    raise ManifestError(
                        f"{field} must be a list of strings; {safe_repr(item)} is not a string",
                        plugin=self.name,
                        hint=f"write {field} as a list of quoted strings",
                    )
        if not isinstance(self.config, Mapping):
            raise ManifestError(
                "config must be a table", plugin=self.name, hint="write [config] as a TOML table"
            )

    @property
    def parsed_dependencies(self) -> tuple[Dependency, ...]:
        return self._parsed_dependencies

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str | None = None) -> PluginInfo:
        """Build from a manifest table; an unknown key or a missing name/version is an error."""
        if not isinstance(data, Mapping):
            raise ManifestError(
                f"manifest must be a table, not {type(data).__name__}",
                path=source,
                hint="write the manifest as a [plugin] table",
            )
        name = data.get("name")
        plugin = name if isinstance(name, str) else None
        unknown = sorted(str(key) for key in set(data) - _FIELDS)
        if unknown:
            raise ManifestError(
                f"unknown manifest key(s): {', '.join(unknown)}",
                plugin=plugin,
                path=source,
                hint=_did_you_mean(unknown, _FIELDS)
                + "known keys are "
                + ", ".join(sorted(_FIELDS)),
            )
        for required in ("name", "version"):
            if required not in data:
                raise ManifestError(
                    f"manifest has no {required!r}",
                    plugin=plugin,
                    path=source,
                    hint=f'add {required} = "..." to the manifest',
                )
        for field in ("dependencies", "capabilities", "permissions"):
            value = data.get(field, ())
            if not isinstance(value, (list, tuple)):
                raise ManifestError(
                    f"{field} must be a list of strings, not {type(value).__name__}",
                    plugin=plugin,
                    path=source,
                    hint=f'write {field} = ["..."]',
                )
        if not isinstance(data.get("config", {}), Mapping):
            raise ManifestError(
                "config must be a table",
                plugin=plugin,
                path=source,
                hint="write the plugin's defaults as a [config] table",
            )
        try:
            return cls(**dict(data))
        except ManifestError as exc:
            if source and exc.path is None:
                raise ManifestError(
                    exc.message, plugin=exc.plugin, path=source, hint=exc.hint
                ) from exc
            raise

    def to_dict(self) -> dict[str, Any]:
        """Plain data that from_mapping reads back to an equal PluginInfo."""
        out: dict[str, Any] = {"name": self.name, "version": self.version}
        for field in attrs.fields(PluginInfo):
            if field.name in out or not field.init:
                continue
            value = getattr(self, field.name)
            if value == field.default or (field.name == "config" and not value):
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif field.name == "config":
                value = dict(value)
            out[field.name] = value
        return out


_FIELDS = frozenset(field.name for field in attrs.fields(PluginInfo) if field.init)


def _did_you_mean(words: Sequence[str], known: Iterable[str]) -> str:
    """ "did you mean 'x'? " for the words of ``words`` with a near miss in ``known``; else ""."""
    # Imported here: only a mistake needs it.
    import difflib

    options = sorted(known)
    guesses = []
    for word in words:
        close = difflib.get_close_matches(word, options, n=1)
        if close:
            prefix = f"for {word!r}, " if len(words) > 1 else ""
            guesses.append(f"{prefix}did you mean {close[0]!r}? ")
    return "".join(guesses)


def _optional_fspath(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


@attrs.frozen
class PluginContext:
    """What a plugin's lifecycle hooks are handed: its identity, merged config and a logger.

    ``hook`` is the host's hook relay, so a plugin can call the capabilities of the plugins it
    depends on (which are started before it). ``handover`` is True in the ``helix_stop`` of a
    generation that another generation of the same plugin takes over from (the new one after a
    reload, the old one again after a reload rolled back): what passed between them through
    ``helix_save_state``/``helix_restore_state`` is no longer this generation's to release.
    """

    name: str
    version: str
    config: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)
    # ``path`` as its string: most plugins never read it, and a Path made for every lifecycle
    # call would parse and intern its parts each time (see _source_value).
    _path: str | None = attrs.field(default=None, alias="path", converter=_optional_fspath)
    hook: pluggy.HookRelay | None = attrs.field(default=None, eq=False, hash=False, repr=False)
    handover: bool = False

    @property
    def path(self) -> Path | None:
        """The plugin's directory or .py file; None for an entry point."""
        return Path(self._path) if self._path is not None else None

    @property
    def logger(self) -> logging.Logger:
        """``helixhooks.plugin.<name>``: made on first use, as most plugins never log."""
        return logging.getLogger(f"helixhooks.plugin.{self.name}")


TRANSITIONS: Mapping[PluginState, frozenset[PluginState]] = {
    PluginState.DISCOVERED: frozenset(
        {PluginState.RESOLVED, PluginState.LOADED, PluginState.FAILED, PluginState.UNLOADED}
    ),
    PluginState.RESOLVED: frozenset({PluginState.LOADED, PluginState.FAILED, PluginState.UNLOADED}),
    PluginState.LOADED: frozenset(
        {PluginState.INITIALIZED, PluginState.FAILED, PluginState.UNLOADED}
    ),
    # A plugin not serving may have its code replaced by a reload: LOADED again, to be inited.
    PluginState.INITIALIZED: frozenset(
        {
            PluginState.LOADED,
            PluginState.STARTED,
            PluginState.STOPPED,
            PluginState.FAILED,
            PluginState.UNLOADED,
        }
    ),
    PluginState.STARTED: frozenset({PluginState.STOPPED, PluginState.FAILED}),
    PluginState.STOPPED: frozenset(
        {
            PluginState.LOADED,
            PluginState.STARTED,
            PluginState.INITIALIZED,
            PluginState.FAILED,
            PluginState.UNLOADED,
        }
    ),
    # A failed plugin may be retried (re-init, or re-load after its files change) or dropped.
    PluginState.FAILED: frozenset(
        {PluginState.LOADED, PluginState.INITIALIZED, PluginState.STOPPED, PluginState.UNLOADED}
    ),
    PluginState.UNLOADED: frozenset(),
}


@attrs.frozen
class PluginEvent:
    """Something that happened to a plugin, as delivered to PluginSystem.subscribe callbacks.

    kind: loaded, started, stopped, failed, reloaded, reload_failed, unloaded,
    permission_denied, worker_crashed, held_back (a dependency failed), and health_failed,
    restarted, health_recovered from the health monitor.
    """

    kind: str
    name: str
    version: str | None = None
    error: BaseException | None = attrs.field(default=None, eq=False)
    duration: float | None = None


EventCallback = Callable[[PluginEvent], None]


def deliver(callback: EventCallback | None, event: PluginEvent, logger: logging.Logger) -> None:
    """Hand ``event`` to ``callback``; a subscriber's bug is logged, never raised at the sender.

    Events come from the lifecycle, the health monitor and the system in the middle of their
    work, which a failing subscriber must not break.
    """
    if callback is None:
        return
    try:
        callback(event)
    except Exception:
        logger.exception("event subscriber failed on %s (subscriber %r)", event, callback)


@attrs.frozen
class Problem:
    """A plugin that could not be discovered, resolved or loaded, and why."""

    source: str
    name: str | None
    reason: str
    error: BaseException | None = attrs.field(default=None, eq=False, repr=False)


CandidateKind = Literal["directory", "file", "entry_point"]


def _source_value(source: str | os.PathLike[str] | EntryPoint) -> str | EntryPoint:
    # A path is kept as its string (a string as given): every loaded plugin keeps its
    # candidate, and a Path would keep its parsed parts too, and once turned into a string that
    # string as well (about 1 KiB per plugin on Python 3.13).
    if isinstance(source, os.PathLike):
        return os.fspath(source)
    return source


@attrs.frozen
class PluginCandidate:
    """A discovered plugin, not yet imported.

    ``source`` is the plugin's directory (kind "directory"), its .py file ("file"), or the
    entry point ("entry_point"); ``distribution`` names an entry point's installed distribution.
    """

    info: PluginInfo
    # ``source`` as given, but a path as its string (see _source_value); ``source`` reads it.
    _source: str | EntryPoint = attrs.field(alias="source", converter=_source_value)
    kind: CandidateKind
    distribution: str | None = None

    @property
    def source(self) -> Path | EntryPoint:
        """The plugin's directory or .py file, or its entry point."""
        source = self._source
        return Path(source) if isinstance(source, str) else source

    @property
    def fspath(self) -> str | None:
        """``os.fspath(source)``, without making a Path; None for an entry point."""
        source = self._source
        return source if isinstance(source, str) else None

    @property
    def entry_point(self) -> EntryPoint | None:
        """``source`` if it is an entry point, else None (no Path made)."""
        source = self._source
        return None if isinstance(source, str) else source

    @property
    def location(self) -> str:
        """Where the plugin comes from, for messages."""
        source = self._source
        if isinstance(source, str):
            return source
        return f"entry point {source.group}:{source.name} = {source.value}"
