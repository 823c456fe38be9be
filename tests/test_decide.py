"""The health decision, case by case: every outcome has its reason."""
import pytest

from antelope_ha.config import PairConfig, PairPolicy
from antelope_ha.decide import CODES, MainSeen, Probes, alert, decide, held, step
from antelope_ha.state import Decision, Declined, HAState, Pause

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


# --- BUS authoritative: its own ID server is the one watched --------------------------------------
BUS = HAState.initial("ms").with_authority("bus", None, "test", now=T0)
RTEXEC = "rtexec running on bus; dbids NOT running although its Run line says yes"


def own(ok: bool) -> Probes:
    return Probes(False, "not probed", True, "", backup_idserver_ok=ok,
                  backup_detail="pong bus" if ok else f"refused; {RTEXEC}")


def test_backup_own_id_server_down_is_an_alert_saying_what_rtexec_does_never_a_move_back():
    ds, state = cycles(BUS, own(False), 6, now=T0 + 10)
    assert [d.action for d in ds] == ["stay", "stay", "alert", "alert", "alert", "alert"]
    assert [d.code for d in ds[:3]] == ["backup-failing", "backup-failing", "backup-down"]
    assert "its own ID server failed 3/3" in ds[2].reason and RTEXEC in ds[2].reason
    assert "never moved back to ms automatically" in ds[2].reason
    assert state.authority.site == "bus" and all(d.action not in ("failover", "fence") for d in ds)
    d, back = decide(state, own(True), PAIR, T0 + 20)
    assert d.code == "backup-serving" and back.consecutive_failures == 0


def test_the_operators_hear_once_when_the_backup_id_server_goes_down_and_once_when_it_is_back():
    record, failures, told = BUS, 0, []
    for i, ok in enumerate([True, False, False, False, False, False, True, True]):
        s = step(record, failures, own(ok), PAIR, T0 + i)
        failures = s.state.consecutive_failures
        if s.changed:
            told.append(alert(record.last_health_code(), s.decision, PAIR))
            record = s.state  # recorded
    assert [t for t in told if t] == ["ID SERVER DOWN on bus, the authoritative site", "ID server on bus answers again"]


def test_main_not_fenced_while_backup_authoritative_is_fenced():
    d, _ = decide(BUS, Probes(False, "", True, "", main_unfenced="not armed, orb2dbt running (pid 7)"), PAIR, T0 + 1)
    assert d.action == "fence" and d.code == "fence" and "not armed, orb2dbt running (pid 7)" in d.reason


# --- the watcher's step: counted in memory, recorded when the decision changes ---------------------
def test_a_decision_is_new_only_when_its_code_changes():
    record, failures, changes = HAState.initial("ms"), 0, []
    probes = [UP] * 5 + [DOWN] * 3 + [UP] * 5
    for i, p in enumerate(probes):
        s = step(record, failures, p, PAIR, T0 + i)
        failures = s.state.consecutive_failures
        if s.changed:
            changes.append((i, s.decision.code, s.state.consecutive_failures))
            record = s.state
    assert changes == [(0, "main-answers", 0), (5, "main-failing", 1), (7, "failover", 3), (8, "main-answers", 0)]
    assert record.decisions[-1].code == "main-answers" and len(record.decisions) == 4


def test_the_count_lives_in_memory_not_on_the_record():
    record = HAState.initial("ms")
    s1 = step(record, 0, DOWN, PAIR, T0)
    s2 = step(s1.state, 1, DOWN, PAIR, T0 + 1)  # second failure: same decision, not recorded
    assert s1.changed and not s2.changed and s2.state.consecutive_failures == 2
    s3 = step(s1.state, 2, DOWN, PAIR, T0 + 2)
    assert s3.changed and s3.acts and s3.decision.code == "failover"


def test_answers_again_clears_a_declined_failover_and_that_is_a_change():
    declined = HAState.initial("ms").model_copy(update={"declined": Declined(at=T0, what="rejected by ana")})
    recorded = declined.record(decide(declined, UP, PAIR, T0)[0]).model_copy(update={"declined": declined.declined})
    s = step(recorded, 0, UP, PAIR, T0 + 1)
    assert s.decision.code == "main-answers" and s.changed and s.state.declined is None


