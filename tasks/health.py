"""The health cycle's Prefect side, shared by the one-shot ``health`` flow and
the watcher: look, then (once the decision is on the record) act and tell.

The looking itself is ``antelope_ha.probe``; the decision ``antelope_ha.decide``.
"""
from __future__ import annotations

import threading

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from antelope_ha.config import PairConfig
from antelope_ha.decide import Probes, alert
from antelope_ha.names import PairNames
from antelope_ha.probe import PairProbe
from antelope_ha.state import Decision, HAState
from blocks.pair import NotifyTargets
from tasks import authority
from tasks.lock import failover_queued
from tasks.notify import compose_for_this_run, send

DECISION_EVENT = "antelope-ha.health.decision"


def pair_resource(pair_name: str) -> dict[str, str]:
    """The resource the pair's events are about (decisions, the watcher's heartbeat)."""
    return PairNames(pair_name).resource()


@task(name="Look at the pair", task_run_name="look at {probe.ms.name} and the witness from {probe.bus.name}",
      cache_policy=NO_CACHE, timeout_seconds=120)
def look(probe: PairProbe, state: HAState) -> Probes:
    return probe.look(state)


def emit_decision(pair_name: str, decision: Decision, state: HAState) -> None:
    """A new decision, as an event: what a history or an automation reads."""
    emit_event(event=DECISION_EVENT, resource=pair_resource(pair_name), payload={
        "action": decision.action, "code": decision.code, "reason": decision.reason,
        "authority": state.authority.site, "epoch": state.authority.epoch,
        "failures": state.consecutive_failures})


def act_and_tell(pair_name: str, pair: PairConfig, targets: NotifyTargets | None, before: str | None,
                 decision: Decision, state: HAState, *, run_failover: bool, dry_run: bool = False,
                 wait: bool = True) -> str:
    """Do what a recorded decision calls for on the sites, and notify the
    operators once, when a decision starts (``alert``); say what was done.

    A failover runs here, in this process (the watcher's warm connections),
    unless another failover run of the pair is under way already; its
    "starting" message goes out from a thread of its own meanwhile, so that a
    slow mail server never delays it. Without ``wait`` (the watcher) no
    message is waited for: the next decision must not wait for a mail server."""
    from flows.failover import failover

    done = ""
    sender = None
    if decision.code == "failover":
        if not run_failover:
            return (f"not acted on by this run: the watcher acts, or start the deployment "
                    f"{PairNames(pair_name).deployment('failover')} by hand")
        queued = failover_queued(pair_name)
        if queued:
            get_run_logger().warning("no new failover: %s is already under way", queued)
            return f"no new failover: {queued} is already under way"
        sender = _tell(targets, before, decision, pair)
        try:
            done = failover(pair_name=pair_name, reason=decision.reason, by="automation")
        finally:
            if sender is not None:
                sender.join()
        return done
    if decision.code in ("split-brain", "fence"):
        done = authority.fence(pair.main, f"{pair.backup.name} authoritative (epoch {state.authority.epoch})",
                               dry_run).detail
    if not dry_run and (sender := _tell(targets, before, decision, pair, done)) is not None and wait:
        sender.join()
    return done


def _tell(targets: NotifyTargets | None, before: str | None, decision: Decision, pair: PairConfig,
          done: str = "") -> threading.Thread | None:
    subject = alert(before, decision, pair)
    if subject is None:
        return None
    body = decision.reason + (f". {done}" if done else "")
    log = get_run_logger()
    log.info("NOTIFY %s: %s", subject, body)
    if targets is None:
        return None
    # composed here, sent from a thread outside the run's context: in an async
    # flow's context, Prefect's notification blocks would hand back coroutines
    sender = threading.Thread(target=send, args=(targets, *compose_for_this_run(targets, subject, body), log),
                              name="notify")
    sender.start()
    return sender
