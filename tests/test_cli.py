"""The helixhooks command, run as a real child process on real plugin directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    assert "6 plugin(s) running for 0.5s" in result.stdout


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
    assert out.count(" stopped ") == 6


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


def _no_entry_points(tmp_path: Path) -> Path:
    """A helixhooks.toml there turning entry points off, so installed plugins stay out of it."""
    (tmp_path / "helixhooks.toml").write_text(
        'plugin_dirs = ["plugins"]\nentry_point_group = false\n'
    )
    (tmp_path / "plugins").mkdir(exist_ok=True)
    return tmp_path / "plugins"


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "-inf", "soon"])
def test_run_duration_must_be_a_finite_number_of_seconds(tmp_path: Path, value: str) -> None:
    _no_entry_points(tmp_path)
    # Glued on with "=": argparse takes a bare "-inf" for an option.
    result = _run("run", f"--duration={value}", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "--duration" in result.stderr and value in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("key", ["load_timeout", "health_timeout", "health_interval"])
def test_an_infinite_timeout_in_the_config_is_a_usage_error(tmp_path: Path, key: str) -> None:
    (tmp_path / "helixhooks.toml").write_text(f"{key} = inf\n")
    result = _run("check", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert f"'{key}' must be a finite number of seconds" in result.stderr
    assert str(tmp_path / "helixhooks.toml") in result.stderr
    assert "Traceback" not in result.stderr


def test_a_non_utf8_config_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "helixhooks.toml").write_bytes(b'plugin_dirs = ["caf\xe9"]\n')
    result = _run("list", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "not UTF-8" in result.stderr and "helixhooks.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_pyproject_in_a_parent_does_not_stop_the_command(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(b'[project]\nname = "caf\xe9"\n')
    work = tmp_path / "work"
    plugins = work / "plugins"
    write_plugin(plugins, "fine", "class Plugin:\n    pass\n")
    result = _run("list", "--json", "--plugin-dir", str(plugins), cwd=work, timeout=30)
    assert result.returncode == 0, result.stderr
    assert [p["name"] for p in json.loads(result.stdout)["plugins"]] == ["fine"]
    assert "skipping" in result.stderr and str(tmp_path / "pyproject.toml") in result.stderr


def test_a_pyproject_whose_tool_is_not_a_table_is_clear(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('tool = "x"\n')
    result = _run("list", "--config", str(tmp_path / "pyproject.toml"), cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "'tool' must be a table" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("os:sep", "name str '/', not a class or module of hookspecs"),
        ("raising.py:Spec", "raised while being imported: RuntimeError: no specs today (line 2)"),
        ("exiting.py:Spec", "called sys.exit() while being imported"),
        ("json", "hold no @hookspec function"),
        ("no_such_module_xyz:Spec", "no module named 'no_such_module_xyz'"),
    ],
)
def test_bad_hookspecs_are_clear_usage_errors(tmp_path: Path, spec: str, fragment: str) -> None:
    plugins = _no_entry_points(tmp_path)
    write_plugin(plugins, "fine", "class Plugin:\n    pass\n")
    (tmp_path / "raising.py").write_text("import os\nraise RuntimeError('no specs today')\n")
    (tmp_path / "exiting.py").write_text("import sys\nsys.exit(4)\n")
    result = _run("check", "--hookspecs", spec, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    if spec.endswith(".py:Spec"):
        assert str(tmp_path / spec.partition(":")[0]) in result.stderr


NOISY = """
import helixhooks as hh

print("printed at import")

class Plugin:
    @hh.hookimpl
    def helix_start(self):
        print("printed at start")

    @hh.hookimpl
    def helix_health_check(self):
        print("printed in the health check")
        return True

    @hh.hookimpl
    def helix_info(self):
        return {"workers": 4, "mode": "fast"}
