"""The command lines the procedures run on a site, and parsers of their output.

Each builder returns a ``Command``: the argument vector, what it is for, and
whether it changes anything on the site (dry runs print those instead of
running them). Sources of each form are in docs/antelope-facts.md.
"""
from __future__ import annotations

import datetime as dt
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    purpose: str
    changes: bool = False

    def __str__(self) -> str:
        return shlex.join(self.argv)


def cmd(purpose: str, *argv: str, changes: bool = False) -> Command:
    return Command(tuple(argv), purpose, changes)


# --- real-time system (rtexec) -------------------------------------------------
# rtexec(1): `rtexec -k` kills a running real-time system; `-s` saves old logs;
# `-f` does not ask about a previous rtexec (we only start when none runs, so
# it never has one to kill and cannot hang on a prompt without a terminal).
RTEXEC_PID_FILE = "logs/rtexec.pid"  # antelope_contrib bin/rt/wait_for_rtexec


def start_rtexec() -> Command:
    return cmd("start the real-time system", "rtexec", "-fs", changes=True)


def stop_rtexec() -> Command:
    return cmd("stop the real-time system", "rtexec", "-k", changes=True)


def list_processes() -> Command:
    """ps: one line per process, pid then the full command line (-ww: never cut
    at the terminal width)."""
    return cmd("list running processes", "ps", "-ww", "-eo", "pid=,args=")


def process_args(pid: int) -> Command:
    return cmd(f"check process {pid}", "ps", "-ww", "-p", str(pid), "-o", "args=")


def site_clock() -> Command:
    return cmd("the site's clock, epoch seconds", "date", "+%s.%N")


# proc(5), Linux: /proc/uptime starts with the seconds since boot; field 22 of
# /proc/<pid>/stat is the process's start time in clock ticks since boot.
# Both count from boot, so their difference is the process's age to 1/100 s,
# where `ps -o etimes` gives whole seconds.
def process_start(pid: int) -> Command:
    return cmd(f"when process {pid} started", "cat", "/proc/uptime", f"/proc/{pid}/stat")


def clock_ticks() -> Command:
    return cmd("clock ticks per second", "getconf", "CLK_TCK")


def parse_process_start(clock: float, output: str, ticks_per_s: int) -> float:
    """The epoch second a process started, from ``process_start`` output and
    the site's clock read just before it (so the result errs early, never
    late, by the time between the two reads)."""
    uptime_line, _, stat = output.partition("\n")
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    try:
        uptime = float(uptime_line.split()[0])
        started_ticks = int(fields[19])  # field 22; fields[0] is field 3, the state
    except (IndexError, ValueError):
        raise ValueError(f"cannot read a start time from {output[:200]!r}") from None
    return clock - uptime + started_ticks / ticks_per_s


def signal_process(pid: int, purpose: str) -> Command:
    return cmd(purpose, "kill", "-TERM", str(pid), changes=True)


@dataclass(frozen=True)
class Process:
    pid: int
    args: tuple[str, ...]


def parse_ps(output: str) -> list[Process]:
    procs = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            procs.append(Process(int(parts[0]), tuple(parts[1:])))
    return procs


def matches_task(proc: Process, command: Sequence[str]) -> bool:
    """Is ``proc`` running the rtexec task whose command line is ``command``?

    The process's arguments must end with the task's arguments, after a word
    whose base name is the task's program (rtexec may start it through an
    interpreter or with a full path).
    """
    program, *rest = command
    base = program.rsplit("/", 1)[-1]
    return any(
        word.rsplit("/", 1)[-1] == base and list(proc.args[i + 1 :]) == rest
        for i, word in enumerate(proc.args)
    )


def task_pids(procs: Iterable[Process], command: Sequence[str]) -> list[int]:
    return [p.pid for p in procs if matches_task(p, command)]


# --- ID server -----------------------------------------------------------------
# `idserver_connect host:port` is the operators' monitoring script (slides):
# exit 0 when the ID server answered, non-zero otherwise, one line of detail.
def probe_idserver(address: str) -> Command:
    return cmd(f"probe the ID server at {address}", "idserver_connect", address)


