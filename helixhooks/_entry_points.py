"""Installed distributions' entry points as plugin candidates, read from metadata alone.

An entry point in the plugin group names the plugin and where its code is; the distribution's
metadata gives version, summary and author. A ``plugin.toml`` shipped in the entry module's
top-level package (the one nearest to the module) adds dependencies, capabilities, permissions,
requires, isolation and config. Its name and version, if given, must agree with the metadata; its
description and author only fill gaps in the metadata; its entry is ignored, as the entry point
says where the code is.

The manifest is found through the distribution's file list, or, for an editable install whose
files list only a path hook, through ``importlib.util.find_spec`` of the top-level package, which
locates it without running it. Nothing is imported (decision 1, "Manifest first").

This module also holds the ``plugin.toml`` reading that plugin directories share: discovery
imports this module, never the other way round, so the shared part lives here.
"""

from __future__ import annotations

import importlib.machinery
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ManifestError, VersionError, safe_repr
from .plugin import PluginCandidate, PluginInfo, Problem, _did_you_mean
from .versioning import parse_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# importlib.metadata (with the email package under it) is imported when entry points are first
# read, not with this module: it costs more to import than the rest of discovery together.
if TYPE_CHECKING:
    import importlib.metadata
    from pathlib import PurePosixPath

MANIFEST = "plugin.toml"

_MANIFEST_TABLES = ("plugin", "config")
# A manifest shipped in a distribution does not override what the metadata says about identity.
_METADATA_KEYS = frozenset({"name", "version", "description", "author", "entry"})
_FALLBACK_KEYS = ("description", "author")


def read_entry_points(group: str) -> tuple[list[PluginCandidate], list[Problem]]:
    """The plugins installed under ``group`` in ``sys.path`` order, and those that cannot be read.

    Duplicate names are left in: which one wins depends on what else was found, the caller's rule.
    """
    import importlib.metadata

    found = []
    problems = []
    for entry_point in importlib.metadata.entry_points(group=group):
        try:
            found.append(_entry_point_candidate(entry_point))
        except ManifestError as exc:
            source = _entry_point_location(entry_point)
            problems.append(Problem(source=source, name=exc.plugin, reason=str(exc), error=exc))
    return found, problems


