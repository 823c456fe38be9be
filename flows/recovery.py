"""Data recovery: merge into MS what BUS recorded while MS was down, and prove
that nothing is lost.

  Check:  which rows MS lacks, by the completeness rule (antelope_ha/completeness.py),
          each site's CSS3.0 files read on the site: every gap of MS since the
          last common point, whole events, every row with an id BUS issued
  On BUS: extract one window per run of lacking events
                                      (trexcerpt -v -e db/db <excerpt> <start> <end>),
          narrow each excerpt to the rows MS lacks, byte for byte,
          and move it to MS           (SFTP, or a path given for an external disk)
  On MS:  stop the db writers; merge  (trexcerpt -v -a -e <excerpt> db/db <start> <end>);
          check again, with wider windows while rows are still lacking; start the db writers
  Then:   the rule holds (no row lacking, no orphan, no id naming two rows) and
          MS's id scan blocks on nothing (no id above its lastid; no id used twice that
          is new since its baseline or was issued during the outage; old problems are listed)

By default the outages are those of the record: every epoch of BUS's
authority that MS took back and no recovery has verified yet (or else the
last one, checked again). Rerunning merges nothing: rows already on MS are
not lacking.

Each excerpt goes to ``recovery/<start>-<end>/`` in BUS's rtexec_dir and every
file of it is copied to the same place on MS. With ``excerpt_path``, an
absolute path both sites reach (an external disk, a shared mount), BUS
extracts to ``<excerpt_path>/recovery/<start>-<end>/`` and MS merges from
there: nothing is copied.
"""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from antelope_ha.commands import fmt_time
from antelope_ha.completeness import Outage, Verdict, verification_problems
from antelope_ha.outages import to_recover
from antelope_ha.config import SiteConfig
from antelope_ha.excerpt import plan_excerpts
from antelope_ha.site import StepFailed, check_excerpt_path, excerpt_db
from tasks import data, ids, realtime
from tasks.history import procedure_ended
from tasks.notify import notify, notify_run_ended_badly
from tasks.report import publish_gap, publish_incident, publish_plan, publish_timeline, start_procedure
from tasks.sites import plans
from tasks.state import load_state, read_state, record_recovered

#: Rounds of extraction, each with wider windows, before the rows still lacking are reported.
ROUNDS = 3


class WindowError(ValueError):
    """The recovery window is missing, empty or reversed."""


@flow(name="recovery", on_completion=[procedure_ended],
      on_failure=[notify_run_ended_badly, procedure_ended], on_crashed=[notify_run_ended_badly, procedure_ended],
      description="Merge into MS every row it lacks from BUS, once, and prove nothing is lost.")
