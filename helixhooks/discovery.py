"""Finding plugins without importing them: plugin directories, single files and entry points.

Discovery reads metadata only (decision 1, "Manifest first"); no plugin code runs here. The forms:

- **Directory**: a directory in a plugin dir holding ``plugin.toml`` with a ``[plugin]`` table
  (PluginInfo fields) and an optional ``[config]`` table (the plugin's config defaults). Without
  an ``entry`` the module is ``plugin`` if ``plugin.py`` exists, else ``__init__`` if
  ``__init__.py`` exists (the loader takes ``__init__`` to mean the directory itself, a package).
- **File**: a ``.py`` file in a plugin dir with a module-level ``PLUGIN_INFO = {...}`` dict
  literal, read with ``ast``. Its entry is the file itself: leave ``entry`` out for the module
  object, or name an attribute as ``":Hello"``, stored as ``"<stem>:Hello"`` (which is accepted
  too). Files without ``PLUGIN_INFO`` are helper modules, not plugins; files whose name starts
  with ``_`` are never plugins.
- **Entry point**: an entry point of an installed distribution in ``Config.entry_point_group``.
  Name, version, summary, author and entry come from the distribution's metadata. A
  ``plugin.toml`` shipped in the entry module's top-level package (the one nearest to the module)
  adds dependencies, capabilities, permissions, requires, isolation and config. Its name and
  version, if given, must agree with the metadata; its description and author only fill gaps in
  the metadata; its entry is ignored, as the entry point says where the code is.

Directories without ``plugin.toml``, dot-entries and ``__pycache__`` are skipped.

Anything that cannot be read becomes a Problem in ``Discovery.problems`` (its location, the plugin
name if known, and the reason with the fix), and the scan goes on with the other plugins.

Duplicate names: the first plugin found keeps the name. Plugin dirs count in the order given,
within a dir entries count in file name order, and every directory or file plugin beats an entry
point (entry points among themselves: in ``sys.path`` order). The loser becomes a Problem naming
both locations, and a warning is logged.

Results come in plugin dir order, by name within a dir, then the entry points by name.
"""

from __future__ import annotations

import ast
import email.utils
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from .config import Config
from .errors import ManifestError, VersionError
from .plugin import PluginCandidate, PluginInfo, Problem
from .versioning import parse_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

logger = logging.getLogger("helixhooks.discovery")

MANIFEST = "plugin.toml"
INFO_VARIABLE = "PLUGIN_INFO"

_MANIFEST_TABLES = ("plugin", "config")
_DEFAULT_ENTRIES = ("plugin", "__init__")
# A manifest shipped in a distribution does not override what the metadata says about identity.
_METADATA_KEYS = frozenset({"name", "version", "description", "author", "entry"})
_FALLBACK_KEYS = ("description", "author")
_INFO_MARKER = INFO_VARIABLE.encode()


