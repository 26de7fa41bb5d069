"""Versions and constraints: node-semver conformance, PEP 440 agreement, the cross-dialect rules."""

from __future__ import annotations

import functools
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version as Pep440Version

from helixhooks.errors import VersionError
from helixhooks.versioning import Versioner, parse_constraint, parse_version

CONFORMANCE = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "node-semver"

# Ranges node-semver itself rejects ("Invalid comparator" / "Invalid SemVer Range"). Its
# satisfies() answers False for them; we raise VersionError instead of a silent False.
NODE_INVALID_RANGES = (
    "blerg",
    ">=",
    "1.2.3 -",
    "^1.2.3.4",
    "~>",
    ">= foo",
    "1.2.3 - 2.0.0 - 3.0.0",
    "01.2.3",
    "1.2.3-01",
    ">1.2.3 <",
    "1.2.3 ~",
    "v=1.2.3",
)

versioner = Versioner()


def _is_strict(options: object) -> bool:
    """A case is strict unless it asks for loose parsing or includePrerelease."""
    if options is None or options is False:
        return True
    if isinstance(options, dict):
        return not options.get("loose") and not options.get("includePrerelease")
    return False


def _strict_cases(name: str, options_at: int) -> list[Any]:
    """The strict cases of one fixture file, one pytest param each (empty if the data is absent;
    test_conformance_data_is_present then fails)."""
    path = CONFORMANCE / name
    if not path.is_file():
        return []
    cases = json.loads(path.read_text(encoding="utf-8"))
    return [
        pytest.param(*case[:options_at], id=f"{path.stem[:5]}{index}")
        for index, case in enumerate(cases)
        if _is_strict(case[options_at] if len(case) > options_at else None)
    ]


