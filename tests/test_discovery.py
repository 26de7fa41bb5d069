"""Discovery: manifests, PLUGIN_INFO literals and entry points, read without importing anything."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helixhooks.config import Config
from helixhooks.discovery import Discovery
from helixhooks.errors import ManifestError
from helixhooks.plugin import PluginCandidate, PluginInfo

from ._plugins import pip_install

ROOT = Path(__file__).resolve().parent.parent
GROUP = "helixhooks.test_plugins"


def _no_entry_points(*dirs: Path) -> Config:
    return Config(plugin_dirs=list(dirs), entry_point_group=None)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def dir_plugin(root: Path, name: str, body: str = "", *, module: str = "plugin.py") -> Path:
    directory = root / name
    write(directory / "plugin.toml", f'[plugin]\nname = "{name}"\nversion = "1.0.0"\n{body}')
    write(directory / module, "")
    return directory


def names(candidates: list[PluginCandidate]) -> list[str]:
    return [c.info.name for c in candidates]


def problem_for(discovery: Discovery, fragment: str) -> str:
    matching = [p.reason for p in discovery.problems if fragment in p.source]
    assert len(matching) == 1, discovery.problems
    return matching[0]


# --- directory plugins -------------------------------------------------------------------------


def test_directory_manifest_gives_every_field_and_config(tmp_path: Path) -> None:
    write(
        tmp_path / "analyzer" / "plugin.toml",
        """
        [plugin]
        name = "analyzer"
        version = "1.2.0"
        description = "Scores text"
        author = "Ada"
        entry = "plugin:Analyzer"
        dependencies = ["tokenizer ^1.0", "cache >=2,<3"]
        capabilities = ["analyze"]
        permissions = ["net=api.example.com:443", "read=./data"]
        requires = ">=0.1"
        isolation = "process"
        [config]
        threshold = 0.5
        nested = {deep = [1, 2]}
        """,
    )
    write(tmp_path / "analyzer" / "plugin.py", "")

    [candidate] = Discovery(_no_entry_points(tmp_path)).scan()

    assert candidate.kind == "directory"
    assert candidate.source == tmp_path / "analyzer"
    assert candidate.distribution is None
    assert candidate.info == PluginInfo(
        name="analyzer",
        version="1.2.0",
        description="Scores text",
        author="Ada",
        entry="plugin:Analyzer",
        dependencies=("tokenizer ^1.0", "cache >=2,<3"),
        capabilities=("analyze",),
        permissions=("net=api.example.com:443", "read=./data"),
        requires=">=0.1",
        isolation="process",
        config={"threshold": 0.5, "nested": {"deep": [1, 2]}},
    )


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        (["plugin.py"], "plugin"),
        (["__init__.py"], "__init__"),
        (["plugin.py", "__init__.py"], "plugin"),
    ],
)
def test_entry_defaults_to_plugin_then_package(
    tmp_path: Path, modules: list[str], expected: str
) -> None:
    write(tmp_path / "p" / "plugin.toml", '[plugin]\nname = "p"\nversion = "1.0"\n')
    for module in modules:
        write(tmp_path / "p" / module, "")

    assert Discovery(_no_entry_points()).get_info(tmp_path / "p").entry == expected


def test_entry_may_name_a_subpackage_module(tmp_path: Path) -> None:
    dir_plugin(tmp_path, "p", 'entry = "impl.core:P"\n')
    write(tmp_path / "p" / "impl" / "core" / "__init__.py", "")

    assert Discovery(_no_entry_points()).get_info(tmp_path / "p").entry == "impl.core:P"


def test_directories_without_manifest_dot_dirs_and_pycache_are_skipped(tmp_path: Path) -> None:
    dir_plugin(tmp_path, "real")
    write(tmp_path / "data" / "notes.txt", "not a plugin")
    dir_plugin(tmp_path, ".hidden")
    dir_plugin(tmp_path, "__pycache__")
    write(tmp_path / "README.md", "not a plugin either")

    discovery = Discovery(_no_entry_points(tmp_path))

    assert names(discovery.scan()) == ["real"]
    assert discovery.problems == []


# --- single-file plugins -----------------------------------------------------------------------


def test_file_plugin_reads_plugin_info_literal(tmp_path: Path) -> None:
    write(
        tmp_path / "hello.py",
        """
        import helixhooks as hh

        PLUGIN_INFO: dict = {
            "name": "hello",
            "version": "0.3.0",
            "capabilities": ["greet"],
            "config": {"greeting": "hi"},
        }

        class Hello:
            pass
        """,
    )

    [candidate] = Discovery(_no_entry_points(tmp_path)).scan()

    assert candidate.kind == "file"
    assert candidate.source == tmp_path / "hello.py"
    assert candidate.info == PluginInfo(
        "hello", "0.3.0", capabilities=("greet",), config={"greeting": "hi"}
    )
    assert candidate.info.entry is None


@pytest.mark.parametrize(
    ("written", "stored"), [(":Hello", "hello:Hello"), ("hello:Hello", "hello:Hello")]
)
def test_file_plugin_entry_names_an_attribute_of_the_file(
    tmp_path: Path, written: str, stored: str
) -> None:
    path = write(
        tmp_path / "hello.py",
        f'PLUGIN_INFO = {{"name": "h", "version": "1", "entry": "{written}"}}',
    )

    assert Discovery(_no_entry_points()).get_info(path).entry == stored


def test_helper_files_and_underscore_files_are_not_plugins(tmp_path: Path) -> None:
    write(tmp_path / "helpers.py", "def util():\n    return 1  # mentions PLUGIN_INFO only here\n")
    write(tmp_path / "_private.py", 'PLUGIN_INFO = {"name": "private", "version": "1.0"}\n')
    write(tmp_path / "notes.txt", 'PLUGIN_INFO = {"name": "txt", "version": "1.0"}\n')
    write(tmp_path / "real.py", 'PLUGIN_INFO = {"name": "real", "version": "1.0"}\n')

    discovery = Discovery(_no_entry_points(tmp_path))

    assert names(discovery.scan()) == ["real"]
    assert discovery.problems == []


def test_last_module_level_assignment_of_plugin_info_counts(tmp_path: Path) -> None:
    path = write(
        tmp_path / "twice.py",
        """
        PLUGIN_INFO = {"name": "old", "version": "1.0"}
        PLUGIN_INFO = {"name": "new", "version": "2.0"}
        """,
    )

    assert Discovery(_no_entry_points()).get_info(path).name == "new"


# --- problems: collected, named, and the scan goes on ------------------------------------------

BROKEN_MANIFESTS: dict[str, tuple[str | bytes, str]] = {
    "malformed_toml": ('[plugin]\nname = "x\n', "not valid TOML"),
    "missing_name": ('[plugin]\nversion = "1.0"\n', "no 'name'"),
    "missing_version": ('[plugin]\nname = "x"\n', "no 'version'"),
    "bad_version": ('[plugin]\nname = "x"\nversion = "one"\n', "not a valid version"),
    "unknown_key": ('[plugin]\nname = "x"\nversion = "1.0"\ncolour = "red"\n', "colour"),
    "unknown_table": ('[plugin]\nname = "x"\nversion = "1.0"\n[extras]\na = 1\n', "extras"),
    "no_plugin_table": ('name = "x"\n', "name"),
    "empty_manifest": ("", "no [plugin] table"),
    "config_inside_plugin": (
        '[plugin]\nname = "x"\nversion = "1.0"\n[plugin.config]\na = 1\n',
        "[config]",
    ),
    "bad_dependency": ('[plugin]\nname = "x"\nversion = "1.0"\ndependencies = ["1bad"]\n', "1bad"),
    "bad_isolation": ('[plugin]\nname = "x"\nversion = "1.0"\nisolation = "vm"\n', "vm"),
    "not_utf8": (b'[plugin]\nname = "\xff"\n', "not UTF-8"),
    "entry_nowhere": ('[plugin]\nname = "x"\nversion = "1.0"\nentry = "missing:X"\n', "missing.py"),
    # Found by tests/fuzz: each made scan() raise instead of reporting the plugin.
    "nested_too_deeply": (
        '[plugin]\nname = "x"\nversion = "1.0"\n[config]\na = ' + "[" * 500 + "]" * 500,
        "nested too deeply",
    ),
    "integer_too_long": (
        '[plugin]\nname = "x"\nversion = "1.0"\n[config]\na = ' + "9" * 5000,
        "not valid TOML: Exceeds the limit",
    ),
    "huge_hex_dependency": (
        '[plugin]\nname = "x"\nversion = "1.0"\ndependencies = [0x' + "f" * 4000 + "]\n",
        "<int holding an integer too large to show> is not a string",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_MANIFESTS))
def test_broken_manifest_is_a_problem_naming_the_file(tmp_path: Path, case: str) -> None:
    text, fragment = BROKEN_MANIFESTS[case]
    dir_plugin(tmp_path, "good_a")
    (tmp_path / "broken").mkdir()
    raw = text if isinstance(text, bytes) else text.encode()
    (tmp_path / "broken" / "plugin.toml").write_bytes(raw)
    write(tmp_path / "broken" / "plugin.py", "")
    dir_plugin(tmp_path, "good_z")
    discovery = Discovery(_no_entry_points(tmp_path))

    assert names(discovery.scan()) == ["good_a", "good_z"]

    [problem] = discovery.problems
    manifest = str(tmp_path / "broken" / "plugin.toml")
    assert problem.source == str(tmp_path / "broken")
    assert fragment in problem.reason
    assert manifest in problem.reason
    assert "(fix: " in problem.reason
    assert isinstance(problem.error, ManifestError)
    with pytest.raises(ManifestError, match="fix: ") as raised:
        discovery.get_info(tmp_path / "broken")
    assert raised.value.path == manifest


def test_problem_carries_the_plugin_name_when_known(tmp_path: Path) -> None:
    write(tmp_path / "p" / "plugin.toml", '[plugin]\nname = "named"\nversion = "x.y"\n')
    write(tmp_path / "p" / "plugin.py", "")
    discovery = Discovery(_no_entry_points(tmp_path))

    discovery.scan()

    assert [p.name for p in discovery.problems] == ["named"]


def test_directory_without_any_entry_module_is_a_problem(tmp_path: Path) -> None:
    write(tmp_path / "bare" / "plugin.toml", '[plugin]\nname = "bare"\nversion = "1.0"\n')
    write(tmp_path / "bare" / "other.py", "")
    dir_plugin(tmp_path, "fine")
    discovery = Discovery(_no_entry_points(tmp_path))

    assert names(discovery.scan()) == ["fine"]
    reason = problem_for(discovery, "bare")
    assert "no entry" in reason
    assert 'entry = "module:Class"' in reason


BROKEN_FILES = {
    "call_not_literal": (
        'PLUGIN_INFO = dict(name="x", version="1.0")\n',
        "PLUGIN_INFO must be a dict literal {...}, not a call to dict() (line 1)",
    ),
    "name_in_value": ('V = "1.0"\nPLUGIN_INFO = {"name": "x", "version": V}\n', "literal"),
    "list_not_dict": ('PLUGIN_INFO = ["x", "1.0"]\n', "must be a dict"),
    "int_keys": ("PLUGIN_INFO = {1: 2}\n", "string keys"),
    "config_not_dict": (
        'PLUGIN_INFO = {"name": "x", "version": "1.0", "config": [1]}\n',
        "must be a dict",
    ),
    "syntax_error": ('PLUGIN_INFO = {"name": "x",\n', "cannot parse"),
    "missing_version": ('PLUGIN_INFO = {"name": "x"}\n', "no 'version'"),
    "unknown_key": ('PLUGIN_INFO = {"name": "x", "version": "1", "colour": 1}\n', "colour"),
    "entry_elsewhere": (
        'PLUGIN_INFO = {"name": "x", "version": "1", "entry": "other:X"}\n',
        "points nowhere",
    ),
    # Found by tests/fuzz: each made scan() raise instead of reporting the plugin.
    "nested_too_deeply": (
        'PLUGIN_INFO = {"name": "x", "version": "1.0"}\nx = ' + "-" * 100_000 + "1\n",
        "nested too deeply for Python to compile",
    ),
    "deep_non_literal": (
        'PLUGIN_INFO = {"name": "x", "version": "1.0", "config": {"a": ' + "a + " * 900 + "1}}\n",
        "PLUGIN_INFO['config']['a'] is an expression too large to show",
    ),
    "huge_hex_literal": ("PLUGIN_INFO = 0x" + "f" * 4000 + "\n", "an expression too large to show"),
    "huge_hex_dependency": (
        'PLUGIN_INFO = {"name": "x", "version": "1.0", "dependencies": [0x' + "f" * 4000 + "]}\n",
        "<int holding an integer too large to show> is not a string",
    ),
    "huge_hex_key": ("PLUGIN_INFO = {0x" + "f" * 4000 + ": 1}\n", "string keys, not <dict holding"),
}


def test_an_expression_deeper_than_a_recursive_walk_goes_is_no_problem(tmp_path: Path) -> None:
    # Found by tests/fuzz: the check that PLUGIN_INFO is set only once walked each statement by
    # recursion, one level per BinOp of a long sum, and raised RecursionError from scan().
    sum_ = "1 + " * 1500 + "1"
    write(tmp_path / "long.py", f'PLUGIN_INFO = {{"name": "long", "version": "1.0"}}\nx = {sum_}\n')
    discovery = Discovery(_no_entry_points(tmp_path))

    assert names(discovery.scan()) == ["long"]
    assert discovery.problems == []


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_broken_plugin_info_is_a_problem_naming_the_file(tmp_path: Path, case: str) -> None:
    text, fragment = BROKEN_FILES[case]
    write(tmp_path / "broken.py", text)
    write(tmp_path / "good.py", 'PLUGIN_INFO = {"name": "good", "version": "1.0"}\n')
    discovery = Discovery(_no_entry_points(tmp_path))

    assert names(discovery.scan()) == ["good"]

    reason = problem_for(discovery, "broken.py")
    assert fragment in reason
    assert str(tmp_path / "broken.py") in reason
    assert "(fix: " in reason


def test_missing_plugin_dir_is_a_problem_and_the_scan_goes_on(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    not_a_dir = write(tmp_path / "file.txt", "")
    dir_plugin(tmp_path / "real", "p")
    discovery = Discovery(_no_entry_points(missing, not_a_dir, tmp_path / "real"))

    assert names(discovery.scan()) == ["p"]

    assert [p.source for p in discovery.problems] == [str(missing), str(not_a_dir)]
    assert "create the directory" in discovery.problems[0].reason


def test_problems_belong_to_the_last_scan(tmp_path: Path) -> None:
    discovery = Discovery(_no_entry_points(tmp_path / "absent"))
    discovery.scan()
    first = discovery.problems

    assert len(first) == 1
    assert discovery.scan([]) == []
    assert discovery.problems == []
    assert len(first) == 1


# --- duplicates and order ----------------------------------------------------------------------


def test_earlier_plugin_dir_wins_a_duplicate_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = dir_plugin(tmp_path / "one", "same")
    second = dir_plugin(tmp_path / "two", "same")
    discovery = Discovery(_no_entry_points(tmp_path / "one", tmp_path / "two"))

    with caplog.at_level(logging.WARNING, logger="helixhooks.discovery"):
        [candidate] = discovery.scan()

    assert candidate.source == first
    [problem] = discovery.problems
    assert problem.source == str(second)
    assert problem.name == "same"
    assert str(first) in problem.reason
    assert str(second) in problem.reason
    assert any("duplicate" in record.getMessage() for record in caplog.records)


def test_within_a_dir_the_first_file_name_wins(tmp_path: Path) -> None:
    dir_plugin(tmp_path, "a_dir", module="plugin.py")
    write(tmp_path / "b_file.py", 'PLUGIN_INFO = {"name": "a_dir", "version": "2.0"}\n')
    discovery = Discovery(_no_entry_points(tmp_path))

    [candidate] = discovery.scan()

    assert candidate.kind == "directory"
    assert [p.source for p in discovery.problems] == [str(tmp_path / "b_file.py")]


def test_a_single_dir_may_be_given_bare(tmp_path: Path) -> None:
    dir_plugin(tmp_path, "p")

    assert names(Discovery(_no_entry_points()).scan(str(tmp_path))) == ["p"]


def test_the_same_dir_given_twice_is_scanned_once(tmp_path: Path) -> None:
    dir_plugin(tmp_path, "p")
    discovery = Discovery(_no_entry_points(tmp_path, tmp_path / "." / "p" / ".."))

    assert names(discovery.scan()) == ["p"]
    assert discovery.problems == []


def test_order_is_dir_order_then_name(tmp_path: Path) -> None:
    for name in ("zeta", "alpha", "mid"):
        dir_plugin(tmp_path / "second", name)
    # Directory names sort differently from the plugin names inside them.
    write(tmp_path / "first" / "a" / "plugin.toml", '[plugin]\nname = "zz"\nversion = "1"\n')
    write(tmp_path / "first" / "a" / "plugin.py", "")
    write(tmp_path / "first" / "b.py", 'PLUGIN_INFO = {"name": "aa", "version": "1"}\n')

    found = Discovery(_no_entry_points()).scan([tmp_path / "first", tmp_path / "second"])

    assert names(found) == ["aa", "zz", "alpha", "mid", "zeta"]


# --- get_info ----------------------------------------------------------------------------------


def test_get_info_accepts_directory_manifest_or_file(tmp_path: Path) -> None:
    directory = dir_plugin(tmp_path, "d")
    single = write(tmp_path / "s.py", 'PLUGIN_INFO = {"name": "s", "version": "1.0"}\n')
    discovery = Discovery(_no_entry_points())

    assert discovery.get_info(directory).name == "d"
    assert discovery.get_info(str(directory / "plugin.toml")).name == "d"
    assert discovery.get_info(single).name == "s"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda root: root / "absent", "does not exist"),
        (lambda root: write(root / "empty" / "x.py", "").parent, "no plugin.toml"),
        (lambda root: write(root / "helper.py", "X = 1\n"), "no module-level PLUGIN_INFO"),
        (lambda root: write(root / "data.json", "{}"), "is not a plugin"),
    ],
)
def test_get_info_errors_name_the_path(tmp_path: Path, make: Any, fragment: str) -> None:
    path = make(tmp_path)

    with pytest.raises(ManifestError, match=fragment) as raised:
        Discovery(_no_entry_points()).get_info(path)

    assert raised.value.path == str(path)
    assert raised.value.hint


# --- entry points, from distributions installed on a temporary sys.path entry ------------------


def fake_distribution(
    site: Path,
    name: str,
    entry_points: dict[str, str],
    *,
    files: dict[str, str],
    record: list[str] | None = None,
    metadata: str = "",
) -> None:
    """An installed distribution as pip leaves it: dist-info with METADATA, RECORD, entry points."""
    info = site / f"{name}-1.0.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\n{metadata}")
    lines = "".join(f"{ep} = {value}\n" for ep, value in entry_points.items())
    write(info / "entry_points.txt", f"[{GROUP}]\n{lines}")
    for relative, text in files.items():
        write(site / relative, text)
    listed = sorted(files) if record is None else record
    write(info / "RECORD", "".join(f"{relative},,\n" for relative in listed))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


def entry_point_discovery(*dirs: Path) -> Discovery:
    return Discovery(Config(plugin_dirs=list(dirs), entry_point_group=GROUP))


def test_entry_point_metadata_and_shipped_manifest(site: Path) -> None:
    fake_distribution(
        site,
        "helixfake",
        {"fake": "helixfake.plugin:Fake"},
        files={
            "helixfake/__init__.py": "",
            "helixfake/plugin.py": "",
            "helixfake/plugin.toml": """
                [plugin]
                name = "fake"
                version = "1.0.0"
                entry = "plugin:Ignored"
                dependencies = ["base ^1.0"]
                capabilities = ["analyze"]
                permissions = ["net"]
                requires = ">=0.1"
                isolation = "process"
                [config]
                level = 3
                """,
        },
        metadata="Summary: A fake plugin\nAuthor-email: Ada Lovelace <ada@example.com>\n",
    )

    [candidate] = entry_point_discovery().entry_points()

    assert candidate.kind == "entry_point"
    assert candidate.distribution == "helixfake"
    assert isinstance(candidate.source, importlib.metadata.EntryPoint)
    assert candidate.source.name == "fake"
    assert candidate.info == PluginInfo(
        name="fake",
        version="1.0.0",
        description="A fake plugin",
        author="Ada Lovelace",
        entry="helixfake.plugin:Fake",
        dependencies=("base ^1.0",),
        capabilities=("analyze",),
        permissions=("net",),
        requires=">=0.1",
        isolation="process",
        config={"level": 3},
    )


def test_entry_point_manifest_nearest_to_the_module_wins(site: Path) -> None:
    fake_distribution(
        site,
        "nested",
        {"deep": "nested.sub:Deep", "top": "nested:Top"},
        files={
            "nested/__init__.py": "",
            "nested/plugin.toml": '[plugin]\ncapabilities = ["outer"]\n',
            "nested/sub/__init__.py": "",
            "nested/sub/plugin.toml": '[plugin]\ncapabilities = ["inner"]\n',
        },
        metadata="Author: Grace\nSummary: UNKNOWN\n",
    )

    found = {c.info.name: c.info for c in entry_point_discovery().entry_points()}

    assert found["deep"].capabilities == ("inner",)
    assert found["top"].capabilities == ("outer",)
    assert found["top"].author == "Grace"
    assert found["top"].description == ""


def test_single_module_distribution_without_manifest(site: Path) -> None:
    fake_distribution(site, "solo", {"solo": "solo_mod"}, files={"solo_mod.py": ""})

    [candidate] = entry_point_discovery().entry_points()

    assert candidate.info == PluginInfo("solo", "1.0.0", entry="solo_mod")


def test_editable_install_found_on_sys_path(site: Path) -> None:
    # Editable installs record only their path hook; the package is found where it lives.
    fake_distribution(
        site,
        "editable",
        {"ed": "editable_pkg.plugin:Ed"},
        files={
            "editable_pkg/__init__.py": "",
            "editable_pkg/plugin.toml": '[plugin]\npermissions = ["sys"]\n',
        },
        record=["__editable__.editable-1.0.pth"],
    )

    [candidate] = entry_point_discovery().entry_points()

    assert candidate.info.permissions == ("sys",)


ENTRY_POINT_PROBLEMS = {
    "package_nowhere": (
        {"lost": "helixnowhere.plugin:P"},
        {"helixother/__init__.py": ""},
        "points nowhere",
    ),
    "version_disagrees": (
        {"lost": "helixbad.plugin:P"},
        {"helixbad/plugin.py": "", "helixbad/plugin.toml": '[plugin]\nversion = "2.0"\n'},
        "version = '2.0'",
    ),
    "name_disagrees": (
        {"lost": "helixbad.plugin:P"},
        {"helixbad/plugin.py": "", "helixbad/plugin.toml": '[plugin]\nname = "other"\n'},
        "name = 'other'",
    ),
    "shipped_manifest_malformed": (
        {"lost": "helixbad.plugin:P"},
        {"helixbad/plugin.py": "", "helixbad/plugin.toml": "[plugin\n"},
        "not valid TOML",
    ),
    "shipped_manifest_unknown_key": (
        {"lost": "helixbad.plugin:P"},
        {"helixbad/plugin.py": "", "helixbad/plugin.toml": "[plugin]\ncolour = 1\n"},
        "colour",
    ),
    "invalid_plugin_name": ({"9lives": "helixbad:P"}, {"helixbad/__init__.py": ""}, "9lives"),
}


@pytest.mark.parametrize("case", sorted(ENTRY_POINT_PROBLEMS))
def test_entry_point_problems_leave_the_rest(site: Path, case: str) -> None:
    entry_points, files, fragment = ENTRY_POINT_PROBLEMS[case]
    fake_distribution(site, "broken", entry_points, files=files)
    fake_distribution(site, "fine", {"fine": "fine_pkg"}, files={"fine_pkg/__init__.py": ""})
    discovery = entry_point_discovery()

    assert names(discovery.scan()) == ["fine"]

    [problem] = discovery.problems
    [entry_point] = entry_points
    assert problem.source.startswith(f"entry point {GROUP}:{entry_point} = ")
    assert fragment in problem.reason
    assert "(fix: " in problem.reason


def test_shipped_version_may_be_spelled_differently(site: Path) -> None:
    # Build tools normalise the metadata's version; 1.0 and 1.0.0 are the same release.
    fake_distribution(
        site,
        "spelled",
        {"spelled": "spelled_pkg"},
        files={
            "spelled_pkg/__init__.py": "",
            "spelled_pkg/plugin.toml": '[plugin]\nversion = "1.0"\n',
        },
    )

    [candidate] = entry_point_discovery().entry_points()

    assert candidate.info.version == "1.0.0"


def test_entry_point_earlier_on_sys_path_wins(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_distribution(site, "later", {"same": "later_pkg"}, files={"later_pkg/__init__.py": ""})
    earlier = tmp_path / "earlier"
    fake_distribution(
        earlier, "earlier", {"same": "earlier_pkg"}, files={"earlier_pkg/__init__.py": ""}
    )
    monkeypatch.syspath_prepend(str(earlier))
    discovery = entry_point_discovery()

    [candidate] = discovery.entry_points()

    assert candidate.distribution == "earlier"
    [problem] = discovery.problems
    assert problem.source == f"entry point {GROUP}:same = later_pkg"


def test_directory_plugin_beats_entry_point_of_the_same_name(site: Path, tmp_path: Path) -> None:
    directory = dir_plugin(tmp_path / "plugins", "shared")
    fake_distribution(
        site,
        "shareddist",
        {"shared": "shared_pkg", "other": "shared_pkg:Other"},
        files={"shared_pkg/__init__.py": ""},
    )
    discovery = entry_point_discovery(tmp_path / "plugins")

    found = discovery.scan()

    assert [(c.info.name, c.kind) for c in found] == [
        ("shared", "directory"),
        ("other", "entry_point"),
    ]
    assert found[0].source == directory
    [problem] = discovery.problems
    assert problem.source == f"entry point {GROUP}:shared = shared_pkg"
    assert str(directory) in problem.reason


def test_entry_points_come_after_directories_sorted_by_name(site: Path, tmp_path: Path) -> None:
    dir_plugin(tmp_path / "plugins", "zzz")
    fake_distribution(
        site,
        "many",
        {"mmm": "many_pkg:M", "bbb": "many_pkg:B"},
        files={"many_pkg/__init__.py": ""},
    )

    found = entry_point_discovery(tmp_path / "plugins").scan()

    assert names(found) == ["zzz", "bbb", "mmm"]


def test_no_entry_points_when_the_group_is_off(site: Path) -> None:
    fake_distribution(site, "off", {"off": "off_pkg"}, files={"off_pkg/__init__.py": ""})
    discovery = Discovery(_no_entry_points())

    assert discovery.scan([]) == []
    assert discovery.entry_points() == []
    assert names(discovery.entry_points(group=GROUP)) == ["off"]


# --- nothing is imported -----------------------------------------------------------------------


def test_nothing_is_imported(site: Path, tmp_path: Path) -> None:
    marker = tmp_path / "imported.marker"
    touch = f"open({str(marker)!r}, 'w').close()\n"
    plugins = tmp_path / "plugins"
    dir_plugin(plugins, "dirplug")
    write(plugins / "dirplug" / "plugin.py", touch)
    write(plugins / "dirplug" / "__init__.py", touch)
    write(plugins / "fileplug.py", touch + 'PLUGIN_INFO = {"name": "fileplug", "version": "1"}\n')
    write(plugins / "helper.py", touch)
    fake_distribution(
        site,
        "epdist",
        {"epplug": "epplug_pkg.plugin:P"},
        files={
            "epplug_pkg/__init__.py": touch,
            "epplug_pkg/plugin.py": touch,
            "epplug_pkg/plugin.toml": '[plugin]\ncapabilities = ["x"]\n',
        },
    )
    before = set(sys.modules)
    discovery = entry_point_discovery(plugins)

    assert names(discovery.scan()) == ["dirplug", "fileplug", "epplug"]
    assert discovery.get_info(plugins / "dirplug").name == "dirplug"
    assert discovery.get_info(plugins / "fileplug.py").name == "fileplug"
    assert names(discovery.entry_points()) == ["epplug"]

    assert not marker.exists()
    new = {name.partition(".")[0] for name in set(sys.modules) - before}
    assert not new & {"dirplug", "fileplug", "helper", "plugin", "epplug_pkg"}


def _run_python(code: str, **env: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**_clean_env(), **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def test_real_pytest11_entry_points_import_nothing() -> None:
    report = _run_python(
        """
        import json, sys
        from helixhooks.config import Config
        from helixhooks.discovery import Discovery

        found = Discovery(Config(plugin_dirs=[])).entry_points(group="pytest11")
        hypothesis = [c for c in found if c.info.name == "hypothesispytest"]
        print(json.dumps({
            "versions": [c.info.version for c in hypothesis],
            "distributions": [c.distribution for c in hypothesis],
            "entries": [c.info.entry for c in hypothesis],
            "imported": sorted(
                m for m in ("_hypothesis_pytestplugin", "hypothesis") if m in sys.modules
            ),
        }))
        """
    )

    assert report == {
        "versions": [importlib.metadata.version("hypothesis")],
        "distributions": ["hypothesis"],
        "entries": ["_hypothesis_pytestplugin"],
        "imported": [],
    }


@pytest.mark.slow
def test_pip_installed_distribution_with_shipped_manifest(tmp_path: Path) -> None:
    project = tmp_path / "project"
    marker = tmp_path / "imported.marker"
    write(
        project / "pyproject.toml",
        """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "helix-demo-plugin"
        version = "1.4.0"
        description = "A demo plugin"
        authors = [{name = "Ada Lovelace", email = "ada@example.com"}]

        [project.entry-points."helixhooks.plugins"]
        demo = "helix_demo.plugin:Demo"

        [tool.setuptools]
        packages = ["helix_demo"]

        [tool.setuptools.package-data]
        helix_demo = ["plugin.toml"]
        """,
    )
    touch = f"open({str(marker)!r}, 'w').close()\n"
    write(project / "helix_demo" / "__init__.py", touch)
    write(project / "helix_demo" / "plugin.py", touch)
    write(
        project / "helix_demo" / "plugin.toml",
        """
        [plugin]
        name = "demo"
        version = "1.4.0"
        dependencies = ["base ^1.0"]
        permissions = ["net=api.example.com:443"]
        isolation = "process"
        [config]
        threshold = 0.5
        """,
    )
    target = tmp_path / "site"
    pip_install(project, target)

    report = _run_python(
        """
        import json, sys
        from helixhooks.config import Config
        from helixhooks.discovery import Discovery

        discovery = Discovery(Config(plugin_dirs=[]))
        [candidate] = [c for c in discovery.entry_points() if c.info.name == "demo"]
        print(json.dumps({
            "info": candidate.info.to_dict(),
            "distribution": candidate.distribution,
            "problems": [p.reason for p in discovery.problems],
            "imported": "helix_demo" in sys.modules,
        }))
        """,
        PYTHONPATH=str(target),
    )

    assert report == {
        "info": {
            "name": "demo",
            "version": "1.4.0",
            "description": "A demo plugin",
            "author": "Ada Lovelace",
            "entry": "helix_demo.plugin:Demo",
            "dependencies": ["base ^1.0"],
            "permissions": ["net=api.example.com:443"],
            "isolation": "process",
            "config": {"threshold": 0.5},
        },
        "distribution": "helix-demo-plugin",
        "problems": [],
        "imported": False,
    }
    assert not marker.exists()


# --- round trip --------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    assert isinstance(value, (list, tuple))
    return "[" + ", ".join(toml_value(item) for item in value) + "]"


def manifest_text(info: PluginInfo) -> str:
    lines = ["[plugin]"]
    for key, value in info.to_dict().items():
        if key != "config":
            lines.append(f"{key} = {toml_value(value)}")
    lines.append("[config]")
    lines.extend(f"{toml_string(key)} = {toml_value(value)}" for key, value in info.config.items())
    return "\n".join(lines) + "\n"


texts = st.text(st.characters(codec="utf-8"), max_size=20)
plugin_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
versions = st.builds("{}.{}.{}".format, *[st.integers(0, 999)] * 3) | st.sampled_from(
    ["1.0", "2.0rc1", "1.2.3-beta.1", "0.1.0+build.5", "3.0.post1"]
)
constraints = st.sampled_from(["^1.2", "~1.2.3", ">=1 <2", "1.x", "~=1.4", ">=1,<2", "==1.*"])
dependencies = st.builds(
    lambda name, constraint: f"{name} {constraint}" if constraint else name,
    st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
    st.none() | constraints,
)
config_values = (
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | texts | st.lists(texts, max_size=3)
)
infos = st.builds(
    PluginInfo,
    name=plugin_names,
    version=versions,
    description=texts,
    author=texts,
    dependencies=st.lists(dependencies, max_size=3).map(tuple),
    capabilities=st.lists(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), max_size=3).map(tuple),
    permissions=st.lists(
        st.sampled_from(["net", "net=example.com:443", "read=./data", "env=HOME", "ffi", "sys"]),
        max_size=3,
    ).map(tuple),
    requires=st.none() | constraints,
    isolation=st.sampled_from(["inprocess", "process"]),
    entry=st.sampled_from(["plugin", "plugin:Thing", "__init__"]),
    config=st.dictionaries(texts, config_values, max_size=4),
)


@given(info=infos)
def test_manifest_round_trip(tmp_path_factory: pytest.TempPathFactory, info: PluginInfo) -> None:
    directory = tmp_path_factory.mktemp("roundtrip")
    (directory / "plugin.toml").write_text(manifest_text(info), encoding="utf-8")
    write(directory / "plugin.py", "")
    write(directory / "__init__.py", "")

    assert Discovery(_no_entry_points()).get_info(directory) == info


# --- PLUGIN_INFO that discovery cannot read is a problem, never silently skipped -----------------

HIDDEN_INFO: dict[str, tuple[str, str]] = {
    "if": (
        'import sys\nif sys.platform:\n    PLUGIN_INFO = {"name": "x", "version": "1.0"}\n',
        "assigned inside an 'if' block (line 3)",
    ),
    "else": (
        'if False:\n    pass\nelse:\n    PLUGIN_INFO = {"name": "x", "version": "1.0"}\n',
        "assigned inside an 'if' block (line 4)",
    ),
    "try": (
        "try:\n    import foo\nexcept ImportError:\n"
        '    PLUGIN_INFO = {"name": "x", "version": "1"}\n',
        "assigned inside a 'try' block (line 4)",
    ),
    "with": (
        'import os\nwith open(os.devnull) as f:\n    PLUGIN_INFO = {"name": "x", "version": "1"}\n',
        "assigned inside a 'with' block (line 3)",
    ),
    "for": (
        'for _ in range(1):\n    PLUGIN_INFO = {"name": "x", "version": "1"}\n',
        "assigned inside a 'for' loop (line 2)",
    ),
    "also_top_level": (
        'PLUGIN_INFO = {"name": "x", "version": "1"}\n'
        'if True:\n    PLUGIN_INFO = {"name": "y", "version": "2"}\n',
        "assigned inside an 'if' block (line 3)",
    ),
    "unpacking": (
        'PLUGIN_INFO, OTHER = {"name": "x", "version": "1"}, 2\n',
        "assigned by unpacking (line 1)",
    ),
    "imported": ("from elsewhere import PLUGIN_INFO\n", "imported (line 1)"),
    "item_set": (
        'PLUGIN_INFO = {"name": "x", "version": "1"}\nPLUGIN_INFO["version"] = "2"\n',
        "changed in place after it is assigned (line 2)",
    ),
    "updated": (
        'PLUGIN_INFO = {"name": "x", "version": "1"}\nPLUGIN_INFO.update(version="2")\n',
        "changed in place after it is assigned (line 2)",
    ),
    "augmented": (
        'PLUGIN_INFO = {"name": "x"}\nPLUGIN_INFO |= {"version": "2"}\n',
        "changed in place after it is assigned (line 2)",
    ),
}


@pytest.mark.parametrize("case", sorted(HIDDEN_INFO))
def test_plugin_info_set_other_than_at_top_level_is_a_problem_naming_the_line(
    tmp_path: Path, case: str
) -> None:
    text, fragment = HIDDEN_INFO[case]
    write(tmp_path / "hidden.py", text)
    write(tmp_path / "good.py", 'PLUGIN_INFO = {"name": "good", "version": "1.0"}\n')
    discovery = Discovery(_no_entry_points(tmp_path))

    assert names(discovery.scan()) == ["good"]

    reason = problem_for(discovery, "hidden.py")
    assert f"PLUGIN_INFO is {fragment}" in reason
    assert "top-level PLUGIN_INFO = {...} literal" in reason
    assert str(tmp_path / "hidden.py") in reason


def test_plugin_info_ignores_bare_annotations_reads_and_local_names(tmp_path: Path) -> None:
    path = write(
        tmp_path / "fine.py",
        """
        PLUGIN_INFO: dict
        PLUGIN_INFO = {"name": "fine", "version": "1.0"}
        print(PLUGIN_INFO["name"])

        def helper():
            PLUGIN_INFO = {"name": "local"}
            return PLUGIN_INFO

        class Thing:
            PLUGIN_INFO = "a class attribute"

        NAMES = [PLUGIN_INFO for PLUGIN_INFO in ("a", "b")]
        """,
    )
    discovery = Discovery(_no_entry_points(tmp_path))

    assert names(discovery.scan()) == ["fine"]
    assert discovery.problems == []
    assert discovery.get_info(path).name == "fine"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            'PLUGIN_INFO = dict(name="x", version="1.0")\n',
            "must be a dict literal {...}, not a call to dict() (line 1)",
        ),
        ("PLUGIN_INFO = make_info()\n", "not a call to make_info() (line 1)"),
        ("PLUGIN_INFO = INFO\n", "not the name 'INFO' (line 1)"),
        (
            'PLUGIN_INFO = {\n    "name": "x",\n    "version": get_version(),\n}\n',
            "PLUGIN_INFO['version'] is a call to get_version(), which is not a literal (line 3)",
        ),
        (
            'PLUGIN_INFO = {"name": "x", "version": "1", "config": {"dirs": ["a", HOME]}}\n',
            "PLUGIN_INFO['config']['dirs'][1] is the name 'HOME', which is not a literal",
        ),
        (
            'BASE = {}\nPLUGIN_INFO = {"name": "x", **BASE}\n',
            "PLUGIN_INFO unpacks is the name 'BASE'",
        ),
    ],
)
def test_a_non_literal_plugin_info_says_what_and_where(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path / "made.py", text)
    with pytest.raises(ManifestError) as caught:
        Discovery(_no_entry_points()).get_info(path)
    assert fragment in str(caught.value)
    assert "<ast." not in str(caught.value)
    assert caught.value.path == str(path)


def test_a_plugin_dir_that_is_itself_a_plugin_is_that_plugin(tmp_path: Path) -> None:
    plugin = dir_plugin(tmp_path, "solo")
    write(plugin / "helper.py", 'PLUGIN_INFO = {"name": "not_a_plugin_here", "version": "1"}\n')
    write(plugin / "sub" / "plugin.toml", '[plugin]\nname = "inner"\nversion = "1.0"\n')
    write(plugin / "sub" / "plugin.py", "")
    discovery = Discovery(_no_entry_points(plugin))

    found = discovery.scan()

    assert names(found) == ["solo"]
    assert found[0].source == plugin and found[0].kind == "directory"
    assert discovery.problems == []
    # Given as ".", from inside the plugin's directory, as `helixhooks check --plugin-dir .` does.
    cwd = os.getcwd()
    os.chdir(plugin)
    try:
        assert names(Discovery(_no_entry_points()).scan(".")) == ["solo"]
    finally:
        os.chdir(cwd)


def test_a_plugin_dir_with_a_broken_manifest_of_its_own_is_a_problem(tmp_path: Path) -> None:
    plugin = tmp_path / "torn"
    write(plugin / "plugin.toml", '[plugin]\nname = "torn"\n')
    discovery = Discovery(_no_entry_points(plugin))

    assert discovery.scan() == []
    assert [p.source for p in discovery.problems] == [str(plugin)]
    assert "no 'version'" in discovery.problems[0].reason


def _in_thread(call: Any, seconds: float = 10) -> list[Any]:
    """Run ``call`` in a daemon thread; fail if it does not return within ``seconds``."""
    import threading

    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "hangs"
    return results


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_plugin_toml_that_is_a_fifo_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "piped").mkdir()
    os.mkfifo(tmp_path / "piped" / "plugin.toml")
    dir_plugin(tmp_path, "good")
    discovery = Discovery(_no_entry_points(tmp_path))

    [found] = _in_thread(discovery.scan)

    assert names(found) == ["good"]
    reason = problem_for(discovery, "piped")
    assert "plugin.toml is a FIFO (named pipe), not a regular file" in reason

    def get_info() -> BaseException | None:
        try:
            Discovery(_no_entry_points()).get_info(tmp_path / "piped")
        except ManifestError as exc:
            return exc
        return None

    [error] = _in_thread(get_info)
    assert "not a regular file" in str(error)


def test_a_plugin_toml_that_is_a_directory_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "odd" / "plugin.toml").mkdir(parents=True)
    discovery = Discovery(_no_entry_points(tmp_path))

    assert discovery.scan() == []
    assert "plugin.toml is a directory, not a regular file" in problem_for(discovery, "odd")


def test_a_misspelled_top_level_table_gets_a_guess(tmp_path: Path) -> None:
    write(tmp_path / "typo" / "plugin.toml", '[plugn]\nname = "typo"\nversion = "1.0"\n')
    with pytest.raises(ManifestError, match="did you mean 'plugin'"):
        Discovery(_no_entry_points()).get_info(tmp_path / "typo")
