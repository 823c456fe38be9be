"""Data recovery: merge into MS what BUS recorded while MS was down.

  On BUS: extract the outage window   (trexcerpt -v -e db/db <excerpt> <start> <end>)
          and move the excerpt to MS  (SFTP, or a path given for an external disk)
  On MS:  stop the db writers; merge  (trexcerpt -v -a -e <excerpt> db/db <start> <end>);
          start the db writers
  Then:   every row of the window is on MS, and no id is used twice.

By default the window is MS's own gap: the rows strictly between MS's last
row before the failover and its first row after the fallback. Rerunning
merges nothing twice: a window already on MS is left alone.

The excerpt goes to ``recovery/<start>-<end>/`` in BUS's rtexec_dir and every
file of it is copied to the same place on MS. With ``excerpt_path``, an
absolute path both sites reach (an external disk, a shared mount), BUS
extracts to ``<excerpt_path>/recovery/<start>-<end>/`` and MS merges from
there: nothing is copied.
"""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from antelope_ha.commands import fmt_time
from antelope_ha.config import SiteConfig
from antelope_ha.site import StepFailed, check_excerpt_path, excerpt_db
from tasks import data, ids, realtime
from tasks.notify import notify, notify_run_ended_badly
from tasks.pair import load_pair
from tasks.report import publish_gap, publish_incident, publish_plan, publish_timeline
from tasks.sites import plans
from tasks.state import load_state, read_state, record_recovery_window


class WindowError(ValueError):
    """The recovery window is missing, empty or reversed."""


@flow(name="recovery", on_failure=[notify_run_ended_badly], on_crashed=[notify_run_ended_badly],
      description="Merge the outage window from BUS into MS, once.")
def recovery(pair_name: str = "default", start: float | None = None, end: float | None = None,
             dry_run: bool = False, excerpt_path: str | None = None) -> str:
    """Merge the outage window from BUS into MS, once, and verify it.

    Args:
        pair_name: the name of the pair's AntelopePair block (as saved by setup)
        start: window start, epoch seconds; give both start and end, or neither
            for MS's own gap around the last failover
        end: window end, epoch seconds (see start)
        dry_run: print the commands each site would run, change nothing
        excerpt_path: an absolute directory both sites reach at that same path
            (an external disk, a shared mount): BUS extracts to it and MS merges
            from it; empty: the excerpt is copied from BUS to MS over SFTP
    """
    log = get_run_logger()
    pair, targets = load_pair(pair_name)
    ms, bus = pair.main, pair.backup
    if excerpt_path is not None:
        check_excerpt_path(excerpt_path)
    start, end = window(pair_name, ms, bus.name, start, end, dry_run)
    log.info("recovery window: %s .. %s (%.1f s)", fmt_time(start), fmt_time(end), end - start)

    excerpt = excerpt_db(start, end, excerpt_path)
    data.extract(bus, excerpt, start, end, dry_run)
    data.move_excerpt(bus, ms, excerpt, excerpt_path is not None, dry_run)
    if dry_run:
        for writer in ms.writer_tasks:
            realtime.stop_task(ms, writer, dry_run)
        data.merge(ms, excerpt, start, end, dry_run)
        for writer in ms.writer_tasks:
            realtime.start_task(ms, writer, dry_run)
        return publish_plan("recovery", plans(str(flow_run.get_id())))

    seen = before = data.overlap(ms, excerpt)
    wanted, present = sum(seen["excerpt"].values()), sum(seen["present"].values())
    if not wanted:
        result = f"{bus.name} holds no row in the window: nothing to merge"
    elif present == wanted:
        result = f"the window is already on {ms.name} ({wanted} rows): nothing merged"
    elif present:
        raise StepFailed(f"{ms.name} already holds {present} of the {wanted} rows of the window ({seen}): "
                         f"a merge was interrupted; compare the two by hand before merging again")
    else:
        for writer in ms.writer_tasks:
            realtime.stop_task(ms, writer)
        data.merge(ms, excerpt, start, end)
        result = f"merged {wanted} rows into {ms.name}"
    # Also after "already on MS": a run killed between the merge and this step left them stopped.
    for writer in ms.writer_tasks:
        realtime.start_task(ms, writer)

    seen = data.overlap(ms, excerpt)
    scan = ids.scan_ids(ms)
    if seen["present"] != seen["excerpt"] or scan["duplicates"]:
        raise StepFailed(f"verification failed on {ms.name}: rows of the window present {seen['present']}, "
                         f"expected {seen['excerpt']}; ids used twice: {scan['duplicates']}")
    summary = f"{result}; verified: every row of the window is on {ms.name} and no id is used twice"
    notify(targets, f"RECOVERY into {ms.name} done", summary)
    publish_gap(ms.name, start, end, before, seen)
    publish_timeline("recovery", [ms.name, bus.name])
    took = load_state(pair_name, ms.name).last_failover(bus.name)
    if took is not None:
        publish_incident("recovery", pair_name, took.epoch, targets.ui_url if targets else None)
    return summary


def window(pair_name: str, ms: SiteConfig, backup: str, start: float | None,
           end: float | None, dry_run: bool = False) -> tuple[float, float]:
    """The operator's window, or MS's gap around the last BUS epoch. The gap is
    found once and kept on the record for that epoch: after a merge MS has no
    gap left, and a rerun must look at the same window to see it is done."""
    if (start is None) != (end is None):
        given, missing = ("start", "end") if end is None else ("end", "start")
        raise WindowError(f"{given} is given but {missing} is not: give both start and end (epoch seconds), "
                          f"or neither to merge {ms.name}'s gap around the last failover to {backup}")
    if start is None or end is None:
        state = read_state(pair_name, ms.name)
        took = state.last_failover(backup)
        if took is None:
            raise WindowError(f"no failover to {backup} on record: give start and end (epoch seconds)")
        if took.epoch in state.recovery_windows:
            return state.recovery_windows[took.epoch]
        after = [a for a in state.history + [state.authority] if a.site == ms.name and a.since > took.since]
        if not after:
            raise WindowError(f"{backup} is still authoritative: run the fallback first, then the recovery "
                              f"(or give start and end)")
        start, end = data.find_gap(ms, took.since, after[0].since)
        if not dry_run:
            record_recovery_window(pair_name, ms.name, took.epoch, (start, end))
    if not end > start:
        raise WindowError(f"recovery window is empty or reversed: start {fmt_time(start)} is not before "
                          f"end {fmt_time(end)}; give start < end (epoch seconds)")
    return start, end