# Roughly SemVer-shaped; enough to tell the fixtures' malformed versions ("glorp", false) from
# the rest without asking the code under test.
_SEMVER_SHAPE = re.compile(r"v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


def test_conformance_data_is_present() -> None:
    for name in (
        "range-include",
        "range-exclude",
        "comparisons",
        "valid-versions",
        "invalid-versions",
    ):
        path = CONFORMANCE / f"{name}.json"
        if not path.is_file():
            pytest.fail(f"node-semver conformance data missing: {path}")


@pytest.mark.parametrize(("range_", "version"), _strict_cases("range-include.json", 2))
def test_range_include(range_: str, version: str) -> None:
    assert parse_constraint(range_).dialect == "npm"
    assert versioner.is_compatible(version, range_)


@pytest.mark.parametrize(("range_", "version"), _strict_cases("range-exclude.json", 2))
def test_range_exclude(range_: str, version: Any) -> None:
    """node-semver's satisfies() is False for all of these. Where it is False only because the
    version or the range is malformed, our contract is a VersionError, never a silent False."""
    malformed = not isinstance(version, str) or not _SEMVER_SHAPE.fullmatch(version)
    if malformed or range_ in NODE_INVALID_RANGES:
        with pytest.raises(VersionError):
            versioner.is_compatible(version, range_)
    else:
        assert not versioner.is_compatible(version, range_)


@pytest.mark.parametrize(("greater", "lesser"), _strict_cases("comparisons.json", 2))
def test_comparisons(greater: str, lesser: str) -> None:
    assert versioner.compare(greater, lesser) == 1
    assert versioner.compare(lesser, greater) == -1
    assert parse_version(lesser) < parse_version(greater)


@pytest.mark.parametrize(
    ("text", "major", "minor", "patch", "prerelease", "build"),
    _strict_cases("valid-versions.json", 6),
)
def test_valid_versions(
    text: str, major: int, minor: int, patch: int, prerelease: list[Any], build: list[str]
) -> None:
    version = parse_version(text)
    assert version.kind == "semver"
    assert version.text == text
    assert (version.major, version.minor, version.patch) == (major, minor, patch)
    assert version.prerelease == tuple(prerelease)
    assert version.build == tuple(build)


@pytest.mark.parametrize(("value", "reason"), _strict_cases("invalid-versions.json", 2))
def test_invalid_versions(value: Any, reason: str) -> None:
    with pytest.raises(VersionError) as caught:
        parse_version(value)
    assert caught.value.hint, reason
    assert caught.value.text == (value if isinstance(value, str) else repr(value))


@pytest.mark.parametrize("range_", NODE_INVALID_RANGES)
def test_ranges_node_semver_rejects_are_version_errors(range_: str) -> None:
    with pytest.raises(VersionError) as caught:
        parse_constraint(range_)
    assert caught.value.text == range_
    assert range_ in str(caught.value)
    assert caught.value.hint


def test_stray_star_is_refused_not_repaired() -> None:
    # node-semver strips the '*' and reads '1.2.3'; a typo should not quietly change meaning.
    with pytest.raises(VersionError):
        parse_constraint("1.2.3*")


@pytest.mark.parametrize(
    ("text", "dialect"),
    [
        ("~=1.4", "pep440"),
        ("==1.*", "pep440"),
        (">=1,<2", "pep440"),
        ("!=1.3", "pep440"),
        ("===1.0", "pep440"),
        ("^1.2", "npm"),
        ("~1.2.3", "npm"),
        ("1.x", "npm"),
        ("1.2 - 2.0", "npm"),
        (">=1 <2 || 3", "npm"),
        ("", "npm"),
        (">=1.0", "npm"),
    ],
)
def test_dialect_detection(text: str, dialect: str) -> None:
    constraint = parse_constraint(text)
    assert constraint.dialect == dialect
    assert constraint.text == text


@pytest.mark.parametrize(
    ("constraint", "inside", "outside"),
    [
        ("^1.2", "1.9.9", "2.0.0"),
        ("^0.2.3", "0.2.9", "0.3.0"),
        ("^0.0.3", "0.0.3", "0.0.4"),
        ("~1.2.3", "1.2.9", "1.3.0"),
        ("1.x", "1.99.0", "2.0.0"),
        ("*", "0.0.0", "1.0.0-rc.1"),
        ("", "3.1.4", "3.1.4-beta"),
        ("1.2 - 2.0", "2.0.7", "2.1.0"),
        (">=1 <2 || 3", "3.4.5", "2.5.0"),
        ("> 1.2.3 < 1.3", "1.2.4", "1.2.3"),
        ("<=1.2", "1.2.99", "1.3.0"),
        (">1.2", "1.3.0", "1.2.99"),
        ("<1.x", "0.9.0", "1.0.0"),
        (">=1.2.3-beta.2 <2", "1.2.3-beta.10", "1.2.4-beta.3"),
        ("1.2.3-alpha", "1.2.3-alpha+build.7", "1.2.3"),
    ],
)
def test_npm_range_semantics(constraint: str, inside: str, outside: str) -> None:
    parsed = parse_constraint(constraint)
    assert parsed.matches(inside)
    assert not parsed.matches(outside)


@pytest.mark.parametrize("constraint", ["<*", ">*", "<0.0.0-0", ">2 <1", "<0.0.0"])
def test_impossible_ranges_match_nothing(constraint: str) -> None:
    parsed = parse_constraint(constraint)
    assert not any(parsed.matches(v) for v in ("0.0.0", "0.0.0-0", "1.5.0", "3.0.0"))


def test_lone_match_all_alternative_makes_the_range_match_all() -> None:
    # node-semver 7: among several alternatives, a bare '*' one replaces the whole range, so the
    # pre-release named in the other alternative is no longer allowed.
    assert parse_constraint("1.0.0-rc.1").matches("1.0.0-rc.1")
    assert not parse_constraint("* || 1.0.0-rc.1").matches("1.0.0-rc.1")
    assert parse_constraint("* || 1.0.0-rc.1").matches("7.0.0")


@pytest.mark.parametrize(
    ("version", "constraint", "expected"),
    [
        ("1.2", "^1.0", True),
        ("1.2", "~1.2.0", True),
        ("1.0rc1", "^1.0", False),
        ("1.0rc1", ">=1.0.0-rc.0 <1.0.0", True),
        ("1.0a2", "^1.0.0-alpha.1", True),
        ("1.0b1", "^1.0.0-alpha.1", True),
        ("1.0b1", "^1.0.0-rc.1", False),
        ("1.0.dev3", ">=1.0.0-dev.2 <1.0.0", True),
        ("2.0.post1", "^2.0", True),
        ("2.0.post1", "=2.0.0", True),
        ("1.4+local.7", "1.4.0", True),
    ],
)
def test_pep440_version_against_npm_range(version: str, constraint: str, expected: bool) -> None:
    assert parse_version(version).kind == "pep440"
    assert versioner.is_compatible(version, constraint) is expected


@pytest.mark.parametrize("version", ["1!1.0", "1.2.3.4", "1.0rc1.dev2", "1.0.post1.dev1"])
def test_pep440_version_without_semver_reading_is_an_error(version: str) -> None:
    with pytest.raises(VersionError) as caught:
        versioner.is_compatible(version, "^1.0")
    assert "no SemVer reading" in caught.value.message
    assert caught.value.text == version
    assert caught.value.hint


@pytest.mark.parametrize(
    ("version", "constraint", "expected"),
    [
        ("1.2.3", ">=1,<2", True),
        ("2.0.0", ">=1,<2", False),
        ("1.0.0-alpha.1", "==1.0.0a1", True),
        ("1.0.0-rc.2", "~=1.0.0rc1", True),
        ("v1.4.0", "~=1.4", True),
        ("1.0.0+build.5", "==1.0.0", True),
        ("1.3", "!=1.3", False),
        ("1.3.1", "==1.3.*", True),
    ],
)
def test_pep440_specifier(version: str, constraint: str, expected: bool) -> None:
    assert versioner.is_compatible(version, constraint) is expected


def test_semver_without_pep440_reading_against_specifier_is_an_error() -> None:
    with pytest.raises(VersionError) as caught:
        versioner.is_compatible("1.0.0-foo.bar", ">=1,<2")
    assert caught.value.text == "1.0.0-foo.bar"
    assert "PEP 440" in caught.value.message


@pytest.mark.parametrize("text", ["~=1", ">=1,<<2", "==1.0,foo", ",", " , "])
def test_malformed_pep440_specifier(text: str) -> None:
    with pytest.raises(VersionError) as caught:
        parse_constraint(text)
    assert caught.value.text == text
    assert caught.value.hint


@pytest.mark.parametrize("value", [None, 3, 1.5, ["1.0.0"], b"1.0.0"])
def test_non_strings_are_version_errors(value: Any) -> None:
    with pytest.raises(VersionError):
        parse_version(value)
    with pytest.raises(VersionError):
        parse_constraint(value)
    with pytest.raises(VersionError):
        parse_constraint("^1").matches(value)


@pytest.mark.parametrize("text", ["", "1.2.x", "1.0.0 extra", "one.two.three", "1..2"])
def test_malformed_versions(text: str) -> None:
    with pytest.raises(VersionError) as caught:
        versioner.is_compatible(text, "*")
    assert caught.value.text == text


def test_number_limits_apply_to_both_dialects() -> None:
    parse_version(f"{2**53 - 1}.0.0")
    for text in (f"{2**53}.0.0", f"1.{2**53}", f"{2**53}"):
        with pytest.raises(VersionError):
            parse_version(text)
    with pytest.raises(VersionError):
        parse_constraint(f"^{2**53}")


@pytest.mark.parametrize(
    "text",
    [
        f">={2**53},<{2**54}",
        f"=={2**53}.*",
        f">=1.0.post{2**53},<2",
        f"^1.2.3-{2**53}",
        # More digits than int() reads (sys.get_int_max_str_digits): found by tests/fuzz.
        "1" * 5000,
        "^1.2.3-" + "1" * 5000,
        ">=" + "1" * 5000 + ",<2",
        "==1.0+" + "1" * 5000,
    ],
)
def test_constraint_numbers_are_limited_in_both_dialects(text: str) -> None:
    with pytest.raises(VersionError, match="has a number larger than 9007199254740991"):
        parse_constraint(text)


def test_a_non_string_too_large_to_show_is_a_version_error() -> None:
    # Found by tests/fuzz: the error's text was repr() of the value, which refuses this int.
    for parse in (parse_version, parse_constraint):
        with pytest.raises(VersionError, match="must be a string, not int"):
            parse(2**20000)  # type: ignore[arg-type]


def test_constraint_numbers_up_to_the_limit_are_fine() -> None:
    assert parse_constraint(f">={2**53 - 1}").matches(f"{2**53 - 1}.0.0")
    assert parse_constraint(f"==000{2**53 - 1}.*,>=1").matches(f"{2**53 - 1}.1")


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0.dev1", "1.0.0-alpha"),  # SemVer pre-releases sit above .devN ...
        ("1.0.0-zzz", "1.0a1"),  # ... and below aN, in one band
        ("1.0a1", "1.0b1"),
        ("1.0rc2", "1.0.0"),
        ("1.0.0", "1.0.post1"),
        ("1.0.0", "1.0+local"),
        ("1.9", "1.10.0"),
        ("1!0.1", "1!0.2"),
        ("99.0.0", "1!0.1"),
    ],
)
def test_mixed_order(lower: str, higher: str) -> None:
    assert versioner.compare(lower, higher) == -1
    assert versioner.compare(higher, lower) == 1


