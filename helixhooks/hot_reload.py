"""HotReloader: filesystem hints, per plugin, debounced, checked against the files' hash, reloaded.

Watcher events are hints (DESIGN.md, decision 7). Each maps to the plugin it belongs to (a file
plugin's file, anything in a directory plugin's directory) or, in a plugin dir, to a new entry
that may be a plugin. After a quiet period of ``Config.debounce`` (at most ``MAX_SETTLE``
seconds after the first hint, so a file rewritten nonstop still reloads), the plugin's files
are hashed: the same hash as the version serving (a ``touch``, an identical rewrite) does
nothing, the same hash as the last failed attempt is not tried again, files gone unload the
plugin, and anything else reloads it (``PluginSystem.reload``). One thread does all of it, so
reloads happen one at a time, in the order their files settled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .discovery import may_be_plugin
from .errors import HelixError
from .plugin import PluginState
from .watcher import Change, Watcher, is_debris

if TYPE_CHECKING:
    from .registry import PluginRecord
    from .system import PluginSystem

_log = logging.getLogger("helixhooks.hot_reload")

MAX_SETTLE = 3.0
"""Seconds after a plugin's first change by which it is acted on, however busy its files are."""

_JOIN_TIMEOUT = 10.0
# A file is new if it appeared in a plugin dir; a key for it until it is a plugin.
_NEW = "new:"


