"""Prometheus / OpenMetrics exposition of a PluginSystem (the ``helixhooks[prometheus]`` extra).

A ``HelixCollector`` reads the system when it is scraped: nothing is copied or counted twice,
and a host that is never scraped pays nothing. Register it with a ``prometheus_client``
registry, or let ``serve`` start an HTTP endpoint with it::

    from helixhooks.prometheus import serve
    server = serve(system, port=9464)        # http://127.0.0.1:9464/metrics
    ...
    server.close()

``helixhooks run --metrics-port 9464`` does the same for the command. What is exposed, each
labelled by ``plugin`` (and ``hook`` for calls):

- ``helixhooks_plugin_info`` (version, kind), ``helixhooks_plugin_state`` (1 for the state the
  plugin is in, 0 for the others), ``helixhooks_plugin_healthy`` (its health check, run at scrape
  time, each bounded by ``Config.health_timeout``), ``helixhooks_problems``;
- ``helixhooks_hook_calls_total``, ``helixhooks_hook_errors_total`` and the latency histogram
  ``helixhooks_hook_duration_seconds``, from the system's Metrics;
- ``helixhooks_plugin_reloads_total``, ``..._reload_refusals_total``, ``..._restarts_total``
  (by the health monitor), ``..._worker_crashes_total`` and ``..._permission_denials_total``
  (labelled by ``permission``), from the events the system counts per plugin.

A plugin's counters start again from 0 when it is unloaded and loaded again; Prometheus takes
that as a counter reset.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from wsgiref.simple_server import WSGIServer

import attrs
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .plugin import PluginState
from .system import PluginSystem

#: Latency bucket bounds in seconds: 1 us to 10 s, 1-2.5-5 per decade (hook calls are fast).
LATENCY_BOUNDS = (
    *(
        round(mantissa * 10.0**exponent, 12)
        for exponent in range(-6, 1)
        for mantissa in (1, 2.5, 5)
    ),
    10.0,
)

# Event kind -> (metric name, help) of the counter that counts it.
_EVENT_COUNTERS = {
    "reloaded": ("helixhooks_plugin_reloads", "Reloads that put a new version in service."),
    "reload_failed": (
        "helixhooks_plugin_reload_refusals",
        "Reloads refused; the running version kept serving.",
    ),
    "restarted": ("helixhooks_plugin_restarts", "Restarts by the health monitor."),
    "worker_crashed": (
        "helixhooks_plugin_worker_crashes",
        "Crashes of the plugin's worker process (process isolation).",
    ),
}


class HelixCollector:
    """A ``prometheus_client`` collector over one PluginSystem.

    ``bounds`` are the latency histogram's bucket bounds in seconds; ``health=False`` leaves out
    ``helixhooks_plugin_healthy``, so that a scrape never runs plugin code.
    """

    def __init__(
        self,
        system: PluginSystem,
        *,
        bounds: Sequence[float] = LATENCY_BOUNDS,
        health: bool = True,
    ) -> None:
        self.system = system
        self.bounds = tuple(bounds)
        self.health = health

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples: registries check names with it."""
        yield from _Families(self.health).all()

    def collect(self) -> Iterator[Metric]:
        system = self.system
        families = _Families(self.health)
        records = system.registry.list()
        health = system.health() if self.health else {}
        states = list(PluginState)
        for record in records:
            name = record.name
            kind = record.candidate.kind if record.candidate is not None else "object"
            families.info.add_metric([name, record.info.version, kind], 1)
            for state in states:
                families.state.add_metric([name, state.value], float(record.state is state))
            status = health.get(name)
            if families.healthy is not None and status is not None:
                families.healthy.add_metric([name], float(status.healthy))
            for hook, histogram in system.metrics.histograms(name, self.bounds).items():
                labels = [name, hook]
                families.calls.add_metric(labels, histogram.count)
                families.errors.add_metric(labels, histogram.errors)
                buckets = [
                    (repr(bound), float(count))  # as Go formats it, below 1e6
                    for bound, count in zip(histogram.bounds, histogram.counts, strict=True)
                ]
                buckets.append(("+Inf", float(histogram.count)))
                families.duration.add_metric(labels, buckets, histogram.total)
            stats = system.metrics.get_stats(name)
            for event, counter in families.events.items():
                counter.add_metric([name], stats.events.get(event, 0))
            for permission, count in sorted(stats.denials.items()):
                families.denials.add_metric([name, permission], count)
        families.problems.add_metric([], len(system.problems))
        yield from families.all()


class _Families:
    """One scrape's metric families, filled by HelixCollector.collect."""

    def __init__(self, health: bool) -> None:
        plugin = ["plugin"]
        self.info = GaugeMetricFamily(
            "helixhooks_plugin_info",
            "A plugin known to the system: its version and where it comes from.",
            labels=["plugin", "version", "kind"],
        )
        self.state = GaugeMetricFamily(
            "helixhooks_plugin_state",
            "1 for the lifecycle state the plugin is in, 0 for the others.",
            labels=["plugin", "state"],
        )
        self.healthy = (
            GaugeMetricFamily(
                "helixhooks_plugin_healthy",
                "1 if the plugin's health check passed at this scrape, else 0.",
                labels=plugin,
            )
            if health
            else None
        )
        self.problems = GaugeMetricFamily(
            "helixhooks_problems",
            "Plugins that could not be discovered, resolved, loaded or started.",
        )
        hook = ["plugin", "hook"]
        self.calls = CounterMetricFamily(
            "helixhooks_hook_calls", "Calls of a plugin's impl of a hook.", labels=hook
        )
        self.errors = CounterMetricFamily(
            "helixhooks_hook_errors", "Calls of a plugin's impl of a hook that raised.", labels=hook
        )
        self.duration = HistogramMetricFamily(
            "helixhooks_hook_duration_seconds",
            "How long calls of a plugin's impl of a hook took.",
            labels=hook,
        )
        self.events = {
            kind: CounterMetricFamily(name, text, labels=plugin)
            for kind, (name, text) in _EVENT_COUNTERS.items()
        }
        self.denials = CounterMetricFamily(
            "helixhooks_plugin_permission_denials",
            "Uses of a permission the guard refused the plugin.",
            labels=["plugin", "permission"],
        )

    def all(self) -> Iterator[Metric]:
        yield self.info
        yield self.state
        if self.healthy is not None:
            yield self.healthy
        yield self.problems
        yield self.calls
        yield self.errors
        yield self.duration
        yield from self.events.values()
        yield self.denials


@attrs.define
class MetricsServer:
    """An HTTP endpoint serving /metrics in a daemon thread; ``close`` stops it."""

    registry: CollectorRegistry
    server: WSGIServer
    thread: threading.Thread
    address: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve(
    system: PluginSystem,
    port: int,
    addr: str = "127.0.0.1",
    *,
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve ``system``'s metrics at ``http://addr:port/metrics``; port 0 picks a free one.

    Without ``registry``, a new one holds the system's collector and prometheus_client's own
    process, platform and garbage collector metrics. Only loopback by default: pass ``addr``
    (say ``0.0.0.0``) to expose it.
    """
    if registry is None:
        from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

        registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
    registry.register(HelixCollector(system))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(registry, server, thread, addr, server.server_port)
