"""Config from code and from files; a typo or a wrong type must never pass silently."""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from pathlib import Path

import pytest

from helixhooks.config import Config, HookCall, Limits
from helixhooks.errors import ManifestError


def test_defaults_match_the_design() -> None:
    config = Config()
    assert config.plugin_dirs == (Path("./plugins"),)
    assert config.entry_point_group == "helixhooks.plugins"
    assert config.limits == Limits(memory_mb=512, cpu_seconds=None, open_files=256, file_size_mb=64)
    assert config.isolation is None and config.grants is None


def test_from_file_reads_helixhooks_toml_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text(
        'plugin_dirs = ["plugins", "/abs/more"]\nhot_reload = true\nload_timeout = 2\n'
        "entry_point_group = false\n"
        "[plugin_config.analyzer]\nthreshold = 0.9\n[limits]\nmemory_mb = 128\n"
    )
    config = Config.from_file(path)
    assert config.plugin_dirs == (tmp_path / "plugins", Path("/abs/more"))
    assert config.hot_reload is True
    assert config.load_timeout == 2
    assert config.entry_point_group is None
    assert config.limits.memory_mb == 128
    assert config.config_for("analyzer", {"threshold": 0.5, "mode": "fast"}) == {
        "threshold": 0.9,
        "mode": "fast",
    }


def test_pyproject_tool_table_is_read(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "host"\n[tool.helixhooks]\ndebounce = 0.05\n')
    assert Config.from_file(path).debounce == 0.05


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('plugin_dir = ["x"]', "unknown config key 'plugin_dir'.*did you mean 'plugin_dirs'"),
        ('hot_reload = "yes"', "'hot_reload' must be true or false"),
        ("load_timeout = true", "'load_timeout' must be a number"),
        ("load_timeout = -1", "'load_timeout' must be a finite number of seconds > 0"),
        ('isolation = "vm"', "isolation"),
        ("plugin_dirs = [1]", "path or a list of paths"),
        ("[limits]\nmemory = 3", "unknown key.*limits"),
        ("grants = { a = 'net' }", "list of permissions"),
    ],
)
def test_bad_keys_and_types_name_the_key_and_the_file(
    tmp_path: Path, body: str, fragment: str
) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text(body + "\n")
    with pytest.raises(ManifestError, match=fragment) as caught:
        Config.from_file(path)
    assert caught.value.path == str(path)


def test_invalid_toml_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text("hot_reload = \n")
    with pytest.raises(ManifestError, match="not valid TOML"):
        Config.from_file(path)


# What tests/fuzz found a config file could do that was not a ManifestError: nesting past
# tomllib's recursion, an integer with more digits than int() reads (4,300), and an integer
# written in hex too large for a float or for repr (a message shows the value).
HUGE = "0x" + "f" * 4000


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("plugin_dirs = " + "[" * 500 + "]" * 500, "nested too deeply"),
        ("load_timeout = " + "9" * 5000, "not valid TOML: Exceeds the limit"),
        (
            f"load_timeout = {HUGE}",
            "'load_timeout' must be a finite number of seconds > 0, got <int",
        ),
        (
            f"[limits]\nmemory_mb = {HUGE}",
            "'limits.memory_mb' must be a whole number > 0, got <int",
        ),
        (f"hookspecs = [{HUGE}]", "must be a list of strings, not list <list holding an integer"),
    ],
)
def test_files_beyond_what_python_reads_are_manifest_errors(
    tmp_path: Path, body: str, fragment: str
) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text(body + "\n")
    with pytest.raises(ManifestError, match=fragment) as caught:
        Config.from_file(path)
    assert caught.value.path == str(path)


def test_config_from_code_refuses_a_duration_too_large_for_a_float() -> None:
    with pytest.raises(ValueError, match="load_timeout must be a finite number > 0"):
        Config(load_timeout=2**20000)


