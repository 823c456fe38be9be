"""Read and write the pair's state record (a block, so every flow and worker
sees the same record, wherever MS is)."""
from __future__ import annotations

import time
from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from antelope_ha.state import Declined, HAState
from blocks.pair import PairState
from tasks.lock import ensure_limit, procedure_holder


def state_block_name(pair_name: str) -> str:
    return f"{pair_name}-state"


def load_state(pair_name: str, main_site: str) -> HAState:
    """The stored state, or the initial one (MS authoritative, epoch 1) when none
    was ever stored. Any other failure to read it is raised: a record that could
    not be read must never be replaced by epoch 1."""
    try:
        return PairState.load(state_block_name(pair_name)).state
    except ValueError as exc:
        if isinstance(exc.__cause__, ObjectNotFound):
            return HAState.initial(main_site)
        raise


def save_state(pair_name: str, state: HAState) -> None:
    PairState(state=state).save(state_block_name(pair_name), overwrite=True)


def update_state(pair_name: str, main_site: str, change: Callable[[HAState], HAState]) -> HAState:
    """Read, change and write the record under a mutex (a strict global
    concurrency limit of one), so that two flows changing it at once cannot
    undo each other's change. Returns what was stored."""
    name = f"antelope-ha-{pair_name}-state"
    ensure_limit(name)
    with concurrency(name, occupy=1, strict=True, timeout_seconds=60, lease_duration=60):
        current = load_state(pair_name, main_site)
        changed = change(current)
        if changed != current:
            save_state(pair_name, changed)
        return changed


@task(name="Read the pair state", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def read_state(pair_name: str, main_site: str) -> HAState:
    return load_state(pair_name, main_site)


@task(name="Record the health decision", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_health(pair_name: str, main_site: str, seen: HAState, decided: HAState) -> bool:
    """Store the health flow's counter and decisions on the record as it is now.

    Other flows write the record while a health run probes (replication, a
    failover taking authority); writing back the whole record read seconds ago
    would undo them. Nothing is stored, and False returned, while a failover or
    fallback holds the pair (it is changing the record), or when the
    authority, the pause, the hold-down acknowledgement, the fallback flag or
    the declined failover changed since ``seen``: the decision was made on a
    stale record.
    """
    if procedure_holder(pair_name):
        return False
    checked = ("pause", "hold_down_ack", "fallback_in_progress", "declined")

    def unchanged(current: HAState) -> bool:
        return current.authority.marker() == seen.authority.marker() and all(
            getattr(current, name) == getattr(seen, name) for name in checked)

    stored = update_state(pair_name, main_site, lambda current: current.model_copy(update={
        "consecutive_failures": decided.consecutive_failures, "decisions": decided.decisions,
        "declined": decided.declined})
        if unchanged(current) else current)
    return stored.decisions == decided.decisions


@task(name="Mark fallback in progress", task_run_name="fallback in progress: {value}",
      cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def set_fallback_in_progress(pair_name: str, main_site: str, value: bool, dry_run: bool = False) -> None:
    """While set, the health flow does not fence MS (its dbids is about to start)."""
    if not dry_run:
        update_state(pair_name, main_site, lambda s: s.model_copy(update={"fallback_in_progress": value}))


@task(name="Record a declined failover", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_declined(pair_name: str, main_site: str, what: str, dry_run: bool = False) -> None:
    """Health holds further failovers of this outage until a person acknowledges."""
    if not dry_run:
        update_state(pair_name, main_site, lambda s: s.model_copy(
            update={"declined": Declined(at=time.time(), what=what)}))


@task(name="Record the recovery", task_run_name="record the recovery of epochs up to {epoch}",
      cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_recovered(pair_name: str, main_site: str, epoch: int) -> None:
    """The outages up to the backup's ``epoch`` are verified: the next recovery
    looks at later ones (or, with none, checks this one again)."""
    update_state(pair_name, main_site, lambda s: s.model_copy(
        update={"recovered_through": max(s.recovered_through, epoch)}))
