"""Probes of the health flow, each bounded by the policy's probe timeout."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from antelope_ha.config import SiteConfig
from antelope_ha.runner import RunnerError
from tasks.sites import site


@task(name="Ping the witness", task_run_name="ping witness {host} from {cfg.name}",
      cache_policy=NO_CACHE, timeout_seconds=60)
def ping_witness(cfg: SiteConfig, host: str, timeout_s: float) -> tuple[bool, str]:
    return site(cfg).ping(host, timeout_s)


@task(name="Probe the ID server on its own host", task_run_name="probe ID server on {cfg.name} itself",
      cache_policy=NO_CACHE, timeout_seconds=60)
def probe_main_on_main(cfg: SiteConfig, timeout_s: float) -> bool | None:
    """True/False from the site itself; None when the site cannot be reached."""
    try:
        return site(cfg).probe_idserver(cfg.idserver_address, timeout_s)[0] if _reachable(cfg) else None
    except RunnerError:
        return None


def _reachable(cfg: SiteConfig) -> bool:
    try:
        site(cfg).runner.run(["true"], timeout_s=5).check()
        return True
    except RunnerError:
        return False
