"""Filesystem hints for hot reload: watchdog's events, less editor debris, on one queue.

Events are hints (DESIGN.md, decision 7): the consumer debounces and hashes. So this errs towards
reporting: it drops only what is never a plugin's source (swap files, caches, a directory's
listing changing), and a periodic "rescan" stands in for what the kernel may have dropped.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from pathlib import Path

import attrs
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .config import Config
from .errors import HelixError

_logger = logging.getLogger("helixhooks.watcher")

# An editor's save writes these around the real file; none is ever a plugin's source.
_DEBRIS_NAMES = frozenset({"4913"})  # vim's probe: may it create files in this directory?
_DEBRIS_SUFFIXES = (".swp", ".swx", ".swo", "~", ".pyc", ".pyo", ".pyd")
_DEBRIS_PREFIXES = (".goutputstream-", ".#")  # gedit's temporary file, emacs's lock
_DEBRIS_MARKS = ("___jb_tmp___", "___jb_old___")  # JetBrains' safe write
# Bounds close(): a watchdog thread that overruns it is a daemon, and dies with the process.
_JOIN_TIMEOUT = 5.0


@attrs.frozen
class Change:
    """One filesystem hint: something at ``path`` changed.

    ``kind`` is "created", "modified", "deleted" or "rescan". A move is "deleted" for the source
    and "created" for the destination. A "rescan" comes every ``rescan_every`` seconds for each
    watched directory: re-check everything under it, as the kernel may have dropped events.
    """

    path: Path
    kind: str


def is_debris(root: Path, path: Path) -> bool:
    """Whether ``path``, in the tree watched at ``root``, is an editor's or Python's leftovers.

    Public so that a rescan, which lists files without events, skips what the events skip.
    """
    name = path.name
    if (
        name in _DEBRIS_NAMES
        or name.endswith(_DEBRIS_SUFFIXES)
        or name.startswith(_DEBRIS_PREFIXES)
        or any(mark in name for mark in _DEBRIS_MARKS)
    ):
        return True
    # Only below the root: a watched directory that itself lies in a __pycache__ is still watched.
    below = path.relative_to(root).parts if path.is_relative_to(root) else path.parts
    return "__pycache__" in below


def _changes(root: Path, event: FileSystemEvent) -> list[Change]:
    """The changes one watchdog event stands for; paths may be str or bytes, by version."""
    kind = event.event_type
    source = Path(os.fsdecode(event.src_path))
    if kind == "moved":
        found = [Change(source, "deleted")]
        dest = getattr(event, "dest_path", None)
        if dest:
            found.append(Change(Path(os.fsdecode(dest)), "created"))
    elif kind in ("created", "deleted"):
        found = [Change(source, kind)]
    elif kind in ("modified", "closed", "attrib") and not event.is_directory:
        # "closed" is a close after writing; a touch is "attrib" to newer watchdogs, "modified" to
        # older ones. A directory's "modified" only says its listing changed, and every entry
        # that changed has an event of its own.
        found = [Change(source, "modified")]
    else:
        # "opened", "closed_no_write": reading is no change, and loading a plugin reads it.
        return []
    return [change for change in found if not is_debris(root, change.path)]


class _Handler(FileSystemEventHandler):
    """Puts one watched directory's changes on the queue."""

    def __init__(self, root: Path, sink: queue.Queue[Change]) -> None:
        super().__init__()
        self.root = root
        self._sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        for change in _changes(self.root, event):
            self._sink.put(change)