class HotReloader:
    """Reloads plugins of a PluginSystem when their files change: ``start()``, ``stop()``."""

    def __init__(self, system: PluginSystem, *, watcher: Watcher | None = None) -> None:
        self.system = system
        self.watcher = watcher if watcher is not None else Watcher(system.config)
        self._dirs: list[Path] = []
        self._dirs_lock = threading.Lock()
        # key (a plugin name, or _NEW + a path) -> (first hint, quiet until)
        self._pending: dict[str, tuple[float, float]] = {}
        # plugin name -> hash of the files its serving version came from / last failed with
        self._good: dict[str, bytes] = {}
        self._bad: dict[str, bytes] = {}
        # plugin name -> (size, mtime) of its files when last hashed, for a cheap rescan
        self._stats: dict[str, tuple[tuple[str, int, int], ...]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Watch the config's plugin dirs and act on their changes in a thread of its own."""
        if self._thread is not None:
            return
        for directory in self.system.config.plugin_dirs:
            if directory.is_dir():
                self.watch(directory)
            else:
                _log.warning("not watching plugin dir %s: it does not exist", directory)
        for name, source in self._sources():
            self._remember(name, source)
        self._thread = threading.Thread(target=self._run, name="helixhooks-hot-reload", daemon=True)
        self._thread.start()

    def watch(self, directory: str | os.PathLike[str]) -> None:
        """Also watch ``directory``: its plugins reload, and new plugins in it are loaded."""
        path = Path(directory).absolute()
        self.watcher.add(path)
        with self._dirs_lock:
            if path not in self._dirs:
                self._dirs.append(path)

    def stop(self) -> None:
        """Stop watching; a reload under way finishes first. Safe from any thread, even its own."""
        self._stopping.set()
        self.watcher.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
            if thread.is_alive():
                _log.warning("the hot-reload thread is still busy after %.0fs", _JOIN_TIMEOUT)

    def _run(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            due = [key for key, (_, quiet) in self._pending.items() if quiet <= now]
            for key in due:
                del self._pending[key]
                self._settle(key)
            wait = min((quiet for _, quiet in self._pending.values()), default=now + 0.5) - now
            change = self.watcher.get(timeout=max(wait, 0.0))
            if change is not None:
                self._note(change)

    def _note(self, change: Change) -> None:
        if change.kind == "rescan":
            self._rescan(change.path)
            return
        key = self._key_for(change.path)
        if key is None:
            return
        now = time.monotonic()
        first, _ = self._pending.get(key, (now, now))
        self._pending[key] = (first, min(now + self.system.config.debounce, first + MAX_SETTLE))

    def _key_for(self, path: Path) -> str | None:
        """The plugin ``path`` belongs to, or a new entry of a plugin dir; None if neither."""
        for name, source in self._sources():
            if path == source or (source.is_dir() and path.is_relative_to(source)):
                return name
        with self._dirs_lock:
            dirs = list(self._dirs)
        for directory in dirs:
            if path != directory and path.is_relative_to(directory):
                entry = directory / path.relative_to(directory).parts[0]
                # Only what could be a plugin is worth hashing (not .git, a README, a cache).
                return _NEW + str(entry) if may_be_plugin(entry) else None
        return None

    def _rescan(self, directory: Path) -> None:
        """Act now on what changed without a hint: a plugin's files, and new entries."""
        known = set()
        for name, source in self._sources():
            known.add(source)
            if source.is_relative_to(directory) and _stat(source) != self._stats.get(name):
                self._pending.setdefault(name, (0.0, 0.0))
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            _log.warning("cannot rescan plugin dir %s: %s", directory, exc)
            return
        for entry in entries:
            path = Path(entry.path)
            if path not in known and may_be_plugin(path) and not is_debris(directory, path):
                key = _NEW + str(path)
                if _stat(path) != self._stats.get(key):
                    self._pending.setdefault(key, (0.0, 0.0))

    def _settle(self, key: str) -> None:
        try:
            if key.startswith(_NEW):
                self._settle_new(Path(key[len(_NEW) :]), key)
            else:
                self._settle_known(key)
        except HelixError as exc:
            if key.startswith(_NEW):
                # A new plugin that cannot even be read has no record or event to say so.
                _log.warning("new plugin not loaded: %s", exc)
            else:
                # Also published as a reload_failed event (which the CLI prints instead).
                _log.warning("%s", exc, extra={"helix_event": True})

    def _settle_known(self, name: str) -> None:
        record = self.system.registry.get(name)
        source = _source(record)
        if source is None:
            return
        if not source.exists():
            self._forget(name)
            _log.info("plugin %r: its files are gone, unloading it", name)
            self.system.unload(name)
            return
        # Hashed before reloading: a save while it reloads must count as a change after it.
        self._stats[name] = _stat(source)
        digest = _hash(source)
        if digest == self._good.get(name) or digest == self._bad.get(name):
            return
        try:
            self.system.reload(name)
        except HelixError:
            self._bad[name] = digest
            raise
        self._good[name] = digest
        self._bad.pop(name, None)

    def _settle_new(self, path: Path, key: str) -> None:
        if not path.exists():
            self._stats.pop(key, None)
            return
        for name, source in self._sources():
            if source == path:
                # Known by now (say, loaded by the host): its own key's business.
                self._settle_known(name)
                return
        # Hashed before loading: a save while it loads must count as a change after it.
        stats = self._stats[key] = _stat(path)
        digest = _hash(path)
        if digest == self._bad.get(key):
            return
        try:
            loaded = self.system.load_plugin(path)
        except HelixError:
            self._bad[key] = digest
            raise
        if loaded is not None:
            self._bad.pop(key, None)
            self._stats.pop(key, None)
            self._good[loaded] = digest
            self._stats[loaded] = stats

    def _remember(self, name: str, source: Path) -> None:
        if source.exists():
            self._stats[name] = _stat(source)
            self._good[name] = _hash(source)

    def _forget(self, name: str) -> None:
        self._good.pop(name, None)
        self._bad.pop(name, None)
        self._stats.pop(name, None)

    def _sources(self) -> Iterator[tuple[str, Path]]:
        """(name, absolute source path) of each recorded directory or file plugin."""
        for record in self.system.registry.list():
            source = _source(record)
            if source is not None:
                yield record.name, source


def _source(record: PluginRecord | None) -> Path | None:
    if record is None or record.candidate is None or record.state is PluginState.UNLOADED:
        return None
    source = record.candidate.source
    return source.absolute() if isinstance(source, Path) else None


def _files(source: Path) -> list[Path]:
    """A plugin's files, sorted: the file itself, or what its directory holds but debris."""
    if not source.is_dir():
        return [source] if source.exists() else []
    found = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in names:
            path = Path(root, name)
            if not name.startswith(".") and not is_debris(source, path):
                found.append(path)
    return sorted(found)


def _hash(source: Path) -> bytes:
    digest = hashlib.blake2b(digest_size=20)
    for path in _files(source):
        digest.update(os.fsencode(path.relative_to(source.parent)) + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            # Gone or unreadable mid-save: part of what the hash says, so the next save differs.
            digest.update(f"\0{exc.errno}\0".encode())
    return digest.digest()


def _stat(source: Path) -> tuple[tuple[str, int, int], ...]:
    found = []
    for path in _files(source):
        try:
            info = path.stat()
        except OSError:
            continue
        found.append((str(path), info.st_size, info.st_mtime_ns))
    return tuple(found)
