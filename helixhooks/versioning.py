"""Plugin versions and version constraints, in two dialects behind one API.

Versions are SemVer 2.0.0 (node-semver's strict grammar: an optional leading ``v``, no leading
zeros) or else PEP 440. Constraints containing ``~=``, ``==``, ``!=``, ``===`` or a comma are
PEP 440 specifiers, answered by ``packaging``; anything else is an npm range with node-semver's
semantics, compiled once (by ``_npm_range``) into alternatives of half-open intervals so that a
check is a few tuple comparisons.

Where the dialects meet, these rules apply:

* ``compare`` orders two SemVer versions by SemVer precedence and anything else by PEP 440 order,
  a SemVer version standing for its PEP 440 release ``M.m.p``. SemVer pre-releases of ``M.m.p`` have
  no faithful PEP 440 spelling (``1.0.0-1`` would read as a post-release), so they all sort in one
  band, by SemVer precedence, above PEP 440's ``M.m.p.devN`` and below its ``M.m.paN``. This keeps
  ``compare`` a total order over both kinds; build metadata is ignored, as SemVer says.
* A PEP 440 version checked against an npm range is read as SemVer: the release is padded to
  ``M.m.p``; ``aN``/``bN``/``rcN`` become the pre-release ``alpha.N``/``beta.N``/``rc.N``; a lone
  ``.devN`` becomes ``dev.N``; post-release and local parts become build metadata (ignored).
  An epoch, more than three release numbers, or ``.dev`` combined with a pre- or post-release
  have no SemVer reading, and checking such a version against an npm range is a VersionError.
* A SemVer version checked against a PEP 440 specifier is read by ``packaging``
  (``1.0.0-alpha.1`` is ``1.0.0a1``); one it cannot read is a VersionError. Pre-releases are
  treated as the installed ``packaging``'s ``SpecifierSet.contains`` treats them by default.

A malformed version or constraint is always a VersionError, never a silent ``False``; where
node-semver quietly repairs a malformed comparator (a stray ``*``, say) this module refuses it.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._npm_range import (
    BUILD,
    MAX_SAFE_INTEGER,
    PRERELEASE,
    RANGE_HINT,
    Alternative,
    Key,
    compile_range,
    identifier_key,
    identifiers,
    npm_key,
    quote,
)
from .errors import VersionError, safe_repr

# packaging is imported where a PEP 440 version or specifier is first met: SemVer versions and npm
# ranges never need it, and importing it is a fifth of what versioning costs to import.
if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version as Pep440Version

__all__ = ["Constraint", "Version", "Versioner", "parse_constraint", "parse_version"]

MAX_LENGTH = 256
_CACHE_SIZE = 4096

_VERSION_HINT = "write a SemVer version (1.2.3, 1.2.3-beta.1) or a PEP 440 one (1.2, 1.0rc1)"

_NUMBER = r"0|[1-9][0-9]*"
_SEMVER = re.compile(
    rf"v?(?P<M>{_NUMBER})\.(?P<m>{_NUMBER})\.(?P<p>{_NUMBER})"
    rf"(?:-(?P<pr>{PRERELEASE}))?(?:\+(?P<b>{BUILD}))?"
)

# A pre-release's (M, m, p): the npm alternatives name the pre-releases they admit this way.
_Triple = tuple[int, int, int]

# The order key is (epoch, trimmed release, pre-release rank, post, dev, local), compared as
# _npm_range.Key describes; the ranks put SemVer pre-releases in their own band (module docstring).
_DEV_ONLY, _SEMVER_PRE, _PEP440_PRE, _NO_PRE = 0, 1, 2, 3
_FINAL = (_NO_PRE,)
_NO_POST = (0,)
_NO_DEV = (1,)
_PHASE_RANK = {"a": 0, "b": 1, "rc": 2}
_PHASE_WORD = {"a": "alpha", "b": "beta", "rc": "rc"}


def _trimmed(release: tuple[int, ...]) -> tuple[int, ...]:
    # PEP 440: 1.0 == 1.0.0, so trailing zeros do not take part in ordering.
    end = len(release)
    while end and release[end - 1] == 0:
        end -= 1
    return release[:end]


@attrs.frozen(eq=False, order=False)
class Version:
    """A parsed plugin version; ordered, equal and hashed by precedence (build metadata ignored).

    ``major``/``minor``/``patch``/``prerelease``/``build`` are the SemVer parts; for a PEP 440
    version they are its SemVer reading (see the module docstring), and ``pep440`` is
    ``packaging``'s parse of it.
    """

    text: str
    kind: Literal["semver", "pep440"]
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()
    build: tuple[str, ...] = ()
    pep440: Pep440Version | None = attrs.field(default=None, repr=False)
    _order: Key = attrs.field(default=(), repr=False, alias="order")
    # The npm view: its sort key (None when there is no SemVer reading) and the (M, m, p) of a
    # pre-release (None for a release).
    _npm: Key | None = attrs.field(default=None, repr=False, alias="npm")
    _npm_prerelease_of: _Triple | None = attrs.field(
        default=None, repr=False, alias="npm_prerelease_of"
    )

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._order == other._order

    def __hash__(self) -> int:
        return hash(self._order)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._order < other._order

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._order <= other._order

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._order > other._order

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._order >= other._order


def parse_version(text: str) -> Version:
    """Parse a SemVer 2.0.0 or PEP 440 version; anything else is a VersionError."""
    if not isinstance(text, str):
        raise VersionError(
            f"a version must be a string, not {type(text).__name__}",
            text=safe_repr(text),
            hint=_VERSION_HINT,
        )
    return _parse_version_cached(text)


def parse_version_uncached(text: str) -> Version:
    """``parse_version`` without the process-wide cache: for callers that keep their own
    (the resolver) or need none (validating a manifest), so nothing outlives them."""
    return _parse_version_cached.__wrapped__(text)


def parse_constraint_uncached(text: str) -> Constraint:
    """``parse_constraint`` without the process-wide cache (see parse_version_uncached)."""
    return _parse_constraint_cached.__wrapped__(text)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_version_cached(text: str) -> Version:
    if len(text) > MAX_LENGTH:
        raise VersionError(
            f"version {quote(text)} is longer than {MAX_LENGTH} characters",
            text=text,
            hint=_VERSION_HINT,
        )
    match = _SEMVER.fullmatch(text.strip())
    if match is not None:
        return _semver(text, match)
    from packaging.version import InvalidVersion
    from packaging.version import Version as Pep440Version

    try:
        parsed = Pep440Version(text)
    except InvalidVersion:
        raise VersionError(
            f"{quote(text)} is neither a SemVer 2.0.0 nor a PEP 440 version",
            text=text,
            hint=_VERSION_HINT,
        ) from None
    return _pep440(text, parsed)


def _too_big(text: str) -> VersionError:
    # node-semver refuses numbers JavaScript cannot hold exactly; so do we, in both dialects,
    # so that the two never disagree about what is a version.
    return VersionError(
        f"version {quote(text)} has a number larger than {MAX_SAFE_INTEGER}",
        text=text,
        hint="keep each release number below 2**53",
    )


def _semver(text: str, match: re.Match[str]) -> Version:
    major_text, minor_text, patch_text, pre_text, build_text = match.groups()
    major, minor, patch = int(major_text), int(minor_text), int(patch_text)
    if major > MAX_SAFE_INTEGER or minor > MAX_SAFE_INTEGER or patch > MAX_SAFE_INTEGER:
        raise _too_big(text)
    prerelease = identifiers(pre_text)
    build = tuple(build_text.split(".")) if build_text else ()
    if prerelease:
        pre_rank: Key = (_SEMVER_PRE, tuple(identifier_key(i) for i in prerelease))
    else:
        pre_rank = _FINAL
    order = (0, _trimmed((major, minor, patch)), pre_rank, _NO_POST, _NO_DEV, ())
    return Version(
        text,
        "semver",
        major,
        minor,
        patch,
        prerelease,
        build,
        order=order,
        npm=npm_key(major, minor, patch, prerelease),
        npm_prerelease_of=(major, minor, patch) if prerelease else None,
    )


def _pep440(text: str, parsed: Pep440Version) -> Version:
    release = parsed.release
    if max(release) > MAX_SAFE_INTEGER:
        raise _too_big(text)
    major, minor, patch = (*release, 0, 0)[:3]
    prerelease: tuple[int | str, ...] = ()
    if parsed.pre is not None:
        prerelease = (_PHASE_WORD[parsed.pre[0]], parsed.pre[1])
    elif parsed.dev is not None:
        prerelease = ("dev", parsed.dev)
    build: tuple[str, ...] = (f"post{parsed.post}",) if parsed.post is not None else ()
    build += tuple(parsed.local.split(".")) if parsed.local else ()

    has_npm_reading = _has_semver_reading(parsed)
    if parsed.pre is not None:
        pre_rank: Key = (_PEP440_PRE, _PHASE_RANK[parsed.pre[0]], parsed.pre[1])
    elif parsed.dev is not None and parsed.post is None:
        pre_rank = (_DEV_ONLY,)
    else:
        pre_rank = _FINAL
    local = tuple(
        (1, int(part)) if part.isdigit() else (0, part)
        for part in (parsed.local.split(".") if parsed.local else ())
    )
    order = (
        parsed.epoch,
        _trimmed(release),
        pre_rank,
        _NO_POST if parsed.post is None else (1, parsed.post),
        _NO_DEV if parsed.dev is None else (0, parsed.dev),
        local,
    )
    return Version(
        text,
        "pep440",
        major,
        minor,
        patch,
        prerelease,
        build,
        pep440=parsed,
        order=order,
        npm=npm_key(major, minor, patch, prerelease) if has_npm_reading else None,
        npm_prerelease_of=(major, minor, patch) if prerelease and has_npm_reading else None,
    )


def _no_semver_reading(version: Version) -> str:
    """Why a PEP 440 version has no SemVer reading, for the message that says so."""
    parsed = version.pep440
    assert parsed is not None, "only a PEP 440 version lacks a SemVer reading"
    reasons = []
    if parsed.epoch:
        reasons.append(f"it has an epoch ({parsed.epoch}!)")
    if len(parsed.release) > 3:
        reasons.append(f"it has {len(parsed.release)} release numbers where SemVer has three")
    if parsed.dev is not None and parsed.pre is not None:
        reasons.append("it combines .dev with a pre-release")
    if parsed.dev is not None and parsed.post is not None:
        reasons.append("it combines .dev with a post-release")
    return " and ".join(reasons)


def _has_semver_reading(parsed: Pep440Version) -> bool:
    return (
        not parsed.epoch
        and len(parsed.release) <= 3
        and (parsed.dev is None or (parsed.pre is None and parsed.post is None))
    )


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _packaging_reading(text: str) -> Pep440Version:
    from packaging.version import InvalidVersion
    from packaging.version import Version as Pep440Version

    try:
        return Pep440Version(text)
    except InvalidVersion:
        raise VersionError(
            f"SemVer version {quote(text)} has no PEP 440 reading, so it cannot be checked "
            "against a PEP 440 specifier",
            text=text,
            hint="use an npm range for this dependency, or a version packaging can read "
            "(1.0.0-rc.1, 1.0.0-beta.2)",
        ) from None


@attrs.frozen
class Constraint:
    """A parsed version constraint; immutable, parsed once, cheap to match."""

    text: str
    dialect: Literal["npm", "pep440"]
    _alternatives: tuple[Alternative, ...] = attrs.field(
        default=(), repr=False, alias="alternatives"
    )
    _specifier: SpecifierSet | None = attrs.field(default=None, repr=False, alias="specifier")
    # A PEP 440 specifier whose clauses all name plain releases, as _release_clauses gives it;
    # None when a clause does not (then only packaging answers).
    _release_clauses: tuple[_Clause, ...] | None = attrs.field(
        default=None, repr=False, alias="release_clauses"
    )

    def matches(self, version: Version | str) -> bool:
        """Whether ``version`` satisfies this constraint; malformed input is a VersionError."""
        if not isinstance(version, Version):
            version = parse_version(version)
        if self._specifier is not None:
            clauses = self._release_clauses
            if clauses is not None and not version.build:
                order = version._order
                # A plain release (no epoch, pre-, post- or dev-release, local part or build
                # metadata) against plain-release clauses: packaging's answer follows from the
                # release numbers alone, so it is worked out here without packaging's objects.
                # (Identity: both parsers use these constants; a copy just takes the long way.)
                if not order[0] and order[2] is _FINAL and order[4] is _NO_DEV:
                    release = order[1]
                    for check, bound in clauses:  # noqa: SIM110 - all() would cost a generator
                        if not check(release, bound):
                            return False
                    return True
            reading = (
                version.pep440 if version.pep440 is not None else _packaging_reading(version.text)
            )
            return self._specifier.contains(reading)
        key = version._npm
        if key is None:
            raise VersionError(
                f"PEP 440 version {quote(version.text)} has no SemVer reading: "
                f"{_no_semver_reading(version)}, so it cannot be checked against the npm range "
                f"{quote(self.text)}",
                text=version.text,
                hint="use a PEP 440 specifier for this dependency (e.g. >=1.0,<2), "
                "or give the plugin a SemVer version (MAJOR.MINOR.PATCH)",
            )
        prerelease_of = version._npm_prerelease_of
        for low, high, prerelease_ok in self._alternatives:
            if low <= key < high and (prerelease_of is None or prerelease_of in prerelease_ok):
                return True
        return False

    def __str__(self) -> str:
        return self.text


def parse_constraint(text: str) -> Constraint:
    """Parse an npm range or a PEP 440 specifier (see the module docstring for which is which)."""
    if not isinstance(text, str):
        raise VersionError(
            f"a constraint must be a string, not {type(text).__name__}",
            text=safe_repr(text),
            hint=RANGE_HINT,
        )
    return _parse_constraint_cached(text)


# A run of digits with 16 or more of them after its leading zeros: it may exceed 2**53 - 1.
_LONG_NUMBER = re.compile(r"(?<![0-9])0*([1-9][0-9]{15,})")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_constraint_cached(text: str) -> Constraint:
    _refuse_huge_numbers(text)
    if "," in text or "~=" in text or "==" in text or "!=" in text:
        return _parse_pep440(text)
    return Constraint(text, "npm", alternatives=compile_range(text))


def _refuse_huge_numbers(text: str) -> None:
    """A constraint's numbers, in either dialect, are at most 2**53 - 1, as versions' are.

    Checked on the digits before anything reads them as an int: int() refuses a few thousand
    digits (sys.get_int_max_str_digits) with a ValueError, and no version is that large anyway.
    """
    for found in _LONG_NUMBER.finditer(text):
        digits = found.group(1)
        if len(digits) > len(str(MAX_SAFE_INTEGER)) or int(digits) > MAX_SAFE_INTEGER:
            raise VersionError(
                f"constraint {quote(text)} has a number larger than {MAX_SAFE_INTEGER}",
                text=text,
                hint="keep each number in a constraint below 2**53",
            )


def _parse_pep440(text: str) -> Constraint:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        specifier = SpecifierSet(text)
    except InvalidSpecifier as exc:
        raise VersionError(
            f"{quote(text)} is not a valid PEP 440 specifier: {exc}",
            text=text,
            hint=RANGE_HINT,
        ) from None
    if not len(specifier):
        raise VersionError(
            f"PEP 440 specifier {quote(text)} has no clause",
            text=text,
            hint="write at least one clause, e.g. >=1.0,<2",
        )
    return Constraint(
        text, "pep440", specifier=specifier, release_clauses=_plain_release_clauses(specifier)
    )


# A PEP 440 clause over release numbers: a check of a release against a bound, both trimmed of
# trailing zeros, which makes them compare as PEP 440 compares releases (1.0 == 1.0.0, 1 < 1.0.1).
_Clause = tuple[Callable[[Any, Any], bool], Any]
_RELEASE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_RELEASE_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


def _prefix_range(prefix: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The releases ``==1.2.*`` admits, as trimmed bounds: from 1.2 up to, not including, 1.3."""
    return _trimmed(prefix), _trimmed((*prefix[:-1], prefix[-1] + 1))


