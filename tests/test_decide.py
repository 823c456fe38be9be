"""The health decision, case by case: every outcome has its reason."""
import pytest

from antelope_ha.config import PairConfig, PairPolicy
from antelope_ha.decide import MainSeen, Probes, decide
from antelope_ha.state import Declined, HAState, Pause

SITE = dict(host="h", transport="local", rtexec_dir="/rt", idserver_address="h:2498")
PAIR = PairConfig(main=dict(SITE, name="ms"), backup=dict(SITE, name="bus"), witness=dict(host="w"),
                  policy=PairPolicy(failures_before_failover=3, hold_down_s=600))
DOWN = Probes(False, "refused", witness_ok=True, witness_detail="ok", main_self_idserver_ok=None)
UP = Probes(True, "pong ms", witness_ok=True, witness_detail="ok")
T0 = 1_000_000.0


def cycles(state, probes, n, now=T0):
    decisions = []
    for i in range(n):
        d, state = decide(state, probes, PAIR, now + i)
        decisions.append(d)
    return decisions, state


def test_k_consecutive_failures_then_failover():
    ds, state = cycles(HAState.initial("ms"), DOWN, 3)
    assert [d.action for d in ds] == ["stay", "stay", "failover"]
    assert "3/3" in ds[-1].reason and "witness reachable" in ds[-1].reason
    assert state.consecutive_failures == 3


def test_a_good_probe_resets_the_count():
    _, state = cycles(HAState.initial("ms"), DOWN, 2)
    d, state = decide(state, UP, PAIR, T0)
    assert d.action == "stay" and state.consecutive_failures == 0
    ds, _ = cycles(state, DOWN, 2)
    assert [d.action for d in ds] == ["stay", "stay"]


def test_isolated_backup_does_not_fail_over():
    probes = Probes(False, "timeout", witness_ok=False, witness_detail="100% packet loss")
    ds, _ = cycles(HAState.initial("ms"), probes, 5)
    assert all(d.action == "stay" for d in ds)
    assert "isolated" in ds[-1].reason and "witness" in ds[-1].reason


def test_cut_link_with_main_answering_itself_does_not_fail_over():
    probes = Probes(False, "timeout", witness_ok=True, witness_detail="ok", main_self_idserver_ok=True)
    ds, _ = cycles(HAState.initial("ms"), probes, 4)
    assert all(d.action == "stay" for d in ds)
    assert "only the link" in ds[-1].reason


def test_maintenance_pause_blocks_failover_with_who_and_why():
    state = HAState.initial("ms").model_copy(update={"pause": Pause(by="ana", reason="UPS work", since=T0)})
    ds, _ = cycles(state, DOWN, 4)
    assert all(d.action == "stay" for d in ds)
    assert "paused by ana: UPS work" in ds[-1].reason


def test_hold_down_after_a_recent_failover_needs_an_acknowledgement():
    state = HAState.initial("ms").with_authority("bus", None, "test", now=T0)
    state = state.with_authority("ms", None, "fallback", now=T0 + 100)
    ds, held = cycles(state, DOWN, 3, now=T0 + 200)
    assert ds[-1].action == "hold" and "acknowledge" in ds[-1].reason
    acked = held.model_copy(update={"hold_down_ack": T0 + 250, "consecutive_failures": 0})
    ds, _ = cycles(acked, DOWN, 3, now=T0 + 300)
    assert ds[-1].action == "failover"
    ds, _ = cycles(state, DOWN, 3, now=T0 + 100 + 601)  # hold-down over
    assert ds[-1].action == "failover"


def test_a_declined_failover_holds_until_acknowledged_or_main_answers():
    declined = HAState.initial("ms").model_copy(update={"declined": Declined(
        at=T0, what="failover without fencing ms: rejected by ana: MS alive behind a cut link")})
    ds, held = cycles(declined, DOWN, 5, now=T0 + 10)
    assert [d.action for d in ds] == ["stay", "stay", "hold", "hold", "hold"]
    assert "declined in this outage (failover without fencing ms: rejected by ana" in ds[-1].reason
    assert "antelope-ha ack" in ds[-1].reason
    acked = held.model_copy(update={"hold_down_ack": T0 + 20})
    d, _ = decide(acked, DOWN, PAIR, T0 + 21)
    assert d.action == "failover"
    d, back = decide(held, UP, PAIR, T0 + 30)
    assert d.action == "stay" and back.declined is None
    ds, _ = cycles(back, DOWN, 3, now=T0 + 40)
    assert ds[-1].action == "failover"


