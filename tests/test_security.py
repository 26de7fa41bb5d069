"""Permissions: parsing and its errors, covers() and allows() on real paths, grants, Sandbox."""

from __future__ import annotations

import ipaddress
import itertools
import os
import textwrap
from pathlib import Path, PurePath

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import helixhooks as hh
from helixhooks.config import Config
from helixhooks.errors import LoadError, ManifestError
from helixhooks.plugin import PluginInfo
from helixhooks.security import Permission, PermissionSet, Sandbox, granted


def real(path: str | Path) -> str:
    return os.path.realpath(path)


# --- parsing -----------------------------------------------------------------------------------

NET_HINT = "net=host:port"


@pytest.mark.parametrize(
    ("text", "fragment", "hint"),
    [
        ("netwrk", "unknown permission 'netwrk'", "did you mean 'network'?"),
        ("internet=x", "unknown permission 'internet' in 'internet=x'", "permissions are env,"),
        ("read=", "has an empty scope", "write 'read' alone"),
        ("run=", "has an empty scope", "write 'run' alone"),
        ("run=  ", "has an empty scope", "write 'run' alone"),
        ("ffi=libc", "ffi takes no scope", "write 'ffi' alone"),
        ("sys=hostname", "sys takes no scope", "write 'sys' alone"),
        ("net=:80", "no host before ':80'", NET_HINT),
        ("net=host:", "no port after ':'", NET_HINT),
        ("net=host:http", "port 'http' is not a number", NET_HINT),
        ("net=host:0", "port 0 is not in 1..65535", NET_HINT),
        ("net=host:65536", "port 65536 is not in 1..65535", NET_HINT),
        ("net=[::1", "'[' has no closing ']'", NET_HINT),
        ("net=[::1]x", "'x' follows the address", NET_HINT),
        ("net=::1", "must be in brackets", NET_HINT),
        ("net=[example.com]:80", "is not an IPv6 address", NET_HINT),
        ("net=[10.0.0.1]", "is not an IPv6 address", NET_HINT),
        ("net=999.0.0.1", "is not an IPv4 address", NET_HINT),
        ("net=exa mple.com", "is not a host name or an IP address", NET_HINT),
        ("net=*", "is not a host name", "net alone for every host"),
        ("env=1PATH", "is not an environment variable name", "env=HOME"),
        ("env=MY-VAR", "is not an environment variable name", "env=HOME"),
        ("read=a\0b", "contains a NUL character", "remove"),
    ],
)
def test_parse_errors_name_the_plugin_the_text_and_the_fix(
    text: str, fragment: str, hint: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        Permission.parse(text, plugin="analyzer")
    error = caught.value
    assert fragment in error.message
    assert repr(text) in error.message
    assert error.plugin == "analyzer"
    assert error.hint is not None and hint in error.hint


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("network", "net"),
        ("network=api.example.com:443", "net=api.example.com:443"),
        ("net=API.Example.COM.:0443", "net=api.example.com:443"),
        ("net=[0:0:0:0:0:0:0:1]:8080", "net=[::1]:8080"),
        ("net=[::FFFF:10.0.0.1]", "net=10.0.0.1"),
        ("net=10.0.0.1:80", "net=10.0.0.1:80"),
        ("net=/run/app.sock", "net=/run/app.sock"),
        ("env=HOME", "env=HOME"),
        ("run=git", "run=git"),
        ("ffi", "ffi"),
        ("sys", "sys"),
        ("read", "read"),
    ],
)
def test_parse_gives_the_canonical_form(text: str, canonical: str) -> None:
    permission = Permission.parse(text)
    assert str(permission) == canonical
    assert Permission.parse(canonical) == permission


def test_network_is_an_alias_of_net() -> None:
    assert Permission.parse("network") == Permission("net")
    assert PermissionSet.parse(["net", "network"]).permissions == (Permission("net"),)
    assert PermissionSet.parse(["network"]).allows("net", "example.com:80")
    assert PermissionSet.parse(["net"]).allows("network", "example.com:80")


