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

Directories without ``plugin.toml``, dot-entries and ``__pycache__`` are skipped. A plugin dir
that holds a ``plugin.toml`` itself is taken as that one plugin (``helixhooks check
--plugin-dir .`` in a plugin's own directory checks it). A ``plugin.toml`` that is not a regular
file (a FIFO, a device) is a problem, never read: reading it could block for ever.

``PLUGIN_INFO`` must be set by plain top-level assignments of a dict literal; one set inside an
``if``/``try``/``with`` block, imported, built by a call or changed in place is a problem naming
the line, not silently ignored (discovery never runs the file).

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
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._entry_points import MANIFEST, manifest_table, read_entry_points, read_toml
from .config import Config
from .errors import ManifestError, safe_repr
from .plugin import PluginCandidate, PluginInfo, Problem

__all__ = ["INFO_VARIABLE", "MANIFEST", "Discovery"]

logger = logging.getLogger("helixhooks.discovery")

INFO_VARIABLE = "PLUGIN_INFO"

_DEFAULT_ENTRIES = ("plugin", "__init__")
_DEFAULT_FILES = tuple((module, f"{os.sep}{module}.py") for module in _DEFAULT_ENTRIES)
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
            itself = _dir_as_plugin(directory, problems)
            listed = itself if itself is not None else _scan_dir(directory, problems)
            in_dir = _keep_first(listed, claimed, problems)
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

    def candidate(self, path: str | os.PathLike[str]) -> PluginCandidate | None:
        """The plugin at one entry of a plugin dir, by ``scan``'s rules; None if it holds none.

        For the hot reloader, which sees a new file or directory appear. A broken manifest is
        a ManifestError.
        """
        path = Path(path)
        if not may_be_plugin(path):
            return None
        if path.is_dir():
            info = _directory_info(str(path))
            return None if info is None else PluginCandidate(info, path, "directory")
        info = _file_info(str(path))
        return None if info is None else PluginCandidate(info, path, "file")

    def entry_points(self, group: str | None = None) -> list[PluginCandidate]:
        """The plugins installed under ``group`` (default: the config's entry_point_group)."""
        problems: list[Problem] = []
        self.problems = problems
        group = group if group is not None else self.config.entry_point_group
        if group is None:
            return []
        return _entry_point_candidates(group, {}, problems)


def may_be_plugin(entry: Path) -> bool:
    """Whether an entry of a plugin dir could be a plugin by ``scan``'s rules, unread.

    A directory or a ``.py`` file; not a dot-entry (editors', version control's), a cache, or a
    ``_`` helper module.
    """
    name = entry.name
    if name.startswith(".") or name == "__pycache__":
        return False
    if name.endswith(".py"):
        return not name.startswith("_") and entry.is_file()
    return entry.is_dir()


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
    """The plugins in one plugin dir, in file name order; what cannot be read goes to problems.

    The work runs in passes over all entries (read every manifest, then judge every one, then
    build the candidates) rather than plugin by plugin: each pass keeps its own code and data hot
    in the CPU's caches, which made a cold scan of 1,000 manifests about 15% faster. Problems
    are still reported in file name order.
    """
    try:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=_entry_name)
    except OSError as exc:
        error = ManifestError(
            f"cannot read plugin directory: {exc.strerror}",
            path=str(directory),
            hint="create the directory, or remove it from plugin_dirs",
        )
        _report(problems, str(directory), error)
        return
    # One slot per plugin in file name order: its candidate, or where it is and what is wrong.
    slots: list[PluginCandidate | tuple[str, ManifestError]] = []
    manifests: list[tuple[int, str, str, dict[str, Any]]] = []  # slot, directory, path, document
    for entry in entries:
        name = entry.name
        # Dot-entries belong to editors and version control.
        if name.startswith(".") or name == "__pycache__":
            continue
        path = entry.path
        try:
            if entry.is_dir():
                manifest = os.path.join(path, MANIFEST)
                document = read_toml(manifest)
                if document is None:
                    logger.debug("skipping %s: no %s", path, MANIFEST)
                    continue
                manifests.append((len(slots), path, manifest, document))
                slots.append((path, _PENDING))
            # A leading "_" marks a helper module, whatever it contains.
            elif name.endswith(".py") and not name.startswith("_") and entry.is_file():
                info = _file_info(path)
                if info is not None:
                    slots.append(PluginCandidate(info, path, "file"))
        except ManifestError as exc:
            slots.append((path, exc))
    tables = []
    for at, path, manifest, document in manifests:
        try:
            tables.append((at, path, manifest, *_manifest_table(path, manifest, document)))
        except ManifestError as exc:
            slots[at] = (path, exc)
    infos = []
    for at, path, manifest, table, defaulted in tables:
        try:
            infos.append((at, path, _manifest_info(path, manifest, table, defaulted)))
        except ManifestError as exc:
            slots[at] = (path, exc)
    for at, path, info in infos:
        slots[at] = PluginCandidate(info, path, "directory")
    # Yielded one by one, so that the caller's duplicate-name problems fall in file name order
    # among these.
    for slot in slots:
        if isinstance(slot, PluginCandidate):
            yield slot
        else:
            _report(problems, *slot)


