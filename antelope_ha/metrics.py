"""The watcher's state as Prometheus metrics, served over HTTP for the
monitoring a seismic network already runs (docs/operating.md has the alert rules).

Read at each scrape from the watcher's heartbeat payload (flows/watch.py
``WatcherStatus.payload``), so the metrics and the heartbeat never disagree.
Each watcher run is a process of its own and the next one starts before the
last one stops: the new one binds the port as soon as the old one lets go of it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

PREFIX = "antelope_ha"


class WatcherCollector(Collector):
    """The metrics of one pair's watcher, from ``payload()`` at each scrape."""

    def __init__(self, payload: Callable[[], dict[str, Any]], sites: tuple[str, str]) -> None:
        self.payload, self.sites = payload, sites

    def collect(self) -> Iterator[Any]:
        p, now = self.payload(), time.time()
        pair = [p["pair"]]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["pair"])
            if value is not None:
                g.add_metric(pair, value)
            return g

        info = InfoMetricFamily(f"{PREFIX}_watcher", "the watcher run serving these metrics", labels=["pair"])
        info.add_metric(pair, {"run": p["run"], "decision": p["decision"]})
        yield info
        site = GaugeMetricFamily(f"{PREFIX}_authority_site", "1 for the authoritative site, 0 for the other",
                                 labels=["pair", "site"])
        for name in self.sites:
            site.add_metric([*pair, name], 1.0 if name == p["authority"] else 0.0)
        yield site
        yield gauge("authority_epoch", "the authority's epoch on the record", p["epoch"] or None)
        yield gauge("consecutive_failures", "consecutive failed probes of the authoritative ID server",
                    p["consecutive_failures"])
        probed = p["last_probe_at"]
        yield gauge("last_probe_timestamp_seconds", "when the watcher last probed the pair (unix time)",
                    probed or None)
        yield gauge("seconds_since_last_probe", "seconds since the watcher last probed the pair",
                    now - probed if probed else None)
        yield gauge("probe_duration_seconds", "how long the last probe cycle took", p["probe_last_s"])
        yield gauge("probe_duration_median_seconds", "median time of the last 60 probe cycles",
                    p["probe_median_s"])
        taken = p["replica_taken_at"]
        yield gauge("replica_age_seconds", "age of the lastid replica the watcher last copied to the backup site",
                    now - taken if taken else None)
        yield gauge("paused", "1 while automatic failover is paused for maintenance", float(p["paused"]))
        yield gauge("held", "1 while an automatic failover would be held back (paused, declined, hold-down)",
                    float(bool(p["held"])))
        cycles = CounterMetricFamily(f"{PREFIX}_watcher_cycles", "probe cycles of this watcher run", labels=["pair"])
        cycles.add_metric(pair, p["cycles"])
        yield cycles
        decisions = CounterMetricFamily(f"{PREFIX}_decisions", "decisions this watcher run recorded, by action",
                                        labels=["pair", "action"])
        for action, n in sorted(p["decisions"].items()):
            decisions.add_metric([*pair, action], n)
        yield decisions


class MetricsServer:
    """Serve ``collector`` on ``address:port`` from a thread, for as long as the
    ``with`` block lasts; while the port is taken (the watcher this one replaces
    has not stopped yet) it tries again every second. ``log`` says what happens."""

    def __init__(self, collector: Collector, address: str, port: int, log: Callable[[str], None]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.address, self.port, self.log = address, port, log
        self._stop = threading.Event()
        self._server: Any = None
        self._binder = threading.Thread(target=self._bind, name="metrics", daemon=True)

    def _bind(self) -> None:
        busy = False
        while not self._stop.is_set():
            try:
                self._server, _ = start_http_server(self.port, self.address, registry=self.registry)
            except OSError as exc:
                if not busy:
                    self.log(f"metrics: {self.address}:{self.port} not free yet ({exc}); trying every second")
                    busy = True
                self._stop.wait(1.0)
                continue
            self.log(f"metrics served at http://{self.address}:{self.port}/metrics")
            return

    def __enter__(self) -> MetricsServer:
        self._binder.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._binder.join(5)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