class NotRegularFile(OSError):
    """A path that is a FIFO, socket, device or directory: reading it could block or never end."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(f"{os.fspath(path)} is a {kind}, not a regular file")
        self.kind = kind


# A FIFO opened for reading would wait for a writer; non-blocking, the open returns at once and
# fstat tells what it is. Reads of a regular file do not care.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file; anything else is NotRegularFile, never a hang.

    Raises OSError (FileNotFoundError, PermissionError, ...) as ``open`` would.
    """
    descriptor = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "special file")
            raise NotRegularFile(path, kind)
        chunks = []
        while chunk := os.read(descriptor, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def read_toml(path: str) -> dict[str, Any] | None:
    """The parsed file; None when it does not exist."""
    try:
        document: dict[str, Any] = tomllib.loads(read_regular(path).decode())
    except FileNotFoundError:
        return None
    except NotRegularFile as exc:
        raise ManifestError(
            f"{os.path.basename(path)} is a {exc.kind}, not a regular file",
            path=path,
            hint=f"replace it with a regular {os.path.basename(path)} file",
        ) from exc
    except OSError as exc:
        raise ManifestError(
            f"cannot read file: {exc.strerror}", path=path, hint="check the file's permissions"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"not UTF-8 text: {exc.reason} at byte {exc.start}",
            path=path,
            hint="save the file as UTF-8",
        ) from exc
    except ValueError as exc:
        # tomllib.TOMLDecodeError, or int() refusing an integer of thousands of digits (which
        # TOML's 64-bit integers do not allow anyway).
        raise ManifestError(
            f"not valid TOML: {exc}", path=path, hint="fix the TOML syntax"
        ) from exc
    except RecursionError as exc:
        raise ManifestError(
            "not valid TOML: arrays or inline tables are nested too deeply to read",
            path=path,
            hint="nest them less deeply",
        ) from exc
    return document


def manifest_table(document: dict[str, Any], path: str) -> dict[str, Any]:
    """The [plugin] table of a plugin.toml with its [config] table merged in as "config"."""
    unknown = [key for key in document if key not in _MANIFEST_TABLES]
    if unknown:
        raise ManifestError(
            f"unknown top-level table(s) or key(s): {', '.join(unknown)}",
            path=path,
            hint=_did_you_mean(unknown, _MANIFEST_TABLES)
            + "put plugin keys under [plugin] and config defaults under [config]",
        )
    table = document.get("plugin")
    if not isinstance(table, dict):
        raise ManifestError(
            "no [plugin] table",
            path=path,
            hint='add a [plugin] table with name = "..." and version = "..."',
        )
    name = table.get("name")
    if "config" in table:
        raise ManifestError(
            "config defaults belong in a top-level [config] table",
            plugin=name if isinstance(name, str) else None,
            path=path,
            hint="move them from [plugin.config] (or plugin.config) to [config]",
        )
    config = document.get("config")
    if config is None:
        return table
    if not isinstance(config, dict):
        raise ManifestError(
            "config must be a table",
            plugin=name if isinstance(name, str) else None,
            path=path,
            hint="write the plugin's config defaults as a [config] table",
        )
    return {**table, "config": config}


def _entry_point_location(entry_point: importlib.metadata.EntryPoint) -> str:
    return f"entry point {entry_point.group}:{entry_point.name} = {entry_point.value}"


def _entry_point_candidate(entry_point: importlib.metadata.EntryPoint) -> PluginCandidate:
    location = _entry_point_location(entry_point)
    dist = entry_point.dist
    if dist is None:
        raise ManifestError(
            "entry point belongs to no installed distribution",
            plugin=entry_point.name,
            path=location,
            hint="install the plugin's distribution",
        )
    metadata = dist.metadata
    module = entry_point.module
    table: dict[str, Any] = {
        "name": entry_point.name,
        "version": dist.version,
        "description": _field(metadata, "Summary"),
        "author": _author(metadata),
        "entry": f"{module}:{entry_point.attr}" if entry_point.attr else module,
    }
    manifest = _shipped_manifest(dist, module, entry_point.name, location)
    source = location
    if manifest is not None:
        source = str(manifest)
        document = read_toml(source)
        if document is None:
            raise ManifestError(
                f"{MANIFEST} is listed in distribution {dist.name!r} but missing on disk",
                plugin=entry_point.name,
                path=source,
                hint="reinstall the distribution",
            )
        table.update(_shipped_table(document, table, source))
    info = PluginInfo.from_mapping(table, source=source)
    return PluginCandidate(info, entry_point, "entry_point", distribution=dist.name)


def _field(metadata: importlib.metadata.PackageMetadata, key: str) -> str:
    value = str((metadata.get_all(key) or [""])[0])
    # Older setuptools wrote UNKNOWN for every field the project left out.
    return "" if value == "UNKNOWN" else value


def _author(metadata: importlib.metadata.PackageMetadata) -> str:
    author = _field(metadata, "Author")
    if author:
        return author
    import email.utils

    # Core metadata puts "Name <mail>" entries in Author-email when a name comes with an address.
    addresses = email.utils.getaddresses(metadata.get_all("Author-email") or [])
    return ", ".join(name for name, _ in addresses if name)


def _shipped_manifest(
    dist: importlib.metadata.Distribution, module: str, plugin: str, location: str
) -> Path | None:
    """The plugin.toml nearest to ``module`` inside its top-level package, if one is shipped.

    Raises ManifestError when the top-level package is nowhere to be found.
    """
    parts = module.split(".")
    top = parts[0]
    wanted = ["/".join([*parts[:depth], MANIFEST]) for depth in range(len(parts), 0, -1)]
    package_files = {file.as_posix(): file for file in dist.files or () if _belongs_to(file, top)}
    if package_files:
        for relative in wanted:
            if relative in package_files:
                return Path(package_files[relative].locate())
        return None
    # Editable installs list only a path hook in their files; the package lives in the source
    # tree. find_spec locates a top-level module without running it.
    import importlib.util

    spec = importlib.util.find_spec(top)
    if spec is None:
        raise ManifestError(
            f"entry point points nowhere: module {top!r} is neither in the files of "
            f"distribution {dist.name!r} nor on sys.path",
            plugin=plugin,
            path=location,
            hint="fix the entry point in the distribution's metadata, or reinstall it",
        )
    if not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).parent
    return next((root / rel for rel in wanted if (root / rel).is_file()), None)


def _belongs_to(file: PurePosixPath, top: str) -> bool:
    first = file.parts[0] if file.parts else ""
    if first == top:
        return True
    # A top-level single-module distribution: top.py, or a compiled top.cpython-311-....so.
    return (
        len(file.parts) == 1
        and first.startswith(top + ".")
        and any(first.endswith(suffix) for suffix in importlib.machinery.all_suffixes())
    )


def _shipped_table(document: dict[str, Any], metadata: dict[str, Any], path: str) -> dict[str, Any]:
    """What a shipped plugin.toml adds to the metadata's fields."""
    table = manifest_table(document, path)
    for key in ("name", "version"):
        if key in table and not _agree(key, table[key], metadata[key]):
            origin = "entry point" if key == "name" else "distribution"
            raise ManifestError(
                f"{MANIFEST} says {key} = {safe_repr(table[key])} but the {origin} says "
                f"{metadata[key]!r}",
                plugin=metadata["name"],
                path=path,
                hint=f"make the two agree, or drop {key} from {MANIFEST}",
            )
    # Unknown keys stay in, for PluginInfo to report.
    added = {key: value for key, value in table.items() if key not in _METADATA_KEYS}
    for key in _FALLBACK_KEYS:
        if not metadata[key] and key in table:
            added[key] = table[key]
    return added


def _agree(key: str, shipped: Any, metadata: str) -> bool:
    if shipped == metadata:
        return True
    if key != "version" or not isinstance(shipped, str):
        return False
    # Build tools normalise versions in the metadata: 1.0.0-beta.1 is written as 1.0.0b1.
    try:
        return parse_version(shipped) == parse_version(metadata)
    except VersionError:
        return False