def _dir_as_plugin(directory: Path, problems: list[Problem]) -> list[PluginCandidate] | None:
    """A plugin dir that holds a plugin.toml itself is that one plugin, not a dir of plugins.

    ``helixhooks check --plugin-dir .`` inside a plugin's own directory checks that plugin. None
    when ``directory`` has no plugin.toml of its own.
    """
    manifest = os.path.join(directory, MANIFEST)
    if not os.path.lexists(manifest):
        return None
    logger.debug("plugin dir %s holds %s: taking it as one plugin", directory, MANIFEST)
    try:
        info = _directory_info(str(directory))
    except ManifestError as exc:
        _report(problems, str(directory), exc)
        return []
    return [] if info is None else [PluginCandidate(info, directory, "directory")]


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


# Stands in a slot whose manifest is read but not yet judged; every such slot is filled.
_PENDING = ManifestError("not judged yet")


def _directory_info(directory: str) -> PluginInfo | None:
    """The manifest of a plugin directory; None when it has no plugin.toml."""
    manifest = os.path.join(directory, MANIFEST)
    document = read_toml(manifest)
    if document is None:
        return None
    return _manifest_info(directory, manifest, *_manifest_table(directory, manifest, document))


def _manifest_table(
    directory: str, manifest: str, document: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """The [plugin] table, its entry filled in if left out, and whether it was."""
    table = manifest_table(document, manifest)
    if "entry" in table:
        return table, False
    entry = _default_entry(directory)
    if entry is not None:
        table["entry"] = entry
    return table, True


def _manifest_info(
    directory: str, manifest: str, table: dict[str, Any], defaulted: bool
) -> PluginInfo:
    if defaulted and "entry" not in table:
        # A broken manifest is the more basic fault: report it before the missing entry.
        info = PluginInfo.from_mapping(table, source=manifest)
        raise ManifestError(
            "no entry: the manifest names none and there is no plugin.py or __init__.py",
            plugin=info.name,
            path=manifest,
            hint='add entry = "module:Class" to [plugin], or create plugin.py',
        )
    info = PluginInfo.from_mapping(table, source=manifest)
    if not defaulted and info.entry is not None:
        _check_entry(directory, info.entry, info.name, manifest)
    return info


def _module_exists(directory: str, module: str) -> bool:
    relative = os.path.join(directory, *module.split("."))
    return os.path.isfile(relative + ".py") or os.path.isfile(os.path.join(relative, "__init__.py"))


def _default_entry(directory: str) -> str | None:
    # Concatenated, not os.path.join: this runs once per plugin directory in every scan.
    for module, file_name in _DEFAULT_FILES:
        if os.path.isfile(directory + file_name):
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
    except (RecursionError, MemoryError) as exc:
        # What Python's compiler says too, so the file could not be imported either.
        raise ManifestError(
            "cannot parse file: an expression is nested too deeply for Python to compile",
            path=path,
            hint="split the expression (a long chain of operators is nested one level each)",
        ) from exc
    node = _info_value(tree, path)
    if node is None:
        return None
    data = _info_literal(node, path)
    if not all(isinstance(key, str) for key in data):
        raise ManifestError(
            f"{INFO_VARIABLE} must be a dict with string keys, not {safe_repr(data):.60} "
            f"(line {node.lineno})",
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


_INFO_HINT = (
    f'write {INFO_VARIABLE} = {{"name": "...", "version": "..."}} at the top level of the file, '
    "with only literal values: strings, numbers, lists and dicts"
)


def _info_value(tree: ast.Module, path: str) -> ast.expr | None:
    """The value last assigned to PLUGIN_INFO at module level, as Python would leave it.

    Discovery never runs the file, so PLUGIN_INFO must be set by plain top-level assignments.
    One that is set any other way at module level (inside an ``if``, ``try`` or ``with`` block,
    by unpacking or import, or changed in place afterwards) would be silently ignored or misread:
    that is a ManifestError naming the line.
    """
    value = None
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(_is_info(t) for t in statement.targets):
            value = statement.value
            continue
        if isinstance(statement, ast.AnnAssign) and statement.value and _is_info(statement.target):
            value = statement.value
            continue
        misuse = _info_misuse(statement)
        if misuse is not None:
            what, line = misuse
            raise ManifestError(
                f"{INFO_VARIABLE} {what} (line {line}); discovery does not run the file and "
                f"reads only a top-level {INFO_VARIABLE} = {{...}} literal",
                path=path,
                hint=f"move {INFO_VARIABLE} = {{...}} to the top level of the file, outside any "
                "block, and do not change it afterwards",
            )
    return value


def _is_info(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == INFO_VARIABLE


# Statements whose body runs, or not, at module level: a PLUGIN_INFO set there is not a literal
# discovery can read.
_BLOCKS: dict[type[ast.AST], str] = {
    ast.If: "an 'if' block",
    ast.For: "a 'for' loop",
    ast.AsyncFor: "an 'async for' loop",
    ast.While: "a 'while' loop",
    ast.With: "a 'with' block",
    ast.AsyncWith: "an 'async with' block",
    ast.Try: "a 'try' block",
    ast.Match: "a 'match' block",
}
if sys.version_info >= (3, 11):
    _BLOCKS[ast.TryStar] = "a 'try' block"
# Scopes of their own: a PLUGIN_INFO in there is a local name, not the module's.
_SCOPES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)
_MUTATORS = frozenset({"update", "setdefault", "pop", "popitem", "clear", "__setitem__"})


def _info_misuse(statement: ast.stmt) -> tuple[str, int] | None:
    """How ``statement`` sets PLUGIN_INFO other than by a plain top-level assignment, and the line.

    Walks the tree depth first with a stack of its own, not by recursion: a module may nest an
    expression deeper than Python's recursion limit allows a walk to go (a long sum is a chain
    of BinOps, one level each).
    """
    todo: list[tuple[ast.AST, str | None]] = [(statement, None)]
    while todo:
        node, block = todo.pop()
        if isinstance(node, _SCOPES) or (isinstance(node, ast.AnnAssign) and node.value is None):
            # A bare annotation (``PLUGIN_INFO: dict``) assigns nothing.
            continue
        block = _BLOCKS.get(type(node), block)
        what = _misuse_at(node, block)
        if what is not None:
            return what, getattr(node, "lineno", 0)
        children = list(ast.iter_child_nodes(node))
        todo.extend((child, block) for child in reversed(children))
    return None


def _misuse_at(node: ast.AST, block: str | None) -> str | None:
    """How ``node`` itself (not its children) sets PLUGIN_INFO, inside ``block`` if any."""
    if isinstance(node, ast.AugAssign) and _is_info(node.target) and block is None:
        return "is changed in place after it is assigned"
    if isinstance(node, ast.Name) and node.id == INFO_VARIABLE and isinstance(node.ctx, ast.Store):
        return f"is assigned inside {block}" if block else "is assigned by unpacking"
    if isinstance(node, ast.alias) and (node.asname or node.name) == INFO_VARIABLE:
        return "is imported"
    if (
        isinstance(node, (ast.Subscript, ast.Attribute))
        and isinstance(node.ctx, ast.Store)
        and _is_info(node.value)
    ) or (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and _is_info(node.func.value)
        and node.func.attr in _MUTATORS
    ):
        return "is changed in place after it is assigned"
    return None


def _info_literal(node: ast.expr, path: str) -> dict[Any, Any]:
    """The dict that PLUGIN_INFO's literal ``node`` stands for; anything else names the line."""
    if not isinstance(node, ast.Dict):
        raise ManifestError(
            f"{INFO_VARIABLE} must be a dict literal {{...}}, not {_describe(node)} "
            f"(line {node.lineno})",
            path=path,
            hint=_INFO_HINT,
        )
    try:
        data = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        where, bad = _non_literal(node, INFO_VARIABLE)
        raise ManifestError(
            f"{where} is {_describe(bad)}, which is not a literal (line {bad.lineno}); "
            "discovery does not run the file",
            path=path,
            hint=_INFO_HINT,
        ) from exc
    assert isinstance(data, dict)
    return data


def _non_literal(node: ast.expr, where: str) -> tuple[str, ast.expr]:
    """The innermost part of ``node`` that literal_eval refuses, and how to name it."""
    parts: list[tuple[str, ast.expr]] = []
    if isinstance(node, ast.Dict):
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**other}
                return f"{where} unpacks", value
            label = repr(key.value) if isinstance(key, ast.Constant) else "..."
            parts += [(f"a key of {where}", key), (f"{where}[{label}]", value)]
    elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        parts = [(f"{where}[{index}]", item) for index, item in enumerate(node.elts)]
    for label, part in parts:
        try:
            ast.literal_eval(part)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return _non_literal(part, label)
    return where, node


def _describe(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    try:
        if isinstance(node, ast.Call):
            return f"a call to {ast.unparse(node.func)}()"
        return f"the expression `{ast.unparse(node):.60}`"
    except (RecursionError, ValueError):
        # unparse recurses once per level, and the parser allows deeper than that; and it
        # writes ints in decimal, which it refuses past sys.get_int_max_str_digits() digits.
        return "an expression too large to show"


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
