"""One worker process as the host sees it: spawning, the handshake, calls, and how it ended.

Calls from many threads share one socket. Whichever caller is waiting when nobody reads becomes
the reader and hands each answer to its caller (leader/followers), so a lone caller reads its own
answer with no thread hop; a monitor thread waits for the process and fails every call in flight
the moment it dies, so no call waits on a dead worker. Nothing from the worker is ever unpickled.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import HelixError, PluginTimeout, ResourceExceeded, SandboxError, WorkerCrashed
from . import wire

_logger = logging.getLogger("helixhooks.isolation")

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")

# PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process: workers
# are forked from this one long-lived thread, never from a passing operation's thread.
# It is started by the first worker and lives as long as the process: the leak checks of the
# pytest fixtures (helixhooks/_leaks.py) know it by this name.
SPAWNER_NAME = "helixhooks-spawner"
_SPAWNER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=SPAWNER_NAME)

_SIGNAL_LIMITS = {signal.SIGXCPU: "cpu_seconds", signal.SIGXFSZ: "file_size_mb"}
# Worker output relayed to the host's log, at most this many lines a second; the rest is counted.
_LINES_PER_SECOND = 50
_LINE_LIMIT = 2000


class WorkerProcess:
    """A started worker of plugin ``name``; ``hello`` is its handshake (hooks, layers, pid)."""

    def __init__(
        self,
        name: str,
        load: Mapping[str, Any],
        *,
        env: Mapping[str, str],
        cwd: str,
        timeout: float,
        on_exit: Callable[[WorkerProcess, HelixError], None] | None = None,
    ) -> None:
        self.name = name
        self.on_exit = on_exit
        self._log = logging.getLogger(f"helixhooks.plugin.{name}")
        self._cond = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self._waiting: set[int] = set()
        self._reading = False
        self._followers = 0  # callers waiting for the reader to hand them their answer
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._killed_for: HelixError | None = None
        self._stopping = False
        #: Why the worker is gone; None while it serves.
        self.ended: HelixError | None = None
        host_end, worker_end = socket.socketpair()
        try:
            self.process = _SPAWNER.submit(_spawn, worker_end, env, cwd).result()
        finally:
            worker_end.close()
        self._sender = host_end
        self._reader = host_end.dup()  # its own timeout: a reader's never limits a sender's
        self._channel = wire.Channel(self._reader)
        threading.Thread(
            target=self._relay_output, name=f"helixhooks-out-{name}", daemon=True
        ).start()
        threading.Thread(
            target=self._monitor, name=f"helixhooks-worker-{name}", daemon=True
        ).start()
        self.hello = self._handshake(load, timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _handshake(self, load: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        try:
            self._sender.settimeout(timeout)
            self._sender.sendall(wire.encode(dict(load)))
            self._reader.settimeout(timeout)
            hello: Any = self._channel.receive()
        except TimeoutError:
            self.kill(PluginTimeout(self.name, "worker start", timeout))
            self._wait_ended(timeout)  # a failed load leaves no process behind
            raise PluginTimeout(
                self.name,
                "worker start",
                timeout,
                hint="the worker did not answer the handshake in time; raise load_timeout, or "
                "move slow work out of the plugin's module top level",
            ) from None
        except (OSError, wire.ProtocolError) as exc:
            raise self._broken(f"failed its handshake: {exc}") from None
        if not isinstance(hello, dict) or hello.get("op") not in ("hello", "refused"):
            raise self._broken(f"answered the handshake with {str(hello)[:200]!r}")
        if hello["op"] == "refused":
            self.process.wait(timeout=timeout)
            return hello
        if hello.get("protocol") != wire.PROTOCOL or not isinstance(hello.get("hooks"), list):
            raise self._broken(f"speaks another protocol: {str(hello)[:200]!r}")
        return hello

    def request(self, message: dict[str, Any], timeout: float | None, *, phase: str) -> Any:
        """Send ``message`` (its "id" is set here) and return the worker's answer to it.

        Past ``timeout`` the worker's process group is killed and PluginTimeout raised; a worker
        that dies meanwhile raises its WorkerCrashed or ResourceExceeded. TypeError or
        ValueError: ``message`` holds what JSON cannot carry (nothing was sent).
        """
        ident = message["id"] = next(self._ids)
        frame = wire.encode(message)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self.ended is not None:
                raise _again(self.ended)
            self._waiting.add(ident)
        try:
            self._send(frame, deadline)
        except BaseException:
            with self._cond:
                self._waiting.discard(ident)
            raise
        return self._await(ident, deadline, phase, timeout)

    def _send(self, frame: bytes, deadline: float | None) -> None:
        with self._send_lock:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            try:
                _set_timeout(self._sender, left)
                self._sender.sendall(frame)
            except OSError as exc:
                # It died, or stopped reading: _await reports which, as the monitor sees it.
                _logger.debug("plugin %r: sending to its worker failed: %s", self.name, exc)

    def _await(self, ident: int, deadline: float | None, phase: str, timeout: float | None) -> Any:
        """The answer to ``ident``: read by this thread when nobody else reads, else handed over."""
        cond = self._cond
        with cond:
            try:
                while True:
                    reply = self._replies.pop(ident, None)
                    if reply is not None:
                        return reply
                    if self.ended is not None:
                        raise _again(self.ended)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    if self._reading:
                        self._followers += 1
                        try:
                            cond.wait(remaining)
                        finally:
                            self._followers -= 1
                        continue
                    self._reading = True
                    cond.release()
                    try:
                        message = self._read(remaining)
                    finally:
                        cond.acquire()
                        self._reading = False
                    if message is not None:
                        self._deliver(message)
                    if self._followers:
                        cond.notify_all()  # an answer for one of them, or the reading to take
            finally:
                self._waiting.discard(ident)
        assert timeout is not None
        error = PluginTimeout(
            self.name,
            phase,
            timeout,
            hint="its worker was killed; make the hook return sooner, or raise "
            + ("call_timeout" if phase.startswith("call") else "load_timeout"),
        )
        self.kill(error)
        raise error

    def _read(self, timeout: float | None) -> dict[str, Any] | None:
        """One answer, or None when ``timeout`` passed first (between frames: nothing is lost)."""
        try:
            _set_timeout(self._reader, timeout)
            message = self._channel.receive()
        except TimeoutError:
            return None
        except (wire.ChannelClosed, OSError):  # ECONNRESET too: it died with requests unread
            self._wait_for_exit()
            return None
        except wire.ProtocolError as exc:
            self.kill(WorkerCrashed(f"broke the protocol: {exc}", plugin=self.name))
            return None
        if not isinstance(message, dict) or not isinstance(message.get("id"), int):
            self.kill(
                WorkerCrashed(
                    f"sent an answer without an id: {str(message)[:200]!r}", plugin=self.name
                )
            )
            return None
        return message

    def _deliver(self, message: dict[str, Any]) -> None:
        """Called holding the condition."""
        ident = message["id"]
        if ident not in self._waiting:
            self.kill(
                WorkerCrashed(f"answered request {ident}, which nobody asked", plugin=self.name)
            )
            return
        self._replies[ident] = message

    def _wait_for_exit(self) -> None:
        """The worker closed its channel: it is exiting, or must be made to."""
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill(WorkerCrashed("closed its channel but kept running", plugin=self.name))

    def stop(self, timeout: float) -> None:
        """Ask the worker to exit; kill it if it has not within ``timeout``."""
        self._stopping = True
        if self.ended is None:
            try:
                self.request({"op": "stop"}, timeout, phase="worker stop")
            except HelixError as exc:  # already gone, or killed: either way it no longer runs
                _logger.debug("plugin %r: stopping its worker: %s", self.name, exc)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(WorkerCrashed("did not exit when asked", plugin=self.name))
        self._wait_ended(timeout)

    def kill(self, reason: HelixError) -> None:
        """Kill the worker's whole process group; ``reason`` is what calls in flight raise."""
        with self._cond:
            if self._killed_for is None and self.ended is None:
                self._killed_for = reason
        _kill_group(self.process.pid)

    def _wait_ended(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.ended is None and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())

    def _monitor(self) -> None:
        status = self.process.wait()
        # What it forked may hold its end of the channel open: they go with it.
        _kill_group(self.process.pid)
        with self._cond:
            reason = self._killed_for or _exit_error(self.name, status, stopping=self._stopping)
            self.ended = reason
            self._cond.notify_all()
        for sock in (self._sender, self._reader):
            with contextlib.suppress(OSError):  # not connected any more: nothing left to wake
                sock.shutdown(socket.SHUT_RDWR)
        if self.on_exit is not None and not self._stopping:
            self.on_exit(self, reason)
        self._sender.close()
        self._reader.close()

    def _relay_output(self) -> None:
        """The worker's stdout and stderr, into the plugin's log: a flood is counted, not kept."""
        stream = self.process.stdout
        assert stream is not None
        budget, second, dropped = _LINES_PER_SECOND, int(time.monotonic()), 0
        pending = b""
        for chunk in iter(lambda: os.read(stream.fileno(), 1 << 16), b""):
            *lines, pending = (pending + chunk).split(b"\n")
            pending = pending[-_LINE_LIMIT:]
            now = int(time.monotonic())
            if now != second:
                if dropped:
                    self._log.warning("worker output: %d lines dropped (too many)", dropped)
                budget, second, dropped = _LINES_PER_SECOND, now, 0
            for line in lines:
                if budget > 0:
                    budget -= 1
                    _log_line(self._log, line[:_LINE_LIMIT].decode("utf-8", "replace"))
                    continue
                if not dropped:
                    # Said at once: the count below waits for more output, which may not come.
                    self._log.warning(
                        "worker output: over %d lines a second; the rest are dropped",
                        _LINES_PER_SECOND,
                    )
                dropped += 1
        if dropped:
            self._log.warning("worker output: %d lines dropped (too many)", dropped)
        stream.close()

    def _broken(self, why: str) -> WorkerCrashed:
        error = WorkerCrashed(why, plugin=self.name)
        self.kill(error)
        self._wait_ended(5.0)
        return error