class Watcher:
    """Watches directories recursively and queues a Change for each hint that something changed.

    Whole directories, never single files: an editor that saves by renaming a new file over the
    old one leaves a file's watch on the deleted original. ``polling=None`` uses inotify (the
    platform's native notifier) and falls back to polling every ``config.watch_interval`` where
    it fails; True always polls; False never does, and a failure is an error instead.
    """

    def __init__(
        self, config: Config, *, polling: bool | None = None, rescan_every: float = 30.0
    ) -> None:
        if isinstance(rescan_every, bool) or not rescan_every > 0 or math.isinf(rescan_every):
            raise ValueError(f"rescan_every must be a finite number > 0, got {rescan_every!r}")
        self.config = config
        self._polling = polling
        self._rescan_every = rescan_every
        self._queue: queue.Queue[Change] = queue.Queue()
        self._handlers: dict[Path, _Handler] = {}  # by resolved directory, so adds are idempotent
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = threading.Event()
        self._observer = self._start_polling() if polling else self._start_native()
        self._rescan = threading.Thread(
            target=self._rescan_loop, name="helixhooks-watcher-rescan", daemon=True
        )
        self._rescan.start()

    @property
    def mode(self) -> str:
        """What is in use now: "polling", or "inotify" (the native notifier)."""
        return "polling" if isinstance(self._observer, PollingObserver) else "inotify"

    def add(self, directory: str | os.PathLike[str]) -> None:
        """Watch ``directory`` and everything below it, including what is created there later.

        Changes name paths under the directory as given, made absolute but with symlinks kept,
        as discovery names the plugins in it. Adding the same directory again does nothing.
        """
        given = Path(os.path.abspath(directory))
        try:
            resolved = given.resolve(strict=True)
        except FileNotFoundError as exc:
            raise HelixError(
                "the directory to watch does not exist",
                path=str(given),
                hint="create it first, or correct the path (plugin_dirs in the Config)",
            ) from exc
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, before 3.13
            raise HelixError(f"cannot watch the directory: {exc}", path=str(given)) from exc
        if not resolved.is_dir():
            raise HelixError("cannot watch a file, only a directory", path=str(given))
        with self._lock:
            if self._closed:
                raise HelixError("the watcher is closed", hint="create a new Watcher")
            if resolved in self._handlers:
                return
            handler = _Handler(given, self._queue)
            self._schedule(handler)
            self._handlers[resolved] = handler

    def events(self) -> queue.Queue[Change]:
        """The queue the changes go into, for a consumer that blocks on ``get(timeout=...)``."""
        return self._queue

    def get(self, timeout: float | None = None) -> Change | None:
        """The next change, or None if none comes within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop watching: ends the observer's threads and the rescan timer. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            observer = self._observer
        self._stopping.set()
        _stop(observer)
        self._rescan.join(_JOIN_TIMEOUT)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _schedule(self, handler: _Handler) -> None:
        """Watch ``handler.root``; where inotify fails, move every directory to polling."""
        try:
            self._observer.schedule(handler, str(handler.root), recursive=True)
            return
        except OSError as exc:
            if self.mode == "polling" or self._polling is False:
                raise _cannot_watch(handler.root, exc, polling=self.mode == "polling") from exc
            self._warn(f"inotify cannot watch {handler.root}", exc)
        native, self._observer = self._observer, self._start_polling()
        try:
            for watched in (*self._handlers.values(), handler):
                try:
                    self._observer.schedule(watched, str(watched.root), recursive=True)
                except OSError as exc:
                    raise _cannot_watch(watched.root, exc, polling=True) from exc
        finally:
            # Only once polling has its first snapshots, so no change falls between the two.
            _stop(native)

    def _start_native(self) -> BaseObserver:
        try:
            observer = Observer()
            observer.start()
        except OSError as exc:
            if self._polling is False:
                raise _cannot_watch(None, exc, polling=False) from exc
            self._warn("inotify is unavailable", exc)
            return self._start_polling()
        return observer

    def _warn(self, what: str, exc: OSError) -> None:
        interval = self.config.watch_interval
        _logger.warning("%s (%s); polling every %gs instead", what, exc.strerror or exc, interval)

    def _start_polling(self) -> BaseObserver:
        observer = PollingObserver(timeout=self.config.watch_interval)
        observer.start()
        return observer

    def _rescan_loop(self) -> None:
        # Event.wait, not sleep: close() wakes it at once.
        while not self._stopping.wait(self._rescan_every):
            with self._lock:
                if self._closed:
                    return
                roots = [handler.root for handler in self._handlers.values()]
                if self.mode == "inotify" and not all(
                    emitter.is_alive() for emitter in self._observer.emitters
                ):
                    # watchdog's reader thread died (say, a warning turned into an error in
                    # it): nothing would come but rescans, so poll instead.
                    _logger.warning("inotify stopped reporting; polling instead")
                    self._observer, native = self._start_polling(), self._observer
                    for handler in self._handlers.values():
                        self._observer.schedule(handler, str(handler.root), recursive=True)
                    _stop(native)
            for root in roots:
                self._queue.put(Change(root, "rescan"))


def _cannot_watch(directory: Path | None, exc: OSError, *, polling: bool) -> HelixError:
    hint = "raise the fs.inotify.max_user_watches or max_user_instances sysctl, or let it poll"
    return HelixError(
        f"cannot watch for changes: {exc.strerror or exc}",
        path=str(directory) if directory is not None else None,
        hint=None if polling else hint,
    )


def _stop(observer: BaseObserver) -> None:
    observer.stop()
    if observer.ident is not None:  # join() refuses a thread that never started
        observer.join(_JOIN_TIMEOUT)
    if observer.is_alive():
        _logger.warning("watchdog observer did not stop within %gs", _JOIN_TIMEOUT)
