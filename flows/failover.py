"""Failover: BUS takes over ids, the authoritative database and the
information systems. Automatic (started by the health flow's decision) or
started by hand from the UI.

The steps, in the operators' order:
  0. check BUS can take over (descriptor, lastid, rtexec.pf read and complete),
     then fence MS where it can be reached (arm it, stop any dbids there);
     with the policy's require_fence, an MS that cannot be reached needs a
     person's approval first
  1. synchronise BUS dbids.lastid (replica + margin, never below BUS's own ids;
     after a person's approval, computed again and raised if it has grown)
  2. record BUS as the authority (a new epoch), on the record and on the sites
  3. activate dbids on BUS (refused unless BUS holds the current epoch)
  4. point BUS's db descriptor at the local dbids
  5. restart BUS's db writers so they take ids from it
  6. activate the information systems on BUS
  7. record BUS's id problems as its baseline (the scan of step 1); notify the operators
Every step converges: rerunning after a crash finishes the job.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from antelope_ha.config import PairConfig
from antelope_ha.idscan import IdReport
from antelope_ha.state import HAState
from blocks.pair import NotifyTargets
from tasks import authority, ids, realtime
from tasks.approval import ApprovalRecord, Gate, ask_approval, publish_approvals
from tasks.history import procedure_ended
from tasks.lock import procedure_lock
from tasks.notify import notify, notify_run_ended_badly
from tasks.report import publish_incident, publish_plan, publish_timeline, publish_times, start_procedure
from tasks.sites import plans
from tasks.state import read_state, record_declined

ASK_AGAIN = "Health will not request another failover in this outage until a person runs antelope-ha ack."


@flow(name="failover", log_prints=True,
      on_completion=[procedure_ended],
      on_failure=[notify_run_ended_badly, procedure_ended], on_crashed=[notify_run_ended_badly, procedure_ended],
      description="BUS takes over the ID server, the authoritative db and the information systems.")
def failover(pair_name: str = "default", reason: str = "started by hand", dry_run: bool = False,
             by: str | None = None) -> str:
    """Make BUS authoritative, step by step (the module's docstring).

    Args:
        pair_name: the name of the pair's AntelopePair block (as saved by setup)
        reason: why, recorded with the new authority and sent to the operators
            (the health flow gives its decision's reason)
        dry_run: print the commands each site would run, change nothing
        by: your name, recorded as who started this run (the watcher's own
            failovers say automation)
    """
    pair, targets = start_procedure("failover", pair_name, by, reason, dry_run)
    ms, bus = pair.main, pair.backup
    marks = {"failover started": time.time()}
    approvals: list[ApprovalRecord] = []
    with nullcontext() if dry_run else procedure_lock(pair_name, "failover"):
        state = read_state(pair_name)
        taken = state.authority.site == bus.name
        if taken:
            get_run_logger().info("%s already authoritative (epoch %d): converging the remaining steps",
                                  bus.name, state.authority.epoch)
        # 0. BUS can take over; MS fenced where it can be reached
        ids.check_ready(bus)
        lastid, scan = (None, None) if taken else lastid_targets(pair_name, pair, approvals, dry_run)
        if not taken and lastid is None:
            return not_done(pair, targets, "its lastid replica is stale and no one approved using it")
        fenced = authority.fence(ms, f"{bus.name} takes over: {reason}", dry_run)
        if not taken and not fenced.reachable and not unfenced_takeover_approved(pair_name, pair, fenced.detail,
                                                                                 approvals, dry_run):
            return not_done(pair, targets, f"{ms.name} could not be fenced ({fenced.detail}) and no one approved "
                                           "taking over without it")
        # 1. BUS's lastid: replica + margin, never below its own ids
        if lastid is not None and approvals:
            lastid = lastid_after_waiting(pair, lastid)
        if lastid is not None:
            ids.raise_lastid(bus, lastid, "failover: replica + margin, above every id in the local db", dry_run)
        # 2. BUS is the authority: a new epoch
        state = authority.take_authority(pair_name, bus, [ms], reason, dry_run)
        # 3. dbids on BUS
        authority.activate_idserver(pair_name, bus, dry_run)
        marks[f"dbids serving on {bus.name}"] = time.time()
        # 4. BUS's descriptor names it
        ids.set_dbidserver(bus, bus.idserver_address, dry_run)
        # 5. BUS's writers take ids from it
        changed_at = ids.descriptor_changed_at(bus, dry_run)
        for writer in bus.writer_tasks:
            realtime.restart_task(bus, writer, changed_at, dry_run)
        # 6. the information systems on BUS
        for infosys in bus.infosys_tasks:
            realtime.start_task(bus, infosys, dry_run)
        # 7. BUS's id problems now are its baseline; the operators are told
        if scan is not None:
            ids.record_baseline(pair_name, bus, scan, f"{bus.name} takes authority (failover)", dry_run)
        if dry_run:
            return publish_plan("failover", plans(str(flow_run.get_id())))
        return report_done(pair_name, pair, targets, state, fenced.detail, reason, marks)


def not_done(pair: PairConfig, targets: NotifyTargets | None, why: str) -> str:
    """A failover refused before it changed anything, told to the operators."""
    bus = pair.backup.name
    summary = f"did not fail over to {bus}: {why}; nothing was changed on either site. {ASK_AGAIN}"
    notify(targets, f"FAILOVER to {bus} NOT done", summary)
    return summary


def report_done(pair_name: str, pair: PairConfig, targets: NotifyTargets | None, state: HAState, fence: str,
                reason: str, marks: dict[str, float]) -> str:
    """The operators told, and the run's timeline, times and incident published."""
    ms, bus = pair.main.name, pair.backup.name
    summary = (f"{bus} is authoritative (epoch {state.authority.epoch}): it serves ids, "
               f"holds the authoritative db and feeds the world. {ms}: {fence}. Reason: {reason}")
    notify(targets, f"FAILOVER to {bus} done", summary)
    publish_timeline("failover", [ms, bus])
    decided = [d.at for d in state.decisions[-1:] if d.action == "failover"]
    publish_times("failover", ({"health decided to fail over": decided[0]} if decided else {})
                  | marks | {"every step done": time.time()})
    publish_incident("failover", pair_name, state.authority.epoch, targets.ui_url if targets else None)
    return summary


def unfenced_takeover_approved(pair_name: str, pair: PairConfig, detail: str, approvals: list[ApprovalRecord],
                               dry_run: bool) -> bool:
    """With ``require_fence``, an MS that cannot be reached may be alive behind a
    cut link, its dbids still handing out ids: a person decides."""
    policy = pair.policy
    if not policy.require_fence:
        return True
    findings = (f"{detail}. {pair.main.name} may be down, or alive behind a cut link with its dbids still "
                f"serving ids. Approve only if {pair.main.name} is known to be down or cut off from its "
                f"writers' clients; the health flow fences it as soon as it can be reached.")
    answer = ask_approval(pair_name, pair, Gate("failover-unfenced", f"failover without fencing {pair.main.name}",
                                                pair.backup.name), findings, dry_run)
    return approved(pair_name, pair, answer, approvals, dry_run)


def lastid_targets(pair_name: str, pair: PairConfig, approvals: list[ApprovalRecord],
                   dry_run: bool) -> tuple[dict[str, int] | None, IdReport]:
    """Step 1's numbers: replica + margin, never below BUS's own ids, and BUS's id
    scan. When the replica is older than the policy allows, a person approves the
    numbers first; None means they did not."""
    bus, policy = pair.backup, pair.policy
    replica, scan, targets = proposed_lastid(pair)
    copied = ids.read_replica(bus)
    age = None if copied is None else time.time() - copied.taken_at
    if age is not None and age <= policy.lastid_max_age_s:
        return targets, scan
    rows = "\n".join(f"| {k} | {replica.get(k, '-')} | {scan.max_ids().get(k, '-')} | {v} |"
                     for k, v in sorted(targets.items()))
    findings = (
        f"The lastid replica on {bus.name} is {'of unknown age' if age is None else f'{age:.0f} s old'} "
        f"(policy: at most {policy.lastid_max_age_s:g} s): MS may have issued more ids than the margin since.\n\n"
        f"Proposed lastid (replica + margin {policy.lastid_margin}, never below {bus.name}'s own ids):\n\n"
        f"| key | replica | {bus.name} max | proposed |\n|---|---|---|---|\n{rows}"
    )
    answer = ask_approval(pair_name, pair, Gate("failover-stale-lastid", "failover with a stale lastid replica",
                                                bus.name), findings, dry_run)
    return (targets if approved(pair_name, pair, answer, approvals, dry_run) else None), scan


def proposed_lastid(pair: PairConfig) -> tuple[dict[str, int], IdReport, dict[str, int]]:
    """BUS's lastid replica, its id scan, and the lastid they call for."""
    bus = pair.backup
    replica = ids.read_lastid(bus)
    scan = ids.scan_ids(bus)
    return replica, scan, ids.failover_targets(replica, pair.policy.lastid_margin, scan)


def lastid_after_waiting(pair: PairConfig, shown: dict[str, int]) -> dict[str, int]:
    """Step 1's numbers again after a person's answer: while they decided, BUS's
    own ids may have grown or the replica been refreshed. Never below what was shown."""
    now = proposed_lastid(pair)[2]
    higher = {k: v for k, v in now.items() if k not in shown or v > shown[k]}
    if higher:
        get_run_logger().warning("lastid computed again after the approval, raised above what was shown: %s",
                                 ", ".join(f"{k} {shown.get(k)} -> {v}" for k, v in sorted(higher.items())))
    return shown | higher


def approved(pair_name: str, pair: PairConfig, answer: ApprovalRecord, approvals: list[ApprovalRecord],
             dry_run: bool) -> bool:
    """The answer goes on the run's record of approvals. A refusal (rejected or
    unanswered) is also recorded on the state, so that health does not ask again
    at every probe of the same outage."""
    approvals.append(answer)
    if not dry_run:
        publish_approvals("failover", approvals)
    if answer.outcome in ("approved", "skipped (dry run)"):
        return True
    by = f" by {answer.operator}: {answer.reason}" if answer.operator else ""
    get_run_logger().error("failover stopped before acting: %s %s%s", answer.gate, answer.outcome, by)
    record_declined(pair_name, f"{answer.gate}: {answer.outcome}{by}", dry_run)
    return False
