"""The nemesis: many incident cycles on a simulated pair under faults drawn
from a seed, the pair brought back each time by the procedures themselves,
and the result judged by the independent checker (rehearsal/checker.py).

    python -m rehearsal.nemesis --cycles N --seed S [--minutes M] [--json]
    make nemesis CYCLES=N SEED=S
    python -m rehearsal.nemesis --resume --workdir DIR [--minutes M]

Writers run at both sites throughout. Each cycle, drawn from
``random.Random(seed)``: a few seconds of normal operation under the health
probes (with a writer or an ID server killed, the link BUS -> MS cut for a
while, an operator's ``ack``, the Prefect server restarted: none of which may
move authority), then, in most cycles, an incident: MS powered off at a
drawn moment (sometimes under an operator's maintenance pause, sometimes
with BUS cut from the witness at the time; sometimes it is the middle of a
lastid replication that brings MS down), detected and
failed over by the health decision as the watcher does; BUS's writer or ID
server killed while BUS serves; MS powered on (without rtexec, as a repaired
host comes back); the fallback with scripted approvals given late, rejected,
left to time out, or given after MS was powered off at the gate; the
recovery, with MS sometimes powered off in the middle. Whatever a fault
left, the cycle ends only once the procedures have brought the pair back:
MS authoritative, recovered, both sites writing. A cycle they cannot bring
back within its limit is a finding: reported, and the run goes on from there.

The flows run in this process, one at a time, on a Prefect server: by
default one the nemesis starts for itself on a PostgreSQL cluster of its own,
as deployed (``make nemesis``), which it also restarts as a fault; the server
of PREFECT_API_URL when that is set (the slow test's); or embedded Prefect
(``--prefect embedded``). Some procedure runs are first started in a process
of their own and SIGKILLed after a drawn change (with a server only: the
process needs its URL). The faults on the sites are applied by simsite.

A run given a ``--workdir`` can be stopped and continued: ``--minutes``
or Ctrl-C (rehearsal/stopping.py: a second Ctrl-C interrupts it at once)
ends it between two cycles, with the pair stopped and the run's plan and
progress (the seed's draws included) saved there, its Prefect server's
database kept beside; ``--resume`` goes on from there, as the run would
have. The checker judges all its cycles, counting time without an ID server
only while a part ran.

``--break RULE`` runs with a safety rule removed, to see whether the checker
catches it: ``margin``, the lastid safety margin (the failover hands BUS the
replica, raised only to BUS's own ids); ``stop-bus-dbids``, the fallback's
step that stops BUS's ID server before MS's starts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rehearsal import stopping
from tests.servers import PostgresServer, PrefectServer

BREAKS = {"margin": "the lastid safety margin removed",
          "stop-bus-dbids": "the fallback's step 'stop dbids on bus' removed"}
INCIDENTS = 0.75
KILLED_RUNS = 0.15  # the share of procedure runs first started in a process of their own and SIGKILLed
PREFECT_MODES = ("own-server", "embedded")
SAVED = "nemesis-run.json"  # in the workdir: a run's plan and progress, to continue it


class NemesisError(Exception):
    """A run that cannot start or go on as asked; the message says why and what to do."""


@dataclass
class Plan:
    """What a run does, every draw from ``seed``; saved with it, so that a
    continued run goes on with the same."""
    cycles: int
    seed: int
    incidents: float = INCIDENTS  # the share of cycles with an MS incident
    killed_runs: float = KILLED_RUNS  # the share of procedure runs first killed in a process of their own
    broken: str | None = None  # a key of BREAKS
    rate: float = 5.0  # ORB packets a second at each site


@dataclass
class Fault:
    cycle: int
    at: float  # seconds since the run began
    kind: str
    detail: str


@dataclass
class NemesisReport:
    seed: int
    incidents: float  # the share of cycles drawn to have an MS incident
    cycles: int = 0
    minutes: float = 0.0  # while a part ran
    parts: int = 0  # a run stopped and continued has several
    prefect: str = ""
    broken_rule: str | None = None
    faults: dict[str, int] = field(default_factory=dict)
    failovers: int = 0
    fallbacks: int = 0  # completed
    fallbacks_stopped: int = 0  # rejected, timed out, refused after a changed situation, or failed
    recoveries: int = 0  # completed and verified
    recoveries_failed: int = 0
    failover_s: list[float] = field(default_factory=list)  # MS failing (power-off) to BUS authoritative
    fallback_s: list[float] = field(default_factory=list)  # each completed fallback run, approvals included
    not_brought_back: list[str] = field(default_factory=list)  # findings: cycles the procedures did not end
    rows_written: int = 0
    rows_lost: int = -1
    ids_used_twice: int = -1
    orphans: int = -1
    torn_rows: int = -1  # halves of packets a writer's death cut (not failures: rehearsal/checker.py)
    ids_above_lastid: int = -1
    seconds_two_id_servers: float = -1.0
    seconds_no_id_server: float = -1.0
    handovers: list[dict] = field(default_factory=list)  # from the ID servers' own records
    checker_details: dict[str, list[str]] = field(default_factory=dict)
    fault_log: list[Fault] = field(default_factory=list)
    passed: bool = False

    @classmethod
    def from_dict(cls, saved: dict) -> NemesisReport:
        return cls(**{**saved, "fault_log": [Fault(**f) for f in saved["fault_log"]]})


def saved_run(workdir: Path) -> dict:
    """The plan and progress of the run stopped in ``workdir``."""
    path = workdir / SAVED
    if not path.exists():
        raise NemesisError(f"{workdir} holds no run to continue (no {SAVED}): give the --workdir of a run "
                           "started with --workdir, or start one without --resume")
    saved = json.loads(path.read_text())
    plan = Plan(**saved["plan"])
    if saved["report"]["cycles"] >= plan.cycles:
        raise NemesisError(f"the run in {workdir} has done all its {plan.cycles} cycles: nothing to continue")
    if saved["prefect"] == "embedded":
        raise NemesisError(f"the run in {workdir} ran on embedded Prefect, whose records are gone: "
                           "only a run on a Prefect server can be continued")
    return saved


@contextlib.contextmanager
def prefect_api(mode: str, workdir: Path, keep: bool = False) -> Iterator[PrefectServer | None]:
    """Where the flows' Prefect API is: the server of PREFECT_API_URL when it
    is set; else, for ``own-server``, ``prefect server start`` on a PostgreSQL
    cluster of its own, as docs/operating.md deploys it (yielded: the nemesis
    restarts it), the cluster kept in ``workdir`` when ``keep``; else embedded
    Prefect."""
    if os.environ.get("PREFECT_API_URL") or mode == "embedded":
        yield None
        return
    if keep and os.geteuid() == 0 and not all(d.stat().st_mode & 0o001 for d in (workdir, *workdir.parents)):
        raise NemesisError(f"--workdir {workdir}: PostgreSQL runs as the postgres user, who cannot enter it; "
                           "give a directory every user can enter (e.g. under /tmp)")
    database = PostgresServer(keep_in=workdir / "prefect-db" if keep else None)
    server, saved = PrefectServer(home=workdir / "prefect-server", database=database), dict(os.environ)
    try:
        server.start()
        os.environ.update(server.env())
        yield server
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def table(report: NemesisReport) -> str:
    durations = lambda xs: f"{min(xs):.1f} / {sorted(xs)[len(xs) // 2]:.1f} / {max(xs):.1f} s" if xs else "-"
    rows = [
        ("seed", report.seed), ("cycles", report.cycles), ("share with an MS incident", report.incidents),
        ("minutes", report.minutes), ("parts", report.parts),
        ("prefect", report.prefect), ("broken rule", report.broken_rule or "none"),
        ("faults", ", ".join(f"{k} {v}" for k, v in sorted(report.faults.items())) or "none"),
        ("failovers", report.failovers), ("failover min/median/max", durations(report.failover_s)),
        ("fallbacks (stopped)", f"{report.fallbacks} ({report.fallbacks_stopped})"),
        ("fallback min/median/max", durations(report.fallback_s)),
        ("recoveries (failed)", f"{report.recoveries} ({report.recoveries_failed})"),
        ("cycles not brought back", len(report.not_brought_back)),
        ("rows written", report.rows_written), ("rows lost", report.rows_lost),
        ("ids used twice", report.ids_used_twice), ("orphans", report.orphans),
        ("torn rows (packets cut by a death)", report.torn_rows),
        ("ids above lastid", report.ids_above_lastid),
        ("seconds with two ID servers", report.seconds_two_id_servers),
        ("seconds with no ID server", report.seconds_no_id_server),
        ("verdict", "PASSED" if report.passed else "FAILED"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"  finding: {f}" for f in report.not_brought_back]
    lines += [f"  {name}: {d}" for name, ds in report.checker_details.items() for d in ds[:5]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not stopping.in_own_session():
        return stopping.relay([sys.executable, "-m", "rehearsal.nemesis", *argv])
    parser = argparse.ArgumentParser(prog="python -m rehearsal.nemesis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=10, metavar="N", help="incident cycles (default 10)")
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="seed of the faults; replays the run")
    parser.add_argument("--minutes", type=float, metavar="M",
                        help="start no cycle after M minutes (of this part, with --resume); Ctrl-C also "
                             "stops the run after the cycle it is in")
    parser.add_argument("--incidents", type=float, default=INCIDENTS, metavar="P",
                        help=f"share of cycles with an MS incident, 0 to 1 (default {INCIDENTS}); the others "
                             "have only faults that must not move authority")
    parser.add_argument("--killed-runs", type=float, default=KILLED_RUNS, metavar="P",
                        help="share of the procedure runs first started in a process of their own and SIGKILLed "
                             f"after a drawn change, 0 to 1 (default {KILLED_RUNS}; none on embedded Prefect)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the fault log included)")
    parser.add_argument("--workdir", type=Path,
                        help="where to build the pair and keep the run, to continue it (default: a temporary "
                             "directory, removed at the end)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run stopped in --workdir, with its own plan (its seed, cycles, "
                             "shares and broken rule); only --minutes and --json apply")
    parser.add_argument("--prefect", choices=PREFECT_MODES, default="own-server",
                        help="own-server (default): a Prefect server on PostgreSQL started for the run, "
                             "restarted as a fault; embedded: embedded Prefect (no server restart, no "
                             "procedure killed in a process of its own). Ignored when PREFECT_API_URL is set")
    parser.add_argument("--break", dest="broken", choices=sorted(BREAKS),
                        help="run with a safety rule removed, to see the checker catch it: "
                             + "; ".join(f"{k}: {v}" for k, v in BREAKS.items()))
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error(f"--cycles {args.cycles}: give at least 1")
    for name in ("incidents", "killed_runs"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: give a share from 0 to 1")
    try:
        with stopping.stop_requests() as stop:
            report, workdir, cycles = run_part(args, stop)
    except NemesisError as exc:
        parser.error(str(exc))
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(table(report))
    if report.cycles < cycles:
        if workdir is None:
            then = "it ran in a temporary directory, now removed: give --workdir to keep a run to go on with"
        elif report.prefect == "embedded":
            then = "a run on embedded Prefect cannot be continued: its records are gone with it"
        else:
            then = f"to go on: python -m rehearsal.nemesis --resume --workdir {workdir}"
        print(f"stopped after cycle {report.cycles} of {cycles}; {then}", file=sys.stderr)
    return 0 if report.passed else 1


def run_part(args: argparse.Namespace, stop: threading.Event) -> tuple[NemesisReport, Path | None, int]:
    """A new run, or the next part of the one in ``--workdir`` (ended early once
    ``stop`` is set): its report, the workdir it is kept in (None: a temporary
    one) and its cycles in all."""
    workdir = args.workdir.resolve() if args.workdir else None
    if args.resume:
        if workdir is None:
            raise NemesisError("--resume: give the --workdir of the run to continue")
        saved, api_url = saved_run(workdir), os.environ.get("PREFECT_API_URL")
        plan, mode = Plan(**saved["plan"]), "own-server"  # or the server of PREFECT_API_URL, checked here
        if saved["prefect"] == "own-server" and api_url:
            raise NemesisError(f"the run in {workdir} has a Prefect server of its own: unset PREFECT_API_URL")
        if saved["prefect"] != "own-server" and api_url != saved["prefect"]:
            raise NemesisError(f"the run in {workdir} ran on the Prefect server at {saved['prefect']}: "
                               "set PREFECT_API_URL to it to continue")
    else:
        saved, plan, mode = None, Plan(args.cycles, args.seed, args.incidents, args.killed_runs, args.broken), \
            args.prefect
        if workdir is not None and ((workdir / SAVED).exists() or (workdir / "pair").exists()):
            raise NemesisError(f"{workdir} holds a run already: --resume to continue it, or another --workdir")
    with tempfile.TemporaryDirectory(prefix="antelope-ha-nemesis-") as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        with prefect_api(mode, where, keep=workdir is not None) as server:
            from rehearsal.incidents import run  # once the API is set: Prefect reads its settings on import

            report = run(where, plan, args.minutes, args.json, server, saved, stop)
    return report, workdir, plan.cycles


if __name__ == "__main__":
    sys.exit(main())
