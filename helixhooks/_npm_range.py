"""npm ranges: node-semver's strict range grammar, compiled into intervals over npm sort keys.

``compile_range`` turns a range text into alternatives (its ``||`` parts), each a half-open
interval of npm keys plus the pre-releases it admits, so that ``Constraint.matches`` is a few tuple
comparisons. The npm key, the SemVer grammar fragments and the error wording live here too because
``versioning`` needs them to build a version's npm key and its SemVer pattern; it imports them
from here, so the dependency runs one way.
"""

from __future__ import annotations

import re

from .errors import VersionError

MAX_SAFE_INTEGER = 2**53 - 1

RANGE_HINT = (
    "write an npm range (^1.2, ~1.2.3, 1.x, >=1 <2 || 3) or a PEP 440 specifier "
    "(~=1.4, ==1.*, >=1,<2)"
)

_PRERELEASE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
PRERELEASE = rf"{_PRERELEASE_ID}(?:\.{_PRERELEASE_ID})*"
BUILD = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"

# Sort keys. A key is a tuple compared element by element; shapes differ only where an earlier
# element already differs, so unlike shapes are never compared.
Key = tuple[object, ...]
_Identifier = tuple[int, int | str]

_RELEASE_MARK = (1,)  # in an npm key, a release sorts above every pre-release (0, ...)

# An alternative (one comparator set of an npm range): low <= key < high, and a pre-release
# version only if its (M, m, p) is that of a pre-release named in the set.
Alternative = tuple[Key, Key, frozenset[Key]]


def identifiers(text: str | None) -> tuple[int | str, ...]:
    """A pre-release's dot-separated identifiers, numeric ones as ints so they sort as numbers."""
    if not text:
        return ()
    return tuple(int(i) if i.isdigit() else i for i in text.split("."))


def identifier_key(identifier: int | str) -> _Identifier:
    # SemVer: numeric identifiers sort below alphanumeric ones.
    return (0, identifier) if isinstance(identifier, int) else (1, identifier)


def npm_key(major: int, minor: int, patch: int, prerelease: tuple[int | str, ...]) -> Key:
    """The key in which npm ranges compare versions: SemVer precedence, build metadata ignored."""
    if not prerelease:
        return (major, minor, patch, _RELEASE_MARK)
    return (major, minor, patch, (0, tuple(identifier_key(i) for i in prerelease)))


def quote(text: str) -> str:
    """``text`` for an error message, cut short so a huge input cannot flood the log."""
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def compile_range(text: str) -> tuple[Alternative, ...]:
    """The alternatives of npm range ``text`` (empty ones dropped); malformed is a VersionError."""
    return _NpmRange(text).compile()


# Grammar as node-semver reads it in strict mode. A partial version may carry any run of 'v', '='
# and spaces before it; wildcards x, X and * stand for a missing number.

_WILD = r"0|[1-9][0-9]*|[xX*]"
_WILDCARDS = frozenset({"x", "X", "*"})


def _partial_pattern(tag: str) -> str:
    return (
        rf"(?P<{tag}v>[v=\s]*)(?P<{tag}M>{_WILD})(?:\.(?P<{tag}m>{_WILD})(?:\.(?P<{tag}p>{_WILD})"
        rf"(?:-(?P<{tag}pr>{PRERELEASE}))?(?:\+{BUILD})?)?)?"
    )


_HYPHEN = re.compile(
    rf"\s*(?P<from>{_partial_pattern('f')})\s+-\s+(?P<to>{_partial_pattern('t')})\s*"
)
# One comparator: caret, tilde, or an optional operator with a (partial) version.
_TOKEN = re.compile(rf"(?P<op>\^|~>?|[<>]?=?){_partial_pattern('')}")
# An operator and its version may be written apart ('>= 1.2', '~ 1.2', '^ 1.2').
_OPERATOR_GAP = re.compile(r"([<>]=?|=)\s*([v=\s]*[0-9xX*])")
_TILDE_GAP = re.compile(r"~>?\s+")
_CARET_GAP = re.compile(r"\^\s+")
# A version used as written (no wildcard) must be a full SemVer version, 'v' allowed.
_PLAIN_PREFIX = re.compile(r"\s*v?")

