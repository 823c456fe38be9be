"""Tasks on ids: the lastid table, the ID server, the descriptor, id scans."""
from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from antelope_ha.baseline import Verdict, judge, outage_ids
from antelope_ha.config import SiteConfig
from antelope_ha.idscan import IdReport
from antelope_ha.lastid import failover_lastid
from antelope_ha.site import Outcome
from antelope_ha.state import Replica
from tasks.realtime import STEP, logged
from tasks.sites import site
from tasks.state import load_state, update_state


@task(name="Check the site is ready", task_run_name="check {cfg.name} can take over", **STEP)
def check_ready(cfg: SiteConfig) -> Outcome:
    return logged(site(cfg).check_ready())


@task(name="Read lastid", task_run_name="read dbids.lastid on {cfg.name}", **STEP)
def read_lastid(cfg: SiteConfig) -> dict[str, int]:
    return site(cfg).read_lastid()


@task(name="Check ids", task_run_name="check ids of {cfg.name} against its lastid",
      cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, timeout_seconds=3600)
def scan_ids(cfg: SiteConfig) -> IdReport:
    """Max id and duplicates per key of the site's db, checked against its lastid."""
    return site(cfg).scan_ids()


@task(name="Judge ids against the baseline", task_run_name="which id problems of {cfg.name} block",
      cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def judge_ids(pair_name: str, main_site: str, cfg: SiteConfig, scan: IdReport,
              handed_over: dict[str, int] | None = None) -> Verdict:
    """The scan's problems that block (new since the site's baseline, or touching the ids
    BUS issued up to the lastid it ``handed_over``) and the old ones, with when first seen."""
    state = load_state(pair_name)
    took = next((a for a in reversed([*state.history, state.authority]) if a.site != main_site), None)
    outage = None if handed_over is None else outage_ids(took.lastid if took else None, handed_over)
    return judge(scan, state.baselines.get(cfg.name), outage)


@task(name="Record the baseline of old id problems", task_run_name="baseline of {cfg.name}'s id problems",
      cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_baseline(pair_name: str, cfg: SiteConfig, scan: IdReport, reason: str,
                    dry_run: bool = False) -> None:
    """Taken when the site takes authority: its problems now are the old ones from then on."""
    if not dry_run:
        update_state(pair_name, lambda s: s.with_baseline(cfg.name, scan, reason))


@task(name="Raise lastid", task_run_name="raise dbids.lastid on {cfg.name}", **STEP)
def raise_lastid(cfg: SiteConfig, values: dict[str, int], purpose: str, dry_run: bool = False) -> Outcome:
    return logged(site(cfg, dry_run).raise_lastid(values, purpose))


@task(name="Read the replica's time", task_run_name="when {cfg.name}'s lastid was copied", **STEP)
def read_replica(cfg: SiteConfig) -> Replica | None:
    return site(cfg).replica()


@task(name="Record the replica's time", task_run_name="record when {cfg.name}'s lastid was copied", **STEP)
def record_replica(cfg: SiteConfig, replica: Replica, dry_run: bool = False) -> Outcome:
    """Next to the copy, on the site: a failover there reads how old it is."""
    return site(cfg, dry_run).write_replica(replica)


def failover_targets(replica: dict[str, int], margin: int, scan: IdReport) -> dict[str, int]:
    return failover_lastid(replica, margin, scan.max_ids())


@task(name="Point the descriptor at an ID server",
      task_run_name="set dbidserver {address} in {cfg.name}:{cfg.db}", **STEP)
def set_dbidserver(cfg: SiteConfig, address: str, dry_run: bool = False) -> Outcome:
    return logged(site(cfg, dry_run).ensure_dbidserver(address))


@task(name="Time of the descriptor change", task_run_name="when {cfg.name}:{cfg.db} last changed", **STEP)
def descriptor_changed_at(cfg: SiteConfig, dry_run: bool = False) -> float:
    """Writers started before this read the old dbidserver and must restart.
    A dry run that would have written the descriptor takes now, as the real
    run would find it; one that would not, the descriptor's own time."""
    planned = site(cfg, dry_run)
    written = dry_run and any(p.action == f"write {planned.path(cfg.db)}" for p in planned.plan)
    return time.time() if written else site(cfg).modified_at(cfg.db)