def test_did_not_fail_over_is_told_once_however_it_is_held():
    state = HAState.initial("ms").model_copy(update={"consecutive_failures": 2})
    isolated = decide(state, Probes(False, "t", witness_ok=False, witness_detail="lost"), PAIR, T0)[0]
    paused = decide(state.model_copy(update={"pause": Pause(by="ana", reason="UPS", since=T0)}), DOWN, PAIR, T0)[0]
    assert alert("main-failing", isolated, PAIR) == "did NOT fail over to bus"
    assert alert("isolated", paused, PAIR) is None  # still held back: not told again
    assert alert("isolated", isolated, PAIR) is None
    assert alert("main-failing", decide(state, DOWN, PAIR, T0)[0], PAIR) == "FAILOVER to bus starting"


# --- held: why an automatic failover would not happen, shared with status ------------------------------
def test_a_completed_fallback_acknowledges_the_hold_down_with_its_approvers():
    after_fallback = BUS.with_authority("ms", None, "fallback", now=T0 + 100)
    assert held(after_fallback, PAIR, T0 + 200)[0] == "hold-down"
    acked = after_fallback.acknowledge("grace and heidi", "fallback to ms completed", T0 + 150)
    assert held(acked, PAIR, T0 + 200) is None
    assert acked.acknowledged.by == "grace and heidi" and acked.decisions[-1].action == "ack"
    ds, _ = cycles(acked, DOWN, 3, now=T0 + 200)
    assert ds[-1].action == "failover"


def test_held_names_the_pause_first():
    paused = HAState.initial("ms").model_copy(update={"pause": Pause(by="ana", reason="UPS work", since=T0)})
    assert held(paused, PAIR, T0) == ("paused", "automatic failover paused by ana: UPS work")
    assert held(HAState.initial("ms"), PAIR, T0) is None


# --- every outcome, word for word: the code drives recording and alerts, the reason is what people read --
WARN = MainSeen(True, writers={"orb2dbt": False, "orb2wf": False})  # no ORB source, both writers down
FAILED = HAState.initial("ms").model_copy(update={"consecutive_failures": 2})
FAILOVER_SEEN = "ms ID server failed 3/3 consecutive probes (refused)"
OUTCOMES = {
    "main-answers": (HAState.initial("ms"), UP, "stay", "ms ID server answers: pong ms"),
    "main-warn": (HAState.initial("ms"), Probes(True, "pong ms", True, "ok", main=WARN), "warn",
                  "ms ID server answers: pong ms, so no failover; but a person should look at ms (from the worker: "
                  "ms reachable, ORB STALLED: orbstat found no source, writers orb2dbt, orb2wf NOT running)"),
    "main-failing": (HAState.initial("ms"), DOWN, "stay", "ms ID server failed 1/3 consecutive probes (refused)"),
    "isolated": (FAILED, Probes(False, "refused", False, "lost"), "stay",
                 f"{FAILOVER_SEEN}, but bus cannot reach the witness (lost): bus may be the isolated one, "
                 "not failing over"),
    "link-cut": (FAILED, Probes(False, "refused", True, "ok", main_self_idserver_ok=True), "stay",
                 f"{FAILOVER_SEEN}, but the ID server answers on ms itself: only the link bus -> ms is down, "
                 "not failing over"),
    "paused": (FAILED.model_copy(update={"pause": Pause(by="ana", reason="UPS", since=T0)}), DOWN, "stay",
               f"{FAILOVER_SEEN}; automatic failover paused by ana: UPS"),
    "declined": (FAILED.model_copy(update={"declined": Declined(at=T0, what="rejected by ana")}), DOWN, "hold",
                 f"{FAILOVER_SEEN}; but a failover to bus was declined in this outage (rejected by ana): a person "
                 "must acknowledge (antelope-ha ack) before health asks again"),
    "hold-down": (BUS.with_authority("ms", None, "fallback", now=T0 + 50).model_copy(
        update={"consecutive_failures": 2}), DOWN, "hold",
        f"{FAILOVER_SEEN}; but bus already took over 150 s ago (hold-down 600 s): a person must acknowledge "
        "(antelope-ha ack, or a completed fallback) before another automatic failover"),
    "failover": (FAILED, DOWN, "failover", f"{FAILOVER_SEEN}; witness reachable from bus: failing over to bus"),
    "fallback": (BUS.model_copy(update={"fallback_in_progress": True}), own(True), "stay",
                 "bus authoritative (epoch 2), fallback to ms in progress: fence not enforced"),
    "split-brain": (BUS, Probes(False, "", True, "", main_dbids_pids=(41, 42)), "fence",
                    "bus holds epoch 2 but dbids runs on ms (pid 41, 42): split brain, stopping it"),
    "fence": (BUS, Probes(False, "", True, "", main_unfenced="not armed"), "fence",
              "bus authoritative (epoch 2) but ms is not fenced (not armed): fencing it"),
    "backup-serving": (BUS, Probes(False, "", True, ""), "stay", "bus authoritative (epoch 2); ms armed"),
    "backup-failing": (BUS, own(False), "stay",
                       f"bus authoritative (epoch 2), but its own ID server failed 1/3 consecutive probes "
                       f"(refused; {RTEXEC})"),
    "backup-down": (BUS.model_copy(update={"consecutive_failures": 2}), own(False), "alert",
                    f"bus authoritative (epoch 2), but its own ID server failed 3/3 consecutive probes "
                    f"(refused; {RTEXEC}): bus's writers get no ids. Authority is never moved back to ms "
                    "automatically: a person restarts dbids on bus, or runs the fallback"),
}