_LOWEST: Key = ()
_HIGHEST: Key = (MAX_SAFE_INTEGER + 1,)
_PRERELEASE_ZERO: tuple[int | str, ...] = (0,)  # node-semver's "-0" on exclusive upper bounds

# A comparator after desugaring: an operator ('', '<', '<=', '>', '>=') and an npm key.
_Comparator = tuple[str, Key]
# A partial version's numbers; a wildcard or missing number, and every one after it, is None.
_Partial = tuple[int | None, int | None, int | None]


def _just_above(key: Key) -> Key:
    # Every key has the same length, so the key extended by one element sorts right after it:
    # '> v' is '>= _just_above(v)' and '<= v' is '< _just_above(v)'.
    return (*key, 0)


def _at_least(
    major: int, minor: int, patch: int, prerelease: tuple[int | str, ...] = ()
) -> list[_Comparator]:
    # node-semver rewrites '>=0.0.0' to match-all, dropped here like its other match-alls.
    if major == minor == patch == 0 and not prerelease:
        return []
    return [(">=", npm_key(major, minor, patch, prerelease))]


def _below(major: int, minor: int, patch: int) -> list[_Comparator]:
    return [("<", npm_key(major, minor, patch, _PRERELEASE_ZERO))]


class _NpmRange:
    """Compiles one npm range text into alternatives; raises VersionError naming the bad part."""

    def __init__(self, text: str) -> None:
        self.text = text

    def compile(self) -> tuple[Alternative, ...]:
        normalized = " ".join(self.text.split())
        alternatives = [self._comparators(part.strip()) for part in normalized.split("||")]
        # node-semver: with several alternatives, a match-all one makes the whole range match-all
        # (which, for pre-releases, matches less).
        if len(alternatives) > 1 and any(not comparators for comparators in alternatives):
            alternatives = [[]]
        compiled = (_interval(comparators) for comparators in alternatives)
        return tuple(alt for alt in compiled if alt[0] < alt[1])

    def _error(self, part: str, why: str) -> VersionError:
        return VersionError(
            f"{quote(self.text)} is not a valid npm range: {why} in {quote(part)}",
            text=self.text,
            hint=RANGE_HINT,
        )

    def _comparators(self, part: str) -> list[_Comparator]:
        """The comparators of one alternative, match-all ones dropped ([] matches everything)."""
        hyphen = _HYPHEN.fullmatch(part) if " - " in part else None
        if hyphen is not None:
            return self._hyphen(part, hyphen)
        if " " in part:
            part = _OPERATOR_GAP.sub(r"\1\2", part)
            part = _TILDE_GAP.sub("~", part)
            part = _CARET_GAP.sub("^", part)
        return [c for token in part.split(" ") if token for c in self._token(token)]

    def _partial(self, m: re.Match[str], tag: str = "") -> _Partial:
        numbers: list[int | None] = []
        for text in (m[tag + "M"], m[tag + "m"], m[tag + "p"]):
            if text is None or text in _WILDCARDS:
                break
            # At most 2**53 - 1: versioning refuses a constraint with a larger number first.
            numbers.append(int(text))
        numbers += [None] * (3 - len(numbers))
        return numbers[0], numbers[1], numbers[2]

    def _token(self, token: str) -> list[_Comparator]:
        m = _TOKEN.fullmatch(token)
        if m is None:
            raise self._error(token, "cannot read the comparator")
        op = m["op"]
        major, minor, patch = self._partial(m)
        prerelease = identifiers(m["pr"])
        if op[:1] == "^":
            return _caret(major, minor, patch, prerelease)
        if op[:1] == "~":
            return _tilde(major, minor, patch, prerelease)
        if major is not None and minor is not None and patch is not None:
            self._check_plain(token, m["v"])
            if op == ">=" and token[m.end("op") :] == "0.0.0":
                return []  # node-semver's match-all spelling
            return [("" if op == "=" else op, npm_key(major, minor, patch, prerelease))]
        return _xrange(op, major, minor)

    def _hyphen(self, part: str, m: re.Match[str]) -> list[_Comparator]:
        """'A - B': from A (missing numbers are zero) through B (missing numbers are wild)."""
        comparators: list[_Comparator] = []
        major, minor, patch = self._partial(m, "f")
        if major is not None:
            if minor is None or patch is None:
                comparators += _at_least(major, minor or 0, 0)
            else:
                self._check_plain(part, m["fv"])
                if m["from"] != "0.0.0":
                    pre = identifiers(m["fpr"])
                    comparators.append((">=", npm_key(major, minor, patch, pre)))
        major, minor, patch = self._partial(m, "t")
        if major is not None:
            if minor is None:
                comparators += _below(major + 1, 0, 0)
            elif patch is None:
                comparators += _below(major, minor + 1, 0)
            else:
                if not m["tpr"]:
                    self._check_plain(part, m["tv"])
                key = npm_key(major, minor, patch, identifiers(m["tpr"]))
                comparators.append(("<=", key))
        return comparators

    def _check_plain(self, part: str, prefix: str) -> None:
        if not _PLAIN_PREFIX.fullmatch(prefix):
            raise self._error(part, "a version must be written as 1.2.3 or v1.2.3")


