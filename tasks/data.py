"""Tasks on the data: ORB flow, what MS lacks, extract, narrow, move, merge."""
from __future__ import annotations

import json

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from antelope_ha import commands as C
from antelope_ha.completeness import (Coverage, IdRanges, Inventorist, Inventory, Outage, Verdict, assess,
                                      assess_window)
from antelope_ha.config import SiteConfig
from antelope_ha.excerpt import Narrowed
from antelope_ha.site import Outcome, excerpt_keep
from tasks.realtime import STEP, logged
from tasks.sites import retry_if_transient, site


@task(name="Verify data flow", task_run_name="verify ORB data flow on {cfg.name}", **STEP)
def check_data_flow(cfg: SiteConfig) -> str:
    latency = site(cfg).orb_latency()
    if latency is None:
        text = f"orbstat on {cfg.name} found no ORB source: data is not flowing"
    elif latency > cfg.max_orb_latency_s:
        text = f"ORB on {cfg.name} stalled: newest packet {latency:.1f} s old (limit {cfg.max_orb_latency_s:g} s)"
    else:
        text = f"data flowing on {cfg.name}: newest packet {latency:.1f} s old"
    get_run_logger().info(text)
    return text


@task(name="Check nothing is lost", task_run_name="check what {ms.name} lacks of {bus.name}'s rows",
      cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, timeout_seconds=3600,
      retry_condition_fn=retry_if_transient)
def check_outage(ms: SiteConfig, bus: SiteConfig, outage: Outage | None,
                 given: tuple[float, float] | None = None) -> Verdict:
    """The completeness rule over an outage on the record (or a window an
    operator gave), each site's files read on the site."""
    if given is not None:
        verdict = assess_window(given, inventorist(bus), inventorist(ms))
    elif outage is not None:
        bounds = Coverage.from_json(json.loads(site(ms).run(
            C.recovery_bounds(ms.site_tool_command(), ms.db, outage.since, outage.until), timeout_s=3600).stdout))
        verdict = assess(outage, bounds, inventorist(bus), inventorist(ms))
    else:
        raise ValueError("check_outage needs an outage or a window")
    log = get_run_logger()
    log.info("%s .. %s: %d gaps (%s); rows of %s that %s must hold: %s; lacking: %s; orphans %d; ids naming "
             "two rows %d", C.fmt_time(verdict.window[0]), C.fmt_time(verdict.window[1]), len(verdict.gaps),
             ", ".join(f"{C.fmt_time(g.start)} .. {C.fmt_time(g.end)}" for g in verdict.gaps) or "none",
             bus.name, ms.name, verdict.required or "none", verdict.missing_by_table() or "none",
             len(verdict.orphans), len(verdict.twice))
    for note in verdict.notes:
        log.warning("%s", note)
    return verdict


def inventorist(cfg: SiteConfig) -> Inventorist:
    """A site's inventory, taken on the site (the site tool's inventory)."""
    def take(start: float, end: float, ranges: IdRanges) -> Inventory:
        out = site(cfg).run(C.inventory(cfg.site_tool_command(), cfg.db, start, end, ranges), timeout_s=3600).stdout
        return Inventory.from_json(json.loads(out))
    return take


@task(name="Extract the window", task_run_name="extract the outage window on {cfg.name}", **STEP)
def extract(cfg: SiteConfig, out: str, start: float, end: float, dry_run: bool = False) -> Outcome:
    return logged(site(cfg, dry_run).extract_excerpt(out, start, end))


@task(name="Narrow the excerpt", task_run_name="narrow {excerpt} on {cfg.name} to the rows MS lacks", **STEP)
def narrow(cfg: SiteConfig, excerpt: str, keep: bytes, dry_run: bool = False) -> Outcome:
    """Keep in the excerpt only the rows the rule names (listed in ``keep.json``
    beside it), each line byte for byte."""
    s = site(cfg, dry_run)
    listing = excerpt_keep(excerpt)
    s.write_bytes(listing, keep, "list the rows MS lacks")
    found = s.run(C.narrow_excerpt(cfg.site_tool_command(), excerpt, listing)).stdout
    if not found:
        return logged(Outcome(cfg.name, "narrow", True, f"would narrow {excerpt}"))
    return logged(Outcome(cfg.name, "narrow", True, f"{excerpt}: {Narrowed.from_json(json.loads(found)).summary()}"))


@task(name="Move the excerpt", task_run_name="move the excerpt from {src.name} to {dst.name}", **STEP)
def move_excerpt(src: SiteConfig, dst: SiteConfig, excerpt: str, shared: bool = False,
                 dry_run: bool = False) -> Outcome:
    """Copy every file of the excerpt over SFTP; on a disk both sites reach
    (``shared``), only check that the destination sees it."""
    target = site(dst, dry_run)
    if shared:
        return logged(target.check_excerpt(excerpt, src.name))
    return logged(target.copy_excerpt(site(src), excerpt))


@task(name="Merge the window", task_run_name="merge the excerpt into {cfg.name}'s db",
      cache_policy=NO_CACHE, retries=0, timeout_seconds=3600)
def merge(cfg: SiteConfig, excerpt: str, start: float, end: float, dry_run: bool = False) -> Outcome:
    """Not retried: an append that failed half-way must be looked at, not repeated."""
    result = site(cfg, dry_run).run(C.merge_window(excerpt, cfg.db, start, end))
    return logged(Outcome(cfg.name, "merge", True, result.stdout.strip() or "merged"))