def test_equal_precedence_is_equal_and_hashes_alike() -> None:
    assert versioner.compare("1.0.0", "1.0") == 0
    assert versioner.compare("0.0.0", "0") == 0
    assert versioner.compare("1.0.0+a", "1.0.0+b") == 0
    assert parse_version("1.0.0+a") == parse_version("1.0.0+b")
    assert hash(parse_version("1.0.0")) == hash(parse_version("1.0"))
    assert parse_version("1.0.0") != parse_version("1.0.1")
    assert parse_version("1.0.0") != "1.0.0"


def test_latest() -> None:
    assert versioner.latest([]) is None
    assert versioner.latest(["1.0.0", "1.10.0", "1.9.0"]) == "1.10.0"
    assert versioner.latest(["2.0.0-rc.1", "1.9", "1.9.9"]) == "2.0.0-rc.1"
    assert versioner.latest(["1.0.0+a", "1.0", "1.0.0+b"]) == "1.0.0+a"
    assert versioner.latest(iter(["0.1", "0.1.post2"])) == "0.1.post2"
    with pytest.raises(VersionError):
        versioner.latest(["1.0.0", "nope"])


def test_parsing_is_cached() -> None:
    assert parse_version("4.5.6-cache") is parse_version("4.5.6-cache")
    assert parse_constraint("^4.5 || ~6") is parse_constraint("^4.5 || ~6")
    assert versioner.parse_version("4.5.6") is parse_version("4.5.6")
    assert versioner.parse_constraint("^4") is parse_constraint("^4")


