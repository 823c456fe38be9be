"""The production benchmark's report: the JSON keys the issue asks for, the
intervals of each outage, and targets judged against the measured values.
(The benchmark itself starts a server, workers and a pair: `make bench`.)"""
from __future__ import annotations

import json

from bench.production import Outage, Result, Steady


def result(ids_s: float, cpu: float) -> Result:
    steady = Steady(seconds=180.0, cpu_core=cpu, db_growth_mb_per_day=4.2, db_file_growth_mb_per_day=16.0,
                    flow_runs_per_day=24.0, scheduled_runs_per_day=24.0, events_per_day=1900.0,
                    events_by_kind={"antelope-ha.watcher.heartbeat": 3}, rows_by_table={"events": 1900})
    fast = [Outage("fast", 2.6, 2.9, 3.0, ids_s), Outage("fast", 2.2, 2.5, 2.6, ids_s + 1),
            Outage("fast", 3.0, 3.3, 3.4, ids_s - 1)]
    return Result(steady, fast, [Outage("shipped", 25.0, 25.3, 25.4, 27.0)], bare=[3.1, 2.9, 3.0])


def test_the_json_has_the_deployed_figures_as_medians() -> None:
    data = json.loads(result(4.5, 0.012).to_json())
    assert {k: data[k] for k in ("ms_off_to_ids_s", "detection_s", "flow_runs_per_day", "db_growth_mb_per_day",
                                 "bus_cpu_core")} == {"ms_off_to_ids_s": 4.5, "detection_s": 2.6,
                                                      "flow_runs_per_day": 24.0, "db_growth_mb_per_day": 4.2,
                                                      "bus_cpu_core": 0.012}
    assert data["intervals_s"] == {"decided (K failed probes)": 2.6, "failover run created": 0.3,
                                   "worker picks it up": 0.0, "run Running": 0.1, "BUS dbids hands out ids": 1.5}
    assert data["bare_ms_off_to_ids_s"] == 3.0 and data["shipped_ms_off_to_ids_s"] == 27.0


def test_targets_are_judged_on_the_measured_values() -> None:
    met = {row["figure"].split(" (")[0]: row["met"] for row in result(4.5, 0.012).rows()}
    assert met["deployed: MS power-off -> BUS hands out ids"] is True
    assert met["deployed: BUS worker + watcher CPU, share of a core"] is True
    missed = {row["figure"].split(" (")[0]: row["met"] for row in result(5.5, 0.05).rows()}
    assert missed["deployed: MS power-off -> BUS hands out ids"] is False
    assert missed["deployed: BUS worker + watcher CPU, share of a core"] is False
