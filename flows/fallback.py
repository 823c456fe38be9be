"""Fallback: hand authority back from BUS to MS once MS is repaired.

Started by hand. Two people-approved gates: before the point of no return
(stopping BUS's writers) and before dbids starts on MS. On rejection or
timeout at the first gate BUS is not touched (MS stays fenced); at the
second, BUS is put back exactly as it was (authoritative, writers running,
MS armed). After each approval, before acting on it, the state record and MS
are checked again: if the authority on the record changed, or MS is no
longer as the person saw it, the approval is not acted on and the flow stops
the same way.

  On MS:   (still fenced) check db consistency; start rtexec if not running;
           verify data flow
  -- approval 1 --
  Re-check: the record's authority unchanged; MS reachable, rtexec running
  On BUS:  stop db writers; stop dbids; replicate dbids.lastid to MS;
           point the descriptor back at MS's dbids; stop monitoring (disarm) MS
  On MS:   check db consistency against dbids.lastid
  -- approval 2 --
  Re-check: the record's authority unchanged; MS reachable, rtexec running;
           MS's db consistent against dbids.lastid, scanned again: no id problem
           new since MS's baseline or touching the ids BUS issued
  On MS:   record MS as the authority (and its baseline of old id problems);
           start dbids; start db writers
  On BUS:  start db writers against MS's dbids; start monitoring MS;
           stop information systems
  On MS:   start information systems
"""
from __future__ import annotations

from contextlib import nullcontext

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from antelope_ha.baseline import Verdict
from antelope_ha.config import PairConfig, SiteConfig
from antelope_ha.idscan import IdReport
from antelope_ha.state import Authority
from tasks import authority, data, ids, realtime
from tasks.approval import ApprovalRecord, Gate, ask_approval, publish_approvals, site_changed
from tasks.history import operator_event, procedure_ended
from tasks.lock import procedure_lock
from tasks.notify import notify, notify_run_ended_badly
from tasks.report import publish_incident, publish_plan, publish_timeline, start_procedure
from tasks.sites import plans
from tasks.state import acknowledge, read_state, set_fallback_in_progress


@flow(name="fallback", on_completion=[procedure_ended],
      on_failure=[notify_run_ended_badly, procedure_ended], on_crashed=[notify_run_ended_badly, procedure_ended],
      description="Hand authority back from BUS to MS, with two approvals.")
def fallback(pair_name: str = "default", dry_run: bool = False, by: str | None = None, reason: str = "") -> str:
    """Hand authority back to MS, step by step (the module's docstring).

    Args:
        pair_name: the name of the pair's AntelopePair block (as saved by setup)
        dry_run: print the commands each site would run, change nothing (the
            approvals are not asked)
        by: your name, recorded as who started this run
        reason: why, recorded with who started it
    """
    log = get_run_logger()
    pair, targets = start_procedure("fallback", pair_name, by, reason, dry_run)
    ms, bus = pair.main, pair.backup
    with nullcontext() if dry_run else procedure_lock(pair_name, "fallback"):
        state = read_state(pair_name)
        if state.authority.site == ms.name and not state.fallback_in_progress:
            msg = f"{ms.name} already authoritative (epoch {state.authority.epoch}): nothing to fall back"
            log.info(msg)
            return msg
        approvals: list[ApprovalRecord] = []
        if state.authority.site == bus.name:
            gate1_by = state.fallback_approved_by if state.fallback_in_progress else None
            stopped_because = hand_over(pair, pair_name, state.authority, state.fallback_in_progress, gate1_by,
                                        approvals, dry_run)
            if stopped_because:
                publish_incident("fallback", pair_name, state.authority.epoch, targets.ui_url if targets else None)
                return stopped(pair, targets, approvals, stopped_because)

        # On MS: take authority back.
        authority.take_authority(pair_name, ms, [bus], "fallback approved", dry_run)
        authority.activate_idserver(pair_name, ms, dry_run)
        for writer in ms.writer_tasks:
            realtime.start_task(ms, writer, dry_run)
        # On BUS: follow MS again.
        for writer in bus.writer_tasks:
            realtime.start_task(bus, writer, dry_run)
        for infosys in bus.infosys_tasks:
            realtime.stop_task(bus, infosys, dry_run)
        # On MS: feed the world.
        for infosys in ms.infosys_tasks:
            realtime.start_task(ms, infosys, dry_run)
        # The people who approved this fallback decided MS is fit again: the
        # earlier failover's hold-down no longer holds a new automatic failover.
        approvers = (" and ".join(dict.fromkeys(a.operator for a in approvals if a.operator))
                     or "the approvers of the run this one completes")
        acknowledge(pair_name, approvers, f"fallback to {ms.name} completed", dry_run)
        if not dry_run:
            operator_event(pair_name, "hold-down.acknowledged", approvers, reason=f"fallback to {ms.name} completed")
        # Last: a rerun that finds MS authoritative and this cleared has nothing left to do.
        set_fallback_in_progress(pair_name, False, dry_run)

        if dry_run:
            return publish_plan("fallback", plans(str(flow_run.get_id())))
        publish_approvals("fallback", approvals)
        summary = (f"{ms.name} is authoritative again; {bus.name} follows it. " + approved_by(approvals)
                   + f". The hold-down of the failover is acknowledged by {approvers}: automatic failover to "
                     f"{bus.name} is enabled again.")
        notify(targets, f"FALLBACK to {ms.name} done", summary)
        publish_timeline("fallback", [ms.name, bus.name])
        took = state.last_failover(bus.name)
        if took is not None:
            publish_incident("fallback", pair_name, took.epoch, targets.ui_url if targets else None)
        return summary


