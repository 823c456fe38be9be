"""One reused connection per site per process, and one ``Site`` per flow run
(so a dry run's plan belongs to the run that made it)."""
from __future__ import annotations

import threading

from prefect.context import get_run_context
from prefect.exceptions import MissingContextError

from antelope_ha.config import SiteConfig
from antelope_ha.connect import make_runner
from antelope_ha.runner import CommandTimeout, ConnectionLost, HostUnreachable, Runner
from antelope_ha.site import Site

_lock = threading.RLock()
_runners: dict[str, Runner] = {}
_sites: dict[tuple[str, str, bool], Site] = {}


def runner_for(config: SiteConfig) -> Runner:
    key = config.model_dump_json()
    with _lock:
        if key not in _runners:
            _runners[key] = make_runner(config)
        return _runners[key]


def _flow_run_id() -> str:
    try:
        ctx = get_run_context()
    except MissingContextError:  # a task's .fn called directly, as tests and the CLI do
        return "outside a flow run"
    run = getattr(ctx, "flow_run", None) or getattr(getattr(ctx, "task_run", None), "flow_run_id", None)
    return str(getattr(run, "id", run))


def site(config: SiteConfig, dry_run: bool = False) -> Site:
    key = (_flow_run_id(), config.model_dump_json(), dry_run)
    with _lock:
        if key not in _sites:
            _sites[key] = Site(config, runner_for(config), dry_run=dry_run)
        return _sites[key]


def plans(flow_run_id: str) -> list:
    """Everything a dry run of this flow run would have changed, in order."""
    with _lock:
        return [p for (run, _, dry), s in _sites.items() if run == flow_run_id and dry for p in s.plan]


def close_all() -> None:
    with _lock:
        for r in _runners.values():
            r.close()
        _runners.clear()
        _sites.clear()


def retry_if_transient(task, task_run, state) -> bool:
    """Retry a step only when the host could not be reached or a command timed
    out, never after a failed check, and never when the connection dropped
    while a command ran (it may or may not have run)."""
    try:
        state.result()
    except ConnectionLost:
        return False
    except (HostUnreachable, CommandTimeout):
        return True
    except Exception:
        return False
    return False


__all__ = ["site", "plans", "runner_for", "close_all", "retry_if_transient", "Site"]
