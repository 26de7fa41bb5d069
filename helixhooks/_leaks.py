"""What outlives a test: threads and child processes started since a snapshot was taken.

The pytest fixtures (pytest_plugin.py) take a snapshot before a test's systems start and look
again once they are closed: a plugin thread that ``helix_stop`` never ended, a call abandoned
at its time limit, or a worker process left behind is then named, with where it runs.
Child processes are read from ``/proc`` (Linux); elsewhere only threads are checked.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import attrs

from ._bounded import _IDLE_NAME

# One child: (pid, start time in clock ticks since boot), so a reused pid is a new child.
Child = tuple[int, int]


@attrs.frozen
class Snapshot:
    """The threads and child processes alive at one moment (None: no ``/proc`` to read)."""

    threads: frozenset[threading.Thread]
    children: frozenset[Child] | None

    @classmethod
    def take(cls) -> Snapshot:
        children = _children()
        return cls(frozenset(_threads()), None if children is None else frozenset(children))

    def leftovers(self, grace: float, *, replacing: bool = False) -> list[str]:
        """What started since and still runs after up to ``grace`` seconds, one line each.

        ``replacing``: what started since may stand in for what ended since (a reload's new
        generation for the old one), so there are leftovers only if there are more threads,
        or more child processes, than at the snapshot; then every new one is listed.
        """
        deadline = time.monotonic() + grace
        while True:
            threads = _threads()
            new_threads = [t for t in threads if t not in self.threads]
            known = self.children or frozenset()
            children = {} if self.children is None else _children() or {}
            new_children = {key: line for key, line in children.items() if key not in known}
            if replacing and len(threads) <= len(self.threads):
                new_threads = []
            if replacing and len(children) <= len(known):
                new_children = {}
            if (not new_threads and not new_children) or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        return [describe_thread(t) for t in new_threads] + [
            f"child process {pid}: {line}" for (pid, _), line in sorted(new_children.items())
        ]


def _threads() -> list[threading.Thread]:
    """The live threads but helixhooks' own that outlast a test by design: idle workers of its
    pool, which end by themselves, and the process tier's spawner, which every worker is forked
    from and which lives as long as the process (see isolation/worker_process.py)."""
    tier = sys.modules.get("helixhooks.isolation.worker_process")
    spawner: str | None = getattr(tier, "SPAWNER_NAME", None)
    return [
        t
        for t in threading.enumerate()
        if t.is_alive()
        and t.name != _IDLE_NAME
        and not (spawner is not None and t.name.startswith(spawner + "_"))
    ]


def describe_thread(thread: threading.Thread) -> str:
    """A thread's name and what it runs: the function it was started with and where it is now."""
    kind = "daemon thread" if thread.daemon else "thread"
    text = f"{kind} {thread.name!r}"
    target = getattr(thread, "_target", None) or type(thread).run
    code = getattr(target, "__code__", None)
    if code is not None and target is not threading.Thread.run:
        name = getattr(target, "__qualname__", code.co_name)
        text += f" started with {name}() ({code.co_filename}:{code.co_firstlineno})"
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is not None:
        text += f", now at {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    return text


def _children() -> dict[Child, str] | None:
    """This process's children that have not exited, each with its command line; None if
    there is no ``/proc`` to read them from."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    me = os.getpid()
    found: dict[Child, str] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # The command name may hold spaces and parentheses: the fields follow the last ")".
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) != me or fields[0] == "Z":  # Z: exited, not yet waited for
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        line = " ".join(arg.decode(errors="replace") for arg in argv if arg)
        command = stat[stat.index("(") + 1 : stat.rindex(")")]
        found[(int(entry.name), int(fields[19]))] = line or command
    return found