def test_backup_authoritative_fences_dbids_on_main():
    state = HAState.initial("ms").with_authority("bus", None, "test", now=T0)
    d, _ = decide(state, Probes(False, "", True, "", main_dbids_pids=(4242,)), PAIR, T0 + 1)
    assert d.action == "fence" and "4242" in d.reason and "split brain" in d.reason
    d, _ = decide(state, Probes(False, "", True, ""), PAIR, T0 + 1)
    assert d.action == "stay" and "armed" in d.reason


WELL = MainSeen(reachable=True, orb_latency_s=1.23, writers={"orb2dbt": True, "orb2wf": True})
STALLED = MainSeen(reachable=True, orb_latency_s=95.0, writers={"orb2dbt": True, "orb2wf": True})
WRITER_DOWN = MainSeen(reachable=True, orb_latency_s=0.5, writers={"orb2dbt": True, "orb2wf": False})
UNREACHABLE = MainSeen(reachable=False, detail="no answer within 2 s")


def seen(main: MainSeen, ok: bool = True) -> Probes:
    return Probes(ok, "pong ms" if ok else "refused", witness_ok=True, witness_detail="ok", main=main)


def test_the_reason_says_what_the_worker_saw_on_main():
    d, state = decide(HAState.initial("ms"), seen(WELL), PAIR, T0)
    assert d.action == "stay" and d.reason.startswith("ms ID server answers: pong ms")
    assert "ms reachable, ORB flowing (latency 1.2 s), writers orb2dbt, orb2wf running" in d.reason
    d, _ = decide(state, seen(UNREACHABLE), PAIR, T0 + 1)
    assert d.action == "stay" and "ms unreachable over SSH (no answer within 2 s)" in d.reason


@pytest.mark.parametrize("main, finding", [
    (STALLED, "ORB STALLED (newest packet 95.0 s old, limit 30 s)"),
    (MainSeen(reachable=True, orb_latency_s=None, writers={"orb2dbt": True}), "ORB STALLED: orbstat found no source"),
    (WRITER_DOWN, "writer orb2wf NOT running, writer orb2dbt running"),
])
def test_stalled_orb_or_writer_down_while_the_id_server_answers_is_a_warning(main, finding):
    _, failing = cycles(HAState.initial("ms"), DOWN, 2)
    d, state = decide(failing, seen(main), PAIR, T0 + 10)
    assert d.action == "warn" and finding in d.reason
    assert "ms ID server answers" in d.reason and "no failover" in d.reason
    assert state.consecutive_failures == 0


def test_what_could_not_be_checked_is_said_not_warned():
    main = MainSeen(reachable=True, writers={"orb2dbt": True},
                    not_checked={"ORB": "`orbstat -s :6510` did not finish within 3 s"})
    d, _ = decide(HAState.initial("ms"), seen(main), PAIR, T0)
    assert d.action == "stay" and "ORB not checked (`orbstat -s :6510` did not finish within 3 s)" in d.reason


@pytest.mark.parametrize("main", [WELL, STALLED, WRITER_DOWN, UNREACHABLE])
def test_orb_and_writers_never_decide_a_failover(main):
    ds, _ = cycles(HAState.initial("ms"), seen(main, ok=False), 3)
    assert [d.action for d in ds] == ["stay", "stay", "failover"]
    assert "3/3" in ds[-1].reason and "failing over to bus" in ds[-1].reason
    assert main.summary("ms", 30.0)[0] in ds[-1].reason


def test_main_unreachable_is_in_the_reason_of_a_cut_link_hold_back():
    probes = Probes(False, "timeout", witness_ok=False, witness_detail="100% packet loss", main=UNREACHABLE)
    ds, _ = cycles(HAState.initial("ms"), probes, 3)
    assert ds[-1].action == "stay" and "isolated" in ds[-1].reason
    assert "ms unreachable over SSH" in ds[-1].reason


def test_decisions_are_kept_bounded():
    _, state = cycles(HAState.initial("ms"), UP, 50)
    assert 0 < len(state.decisions) <= 20


@pytest.mark.parametrize("epochs", [1, 3])
def test_with_authority_increments_epoch_and_keeps_history(epochs):
    state = HAState.initial("ms")
    for i in range(epochs):
        state = state.with_authority("bus" if i % 2 == 0 else "ms", "run", "r", now=T0 + i)
    assert state.authority.epoch == 1 + epochs
    assert [a.epoch for a in state.history] == list(range(1, 1 + epochs))
