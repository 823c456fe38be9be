"""After a person's approval, before acting on it, the flows check again that
the record and the sites are what the person was shown (on the simulated pair,
a real Prefect server)."""
from __future__ import annotations

import re
import time
from itertools import islice

import pytest

from antelope_ha.css30 import TABLES, append_rows, read_table, write_table
from antelope_ha.lastid import parse_lastid
from flows.failover import failover
from flows.fallback import fallback
from flows.replicate import replicate_lastid
from rehearsal.drill import answering
from tests.simpair import Sim, approve, run_artifact, sim_pair
from tests.test_flows import assert_bus_authoritative, fail_over, running

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

BUS_FILES = ("rtexec.pf", "db/db", "ha/authority", "ha/armed")  # dbids.lastid grows as BUS serves ids
WRITERS = ("dbids", "orb2dbt", "orb2wf")
FAR_ABOVE = 90_000_000  # an arid far above any lastid of the simulated pair


def add_arrival(sim: Sim, site: str, arid: int) -> None:
    """A row written behind the flows' back, with an id of our choosing."""
    path = sim.pair.paths(site).dir / f"{(sim.cfg.main if site == 'ms' else sim.cfg.backup).db}.arrival"
    append_rows(path, TABLES["arrival"], [{"sta": "XTRA", "time": time.time(), "arid": arid, "chan": "HHZ",
                                           "iphase": "P"}])


def bus_lastid(sim: Sim) -> dict[str, int]:
    path = sim.pair.paths("bus").dir / f"{sim.cfg.backup.dbids}.lastid"
    return parse_lastid(path.read_text(), path)


def bus_untouched(sim: Sim, before: dict[str, bytes | None], pids: dict[str, list[int]]) -> None:
    assert {k: v for k, v in sim.snapshot(*BUS_FILES).items() if k.startswith("bus:")} == before
    assert {t: sim.pair.task_pids("bus", t) for t in WRITERS} == pids
    assert_bus_authoritative(sim)
    sim.wait_rows("bus", time.time())  # BUS goes on writing, with its own ids


def test_first_approval_is_not_acted_on_when_the_record_or_ms_changed_meanwhile(tmp_path):
    with sim_pair(tmp_path, "recheck1") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.pair.power_on("ms", start_rtexec=False)
        before = {k: v for k, v in sim.snapshot(*BUS_FILES).items() if k.startswith("bus:")}
        pids = {t: sim.pair.task_pids("bus", t) for t in WRITERS}

        def record_moves_on(n: int) -> dict:  # while the person decides, another epoch is recorded
            sim.set_state(sim.state().with_authority("bus", None, "test: recorded while the person decided"))
            return approve()

        with answering("fallback", record_moves_on) as answers:
            state = fallback(pair_name=sim.name, return_state=True)
        result = state.result()
        assert len(answers) == 1
        who = answers[0]["operator"]
        assert f"approved, not acted on by {who}" in result and "The approval was not acted on" in result
        assert "bus at epoch 2 when asked, bus at epoch 3 now" in result
        assert not sim.state().fallback_in_progress
        bus_untouched(sim, before, pids)
        table = run_artifact(state.state_details.flow_run_id, "fallback-approvals")
        assert "| gate | outcome | operator | at | reason |" in table
        assert re.search(rf"\| approved, not acted on \| {who} \| \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{3}} UTC "
                         r"\| flow test \|", table)

        def ms_dies(n: int) -> dict:  # while the person decides, MS loses its power
            sim.pair.power_off("ms")
            return approve()

        with answering("fallback", ms_dies) as answers:
            result = fallback(pair_name=sim.name)
        assert len(answers) == 1 and "The approval was not acted on" in result
        assert re.search(r"ms cannot be reached|rtexec no longer runs on ms", result), result
        bus_untouched(sim, before, pids)


