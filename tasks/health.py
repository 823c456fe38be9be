"""Probes of the health flow, each bounded by the policy's probe timeout."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from antelope_ha.config import SiteConfig
from antelope_ha.decide import MainSeen
from antelope_ha.runner import RunnerError
from antelope_ha.site import StepFailed
from tasks.sites import site


@task(name="Ping the witness", task_run_name="ping witness {host} from {cfg.name}",
      cache_policy=NO_CACHE, timeout_seconds=60)
def ping_witness(cfg: SiteConfig, host: str, timeout_s: float) -> tuple[bool, str]:
    return site(cfg).ping(host, timeout_s)


@task(name="Probe MS itself", task_run_name="probe {cfg.name} itself: SSH, ID server, ORB, writers",
      cache_policy=NO_CACHE, timeout_seconds=60)
def probe_main(cfg: SiteConfig, timeout_s: float, ask_idserver: bool = True) -> tuple[bool | None, MainSeen]:
    """From the worker, on the site: does its own ID server answer (None when
    the site cannot be reached, or not asked: BUS already got an answer), and
    what else is seen there. Only the first tells a dead MS from a cut link;
    the rest is reported, never decisive, so it is not looked at while the ID
    server fails from BUS: detection would wait for it."""
    s = site(cfg)
    try:
        s.runner.run(["true"], timeout_s=timeout_s).check()
    except RunnerError as exc:
        return None, MainSeen(reachable=False, detail=str(exc))
    if ask_idserver:
        later = "looked at once the ID server answers"
        return (s.probe_idserver(cfg.idserver_address, timeout_s)[0],
                MainSeen(reachable=True, not_checked={"ORB": later, "writers": later}))
    not_checked: dict[str, str] = {}
    latency = None
    try:
        latency = s.orb_latency(timeout_s)
    except RunnerError as exc:
        not_checked["ORB"] = str(exc)
    writers: dict[str, bool] = {}
    try:
        writers = s.tasks_running(cfg.writer_tasks, timeout_s)
    except (RunnerError, StepFailed, OSError) as exc:
        not_checked["writers"] = str(exc)
    return None, MainSeen(reachable=True, orb_latency_s=latency, writers=writers, not_checked=not_checked)
