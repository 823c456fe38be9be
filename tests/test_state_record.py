"""The pair's state record on the real test server: a health decision is
stored only on the record it was made on."""
from __future__ import annotations

import time

import pytest

from antelope_ha.state import Decision, HAState
from tasks.state import load_state, record_health, save_state

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def probed(seen: HAState) -> HAState:
    """What a health cycle decides from ``seen``: one more failure, a warning."""
    return seen.model_copy(update={"consecutive_failures": seen.consecutive_failures + 1}).record(
        Decision(at=time.time(), action="warn", reason="test: ms did not answer", code="ms_down"))


def test_a_decision_made_on_an_older_epoch_of_the_same_site_is_not_recorded():
    """While health probed, a failover and a fallback moved the record from ms
    epoch 1 to ms epoch 3: the site is the same, the epoch is not, and the
    decision is dropped. With the check comparing the site only, it was stored
    and record_health returned True: this test failed so, by hand, before the
    check was put back."""
    name = "stale-epoch"
    seen = HAState.initial("ms")
    save_state(name, seen)
    decided = probed(seen)
    assert record_health.fn(name, seen, decided)  # the record as seen: stored
    stored = load_state(name)
    assert stored.consecutive_failures == 1 and stored.decisions == decided.decisions

    seen = stored
    moved = seen.with_authority("bus", None, "test: failover").with_authority("ms", None, "test: fallback")
    save_state(name, moved)
    assert moved.authority.site == seen.authority.site and moved.authority.epoch == 3
    assert not record_health.fn(name, seen, probed(seen))
    assert load_state(name) == moved


def test_a_lock_dropped_by_an_operator_is_created_again_by_the_next_procedure():
    """docs/operating.md: a dead run's lock is released by deleting the pair's
    procedure limit. A process that created it before (the watcher, living for
    hours) must take it again, not fail: with the limit remembered as created,
    acquiring raised "must be created before acquiring slots"."""
    from prefect.client.orchestration import get_client

    from tasks.lock import held, lock_name

    name = lock_name("dropped-lock")
    with held(name, 5, 60):
        pass
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(name)
    with held(name, 5, 60):
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(name).active_slots == 1
