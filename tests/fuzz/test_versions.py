"""Versions and constraints, both dialects, from their own tokens and from random text.

Documented: parse_version, parse_constraint, Constraint.matches and Versioner raise only
VersionError; Dependency.parse only ManifestError. A constraint's dialect is PEP 440 exactly
when it has ``~=``, ``==``, ``!=``, ``===`` or a comma.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from helixhooks.errors import ManifestError, VersionError
from helixhooks.plugin import Dependency
from helixhooks.versioning import (
    Constraint,
    Version,
    Versioner,
    parse_constraint,
    parse_constraint_uncached,
    parse_version,
    parse_version_uncached,
)

versioner = Versioner()

# Numbers at the edges: leading zeros, 2**53 - 1 and 2**53, and more digits than int() reads
# by default (4,300).
_NUMBERS = st.sampled_from(
    ["0", "1", "2", "10", "01", "007", "9007199254740991", "9007199254740992", "9" * 20, "1" * 5000]
) | st.integers(0, 10**20).map(str)
# Every piece of either grammar, and characters that look like one: Unicode digits and spaces.
_TOKENS = st.sampled_from(
    [
        *"v=^~><.-+ ,xX*!",
        "~>",
        ">=",
        "<=",
        "==",
        "===",
        "!=",
        "~=",
        " - ",
        "||",
        ".*",
        "a",
        "b",
        "rc",
        "alpha",
        "beta",
        "post",
        "dev",
        "pre",
        "+build.7",
        "\t",
        "\n",
        "\x00",
        "\u00e9",
        "\u0661",  # ARABIC-INDIC DIGIT ONE
        "\u00b2",  # SUPERSCRIPT TWO: str.isdigit() says True
        "\u3000",  # IDEOGRAPHIC SPACE: str.split() splits on it
    ]
)
texts = st.lists(_TOKENS | _NUMBERS, max_size=12).map("".join) | st.text(max_size=40)
non_strings = st.none() | st.integers() | st.floats() | st.binary(max_size=8) | st.lists(st.text())


def _version(text: str) -> Version | None:
    with contextlib.suppress(VersionError):
        version = parse_version(text)
        assert str(version) == text
        return version
    return None


def _constraint(text: str) -> Constraint | None:
    with contextlib.suppress(VersionError):
        constraint = parse_constraint(text)
        pep440 = any(mark in text for mark in (",", "~=", "==", "!="))
        assert constraint.dialect == ("pep440" if pep440 else "npm"), text
        return constraint
    return None


@given(texts)
@example("1" * 5000)
@example("1.0.0-" + "1" * 5000)
def test_a_version_parses_or_is_a_version_error(text: str) -> None:
    version = _version(text)
    uncached: Version | None = None
    with contextlib.suppress(VersionError):
        uncached = parse_version_uncached(text)
    assert (version is None) == (uncached is None)
    if version is not None:
        assert version == uncached
        assert versioner.compare(text, text) == 0


@given(texts)
@example("1" * 5000)
@example("^1.2.3-" + "1" * 5000)
@example(">=" + "1" * 5000 + ",<2")
@example("==1.0+" + "1" * 5000)
def test_a_constraint_parses_or_is_a_version_error(text: str) -> None:
    constraint = _constraint(text)
    uncached: Constraint | None = None
    with contextlib.suppress(VersionError):
        uncached = parse_constraint_uncached(text)
    assert (constraint is None) == (uncached is None)


@given(texts, texts)
@example(">=" + "1" * 5000, "1.0rc1")
@example("==1.*", "1.0+" + "1" * 250)
def test_matching_answers_or_is_a_version_error(constraint_text: str, version_text: str) -> None:
    constraint = _constraint(constraint_text)
    if constraint is None:
        return
    with contextlib.suppress(VersionError):
        assert constraint.matches(version_text) in (True, False)
    version = _version(version_text)
    if version is not None:
        with contextlib.suppress(VersionError):
            answer = constraint.matches(version)
            assert answer == versioner.is_compatible(version_text, constraint_text)


@given(st.lists(texts, max_size=4))
def test_compare_and_latest_answer_or_are_version_errors(versions: list[str]) -> None:
    with contextlib.suppress(VersionError):
        best = versioner.latest(versions)
        assert best is None if not versions else best in versions
    for first in versions:
        for second in versions:
            with contextlib.suppress(VersionError):
                order = versioner.compare(first, second)
                assert order == -versioner.compare(second, first)


@given(non_strings, texts)
def test_non_strings_are_version_errors(value: Any, text: str) -> None:
    with contextlib.suppress(VersionError):
        parse_version(value)
        raise AssertionError(f"parse_version accepted {value!r}")
    with contextlib.suppress(VersionError):
        parse_constraint(value)
        raise AssertionError(f"parse_constraint accepted {value!r}")
    constraint = _constraint(text)
    if constraint is not None:
        with contextlib.suppress(VersionError):
            constraint.matches(value)
            raise AssertionError(f"matches accepted {value!r}")


_NAMES = st.sampled_from(["a", "tok-en", "x.y", "_p", "9bad", "", " "]) | st.text(max_size=6)


@given(_NAMES, st.sampled_from(["", " ", "  "]), texts)
def test_a_dependency_entry_parses_or_is_a_manifest_error(
    name: str, gap: str, constraint: str
) -> None:
    with contextlib.suppress(ManifestError):
        dependency = Dependency.parse(name + gap + constraint, plugin="fuzzed")
        if dependency.constraint is not None:
            assert parse_constraint(dependency.constraint).text == dependency.constraint