def test_path_scopes_are_real_paths_from_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    root = real(tmp_path)
    assert Permission.parse("read=data", base=tmp_path).scope == f"{root}/data"
    assert Permission.parse("write=./a/../b", base=tmp_path).scope == f"{root}/b"
    assert Permission.parse("read=link/x", base=tmp_path).scope == f"{root}/real/x"
    assert Permission.parse(f"read={root}/y", base="/elsewhere").scope == f"{root}/y"
    assert Permission.parse("read=~/notes").scope == real(os.path.expanduser("~/notes"))
    monkeypatch.chdir(tmp_path)
    assert Permission.parse("read=data").scope == f"{root}/data"
    assert Permission.parse("run=./bin/tool").scope == f"{root}/bin/tool"
    assert Permission.parse("run=tool").scope == "tool"  # a program name, not a path


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hostnames = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda host: not host.replace(".", "").isdigit())
)
written_hosts = st.one_of(
    st.builds(
        lambda host, upper, dot: (host.upper() if upper else host) + ("." if dot else ""),
        hostnames,
        st.booleans(),
        st.booleans(),
    ),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address.exploded}]"),
    st.ip_addresses(v=6).map(lambda address: f"[{address.compressed}]"),
)
ports = st.none() | st.integers(1, 65535)


@given(host=written_hosts, port=ports)
def test_net_scopes_round_trip(host: str, port: int | None) -> None:
    permission = Permission.parse(f"net={host}" + (f":{port}" if port else ""))
    assert Permission.parse(str(permission)) == permission
    assert permission.covers(permission)
    assert PermissionSet((permission,)).allows("net", permission.scope)


@given(address=st.ip_addresses(v=6))
def test_ipv6_spellings_are_one_scope(address: ipaddress.IPv6Address) -> None:
    assert Permission.parse(f"net=[{address.exploded}]:1") == Permission.parse(
        f"net=[{address.compressed.upper()}]:1"
    )


components = st.lists(st.sampled_from(["a", "b", "ab", "a.b", ".", ".."]), max_size=5)


@given(parts=components)
def test_path_scopes_round_trip(tmp_path_factory: pytest.TempPathFactory, parts: list[str]) -> None:
    base = tmp_path_factory.getbasetemp()
    relative = os.path.join("plugin", *parts)
    permission = Permission.parse(f"read={relative}", base=base)
    assert permission.scope == real(os.path.join(base, relative))
    assert Permission.parse(str(permission), base="/elsewhere") == permission
    assert permission.covers(permission)


# --- covers --------------------------------------------------------------------------------------

# (host, port) of each scope; None for the whole of net.
NET_SCOPES: list[tuple[str, int | None] | None] = [
    None,
    *itertools.product(("a.example", "b.example", "10.0.0.1", "[::1]"), (None, 80, 443)),
]


def _net(scope: tuple[str, int | None] | None) -> Permission:
    if scope is None:
        return Permission.parse("net")
    host, port = scope
    return Permission.parse(f"net={host}" + (f":{port}" if port else ""))


def test_net_covers_is_reflexive_transitive_and_as_specified() -> None:
    for grant, request in itertools.product(NET_SCOPES, repeat=2):
        expected = grant is None or (
            request is not None and grant[0] == request[0] and grant[1] in (None, request[1])
        )
        assert _net(grant).covers(_net(request)) is expected, (grant, request)
    pool = [_net(scope) for scope in NET_SCOPES]
    for a, b, c in itertools.product(pool, repeat=3):
        assert a.covers(a)
        if a.covers(b) and b.covers(c):
            assert a.covers(c), (a, b, c)
    covers = Permission.parse("net=a.example").covers
    assert covers(Permission.parse("net=a.example:80"))
    assert covers(Permission.parse("net=A.EXAMPLE."))
    assert not covers(Permission.parse("net=b.example"))
    assert not covers(Permission.parse("net"))
    on_80 = Permission.parse("net=a.example:80").covers
    assert on_80(Permission.parse("net=a.example:80"))
    assert not on_80(Permission.parse("net=a.example:443"))
    assert not on_80(Permission.parse("net=a.example")), "every port is more than port 80"
    assert not Permission.parse("net=a.example").covers(Permission.parse("read"))


def _inside(base: str, outer: list[str], inner: list[str]) -> bool:
    """The oracle: by components of the normalized paths (no symlinks below ``base``)."""
    # PurePath.parts, not str.split: "/" (where enough ".." lead) is one part, not two empty ones.
    outer_parts, inner_parts = (
        PurePath(os.path.normpath(os.path.join(base, "plugin", *parts))).parts
        for parts in (outer, inner)
    )
    return inner_parts[: len(outer_parts)] == outer_parts


