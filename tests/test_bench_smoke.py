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
    assert len(answers) == 4  # awk and scan, on the clean and on the merged database
    for awk, scan in zip(answers[0::2], answers[1::2]):
        assert "awk" in awk["figure"] and "scan_ids" in scan["figure"]
        assert scan["answer"] == awk["answer"]
    merged = answers[-1]["answer"]
    assert all(stats[3] == 10 for stats in merged.values())  # the 10 duplicated rows of each table were found
