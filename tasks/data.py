"""Tasks on the data: ORB flow, the outage window, extract, move, merge, verify."""
from __future__ import annotations

import json

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from antelope_ha import commands as C
from antelope_ha.config import SiteConfig
from antelope_ha.site import Outcome, StepFailed
from tasks.realtime import STEP, logged
from tasks.sites import site


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


@task(name="Find the outage window", task_run_name="find the gap in {cfg.name}'s db", **STEP)
def find_gap(cfg: SiteConfig, around_start: float, around_end: float) -> tuple[float, float]:
    """The rows MS lacks: strictly between its last row before the outage and its
    first row after it."""
    s = site(cfg)
    data = json.loads(s.run(C.find_gap(cfg.site_tool_command(), cfg.db, around_start, around_end)).stdout)
    if data["end"] is None:
        raise StepFailed(f"{cfg.name} has no row after {C.fmt_time(around_end)} yet: its writers have not "
                         f"caught up since the fallback; run the recovery again once they have")
    return data["start"], data["end"]


@task(name="Compare the excerpt with the db", task_run_name="which rows of {excerpt} {cfg.name} holds", **STEP)
def overlap(cfg: SiteConfig, excerpt: str) -> dict[str, dict[str, int]]:
    return json.loads(site(cfg).run(C.overlap(cfg.site_tool_command(), cfg.db, excerpt)).stdout)


@task(name="Extract the window", task_run_name="extract the outage window on {cfg.name}", **STEP)
def extract(cfg: SiteConfig, out: str, start: float, end: float, dry_run: bool = False) -> Outcome:
    return logged(site(cfg, dry_run).extract_excerpt(out, start, end))


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