@given(scope=components, target=components, third=components)
@example(scope=[".."] * 30, target=[], third=[]).via("a scope that climbs to /")
def test_a_path_scope_covers_exactly_the_paths_under_it(
    tmp_path_factory: pytest.TempPathFactory, scope: list[str], target: list[str], third: list[str]
) -> None:
    base = real(tmp_path_factory.getbasetemp() / "paths")
    a, b, c = (
        Permission.parse("read=" + os.path.join("plugin", *parts), base=base)
        for parts in (scope, target, third)
    )
    assert a.covers(b) == _inside(base, scope, target)
    assert PermissionSet((a,)).allows("read", b.scope) == a.covers(b)
    if a.covers(b) and b.covers(c):
        assert a.covers(c)


def test_a_path_scope_does_not_cover_a_sibling_with_the_same_prefix(tmp_path: Path) -> None:
    data = Permission.parse("read=data", base=tmp_path)
    assert not data.covers(Permission.parse("read=database", base=tmp_path))
    assert data.covers(Permission.parse("read=data/base", base=tmp_path))
    assert not data.covers(Permission.parse("write=data", base=tmp_path))
    assert Permission.parse("read=/").covers(data)


def test_run_covers_by_program_name_or_exact_path(tmp_path: Path) -> None:
    tool = f"{real(tmp_path)}/bin/tool"
    by_name, by_path = Permission.parse("run=tool"), Permission.parse(f"run={tool}")
    assert by_name.covers(by_path) and by_name.covers(Permission.parse("run=tool"))
    assert by_path.covers(by_path)
    assert not by_path.covers(by_name), "a bare name may be any program of that name"
    assert not by_name.covers(Permission.parse(f"run={tool}2"))
    assert Permission.parse("env=HOME").covers(Permission.parse("env=HOME"))
    assert not Permission.parse("env=HOME").covers(Permission.parse("env=HOMER"))


# --- allows: net -------------------------------------------------------------------------------

NET = PermissionSet.parse(
    ["net=api.example.com:443", "net=10.0.0.1", "net=[::1]:8080", "net=/run/app.sock"]
)


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("api.example.com:443", True),
        ("API.Example.COM.:443", True),
        (("api.example.com", 443), True),
        ("api.example.com:80", False),
        ("api.example.com", True),  # a lookup, without a port: any scope of the host
        ("other.example.com:443", False),
        ("other.example.com", False),
        ("10.0.0.1:1234", True),
        (("10.0.0.1", 5), True),
        (("::ffff:10.0.0.1", 5, 0, 0), True),
        ("10.0.0.2:1234", False),
        (("::1", 8080, 0, 0), True),
        (("0:0::1", 8080), True),
        ("[::1]:8080", True),
        ("[::1]:8081", False),
        ("::1", True),
        ("/run/app.sock", True),
        (b"/run/app.sock", True),
        ("/run/other.sock", False),
        ("\0abstract", False),
        ("api.example.com:http", False),
        (42, False),
        (("api.example.com", "443"), False),
    ],
)
def test_net_targets(target: object, allowed: bool) -> None:
    assert NET.allows("net", target) is allowed


def test_unix_socket_paths_need_net_or_their_own_scope() -> None:
    assert PermissionSet.parse(["net"]).allows("net", "/run/any.sock")
    assert PermissionSet.parse(["net=\0abstract"]).allows("net", "\0abstract")
    assert not PermissionSet.parse(["net=localhost"]).allows("net", "/run/app.sock")


def test_resolve_is_used_only_for_host_name_scopes_and_ip_targets() -> None:
    asked: list[str] = []

    def resolve(host: str) -> list[str]:
        asked.append(host)
        return ["93.184.216.34", "2606:2800:0220:1::1"]

    rules = PermissionSet.parse(["net=api.example.com:443", "net=10.0.0.1"])
    assert not rules.allows("net", ("93.184.216.34", 443)), "names only, without a resolver"
    assert rules.allows("net", ("93.184.216.34", 443), resolve=resolve)
    assert asked == ["api.example.com"]
    assert rules.allows("net", ("2606:2800:220:1:0::1", 443, 0, 0), resolve=resolve)
    asked.clear()
    assert not rules.allows("net", ("93.184.216.34", 80), resolve=resolve)
    assert rules.allows("net", ("10.0.0.1", 80), resolve=resolve)
    assert rules.allows("net", "api.example.com:443", resolve=resolve)
    assert not rules.allows("net", "www.example.com:443", resolve=resolve)
    assert asked == [], "no port match, an IP scope, or a name target: nothing to resolve"
    ip_only = PermissionSet.parse(["net=93.184.216.34"])
    assert not ip_only.allows("net", "example.com:80", resolve=lambda host: ["93.184.216.34"])


