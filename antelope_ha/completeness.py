"""Nothing lost: the completeness rule of a recovery, read from the CSS3.0
files of both sites, independently of the code that moved the rows.

After the recovery of an outage of MS, every row BUS holds is on MS, byte for
byte, if it belongs to a *unit* that

  (a) carries an id BUS's dbids issued during its authority (any id field, so
      a row referencing such a row counts too), unless MS recorded that unit's
      moment itself; or
  (c) has a moment inside one of MS's gaps;

and no row on MS references (by an event id) a row MS lacks that BUS holds
(a reference to a row neither site holds is reported apart, each row named:
the half of a packet a writer was writing when it was killed or its site lost
power, which it wrote again whole when it restarted, or an older
inconsistency; real databases carry them, and no recovery can mend them); no id
names two different rows (two on MS, or one on each site); and, from the
whole-database scan, no id is above MS's lastid.

A *unit* is what must travel whole: rows joined by the ids that make an event
(orid, evid, arid, magid, commid, ...; not the station keys chanid and inid,
which would join everything recorded on a channel). An origin brings its
event, assocs, netmags and, through the assocs, its arrivals; an arrival
brings its assocs and their origins.

A unit's *moments* are the times of its origins, or, without an origin, the
times of its timed rows (an unassociated arrival, a waveform segment).

*MS recorded a moment* when one of MS's own rows covers it: a waveform segment
(``time`` up to half a sample after ``endtime``) or an origin at that very
time. Rows MS holds as exact copies of BUS's rows are merged rows, not MS's
own recording: they never cover a moment, so a rerun after a merge still
sees, and checks, the same gaps. Both sites' writers process the same ORB
packets, so MS's own rows of a moment it recorded have the same times as
BUS's; its own event of that moment makes BUS's copy redundant (merging it
would make the same event twice).

*MS's gaps* are the moments of BUS's rows, between MS's last recorded moment
before the outage and its first after it, that MS did not record: one run of
them per outage or power cycle of MS.

The work is split so that each site reads its own files: ``take_inventory``
runs on the site (the site tool's ``inventory``) and lists the
rows in scope (those timed in the window, those carrying an id of the given
ranges, and every row of their units), each with a digest of its exact line;
``judge`` compares the two lists. Outages are small; the databases need not
be: an inventory reads each table a few times but keeps only the rows in scope.
"""
from __future__ import annotations

import hashlib
import os
import time
import typing
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from antelope_ha.css30 import ID_KEYS, ID_OWNER, REPEATS_IN_OWNER, TABLES, Table, TableFormatError, length_message

#: Every table whose layout is known; the others are listed as not checked.
TABLES_CHECKED: tuple[str, ...] = tuple(t for t in TABLES if t != "lastid")
#: Keys of stations and instruments: shared by everything recorded on a channel, never a unit's join.
STATIC_KEYS = frozenset({"chanid", "inid"})
#: The tables whose rows say a site was recording at their time.
RECORDING = ("origin", "wfdisc")
#: Two origins this close (seconds) are the same moment: times are printed with 5 decimals.
SAME_TIME_S = 1e-6
NULL_TIME = -9999999999.999

# Aliases are evaluated at import: typing's generics where Python 3.8 (the site tool's oldest) needs them.
IdRanges = typing.Mapping[str, typing.Tuple[int, int]]  # key -> (first, last) id issued, both included


def line_digest(line: bytes) -> str:
    """The digest of a record's exact bytes (without its newline)."""
    return hashlib.blake2b(line, digest_size=16).hexdigest()


# ------------------------------------------------------------------ rows on a site


