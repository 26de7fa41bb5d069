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
  Name, version, summary and author come from the distribution's metadata; a ``plugin.toml``
  shipped in the entry module's package adds the rest and must agree on name and version
  (``helixhooks._entry_points`` has the details).

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
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._entry_points import MANIFEST, manifest_table, read_entry_points, read_toml
from .config import Config
from .errors import ManifestError
from .plugin import PluginCandidate, PluginInfo, Problem

__all__ = ["INFO_VARIABLE", "MANIFEST", "Discovery"]

logger = logging.getLogger("helixhooks.discovery")

INFO_VARIABLE = "PLUGIN_INFO"

_DEFAULT_ENTRIES = ("plugin", "__init__")
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


def _entry_point_candidates(
    group: str, claimed: dict[str, PluginCandidate], problems: list[Problem]
) -> list[PluginCandidate]:
    found, unreadable = read_entry_points(group)
    # Reading only gathers these; they are logged here, like every other discovery problem.
    for problem in unreadable:
        logger.warning("%s", problem.reason)
    problems.extend(unreadable)
    return sorted(_keep_first(found, claimed, problems), key=_by_name)


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


def _directory_info(directory: str) -> PluginInfo | None:
    """The manifest of a plugin directory; None when it has no plugin.toml."""
    manifest = os.path.join(directory, MANIFEST)
    document = read_toml(manifest)
    if document is None:
        return None
    table = manifest_table(document, manifest)
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