def _caret(
    major: int | None, minor: int | None, patch: int | None, prerelease: tuple[int | str, ...]
) -> list[_Comparator]:
    """^M.m.p: changes that do not modify the left-most non-zero number."""
    if major is None:
        return []
    if minor is None:
        return _at_least(major, 0, 0) + _below(major + 1, 0, 0)
    if patch is None:
        low = _at_least(major, minor, 0)
    else:
        low = _at_least(major, minor, patch, prerelease)
    if major == 0 and minor == 0 and patch is not None:
        return low + _below(0, 0, patch + 1)
    if major == 0:
        return low + _below(0, minor + 1, 0)
    return low + _below(major + 1, 0, 0)


def _tilde(
    major: int | None, minor: int | None, patch: int | None, prerelease: tuple[int | str, ...]
) -> list[_Comparator]:
    """~M.m.p: patch-level changes if a minor is given, minor-level changes if not."""
    if major is None:
        return []
    if minor is None:
        return _at_least(major, 0, 0) + _below(major + 1, 0, 0)
    if patch is None:
        return _at_least(major, minor, 0) + _below(major, minor + 1, 0)
    return _at_least(major, minor, patch, prerelease) + _below(major, minor + 1, 0)


def _xrange(op: str, major: int | None, minor: int | None) -> list[_Comparator]:
    """A comparator with wildcards: '1.x', '>=1.2', '<1.x', '*' (patch is always wild here)."""
    if major is None:
        if op in ("<", ">"):
            return _below(0, 0, 0)  # matches nothing
        return []
    if op in ("", "="):
        if minor is None:
            return _at_least(major, 0, 0) + _below(major + 1, 0, 0)
        return _at_least(major, minor, 0) + _below(major, minor + 1, 0)
    if op == ">":
        return _at_least(major + 1, 0, 0) if minor is None else _at_least(major, minor + 1, 0)
    if op == "<=":
        return _below(major + 1, 0, 0) if minor is None else _below(major, minor + 1, 0)
    if op == "<":
        return _below(major, minor or 0, 0)
    return _at_least(major, minor or 0, 0)


def _interval(comparators: list[_Comparator]) -> Alternative:
    """Intersect one alternative's comparators into low <= key < high."""
    low, high = _LOWEST, _HIGHEST
    prerelease_ok: set[Key] = set()
    for op, key in comparators:
        if op in (">=", ""):
            low = max(low, key)
        elif op == ">":
            low = max(low, _just_above(key))
        if op == "<":
            high = min(high, key)
        elif op in ("<=", ""):
            high = min(high, _just_above(key))
        if key[3] != _RELEASE_MARK:
            prerelease_ok.add(key[:3])
    return (low, high, frozenset(prerelease_ok))