def test_a_resolver_error_denies() -> None:
    def resolve(host: str) -> list[str]:
        raise OSError("no such host")

    assert not PermissionSet.parse(["net=gone.example"]).allows(
        "net", ("1.2.3.4", 1), resolve=resolve
    )


# --- allows: paths, env, run, ffi, sys ---------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """data/ with a file, a symlink out of it; a sibling database/; a link into data."""
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "file").write_text("x")
    (tmp_path / "database").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("k")
    (tmp_path / "data" / "out").symlink_to(tmp_path / "secret")
    (tmp_path / "in").symlink_to(tmp_path / "data" / "file")
    return tmp_path


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("data", True),
        ("data/file", True),
        ("data/sub/new-file", True),
        ("data/missing/dir/x", True),
        ("database", False),
        ("database/file", False),
        ("data/../secret/key", False),
        ("data/out", False),
        ("data/out/key", False),
        ("in", True),
        ("elsewhere/../data/file", True),
        ("secret/../data/sub/../file", True),
    ],
)
def test_read_targets(tree: Path, target: str, allowed: bool) -> None:
    rules = PermissionSet.parse(["read=data"], base=tree)
    assert rules.allows("read", str(tree / target)) is allowed
    assert rules.allows("read", tree / target) is allowed
    assert rules.allows("read", os.fsencode(tree / target)) is allowed
    assert not rules.allows("write", tree / target)


