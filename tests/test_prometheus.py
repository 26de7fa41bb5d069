"""Prometheus exposition: a real system's metrics scraped from the real HTTP endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import helixhooks as hh

from ._plugins import EchoSpec, systems, write_plugin

pytest.importorskip("prometheus_client", reason="the helixhooks[prometheus] extra")

from prometheus_client.parser import text_string_to_metric_families

from helixhooks.prometheus import LATENCY_BOUNDS, HelixCollector, serve

ECHO = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def echo(self, value):
        if value == "boom":
            raise ValueError("boom")
        if value == "write":
            open("/tmp/helixhooks-not-granted", "w")
        return value

    @hh.hookimpl
    def helix_health_check(self):
        return self.healthy

    healthy = True
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample at ``url``, by name and labels, parsed as Prometheus parses it."""
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def system(plugins: Path) -> Iterator[hh.PluginSystem]:
    write_plugin(plugins, "echo", ECHO)
    write_plugin(plugins, "idle", "class Plugin:\n    pass\n", version="0.3.0")
    with systems(plugins, [EchoSpec]) as make:
        system = make()
        system.load_all()
        system.start_all()
        yield system


def test_calls_errors_latency_and_state_as_scraped(system: hh.PluginSystem) -> None:
    server = serve(system, port=0)
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        before = scrape(server.url)
        assert (
            value(
                before, "helixhooks_plugin_info", plugin="idle", version="0.3.0", kind="directory"
            )
            == 1
        )
        assert value(before, "helixhooks_plugin_state", plugin="echo", state="started") == 1
        assert value(before, "helixhooks_plugin_state", plugin="echo", state="failed") == 0
        assert value(before, "helixhooks_plugin_healthy", plugin="echo") == 1
        assert value(before, "helixhooks_problems") == 0
        assert "process_cpu_seconds_total" in {name for name, _ in before}

        for _ in range(5):
            system.hook.echo(value="x")
        with pytest.raises(ValueError, match="boom"):
            system.hook.echo(value="boom")
        system.get("echo").plugin.healthy = False  # type: ignore[union-attr]
        after = scrape(server.url)
    finally:
        server.close()

    hook = {"plugin": "echo", "hook": "echo"}
    assert value(after, "helixhooks_hook_calls_total", **hook) == 6
    assert value(after, "helixhooks_hook_errors_total", **hook) == 1
    assert value(after, "helixhooks_hook_duration_seconds_count", **hook) == 6
    assert value(after, "helixhooks_hook_duration_seconds_bucket", **hook, le="+Inf") == 6
    assert value(after, "helixhooks_hook_duration_seconds_bucket", **hook, le="10.0") == 6
    assert 0 < value(after, "helixhooks_hook_duration_seconds_sum", **hook) < 10
    buckets = [
        value(after, "helixhooks_hook_duration_seconds_bucket", **hook, le=repr(b))
        for b in LATENCY_BOUNDS
    ]
    assert buckets == sorted(buckets)
    assert value(after, "helixhooks_plugin_healthy", plugin="echo") == 0
    # the scrape's own health checks are counted too, as calls of helix_health_check
    assert (
        value(after, "helixhooks_hook_calls_total", plugin="echo", hook="helix_health_check") >= 2
    )
    with pytest.raises(urllib.error.URLError):
        scrape(server.url)  # closed


def test_reloads_refusals_and_denials_are_counted(system: hh.PluginSystem, plugins: Path) -> None:
    server = serve(system, port=0)
    try:
        start = scrape(server.url)
        assert value(start, "helixhooks_plugin_reloads_total", plugin="echo") == 0
        system.reload("echo")
        (plugins / "echo" / "plugin.py").write_text("x = (")
        with pytest.raises(hh.ReloadError):
            system.reload("echo")
        with pytest.raises(hh.PermissionDenied):
            system.hook.echo(value="write")
        samples = scrape(server.url)
    finally:
        server.close()
    assert value(samples, "helixhooks_plugin_reloads_total", plugin="echo") == 1
    assert value(samples, "helixhooks_plugin_reload_refusals_total", plugin="echo") == 1
    assert value(samples, "helixhooks_plugin_reload_refusals_total", plugin="idle") == 0
    assert value(samples, "helixhooks_plugin_worker_crashes_total", plugin="echo") == 0
    denied = {"plugin": "echo", "permission": "write"}
    assert value(samples, "helixhooks_plugin_permission_denials_total", **denied) == 1


def test_the_collector_without_health_checks_runs_no_plugin_code(system: hh.PluginSystem) -> None:
    families = {f.name: f for f in HelixCollector(system, health=False).collect()}
    assert "helixhooks_plugin_healthy" not in families
    assert system.get("echo").stats().hooks == {}
    described = [f.name for f in HelixCollector(system).describe()]
    assert described[:4] == [
        "helixhooks_plugin_info",
        "helixhooks_plugin_state",
        "helixhooks_plugin_healthy",
        "helixhooks_problems",
    ]