@dataclass(frozen=True)
class Row:
    """One record of a table in scope, as an inventory lists it."""

    table: str
    line: int  # 1-based line number in its file
    digest: str
    time: float | None  # the record's own time, for a table with a ``time`` field
    until: float | None  # end of the interval a waveform segment covers
    ids: tuple[tuple[str, int], ...]  # (field, value) of every id field that is set

    def keys(self) -> Iterator[tuple[str, str, int]]:
        """(key, field, value) of each id the row holds."""
        for name, value in self.ids:
            yield _FIELD_KEY[self.table][name], name, value

    def links(self) -> Iterator[tuple[str, int]]:
        return ((k, v) for k, _, v in self.keys() if k not in STATIC_KEYS)

    def owned(self) -> tuple[str, int] | None:
        """The id this row defines, if its table owns a key."""
        key = _OWNED_KEY.get(self.table)
        return next(((key, v) for name, v in self.ids if name == key), None) if key else None

    def name(self) -> str:
        """How an operator finds the row: its table and ids (or its line)."""
        shown = [f"{n} {v}" for n, v in self.ids if _FIELD_KEY[self.table][n] not in STATIC_KEYS]
        return f"{self.table} {' '.join(shown)}" if shown else f"{self.table} line {self.line}"

    def to_json(self) -> list:
        return [self.table, self.line, self.digest, self.time, self.until, [list(i) for i in self.ids]]

    @classmethod
    def from_json(cls, raw: list) -> Row:
        table, line, digest, time, until, ids = raw
        return cls(table, line, digest, time, until, tuple((str(n), int(v)) for n, v in ids))


_FIELD_KEY: dict[str, dict[str, str]] = defaultdict(dict)
for _key, _places in ID_KEYS.items():
    for _table, _field in _places:
        _FIELD_KEY[_table][_field] = _key
_OWNED_KEY: dict[str, str] = {table: key for key, table in ID_OWNER.items()}


@dataclass(frozen=True)
class Inventory:
    """The rows of one site's database in scope of a check."""

    db: str
    start: float
    end: float
    rows: tuple[Row, ...]
    unchecked: tuple[str, ...] = ()  # table files of the database whose layout is not known

    def to_json(self) -> dict:
        return {"db": self.db, "start": self.start, "end": self.end, "unchecked": list(self.unchecked),
                "rows": [r.to_json() for r in self.rows]}

    @classmethod
    def from_json(cls, raw: dict) -> Inventory:
        return cls(raw["db"], raw["start"], raw["end"], tuple(Row.from_json(r) for r in raw["rows"]),
                   tuple(raw.get("unchecked", ())))


class _Layout:
    """Where the fields the check reads sit in one table's records."""

    def __init__(self, table: Table):
        self.table = table
        self.length = table.record_length
        names = {f.name for f in table.fields}
        span = lambda n: (table.offset(n), table.offset(n) + table.field(n).width)  # noqa: E731
        self.ids = sorted(((n, *span(n)) for n in _FIELD_KEY[table.name] if n in names), key=lambda f: f[1])
        self.time = span("time") if "time" in names else None
        self.until = (span("endtime"), span("samprate")) if {"endtime", "samprate"} <= names else None


def _number(raw: bytes, kind: type, layout: _Layout, name: str, path: Path, lineno: int) -> int | float:
    try:
        return kind(raw)
    except ValueError:
        raise TableFormatError(path, lineno, f"{layout.table.name}.{name} is {raw.decode('latin-1').strip()!r}, "
                                             f"not a number: correct the record") from None


#: Bytes of whole records read at a time: large enough to amortise the reads, small enough to stay in cache.
_BLOCK = 1 << 20


class _Wanted:
    """Id values an inventory looks for: as numbers, and as a well-formed column prints them."""

    def __init__(self, values: Iterable[int]):
        self.values = frozenset(v for v in values if v > 0)
        self.printed = frozenset(b"%d" % v for v in self.values)