def recovery(pair_name: str = "default", start: float | None = None, end: float | None = None,
             dry_run: bool = False, excerpt_path: str | None = None, by: str | None = None,
             reason: str = "") -> str:
    """Merge what MS lacks from BUS, and verify it (the module's docstring).

    Args:
        pair_name: the name of the pair's AntelopePair block (as saved by setup)
        start: a window start, epoch seconds: every event of BUS with a moment in
            the window is merged; give both start and end, or neither for the
            outages on the record
        end: window end, epoch seconds (see start)
        dry_run: print the commands each site would run, change nothing
        excerpt_path: an absolute directory both sites reach at that same path
            (an external disk, a shared mount): BUS extracts to it and MS merges
            from it; empty: the excerpts are copied from BUS to MS over SFTP
        by: your name, recorded as who started this run
        reason: why, recorded with who started it
    """
    log = get_run_logger()
    pair, targets = start_procedure("recovery", pair_name, by, reason, dry_run)
    ms, bus = pair.main, pair.backup
    if excerpt_path is not None:
        check_excerpt_path(excerpt_path)
    given = given_window(ms, bus.name, start, end)
    outages = [] if given else outages_to_recover(pair_name, ms, bus.name)

    def check() -> list[Verdict]:
        if given:
            return [data.check_outage(ms, bus, None, given)]
        return [data.check_outage(ms, bus, o) for o in outages]

    before = verdicts = check()
    required = [rows_required(verdicts)]
    merged = 0
    for round_ in range(ROUNDS):
        excerpts, untimed = plan_excerpts(verdicts, round_)
        if untimed:
            raise StepFailed(f"{len(untimed)} rows {ms.name} lacks have no time in their event, so no time window "
                             f"can bring them: {'; '.join(map(str, untimed[:10]))}")
        if not excerpts:
            break
        lacking = sum(len(v.missing) for v in verdicts)
        log.info("round %d: %d rows lacking, in %d excerpts", round_ + 1, lacking, len(excerpts))
        for e in excerpts:
            excerpt = excerpt_db(e.start, e.end, excerpt_path)
            data.extract(bus, excerpt, e.start, e.end, dry_run)
            data.narrow(bus, excerpt, e.keep_json(), dry_run)
            data.move_excerpt(bus, ms, excerpt, excerpt_path is not None, dry_run)
        for writer in ms.writer_tasks:
            realtime.stop_task(ms, writer, dry_run)
        for e in excerpts:
            data.merge(ms, excerpt_db(e.start, e.end, excerpt_path), e.start, e.end, dry_run)
        merged += lacking
        if dry_run:
            break
        verdicts = check()
        required.append(rows_required(verdicts))
    # Also when nothing was merged: a run killed between a merge and this step left them stopped.
    for writer in ms.writer_tasks:
        realtime.start_task(ms, writer, dry_run)
    if dry_run:
        return publish_plan("recovery", plans(str(flow_run.get_id())))

    took_back = load_state(pair_name).authority
    judged = ids.judge_ids(pair_name, ms.name, ms, ids.scan_ids(ms),
                           handed_over=took_back.lastid if took_back.site == ms.name else None)
    if judged.old:
        log.info("old id problems of %s, before this outage (not the recovery's): %s", ms.name, "; ".join(judged.old))
    problems = verification_problems(verdicts, judged.blocking)
    if problems:
        grew = (f" (the rows {ms.name} must hold grew from check to check, {' -> '.join(map(str, required))}: "
                f"{bus.name}'s writers were still writing the outage; run the recovery again once they have "
                "caught up)") if required[-1] > required[0] else ""
        raise StepFailed(f"verification failed on {ms.name}" + (f" after {ROUNDS} rounds of excerpts" if merged else "")
                         + grew + ": " + "; ".join(problems))
    if outages:
        record_recovered(pair_name, max(o.epoch for o in outages))
    gaps = sum(len(v.gaps) for v in verdicts)
    result = (f"merged {merged} rows into {ms.name}" if merged
              else f"nothing to merge: {ms.name} holds every row the rule requires")
    summary = (f"{result}; verified: {gaps} gaps of {ms.name}, {required[-1]} rows of {bus.name} that "
               f"{ms.name} must hold all on it byte for byte, no orphan, no new id used twice, none above lastid")
    notify(targets, f"RECOVERY into {ms.name} done", summary)
    publish_gap(ms.name, bus.name, before, verdicts)
    publish_timeline("recovery", [ms.name, bus.name])
    took = load_state(pair_name).last_failover(bus.name)
    if took is not None:
        publish_incident("recovery", pair_name, took.epoch, targets.ui_url if targets else None)
    return summary


def rows_required(verdicts: list[Verdict]) -> int:
    return sum(sum(v.required.values()) for v in verdicts)


def given_window(ms: SiteConfig, backup: str, start: float | None, end: float | None) -> tuple[float, float] | None:
    """The operator's window, if one was given, checked."""
    if (start is None) != (end is None):
        given, missing = ("start", "end") if end is None else ("end", "start")
        raise WindowError(f"{given} is given but {missing} is not: give both start and end (epoch seconds), "
                          f"or neither to recover {ms.name}'s outages on the record (failovers to {backup})")
    if start is None or end is None:
        return None
    if not end > start:
        raise WindowError(f"recovery window is empty or reversed: start {fmt_time(start)} is not before "
                          f"end {fmt_time(end)}; give start < end (epoch seconds)")
    return start, end


def outages_to_recover(pair_name: str, ms: SiteConfig, backup: str) -> list[Outage]:
    """The epochs of the backup's authority that MS took back and no recovery
    verified yet, or else the last one (checked again)."""
    state = read_state(pair_name)
    if state.last_failover(backup) is None:
        raise WindowError(f"no failover to {backup} on record: give start and end (epoch seconds)")
    if state.authority.site == backup:
        raise WindowError(f"{backup} is still authoritative: run the fallback first, then the recovery "
                          f"(or give start and end)")
    return to_recover(state, ms.name, backup)