def test_second_approval_is_not_acted_on_when_ms_ids_went_wrong_meanwhile(tmp_path):
    with sim_pair(tmp_path, "recheck2") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.pair.power_on("ms", start_rtexec=False)

        def answer(n: int) -> dict:
            if n == 1:  # while the person decides on dbids, a row above MS's lastid appears on MS
                add_arrival(sim, "ms", FAR_ABOVE)
            return approve()

        with answering("fallback", answer) as answers:
            result = fallback(pair_name=sim.name)
        assert len(answers) == 2 and "The approval was not acted on: ms ids are not consistent" in result
        assert f"arid up to {FAR_ABOVE}" in result and "bus restored as authority" in result
        assert sim.state().authority.epoch == 2
        assert_bus_authoritative(sim)
        assert (sim.pair.paths("ms").dir / "ha" / "armed").exists() and not running(sim, "ms", "dbids")
        sim.wait_rows("bus", time.time())


def test_stale_replica_lastid_is_computed_again_after_the_approval(tmp_path, caplog):
    with sim_pair(tmp_path, "recheck3") as sim:  # never replicated: the replica's age is unknown
        sim.pair.power_off("ms")

        def bus_ids_grow(n: int) -> dict:  # while the person decides, BUS's db gets a higher arid
            add_arrival(sim, "bus", FAR_ABOVE)
            return approve(site="bus")

        with answering("failover", bus_ids_grow) as answers:
            state = failover(pair_name=sim.name, reason="test: stale replica", return_state=True)
        state.result()
        assert len(answers) == 1
        assert bus_lastid(sim)["arid"] > FAR_ABOVE
        assert any(re.search(rf"raised above what was shown: arid \d+ -> {FAR_ABOVE + 1}\b", r.getMessage())
                   for r in caplog.records), \
            [r.getMessage() for r in caplog.records if "lastid" in r.getMessage()]
        assert_bus_authoritative(sim)
        table = run_artifact(state.state_details.flow_run_id, "failover-approvals")
        who = answers[0]["operator"]
        assert f"| failover with a stale lastid replica | approved | {who} |" in table and " UTC |" in table


def test_an_old_duplicate_does_not_block_the_fallback_and_a_new_one_does(tmp_path):
    from deployments.cli import take_baselines

    with sim_pair(tmp_path, "recheck4") as sim:
        arrivals = sim.pair.paths("ms").dir / f"{sim.cfg.main.db}.arrival"
        old, new = (r["arid"] for r in islice(read_table(arrivals, TABLES["arrival"]), 2))
        add_arrival(sim, "ms", old)  # a duplicate MS holds from long ago
        take_baselines(sim.name, "setup")  # as antelope-ha setup does
        taken = sim.state().baselines["ms"]
        assert [(p.kind, p.ids) for p in taken.problems] == [("duplicates", [old])]
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.pair.power_on("ms", start_rtexec=False)

        def answer(n: int) -> dict:
            if n == 1:  # while the person decides on dbids, MS gets a new duplicate
                add_arrival(sim, "ms", new)
            return approve()

        with answering("fallback", answer):
            result = fallback(pair_name=sim.name)
        assert "The approval was not acted on: ms ids are not consistent" in result, result
        assert f"[new since the baseline: {new}]" in result and "bus restored as authority" in result
        assert_bus_authoritative(sim)

        rows = list(read_table(arrivals, TABLES["arrival"]))  # MS is fenced: its writers are stopped
        write_table(arrivals, TABLES["arrival"], [r for r in rows if not (r["sta"] == "XTRA" and r["arid"] == new)])
        with answering("fallback", lambda n: approve()):
            result = fallback(pair_name=sim.name)
        assert result.startswith("ms is authoritative again"), result
        state = sim.state()
        assert state.authority.site == "ms" and running(sim, "ms", "dbids")
        again = state.baselines["ms"]
        assert again.reason == "ms takes authority again (fallback)"
        assert [(p.ids, p.first_seen) for p in again.problems] == [([old], taken.problems[0].first_seen)]
        assert state.baselines["bus"].reason == "bus takes authority (failover)"
