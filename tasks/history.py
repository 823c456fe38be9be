"""The pair's history as Prefect events, and reading it back.

Every change that matters is an ``antelope-ha.*`` event of the pair's resource,
naming who (``operator``), why (``reason``) and the epoch: health's decision
changes (tasks/health.py), a procedure's start (tasks/report.py record_start)
and end (``procedure_ended`` here, a flow hook), a new authority
(tasks/authority.py), every approval answer (tasks/approval.py), pause, resume
and acknowledgement (deployments/cli.py, flows/fallback.py). The watcher's
heartbeats are events of the pair too, and are left out of the history.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder, EventResourceFilter
from prefect.runtime import flow_run as this_run

from antelope_ha.names import PairNames
from antelope_ha.state import Authority
from tasks.state import current_epoch

PREFIX = "antelope-ha."
NOT_HISTORY = ["antelope-ha.watcher."]  # the heartbeats: one a minute, what metrics are for
PAGE = 50  # the most the events API gives in one page


def operator_event(pair_name: str, event: str, operator: str, **payload: str | int) -> None:
    """An ``antelope-ha.<event>`` event of the pair naming who acted, and the
    epoch when they did: the history of who did what (``antelope-ha history``)."""
    run = this_run.get_id()  # None for a person's command (pause, resume, ack)
    epoch = current_epoch(pair_name)
    emit_event(event=f"antelope-ha.{event}", resource=PairNames(pair_name).resource(),
               related=[{"prefect.resource.id": f"antelope-ha.operator.{operator}", "prefect.resource.role": "operator"}],
               payload={"operator": operator, **({"flow_run": str(run)} if run else {}),
                        **({"epoch": epoch} if epoch is not None else {}), **payload})


def who_started(by: str | None) -> str:
    """Who started a run: a person by the name they gave, or the automation."""
    return by.strip() if by and by.strip() else "not named (started by hand without by)"


def procedure_ended(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (on_completion, on_failure, on_crashed): the run's end, its
    outcome and what it said, as an event naming who started it."""
    params = flow_run.parameters
    if params.get("dry_run"):
        return
    said = state.message or ""
    if state.is_completed():
        result = state.result(raise_on_failure=False)
        said = result if isinstance(result, str) else said
    operator_event(params.get("pair_name", "default"), "procedure.ended", who_started(params.get("by")),
                   procedure=flow.name, outcome=state.name, reason=said[:1000], flow_run=str(flow_run.id))


def authority_changed(pair_name: str, new: Authority, before: Authority, by: str | None) -> None:
    """A new epoch, as an event: who started the run that took it, and why."""
    operator_event(pair_name, "authority.changed", who_started(by), site=new.site, epoch=new.epoch,
                   previous=f"{before.site} epoch {before.epoch}", reason=new.reason)


def read_history(pair_name: str, since: dt.datetime, until: dt.datetime | None = None) -> list[dict]:
    """The pair's ``antelope-ha.*`` events (no heartbeats) in the window, oldest
    first, as the API gives them (JSON)."""
    occurred = EventOccurredFilter(since=since, **({"until": until} if until else {}))
    query = EventFilter(occurred=occurred, order=EventOrder.ASC,
                        event=EventNameFilter(prefix=[PREFIX], exclude_prefix=NOT_HISTORY),
                        resource=EventResourceFilter(id=[PairNames(pair_name).resource_id]))
    found: list[dict] = []
    with get_client(sync_client=True) as client:
        page = client.read_events(query, limit=PAGE)
        while page is not None:
            found += [e.model_dump(mode="json") for e in page.events]
            page = page.get_next_page_sync(client)
    return found
