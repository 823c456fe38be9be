"""The health decision: one function, every outcome returned with its reason.

Principle: never fail over on doubt. Failover needs K consecutive failed
probes of MS's ID server from BUS, the witness reachable from BUS (else BUS may
be the one cut off), MS not answering on its own host either (else only the
link BUS -> MS is down), no maintenance pause, no unacknowledged hold-down
after a recent failover, and no unacknowledged failover a person declined in
this outage (asking again every probe would only repeat the question).
"""
from __future__ import annotations

from dataclasses import dataclass

from antelope_ha.config import PairConfig
from antelope_ha.state import Decision, HAState


@dataclass(frozen=True)
class Probes:
    """What one health cycle saw, from BUS unless named otherwise."""

    main_idserver_ok: bool
    main_idserver_detail: str
    witness_ok: bool
    witness_detail: str
    main_self_idserver_ok: bool | None = None  # probed on MS itself; None if MS unreachable
    main_dbids_pids: tuple[int, ...] = ()  # dbids processes found on MS (fencing)
    main_reachable: bool = False


def decide(state: HAState, probes: Probes, pair: PairConfig, now: float) -> tuple[Decision, HAState]:
    """Return the decision and the state to store (failure counter updated)."""
    main, backup, policy = pair.main.name, pair.backup.name, pair.policy

    def out(action: str, reason: str, s: HAState) -> tuple[Decision, HAState]:
        d = Decision(at=now, action=action, reason=reason)
        return d, s.record(d)

    if state.authority.site == backup:
        if state.fallback_in_progress:
            return out("stay", f"{backup} authoritative, fallback to {main} in progress: fence not enforced", state)
        if probes.main_dbids_pids:
            pids = ", ".join(map(str, probes.main_dbids_pids))
            return out("fence", f"{backup} holds epoch {state.authority.epoch} but dbids runs on {main} "
                                f"(pid {pids}): split brain, stopping it", state)
        return out("stay", f"{backup} authoritative (epoch {state.authority.epoch}); {main} armed", state)

    if probes.main_idserver_ok:
        return out("stay", f"{main} ID server answers: {probes.main_idserver_detail}",
                   state.model_copy(update={"consecutive_failures": 0, "declined": None}))

    failures = state.consecutive_failures + 1
    state = state.model_copy(update={"consecutive_failures": failures})
    k = policy.failures_before_failover
    seen = f"{main} ID server failed {failures}/{k} consecutive probes ({probes.main_idserver_detail})"
    if failures < k:
        return out("stay", seen, state)
    if not probes.witness_ok:
        return out("stay", f"{seen}, but {backup} cannot reach the witness ({probes.witness_detail}): "
                           f"{backup} may be the isolated one, not failing over", state)
    if probes.main_self_idserver_ok:
        return out("stay", f"{seen}, but the ID server answers on {main} itself: only the link "
                           f"{backup} -> {main} is down, not failing over", state)
    if state.pause is not None:
        return out("stay", f"{seen}; automatic failover paused by {state.pause.by}: {state.pause.reason}", state)
    declined = state.declined
    if declined is not None and (state.hold_down_ack is None or state.hold_down_ack < declined.at):
        return out("hold", f"{seen}; but a failover to {backup} was declined in this outage ({declined.what}): "
                           f"a person must acknowledge (antelope-ha ack) before health asks again", state)
    last = state.last_failover(backup)
    if last is not None and now - last.since < policy.hold_down_s and (
        state.hold_down_ack is None or state.hold_down_ack < last.since
    ):
        return out("hold", f"{seen}; but {backup} already took over {now - last.since:.0f} s ago "
                           f"(hold-down {policy.hold_down_s:g} s): a person must acknowledge "
                           f"(antelope-ha ack) before another automatic failover", state)
    return out("failover", f"{seen}; witness reachable from {backup}: failing over to {backup}", state)
