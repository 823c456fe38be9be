"""Tasks on the real-time system: rtexec itself and the tasks it runs."""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from antelope_ha.config import SiteConfig
from antelope_ha.site import Outcome
from tasks.sites import retry_if_transient, site

STEP = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, timeout_seconds=180,
            retry_condition_fn=retry_if_transient)


def logged(outcome: Outcome) -> Outcome:
    get_run_logger().info("%s", outcome)
    return outcome


@task(name="Start rtexec", task_run_name="start rtexec on {cfg.name}", **STEP)
def ensure_rtexec(cfg: SiteConfig, dry_run: bool = False) -> Outcome:
    return logged(site(cfg, dry_run).ensure_rtexec_running())


@task(name="Start an rtexec task", task_run_name="start {name} on {cfg.name}", **STEP)
def start_task(cfg: SiteConfig, name: str, dry_run: bool = False) -> Outcome:
    return logged(site(cfg, dry_run).ensure_task(name, True))


@task(name="Stop an rtexec task", task_run_name="stop {name} on {cfg.name}", **STEP)
def stop_task(cfg: SiteConfig, name: str, dry_run: bool = False) -> Outcome:
    return logged(site(cfg, dry_run).ensure_task(name, False))


@task(name="Restart an rtexec task", task_run_name="restart {name} on {cfg.name}", **STEP)
def restart_task(cfg: SiteConfig, name: str, since: float, dry_run: bool = False) -> Outcome:
    return logged(site(cfg, dry_run).restart_task(name, since=since))