def _spawn(worker_end: socket.socket, env: Mapping[str, str], cwd: str) -> subprocess.Popen[bytes]:
    fd = worker_end.fileno()
    return subprocess.Popen(
        [sys.executable, "-I", "-X", "utf8", WORKER, str(fd)],
        pass_fds=(fd,),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a timeout kills all it forked too
    )


def _set_timeout(sock: socket.socket, timeout: float | None) -> None:
    # Each change is a system call (blocking mode on or off); a call without a limit, the
    # common case, changes nothing.
    if timeout is not None or sock.gettimeout() is not None:
        sock.settimeout(timeout)


def _kill_group(pid: int) -> None:
    # ProcessLookupError: the group is gone already. PermissionError: its id is another user's
    # group now, so nothing of ours is left in it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _exit_error(name: str, status: int, *, stopping: bool) -> SandboxError:
    if status < 0:
        number = -status
        limit = (
            _SIGNAL_LIMITS.get(signal.Signals(number)) if number in signal.valid_signals() else None
        )
        if limit is not None:
            return ResourceExceeded(
                f"its worker went over limits.{limit} (killed by {signal.Signals(number).name})",
                plugin=name,
                hint=f"raise limits.{limit} in the host's Config, or make the plugin use less",
            )
        try:
            what = signal.Signals(number).name
        except ValueError:
            what = f"signal {number}"
        return WorkerCrashed(f"its worker was killed by {what}", plugin=name)
    if stopping:
        return WorkerCrashed("its worker was stopped", plugin=name)
    return WorkerCrashed(f"its worker exited with status {status}", plugin=name)


def _again(error: HelixError) -> HelixError:
    """A fresh copy per raise: one exception object raised in many threads tangles tracebacks."""
    copy = type(error).__new__(type(error))
    copy.__dict__.update(error.__dict__)
    Exception.__init__(copy, *error.args)
    return copy


def _log_line(logger: logging.Logger, line: str) -> None:
    level, _, rest = line.partition(" ")
    number = logging.getLevelName(level)
    if isinstance(number, int) and rest:
        logger.log(number, "%s", rest)
    else:
        logger.info("%s", line)
