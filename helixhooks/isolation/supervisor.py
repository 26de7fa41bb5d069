"""Bringing process plugins back after their worker dies: with backoff, until a crash loop.

A worker that dies while its plugin serves is reported (a ``worker_crashed`` event), its plugin
taken out of service as FAILED with the reason, and restarted after ``backoff`` seconds, doubling
per crash up to ``max_backoff``. ``crash_loop`` crashes within ``window`` seconds end in FAILED
for good (until the host restarts or reloads it). A worker its plugin's own stop ended, or one of
a generation no longer serving, is nobody's concern here.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from ..errors import HelixError, WorkerCrashed
from ..plugin import PluginEvent
from .proxy import ProcessPlugin

_logger = logging.getLogger("helixhooks.isolation")


class Supervisor:
    """Restarts with backoff; ``close`` cancels the restarts still waiting."""

    crash_loop = 5
    window = 60.0
    backoff = 0.5
    max_backoff = 30.0

    def __init__(
        self,
        *,
        serving: Callable[[str, ProcessPlugin, bool], str | None],
        fail: Callable[[str, HelixError], None],
        restart: Callable[[str], None],
        emit: Callable[[PluginEvent], None],
    ) -> None:
        #: The plugin's version if ``proxy`` is its current generation's (and, when the flag
        #: says so, it is FAILED), else None.
        self._serving = serving
        self._fail = fail
        self._restart = restart
        self._emit = emit
        self._lock = threading.Lock()
        self._crashes: dict[str, collections.deque[float]] = {}
        self._timers: set[threading.Timer] = set()

    def crashed(self, name: str, proxy: ProcessPlugin, error: HelixError) -> None:
        """A worker died on its own (called on its monitor thread)."""
        version = self._serving(name, proxy, False)
        if version is None:
            return
        _logger.warning("%s", error)
        self._emit(PluginEvent("worker_crashed", name, version, error=error))
        now = time.monotonic()
        with self._lock:
            crashes = self._crashes.setdefault(name, collections.deque(maxlen=self.crash_loop))
            crashes.append(now)
            looping = len(crashes) == self.crash_loop and now - crashes[0] <= self.window
            delay = min(self.backoff * 2 ** (len(crashes) - 1), self.max_backoff)
        if looping:
            gave_up = WorkerCrashed(
                f"its worker crashed {self.crash_loop} times in {self.window:g}s; not restarted "
                f"again (last: {error.message if isinstance(error, HelixError) else error})",
                plugin=name,
                hint="fix the crash (see the plugin's log), then restart or reload it",
            )
            gave_up.__cause__ = error
            self._take_out(name, gave_up)
            return
        if not self._take_out(name, error):
            return
        timer = threading.Timer(delay, self._bring_back, (name, proxy))
        timer.daemon = True
        timer.name = f"helixhooks-restart-{name}"
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive()} | {timer}
        timer.start()

    def _take_out(self, name: str, error: HelixError) -> bool:
        try:
            self._fail(name, error)
        except HelixError as exc:  # the host unloaded it meanwhile: nothing left to restart
            _logger.debug("plugin %r is gone, not restarted: %s", name, exc)
            return False
        return True

    def _bring_back(self, name: str, proxy: ProcessPlugin) -> None:
        if self._serving(name, proxy, True) is None:
            return  # stopped, reloaded or unloaded meanwhile: the host's to start now
        try:
            self._restart(name)
        except HelixError as exc:  # recorded on the plugin; its next crash, if any, retries
            _logger.warning("restarting %r after its worker crashed failed: %s", name, exc)

    def forget(self, name: str) -> None:
        """The host brought the plugin back itself: its crash count starts again."""
        with self._lock:
            self._crashes.pop(name, None)

    def close(self) -> None:
        with self._lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