def test_load_walks_upwards_and_prefers_helixhooks_toml(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.helixhooks]\nhealth_timeout = 9\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert Config.load(deep).health_timeout == 9
    (tmp_path / "a" / "helixhooks.toml").write_text("health_timeout = 3\n")
    assert Config.load(deep).health_timeout == 3


def test_load_skips_a_pyproject_without_our_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.helixhooks]\nwatch_interval = 4\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert Config.load(inner).watch_interval == 4


DURATION_KEYS = [
    "load_timeout",
    "health_timeout",
    "health_interval",
    "watch_interval",
    "debounce",
    "call_timeout",
    "run_interval",
]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "+nan", "-1"])
@pytest.mark.parametrize("key", DURATION_KEYS)
def test_non_finite_or_negative_durations_name_the_key_and_the_file(
    tmp_path: Path, key: str, value: str
) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text(f"{key} = {value}\n")
    with pytest.raises(
        ManifestError, match=f"'{key}' must be a finite number of seconds"
    ) as caught:
        Config.from_file(path)
    assert caught.value.path == str(path)
    assert caught.value.hint is not None and key in caught.value.hint


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, -1.0])
@pytest.mark.parametrize("key", DURATION_KEYS)
def test_config_from_code_refuses_non_finite_durations(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{key} must be a finite number"):
        Config(**{key: value})


def test_a_zero_debounce_is_fine_but_a_zero_timeout_is_not(tmp_path: Path) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text("debounce = 0\n")
    assert Config.from_file(path).debounce == 0
    path.write_text("load_timeout = 0\n")
    with pytest.raises(ManifestError, match="'load_timeout'"):
        Config.from_file(path)


def test_an_isolation_typo_lists_the_modes_and_guesses(tmp_path: Path) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text('isolation = "proces"\n')
    with pytest.raises(ManifestError) as caught:
        Config.from_file(path)
    message = str(caught.value)
    assert "'inprocess' or 'process'" in message
    assert "did you mean 'process'?" in message
    assert "Attribute(" not in message and "validator" not in message
    assert caught.value.path == str(path)
    with pytest.raises(ValueError, match="did you mean 'process'"):
        Config(isolation="proces")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('limits = {memory_mb = "a lot"}', "'limits.memory_mb' must be a whole number, not str"),
        ("limits = {open_files = 1.5}", "'limits.open_files' must be a whole number"),
        ("limits = {cpu_seconds = inf}", "'limits.cpu_seconds' must be a number > 0"),
        ("limits = {file_size_mb = -3}", "'limits.file_size_mb' must be a whole number > 0"),
        ("limits = {memory_mb = true}", "'limits.memory_mb' must be a whole number"),
        ("limits = {cpu_second = 3}", "'limits.cpu_second'.*did you mean 'cpu_seconds'"),
    ],
)
def test_a_bad_limit_names_the_dotted_key(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text(body + "\n")
    with pytest.raises(ManifestError, match=fragment) as caught:
        Config.from_file(path)
    assert caught.value.path == str(path)


def test_a_limit_of_the_right_type_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text("limits = {cpu_seconds = 2.5, open_files = 64}\n")
    limits = Config.from_file(path).limits
    assert limits.cpu_seconds == 2.5 and limits.open_files == 64


def test_a_config_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_bytes(b'plugin_dirs = ["caf\xe9"]\n')
    with pytest.raises(ManifestError, match="not UTF-8") as caught:
        Config.from_file(path)
    assert caught.value.path == str(path)
    assert caught.value.hint is not None and "UTF-8" in caught.value.hint
    with pytest.raises(ManifestError, match="not UTF-8"):
        Config.load(tmp_path)


def test_an_unreadable_pyproject_above_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "helixhooks.toml").write_text("health_timeout = 7\n")
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "pyproject.toml").write_bytes(b'[project]\nname = "caf\xe9"\n')
    with caplog.at_level(logging.WARNING, logger="helixhooks.config"):
        assert Config.load(project / "src").health_timeout == 7
    warnings = [r.getMessage() for r in caplog.records if r.name == "helixhooks.config"]
    assert len(warnings) == 1
    assert str(project / "pyproject.toml") in warnings[0] and "not UTF-8" in warnings[0]


