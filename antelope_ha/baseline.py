"""The baseline of a site's old id problems, and which problems of a new id scan block.

Real databases hold old inconsistencies (the same wfid on two rows, a key with ids
but no lastid row). A check that refused on every problem would refuse forever on
one of them. So the pair's state record keeps, per site, the problems an id scan
found when the baseline was taken (at setup, by ``antelope-ha baseline``, and when
the site takes authority), each with when it was first seen. A later scan blocks
only on:

- a problem that is not in the baseline: a duplicated id not duplicated then, a
  key without a lastid row that had one, more rows without an id than then;
- a problem touching the ids issued during the outage (``outage``: per key, the
  ids BUS may have issued while authoritative): a duplicate among them, or a key
  without a lastid row that BUS issued;
- ``above_lastid`` and ``no_lastid``, old or not: the id server would hand out
  ids the database already holds (or cannot start), so they never become old.

The other problems are old: they are listed with when they were first seen, and
do not block. The scan report read here is the JSON of ``idscan ids``.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from antelope_ha.css30 import Problem
    from antelope_ha.idscan import IdReport

ALWAYS_BLOCKING = ("above_lastid", "no_lastid")


class KnownProblem(BaseModel):
    """One problem of a baseline (duplicates: the ids first seen duplicated together)."""

    key: str
    kind: str
    message: str
    first_seen: float
    count: int = 0
    ids: list[int] = Field(default_factory=list)

    def shown(self) -> str:
        return f"{self.message} (first seen {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(self.first_seen))})"


class Baseline(BaseModel):
    """A site's id problems when the baseline was taken."""

    taken_at: float
    reason: str
    problems: list[KnownProblem] = Field(default_factory=list)

    def duplicated(self, key: str) -> set[int]:
        """The duplicated ids listed (the smallest of each scan, see css30.LISTED)."""
        return {i for p in self.problems if p.key == key and p.kind == "duplicates" for i in p.ids}

    def duplicate_count(self, key: str) -> int:
        return sum(p.count for p in self.problems if p.key == key and p.kind == "duplicates")

    def has(self, key: str, kind: str) -> KnownProblem | None:
        return next((p for p in self.problems if p.key == key and p.kind == kind), None)


class Verdict(BaseModel):
    """What a scan's problems mean against the baseline: which block, which are old."""

    blocking: list[str] = Field(default_factory=list)
    old: list[str] = Field(default_factory=list)


def take(report: IdReport, before: Baseline | None, reason: str, now: float | None = None) -> Baseline:
    """The baseline of a scan report's problems; a problem already in ``before`` keeps
    when it was first seen."""
    now = time.time() if now is None else now
    problems: list[KnownProblem] = []
    for p in report.found:
        key, kind = p.key, p.kind
        if kind == "duplicates":  # the ids seen duplicated before keep their date, the others get now
            ids, carried = set(p.ids), 0
            for old in (q for q in (before.problems if before else []) if q.key == key and q.kind == kind):
                still = sorted(ids & set(old.ids))
                if still:
                    problems.append(old.model_copy(update={"ids": still, "count": len(still)}))
                    ids -= set(still)
                    carried += len(still)
            if p.count > carried:
                problems.append(KnownProblem(key=key, kind=kind, message=p.message, first_seen=now,
                                             count=p.count - carried, ids=sorted(ids)))
            continue
        known = before.has(key, kind) if before else None
        problems.append(KnownProblem(key=key, kind=kind, message=p.message, count=p.count,
                                     first_seen=known.first_seen if known else now))
    return Baseline(taken_at=now, reason=reason, problems=problems)


def judge(report: IdReport, baseline: Baseline | None,
          outage: Mapping[str, tuple[int, int]] | None = None) -> Verdict:
    """Sort a scan report's problems into blocking and old (module docstring). With no
    baseline every problem blocks."""
    verdict = Verdict()
    for p in report.found:
        why = _blocks(p, baseline, outage or {})
        if why:
            verdict.blocking.append(f"{p.message} [{why}]")
        else:
            assert baseline is not None
            first = min((q.first_seen for q in baseline.problems if q.key == p.key and q.kind == p.kind),
                        default=baseline.taken_at)
            verdict.old.append(KnownProblem(key=p.key, kind=p.kind, message=p.message,
                                            first_seen=first).shown())
    return verdict


def _blocks(p: Problem, baseline: Baseline | None, outage: Mapping[str, tuple[int, int]]) -> str | None:
    """Why this problem blocks, or None when it is old."""
    key, kind = p.key, p.kind
    if kind in ALWAYS_BLOCKING:
        return "the id server would issue ids already in the database"
    if baseline is None:
        return "no baseline of old problems on record for this site: antelope-ha baseline takes one"
    issued = outage.get(key)
    if kind == "duplicates":
        ids = set(p.ids)
        touched = sorted(i for i in ids if issued and issued[0] <= i <= issued[1])
        if touched:
            return f"ids issued during the outage used twice: {', '.join(map(str, touched[:10]))}"
        new = sorted(ids - baseline.duplicated(key))
        if new:
            return f"new since the baseline: {', '.join(map(str, new[:10]))}"
        if p.count > baseline.duplicate_count(key):
            return "more duplicated ids than in the baseline"
        return None
    known = baseline.has(key, kind)
    if known is None:
        return "new since the baseline"
    if kind == "not_in_lastid" and issued:
        return f"{key} ids were issued during the outage ({issued[0]}..{issued[1]})"
    if kind == "null_ids" and p.count > known.count:
        return f"{p.count - known.count} more rows without an id than in the baseline"
    return None


def outage_ids(started: Mapping[str, int] | None, handed_over: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Per key, the ids BUS may have issued while authoritative: above the lastid its
    dbids started from (recorded on its epoch when it took authority; 0 when the record
    holds none, which makes every id a possible one), up to the lastid BUS handed over."""
    return {k: ((started or {}).get(k, 0) + 1, last) for k, last in handed_over.items()
            if last > (started or {}).get(k, 0)}
