"""The helixhooks command, run as a real child process on real plugin directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ._plugins import write_plugin

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(*args: str, cwd: Path = EXAMPLES, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "helixhooks", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _broken_dir(tmp_path: Path) -> Path:
    write_plugin(tmp_path, "fine", "class Plugin:\n    pass\n")
    write_plugin(tmp_path, "needs_ghost", "class Plugin:\n    pass\n", dependencies=["ghost ^1"])
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "plugin.toml").write_text('[plugin]\nname = "torn"\n')
    return tmp_path


def test_list_reads_the_examples_config_and_imports_nothing() -> None:
    result = _run("list", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    names = {p["name"]: p for p in data["plugins"]}
    assert {"tokenizer", "analyzer", "reporter", "webhook", "hello"} <= set(names)
    assert names["hello"]["kind"] == "file"
    assert names["analyzer"]["dependencies"] == ["tokenizer ^1.0"]
    assert data["problems"] == []


def test_check_passes_on_the_examples() -> None:
    result = _run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all plugins ok" in result.stdout


def test_check_fails_with_reasons_for_a_plugin_author(tmp_path: Path) -> None:
    result = _run("check", "--json", "--plugin-dir", str(_broken_dir(tmp_path)), cwd=tmp_path)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    reasons = " | ".join(p["reason"] for p in data["problems"])
    assert "ghost" in reasons and "no 'version'" in reasons
    assert any(p["name"] == "fine" and p["healthy"] for p in data["plugins"])


def test_run_starts_in_dependency_order_and_stops_in_reverse() -> None:
    result = _run("run", "--duration", "0.5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    started = [line.split()[2] for line in lines if " started " in line]
    stopped = [line.split()[2] for line in lines if " stopped " in line]
    assert started.index("tokenizer") < started.index("analyzer") < started.index("reporter")
    assert stopped.index("reporter") < stopped.index("analyzer") < stopped.index("tokenizer")
    assert "5 plugin(s) running for 0.5s" in result.stdout


def test_run_stops_cleanly_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "helixhooks", "run"],
        cwd=EXAMPLES,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "running until Ctrl-C" in line:
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping" in out
    assert out.count(" stopped ") == 5


def test_graph_text_and_dot() -> None:
    text = _run("graph")
    assert text.returncode == 0
    order = [line.split()[1] for line in text.stdout.splitlines()]
    assert order.index("tokenizer") < order.index("analyzer") < order.index("reporter")
    dot = _run("graph", "--format", "dot")
    assert dot.stdout.startswith("digraph helixhooks {")
    assert '"analyzer" -> "tokenizer" [label="^1.0"];' in dot.stdout


def test_graph_reports_broken_resolution(tmp_path: Path) -> None:
    result = _run("graph", "--plugin-dir", str(_broken_dir(tmp_path)), cwd=tmp_path)
    assert result.returncode == 1
    assert "needs_ghost" in result.stdout and "ghost" in result.stdout


def test_info_of_a_single_file_plugin() -> None:
    result = _run("info", "--json", str(EXAMPLES / "plugins" / "hello.py"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "hello"


def test_a_bad_config_is_a_clear_usage_error(tmp_path: Path) -> None:
    (tmp_path / "helixhooks.toml").write_text('plugin_dir = ["x"]\n')
    result = _run("list", cwd=tmp_path)
    assert result.returncode == 2
    assert "plugin_dir" in result.stderr and "did you mean 'plugin_dirs'" in result.stderr
