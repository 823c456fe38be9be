"""The pair's state model: what each change of authority keeps and clears."""
from __future__ import annotations

from antelope_ha.baseline import Baseline, KnownProblem
from antelope_ha.css30 import Problem
from antelope_ha.idscan import IdReport
from antelope_ha.state import Authority, Declined, HAState

T0 = 1_700_000_000.0


def test_the_marker_a_site_holds_is_its_site_and_epoch():
    a = Authority(site="bus", epoch=4, since=T0, flow_run="run-1", reason="test", lastid={"orid": 9})
    assert a.marker() == {"site": "bus", "epoch": 4}


def test_the_initial_record_is_main_at_epoch_1():
    s = HAState.initial("ms")
    assert (s.authority.site, s.authority.epoch, s.authority.reason, s.authority.flow_run) == ("ms", 1, "initial", None)
    assert s.history == [] and s.consecutive_failures == 0 and s.decisions == []


def test_a_new_authority_keeps_who_why_and_its_lastid_and_clears_the_outage():
    before = HAState.initial("ms").model_copy(update={
        "consecutive_failures": 3, "declined": Declined(at=T0, what="rejected by ana")})
    after = before.with_authority("bus", "run-7", "ms down", now=T0 + 5, lastid={"orid": 1163})
    assert after.authority == Authority(site="bus", epoch=2, since=T0 + 5, flow_run="run-7", reason="ms down",
                                        lastid={"orid": 1163})
    assert after.history == [before.authority]
    assert after.consecutive_failures == 0 and after.declined is None
    assert before.consecutive_failures == 3  # the record it came from is unchanged


def test_a_baseline_taken_again_keeps_when_each_old_problem_was_first_seen():
    old = Baseline(taken_at=T0, reason="setup", problems=[
        KnownProblem(key="arid", kind="null_ids", message="arid: rows without an id", first_seen=T0, count=1)])
    state = HAState.initial("ms").model_copy(update={"baselines": {"ms": old}})
    report = IdReport("db", {}, (Problem("arid", "null_ids", "arid: rows without an id", 1),), ())
    again = state.with_baseline("ms", report, "fallback").baselines["ms"]
    assert again.reason == "fallback" and again.taken_at > T0
    assert [(p.kind, p.first_seen) for p in again.problems] == [("null_ids", T0)]
    assert state.with_baseline("bus", report, "failover").baselines["ms"] == old
