"""The end-to-end modules run flows and setup against servers of their own.

Prefect keeps one events worker and one log worker per process, whichever API
they first sent to: one created while a module's server was current kept
sending there after it stopped, and the later tests' task runs, artifacts and
heartbeats never reached the session's server. Each module starts and ends
with fresh workers."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker


def fresh_workers() -> None:
    """Stop both workers (bounded: their server may be gone); the next event or log starts new ones."""
    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)


@pytest.fixture(scope="module", autouse=True)
def own_event_workers() -> Iterator[None]:
    fresh_workers()
    yield
    fresh_workers()
