"""PluginInfo validation and its manifest round trip; the shared model types."""

from __future__ import annotations

import importlib.metadata
import pickle
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helixhooks.errors import HelixError, ManifestError, PluginTimeout, VersionConflict
from helixhooks.plugin import (
    TRANSITIONS,
    Dependency,
    PluginCandidate,
    PluginContext,
    PluginInfo,
    PluginState,
)


def test_minimal_info_has_defaults() -> None:
    info = PluginInfo("analyzer", "1.2.0")
    assert info.dependencies == ()
    assert info.isolation == "inprocess"
    assert info.to_dict() == {"name": "analyzer", "version": "1.2.0"}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "9lives", "version": "1.0.0"}, "not a valid plugin name"),
        ({"name": "has space", "version": "1.0.0"}, "not a valid plugin name"),
        ({"name": "a", "version": "one"}, "not a valid version"),
        ({"name": "a", "version": "1.0.0", "dependencies": ["b ^^1"]}, "invalid constraint"),
        ({"name": "a", "version": "1.0.0", "dependencies": ["=>1"]}, "not 'name'"),
        ({"name": "a", "version": "1.0.0", "dependencies": ["b@1"]}, "not 'name'"),
        ({"name": "a", "version": "1.0.0", "permissions": ["internet"]}, "unknown permission"),
        ({"name": "a", "version": "1.0.0", "requires": ">>1"}, "requires"),
        ({"name": "a", "version": "1.0.0", "isolation": "docker"}, "isolation"),
        ({"name": "a", "version": "1.0.0", "entry": "plugin:"}, "entry"),
        ({"name": "a", "version": 1}, "version must be a string"),
        ({"name": "a", "version": "1.0.0", "dependencies": [3]}, "not a string"),
        # Found by tests/fuzz: an int too long for repr (spelled in hex in a file) in the message.
        ({"name": "a", "version": "1.0.0", "permissions": [2**20000]}, "<int holding an"),
    ],
)
def test_invalid_info_is_a_manifest_error_naming_the_fault(
    kwargs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ManifestError, match=fragment) as caught:
        PluginInfo(**kwargs)  # type: ignore[arg-type]
    assert caught.value.hint, "every manifest error says what to do"


def test_from_mapping_rejects_unknown_keys_and_missing_fields() -> None:
    with pytest.raises(ManifestError, match=r"unknown manifest key.*dependecies") as caught:
        PluginInfo.from_mapping(
            {"name": "a", "version": "1.0.0", "dependecies": []}, source="a/plugin.toml"
        )
    assert caught.value.plugin == "a"
    assert caught.value.path == "a/plugin.toml"
    with pytest.raises(ManifestError, match="no 'version'"):
        PluginInfo.from_mapping({"name": "a"})
    with pytest.raises(ManifestError, match="list of strings"):
        PluginInfo.from_mapping({"name": "a", "version": "1.0.0", "dependencies": "b"})
    with pytest.raises(ManifestError, match="config must be a table"):
        PluginInfo.from_mapping({"name": "a", "version": "1.0.0", "config": 3})
    with pytest.raises(ManifestError, match=r"unknown manifest key.*1"):
        PluginInfo.from_mapping({"name": "a", "version": "1.0.0", 1: 2})


def test_errors_raised_inside_from_mapping_carry_the_source() -> None:
    with pytest.raises(ManifestError) as caught:
        PluginInfo.from_mapping({"name": "a", "version": "x.y"}, source="plugins/a/plugin.toml")
    assert caught.value.path == "plugins/a/plugin.toml"
    assert "plugins/a/plugin.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "name", "constraint"),
    [
        ("tokenizer", "tokenizer", None),
        ("tokenizer ^1.0", "tokenizer", "^1.0"),
        ("cache >=2,<3", "cache", ">=2,<3"),
        ("cache>=2", "cache", ">=2"),
        ("  spaced-name   ~1.2.3 ", "spaced-name", "~1.2.3"),
        ("x 1.x || 2", "x", "1.x || 2"),
        ("_0 >=2,<3", "_0", ">=2,<3"),
        ("lib2 2.x", "lib2", "2.x"),
    ],
)
def test_dependency_entries_parse(text: str, name: str, constraint: str | None) -> None:
    dep = Dependency.parse(text)
    assert (dep.name, dep.constraint) == (name, constraint)


def test_a_dependency_entry_that_is_no_string_is_a_manifest_error_whatever_it_is() -> None:
    with pytest.raises(ManifestError, match="dependency entry 3 is not a string"):
        Dependency.parse(3)
    # Found by tests/fuzz: repr refuses an int of more than 4,300 digits.
    with pytest.raises(ManifestError, match="<int holding an integer too large to show>"):
        Dependency.parse(2**20000)


def test_transitions_cover_every_state_and_unloaded_is_terminal() -> None:
    assert set(TRANSITIONS) == set(PluginState)
    assert TRANSITIONS[PluginState.UNLOADED] == frozenset()
    assert PluginState.STARTED not in TRANSITIONS[PluginState.LOADED]


def test_context_logger_is_namespaced() -> None:
    ctx = PluginContext("analyzer", "1.0.0", {"threshold": 0.5})
    assert ctx.logger.name == "helixhooks.plugin.analyzer"
    assert ctx.config["threshold"] == 0.5