@pytest.mark.usefixtures("fast_switching")
def test_concurrent_checks_agree() -> None:
    cases = [(f"{n % 7}.{n % 5}.{n % 3}", f"^{n % 7}.{n % 4} || ~{n % 6}") for n in range(300)]
    expected = [versioner.is_compatible(v, c) for v, c in cases]
    results: list[list[bool]] = []
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            # Fresh strings each round, so threads race to fill the caches.
            results.append(
                [versioner.is_compatible(v + "+t" + str(offset), " " + c) for v, c in cases]
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i % 2,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert not errors
    assert results == [expected] * 8


# --- properties ---------------------------------------------------------------------------------

_numbers = st.integers(min_value=0, max_value=4)
_identifiers = st.sampled_from(["alpha", "beta", "rc", "a-b", "0", "1", "2", "10", "x1"])
_semver_versions = st.builds(
    lambda major, minor, patch, pre, build: (
        f"{major}.{minor}.{patch}"
        + (f"-{'.'.join(pre)}" if pre else "")
        + (f"+{build}" if build else "")
    ),
    _numbers,
    _numbers,
    _numbers,
    st.lists(_identifiers, max_size=3),
    st.sampled_from(["", "", "b.1", "sha-5"]),
)


def _reference_precedence(a: str, b: str) -> int:
    """SemVer 2.0.0 section 11, written out plainly."""

    def split(text: str) -> tuple[list[int], list[str]]:
        core = text.split("+", 1)[0]
        main, _, pre = core.partition("-")
        return [int(n) for n in main.split(".")], pre.split(".") if pre else []

    (main_a, pre_a), (main_b, pre_b) = split(a), split(b)
    if main_a != main_b:
        return -1 if main_a < main_b else 1
    if not pre_a or not pre_b:
        return (not pre_a) - (not pre_b)
    for x, y in zip(pre_a, pre_b, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pre_a) > len(pre_b)) - (len(pre_a) < len(pre_b))


@given(_semver_versions, _semver_versions, _semver_versions)
def test_compare_is_semver_precedence_and_a_total_order(a: str, b: str, c: str) -> None:
    assert versioner.compare(a, b) == _reference_precedence(a, b)
    assert versioner.compare(a, b) == -versioner.compare(b, a)
    if versioner.compare(a, b) <= 0 and versioner.compare(b, c) <= 0:
        assert versioner.compare(a, c) <= 0
    ordered = sorted([a, b, c], key=parse_version)
    reference = sorted([a, b, c], key=functools.cmp_to_key(_reference_precedence))
    assert [parse_version(v) for v in ordered] == [parse_version(v) for v in reference]


_pep440_versions = st.builds(
    lambda release, pre, post, dev: (
        ".".join(map(str, release))
        + (f"{pre[0]}{pre[1]}" if pre else "")
        + (f".post{post}" if post is not None else "")
        + (f".dev{dev}" if dev is not None else "")
    ),
    st.lists(_numbers, min_size=1, max_size=4),
    st.none() | st.tuples(st.sampled_from(["a", "b", "rc"]), _numbers),
    st.none() | _numbers,
    st.none() | _numbers,
)


@given(st.lists(_semver_versions | _pep440_versions, max_size=6))
def test_latest_is_the_maximum_under_compare(versions: list[str]) -> None:
    best = versioner.latest(versions)
    if not versions:
        assert best is None
        return
    assert best in versions
    assert all(versioner.compare(best, v) >= 0 for v in versions)


