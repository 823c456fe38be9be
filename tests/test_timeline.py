"""The history's timeline from the pair's events, as the events API returns them."""
import datetime as dt

import pytest

from antelope_ha.timeline import entry, lines, parse_since

NOW = dt.datetime(2026, 11, 30, 22, 0, tzinfo=dt.timezone.utc)


def event(name: str, **payload) -> dict:
    return {"occurred": "2026-11-30T21:00:05.250000Z", "event": f"antelope-ha.{name}", "payload": payload,
            "resource": {"prefect.resource.id": "antelope-ha.pair.p"}}


def test_since_takes_a_duration_or_an_iso_date_and_names_the_fix_otherwise():
    assert parse_since("30m", NOW) == NOW - dt.timedelta(minutes=30)
    assert parse_since("7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_since("2026-11-29", NOW) == dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
    assert parse_since("2026-11-29T10:00+01:00", NOW) == dt.datetime(2026, 11, 29, 9, tzinfo=dt.timezone.utc)
    with pytest.raises(ValueError, match=r"--since 'yesterday' is neither a duration \(30m, 12h, 7d\)"):
        parse_since("yesterday", NOW)


def test_each_kind_of_event_says_who_what_why_and_the_epoch():
    decision = entry(event("health.decision", action="failover", code="failover", reason="3/3 probes failed",
                           authority="ms", epoch=1))
    assert (decision.who, decision.what, decision.why, decision.epoch) == (
        "health (automation)", "health decided FAILOVER (failover)", "3/3 probes failed", 1)
    taken = entry(event("authority.changed", operator="automation", site="bus", epoch=2, previous="ms epoch 1",
                        reason="MS down", flow_run="f1"))
    assert (taken.what, taken.epoch, taken.flow_run) == ("bus authoritative, epoch 2 (was ms epoch 1)", 2, "f1")
    refused = entry(event("approval.refused", operator="eve", gate="fallback: hand back", site="ms",
                          reason="used code", why="wrong code", epoch="2"))
    assert (refused.who, refused.what, refused.epoch) == ("eve", "answer REFUSED (wrong code) at fallback: hand back "
                                                                 "(on ms)", 2)
    paused = entry(event("failover.paused", operator="ana", reason="disk swap"))
    assert (paused.what, paused.epoch) == ("automatic failover paused", None)
    assert lines([paused]) == ["2026-11-30 21:00:05  epoch ?  automatic failover paused", "    by ana: disk swap"]
