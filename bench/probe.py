"""Health-cycle latency over SSH: one reused connection against a new one per probe.

A health cycle is four small probes of a site. The figure is a full cycle over
one reused ``SSHRunner`` connection; the baseline, measured in the same run
against the same real sshd on loopback, opens a new connection for every probe
(what a naive health check does). Target: a cycle under 100 ms when reused.

Run: ``python -m bench.probe [--cycles N]``.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

from antelope_ha.runner import CommandResult
from antelope_ha.ssh import SSHRunner
from simsite.sshd import start_sshd

PROBES: tuple[tuple[str, ...], ...] = (
    ("true",), ("cat", "/proc/loadavg"), ("test", "-e", "/tmp"), ("echo", "ok"),
)
CYCLE_TARGET_MS = 100.0
BASELINE = "new connection per probe"

Probe = Callable[[Sequence[str]], CommandResult]


def run(cycles: int = 50) -> list[dict[str, object]]:
    """Measure ``cycles`` health cycles each way; one row per figure."""
    with tempfile.TemporaryDirectory() as tmp, start_sshd(tmp) as sshd:
        kwargs = sshd.runner_kwargs()
        with SSHRunner(**kwargs) as runner:  # type: ignore[arg-type]
            runner.run(["true"]).check()  # connect; the first command on a connection is slower
            reused = [_cycle(runner.run) for _ in range(cycles)]

        def fresh(argv: Sequence[str]) -> CommandResult:
            with SSHRunner(**kwargs) as one_shot:  # type: ignore[arg-type]
                return one_shot.run(argv)

        new = [_cycle(fresh) for _ in range(cycles)]
    return [
        _row("health cycle (4 probes), median", statistics.median(reused), statistics.median(new),
             CYCLE_TARGET_MS),
        _row("health cycle (4 probes), p95", _p95(reused), _p95(new), CYCLE_TARGET_MS),
        _row("one probe, median", statistics.median(reused) / len(PROBES),
             statistics.median(new) / len(PROBES), None),
    ]


def _cycle(probe: Probe) -> float:
    """Milliseconds for one health cycle."""
    start = time.perf_counter()
    for argv in PROBES:
        probe(argv).check()
    return (time.perf_counter() - start) * 1000


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) > 1 else samples[0]


def _row(figure: str, ms: float, baseline_ms: float, target_ms: float | None) -> dict[str, object]:
    return {
        "figure": figure,
        "ms": round(ms, 2),
        "baseline": BASELINE,
        "baseline_ms": round(baseline_ms, 2),
        "ratio": round(baseline_ms / ms, 1),  # how many times faster than the baseline
        "target": f"< {target_ms:g} ms" if target_ms is not None else "",
        "met": ms < target_ms if target_ms is not None else None,
    }


def format_table(rows: list[dict[str, object]]) -> str:
    header = ("figure", "ms", "baseline_ms", "ratio", "target", "met")
    cells = [header] + [tuple("" if r[k] is None else str(r[k]) for k in header) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], f"baseline: {BASELINE}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    print(format_table(run(parser.parse_args().cycles)))


if __name__ == "__main__":
    main()
