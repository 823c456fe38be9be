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

While BUS is authoritative, its own ID server is the one watched: K failed
probes are an ``alert`` saying what rtexec on BUS is doing, never a move back
to MS (that is the fallback, which people approve).

Each decision carries a ``code`` (``CODES``): the watcher records a decision,
emits it and tells people only when the code changes (``step``, ``alert``).
Everything here is pure: what was seen in, the decision and the state to
store out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from antelope_ha.config import PairConfig
from antelope_ha.state import Action, Decision, HAState

CODES: dict[str, str] = {
    "main-answers": "MS authoritative, its ID server answers from BUS",
    "main-warn": "MS's ID server answers, but its ORB is stalled or a writer is down: a person should look",
    "main-failing": "MS's ID server failed fewer than K consecutive probes",
    "isolated": "K failures, but BUS cannot reach the witness: BUS may be the isolated one",
    "link-cut": "K failures, but MS's ID server answers on MS itself: only the link BUS -> MS is down",
    "paused": "K failures, but automatic failover is paused (maintenance)",
    "declined": "K failures, but a person declined a failover in this outage and nobody acknowledged it since",
    "hold-down": "K failures, but BUS took over within the hold-down and nobody acknowledged it since",
    "failover": "K failures, the witness seen, nothing holding: BUS takes over",
    "fallback": "BUS authoritative, a fallback to MS in progress: MS is not fenced",
    "split-brain": "BUS authoritative, but dbids runs on MS: it is stopped",
    "fence": "BUS authoritative, but MS is not (fully) fenced: it is fenced",
    "backup-serving": "BUS authoritative, its own ID server answers (or was not probed), MS fenced",
    "backup-failing": "BUS authoritative, its own ID server failed fewer than K consecutive probes",
    "backup-down": "BUS authoritative, its own ID server failed K consecutive probes: people are alerted",
}
BLOCKED = frozenset({"isolated", "link-cut", "paused", "declined", "hold-down"})  # failover held back
ACTS = frozenset({"failover", "split-brain", "fence"})  # decisions that change a site


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
    main_dbids_pids: tuple[int, ...] = ()  # dbids processes found on MS while BUS is authoritative
    main: MainSeen | None = None  # None: MS not probed (BUS authoritative)
    main_unfenced: str = ""  # while BUS is authoritative: what on MS is not fenced ("" none, or not looked)
    backup_idserver_ok: bool | None = None  # while BUS is authoritative: its own ID server; None not probed
    backup_detail: str = ""  # its answer; when it fails, what rtexec on BUS is doing


def held(state: HAState, pair: PairConfig, now: float) -> tuple[str, str] | None:
    """Why an automatic failover would be held back now, as (code, text), or None.

    Shared by the decision, ``antelope-ha status`` and the notifications, so
    that all three give the same reason."""
    backup, policy = pair.backup.name, pair.policy
    if state.pause is not None:
        return "paused", f"automatic failover paused by {state.pause.by}: {state.pause.reason}"
    acked = state.hold_down_ack
    declined = state.declined
    if declined is not None and (acked is None or acked < declined.at):
        return "declined", (f"but a failover to {backup} was declined in this outage ({declined.what}): "
                            f"a person must acknowledge (antelope-ha ack) before health asks again")
    last = state.last_failover(backup)
    if last is not None and now - last.since < policy.hold_down_s and (acked is None or acked < last.since):
        return "hold-down", (f"but {backup} already took over {now - last.since:.0f} s ago "
                             f"(hold-down {policy.hold_down_s:g} s): a person must acknowledge "
                             f"(antelope-ha ack, or a completed fallback) before another automatic failover")
    return None


