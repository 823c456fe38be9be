"""CSS3.0 flat-file tables as Antelope's Datascope writes them.

A table lives beside its database descriptor as ``<dbname>.<table>``. Each
record is one line: every field printed with its attribute's printf format,
fields separated by one space, the line ended by a newline. All records of a
table therefore have the same length, which the id scan below relies on.

Text is handled byte for byte (latin-1), because field widths are byte widths
in the C library that writes the files.

Layouts are Antelope's ``css3.0`` schema (``$ANTELOPE/data/schemas/css3.0``),
which differs from the 1990 CSS 3.0 document in places (``lddate`` is an epoch
time, ``origin`` has a ``review`` field and a 2-character ``etype``, ``snr`` and
``calib`` are printed with ``%g``). Sources, cited again beside each table:

[A] Attribute widths, formats and nulls, and each relation's field set,
    primary keys and the key it "Defines": the documentation generated from
    Antelope's css3.0 schema in malcolmw/seismic-python,
    ``sphinx-docs/source/schemas/css3.0/{attributes,relations}/*.rst``.
[B] Field order of origin, event, arrival, assoc, netmag as printed from
    ``$ANTELOPE/data/schemas/css3.0`` in Glenn Thompson's Antelope CSS reader
    (2014), e.g. ``Relation origin Fields ( lat lon depth time orid evid jdate
    nass ndef ndp grn srn etype review depdp dtype mb mbid ms msid ml mlid
    algorithm auth commid lddate )``.
[C] Field order of wfdisc, remark, sitechan, lastid: LANL-Seismoacoustics/pisces
    ``pisces/schema/css3.py`` (the 1990 order, which Antelope keeps), and the
    wfdisc test files of ObsPy, ``obspy/io/css/tests/data/test_css.wfdisc``.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["int", "float", "str", "time"]


class TableFormatError(ValueError):
    """A table file or line does not have the layout of its CSS3.0 table."""

    def __init__(self, path: str | os.PathLike[str] | None, lineno: int | None, message: str):
        self.path = None if path is None else str(path)
        self.lineno = lineno
        self.message = message
        where = self.path or "<text>"
        if lineno is not None:
            where += f", line {lineno}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Field:
    """One attribute of a relation: its printf format and null value."""

    name: str
    kind: Kind
    width: int
    fmt: str
    null: int | float | str

    def render(self, value: object, table: str) -> str:
        """The field as printed in the file, exactly ``width`` characters."""
        where = f"{table}.{self.name}"
        if self.kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"{where}: expected text, got {value!r}")
            if value == "":
                value = self.null
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError(f"{where}: {value!r} contains a control character; records are one line")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        elif self.kind == "int" and not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        elif not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} cannot be stored; use the null value {self.null!r}")
        text = self.fmt % value
        if len(text) != self.width:
            raise ValueError(
                f"{where}: {value!r} prints as {text!r} ({len(text)} characters) "
                f"but the field holds {self.width} ({self.fmt})"
            )
        return text


_INT_RE = re.compile(r" *-?[0-9]+")
_FLOAT_RE = re.compile(r" *-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class Table:
    """A CSS3.0 relation: its fields in file order and fixed record length."""

    def __init__(self, name: str, fields: Iterable[Field]):
        self.name = name
        self.fields = list(fields)
        self._by_name = {f.name: f for f in self.fields}
        self._spans: list[tuple[Field, int, int]] = []
        col = 0
        for f in self.fields:
            self._spans.append((f, col, col + f.width))
            col += f.width + 1
        #: bytes per record, newline included
        self.record_length = col

    def __repr__(self) -> str:
        return f"Table({self.name!r}, {len(self.fields)} fields, {self.record_length} bytes per record)"

    def field(self, name: str) -> Field:
        return self._by_name[name]

    def offset(self, name: str) -> int:
        """Column (0-based byte offset in the record) where field ``name`` starts."""
        for f, start, _ in self._spans:
            if f.name == name:
                return start
        raise KeyError(name)

    def format_row(self, values: Mapping[str, object]) -> str:
        """One record, newline included; fields not given are written as null."""
        unknown = set(values) - set(self._by_name)
        if unknown:
            raise ValueError(f"{self.name}: no field named {', '.join(sorted(unknown))}")
        parts = [f.render(values.get(f.name, f.null), self.name) for f in self.fields]
        return " ".join(parts) + "\n"

    def parse_row(
        self, line: str, lineno: int | None = None, path: str | os.PathLike[str] | None = None
    ) -> dict[str, int | float | str]:
        """Field values of one record (with or without its newline); nulls are returned as stored."""
        body = line[:-1] if line.endswith("\n") else line
        expected = self.record_length - 1
        bad = _CONTROL_RE.search(body)
        if bad:
            hint = ("the file has DOS line ends: convert it with dos2unix" if bad.group() == "\r" else
                    "a crash can leave NUL bytes at the end of a file: restore the table from a copy")
            raise TableFormatError(
                path, lineno, f"control byte {ord(bad.group()):#04x} at column {bad.start() + 1} of a "
                f"{self.name} record; {hint}")
        if len(body) != expected:
            raise TableFormatError(
                path, lineno,
                f"{self.name} record is {len(body)} characters, expected {expected} plus a newline; "
                "the line was cut, joined to another or written with another schema: rewrite it or restore the table",
            )
        row: dict[str, int | float | str] = {}
        for (f, start, end), nxt in zip(self._spans, self._spans[1:] + [None]):
            text = body[start:end]
            if nxt is not None and body[end] != " ":
                raise TableFormatError(
                    path, lineno,
                    f"column {end + 1} should be the space between {f.name} and {nxt[0].name}, found {body[end]!r}; "
                    "a value overflowed its field: rewrite the record",
                )
            row[f.name] = _parse_field(f, text, self.name, start, lineno, path)
        return row


def _parse_field(f: Field, text: str, table: str, start: int, lineno: int | None, path) -> int | float | str:
    where = f"{table}.{f.name} (columns {start + 1}-{start + f.width})"
    if f.kind == "str":
        value = text.rstrip(" ")
        if not value:
            raise TableFormatError(path, lineno, f"{where} is blank; Antelope writes {f.null!r} for no value")
        return value
    pattern = _INT_RE if f.kind == "int" else _FLOAT_RE
    if not pattern.fullmatch(text):
        expected = "an integer" if f.kind == "int" else "a number"
        raise TableFormatError(
            path, lineno,
            f"{where} is {text.strip()!r}, expected {expected} printed as {f.fmt} (null {f.null!r}); correct the value",
        )
    return int(text) if f.kind == "int" else float(text)


def _i(name: str, width: int = 8, null: int = -1) -> Field:
    return Field(name, "int", width, f"%{width}ld", null)


def _f(name: str, width: int, prec: int, null: float, conv: str = "f") -> Field:
    return Field(name, "float", width, f"%{width}.{prec}{conv}", null)


def _s(name: str, width: int) -> Field:
    return Field(name, "str", width, f"%-{width}s", "-")


def _t(name: str, null: float = -9999999999.999) -> Field:
    return Field(name, "time", 17, "%17.5f", null)


# lddate: "(epoch) time of last record modification", %17.5f, null -9999999999.99900 [A]
_LDDATE = _t("lddate")

TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        # lastid: Fields ( keyname keyvalue lddate ), Primary ( keyname ) [A][C];
        # keyname %-15s, keyvalue %8ld null -1 [A]
        Table("lastid", [_s("keyname", 15), _i("keyvalue"), _LDDATE]),
        # origin: field order [B]; formats and nulls [A] (etype %-2s and review %-4s are
        # Antelope's, the 1990 document has etype 7 wide and no review); Defines orid [A]
        Table("origin", [
            _f("lat", 9, 4, -999.0), _f("lon", 9, 4, -999.0), _f("depth", 9, 4, -999.0), _t("time"),
            _i("orid"), _i("evid"), _i("jdate"), _i("nass", 4), _i("ndef", 4), _i("ndp", 4),
            _i("grn"), _i("srn"), _s("etype", 2), _s("review", 4), _f("depdp", 9, 4, -999.0),
            _s("dtype", 1), _f("mb", 7, 2, -999.0), _i("mbid"), _f("ms", 7, 2, -999.0), _i("msid"),
            _f("ml", 7, 2, -999.0), _i("mlid"), _s("algorithm", 15), _s("auth", 15), _i("commid"),
            _LDDATE,
        ]),
        # event: Fields ( evid evname prefor auth commid lddate ) [B]; Defines evid [A]
        Table("event", [_i("evid"), _s("evname", 15), _i("prefor"), _s("auth", 15), _i("commid"), _LDDATE]),
        # arrival: field order [B]; formats [A] (snr is %10.5g in Antelope); Defines arid [A]
        Table("arrival", [
            _s("sta", 6), _t("time"), _i("arid"), _i("jdate"), _i("stassid"), _i("chanid"),
            _s("chan", 8), _s("iphase", 8), _s("stype", 1), _f("deltim", 6, 3, -1.0),
            _f("azimuth", 7, 2, -1.0), _f("delaz", 7, 2, -1.0), _f("slow", 7, 2, -1.0),
            _f("delslo", 7, 2, -1.0), _f("ema", 7, 2, -1.0), _f("rect", 7, 3, -1.0),
            _f("amp", 10, 1, -1.0), _f("per", 7, 2, -1.0), _f("logat", 7, 2, -999.0),
            _s("clip", 1), _s("fm", 2), _f("snr", 10, 5, -1.0, "g"), _s("qual", 1), _s("auth", 15),
            _i("commid"), _LDDATE,
        ]),
        # assoc: field order [B]; formats [A] (belief null 9.99); primary ( arid orid ) [A]
        Table("assoc", [
            _i("arid"), _i("orid"), _s("sta", 6), _s("phase", 8), _f("belief", 4, 2, 9.99),
            _f("delta", 8, 3, -1.0), _f("seaz", 7, 2, -999.0), _f("esaz", 7, 2, -999.0),
            _f("timeres", 8, 3, -999.0), _s("timedef", 1), _f("azres", 7, 1, -999.0), _s("azdef", 1),
            _f("slores", 7, 2, -999.0), _s("slodef", 1), _f("emares", 7, 1, -999.0),
            _f("wgt", 6, 3, -1.0), _s("vmodel", 15), _i("commid"), _LDDATE,
        ]),
        # wfdisc: field order [C]; formats [A] (calib %16.9g null 0, foff %10ld null 0,
        # endtime null +9999999999.999); Defines wfid [A]
        Table("wfdisc", [
            _s("sta", 6), _s("chan", 8), _t("time"), _i("wfid"), _i("chanid"), _i("jdate"),
            _t("endtime", 9999999999.999), _i("nsamp"), _f("samprate", 11, 7, -1.0),
            _f("calib", 16, 9, 0.0, "g"), _f("calper", 16, 6, -1.0), _s("instype", 6),
            _s("segtype", 1), _s("datatype", 2), _s("clip", 1), _s("dir", 64), _s("dfile", 32),
            _i("foff", 10, 0), _i("commid"), _LDDATE,
        ]),
        # netmag: Fields ( magid net orid evid magtype nsta magnitude uncertainty auth commid
        # lddate ) [B]; magnitude null -99.99 [A]; Defines magid [A]
        Table("netmag", [
            _i("magid"), _s("net", 8), _i("orid"), _i("evid"), _s("magtype", 6), _i("nsta"),
            _f("magnitude", 7, 2, -99.99), _f("uncertainty", 7, 2, -1.0), _s("auth", 15),
            _i("commid"), _LDDATE,
        ]),
        # remark: field order [C]; primary ( commid lineno ), Defines commid [A]
        Table("remark", [_i("commid"), _i("lineno"), _s("remark", 80), _LDDATE]),
        # sitechan: field order [C]; formats [A] (edepth null -9.9999, hang/vang null -999.9);
        # Defines chanid [A]
        Table("sitechan", [
            _s("sta", 6), _s("chan", 8), _i("ondate"), _i("chanid"), _i("offdate"), _s("ctype", 4),
            _f("edepth", 9, 4, -9.9999), _f("hang", 6, 1, -999.9), _f("vang", 6, 1, -999.9),
            _s("descrip", 50), _LDDATE,
        ]),
    ]
}

#: Where each id key appears in TABLES, as (table, field); a key can be held under another
#: name (event.prefor is an orid, origin.mbid/msid/mlid are magids). [A]
ID_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "orid": (("origin", "orid"), ("assoc", "orid"), ("netmag", "orid"), ("event", "prefor")),
    "evid": (("event", "evid"), ("origin", "evid"), ("netmag", "evid")),
    "arid": (("arrival", "arid"), ("assoc", "arid")),
    "wfid": (("wfdisc", "wfid"),),
    "chanid": (("sitechan", "chanid"), ("wfdisc", "chanid"), ("arrival", "chanid")),
    "magid": (("netmag", "magid"), ("origin", "mbid"), ("origin", "msid"), ("origin", "mlid")),
    "commid": tuple((t, "commid") for t in TABLES if "commid" in TABLES[t]._by_name),
}

#: The table that defines (issues) each key: the one place a new value appears first. [A]
ID_OWNER: dict[str, str] = {
    "orid": "origin", "evid": "event", "arid": "arrival", "wfid": "wfdisc",
    "chanid": "sitechan", "magid": "netmag", "commid": "remark",
}

#: Keys that legitimately repeat in their owning table: a multi-line comment is several
#: remark rows with one commid (remark's primary key is commid plus lineno). [A]
REPEATS_IN_OWNER = frozenset({"commid"})


# ---------------------------------------------------------------- files


def read_table(path: str | os.PathLike[str], table: Table) -> Iterator[dict[str, int | float | str]]:
    """Records of a table file, parsed. A last line without a newline is an error:
    Antelope ends every record with one, so it is the trace of an interrupted write."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                raise TableFormatError(path, lineno, _partial_message(table, len(raw)))
            yield table.parse_row(raw.decode("latin-1"), lineno, path)