def hand_over(pair: PairConfig, pair_name: str, asked: Authority, passed_gate1: bool, gate1_by: str | None,
              approvals: list[ApprovalRecord], dry_run: bool) -> str | None:
    """Everything up to the second approval; returns why it stopped, or None to go on.

    ``asked`` is the authority on the record the approvals are asked under.
    A rerun after the first approval (fallback already in progress) does not ask
    again: BUS's writers may already be stopped, so "BUS was not touched" would be false;
    ``gate1_by`` is who approved it then (the record keeps it for the second gate).
    """
    ms, bus, policy = pair.main, pair.backup, pair.policy
    # On MS: is it fit to take over again? (kept fenced until approved)
    authority.fence(ms, f"{bus.name} authoritative until the fallback is approved", dry_run)
    ms_ids = ids.scan_ids(ms)
    realtime.ensure_rtexec(ms, dry_run)
    flowing = data.check_data_flow(ms)
    if not passed_gate1:
        gate1 = ask_approval(
            pair_name, pair,
            Gate("fallback-1", f"fallback to {ms.name}: stop {bus.name}'s db writers (point of no return)", ms.name),
            findings(ms, ms_ids, ids.judge_ids(pair_name, ms.name, ms, ms_ids), flowing, bus), dry_run)
        approvals.append(gate1)
        if gate1.outcome not in ("approved", "skipped (dry run)"):
            return f"{bus.name} stays authoritative; nothing was changed on {bus.name} ({ms.name} stays fenced)"
        # Before acting on the answer: the record and MS are still what the person was shown.
        changed = changed_since_asked(pair_name, ms, asked, dry_run)
        if changed:
            approvals[-1] = gate1.model_copy(update={"outcome": "approved, not acted on"})
            return (f"The approval was not acted on: {changed}. {bus.name} stays authoritative and was not "
                    f"touched ({ms.name} stays fenced)")
        set_fallback_in_progress(pair_name, True, dry_run, by=gate1.operator)
        gate1_by = gate1.operator

    # On BUS: stop issuing ids and hand the lastid over.
    for writer in bus.writer_tasks:
        realtime.stop_task(bus, writer, dry_run)
    realtime.stop_task(bus, bus.idserver_task, dry_run)
    handed_over = ids.read_lastid(bus)
    ids.raise_lastid(ms, handed_over, f"lastid from {bus.name} at fallback", dry_run)
    ids.set_dbidserver(bus, ms.idserver_address, dry_run)
    authority.disarm(ms, "fallback in progress", dry_run)

    # On MS: every id in its db is below the lastid it will serve from.
    ms_ids = ids.scan_ids(ms)
    gate2 = ask_approval(
        pair_name, pair,
        Gate("fallback-2", f"fallback to {ms.name}: start dbids on {ms.name}", ms.name,
             after=gate1_by if policy.two_people_for_fallback else None),
        findings(ms, ms_ids, ids.judge_ids(pair_name, ms.name, ms, ms_ids, handed_over), flowing, bus), dry_run)
    approvals.append(gate2)
    if gate2.outcome not in ("approved", "skipped (dry run)"):
        restore_backup(pair, pair_name, dry_run)
        return f"{bus.name} restored as authority"
    # Before acting on the answer: the record, MS and its ids are still what the person was shown.
    changed = changed_since_asked(pair_name, ms, asked, dry_run)
    if not changed:
        ms_ids = ids.scan_ids(ms)
        blocking = ids.judge_ids(pair_name, ms.name, ms, ms_ids, handed_over).blocking
        if blocking and not dry_run:
            changed = f"{ms.name} ids are not consistent: {'; '.join(blocking)}"
    if changed:
        get_run_logger().warning("%s approved, not acted on: %s", gate2.gate, changed)
        approvals[-1] = gate2.model_copy(update={"outcome": "approved, not acted on"})
        restore_backup(pair, pair_name, dry_run)
        return f"The approval was not acted on: {changed}. {bus.name} restored as authority"
    ids.record_baseline(pair_name, ms, ms_ids, f"{ms.name} takes authority again (fallback)", dry_run)
    return None


