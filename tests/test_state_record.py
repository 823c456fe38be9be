"""The pair's state record on the real test server: a health decision is
stored only on the record it was made on."""
from __future__ import annotations

import time

import pytest

from prefect.client.orchestration import get_client

from antelope_ha.config import PairConfig
from antelope_ha.state import Decision, HAState
from tasks.pair import save_pair
from tasks.state import _read, load_state, record_health, save_state, update_state

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
    from tasks.lock import held, lock_name, release_dead_run_lock

    name = lock_name("dropped-lock")
    with held(name, 5, 60):
        pass
    release_dead_run_lock("dropped-lock")
    with held(name, 5, 60):
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(name).active_slots == 1


def test_a_pair_without_a_record_reads_as_its_own_main_site_at_epoch_1():
    """The first record comes from the pair's block: its main site, here named
    "centre" (not "ms"), authoritative at epoch 1; nothing is stored by reading."""
    site = dict(host="h.example.org", transport="local", rtexec_dir="/rt")
    save_pair("no-record-yet", PairConfig(main={**site, "name": "centre", "idserver_address": "c:2498"},
                                          backup={**site, "name": "backup", "idserver_address": "b:2498"},
                                          witness={"host": "w"}))
    first = load_state("no-record-yet")
    assert (first.authority.site, first.authority.epoch) == ("centre", 1)
    with get_client(sync_client=True) as client:
        assert _read("no-record-yet", client) is None
    stored = update_state("no-record-yet", lambda s: s.model_copy(update={"consecutive_failures": 2}))
    assert (stored.authority.site, stored.consecutive_failures) == ("centre", 2)
    assert load_state("no-record-yet") == stored