def test_a_pyproject_whose_tool_is_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('tool = "x"\n')
    # Met on the way up, it is some other project's, without our settings.
    assert Config.load(tmp_path) == Config()
    with pytest.raises(ManifestError, match="'tool' must be a table") as caught:
        Config.from_file(path)
    assert caught.value.path == str(path)


def test_a_tool_helixhooks_of_the_wrong_type_is_reported_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool]\nhelixhooks = "plugins"\n')
    with pytest.raises(ManifestError, match="must be a table, not str") as caught:
        Config.load(tmp_path)
    assert caught.value.hint is not None and "[tool.helixhooks]" in caught.value.hint


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_config_file_that_is_a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    path = tmp_path / "helixhooks.toml"
    os.mkfifo(path)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            Config.from_file(path)
        except ManifestError as exc:
            outcome.append(exc)

    # Opened for reading the plain way, a FIFO waits for a writer forever.
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO config file hangs"
    assert len(outcome) == 1 and "FIFO (named pipe), not a regular file" in str(outcome[0])


def test_config_for_merges_nested_tables_deeply() -> None:
    config = Config(plugin_config={"db": {"conn": {"port": 6000, "tls": {"verify": False}}}})
    defaults = {
        "conn": {"host": "localhost", "port": 5432, "tls": {"verify": True, "ca": "x.pem"}},
        "tags": ["a", "b"],
    }
    assert config.config_for("db", defaults) == {
        "conn": {"host": "localhost", "port": 6000, "tls": {"verify": False, "ca": "x.pem"}},
        "tags": ["a", "b"],
    }
    # The defaults are not changed in place.
    assert defaults["conn"] == {
        "host": "localhost",
        "port": 5432,
        "tls": {"verify": True, "ca": "x.pem"},
    }
    replaced = Config(plugin_config={"db": {"tags": ["c"], "conn": "sqlite://"}})
    assert replaced.config_for("db", defaults) == {"conn": "sqlite://", "tags": ["c"]}


def test_unknown_plugin_config_tables_are_named_with_a_guess() -> None:
    config = Config(plugin_config={"analyser": {"a": 1}, "ghost": {}, "tokenizer": {}})
    warnings = config.unknown_plugin_config(["analyzer", "tokenizer"])
    assert len(warnings) == 2
    assert "[plugin_config.analyser]" in warnings[0] and "did you mean 'analyzer'?" in warnings[0]
    assert "[plugin_config.ghost]" in warnings[1]
    assert config.unknown_plugin_config(["analyser", "ghost", "tokenizer"]) == []


def test_run_calls_are_read_as_hook_calls(tmp_path: Path) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text(
        'run_interval = 0.5\n[[run_calls]]\nhook = "report"\nargs = { text = "hi" }\n'
        '[[run_calls]]\nhook = "tick"\n'
    )
    config = Config.from_file(path)
    assert config.run_interval == 0.5
    assert config.run_calls == (HookCall("report", {"text": "hi"}), HookCall("tick"))
    assert Config(run_calls=[{"hook": "x", "args": {"a": 1}}]).run_calls[0].args == {"a": 1}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('[[run_calls]]\nhook = "a"\nargz = {}\n', "entry 1 has unknown key(s): 'argz'"),
        ("[[run_calls]]\nhook = 1\n", 'entry 1 needs hook = "name"'),
        ('[[run_calls]]\nhook = "a"\nargs = [1]\n', "args must be a table"),
        ('run_calls = ["report"]\n', "must be a list of tables"),
        ("run_interval = 0\n", "'run_interval' must be a finite number of seconds > 0"),
    ],
)
def test_bad_run_calls_are_clear(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "helixhooks.toml"
    path.write_text(body)
    with pytest.raises(ManifestError, match=re.escape(fragment)) as caught:
        Config.from_file(path)
    assert caught.value.path == str(path)
