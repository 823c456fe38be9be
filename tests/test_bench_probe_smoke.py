"""The SSH probe benchmark runs end to end (figures are not checked here)."""
from bench import probe


def test_probe_bench_smoke() -> None:
    rows = probe.run(cycles=2)
    assert [row["figure"] for row in rows] == [
        "health cycle (4 probes), median", "health cycle (4 probes), p95", "one probe, median",
    ]
    for row in rows:
        assert set(row) == {"figure", "ms", "baseline", "baseline_ms", "ratio", "target", "met"}
    assert "figure" in probe.format_table(rows)