def test_relative_targets_are_from_the_working_directory(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = PermissionSet.parse(["write=data"], base=tree)
    monkeypatch.chdir(tree / "data")
    assert rules.allows("write", "file")
    assert not rules.allows("write", "../secret/key")


def test_unreadable_path_targets_are_denied(tree: Path) -> None:
    rules = PermissionSet.parse(["read=data"], base=tree)
    assert not rules.allows("read", 3)
    assert not rules.allows("read", f"{tree}/data/a\0b")
    assert PermissionSet.parse(["read"]).allows("read", 3), "all of read allows any target"


def test_env_is_matched_by_exact_name() -> None:
    rules = PermissionSet.parse(["env=HOME"])
    assert rules.allows("env", "HOME")
    assert not rules.allows("env", "home") and not rules.allows("env", "HOMER")
    assert rules.allows("env")
    assert PermissionSet.parse(["env"]).allows("env", "ANYTHING")


def test_run_by_program_name_or_real_path(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    (tmp_path / "alias").symlink_to(tool)
    by_name = PermissionSet.parse(["run=tool"])
    assert by_name.allows("run", "tool") and by_name.allows("run", str(tool))
    assert by_name.allows("run", "/usr/local/bin/tool")
    assert not by_name.allows("run", "tool2") and not by_name.allows("run", "/usr/bin/other")
    assert not by_name.allows("run", tmp_path / "alias"), "the name as invoked"
    by_path = PermissionSet.parse([f"run={tool}"])
    assert by_path.allows("run", str(tool)) and by_path.allows("run", tmp_path / "alias")
    assert not by_path.allows("run", "tool"), "a bare name is found on PATH, maybe elsewhere"
    assert not by_path.allows("run", "/usr/local/bin/tool")


def test_ffi_and_sys_ignore_the_target() -> None:
    rules = PermissionSet.parse(["ffi"])
    assert rules.allows("ffi") and rules.allows("ffi", "libc.so.6")
    assert not rules.allows("sys") and not rules.allows("sys", "anything")


def test_deny_by_default_and_unknown_names() -> None:
    empty = PermissionSet()
    assert not empty and not empty.allows("net") and not empty.allows("read", "/")
    rules = PermissionSet.parse(["net=a.example", "read"])
    assert rules.allows("net") and rules.allows("read") and not rules.allows("write")
    assert "net" in rules.names and "read" in rules.names and "env" not in rules.names
    with pytest.raises(ValueError, match="permissions are net, read, write"):
        rules.allows("internet")


# --- sets: uncovered_by, added_since, str ------------------------------------------------------


def test_uncovered_and_added_permissions(tmp_path: Path) -> None:
    old = PermissionSet.parse(["net=api.example.com:443", "read=data"], base=tmp_path)
    new = PermissionSet.parse(
        ["net=api.example.com:443", "net=evil.example", "read=data/sub", "env=HOME"],
        base=tmp_path,
    )
    assert new.added_since(old) == (Permission("net", "evil.example"), Permission("env", "HOME"))
    assert old.added_since(new) == (Permission("read", f"{real(tmp_path)}/data"),)
    assert new.uncovered_by(PermissionSet.parse(["net", "read", "env"])) == ()
    assert PermissionSet().added_since(old) == ()
    assert list(old) == list(old.permissions)
    assert str(old) == f"net=api.example.com:443, read={real(tmp_path)}/data"
    assert str(PermissionSet()) == ""


# --- granted -----------------------------------------------------------------------------------


def analyzer(*permissions: str) -> PluginInfo:
    return PluginInfo("analyzer", "1.0.0", permissions=permissions)


def test_without_grants_a_plugin_gets_what_it_requests(tmp_path: Path) -> None:
    info = analyzer("net=api.example.com:443", "read=./data")
    permissions = granted(info, Config(), tmp_path)
    assert permissions == PermissionSet.parse(info.permissions, base=tmp_path)
    assert permissions.allows("read", tmp_path / "data" / "x")


@pytest.mark.parametrize(
    "grants",
    [
        {"analyzer": ["net=api.example.com", "read"]},
        {"*": ["network", "read"]},
        {"*": [], "analyzer": ["net", "read=/"]},
    ],
)
def test_grants_that_cover_the_request_give_the_request(
    tmp_path: Path, grants: dict[str, list[str]]
) -> None:
    info = analyzer("net=api.example.com:443", "read=./data")
    permissions = granted(info, Config(grants=grants), tmp_path)
    assert permissions == PermissionSet.parse(info.permissions, base=tmp_path)


def test_a_request_beyond_the_grants_is_a_load_error(tmp_path: Path) -> None:
    config = Config(grants={"analyzer": ["net=api.example.com:443"], "*": ["net"]})
    with pytest.raises(LoadError) as caught:
        granted(analyzer("net=evil.com:443"), config, tmp_path)
    error = caught.value
    assert error.plugin == "analyzer"
    assert error.message == (
        "asks for net=evil.com:443, which its grants (net=api.example.com:443) do not cover"
    )
    assert error.path == str(tmp_path)
    assert error.hint is not None
    assert "Config.grants['analyzer']" in error.hint and "drop it" in error.hint


def test_the_shared_grant_and_no_grant_at_all(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"asks for env=HOME, which its grants \(net\)") as caught:
        granted(analyzer("env=HOME"), Config(grants={"*": ["net"]}), tmp_path)
    assert caught.value.hint is not None and "replaces '*'" in caught.value.hint
    with pytest.raises(LoadError, match=r"grants \(none\) do not cover"):
        granted(analyzer("ffi"), Config(grants={"other": ["ffi"]}), None)
    assert not granted(analyzer(), Config(grants={}), None)


def test_grant_paths_are_from_the_hosts_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config(grants={"*": ["read=plugins"]})
    info = analyzer("read=./data")
    assert granted(info, config, tmp_path / "plugins" / "analyzer")
    with pytest.raises(LoadError, match="read="):
        granted(info, config, tmp_path / "elsewhere")


def test_a_grant_that_does_not_parse_names_config_grants() -> None:
    with pytest.raises(ManifestError) as caught:
        granted(analyzer("net"), Config(grants={"*": ["net=host:http"]}), None)
    error = caught.value
    assert "Config.grants['*']" in error.message and "'net=host:http'" in error.message
    assert error.path == "Config.grants"
    assert error.hint is not None and "[grants]" in error.hint


# --- Sandbox -----------------------------------------------------------------------------------


def test_sandbox_registered_plugins(tmp_path: Path) -> None:
    sandbox = hh.Sandbox(Config())
    info = analyzer("net=api.example.com:443", "read=./data")
    assert sandbox.register(info, tmp_path) == sandbox.permissions("analyzer")
    assert sandbox.check_permission("analyzer", "net", "api.example.com:443")
    assert sandbox.check_permission("analyzer", "network", ("api.example.com", 443))
    assert not sandbox.check_permission("analyzer", "net", "evil.com:443")
    assert sandbox.check_permission(info, "read", tmp_path / "data" / "x")
    assert not sandbox.check_permission("analyzer", "env", "HOME")
    assert sandbox.check_permission(
        "analyzer", "net", ("1.2.3.4", 443), resolve=lambda host: ["1.2.3.4"]
    )
    sandbox.register(analyzer("env=HOME"), tmp_path)
    assert not sandbox.check_permission("analyzer", "net")
    sandbox.forget("analyzer")
    assert not sandbox.check_permission("analyzer", "env", "HOME")
    assert sandbox.permissions("analyzer") == PermissionSet()
    sandbox.forget("analyzer")  # forgetting twice is fine


def test_sandbox_denies_unknown_plugins_and_keeps_the_old_set_on_refusal(tmp_path: Path) -> None:
    sandbox = Sandbox(Config(grants={"analyzer": ["net"]}))
    assert not sandbox.check_permission("ghost", "net")
    sandbox.register(analyzer("net=api.example.com"), tmp_path)
    with pytest.raises(LoadError, match="asks for ffi"):
        sandbox.register(analyzer("net", "ffi"), tmp_path)
    assert sandbox.permissions("analyzer") == PermissionSet.parse(["net=api.example.com"])


def test_sandbox_judges_an_unregistered_info_by_its_request_under_the_grants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    info = analyzer("net=api.example.com:443", "env=HOME", "read=data")
    bounded = Sandbox(Config(grants={"*": ["net", "read"]}))
    assert bounded.check_permission(info, "net", "api.example.com:443")
    assert bounded.check_permission(info, "read", tmp_path / "data" / "x")
    assert not bounded.check_permission(info, "env", "HOME"), "asked, but not granted"
    unbounded = Sandbox(Config())
    assert unbounded.check_permission(info, "env", "HOME")
    unbounded.register(analyzer("ffi"), None)
    newer = PluginInfo("analyzer", "2.0.0", permissions=["env=HOME"])
    assert unbounded.check_permission(newer, "env", "HOME")
    assert not unbounded.check_permission(newer, "ffi"), "judged by its own request"
    assert unbounded.check_permission("analyzer", "ffi")


@pytest.mark.parametrize(
    ("permission", "fragment"),
    [("internet", "unknown permission 'internet'"), ("net=a.example", "pass the scope")],
)
def test_sandbox_refuses_unknown_permission_names(permission: str, fragment: str) -> None:
    sandbox = Sandbox(Config())
    with pytest.raises(ValueError, match=fragment) as caught:
        sandbox.check_permission("analyzer", permission)
    assert "net, read, write, env, run, ffi, sys, network" in str(caught.value)


# --- manifests ---------------------------------------------------------------------------------


def test_plugin_info_checks_scopes_without_touching_paths() -> None:
    info = analyzer("read=./data", "network=API.example.com:443")
    assert info.permissions == ("read=./data", "network=API.example.com:443"), "kept as written"
    with pytest.raises(ManifestError, match="port 'https' is not a number") as caught:
        analyzer("net=api.example.com:https")
    assert caught.value.plugin == "analyzer"


@pytest.mark.parametrize(
    ("permission", "fragment"),
    [
        ("net=api.example.com:http", "port 'http' is not a number"),
        ("read=", "empty scope"),
        ("ffi=libc", "ffi takes no scope"),
        ("env=1X", "not an environment variable name"),
        ("netwrk", "unknown permission 'netwrk'"),
    ],
)
def test_a_malformed_permission_fails_discovery(
    tmp_path: Path, permission: str, fragment: str
) -> None:
    for name, permissions in (("bad", [permission]), ("good", ["net=api.example.com:443"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plugin.py").write_text("")
        (tmp_path / name / "plugin.toml").write_text(
            textwrap.dedent(f"""\
                [plugin]
                name = "{name}"
                version = "1.0.0"
                permissions = {permissions!r}
            """).replace("'", '"')
        )
    discovery = hh.Discovery(hh.Config(plugin_dirs=[tmp_path], entry_point_group=None))
    assert [candidate.info.name for candidate in discovery.scan()] == ["good"]
    [problem] = discovery.problems
    assert isinstance(problem.error, ManifestError)
    assert problem.name == "bad" and fragment in problem.reason
    assert str(tmp_path / "bad") in problem.source