class Discovery:
    """Finds plugin candidates in plugin dirs and entry points, importing nothing."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config if config is not None else Config()
        #: What the last scan() or entry_points() could not read, and why.
        self.problems: list[Problem] = []

    def scan(self, dirs: Iterable[str | os.PathLike[str]] | None = None) -> list[PluginCandidate]:
        """Every plugin in ``dirs`` (default: the config's plugin_dirs), then the entry points."""
        problems: list[Problem] = []
        self.problems = problems
        if dirs is None:
            dirs = self.config.plugin_dirs
        elif isinstance(dirs, (str, os.PathLike)):
            # One directory given bare would otherwise be read as a list of one-letter paths.
            dirs = [dirs]
        claimed: dict[str, PluginCandidate] = {}
        found: list[PluginCandidate] = []
        for directory in _unique_dirs(dirs):
            in_dir = _keep_first(_scan_dir(directory, problems), claimed, problems)
            found.extend(sorted(in_dir, key=_by_name))
        group = self.config.entry_point_group
        if group is not None:
            found.extend(_entry_point_candidates(group, claimed, problems))
        return found

    def get_info(self, path: str | os.PathLike[str]) -> PluginInfo:
        """One plugin's metadata from its directory, its plugin.toml or its single .py file."""
        path = Path(path)
        if path.name == MANIFEST and path.is_file():
            path = path.parent
        if path.is_dir():
            info = _directory_info(str(path))
            if info is None:
                raise ManifestError(
                    f"directory has no {MANIFEST}",
                    path=str(path),
                    hint=f"add a {MANIFEST} with a [plugin] table giving name and version",
                )
            return info
        if path.suffix == ".py" and path.is_file():
            info = _file_info(str(path))
            if info is None:
                raise ManifestError(
                    f"file has no module-level {INFO_VARIABLE}",
                    path=str(path),
                    hint=f'add {INFO_VARIABLE} = {{"name": "...", "version": "..."}} to the file',
                )
            return info
        raise ManifestError(
            "is not a plugin directory, plugin.toml or .py file"
            if path.exists()
            else "does not exist",
            path=str(path),
            hint="pass a plugin directory, its plugin.toml, or a single-file plugin",
        )

    def entry_points(self, group: str | None = None) -> list[PluginCandidate]:
        """The plugins installed under ``group`` (default: the config's entry_point_group)."""
        problems: list[Problem] = []
        self.problems = problems
        group = group if group is not None else self.config.entry_point_group
        if group is None:
            return []
        return _entry_point_candidates(group, {}, problems)


def _by_name(candidate: PluginCandidate) -> str:
    return candidate.info.name


def _unique_dirs(dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    # The same directory listed twice would otherwise report each of its plugins as a duplicate.
    unique: dict[str, Path] = {}
    for directory in dirs:
        unique.setdefault(os.path.abspath(directory), Path(directory))
    return list(unique.values())


def _report(problems: list[Problem], source: str, error: ManifestError) -> None:
    logger.warning("%s", error)
    problems.append(Problem(source=source, name=error.plugin, reason=str(error), error=error))


def _keep_first(
    candidates: Iterable[PluginCandidate],
    claimed: dict[str, PluginCandidate],
    problems: list[Problem],
) -> list[PluginCandidate]:
    kept = []
    for candidate in candidates:
        name = candidate.info.name
        winner = claimed.setdefault(name, candidate)
        if winner is candidate:
            kept.append(candidate)
            continue
        error = ManifestError(
            f"duplicate plugin name: {winner.location} takes precedence over {candidate.location}",
            plugin=name,
            path=candidate.location,
            hint="rename one of the two plugins, or remove one",
        )
        _report(problems, candidate.location, error)
    return kept


def _scan_dir(directory: Path, problems: list[Problem]) -> Iterator[PluginCandidate]:
    try:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as exc:
        error = ManifestError(
            f"cannot read plugin directory: {exc.strerror}",
            path=str(directory),
            hint="create the directory, or remove it from plugin_dirs",
        )
        _report(problems, str(directory), error)
        return
    for entry in entries:
        # Dot-entries belong to editors and version control.
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        try:
            if entry.is_dir():
                info = _directory_info(entry.path)
                if info is None:
                    logger.debug("skipping %s: no %s", entry.path, MANIFEST)
                    continue
                yield PluginCandidate(info, Path(entry.path), "directory")
            # A leading "_" marks a helper module, whatever it contains.
            elif entry.name.endswith(".py") and not entry.name.startswith("_") and entry.is_file():
                info = _file_info(entry.path)
                if info is not None:
                    yield PluginCandidate(info, Path(entry.path), "file")
        except ManifestError as exc:
            _report(problems, entry.path, exc)


def _read_toml(path: str) -> dict[str, Any] | None:
    """The parsed file; None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            document: dict[str, Any] = tomllib.load(handle)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(
            f"cannot read file: {exc.strerror}", path=path, hint="check the file's permissions"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(
            f"not valid TOML: {exc}", path=path, hint="fix the TOML syntax"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"not UTF-8 text: {exc.reason} at byte {exc.start}",
            path=path,
            hint="save the file as UTF-8",
        ) from exc
    return document


def _manifest_table(document: dict[str, Any], path: str) -> dict[str, Any]:
    """The [plugin] table of a plugin.toml with its [config] table merged in as "config"."""
    unknown = [key for key in document if key not in _MANIFEST_TABLES]
    if unknown:
        raise ManifestError(
            f"unknown top-level table(s) or key(s): {', '.join(unknown)}",
            path=path,
            hint="put plugin keys under [plugin] and config defaults under [config]",
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


def _directory_info(directory: str) -> PluginInfo | None:
    """The manifest of a plugin directory; None when it has no plugin.toml."""
    manifest = os.path.join(directory, MANIFEST)
    document = _read_toml(manifest)
    if document is None:
        return None
    table = _manifest_table(document, manifest)
    defaulted = "entry" not in table
    if defaulted:
        entry = _default_entry(directory)
        if entry is None:
            # A broken manifest is the more basic fault: report it before the missing entry.
            info = PluginInfo.from_mapping(table, source=manifest)
            raise ManifestError(
                "no entry: the manifest names none and there is no plugin.py or __init__.py",
                plugin=info.name,
                path=manifest,
                hint='add entry = "module:Class" to [plugin], or create plugin.py',
            )
        table["entry"] = entry
    info = PluginInfo.from_mapping(table, source=manifest)
    if not defaulted and info.entry is not None:
        _check_entry(directory, info.entry, info.name, manifest)
    return info


def _module_exists(directory: str, module: str) -> bool:
    relative = os.path.join(directory, *module.split("."))
    return os.path.isfile(relative + ".py") or os.path.isfile(os.path.join(relative, "__init__.py"))


def _default_entry(directory: str) -> str | None:
    for module in _DEFAULT_ENTRIES:
        if os.path.isfile(os.path.join(directory, module + ".py")):
            return module
    return None


def _check_entry(directory: str, entry: str, plugin: str, manifest: str) -> None:
    module = entry.partition(":")[0]
    if not _module_exists(directory, module):
        relative = module.replace(".", "/")
        raise ManifestError(
            f"entry {entry!r} points nowhere: neither {relative}.py nor "
            f"{relative}/__init__.py exists in {directory}",
            plugin=plugin,
            path=manifest,
            hint="fix entry in [plugin], or add the module",
        )


def _file_info(path: str) -> PluginInfo | None:
    """The PLUGIN_INFO of a single-file plugin; None when the file does not define one."""
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError as exc:
        raise ManifestError(
            f"cannot read file: {exc.strerror}", path=path, hint="check the file's permissions"
        ) from exc
    # Most helper modules never mention PLUGIN_INFO; skip parsing them.
    if _INFO_MARKER not in source:
        return None
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as exc:
        raise ManifestError(
            f"cannot parse file: {exc}", path=path, hint="fix the file's syntax"
        ) from exc
    node = _info_value(tree)
    if node is None:
        return None
    try:
        data = ast.literal_eval(node)
    except (ValueError, TypeError) as exc:
        raise ManifestError(
            f"{INFO_VARIABLE} is not a literal dict ({exc})",
            path=path,
            hint=f"write {INFO_VARIABLE} = {{...}} with only literal values: strings, numbers, "
            "lists and dicts",
        ) from exc
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise ManifestError(
            f"{INFO_VARIABLE} must be a dict with string keys, not {data!r:.60}",
            path=path,
            hint=f'write {INFO_VARIABLE} = {{"name": "...", "version": "..."}}',
        )
    if not isinstance(data.get("config", {}), dict):
        raise ManifestError(
            f"config in {INFO_VARIABLE} must be a dict",
            path=path,
            hint='write "config": {"key": value} with the plugin\'s config defaults',
        )
    data["entry"] = _file_entry(data, path)
    return PluginInfo.from_mapping(data, source=path)


def _info_value(tree: ast.Module) -> ast.expr | None:
    """The value last assigned to PLUGIN_INFO at module level, as Python would leave it."""
    value = None
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets = [statement.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == INFO_VARIABLE for t in targets):
            value = statement.value
    return value


def _file_entry(data: dict[str, Any], path: str) -> Any:
    entry = data.get("entry")
    if not isinstance(entry, str):
        # Absent stays None (the module itself); a wrong type is PluginInfo's to report.
        return entry
    stem = os.path.splitext(os.path.basename(path))[0]
    if entry.startswith(":"):
        return stem + entry
    if entry.partition(":")[0] != stem:
        name = data.get("name")
        raise ManifestError(
            f"entry {entry!r} points nowhere: a single-file plugin's entry is the file itself",
            plugin=name if isinstance(name, str) else None,
            path=path,
            hint='write entry as ":Attribute", or leave it out to use the module',
        )
    return entry


def _entry_point_location(entry_point: importlib.metadata.EntryPoint) -> str:
    return f"entry point {entry_point.group}:{entry_point.name} = {entry_point.value}"


def _entry_point_candidates(
    group: str, claimed: dict[str, PluginCandidate], problems: list[Problem]
) -> list[PluginCandidate]:
    found = []
    for entry_point in importlib.metadata.entry_points(group=group):
        try:
            found.append(_entry_point_candidate(entry_point))
        except ManifestError as exc:
            _report(problems, _entry_point_location(entry_point), exc)
    return sorted(_keep_first(found, claimed, problems), key=_by_name)


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
        document = _read_toml(source)
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
    table = _manifest_table(document, path)
    for key in ("name", "version"):
        if key in table and not _agree(key, table[key], metadata[key]):
            origin = "entry point" if key == "name" else "distribution"
            raise ManifestError(
                f"{MANIFEST} says {key} = {table[key]!r} but the {origin} says {metadata[key]!r}",
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
