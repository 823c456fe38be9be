"""The nemesis, short: ten cycles under faults drawn from a fixed seed, on the
test session's Prefect server, in two parts (stopped after a minute and
continued), judged by the independent checker (rehearsal/checker.py reads both
sites' tables and the programs' own records)."""
from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

import pytest

from rehearsal import incidents
from rehearsal.incidents import run
from rehearsal.nemesis import Plan, saved_run, table

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SEED = 1  # MS incidents drawn in cycles 3 and 6: the first part ends before cycle 5, so 6 is in the second
INCIDENTS = 0.2  # short cycles: two of the ten with an MS incident, the others minor faults
# (2 ORB packets a second, not 5: less work for two busy cores)
KILLED_RUNS = 0.5  # half the procedure runs first run in a process of their own and SIGKILLed


@pytest.mark.timeout(900)
def test_ten_cycles_under_faults_lose_nothing_and_never_serve_ids_from_two_sites(tmp_path: Path, monkeypatch) -> None:
    plan = Plan(cycles=10, seed=SEED, incidents=INCIDENTS, killed_runs=KILLED_RUNS, rate=2.0)
    # The first part stops as a run does after --minutes or a Ctrl-C, whichever comes first: the
    # first cycle ending after a minute, or cycle 4 (on a fast machine a minute held cycle 6 too).
    ctrl_c, run_cycle = threading.Event(), incidents.Nemesis.run_cycle

    def run_cycle_then_stop_after_4(nemesis: incidents.Nemesis) -> None:
        run_cycle(nemesis)
        if nemesis.cycle == 4:
            ctrl_c.set()

    monkeypatch.setattr(incidents.Nemesis, "run_cycle", run_cycle_then_stop_after_4)
    first = run(tmp_path, plan, minutes=1.0, quiet=True, stop=ctrl_c)
    monkeypatch.setattr(incidents.Nemesis, "run_cycle", run_cycle)
    assert 0 < first.cycles <= 4 and first.parts == 1
    saved = saved_run(tmp_path)
    assert saved["plan"] == asdict(plan)
    # From here on every failover finds BUS's lastid replica too old and asks a person first: the
    # seed's first answer to that gate is to leave it unanswered, and the pair must still come back.
    monkeypatch.setattr(incidents, "POLICY", incidents.POLICY.model_copy(update={"lastid_max_age_s": 0.001}))
    report = run(tmp_path, plan, quiet=True, saved=saved)
    print(table(report))
    assert report.cycles == 10 and report.parts == 2
    assert report.fault_log[:len(first.fault_log)] == first.fault_log
    # the second part went on with the seed's draws where the first left them: the incidents in their cycles
    assert {f.cycle for f in report.fault_log if f.kind == "ms-power-off"} <= {3, 6}
    assert not report.not_brought_back
    assert [f.kind for f in report.fault_log if "stale lastid replica" in f.detail][:1] == ["approval-timed-out"]
    # it did its faults, and the procedures their work
    assert {"ms-power-off", "ms-power-on", "writer-killed", "flow-run-killed"} <= set(report.faults), report.faults
    assert report.failovers >= 2 and report.fallbacks >= 2 and report.recoveries >= 2
    assert report.rows_written > 500
    # the checker's figures
    assert (report.rows_lost, report.ids_used_twice, report.orphans, report.ids_above_lastid) == (0, 0, 0, 0), \
        report.checker_details
    assert report.seconds_two_id_servers == 0
    # the ID servers' own records show each failover the flows counted, and its gap
    to_bus = [h for h in report.handovers if h["to_site"] == "bus"]
    assert len(to_bus) == report.failovers
    assert report.seconds_no_id_server >= sum(h["seconds_without"] for h in to_bus) > 0
