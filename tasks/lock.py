"""One failover or fallback at a time across the pair.

A Prefect global concurrency limit (strict, so a missing limit is an error,
not a silent pass) held for the whole flow, approval pauses included. The
holder's run is written to a variable so that a refused request can say which
run is in progress.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager, ExitStack, contextmanager
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import (
    FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError  # raised for a missing limit
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from prefect.variables import Variable

from antelope_ha.names import PairNames

LEASE_S = 60  # the server's minimum; renewed in the background while the run lives, pauses included


class ProcedureInProgress(RuntimeError):
    """Another failover or fallback holds the pair."""


def lock_name(pair_name: str) -> str:
    return PairNames(pair_name).procedure_limit


_ensured: set[tuple[str, str]] = set()  # (API URL, limit name)


def ensure_limit(name: str) -> None:
    """Create the global concurrency limit ``name`` (one slot) if it is missing:
    acquired with strict=True, a missing limit is an error, not a free pass.
    Asked once per process (the watcher takes its record's limit often);
    ``held`` asks again when the limit was deleted since."""
    key = (str(PREFECT_API_URL.value()), name)
    if key in _ensured:
        return
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    _ensured.add(key)


@contextmanager
def held(name: str, timeout_s: float, lease_s: float) -> Iterator[None]:
    """The one slot of the limit ``name``, created first if missing. A limit
    deleted while this process lives (an operator dropping a dead run's lock,
    docs/operating.md) is created again, not reported as an error."""
    def slot() -> ContextManager[None]:
        return concurrency(name, occupy=1, strict=True, timeout_seconds=timeout_s, lease_duration=lease_s)

    ensure_limit(name)
    stack = ExitStack()
    try:
        stack.enter_context(slot())
    except ConcurrencySlotAcquisitionError:
        _ensured.discard((str(PREFECT_API_URL.value()), name))
        ensure_limit(name)
        stack.enter_context(slot())
    with stack:
        yield


def release_dead_run_lock(pair_name: str) -> None:
    """What an operator does once the run holding the pair is known dead (its
    lease would otherwise hold the pair for up to LEASE_S): drop the lock's
    limit, dead lease included; the next procedure creates it again."""
    with get_client(sync_client=True) as client:
        try:
            client.delete_global_concurrency_limit_by_name(lock_name(pair_name))
        except ObjectNotFound:
            pass


def holder_variable(pair_name: str) -> str:
    return PairNames(pair_name).holder_variable


_RUN_ID = re.compile(r"\(([0-9a-f-]{36})\)$")
_ACTIVE = {StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED}


def procedure_holder(pair_name: str) -> str:
    """The run holding the pair ("" when free): asking for another procedure now
    would be refused. A holder whose run is over (killed, crashed) holds nothing:
    its name stays in the variable because its process never reached ``finally``."""
    holder = Variable.get(holder_variable(pair_name), default="") or ""
    match = _RUN_ID.search(holder)
    if not match:
        return holder
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(match.group(1)))
        except ObjectNotFound:
            return ""
    return holder if run.state is not None and run.state.type in _ACTIVE else ""


@contextmanager
def procedure_lock(pair_name: str, procedure: str, wait_s: float = 5.0) -> Iterator[None]:
    """Hold the pair for ``procedure``; refuse, naming the holder, if it is taken."""
    holder_var = holder_variable(pair_name)
    slot = ExitStack()
    try:
        slot.enter_context(held(lock_name(pair_name), wait_s, LEASE_S))
    except TimeoutError as exc:  # AcquireConcurrencySlotTimeoutError
        holder = procedure_holder(pair_name) or f"another run (its lease ends within {LEASE_S} s if it died)"
        raise ProcedureInProgress(
            f"refused: {procedure} cannot start while {holder} is in progress on pair {pair_name}"
        ) from exc
    with slot:
        Variable.set(holder_var, f"{procedure} run {flow_run.get_name()} ({flow_run.get_id()})",
                     overwrite=True)
        get_run_logger().info("holding the pair for %s", procedure)
        try:
            yield
        finally:
            Variable.set(holder_var, "", overwrite=True)


def unfinished_runs(flow: str, pair_name: str) -> list[FlowRun]:
    """The runs of ``flow`` for this pair that are scheduled, starting, running or paused."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(_ACTIVE)))))
    return [run for run in runs if run.parameters.get("pair_name") == pair_name]


def failover_queued(pair_name: str) -> str:
    """A failover run of this pair that is scheduled, starting, running or paused
    ("" if none): the health flow does not ask for a second one."""
    for run in unfinished_runs("failover", pair_name):
        return f"failover run {run.name} ({run.id}, {run.state.name if run.state else '?'})"
    return ""