def test_context_path_is_a_path_kept_as_its_string() -> None:
    ctx = PluginContext("analyzer", "1.0.0", path=Path("plugins", "analyzer"))
    assert ctx.path == Path("plugins", "analyzer")
    assert ctx == PluginContext("analyzer", "1.0.0", path=str(Path("plugins", "analyzer")))
    assert PluginContext("analyzer", "1.0.0").path is None


def test_candidate_source_is_a_path_or_an_entry_point() -> None:
    info = PluginInfo("analyzer", "1.0.0")
    directory = Path("plugins", "analyzer")
    candidate = PluginCandidate(info, directory, "directory")
    assert candidate.source == directory
    assert candidate.fspath == str(directory) == candidate.location
    assert candidate.entry_point is None
    assert candidate == PluginCandidate(info, str(directory), "directory")
    entry_point = importlib.metadata.EntryPoint(
        "analyzer", "analyzer_pkg.plugin:Analyzer", "helixhooks.plugins"
    )
    installed = PluginCandidate(info, entry_point, "entry_point", distribution="analyzer-pkg")
    assert installed.source is entry_point
    assert installed.entry_point is entry_point
    assert installed.fspath is None
    assert installed.location == (
        "entry point helixhooks.plugins:analyzer = analyzer_pkg.plugin:Analyzer"
    )


def test_errors_name_plugin_and_fix_and_survive_pickling() -> None:
    err = VersionConflict("analyzer", "tokenizer", "^2.0", "1.4.0")
    text = str(err)
    assert "analyzer" in text and "tokenizer" in text and "^2.0" in text and "1.4.0" in text
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, VersionConflict)
    assert str(copy) == text and copy.found == "1.4.0"
    timeout = pickle.loads(pickle.dumps(PluginTimeout("slow", "start", 0.5)))
    assert isinstance(timeout, HelixError) and "0.5s" in str(timeout)


_names = st.from_regex(r"[a-z_][a-z0-9_\-]{0,20}", fullmatch=True)
_semver = st.builds(
    lambda a, b, c: f"{a}.{b}.{c}",
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(0, 50),
)
_constraint = st.sampled_from(["", " ^1.0", " ~1.2.3", " >=2,<3", " 1.x", " >=1 <2 || 3"])
_text = st.text(string.ascii_letters + string.digits + " .,-", max_size=30)
_config_values = st.recursive(
    st.integers() | st.booleans() | _text,
    lambda children: st.lists(children, max_size=3),
    max_leaves=5,
)


@given(
    name=_names,
    version=_semver,
    description=_text,
    author=_text,
    deps=st.lists(st.tuples(_names, _constraint).map("".join), max_size=4),
    capabilities=st.lists(_names, max_size=3),
    permissions=st.lists(st.sampled_from(["net", "read=./data", "env=HOME", "ffi"]), max_size=3),
    requires=st.none() | st.just(">=0.1"),
    isolation=st.sampled_from(["inprocess", "process"]),
    entry=st.none() | st.sampled_from(["plugin", "plugin:Analyzer", "pkg.mod:Cls"]),
    config=st.dictionaries(_names, _config_values, max_size=3),
)
def test_from_mapping_to_dict_round_trip(
    name: str,
    version: str,
    description: str,
    author: str,
    deps: list[str],
    capabilities: list[str],
    permissions: list[str],
    requires: str | None,
    isolation: str,
    entry: str | None,
    config: dict[str, object],
) -> None:
    info = PluginInfo(
        name,
        version,
        description=description,
        author=author,
        dependencies=deps,
        capabilities=capabilities,
        permissions=permissions,
        requires=requires,
        isolation=isolation,
        entry=entry,
        config=config,
    )
    data = info.to_dict()
    again = PluginInfo.from_mapping(data)
    assert again == info
    assert again.to_dict() == data


def test_a_repeated_bad_dependency_names_each_plugin_that_declares_it() -> None:
    for name in ("one", "two"):
        with pytest.raises(ManifestError, match="invalid constraint") as caught:
            PluginInfo(name, "1.0.0", dependencies=["shared ^^1"])
        assert caught.value.plugin == name
    assert Dependency.parse("shared ^1") is Dependency.parse("shared ^1")


@pytest.mark.parametrize(
    ("key", "meant"),
    [("dependancies", "dependencies"), ("descripton", "description"), ("isolaton", "isolation")],
)
def test_a_misspelled_manifest_key_gets_a_guess(key: str, meant: str) -> None:
    with pytest.raises(ManifestError, match=f"unknown manifest key.*{key}") as caught:
        PluginInfo.from_mapping({"name": "a", "version": "1.0.0", key: []}, source="plugin.toml")
    assert caught.value.hint is not None
    assert f"did you mean {meant!r}?" in caught.value.hint


def test_several_misspelled_keys_each_get_their_guess() -> None:
    with pytest.raises(ManifestError) as caught:
        PluginInfo.from_mapping(
            {"name": "a", "version": "1.0.0", "dependancies": [], "autor": "x", "zzz": 1}
        )
    hint = caught.value.hint or ""
    assert "for 'autor', did you mean 'author'?" in hint
    assert "for 'dependancies', did you mean 'dependencies'?" in hint
    assert "zzz" not in hint.split("known keys")[0]


def test_an_isolation_typo_lists_the_modes_and_guesses() -> None:
    with pytest.raises(ManifestError) as caught:
        PluginInfo("a", "1.0.0", isolation="proces")
    assert "isolation must be 'inprocess' or 'process', not 'proces'" in str(caught.value)
    assert "did you mean 'process'?" in (caught.value.hint or "")
