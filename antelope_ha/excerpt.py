"""Excerpts that bring MS exactly what it lacks.

trexcerpt copies a time window (docs/antelope-facts.md). A window cannot say
"whole events, and only those MS lacks": the arrivals of an event that begins
in a gap reach past its end, and a window over a gap also holds arrivals of
events MS recorded itself. So the flow plans one window per run of lacking
units, wide enough for every timed row of each (origin, arrivals, waveform
segments), lets trexcerpt extract it, and narrows the excerpt to the rows of
the units the completeness rule names, each kept byte for byte. What
trexcerpt did not bring is found by the rule after the merge, and the next
round's windows are wider.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from antelope_ha.completeness import Lacking, Row, Verdict, line_digest, table_files
from antelope_ha.css30 import atomic_write

#: Windows closer than this (seconds) are extracted as one.
JOIN_S = 1.0
#: How much wider each round's windows are than the last one's, on each side (seconds).
WIDEN_S = 10.0


@dataclass
class ExcerptPlan:
    """One trexcerpt window and the rows of it MS must receive."""

    start: float
    end: float
    keep: dict[str, set[str]] = field(default_factory=dict)  # table -> digests of exact lines

    def keep_json(self) -> bytes:
        return json.dumps({t: sorted(d) for t, d in sorted(self.keep.items())}).encode()


def plan_excerpts(verdicts: Iterable[Verdict], round_: int = 0) -> tuple[list[ExcerptPlan], list[Lacking]]:
    """Windows covering every timed row of each unit with a row MS lacks
    (``round_`` times WIDEN_S wider on each side), joined where they overlap or
    nearly touch, each to be narrowed to those units' rows; and the lacking
    rows whose unit has no timed row (no window can bring them).

    A unit's rows MS already holds stay in the excerpt: trexcerpt joins an
    assoc to its arrival in the excerpt, and skips rows the database holds."""
    spans: list[tuple[float, float, list[Row]]] = []
    untimed: list[Lacking] = []
    for v in verdicts:
        for unit, rows in v.units.items():
            times = [r.time for r in rows if r.time is not None]
            if times:
                spans.append((min(times) - round_ * WIDEN_S, max(times) + round_ * WIDEN_S, rows))
            else:
                untimed += [m for m in v.missing if m.unit == unit]
    plans: list[ExcerptPlan] = []
    for lo, hi, rows in sorted(spans, key=lambda s: s[0]):
        start, end = math.floor(lo * 1000) / 1000, math.floor(hi * 1000) / 1000 + 0.002
        if plans and start <= plans[-1].end + JOIN_S:
            plans[-1].end = max(plans[-1].end, end)
        else:
            plans.append(ExcerptPlan(start, end))
        for r in rows:
            plans[-1].keep.setdefault(r.table, set()).add(r.digest)
    return plans, untimed


@dataclass(frozen=True)
class Narrowed:
    """What ``narrow`` did: rows kept and dropped per table, and the digests
    asked for that the excerpt did not hold."""

    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    absent: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kept": self.kept, "dropped": self.dropped, "absent": self.absent}

    @classmethod
    def from_json(cls, raw: Mapping) -> Narrowed:
        return cls(dict(raw["kept"]), dict(raw["dropped"]), {t: list(d) for t, d in raw["absent"].items()})

    def summary(self) -> str:
        text = f"kept {sum(self.kept.values())} rows, dropped {sum(self.dropped.values())}"
        return text + (f"; not in the excerpt: {({t: len(d) for t, d in self.absent.items()})}" if self.absent else "")


def narrow(excerpt: str | os.PathLike[str], keep: Mapping[str, Iterable[str]]) -> Narrowed:
    """Keep in each table of the excerpt database only the lines whose digest
    ``keep`` lists for it, byte for byte."""
    wanted = {t: set(d) for t, d in keep.items()}
    done = Narrowed()
    files, _ = table_files(excerpt)
    for table, path in files:
        digests = wanted.get(table, set())
        lines = path.read_bytes().splitlines(keepends=True)
        kept = [line for line in lines if line_digest(line.rstrip(b"\n")) in digests]
        if len(kept) != len(lines):
            atomic_write(path, b"".join(kept))
        done.kept[table], done.dropped[table] = len(kept), len(lines) - len(kept)
        digests -= {line_digest(line.rstrip(b"\n")) for line in kept}
    done.absent.update({table: sorted(digests) for table, digests in wanted.items() if digests})
    return done


def read_keep(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    return json.loads(Path(path).read_text())