def changed_since_asked(pair_name: str, ms: SiteConfig, asked: Authority, dry_run: bool) -> str | None:
    """After an approval, before acting on it: what is no longer as it was when
    the person was asked (the authority on the record; MS reachable, rtexec
    running), or None. The answer may come half an hour after the question."""
    now = read_state(pair_name).authority
    if now.marker() != asked.marker():
        return (f"the authority on the record changed while waiting for the answer: {asked.site} at epoch "
                f"{asked.epoch} when asked, {now.site} at epoch {now.epoch} now")
    return site_changed(ms, dry_run)


def restore_backup(pair: PairConfig, pair_name: str, dry_run: bool) -> None:
    """Undo the BUS side of a fallback that was not approved to finish."""
    ms, bus = pair.main, pair.backup
    authority.fence(ms, f"fallback not approved: {bus.name} stays authoritative", dry_run)
    ids.set_dbidserver(bus, bus.idserver_address, dry_run)
    authority.activate_idserver(pair_name, bus, dry_run)
    for writer in bus.writer_tasks:
        realtime.start_task(bus, writer, dry_run)
    set_fallback_in_progress(pair_name, False, dry_run)


def findings(ms: SiteConfig, scan: IdReport, verdict: Verdict, flowing: str, bus: SiteConfig) -> str:
    blocking = "\n".join(f"- {p}" for p in verdict.blocking) or "- none"
    old = "\n".join(f"- {p}" for p in verdict.old) or "- none"
    info = "".join(f"\n- {i}" for i in scan.info)
    keys = "\n".join(f"| {k} | {v.max} | {v.lastid} | {v.duplicates} |" for k, v in sorted(scan.keys.items()))
    return (f"**{ms.name} data flow:** {flowing}\n\n**{ms.name} ids** (max in db, lastid, values used twice):\n\n"
            f"| key | max | lastid | used twice |\n|---|---|---|---|\n{keys}\n\n"
            f"**Problems that block dbids on {ms.name}:**\n{blocking}\n\n"
            f"**Old problems (in {ms.name}'s baseline, not blocking):**\n{old}{info}\n\n"
            f"{bus.name} keeps serving ids until this is approved.")


def approved_by(approvals: list[ApprovalRecord]) -> str:
    return "; ".join(f"{a.gate}: {a.outcome}" + (f" by {a.operator} ({a.reason})" if a.operator else "")
                     for a in approvals)


def stopped(pair: PairConfig, targets, approvals: list[ApprovalRecord], state: str) -> str:
    publish_approvals("fallback", approvals)
    publish_timeline("fallback", [pair.main.name, pair.backup.name])
    summary = f"fallback to {pair.main.name} stopped: {approved_by(approvals)}. {state}."
    get_run_logger().warning(summary)
    notify(targets, f"FALLBACK to {pair.main.name} stopped", summary)
    return summary
