"""Read and write the pair's state record (a block, so every flow and worker
sees the same record, wherever MS is)."""
from __future__ import annotations

import time
from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import BlockDocumentUpdate
from prefect.client.schemas.objects import BlockDocument
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError

from antelope_ha.names import PairNames
from antelope_ha.state import Declined, HAState, WatcherLease
from blocks.pair import PairState
from tasks.lock import held, procedure_holder
from tasks.pair import load_pair


def state_block_name(pair_name: str) -> str:
    return PairNames(pair_name).state_block


def load_state(pair_name: str, client: SyncPrefectClient | None = None) -> HAState:
    """The stored state, or the initial one (MS authoritative, epoch 1) when none
    was ever stored. Any other failure to read it is raised: a record that could
    not be read must never be replaced by epoch 1."""
    if client is None:
        with get_client(sync_client=True) as own:
            return load_state(pair_name, own)
    document = _read(pair_name, client)
    return _initial(pair_name) if document is None else _state(pair_name, document)


def _initial(pair_name: str) -> HAState:
    """The record of a pair that has none yet: its MS (named in the pair's block)
    authoritative at epoch 1."""
    return HAState.initial(load_pair(pair_name)[0].main.name)


def _state(pair_name: str, document: BlockDocument) -> HAState:
    try:
        return PairState.model_validate(document.data).state
    except ValidationError as exc:
        raise RuntimeError(f"the pair's state record {state_block_name(pair_name)} (Blocks > Antelope Pair State) "
                           f"failed validation, so nobody can tell who is authoritative: {exc}") from None


def _read(pair_name: str, client: SyncPrefectClient) -> BlockDocument | None:
    """The record's block document, or None. Read as a plain document, not with
    ``Block.load``: that emits a ``prefect.block...loaded`` event at every
    read, an event row in the server's database each time the watcher looks."""
    try:
        return client.read_block_document_by_name(state_block_name(pair_name), PairState.get_block_type_slug())
    except ObjectNotFound:
        return None


def current_epoch(pair_name: str) -> int | None:
    """The record's epoch now, for an event; None when it cannot be read (the
    event goes out without it rather than not at all)."""
    try:
        with get_client(sync_client=True) as client:
            document = _read(pair_name, client)
            return 1 if document is None else _state(pair_name, document).authority.epoch
    except Exception:  # the server is down, the record invalid: said by whoever reads it next
        return None


def save_state(pair_name: str, state: HAState) -> None:
    with get_client(sync_client=True) as client:
        _write(pair_name, state, _read(pair_name, client), client)


def _write(pair_name: str, state: HAState, document: BlockDocument | None, client: SyncPrefectClient) -> None:
    """One request when the record exists and this process has registered the
    block's schema once (``Block.save`` makes about seven every time)."""
    if document is None or PairState._block_schema_id is None:
        PairState(state=state).save(state_block_name(pair_name), overwrite=True)
        return
    client.update_block_document(document.id, BlockDocumentUpdate(
        block_schema_id=PairState._block_schema_id, data={"state": state.model_dump(mode="json")},
        merge_existing_data=False))


def update_state(pair_name: str, change: Callable[[HAState], HAState]) -> HAState:
    """Read, change and write the record under a mutex (a strict global
    concurrency limit of one), so that two flows changing it at once cannot
    undo each other's change. Returns what was stored."""
    with held(PairNames(pair_name).state_limit, 60, 60), get_client(sync_client=True) as client:
        document = _read(pair_name, client)
        current = _initial(pair_name) if document is None else _state(pair_name, document)
        changed = change(current)
        if changed != current:
            _write(pair_name, changed, document, client)
        return changed


@task(name="Read the pair state", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def read_state(pair_name: str) -> HAState:
    return load_state(pair_name)


@task(name="Record the health decision", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_health(pair_name: str, seen: HAState, decided: HAState) -> bool:
    """Store the health flow's counter and decisions on the record as it is now.

    Other flows and people write the record while health probes (a failover
    taking authority, a pause); writing back the whole record read seconds
    ago would undo them. Nothing is stored, and False returned, while a
    failover or fallback holds the pair (it is changing the record), or when
    the authority, the pause, the hold-down acknowledgement, the fallback
    flag, the declined failover, the watcher holding the lease or the
    decisions changed since ``seen``: the decision was made on a stale record
    (or by a watcher that has been replaced, or after another decision).
    """
    if procedure_holder(pair_name):
        return False
    checked = ("pause", "hold_down_ack", "fallback_in_progress", "declined", "watcher", "decisions")

    def unchanged(current: HAState) -> bool:
        return current.authority.marker() == seen.authority.marker() and all(
            getattr(current, name) == getattr(seen, name) for name in checked)

    stored = update_state(pair_name, lambda current: current.model_copy(update={
        "consecutive_failures": decided.consecutive_failures, "decisions": decided.decisions,
        "declined": decided.declined})
        if unchanged(current) else current)
    return stored.decisions == decided.decisions


@task(name="Mark fallback in progress", task_run_name="fallback in progress: {value}",
      cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def set_fallback_in_progress(pair_name: str, value: bool, dry_run: bool = False,
                             by: str | None = None) -> None:
    """While set, the health flow does not fence MS (its dbids is about to start);
    ``by`` approved its point of no return: a rerun asks the second gate of
    another person."""
    if not dry_run:
        update_state(pair_name, lambda s: s.model_copy(
            update={"fallback_in_progress": value, "fallback_approved_by": by if value else None}))


@task(name="Record a declined failover", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_declined(pair_name: str, what: str, dry_run: bool = False) -> None:
    """Health holds further failovers of this outage until a person acknowledges."""
    if not dry_run:
        update_state(pair_name, lambda s: s.model_copy(
            update={"declined": Declined(at=time.time(), what=what)}))


@task(name="Record the recovery", task_run_name="record the recovery of epochs up to {epoch}",
      cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_recovered(pair_name: str, epoch: int) -> None:
    """The outages up to the backup's ``epoch`` are verified: the next recovery
    looks at later ones (or, with none, checks this one again)."""
    update_state(pair_name, lambda s: s.model_copy(
        update={"recovered_through": max(s.recovered_through, epoch)}))


def take_watcher_lease(pair_name: str, run: str, now: float) -> HAState:
    """Make ``run`` the watcher that acts for the pair; the one it replaces sees
    this and stops."""
    return update_state(pair_name, lambda s: s.model_copy(
        update={"watcher": WatcherLease(run=run, since=now)}))


@task(name="Acknowledge the hold-down", task_run_name="acknowledge the hold-down: {by}",
      cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def acknowledge(pair_name: str, by: str, reason: str, dry_run: bool = False) -> None:
    """Let automatic failover happen again, saying who and why (a person with
    ``antelope-ha ack``, or the approvers of a completed fallback)."""
    if not dry_run:
        update_state(pair_name, lambda s: s.acknowledge(by, reason, time.time()))