# --- witness -------------------------------------------------------------------
def ping(host: str, timeout_s: float) -> Command:
    return cmd(f"ping the witness {host}", "ping", "-c", "1", "-W", str(max(1, round(timeout_s))), host)


# --- ORB -------------------------------------------------------------------------
def orb_sources(orb: str) -> Command:
    return cmd(f"ORB sources and latency of {orb}", "orbstat", "-s", orb)


_LATENCY = re.compile(r"(\d+(?:\.\d+)?)\s+(second|minute|hour|day)s?\b")
_UNIT_S = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def parse_orb_latencies(output: str) -> dict[str, float]:
    """srcname -> latency in seconds, from ``orbstat -s``.

    Each source line starts with the srcname and carries the latency with a
    unit word (public scripts grep for ``seconds`` and cut field 1).
    """
    out: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        m = _LATENCY.search(line)
        if parts and "/" in parts[0] and m:
            out[parts[0]] = float(m.group(1)) * _UNIT_S[m.group(2)]
    return out


# --- trexcerpt -------------------------------------------------------------------
# trexcerpt(1) synopsis: trexcerpt [options] input-db output_db [start_time {end_time|duration}].
# The options -v -e (extract) and -v -a -e (append into an existing database)
# are the operators' own; see docs/antelope-facts.md.
def extract_window(db: str, out: str, start: float, end: float) -> Command:
    return cmd(
        f"extract {fmt_time(start)} .. {fmt_time(end)} from {db} to {out}",
        "trexcerpt", "-v", "-e", db, out, fmt_epoch(start), fmt_epoch(end), changes=True,
    )


def merge_window(excerpt: str, db: str, start: float, end: float) -> Command:
    return cmd(
        f"merge {excerpt} into {db} for {fmt_time(start)} .. {fmt_time(end)}",
        "trexcerpt", "-v", "-a", "-e", excerpt, db, fmt_epoch(start), fmt_epoch(end), changes=True,
    )


# --- consistency scan (this project's site tool, antelope_ha/sitetool.py) --------
def site_tool(python: str, tool: str) -> tuple[str, ...]:
    """How a site runs the site tool: with its own python3, isolated (-I: no
    PYTHON* variables, no user site-packages) and without site-packages (-S),
    so only the standard library and the tool's own modules are used."""
    return (python, "-I", "-S", tool)


def scan_ids(tool: Sequence[str], db: str, dbids: str) -> Command:
    return cmd(f"check ids of {db} against {dbids}.lastid", *tool, "ids", db, "--lastid", f"{dbids}.lastid")


def recovery_bounds(tool: Sequence[str], db: str, before: float, after: float) -> Command:
    return cmd(
        f"the last moment {db} recorded before {fmt_time(before)} and the first after {fmt_time(after)}",
        *tool, "bounds", db, fmt_epoch(before), fmt_epoch(after),
    )


def inventory(tool: Sequence[str], db: str, start: float, end: float, ids: Mapping[str, tuple[int, int]]) -> Command:
    """The rows of ``db`` a recovery check needs: timed from ``start`` to ``end``
    (exact, as the times are compared with the records'), or carrying an id of
    ``ids``, and every row of their events."""
    ranges = [f"--ids={k}={first}-{last}" for k, (first, last) in sorted(ids.items())]
    return cmd(
        f"list the rows of {db} from {fmt_time(start)} to {fmt_time(end)} and those of the ids issued",
        *tool, "inventory", db, repr(start), repr(end), *ranges,
    )


def narrow_excerpt(tool: Sequence[str], excerpt: str, keep: str) -> Command:
    return cmd(
        f"keep in {excerpt} only the rows listed in {keep}",
        *tool, "narrow", excerpt, keep, changes=True,
    )


def modified_time(path: str) -> Command:
    """GNU stat: the file's modification time in epoch seconds, to the nanosecond."""
    return cmd(f"when {path} last changed", "stat", "-c", "%.9Y", "--", path)


def remove_tree(path: str) -> Command:
    return cmd(f"remove the old excerpt {path}", "rm", "-rf", "--", path, changes=True)


def make_dirs(path: str) -> Command:
    return cmd(f"create {path}", "mkdir", "-p", "--", path, changes=True)


def fmt_epoch(t: float) -> str:
    return f"{t:.3f}"


def fmt_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