def _partial_message(table: Table, length: int) -> str:
    return (
        f"the file ends in the middle of a {table.name} record ({length} of {table.record_length} bytes, "
        "no newline), the trace of an interrupted write; remove the partial last line or restore the table"
    )


def append_rows(path: str | os.PathLike[str], table: Table, rows: Iterable[Mapping[str, object]]) -> None:
    """Append records, refusing to extend a file that ends mid-record."""
    data = "".join(table.format_row(r) for r in rows).encode("latin-1")
    with open(path, "ab+") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                raise TableFormatError(path, None, _partial_message(table, end % table.record_length))
        f.write(data)


def write_table(path: str | os.PathLike[str], table: Table, rows: Iterable[Mapping[str, object]]) -> None:
    """Replace a table file atomically with these records."""
    data = "".join(table.format_row(r) for r in rows).encode("latin-1")
    atomic_write(path, data)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename,
    so a reader sees the old or the new content, never a mix. An existing file's mode is kept."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration):
        return 0o022


# ---------------------------------------------------------------- id scan


@dataclass(frozen=True)
class IdStats:
    """What the owning table of one id key holds."""

    key: str
    table: str
    path: str
    rows: int
    nulls: int  # rows whose id is the null -1 (or otherwise not positive)
    max_id: int | None
    duplicates_checked: bool  # False for keys that legitimately repeat (REPEATS_IN_OWNER)
    duplicated_values: int = 0  # distinct ids found on more than one row
    duplicate_rows: int = 0  # rows beyond the first for each duplicated id
    duplicate_examples: tuple[int, ...] = ()  # the smallest duplicated ids, at most 10


