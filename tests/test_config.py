"""Config from code and from files; a typo or a wrong type must never pass silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from helixhooks.config import Config, Limits
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
        ("load_timeout = -1", "load_timeout must be > 0"),
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