def test_every_code_has_a_case():
    assert set(OUTCOMES) == set(CODES)


@pytest.mark.parametrize("code", OUTCOMES)
def test_each_outcome_with_its_code_action_and_reason(code):
    state, probes, action, reason = OUTCOMES[code]
    d, _ = decide(state, probes, PAIR, T0 + 150)
    assert (d.code, d.action, d.reason) == (code, action, reason)


def test_backup_serving_answers_with_its_detail_and_resets_the_count():
    d, state = decide(BUS.model_copy(update={"consecutive_failures": 2}), own(True), PAIR, T0)
    assert (d.code, d.action, d.reason) == ("backup-serving", "stay", "bus authoritative (epoch 2), its ID server "
                                                                      "answers (pong bus); ms armed")
    assert state.consecutive_failures == 0


@pytest.mark.parametrize("seen, summary", [
    (MainSeen(True, orb_latency_s=30.0), "ms reachable, ORB flowing (latency 30.0 s)"),  # at the limit: flowing
    (MainSeen(True, orb_latency_s=30.5), "ms reachable, ORB STALLED (newest packet 30.5 s old, limit 30 s)"),
    (MainSeen(True, orb_latency_s=1.0, writers={"orb2dbt": False, "orb2wf": True}),
     "ms reachable, ORB flowing (latency 1.0 s), writer orb2dbt NOT running, writer orb2wf running"),
    (MainSeen(True, orb_latency_s=1.0, writers={"orb2dbt": True, "orb2wf": True}),
     "ms reachable, ORB flowing (latency 1.0 s), writers orb2dbt, orb2wf running"),
    (MainSeen(True, not_checked={"ORB": "orbstat timed out", "writers": "ps failed"}),
     "ms reachable, ORB not checked (orbstat timed out), writers not checked (ps failed)"),
    (MainSeen(False, detail="connection refused"), "ms unreachable over SSH (connection refused)"),
])
def test_what_the_worker_saw_on_main_word_for_word(seen, summary):
    assert seen.summary("ms", 30.0)[0] == summary


def test_an_acknowledgement_at_the_very_moment_counts():
    """Held back only by what happened after the last acknowledgement; the hold-down ends at hold_down_s."""
    declined = HAState.initial("ms").model_copy(update={"declined": Declined(at=T0, what="rejected")})
    assert held(declined.model_copy(update={"hold_down_ack": T0}), PAIR, T0 + 1) is None
    assert held(declined.model_copy(update={"hold_down_ack": T0 - 1}), PAIR, T0 + 1)[0] == "declined"
    assert held(BUS.model_copy(update={"hold_down_ack": T0}), PAIR, T0 + 1) is None
    assert held(BUS.model_copy(update={"hold_down_ack": T0 - 1}), PAIR, T0 + 1)[0] == "hold-down"
    assert held(BUS, PAIR, T0 + 599)[0] == "hold-down"
    assert held(BUS, PAIR, T0 + 600) is None


@pytest.mark.parametrize("code, subject", [
    ("main-warn", "WARNING on ms: ORB or writers"),
    ("failover", "FAILOVER to bus starting"),
    ("split-brain", "SPLIT BRAIN stopped on ms"),
    ("backup-down", "ID SERVER DOWN on bus, the authoritative site"),
    ("main-answers", None),
    ("fence", None),
])
def test_the_subject_people_get_when_a_decision_starts(code, subject):
    assert alert("main-answers" if code != "main-answers" else None, Decision(at=T0, action="stay", reason="r",
                                                                              code=code), PAIR) == subject