class _TableFile:
    """One table file, read in blocks of whole records; a field is read as a
    column of a block, and a record is parsed whole only when it is in scope."""

    def __init__(self, table: str, path: Path):
        self.name, self.path = table, path
        self.layout = _Layout(TABLES[table])
        self.checked = 0  # records known to be whole lines
        self.count = self._whole_records()

    def _whole_records(self) -> int:
        """How many records the check reads: those in the file as it starts. A writer
        may append more meanwhile; a record it was writing then is read once whole."""
        for _ in range(3):
            count, tail = divmod(self.path.stat().st_size, self.layout.length)
            if not tail:
                return count
            self._raise_at_cut_line()
            time.sleep(0.01)
        raise TableFormatError(self.path, None, "the file keeps ending in the middle of a record: check again")

    def blocks(self) -> Iterator[tuple[int, bytes, int]]:
        """(line number of the first record, the records, how many) of each block."""
        L = self.layout.length
        per = max(1, _BLOCK // L)
        first = 1
        with open(self.path, "rb") as f:
            while first <= self.count:
                n = min(per, self.count - first + 1)
                buf = f.read(n * L)
                if len(buf) != n * L:
                    raise TableFormatError(self.path, None, "the file shrank while it was read; check again")
                if first + n - 1 > self.checked:
                    if buf.count(b"\n") != n or buf[L - 1::L].count(b"\n") != n:
                        self._raise_at_cut_line()
                        raise TableFormatError(self.path, None, "the file changed while it was read; check again")
                    self.checked = first + n - 1
                yield first, buf, n
                first += n

    def _raise_at_cut_line(self) -> None:
        """Raise the error naming the first record that is not a whole line of the table's length, if any."""
        L = self.layout.length
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if len(raw) != L or not raw.endswith(b"\n"):
                    raise TableFormatError(self.path, lineno,
                                           length_message(self.layout.table, len(raw) - raw.endswith(b"\n")))

    def _packed(self, buf: bytes, n: int, span: tuple[int, int]) -> bytes:
        """The field of the block's n records, each with the separator after it, gathered one
        byte position at a time (strided copies): a well-formed column splits into n words."""
        (a, b), L = span, self.layout.length
        w = b - a + 1
        packed = bytearray(n * w)
        for k in range(w):
            packed[k::w] = buf[a + k:n * L:L]
        return bytes(packed)

    def column(self, buf: bytes, n: int, span: tuple[int, int], kind: type, name: str, first: int,
               packed: bytes | None = None) -> list:
        """One numeric field of the block's n records."""
        words = (packed or self._packed(buf, n, span)).split()
        try:
            if len(words) == n:
                return list(map(kind, words))
        except ValueError:
            pass
        (a, b), L = span, self.layout.length
        for j in range(n):
            _number(buf[j * L + a:j * L + b], kind, self.layout, name, self.path, first + j)
        return [kind(buf[i:i + b - a]) for i in range(a, n * L, L)]

    def times(self, buf: bytes, n: int, first: int) -> list[float]:
        assert self.layout.time is not None
        return self.column(buf, n, self.layout.time, float, "time", first)

    def holding(self, buf: bytes, n: int, span: tuple[int, int], name: str, first: int,
                wanted: _Wanted) -> list[int]:
        """The records of the block whose id field holds one of the wanted values.

        Where every id of the column is printed plainly (digits only, no sign, no leading
        zero), the printed ids are looked up as they are, without converting each to a number."""
        packed = self._packed(buf, n, span)
        if not packed.translate(None, b"0123456789 \n") and b" 0" not in packed and packed[:1] != b"0":
            words = packed.split()
            if len(words) == n:
                if wanted.printed.isdisjoint(words):
                    return []
                return [j for j, word in enumerate(words) if word in wanted.printed]
        values = self.column(buf, n, span, int, name, first, packed)
        return [j for j, v in enumerate(values) if v in wanted.values]

    def row(self, buf: bytes, j: int, first: int) -> Row:
        """Record j of the block, parsed whole: its ids, times and digest."""
        layout, lineno = self.layout, first + j
        raw = buf[j * layout.length:(j + 1) * layout.length - 1]
        ids = tuple((n, v) for n, a, b in layout.ids
                    if (v := _number(raw[a:b], int, layout, n, self.path, lineno)) > 0)
        when = until = None
        if layout.time:
            t = _number(raw[slice(*layout.time)], float, layout, "time", self.path, lineno)
            when = None if t <= NULL_TIME else t
        if layout.until and when is not None:
            (ea, eb), (sa, sb) = layout.until
            end = _number(raw[ea:eb], float, layout, "endtime", self.path, lineno)
            rate = _number(raw[sa:sb], float, layout, "samprate", self.path, lineno)
            until = end + 0.5 / rate if rate > 0 and end >= when else when
        return Row(self.name, lineno, line_digest(raw), when, until, ids)


def table_files(db: str | os.PathLike[str]) -> tuple[list[tuple[str, Path]], list[str]]:
    """The checked tables present beside the descriptor, and the other table files."""
    db = Path(db)
    found, unknown = [], []
    for path in sorted(db.parent.glob(f"{db.name}.*")):
        table = path.name[len(db.name) + 1:]
        if table in TABLES_CHECKED:
            found.append((table, path))
        elif table != "lastid" and "." not in table and path.is_file():
            unknown.append(table)
    return found, unknown


def issued(ids: Iterable[tuple[str, str, int]], ranges: IdRanges) -> bool:
    for key, _, value in ids:
        r = ranges.get(key)
        if r is not None and r[0] <= value <= r[1]:
            return True
    return False


#: The most ids of one key an inventory looks up as a set (a few MB); a longer range is compared.
MAX_ID_SET = 100_000


def _within(column: list, lo: float, hi: float) -> list[int]:
    """The indexes of the values in [lo, hi] (most blocks hold none: ``min``/``max`` tell)."""
    if not column or max(column) < lo or min(column) > hi:
        return []
    return [j for j, v in enumerate(column) if lo <= v <= hi]


def take_inventory(db: str | os.PathLike[str], start: float, end: float, ranges: IdRanges) -> Inventory:
    """The rows of ``db`` in scope: timed in [start, end], or carrying an id of
    ``ranges``, and every row of their units.

    The units are found a link at a time: each pass reads, in every table, the
    id columns of the keys the previous pass brought in, until no row joins.
    Only the columns a pass needs are read, and only rows in scope are parsed
    whole: an inventory costs a few reads of the tables, not a parse of every row."""
    files, unknown = table_files(db)
    tables = [_TableFile(t, p) for t, p in files]
    inside: dict[tuple[str, int], Row] = {}

    def take(tf: _TableFile, buf: bytes, first: int, hits: Iterable[int]) -> list[Row]:
        rows = []
        for j in sorted(set(hits)):
            if (tf.name, first + j) not in inside:
                row = inside[(tf.name, first + j)] = tf.row(buf, j, first)
                rows.append(row)
        return rows

    # An outage's ids are looked up as sets, as the links are; a range too long for a set is compared.
    sets = {key: _Wanted(range(lo, hi + 1)) for key, (lo, hi) in ranges.items() if hi - lo < MAX_ID_SET}
    added: list[Row] = []
    for tf in tables:
        ranged = [(n, (a, b), ranges[key], sets.get(key)) for n, a, b in tf.layout.ids
                  if (key := _FIELD_KEY[tf.name][n]) in ranges]
        if not (tf.layout.time or ranged):
            continue
        for first, buf, n in tf.blocks():
            hits: list[int] = []
            if tf.layout.time:
                times = tf.times(buf, n, first)
                hits += [j for j in _within(times, start, end) if times[j] > NULL_TIME]
            for name, span, (lo, hi), these in ranged:
                if these is not None:
                    hits += tf.holding(buf, n, span, name, first, these)
                else:
                    hits += _within(tf.column(buf, n, span, int, name, first), max(lo, 1), hi)
            added += take(tf, buf, first, hits)
    wanted: set[tuple[str, int]] = set()
    while new := {link for r in added for link in r.links()} - wanted:
        wanted |= new
        by_key: dict[str, set[int]] = defaultdict(set)
        for key, value in new:
            by_key[key].add(value)
        values = {key: _Wanted(these) for key, these in by_key.items()}
        added = []
        for tf in tables:
            fields = [(n, (a, b), values[key]) for n, a, b in tf.layout.ids
                      if (key := _FIELD_KEY[tf.name][n]) in values]
            if not fields:
                continue
            for first, buf, n in tf.blocks():
                hits = [j for name, span, these in fields for j in tf.holding(buf, n, span, name, first, these)]
                added += take(tf, buf, first, hits)
    return Inventory(os.fspath(db), start, end, tuple(sorted(inside.values(), key=lambda r: (r.table, r.line))),
                     tuple(unknown))


@dataclass(frozen=True)
class Coverage:
    """MS's last recorded moment before an outage and its first after it (None
    where it has none): the outage's window lies between the two."""

    start: float | None
    end: float | None

    def to_json(self) -> dict[str, float | None]:
        return {"start": self.start, "end": self.end}

    @classmethod
    def from_json(cls, raw: Mapping[str, float | None]) -> Coverage:
        return cls(raw["start"], raw["end"])


def coverage_bounds(db: str | os.PathLike[str], before: float, after: float) -> Coverage:
    """MS's last recorded moment (origin or waveform segment) before ``before``,
    and its first after ``after``."""
    last = first = None
    files, _ = table_files(db)
    for table, path in files:
        if table not in RECORDING:
            continue
        tf = _TableFile(table, path)
        for at, buf, n in tf.blocks():
            times = [t for t in tf.times(buf, n, at) if t > NULL_TIME]
            early = [t for t in times if t < before]
            late = [t for t in times if t > after]
            if early and (last is None or max(early) > last):
                last = max(early)
            if late and (first is None or min(late) < first):
                first = min(late)
    return Coverage(last, first)


# ------------------------------------------------------------------ outages on the record


@dataclass(frozen=True)
class Outage:
    """One stretch of the backup's authority, from the state record."""

    epoch: int  # the backup's epoch
    since: float  # when the backup took authority
    until: float  # when the main site took it back
    ids: dict[str, tuple[int, int]] | None  # what the backup's dbids issued; None: not on the record




# ------------------------------------------------------------------ the rule


@dataclass(frozen=True)
class Gap:
    """A run of moments BUS recorded and MS did not."""

    start: float
    end: float
    moments: int


@dataclass(frozen=True)
class Lacking:
    """A row BUS holds that MS must hold and does not (or holds otherwise)."""

    row: Row
    unit: int
    differs: bool  # MS holds a row with its id, with other bytes

    def __str__(self) -> str:
        return f"{self.row.name()}{' (MS holds its id with other bytes)' if self.differs else ''}"


@dataclass
class Verdict:
    """What the rule found for one outage (or one window given by hand)."""

    window: tuple[float, float]
    gaps: list[Gap] = field(default_factory=list)
    required: dict[str, int] = field(default_factory=dict)  # per table: rows BUS holds that MS must hold
    present: dict[str, int] = field(default_factory=dict)  # per table: of those, on MS byte for byte
    missing: list[Lacking] = field(default_factory=list)
    units: dict[int, list[Row]] = field(default_factory=dict)  # every row of each unit with a row missing
    orphans: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.orphans or self.twice)

    def missing_by_table(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for m in self.missing:
            out[m.row.table] += 1
        return dict(out)

    def problems(self) -> list[str]:
        """The findings in plain words: per table, what is missing and which ids."""
        out = []
        by_table: dict[str, list[Lacking]] = defaultdict(list)
        for m in self.missing:
            by_table[m.row.table].append(m)
        for table, rows in sorted(by_table.items()):
            out.append(f"{len(rows)} {table} rows missing on MS: {listing(rows)}")
        for what, items in (("rows referencing a row it lacks (orphans)", self.orphans),
                            ("ids naming two different rows", self.twice)):
            if items:
                out.append(f"{len(items)} {what} on MS: {listing(items)}")
        return out


def listing(items: typing.Sequence[object], first: int = 10) -> str:
    """The first items of a finding, and how many more there are."""
    more = f", ... ({len(items) - first} more)" if len(items) > first else ""
    return "; ".join(map(str, items[:first])) + more


class _Units:
    """Union-find of rows joined by event ids."""

    def __init__(self, rows: list[Row]):
        self.parent = list(range(len(rows)))
        by_link: dict[tuple[str, int], int] = {}
        for i, row in enumerate(rows):
            for link in row.links():
                j = by_link.setdefault(link, i)
                self.union(i, j)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


class _Coverage:
    """The moments a site's own rows recorded: waveform intervals and origin times."""

    def __init__(self, rows: Iterable[Row]):
        spans = sorted((r.time - SAME_TIME_S, (r.until or r.time) + SAME_TIME_S if r.table == "origin" else r.until)
                       for r in rows if r.time is not None and (r.table == "origin" or r.until is not None))
        merged: list[list[float]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]

    def covers(self, t: float) -> bool:
        i = bisect_right(self.starts, t) - 1
        return i >= 0 and t < self.ends[i]


def moments(rows: Iterable[Row]) -> list[float]:
    """The unit's origin times, or without an origin the times of its timed rows."""
    rows = list(rows)
    origins = [r.time for r in rows if r.table == "origin" and r.time is not None]
    return origins or [r.time for r in rows if r.time is not None]


class NoCommonPoint(LookupError):
    """MS recorded nothing of its own in the inventories before the outage began."""


def judge(bus: Inventory, ms: Inventory, since: float, ranges: IdRanges,
          given: tuple[float, float] | None = None) -> Verdict:
    """Apply the rule to the two sites' inventories of one outage.

    ``since`` is when BUS took authority: the gaps run from MS's last recorded
    moment before it (the last common point) to the end of the inventories
    (MS's first moment after it took authority back). ``ranges`` are the ids
    BUS's dbids issued. With ``given`` (a window an operator chose), every unit
    of BUS with a moment in it is required, recorded by MS or not, and no id
    range is used. Raises NoCommonPoint when the inventories begin too late to
    show the last common point.
    """
    bus_digests = {(r.table, r.digest) for r in bus.rows}
    ms_digests = {(r.table, r.digest) for r in ms.rows}
    mine = [r for r in ms.rows if (r.table, r.digest) not in bus_digests]
    own = _Coverage(mine)
    if given:
        lo, hi = given
    else:
        before = [r.time for r in mine if r.table in RECORDING and r.time is not None and r.time < since]
        if not before:
            raise NoCommonPoint(f"MS recorded nothing of its own between {ms.start:.3f} and {since:.3f}")
        lo, hi = max(before), bus.end
    verdict = Verdict((lo, hi))
    for name, inv in (("BUS", bus), ("MS", ms)):
        if inv.unchecked:
            verdict.notes.append(f"{name}: tables without a known layout, not checked: {', '.join(inv.unchecked)}")

    def lacks(t: float) -> bool:
        """Is ``t`` a moment of MS's gaps?"""
        return lo <= t <= hi and (bool(given) or not own.covers(t))

    # MS's gaps: runs of BUS's recorded moments (origins, waveform segments) MS did not record.
    run: list[float] = []
    for t in sorted({r.time for r in bus.rows if r.table in RECORDING and r.time is not None and lo <= r.time <= hi}):
        if lacks(t):
            run.append(t)
        elif run:
            verdict.gaps.append(Gap(run[0], run[-1], len(run)))
            run = []
    if run:
        verdict.gaps.append(Gap(run[0], run[-1], len(run)))

    rows = list(bus.rows)
    units = _Units(rows)
    members: dict[int, list[Row]] = defaultdict(list)
    for i, row in enumerate(rows):
        members[units.find(i)].append(row)
    ms_owned: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for r in ms.rows:
        if (key := r.owned()) is not None:
            ms_owned[key].append(r)
    for unit, unit_rows in members.items():
        times = moments(unit_rows)
        in_gap = any(lacks(t) for t in times)
        by_id = not given and any(issued(r.keys(), ranges) for r in unit_rows) and (
            not times or not all(own.covers(t) for t in times))
        if not (in_gap or by_id):
            continue
        for r in unit_rows:
            verdict.required[r.table] = verdict.required.get(r.table, 0) + 1
            if (r.table, r.digest) in ms_digests:
                verdict.present[r.table] = verdict.present.get(r.table, 0) + 1
                continue
            key = r.owned()
            verdict.missing.append(Lacking(r, unit, bool(key and ms_owned.get(key))))
            verdict.units[unit] = unit_rows

    # No row on MS references a row MS lacks that BUS holds. A reference to a row neither site
    # holds (MS's own, or one BUS holds the same way) is not the recovery's: named apart.
    bus_owned = {key: r for r in bus.rows if (key := r.owned()) is not None}
    dangling = []
    for r in ms.rows:
        for key, name, value in r.keys():
            if key in STATIC_KEYS or ID_OWNER.get(key) in (r.table, None) or ID_OWNER[key] not in TABLES_CHECKED:
                continue
            if ms_owned.get((key, value)):
                continue
            found = f"{r.name()}: {name} {value} has no {ID_OWNER[key]} row"
            (verdict.orphans if (key, value) in bus_owned else dangling).append(found)
    if dangling:
        verdict.notes.append(f"{len(dangling)} references on MS to rows neither site holds, not the recovery's "
                             "to mend (the half of a packet a writer was writing when it was killed or MS lost "
                             "power, written again whole when it restarted; or an older inconsistency): "
                             + listing(dangling))
    # No id names two rows.
    for (key, value), owners in ms_owned.items():
        if len(owners) > 1 and key not in REPEATS_IN_OWNER:
            verdict.twice.append(f"{key} {value}: {len(owners)} {ID_OWNER[key]} rows")
    for key, theirs in bus_owned.items():
        if key[0] not in REPEATS_IN_OWNER and any(r.digest != theirs.digest for r in ms_owned.get(key, ())):
            verdict.twice.append(f"{key[0]} {key[1]}: one {theirs.table} row on BUS, another on MS")
    return verdict


def reach(bus: Inventory, ranges: IdRanges) -> dict[str, tuple[int, int]]:
    """Per event key, the span of the ids in BUS's inventory, widened to the
    issued ``ranges``: MS's inventory must list every row MS holds with one of
    them, also one whose unit MS holds only in part (a merge cut short left an
    origin's origerr without the origin), which no time or link of MS's reaches."""
    span: dict[str, tuple[int, int]] = dict(ranges)
    for r in bus.rows:
        for key, value in r.links():
            lo, hi = span.get(key, (value, value))
            span[key] = (min(lo, value), max(hi, value))
    return span


def issued_hull(bus: Inventory, ranges: IdRanges) -> tuple[float, float]:
    """BUS's inventory window, widened to the moments of its rows carrying an
    issued id: MS's inventory must show whether MS recorded those moments."""
    lo, hi = bus.start, bus.end
    for r in bus.rows:
        if r.time is not None and issued(r.keys(), ranges):
            lo, hi = min(lo, r.time), max(hi, r.until or r.time)
    return lo, hi


Inventorist = typing.Callable[[float, float, IdRanges], Inventory]  # (start, end, ranges) -> a site's inventory

#: How far before the outage the inventories first reach, and the most they reach back.
LOOKBACK_S = 120.0
MAX_LOOKBACK_S = 7 * 86400.0


def assess(outage: Outage, bounds: Coverage, backup: Inventorist, main: Inventorist) -> Verdict:
    """The inventories of both sites (each taken on its site), then the rule.

    ``bounds`` is MS's last moment before the outage and its first after it
    (``coverage_bounds``). The inventories start before the first: after a
    merge, MS's last moment before the outage may be a merged row, so they
    reach further back, four times as far each time, until they show a moment
    MS recorded itself."""
    ranges = outage.ids or {}
    end = bounds.end
    if end is None:
        raise NoCommonPoint(f"MS has no row after it took authority back (epoch {outage.epoch} of the backup ended "
                            f"at {outage.until:.3f}): its writers have not caught up since the fallback; run "
                            "the recovery again once they have")
    first = min(bounds.start or outage.since, outage.since)
    lookback = LOOKBACK_S
    while True:
        bus = backup(first - lookback, end, ranges)
        ms = main(*issued_hull(bus, ranges), reach(bus, ranges))
        try:
            verdict = judge(bus, ms, outage.since, ranges)
            break
        except NoCommonPoint as exc:
            if lookback >= MAX_LOOKBACK_S:
                raise NoCommonPoint(f"{exc}: no point both sites recorded before the outage; give the "
                                    "recovery a start and an end (epoch seconds)") from None
            lookback *= 4
    if outage.ids is None:
        verdict.notes.append(f"no id range on record for epoch {outage.epoch} (kept since this release): "
                             "rows are judged by their time only")
    return verdict


def assess_window(given: tuple[float, float], backup: Inventorist, main: Inventorist) -> Verdict:
    """The rule for a window an operator gave: every unit of BUS with a moment in it."""
    bus = backup(*given, {})
    return judge(bus, main(*given, reach(bus, {})), given[0], {}, given)


def verification_problems(verdicts: Iterable[Verdict], blocking_ids: Iterable[str]) -> list[str]:
    """Everything that keeps a recovery from being verified: the rule's findings,
    and the id problems of MS's whole-database scan that block, judged as the
    fallback's check judges them (ids above lastid always; ids used twice new
    since the baseline or among those issued during the outage)."""
    return [p for v in verdicts for p in v.problems()] + [f"MS ids: {p}" for p in blocking_ids]
