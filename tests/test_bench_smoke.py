"""The scan benchmark runs end to end on a small database (figures not checked)."""
from __future__ import annotations

import shutil

import pytest

from bench.scan import run


@pytest.mark.skipif(not (shutil.which("awk") and shutil.which("sort")), reason="needs awk and sort")
def test_scan_bench_smoke():
    rows = run(5, quick=True)
    assert rows and all(set(r) == {"figure", "value", "unit", "baseline", "ratio", "target", "met", "answer"}
                        for r in rows)
    answers = [r for r in rows if r["answer"] is not None]
    assert len(answers) == 10  # awk and scan, on the four orders and on the table merged twice
    orders = [a["figure"].split(":")[0] for a in answers[0::2]]
    assert orders == ["rising", "shuffled", "time-sorted", "merged", "merged twice, 10 duplicates"]
    for awk, scan in zip(answers[0::2], answers[1::2]):
        assert "awk" in awk["figure"] and "scan_ids" in scan["figure"]
        assert scan["answer"] == awk["answer"]
    merged = answers[-1]["answer"]
    assert all(stats[3] == 10 for stats in merged.values())  # the 10 duplicated rows of each table were found
    assert all(stats[3] == 0 for a in answers[:-2] for stats in a["answer"].values())


def test_inventory_bench_smoke():
    """The recovery check's benchmark lists exactly the outage's events (its last row says so)."""
    from bench.inventory import run as run_inventory

    rows = run_inventory(8, quick=True)
    assert [r["figure"].split(" ")[0] for r in rows] == ["read", "id", "inventory", "bounds", "inventory", "inventory"]
    assert rows[-1]["met"] is True and rows[-1]["value"] > 0, rows[-1]