def decide(state: HAState, probes: Probes, pair: PairConfig, now: float) -> tuple[Decision, HAState]:
    """Return the decision and the state to store (failure counter updated)."""
    main, backup, policy = pair.main.name, pair.backup.name, pair.policy
    on_main, trouble = probes.main.summary(main, pair.main.max_orb_latency_s) if probes.main else ("", False)

    def out(action: Action, code: str, reason: str, s: HAState) -> tuple[Decision, HAState]:
        d = Decision(at=now, action=action, code=code,
                     reason=reason + (f" (from the worker: {on_main})" if on_main else ""))
        return d, s.record(d)

    k = policy.failures_before_failover
    if state.authority.site == backup:
        serving = f"{backup} authoritative (epoch {state.authority.epoch})"
        if state.fallback_in_progress:
            return out("stay", "fallback", f"{serving}, fallback to {main} in progress: fence not enforced", state)
        if probes.main_dbids_pids:
            pids = ", ".join(map(str, probes.main_dbids_pids))
            return out("fence", "split-brain", f"{backup} holds epoch {state.authority.epoch} but dbids runs on "
                                               f"{main} (pid {pids}): split brain, stopping it", state)
        if probes.main_unfenced:
            return out("fence", "fence", f"{serving} but {main} is not fenced ({probes.main_unfenced}): "
                                         f"fencing it", state)
        if probes.backup_idserver_ok is None:
            return out("stay", "backup-serving", f"{serving}; {main} armed", state)
        if probes.backup_idserver_ok:
            return out("stay", "backup-serving", f"{serving}, its ID server answers ({probes.backup_detail}); "
                                                 f"{main} armed", state.model_copy(update={"consecutive_failures": 0}))
        failures = state.consecutive_failures + 1
        state = state.model_copy(update={"consecutive_failures": failures})
        seen = f"{serving}, but its own ID server failed {failures}/{k} consecutive probes ({probes.backup_detail})"
        if failures < k:
            return out("stay", "backup-failing", seen, state)
        return out("alert", "backup-down", f"{seen}: {backup}'s writers get no ids. Authority is never moved back "
                                           f"to {main} automatically: a person restarts dbids on {backup}, or runs "
                                           f"the fallback", state)

    if probes.main_idserver_ok:
        healthy = state.model_copy(update={"consecutive_failures": 0, "declined": None})
        answers = f"{main} ID server answers: {probes.main_idserver_detail}"
        if trouble:
            return out("warn", "main-warn", f"{answers}, so no failover; but a person should look at {main}", healthy)
        return out("stay", "main-answers", answers, healthy)

    failures = state.consecutive_failures + 1
    state = state.model_copy(update={"consecutive_failures": failures})
    seen = f"{main} ID server failed {failures}/{k} consecutive probes ({probes.main_idserver_detail})"
    if failures < k:
        return out("stay", "main-failing", seen, state)
    if not probes.witness_ok:
        return out("stay", "isolated", f"{seen}, but {backup} cannot reach the witness ({probes.witness_detail}): "
                                       f"{backup} may be the isolated one, not failing over", state)
    if probes.main_self_idserver_ok:
        return out("stay", "link-cut", f"{seen}, but the ID server answers on {main} itself: only the link "
                                       f"{backup} -> {main} is down, not failing over", state)
    holding = held(state, pair, now)
    if holding is not None:
        code, why = holding
        return out("stay" if code == "paused" else "hold", code, f"{seen}; {why}", state)
    return out("failover", "failover", f"{seen}; witness reachable from {backup}: failing over to {backup}", state)


# --- the watcher's loop: one probe, one step -------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One probe's outcome: the decision, the record as it should be stored,
    and whether the decision is new (recorded, emitted and told only then)."""

    decision: Decision
    state: HAState
    changed: bool

    @property
    def acts(self) -> bool:
        """The decision changes a site (failover, fence): only once it is on the record."""
        return self.decision.code in ACTS


def step(record: HAState, failures: int, probes: Probes, pair: PairConfig, now: float) -> Step:
    """Decide on the stored record with the failure count kept in memory.

    The count lives in the watcher between probes; the record holds the last
    decision that changed. A decision is new when its code differs from the
    last one recorded, or when it clears a declined failover."""
    working = record.model_copy(update={"consecutive_failures": failures})
    decision, decided = decide(working, probes, pair, now)
    changed = decision.code != record.last_health_code() or decided.declined != record.declined
    return Step(decision, decided, changed)


def alert(before: str | None, decision: Decision, pair: PairConfig) -> str | None:
    """The subject of the message people get for this decision, or None: once
    when a decision starts, not at every probe that repeats it."""
    main, backup, code = pair.main.name, pair.backup.name, decision.code
    if code == before:
        return None
    if code in BLOCKED:
        return None if before in BLOCKED else f"did NOT fail over to {backup}"
    return {
        "main-warn": f"WARNING on {main}: ORB or writers",
        "failover": f"FAILOVER to {backup} starting",
        "split-brain": f"SPLIT BRAIN stopped on {main}",
        "backup-down": f"ID SERVER DOWN on {backup}, the authoritative site",
    }.get(code) or (f"ID server on {backup} answers again" if before == "backup-down"
                    and code == "backup-serving" else None)