@dataclass(frozen=True)
class IdScan:
    """Result of scan_ids: one IdStats per key whose owning table file exists."""

    db: str
    keys: dict[str, IdStats]
    missing: tuple[str, ...]  # owning tables with no file

    def max_ids(self) -> dict[str, int]:
        """Highest id per key, for keys with at least one id."""
        return {k: s.max_id for k, s in self.keys.items() if s.max_id is not None}


@dataclass(frozen=True)
class Problem:
    """A consistency problem in plain words, for the operator."""

    key: str
    kind: Literal["above_lastid", "not_in_lastid", "duplicates", "null_ids"]
    message: str

    def __str__(self) -> str:
        return self.message


def scan_ids(db_path: str | os.PathLike[str], tables: Iterable[str] | None = None) -> IdScan:
    """Max id, row count and duplicated ids of each key, read from its owning table
    ``<db_path>.<table>`` (all owning tables, or those named in ``tables``).

    Only the record length and the id column are checked; other fields are not parsed.

    Speed: each file is read in 4 MiB blocks of whole records; the id column of a block is
    copied out with strided memoryview copies, then validated and split into increasing
    runs with a few whole-block byte and big-integer operations, no per-row Python.

    Memory is bounded whatever the table size: the 4 MiB block buffer and a few copies of
    its id column (8 bytes a record, under 0.5 MiB). Duplicates need no memory when
    the ids of a table form runs of increasing values whose ranges do not overlap (the
    normal case, even after a recovery merge appends a block). Otherwise a second pass
    reads the blocks whose ids reach where runs overlap, and marks the ids found there (by
    binary search in each run) in two bitmaps of max_id/8 bytes each: ids are printed %8ld,
    so max_id is below 10**8 and the bitmaps below 12.5 MB each. Marking costs about
    0.3 µs per marked row; a table of more than 10,000 runs (rows out of order
    everywhere) has all its rows read again and marked.
    """
    wanted = set(ID_OWNER.values()) if tables is None else set(tables)
    unknown = wanted - set(ID_OWNER.values())
    if unknown:
        raise ValueError(f"{', '.join(sorted(unknown))}: not the owning table of any id key ({ID_OWNER})")
    keys: dict[str, IdStats] = {}
    missing = []
    for key, owner in ID_OWNER.items():
        if owner not in wanted:
            continue
        path = Path(f"{os.fspath(db_path)}.{owner}")
        if not path.exists():
            missing.append(owner)
            continue
        keys[key] = _IdColumnScan(path, TABLES[owner], key).run()
    return IdScan(os.fspath(db_path), keys, tuple(missing))


