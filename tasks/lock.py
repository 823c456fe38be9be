"""One failover or fallback at a time across the pair.

A Prefect global concurrency limit (strict, so a missing limit is an error,
not a silent pass) held for the whole flow, approval pauses included. The
holder's run is written to a variable so that a refused request can say which
run is in progress.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.variables import Variable


class ProcedureInProgress(RuntimeError):
    """Another failover or fallback holds the pair."""


def lock_name(pair_name: str) -> str:
    return f"antelope-ha-{pair_name}-procedure"


def ensure_limit(pair_name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(lock_name(pair_name))
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=lock_name(pair_name), limit=1))


@contextmanager
def procedure_lock(pair_name: str, procedure: str, wait_s: float = 5.0) -> Iterator[None]:
    """Hold the pair for ``procedure``; refuse, naming the holder, if it is taken."""
    ensure_limit(pair_name)
    holder_var = f"{lock_name(pair_name)}-holder"
    held = ExitStack()
    try:
        held.enter_context(concurrency(lock_name(pair_name), occupy=1, strict=True,
                                       timeout_seconds=wait_s, lease_duration=60))
    except TimeoutError as exc:  # AcquireConcurrencySlotTimeoutError
        holder = Variable.get(holder_var, default="") or "another run"
        raise ProcedureInProgress(
            f"refused: {procedure} cannot start while {holder} is in progress on pair {pair_name}"
        ) from exc
    with held:
        Variable.set(holder_var, f"{procedure} run {flow_run.get_name()} ({flow_run.get_id()})",
                     overwrite=True)
        get_run_logger().info("holding the pair for %s", procedure)
        try:
            yield
        finally:
            Variable.set(holder_var, "", overwrite=True)
