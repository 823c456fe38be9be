"""Health: the scheduled check run at BUS. It probes MS and the witness,
decides (stay, warn, fail over, hold, fence) with the reason written down, and
keeps MS armed while BUS is authoritative.

While MS is authoritative the worker also looks at MS itself over SSH: its ID
server there (a dead MS or only a cut link?), its ORB data and its writers.
Those two are reported, never a reason to fail over; while MS's ID server
answers, a stalled ORB or a writer down is a warning, notified once.

Failover is started by the event this flow emits (a deployment trigger on
the failover deployment); with ``failover_inline`` the flow runs it itself,
which is how the drill and embedded Prefect work without a server.
"""
from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.runtime import flow_run

from antelope_ha.decide import Probes, decide
from flows.failover import failover
from tasks import authority, ids
from tasks.health import ping_witness, probe_main
from tasks.notify import notify, notify_run_ended_badly
from tasks.pair import load_pair
from tasks.report import publish_plan
from tasks.sites import plans
from tasks.lock import failover_queued
from tasks.state import read_state, record_health

FAILOVER_EVENT = "antelope-ha.failover.requested"


@flow(name="health", on_failure=[notify_run_ended_badly], on_crashed=[notify_run_ended_badly],
      description="Probe MS and the witness from BUS and decide: stay, warn, fail over, hold or fence.")
async def health(pair_name: str = "default", failover_inline: bool = False, dry_run: bool = False) -> str:
    """One health cycle: probe, decide, record, act on the decision.

    Async only so that a run ends when its body does: Prefect waits up to a
    second at the end of each sync flow run for its heartbeat thread, and
    detection pays that once per probe (K times). The steps are sync tasks.

    Args:
        pair_name: the name of the pair's AntelopePair block (as saved by setup)
        failover_inline: run the failover in this run instead of emitting the event
            that starts the failover deployment (embedded Prefect, the drill)
        dry_run: probe and decide, but store nothing, notify nobody and print what
            would change
    """
    log = get_run_logger()
    pair, targets = load_pair(pair_name)
    ms, bus, policy = pair.main, pair.backup, pair.policy
    state = read_state(pair_name, ms.name)

    if state.authority.site == bus.name and not state.fallback_in_progress:
        fenced = authority.fence(ms, f"{bus.name} authoritative (epoch {state.authority.epoch})", dry_run)
        probes = Probes(main_idserver_ok=False, main_idserver_detail="not probed: BUS authoritative",
                        witness_ok=True, witness_detail="", main_dbids_pids=fenced.stopped_pids)
    else:
        ok, detail = ids.probe_idserver(bus, ms.idserver_address, policy.probe_timeout_s)
        witness_ok, witness_detail = (True, "not needed") if ok else ping_witness(bus, pair.witness.host,
                                                                                   policy.probe_timeout_s)
        self_ok, seen = probe_main(ms, policy.probe_timeout_s, ask_idserver=not ok)
        probes = Probes(ok, detail, witness_ok, witness_detail, main_self_idserver_ok=self_ok, main=seen)
        fenced = None

    decision, new_state = decide(state, probes, pair, time.time())
    log.log(20 if decision.action == "stay" and new_state.consecutive_failures == 0 else 30,
            "decision: %s: %s", decision.action.upper(), decision.reason)
    if dry_run:
        plan = publish_plan("health", plans(str(flow_run.get_id())))
        return f"{decision.action}: {decision.reason} (dry run: nothing stored, nobody notified)\n\n{plan}"
    recorded = record_health(pair_name, ms.name, state, new_state)
    if not recorded:
        log.warning("decision not recorded: a procedure holds the pair or the record changed while probing")

    before = state.decisions[-1].action if state.decisions else "stay"
    if decision.action == "fence":
        notify(targets, f"SPLIT BRAIN stopped on {ms.name}", f"{decision.reason}. {fenced.detail if fenced else ''}")
    elif blocked(decision.action, new_state.consecutive_failures, policy.failures_before_failover) and not blocked(
            before, state.consecutive_failures, policy.failures_before_failover):
        notify(targets, f"did NOT fail over to {bus.name}", decision.reason)  # once, when it starts
    elif decision.action == "warn" and before != "warn":
        notify(targets, f"WARNING on {ms.name}: ORB or writers", decision.reason)  # once, when it starts
    elif decision.action == "failover" and not recorded:
        log.warning("no failover request: the decision was made on a record that has changed since")
    elif decision.action == "failover" and not failover_inline and (queued := failover_queued(pair_name)):
        log.warning("no new failover request: %s is already under way", queued)
    elif decision.action == "failover":
        notify(targets, f"FAILOVER to {bus.name} starting", decision.reason)
        emit_event(event=FAILOVER_EVENT,
                   resource={"prefect.resource.id": f"antelope-ha.pair.{pair_name}", "antelope-ha.pair": pair_name},
                   payload={"reason": decision.reason})
        if failover_inline:
            failover(pair_name=pair_name, reason=decision.reason)
    return f"{decision.action}: {decision.reason}"


def blocked(action: str, failures: int, k: int) -> bool:
    """MS looks failed but a rule holds the failover back (witness, link, pause, hold-down)."""
    return action == "hold" or (action == "stay" and failures >= k)