_MAX_RUNS = 10_000
_SHORT_RUN = 32
_BLOCK = 4 << 20
# a space becomes 0, a digit d becomes 0x10 + d, any other byte 0xff
_CLASSES = bytes(0 if b == 0x20 else 0x10 + b - 0x30 if 0x30 <= b <= 0x39 else 0xFF for b in range(256))
_RUN_CHECK_BIT = 62  # lane values of classes are < 2**62: the top byte is at most 0x19


class _IdColumnScan:
    """Scan of one 8-byte, right-justified id column of a fixed-length table file."""

    def __init__(self, path: Path, table: Table, key: str):
        self.path, self.table, self.key = path, table, key
        self.L = table.record_length
        self.off = table.offset(key)
        if table.field(key).width != 8:
            raise ValueError(f"{table.name}.{key}: the scan reads 8-byte id columns")
        self.unique = key not in REPEATS_IN_OWNER
        self.rows = self.nulls = 0
        self.max_id: int | None = None
        self.runs: list[_Run] | None = []  # increasing runs, in file order
        self.blocks: list[tuple[int, int, int, int]] = []  # first record, count, lowest and highest id
        self._consts: dict[int, tuple[int, int, int, int]] = {}

    def run(self) -> IdStats:
        self._each_block(self._first_pass)
        stats = dict(key=self.key, table=self.table.name, path=str(self.path), rows=self.rows,
                     nulls=self.nulls, max_id=self.max_id, duplicates_checked=self.unique)
        contested = self._contested() if self.unique else []
        if contested:
            stats.update(self._duplicates(contested))
        return IdStats(**stats)

    # -- reading

    def _each_block(self, handle: Callable[[bytearray, int, int, int], None],
                    blocks: list[tuple[int, int]] | None = None) -> None:
        """Call handle(buffer, base, first_record, count) on every block of whole records (or
        on the (first_record, count) blocks given), read into one reused buffer that stays
        hot in the CPU caches while the block is worked on."""
        L = self.L
        full, tail = divmod(self.path.stat().st_size, L)
        per_block = max(1, _BLOCK // L)
        buf = bytearray(per_block * L)
        if blocks is None:
            blocks_to_read = [(r, min(per_block, full - r)) for r in range(0, full, per_block)]
        else:
            blocks_to_read = blocks
        with open(self.path, "rb", buffering=0) as f, memoryview(buf) as mv:
            for first, n in blocks_to_read:
                f.seek(first * L)
                got = 0
                while got < n * L:
                    more = f.readinto(mv[got:n * L])
                    if not more:
                        raise TableFormatError(self.path, None, "the file shrank while it was read; scan again")
                    got += more
                handle(buf, 0, first, n)
            if tail and blocks is None:
                f.seek(full * L)
                rest = f.read()
                nl = rest.find(b"\n")
                if nl >= 0:
                    raise TableFormatError(self.path, full + 1, self._length_message(nl))
                raise TableFormatError(self.path, full + 1, _partial_message(self.table, len(rest)))

    def _length_message(self, length: int) -> str:
        return (
            f"{self.table.name} record is {length} bytes, expected {self.L - 1} plus a newline; "
            "every record of a table has the same length: rewrite the line or restore the table"
        )

    def _column(self, buf: bytearray, base: int, n: int) -> bytearray:
        """The id field of n records, packed as 8-byte lanes, copied with strided memoryviews
        (a stride in 8-byte units exists every 8/gcd(L, 8) records)."""
        L, period = self.L, 8 // math.gcd(self.L, 8)
        step = L * period // 8
        col = bytearray(8 * n)
        with memoryview(buf) as mv, memoryview(col).cast("Q") as lanes:
            for j in range(min(period, n)):
                count = (n - j + period - 1) // period
                start = base + j * L + self.off
                with mv[start:start + 8 * ((count - 1) * step + 1)] as raw, raw.cast("Q") as q:
                    lanes[j::period] = q[::step]
        return col

    def _fast_column(self, buf: bytearray, base: int, n: int) -> tuple[bytearray, int] | None:
        """The block's id column and its big-integer value if every record is well formed
        with a positive id, else None (the caller then parses record by record)."""
        L, off = self.L, self.off
        if buf[base + L - 1:base + n * L:L].count(b"\n") != n:
            return None
        for rec in (base, base + (n - 1) * L):  # separators, on a sample: a schema mismatch shows on every row
            if (off and buf[rec + off - 1] != 0x20) or buf[rec + off + 8] != 0x20:
                return None
        col = self._column(buf, base, n)
        cls = col.translate(_CLASSES)
        if b"\xff" in cls or b"\x00" in cls[7::8]:
            return None
        # Spaces only before the digits: in cls a digit has bit 4 set and a space is 0, and
        # within a lane a space may follow only a space. Classes keep the order of the
        # printed numbers, so the big integer of cls serves the run check too.
        v = int.from_bytes(cls, "big")
        _, _, ones, inner = self._constants(n)
        digits = (v >> 4) & ones
        after_digit = (digits >> 8) & inner
        if after_digit & digits != after_digit:
            return None
        return col, v

    def _slow_values(self, buf: bytearray, base: int, first: int, n: int) -> list[int]:
        """Ids of a block parsed record by record (nulls included), raising on the first bad one."""
        L, off, values = self.L, self.off, []
        field = self.table.field(self.key)
        for i in range(n):
            rec, lineno = base + i * L, first + i + 1
            if buf[rec + L - 1] != 0x0A:
                nl = buf.find(b"\n", rec)
                raise TableFormatError(self.path, lineno, self._length_message((nl if nl >= 0 else len(buf)) - rec))
            line = buf[rec:rec + L - 1].decode("latin-1")
            if (off and line[off - 1] != " ") or line[off + 8] != " ":
                raise TableFormatError(self.path, lineno, (
                    f"no space around {self.table.name}.{self.key} (columns {off + 1}-{off + 8}): "
                    f"{line[max(off - 1, 0):off + 9]!r}; the table has another layout or a value overflowed its field"))
            values.append(_parse_field(field, line[off:off + 8], self.table.name, off, lineno, self.path))
        return values

    # -- first pass: count, max, increasing runs

    def _constants(self, n: int) -> tuple[int, int, int, int]:
        """Lane constants for a block of n records (all blocks have one size but the last)."""
        c = self._consts.get(n)
        if c is None:
            top = 1 << _RUN_CHECK_BIT
            c = tuple(int.from_bytes(lane * n, "big") for lane in (
                (top - 1).to_bytes(8, "big"), top.to_bytes(8, "big"), b"\x01" * 8, b"\x00" + b"\x01" * 7))
            self._consts[n] = c
        return c

    def _first_pass(self, buf: bytearray, base: int, first: int, n: int) -> None:
        self.rows += n
        fast = self._fast_column(buf, base, n)
        if fast is None:
            values = self._slow_values(buf, base, first, n)
            positive = [v for v in values if v > 0]
            self.nulls += len(values) - len(positive)
            runs = _runs_of(positive)
        else:
            col = fast[0]
            runs = [_Run(lo, hi, e - s, None) if e - s > _SHORT_RUN
                    else _Run.of([int(col[8 * i:8 * i + 8]) for i in range(s, e)])
                    for s, e, lo, hi in self._column_runs(*fast, n)]
        if runs:
            self.blocks.append((first, n, min(r.lo for r in runs), max(r.hi for r in runs)))
        for run in runs:
            if self.max_id is None or run.hi > self.max_id:
                self.max_id = run.hi
            if self.runs is None:
                continue
            if self.runs and self.runs[-1].hi < run.lo:
                self.runs[-1].extend(run)
            else:
                self.runs.append(run)
                if len(self.runs) > _MAX_RUNS:
                    self.runs = None

    def _column_runs(self, col: bytearray, v: int, n: int) -> list[tuple[int, int, int, int]]:
        """Increasing runs of the block as (first index, end index, first id, last id).

        Lanes of right-justified digit classes compare like the numbers they print, so lane
        i continues a run iff lane[i] - lane[i-1] >= 1, i.e. iff lane[i] + (2**62 - 1) -
        lane[i-1] has bit 62 set. Every lane of that sum stays within [0, 2**63), so one
        big-integer addition and subtraction compute all lanes without borrows between them.
        """
        k, bit, _, _ = self._constants(n)
        ahead = (v + k - (v >> 64)) & bit
        starts = [0]
        if ahead != bit:
            breaks = (ahead ^ bit).to_bytes(8 * n, "big")
            starts += [m.start() // 8 for m in re.finditer(rb"[^\x00]", breaks)]
        ends = starts[1:] + [n]
        return [(s, e, int(col[8 * s:8 * s + 8]), int(col[8 * e - 8:8 * e])) for s, e in zip(starts, ends)]

    def _contested(self) -> list[tuple[int, int]]:
        """Id ranges where a duplicate can be: where the ranges of two long runs overlap, and
        the ids of short runs that fall in a long run's range or repeat another short run's."""
        if self.max_id is None:
            return []
        if self.runs is None:
            return [(1, self.max_id)]
        ranges = [(r.lo, r.hi) for r in self.runs if r.points is None]
        points = sorted(p for r in self.runs if r.points is not None for p in r.points)
        covered = _ranges_covered(ranges, 1)
        starts = [a for a, _ in covered]

        def in_a_range(p: int) -> bool:
            i = bisect_right(starts, p) - 1
            return i >= 0 and covered[i][1] >= p

        found = _ranges_covered(ranges, 2)
        found += [(p, p) for i, p in enumerate(points) if (i and points[i - 1] == p) or in_a_range(p)]
        return _ranges_covered(found, 1)

    # -- second pass: bitmaps of the contested ranges, in the blocks that reach them

    def _duplicates(self, contested: list[tuple[int, int]]) -> dict[str, object]:
        size = self.max_id // 8 + 1
        seen, dup = bytearray(size), bytearray(size)
        firsts, lasts = [a for a, _ in contested], [b for _, b in contested]
        extra = 0

        def mark(values: Iterable[int]) -> None:
            nonlocal extra
            for v in values:
                i, m = v >> 3, 1 << (v & 7)
                if seen[i] & m:
                    dup[i] |= m
                    extra += 1
                else:
                    seen[i] |= m

        def block(buf: bytearray, base: int, first: int, n: int) -> None:
            fast = self._fast_column(buf, base, n)
            if fast is None:
                values = self._slow_values(buf, base, first, n)
                mark(v for v in values if v > 0 and bisect_left(lasts, v) < bisect_right(firsts, v))
                return
            col = fast[0]
            lanes = _Lanes(col)
            for s, e, lo, hi in self._column_runs(*fast, n):
                # the run is increasing: its ids inside a contested range are one slice of it
                for a, b in contested[bisect_left(lasts, lo):bisect_right(firsts, hi)]:
                    i0 = bisect_left(lanes, b"%8d" % a, s, e)
                    i1 = bisect_right(lanes, b"%8d" % b, i0, e)
                    mark(int(col[8 * i:8 * i + 8]) for i in range(i0, i1))

        self._each_block(block, [(first, n) for first, n, lo, hi in self.blocks
                                 if bisect_left(lasts, lo) < bisect_right(firsts, hi)])
        examples: list[int] = []
        for m in re.finditer(rb"[^\x00]", dup):
            byte = m.group()[0]
            examples += [8 * m.start() + b for b in range(8) if byte >> b & 1]
            if len(examples) >= 10:
                break
        return dict(
            duplicated_values=int.from_bytes(dup, "little").bit_count(),
            duplicate_rows=extra,
            duplicate_examples=tuple(examples[:10]),
        )


class _Lanes:
    """The printed ids of a column, as a sequence for bisect."""

    def __init__(self, col: bytearray):
        self.col = col

    def __len__(self) -> int:
        return len(self.col) // 8

    def __getitem__(self, i: int) -> bytes:
        return bytes(self.col[8 * i:8 * i + 8])


@dataclass
class _Run:
    """Ids in increasing order: kept as their range if long, as the ids if short."""

    lo: int
    hi: int
    count: int
    points: list[int] | None  # None once longer than _SHORT_RUN

    @classmethod
    def of(cls, ids: list[int]) -> _Run:
        return cls(ids[0], ids[-1], len(ids), ids if len(ids) <= _SHORT_RUN else None)

    def extend(self, after: _Run) -> None:
        """Append a run whose ids all exceed this one's."""
        self.hi, self.count = after.hi, self.count + after.count
        if self.points is not None and after.points is not None and self.count <= _SHORT_RUN:
            self.points = self.points + after.points
        else:
            self.points = None


def _runs_of(values: list[int]) -> list[_Run]:
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] <= values[i - 1]:
            runs.append(_Run.of(values[start:i]))
            start = i
    return runs


def _ranges_covered(ranges: Iterable[tuple[int, int]], depth: int) -> list[tuple[int, int]]:
    """Sorted disjoint ranges of the ids covered by at least ``depth`` of the given ranges."""
    delta: dict[int, int] = {}
    for lo, hi in ranges:
        delta[lo] = delta.get(lo, 0) + 1
        delta[hi + 1] = delta.get(hi + 1, 0) - 1
    out: list[tuple[int, int]] = []
    level = start = 0
    for x in sorted(delta):
        before, level = level, level + delta[x]
        if before < depth <= level:
            start = x
        elif level < depth <= before:
            out.append((start, x - 1))
    return out


def check_ids(scan: IdScan, lastid: Mapping[str, int]) -> list[Problem]:
    """Problems that would let the id server hand out an id already in the database,
    or that show an id already used twice."""
    problems: list[Problem] = []
    for key, s in scan.keys.items():
        where = f"{s.path}"
        if s.max_id is not None:
            last = lastid.get(key)
            if last is None:
                problems.append(Problem(key, "not_in_lastid", (
                    f"{key}: lastid has no {key} row but {where} holds {key} up to {s.max_id}; "
                    f"add a lastid row for {key} with keyvalue {s.max_id} or more")))
            elif s.max_id > last:
                problems.append(Problem(key, "above_lastid", (
                    f"{key}: {where} holds {key} up to {s.max_id} but lastid is {last}, so the id server "
                    f"would issue {last + 1}..{s.max_id} again; set lastid {key} to {s.max_id} or more")))
        if s.duplicated_values:
            shown = ", ".join(map(str, s.duplicate_examples))
            more = ", ..." if s.duplicated_values > len(s.duplicate_examples) else ""
            problems.append(Problem(key, "duplicates", (
                f"{key}: {s.duplicated_values} {key} values are used more than once in {where} "
                f"({s.duplicate_rows} extra rows; {shown}{more}); a merge was applied twice or two id "
                "servers were active: remove the duplicate rows before starting dbids")))
        if s.nulls:
            problems.append(Problem(key, "null_ids", (
                f"{key}: {s.nulls} rows of {where} have no {key} (null or not positive); "
                "every row of its owning table needs one")))
    return problems
