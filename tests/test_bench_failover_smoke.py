"""The failover benchmark runs end to end, once each way (figures are not checked)."""
from __future__ import annotations

import pytest

from bench import failover

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_failover_bench_smoke() -> None:
    result = failover.run(repetitions=1)

    assert [r.mode for r in result.flow] == ["flow"] and [r.mode for r in result.bare] == ["bare"]
    for rep in (*result.flow, *result.bare):
        assert rep.bus_authoritative, rep
        assert rep.bus_answered and rep.crash_to_first_id_s is not None, rep
        assert rep.health_cycles >= failover.POLICY.failures_before_failover
        assert 0 < rep.commands_s <= rep.on_sites_s <= rep.failover_s
    flow = result.flow[0]
    assert flow.before_body_s is not None and flow.after_completed_s is not None
    assert "fence ms" in flow.step_s and "start dbids on bus" in flow.step_s

    rows = result.rows()
    assert all(set(row) == {"figure", "measured", "baseline", "ratio", "target", "met"} for row in rows)
    assert rows[0]["figure"].startswith("failover: MS ID server crash -> BUS hands out ids")
    assert [row["target"] for row in rows if row["target"]] == ["<= 4 s", "<= 3 s"]
    assert any("NOT measured here" in note for note in result.notes())
