"""``helixhooks run`` as an operator sees it, and ``helixhooks stats``: real child processes.

Every wait is bounded: a child's output is read line by line in a thread of its own, and each
expected line has a deadline after which the test fails showing what was printed.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._plugins import write_plugin

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path}


def _command(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helixhooks", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Running:
    """A ``helixhooks run`` child whose stdout is read as it comes."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "helixhooks", "run", *args],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first line from now on that matches ``pattern``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in {timeout}s:\n" + self.output)
            if line is None:
                pytest.fail(f"run ended with no line matching {pattern!r}:\n" + self.output)
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> str:
        """SIGTERM, then everything it printed; it must exit 0 within 60 s."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        while (line := self._lines.get(timeout=30)) is not None:
            self.seen.append(line)
        assert self.proc.returncode == 0, self.output
        return self.output

    @property
    def output(self) -> str:
        stderr = (
            self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        )
        return "\n".join(self.seen) + ("\n[stderr]\n" + stderr if stderr else "")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Children started by a test: killed if the test did not stop them."""
    started: list[Running] = []
    yield started
    for child in started:
        child.kill()


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of the examples to edit, calling the hooks every 0.2 s."""
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("__pycache__", "packages"))
    config = copy / "helixhooks.toml"
    text = config.read_text()
    assert "run_interval = 2\n" in text
    config.write_text(
        text.replace("run_interval = 2\n", "run_interval = 0.2\nentry_point_group = false\n")
    )
    return copy


def test_run_calls_hooks_on_its_interval_and_shows_an_edit_take_effect(
    examples: Path, running: list[Running]
) -> None:
    run = Running("--watch", "--snapshot", "snap.json", cwd=examples)
    running.append(run)
    run.expect(r"watching .*plugins for changes")
    run.expect(r"^\d\d:\d\d:\d\d call +report -> \['\d+ words, score \d\.\d\d: \w+'\]$")
    run.expect(r"^\d\d:\d\d:\d\d call +greet -> \['hello, operator'\]$")

    reporter = examples / "plugins" / "reporter" / "plugin.py"
    reporter.write_text(reporter.read_text().replace(" words, score", " tokens, score"))
    run.expect(r"reloaded reporter 0\.9\.0", timeout=30)
    run.expect(r"call +report -> \['\d+ tokens, score")

    reporter.write_text(reporter.read_text() + "\nx = (\n")
    run.expect(r"reload_failed reporter 0\.9\.0", timeout=30)
    refusal = run.expect(r"^ +plugin 'reporter': reload refused")
    assert "was never closed" in refusal.string
    run.expect(r"call +report -> \['\d+ tokens, score")  # the running version serves on

    out = run.stop()
    table = out[out.index("per plugin, while it served") :]
    header, *rows = table.splitlines()[1:7]
    assert header.split() == [
        "PLUGIN",
        "VERSION",
        "STATE",
        "CALLS",
        "ERRORS",
        "MEAN",
        "P95",
        "RELOADS",
    ]
    reporter_row = next(row for row in rows if row.startswith("reporter "))
    assert re.fullmatch(
        r"reporter +0\.9\.0 +started +\d+ +0 +\S+ \w?s +\S+ \w?s +1 \(1 refused\)", reporter_row
    )

    stats = _command("stats", "--snapshot", "snap.json", cwd=examples)
    assert stats.returncode == 0, stats.stderr
    assert "the run has ended" in stats.stdout
    assert reporter_row in stats.stdout.splitlines()


def test_stats_reads_the_snapshot_of_a_running_system(
    examples: Path, running: list[Running], tmp_path: Path
) -> None:
    assert _command("stats", cwd=examples).returncode == 2  # no run yet
    run = Running(cwd=examples)
    running.append(run)
    run.expect("running until Ctrl-C")
    run.expect(r"call +report")
    deadline = time.monotonic() + 30
    while True:  # the snapshot after a call: every 2 s
        stats = _command("stats", "--json", cwd=examples)
        plugins = json.loads(stats.stdout)["plugins"] if stats.returncode == 0 else []
        if any(p["name"] == "reporter" and p["calls"] for p in plugins):
            break
        assert time.monotonic() < deadline, stats.stdout + stats.stderr
        time.sleep(0.2)
    shown = _command("stats", cwd=examples).stdout
    assert f"pid {run.proc.pid}: still running" in shown
    assert re.search(r"^reporter +0\.9\.0 +started +[1-9]", shown, re.M), shown
    run.stop()
    assert "the run has ended" in _command("stats", cwd=examples).stdout
    # By default the snapshot is in the state directory, named after the plugin dirs.
    assert list((Path(os.environ["XDG_STATE_HOME"]) / "helixhooks").glob("run-*.json"))


def test_stats_without_a_snapshot_says_how_to_get_one(tmp_path: Path) -> None:
    result = _command("stats", "--snapshot", str(tmp_path / "none.json"), cwd=tmp_path)
    assert result.returncode == 2
    assert "no snapshot at" in result.stderr and "helixhooks run" in result.stderr


def test_run_serves_prometheus_metrics(examples: Path, running: list[Running]) -> None:
    pytest.importorskip("prometheus_client", reason="the helixhooks[prometheus] extra")
    from prometheus_client.parser import text_string_to_metric_families

    run = Running("--metrics-port", "0", cwd=examples)
    running.append(run)
    url = run.expect(r"serving metrics at (http://127\.0\.0\.1:\d+/metrics)").group(1)
    run.expect(r"call +report")

    def calls_of_report() -> float:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        for plugin in ("tokenizer", "analyzer", "reporter", "webhook", "hello"):
            assert (
                samples[("helixhooks_plugin_state", (("plugin", plugin), ("state", "started")))]
                == 1
            )
        return samples[
            ("helixhooks_hook_calls_total", (("hook", "report"), ("plugin", "reporter")))
        ]

    first = calls_of_report()
    deadline = time.monotonic() + 30
    while calls_of_report() <= first:
        assert time.monotonic() < deadline, "the calls count did not grow"
        time.sleep(0.1)
    run.stop()


def test_metrics_port_without_prometheus_client_is_a_usage_error(examples: Path) -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from helixhooks.cli import main\n"
        "sys.exit(main(['run', '--metrics-port', '0', '--duration', '0']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=examples,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pip install 'helixhooks[prometheus]'" in result.stderr


def test_run_shows_calls_that_raise_denials_and_health_changes(tmp_path: Path) -> None:
    (tmp_path / "spec.py").write_text(
        "import helixhooks as hh\nclass Spec:\n    @hh.hookspec\n    def shout(self, text): ...\n"
    )
    write_plugin(
        tmp_path / "plugins",
        "grumpy",
        f"""
        import helixhooks as hh

        class Plugin:
            @hh.hookimpl
            def shout(self, text):
                open({str(tmp_path / "not-granted")!r}, "w")
        """,
    )
    write_plugin(
        tmp_path / "plugins",
        "moody",
        """
        import helixhooks as hh

        class Plugin:
            checks = 0

            @hh.hookimpl
            def helix_health_check(self):
                self.checks += 1
                return self.checks > 3 or "warming up"
        """,
    )
    (tmp_path / "helixhooks.toml").write_text(
        'plugin_dirs = ["plugins"]\nentry_point_group = false\nhookspecs = ["spec.py:Spec"]\n'
        "health_interval = 0.05\nrun_interval = 0.1\n"
        '[[run_calls]]\nhook = "shout"\nargs = { text = "hi" }\n[[run_calls]]\nhook = "whisper"\n'
    )
    result = _command("run", "--duration", "1.5", "--snapshot", "s.json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "run_calls: no hook named 'whisper', not calling it (the host's hooks: shout)" in out
    assert re.search(r"\d permission_denied grumpy 1\.0\.0\n +plugin 'grumpy': .*write", out), out
    assert re.search(r"\d raised +shout\n +PermissionDenied: plugin 'grumpy'", out), out
    lines = [line.split(maxsplit=2)[1:] for line in out.splitlines() if " moody " in line]
    kinds = [kind for kind, rest in lines if rest.startswith("moody")]
    assert kinds.index("health_failed") < kinds.index("restarted") < kinds.index("health_recovered")
    assert "unhealthy 3 times in a row: warming up" in out
    *_, row = (line for line in out.splitlines() if line.startswith("grumpy "))
    calls, errors = row.split()[3:5]  # the exit table's row, after the startup one
    assert calls == errors != "0"


def test_the_live_view_is_in_colour_on_a_terminal_with_rich(examples: Path) -> None:
    pytest.importorskip("rich", reason="the helixhooks[rich] extra")
    controller, terminal = pty.openpty()
    env = {**_env(), "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "helixhooks", "run", "--duration", "1", "--snapshot", "s.json"],
        cwd=examples,
        env=env,
        stdout=terminal,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode()
    assert "\x1b[" in screen  # colour
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen)
    assert re.search(r"\d\d:\d\d:\d\d started  tokenizer 1\.3\.0", plain)
    assert re.search(r"call +report -> \['\d+ words", plain)
    assert re.search(r"PLUGIN +VERSION +STATE +CALLS", plain)


def test_run_piped_into_a_reader_that_goes_away_ends_quietly() -> None:
    """`helixhooks run | head`: no traceback, and everything stopped and unloaded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "helixhooks", "run", "--duration", "2"],
        cwd=EXAMPLES,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for _ in range(3):
        proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