@given(_pep440_versions, _pep440_versions)
def test_pep440_versions_compare_in_packaging_order(a: str, b: str) -> None:
    # Some generated strings ("1.0.0") are SemVer; a SemVer release sits where PEP 440 puts it.
    first, second = Pep440Version(a), Pep440Version(b)
    assert versioner.compare(a, b) == (first > second) - (first < second)


@given(st.lists(_semver_versions | _pep440_versions, min_size=2, max_size=6))
def test_sorting_mixed_kinds_is_consistent_with_compare(versions: list[str]) -> None:
    ordered = sorted(versions, key=parse_version)
    for i, lower in enumerate(ordered):
        for higher in ordered[i + 1 :]:
            assert versioner.compare(lower, higher) <= 0
            assert versioner.compare(higher, lower) >= 0


@st.composite
def _specifiers(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(["~=", "==", "!=", "<=", ">=", "<", ">"]))
    release = draw(st.lists(_numbers, min_size=2 if op == "~=" else 1, max_size=3))
    text = ".".join(map(str, release))
    if op in ("==", "!=") and draw(st.booleans()):
        return f"{op}{text}.*"
    pre = draw(st.none() | st.tuples(st.sampled_from(["a", "b", "rc"]), _numbers))
    if pre:
        text += f"{pre[0]}{pre[1]}"
    if draw(st.booleans()):
        text += f".post{draw(_numbers)}"
    if draw(st.booleans()):
        text += f".dev{draw(_numbers)}"
    return op + text


_specifier_sets = st.lists(_specifiers(), min_size=1, max_size=3).filter(
    lambda specs: len(specs) > 1 or specs[0][:2] in ("~=", "==", "!=")
)


@given(_pep440_versions, _specifier_sets)
def test_pep440_dialect_agrees_with_packaging(version: str, specs: list[str]) -> None:
    text = ",".join(specs)
    constraint = parse_constraint(text)
    assert constraint.dialect == "pep440"
    assert constraint.matches(version) == SpecifierSet(text).contains(Pep440Version(version))


# A reference for npm comparator sets written straight from node-semver's rules: every
# comparator holds, and a pre-release version also needs a comparator naming a pre-release of
# the same major.minor.patch.
_ops = st.sampled_from(["<", "<=", ">", ">=", "=", ""])
_comparators = st.tuples(_ops, _semver_versions)


def _reference_npm(alternatives: list[list[tuple[str, str]]], version: str) -> bool:
    def holds(op: str, bound: str) -> bool:
        order = _reference_precedence(version, bound)
        return {
            "<": order < 0,
            "<=": order <= 0,
            ">": order > 0,
            ">=": order >= 0,
            "=": order == 0,
            "": order == 0,
        }[op]

    def core(text: str) -> str:
        return text.split("+", 1)[0].split("-", 1)[0]

    def allows(comparators: list[tuple[str, str]]) -> bool:
        if not all(holds(op, bound) for op, bound in comparators):
            return False
        if "-" not in version.split("+", 1)[0]:
            return True
        return any("-" in b.split("+", 1)[0] and core(b) == core(version) for _, b in comparators)

    # node-semver turns '>=0.0.0' into match-all, and among several alternatives a match-all one
    # stands for the whole range.
    if len(alternatives) > 1 and any(
        all(op + bound == ">=0.0.0" for op, bound in comps) for comps in alternatives
    ):
        alternatives = [[]]
    return any(allows(comparators) for comparators in alternatives)


@given(
    st.lists(st.lists(_comparators, min_size=1, max_size=3), min_size=1, max_size=3),
    _semver_versions,
)
def test_compiled_npm_matcher_agrees_with_reference(
    alternatives: list[list[tuple[str, str]]], version: str
) -> None:
    text = " || ".join(" ".join(op + bound for op, bound in comps) for comps in alternatives)
    assert parse_constraint(text).matches(version) == _reference_npm(alternatives, version)


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("1.2.3.4", "it has 4 release numbers where SemVer has three"),
        ("1!1.0", "it has an epoch (1!)"),
        ("1.0rc1.dev2", "it combines .dev with a pre-release"),
        ("1.0.post1.dev1", "it combines .dev with a post-release"),
        ("2!1.2.3.4.5", "it has an epoch (2!) and it has 5 release numbers"),
    ],
)
def test_the_message_says_which_reason_leaves_a_version_without_semver_reading(
    version: str, reason: str
) -> None:
    with pytest.raises(VersionError) as caught:
        versioner.is_compatible(version, "^1.0")
    assert reason in caught.value.message
    assert "'^1.0'" in caught.value.message
