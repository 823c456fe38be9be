"""Tasks on authority: the epoch record, the markers on the sites, fencing,
and the guarded start of an ID server."""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel

from antelope_ha.config import SiteConfig
from antelope_ha.runner import RunnerError
from antelope_ha.site import Outcome
from antelope_ha.state import HAState
from tasks.history import authority_changed
from tasks.realtime import STEP, logged
from tasks.sites import site
from tasks.state import load_state, update_state


@task(name="Take authority", task_run_name="make {cfg.name} authoritative", **STEP)
def take_authority(pair_name: str, cfg: SiteConfig, others: list[SiteConfig],
                   reason: str, dry_run: bool = False) -> HAState:
    """Record a new epoch for ``cfg`` (once), with the lastid its dbids starts from
    (so the ids each authority issued are known when the other site is gone),
    then mark it on every reachable site."""
    log = get_run_logger()
    state = load_state(pair_name)
    if state.authority.site != cfg.name:
        if dry_run:
            state = state.with_authority(cfg.name, flow_run.get_id(), reason)
            log.info("DRY RUN: would record %s authoritative at epoch %d", cfg.name, state.authority.epoch)
        else:
            lastid, before = site(cfg).read_lastid(), state.authority
            state = update_state(pair_name, lambda s: s if s.authority.site == cfg.name
                                 else s.with_authority(cfg.name, flow_run.get_id(), reason, lastid=lastid))
            log.warning("authority: %s now holds epoch %d (%s)", cfg.name, state.authority.epoch, reason)
            if state.authority.epoch > before.epoch:
                authority_changed(pair_name, state.authority, before, flow_run.parameters.get("by"))
    else:
        log.info("authority: %s already holds epoch %d", cfg.name, state.authority.epoch)
    logged(site(cfg, dry_run).write_authority_marker(state.authority.marker()))
    for other in others:
        try:
            logged(site(other, dry_run).write_authority_marker(state.authority.marker()))
        except (RunnerError, OSError) as exc:
            log.warning("%s unreachable, its authority marker is stale until it is back: %s", other.name, exc)
    return state


@task(name="Start the ID server", task_run_name="start dbids on {cfg.name}", **STEP)
def activate_idserver(pair_name: str, cfg: SiteConfig, dry_run: bool = False) -> Outcome:
    """Start dbids only on the site that holds the current epoch and is not armed."""
    s = site(cfg, dry_run)
    if dry_run:  # a dry run has not recorded the epoch it would take
        return logged(s.ensure_idserver(cfg.idserver_address))
    return logged(s.start_idserver_for(load_state(pair_name).authority))


class FenceResult(BaseModel):
    reachable: bool
    stopped_pids: tuple[int, ...] = ()
    lastid: dict[str, int] = {}
    detail: str


@task(name="Fence a site", task_run_name="fence {cfg.name}", cache_policy=NO_CACHE, timeout_seconds=180)
def fence(cfg: SiteConfig, reason: str, dry_run: bool = False) -> FenceResult:
    """Arm the site and stop its dbids (including one started by hand), its db
    writers and its information systems, reporting the lastid its dbids
    reached so that no id it handed out is lost track of. An unreachable site is
    reported, not fatal: the health flow fences it as soon as it is back."""
    log = get_run_logger()
    try:
        fenced = site(cfg, dry_run).fence(reason)
    except (RunnerError, OSError) as exc:
        log.warning("cannot fence %s now (%s); the health flow fences it when it is back", cfg.name, exc)
        return FenceResult(reachable=False, detail=f"{cfg.name} unreachable, not fenced yet")
    for outcome in (fenced.armed, *fenced.stopped):
        logged(outcome)
    return FenceResult(reachable=True, stopped_pids=fenced.idserver_pids, lastid=fenced.lastid, detail=str(fenced))


@task(name="Disarm a site", task_run_name="disarm {cfg.name}", **STEP)
def disarm(cfg: SiteConfig, reason: str, dry_run: bool = False) -> Outcome:
    return logged(site(cfg, dry_run).set_armed(False, reason))

