"""The health decision: one function, every outcome returned with its reason.

Principle: never fail over on doubt. Failover needs K consecutive failed
probes of MS's ID server from BUS, the witness reachable from BUS (else BUS may
be the one cut off), MS not answering on its own host either (else only the
link BUS -> MS is down), no maintenance pause, no unacknowledged hold-down
after a recent failover, and no unacknowledged failover a person declined in
this outage (asking again every probe would only repeat the question).

What the worker sees on MS itself (SSH, ORB data, writers) is reported in
every reason but never makes a failover happen or stops one: while MS's ID
server answers, a stalled ORB or a writer down is a ``warn`` for a person.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from antelope_ha.config import PairConfig
from antelope_ha.state import Decision, HAState


@dataclass(frozen=True)
class MainSeen:
    """What the worker found on MS itself over SSH."""

    reachable: bool
    detail: str = ""  # why MS could not be reached
    orb_latency_s: float | None = None  # the freshest ORB source; None: orbstat found none
    writers: dict[str, bool] = field(default_factory=dict)  # writer task -> running
    not_checked: dict[str, str] = field(default_factory=dict)  # "ORB" or "writers" -> why not

    def summary(self, main: str, orb_limit_s: float) -> tuple[str, bool]:
        """The findings as text, and whether a person should look (a stalled
        ORB, a writer down). What could not be checked is said, not counted."""
        if not self.reachable:
            return f"{main} unreachable over SSH ({self.detail})", False
        found, trouble = [f"{main} reachable"], False
        lat = self.orb_latency_s
        if "ORB" in self.not_checked:
            found.append(f"ORB not checked ({self.not_checked['ORB']})")
        elif lat is None or lat > orb_limit_s:
            trouble = True
            found.append("ORB STALLED: orbstat found no source" if lat is None else
                         f"ORB STALLED (newest packet {lat:.1f} s old, limit {orb_limit_s:g} s)")
        else:
            found.append(f"ORB flowing (latency {lat:.1f} s)")
        down = [w for w, running in self.writers.items() if not running]
        up = [w for w, running in self.writers.items() if running]
        if "writers" in self.not_checked:
            found.append(f"writers not checked ({self.not_checked['writers']})")
        if down:
            trouble = True
            found.append(f"writer{'s' if len(down) > 1 else ''} {', '.join(down)} NOT running")
        if up:
            found.append(f"writer{'s' if len(up) > 1 else ''} {', '.join(up)} running")
        return ", ".join(found), trouble


@dataclass(frozen=True)
class Probes:
    """What one health cycle saw, from BUS unless named otherwise."""

    main_idserver_ok: bool
    main_idserver_detail: str
    witness_ok: bool
    witness_detail: str
    main_self_idserver_ok: bool | None = None  # probed on MS itself; None if MS unreachable
    main_dbids_pids: tuple[int, ...] = ()  # dbids processes found on MS (fencing)
    main: MainSeen | None = None  # None: MS not probed (BUS authoritative)


def decide(state: HAState, probes: Probes, pair: PairConfig, now: float) -> tuple[Decision, HAState]:
    """Return the decision and the state to store (failure counter updated)."""
    main, backup, policy = pair.main.name, pair.backup.name, pair.policy
    on_main, trouble = probes.main.summary(main, pair.main.max_orb_latency_s) if probes.main else ("", False)

    def out(action: str, reason: str, s: HAState) -> tuple[Decision, HAState]:
        d = Decision(at=now, action=action, reason=reason + (f" (from the worker: {on_main})" if on_main else ""))
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
        healthy = state.model_copy(update={"consecutive_failures": 0, "declined": None})
        answers = f"{main} ID server answers: {probes.main_idserver_detail}"
        if trouble:
            return out("warn", f"{answers}, so no failover; but a person should look at {main}", healthy)
        return out("stay", answers, healthy)

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
