"""Lifecycle operations as steps (helixhooks._operation): bounded plugin calls, one handoff."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

import helixhooks as hh
from helixhooks import _bounded
from helixhooks._operation import Outcome, Step, Steps, drive, on_behalf_of, post

from ._plugins import wait_for, write_plugin


def _step(fn: object, timeout: float = 5.0, phase: str = "test") -> Step:
    return Step(fn, plugin="p", phase=phase, timeout=timeout)  # type: ignore[arg-type]


def test_an_operation_without_plugin_calls_runs_on_the_calling_thread() -> None:
    def steps() -> Steps[int]:
        assert threading.get_ident() == caller
        return 7
        yield  # a generator, that never yields

    caller = threading.get_ident()
    before = threading.active_count()
    assert drive(steps()) == 7
    assert threading.active_count() == before


def test_steps_run_in_order_off_the_caller_with_their_outcomes() -> None:
    caller = threading.get_ident()
    seen: list[tuple[str, object]] = []

    def boom() -> None:
        raise ValueError("boom")

    def steps() -> Steps[list[object]]:
        first: Outcome = yield _step(lambda: threading.get_ident())
        seen.append(("first", first.value))
        second: Outcome = yield _step(boom)
        seen.append(("second", type(second.error).__name__))
        third: Outcome = yield _step(lambda: time.sleep(0.01) or "slept")
        return [first.timed_out, second.timed_out, third.value, third.duration >= 0.01]

    assert drive(steps()) == [False, False, "slept", True]
    assert seen[0][0] == "first" and seen[0][1] != caller
    assert seen[1] == ("second", "ValueError")


def test_an_overrunning_step_times_out_and_the_operation_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    finished = threading.Event()
    hung: list[int] = []

    def hang() -> str:
        hung.append(threading.get_ident())
        release.wait(30)
        finished.set()
        return "late"

    def steps() -> Steps[tuple[bool, float, object, int]]:
        stuck: Outcome = yield _step(hang, timeout=0.2)
        after: Outcome = yield _step(threading.get_ident)
        return stuck.timed_out, stuck.duration, after.value, threading.get_ident()

    began = time.monotonic()
    try:
        timed_out, duration, after_ident, tail_ident = drive(steps())
        took = time.monotonic() - began
        assert timed_out and 0.2 <= duration < 10
        assert took < 10, "the caller got control back on time"
        assert not finished.is_set()
        # The rest went on on another thread; the stuck one counts as abandoned for drains.
        assert hung and after_ident != hung[0] and tail_ident != hung[0]
        assert hung[0] in _bounded.abandoned_threads()
    finally:
        release.set()
    wait_for(finished.is_set, "the abandoned step to end")
    wait_for(lambda: "outcome is discarded" in caplog.text, "the late outcome to be logged")
    wait_for(lambda: hung[0] not in _bounded.abandoned_threads(), "the thread to be released")


def test_posted_callbacks_run_on_the_caller_in_order_before_drive_returns() -> None:
    caller = threading.get_ident()
    ran: list[tuple[int, int]] = []

    def steps() -> Steps[None]:
        for index in range(3):
            yield _step(lambda: None)
            # Here the operation runs on a worker; the callback runs on the caller.
            post(lambda index=index: ran.append((index, threading.get_ident())))  # type: ignore[misc]

    drive(steps())
    assert ran == [(0, caller), (1, caller), (2, caller)]


def test_post_outside_an_operation_runs_at_once() -> None:
    ran: list[int] = []
    post(lambda: ran.append(threading.get_ident()))
    assert ran == [threading.get_ident()]


def test_an_error_of_the_operation_reaches_the_caller() -> None:
    def steps() -> Steps[None]:
        yield _step(lambda: None)
        raise LookupError("bookkeeping went wrong")

    with pytest.raises(LookupError, match="bookkeeping"):
        drive(steps())


def test_the_operation_acts_on_behalf_of_its_caller() -> None:
    caller = threading.get_ident()

    def steps() -> Steps[frozenset[int]]:
        yield _step(lambda: None)
        return on_behalf_of()

    idents = drive(steps())
    assert caller in idents and len(idents) == 2


def test_subscribers_hear_lifecycle_events_on_the_callers_thread(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_plugin(
            tmp_path,
            name,
            "import helixhooks as hh\n\nclass Plugin:\n"
            "    @hh.hookimpl\n    def helix_start(self, ctx):\n        pass\n",
            entry="plugin:Plugin",
        )
    system = hh.PluginSystem(hh.Config(plugin_dirs=[tmp_path], entry_point_group=None))
    heard: list[tuple[str, str, int]] = []
    system.subscribe(lambda event: heard.append((event.kind, event.name, threading.get_ident())))
    try:
        system.load_all()
        system.start_all()
        system.stop_all()
    finally:
        system.close()
    caller = threading.get_ident()
    kinds = [(kind, name) for kind, name, _ in heard]
    assert ("started", "a") in kinds and ("stopped", "b") in kinds
    assert {ident for _, _, ident in heard} == {caller}


def test_a_hanging_start_is_abandoned_and_later_plugins_still_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = tmp_path / "release"
    body = (
        "import os, time\nimport helixhooks as hh\n\nclass Plugin:\n"
        "    @hh.hookimpl\n    def helix_start(self, ctx):\n"
        f"        while not os.path.exists({str(release)!r}):\n            time.sleep(0.01)\n"
    )
    write_plugin(tmp_path / "plugins", "a_hangs", body, entry="plugin:Plugin")
    write_plugin(
        tmp_path / "plugins",
        "b_fine",
        "import helixhooks as hh\n\nclass Plugin:\n"
        "    @hh.hookimpl\n    def helix_start(self, ctx):\n        pass\n",
        entry="plugin:Plugin",
    )
    caplog.set_level(logging.WARNING)
    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[tmp_path / "plugins"], entry_point_group=None, load_timeout=0.3)
    )
    try:
        system.load_all()
        assert system.start_all() == ["b_fine"]
        error = system.get("a_hangs").error
        assert isinstance(error, hh.PluginTimeout)
        assert system.get("a_hangs").state is hh.PluginState.FAILED
    finally:
        release.write_text("go")
        system.close()
    wait_for(lambda: "outcome is discarded" in caplog.text, "the late start to be discarded")


def test_callbacks_of_a_nested_operation_reach_the_outermost_caller() -> None:
    caller = threading.get_ident()
    ran: list[int] = []

    def inner() -> Steps[None]:
        yield _step(lambda: None)
        post(lambda: ran.append(threading.get_ident()))

    def outer() -> Steps[None]:
        yield _step(lambda: None)
        drive(inner())  # from the worker that runs this operation

    drive(outer())
    assert ran == [caller]