def _outside(release: tuple[int, ...], bounds: tuple[tuple[int, ...], tuple[int, ...]]) -> bool:
    return release < bounds[0] or release >= bounds[1]


def _plain_release_clauses(specifier: SpecifierSet) -> tuple[_Clause, ...] | None:
    """The specifier's clauses when every one names a plain release (``>=1.2``, ``==1.*``,
    ``~=1.4``, ``!=1.3``), else None.

    For a plain release version such clauses mean just what they say about the release numbers
    (PEP 440's special cases are all about pre-, post-, dev-releases, local parts and epochs),
    which is how ``Constraint.matches`` reads them without asking packaging.
    """
    clauses: list[_Clause] = []
    for clause in specifier:
        op, text = clause.operator, clause.version
        prefix = text.endswith(".*")
        if prefix:
            text = text[:-2]
        # Only numbers and dots: any other spelling (an epoch, a pre-, post- or dev-release, a
        # local part, a leading v) is left to packaging.
        if not _RELEASE.fullmatch(text):
            return None
        release = tuple(int(number) for number in text.split("."))
        if prefix and op == "==":
            low, high = _prefix_range(release)
            clauses += [(operator.ge, low), (operator.lt, high)]
        elif prefix and op == "!=":
            clauses.append((_outside, _prefix_range(release)))
        elif op == "~=":  # ~=1.4.5 is >=1.4.5 together with ==1.4.*
            clauses += [
                (operator.ge, _trimmed(release)),
                (operator.lt, _prefix_range(release[:-1])[1]),
            ]
        elif not prefix and op in _RELEASE_OPERATORS:
            clauses.append((_RELEASE_OPERATORS[op], _trimmed(release)))
        else:
            return None
    return tuple(clauses)


class Versioner:
    """Version checks on strings, the way a host or a resolver asks them.

    Parsing is cached (bounded, per process), so repeated checks cost a dictionary lookup plus the
    match itself.
    """

    def is_compatible(self, version: str, constraint: str) -> bool:
        """Whether ``version`` satisfies ``constraint``; malformed input is a VersionError."""
        return parse_constraint(constraint).matches(parse_version(version))

    def compare(self, a: str, b: str) -> int:
        """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` (build metadata ignored)."""
        first, second = parse_version(a), parse_version(b)
        return (first > second) - (first < second)

    def latest(self, versions: Iterable[str]) -> str | None:
        """The highest of ``versions`` as written (the first of equals), or None if empty."""
        best: Version | None = None
        for text in versions:
            version = parse_version(text)
            if best is None or version > best:
                best = version
        return None if best is None else best.text

    def parse_version(self, text: str) -> Version:
        """The module's parse_version, for callers that hold a Versioner."""
        return parse_version(text)

    def parse_constraint(self, text: str) -> Constraint:
        """The module's parse_constraint, for callers that hold a Versioner."""
        return parse_constraint(text)
