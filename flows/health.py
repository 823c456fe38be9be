"""Health, one cycle: for the UI ("what would health decide now?"), the drill
and the tests. The long-lived watcher (flows/watch.py) runs the same cycle
every probe interval; this flow is one turn of it.

It looks at the pair from BUS (MS's ID server and the witness while MS is
authoritative, BUS's own ID server and MS's fence while BUS is), decides
(stay, warn, fail over, hold, fence, alert) with the reason written down,
records the decision, and only then acts and tells people once.

While MS is authoritative the worker also looks at MS itself over SSH: its ID
server there (a dead MS or only a cut link?), its ORB data and its writers.
Those two are reported, never a reason to fail over; while MS's ID server
answers, a stalled ORB or a writer down is a warning, notified once.

A failover decision is acted on with ``failover_inline`` (the drill, the
tests); otherwise the watcher acts, or a person starts the failover.
"""
from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from antelope_ha.decide import step
from antelope_ha.probe import PairProbe
from tasks.health import act_and_tell, emit_decision, look
from tasks.notify import notify_run_ended_badly
from tasks.pair import load_pair
from tasks.report import publish_plan
from tasks.sites import plans, site
from tasks.state import read_state, record_health


@flow(name="health", on_failure=[notify_run_ended_badly], on_crashed=[notify_run_ended_badly],
      description="One health cycle: look at the pair from BUS and decide: stay, warn, fail over, hold, "
                  "fence or alert.")
async def health(pair_name: str = "default", failover_inline: bool = False, dry_run: bool = False) -> str:
    """One health cycle: look, decide, record, then act and tell.

    Async only so that a run ends when its body does: Prefect waits up to a
    second at the end of each sync flow run for its heartbeat thread, and a
    caller that cycles this flow pays that every time. The steps are sync tasks.

    Args:
        pair_name: the name of the pair's AntelopePair block (as saved by setup)
        failover_inline: run the failover in this run when the decision is to
            fail over (the drill, tests); otherwise the decision is recorded only
        dry_run: look and decide, but store nothing, notify nobody and print what
            would change
    """
    log = get_run_logger()
    pair, targets = load_pair(pair_name)
    state = read_state(pair_name)
    probe = PairProbe(pair, site(pair.main), site(pair.backup))
    now = step(state, state.consecutive_failures, look(probe, state), pair, time.time())
    decision = now.decision
    log.log(20 if decision.code in ("main-answers", "backup-serving") else 30,
            "decision: %s: %s", decision.action.upper(), decision.reason)
    if dry_run:
        if now.acts and decision.code != "failover":
            act_and_tell(pair_name, pair, targets, None, decision, now.state, run_failover=False, dry_run=True)
        plan = publish_plan("health", plans(str(flow_run.get_id())))
        return f"{decision.action}: {decision.reason} (dry run: nothing stored, nobody notified)\n\n{plan}"
    if not record_health(pair_name, state, now.state):
        log.warning("decision not recorded, so not acted on: a procedure holds the pair or the record changed "
                    "while looking")
        return f"{decision.action}: {decision.reason}"
    if now.changed:
        emit_decision(pair_name, decision, now.state)
    act_and_tell(pair_name, pair, targets, state.last_health_code(), decision, now.state,
                 run_failover=failover_inline)
    return f"{decision.action}: {decision.reason}"