"""


def test_check_json_stays_json_when_plugins_print_and_reports_the_checked_state(
    tmp_path: Path,
) -> None:
    plugins = _no_entry_points(tmp_path)
    write_plugin(plugins, "noisy", NOISY)
    result = _run("check", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    [plugin] = data["plugins"]
    assert plugin["state"] == "started" and plugin["healthy"] is True
    assert plugin["info"] == {"workers": 4, "mode": "fast"}
    for line in ("printed at import", "printed at start", "printed in the health check"):
        assert line in result.stderr


def test_check_and_info_show_what_helix_info_returns(tmp_path: Path) -> None:
    plugins = _no_entry_points(tmp_path)
    write_plugin(plugins, "noisy", NOISY)
    check = _run("check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "noisy says (helix_info):" in check.stdout
    assert "workers  4" in check.stdout
    info = _run("info", "--load", "--json", str(plugins / "noisy"), cwd=tmp_path)
    assert info.returncode == 0, info.stdout + info.stderr
    assert json.loads(info.stdout)["helix_info"] == {"workers": 4, "mode": "fast"}
    # Without --load, info imports nothing and says nothing of helix_info.
    plain = _run("info", "--json", str(plugins / "noisy"), cwd=tmp_path)
    assert "helix_info" not in json.loads(plain.stdout)
    assert "printed at import" not in plain.stderr


def test_check_prints_each_problem_once_and_held_back_plugins_say_why(tmp_path: Path) -> None:
    plugins = _no_entry_points(tmp_path)
    write_plugin(plugins, "broken", "raise RuntimeError('kaputt')\n")
    write_plugin(plugins, "child", "class Plugin:\n    pass\n", dependencies=["broken"])
    write_plugin(plugins, "fine", "class Plugin:\n    pass\n")
    result = _run("check", cwd=tmp_path)
    assert result.returncode == 1
    both = result.stdout + result.stderr
    assert both.count("plugin 'broken': import failed: RuntimeError: kaputt") == 1, both
    assert both.count("held back: depends on 'broken'") == 1, both
    data = json.loads(_run("check", "--json", cwd=tmp_path).stdout)
    child = next(p for p in data["plugins"] if p["name"] == "child")
    assert "held back" in child["message"] and "broken" in child["message"]


def test_run_exits_1_when_no_plugin_is_running(tmp_path: Path) -> None:
    plugins = _no_entry_points(tmp_path)
    write_plugin(plugins, "broken", "raise RuntimeError('kaputt')\n")
    result = _run("run", "--duration", "5", cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert "no plugin is running" in result.stdout
    assert "kaputt" in result.stdout


def test_check_with_no_plugins_is_a_failure(tmp_path: Path) -> None:
    _no_entry_points(tmp_path)
    result = _run("check", cwd=tmp_path)
    assert result.returncode == 1
    assert "no plugins found" in result.stdout
    assert "all plugins ok" not in result.stdout
    assert json.loads(_run("check", "--json", cwd=tmp_path).stdout)["ok"] is False


def test_check_inside_a_plugins_own_directory_checks_that_plugin(tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path, "solo", "class Plugin:\n    pass\n")
    (tmp_path / "helixhooks.toml").write_text("entry_point_group = false\n")
    result = _run("check", "--plugin-dir", ".", cwd=plugin)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "solo" in result.stdout and "all plugins ok" in result.stdout


def test_check_fails_cleanly_for_a_plugin_that_calls_sys_exit(tmp_path: Path) -> None:
    plugins = _no_entry_points(tmp_path)
    write_plugin(plugins, "quitter", "import sys\nsys.exit(3)\n")
    write_plugin(plugins, "fine", "class Plugin:\n    pass\n")
    result = _run("check", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "called sys.exit(3) at import" in result.stdout
    assert str(plugins / "quitter" / "plugin.py") in result.stdout
    assert "Traceback" not in result.stderr


def test_check_warns_of_hookimpls_that_never_run_and_of_config_for_no_plugin(
    tmp_path: Path,
) -> None:
    plugins = _no_entry_points(tmp_path)
    (tmp_path / "helixhooks.toml").write_text(
        'plugin_dirs = ["plugins"]\nentry_point_group = false\n'
        "[plugin_config.classless]\nlevel = 1\n"
    )
    write_plugin(
        plugins,
        "classy",
        "import helixhooks as hh\n\nclass Impl:\n    @hh.hookimpl\n"
        "    def helix_start(self):\n        pass\n",
        entry="plugin",
    )
    result = _run("check", "--json", cwd=tmp_path)
    data = json.loads(result.stdout)
    warnings = " | ".join(data["warnings"])
    assert "class Impl in it has hookimpls that will never run" in warnings
    assert 'entry = "plugin:Impl"' in warnings
    assert "[plugin_config.classless]" in warnings and "did you mean 'classy'?" in warnings
    text = _run("check", cwd=tmp_path)
    assert "2 warning(s):" in text.stdout
    assert text.stdout.count("will never run") == 1
    assert "will never run" not in text.stderr


def test_common_options_go_before_or_after_the_command(tmp_path: Path) -> None:
    plugins = _no_entry_points(tmp_path)
    write_plugin(plugins, "early", "class Plugin:\n    pass\n")
    more = tmp_path / "more"
    write_plugin(more, "late", "class Plugin:\n    pass\n")
    before = _run("--plugin-dir", str(plugins), "list", "--json", cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    assert [p["name"] for p in json.loads(before.stdout)["plugins"]] == ["early"]
    both = _run("--plugin-dir", str(plugins), "list", "--plugin-dir", str(more), cwd=tmp_path)
    assert "early" in both.stdout and "late" in both.stdout
    verbose = _run("-v", "--config", str(tmp_path / "helixhooks.toml"), "graph", cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "early" in verbose.stdout
