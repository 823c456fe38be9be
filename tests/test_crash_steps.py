"""Crash a procedure's process (SIGKILL) after each of its steps and in the
middle of each step, rerun the procedure, and check that the pair ends right:
for the failover, fallback and recovery.

The list of kill points is not written here: one clean run of the flow in a
child process (tests/flowproc.py) lists its steps (Prefect task runs) and its
changes (site commands that change something, files written on a site, saves
of the pair state). Each step gives a point "killed after it completed" and,
if it changes anything, a point "killed in the middle", right after its middle
change.

Two points after which the same changes have been made leave the same world
behind: the same files and processes on the sites, the same record, the same
dead lock holder. Only Prefect's account of the dead run differs, and a rerun
is a new run that does not read it. Each such world is crashed and rerun once;
the table lists every point and names the case that covers it.

The crashed run and the rerun are child processes on the test's Prefect
server; the fallback's approvals are given through Prefect's resume API, as an
operator would. Cases run two at a time, each lane on its own pair: a
failover case on a fresh pair; fallback and recovery cases one after the
other on the lane's pair, which is first brought (in this process) to the
situation the procedure starts from.

Set RELIABILITY_REPORT_DIR to also write the tables there (docs/reliability.md
quotes them).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from antelope_ha.outages import check_here
from antelope_ha.css30 import scan_ids
from antelope_ha.descriptor import parse_descriptor
from rehearsal.drill import answering, newest_origin, origin_times
from flows.failover import failover
from flows.fallback import fallback
from flows.replicate import replicate_lastid
from simsite.orb import read_packets
from simsite.pair import SimPair
from tasks.lock import release_dead_run_lock
from rehearsal.pair import registered_sim_pair
from tasks.state import load_state
from tests.simpair import FAST, OPERATORS, approve

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

REPO = Path(__file__).resolve().parent.parent
LANES = 3
WRITERS, INFOSYS = ("orb2dbt", "orb2wf"), ("pub2web",)
NOT_REACHED = "completed without reaching the kill point: the step had less to change in this run"
# Flows run in this process one at a time (the lanes' children run side by side).
IN_PROCESS = threading.Lock()


# --- kill points ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KillPoint:
    step: str
    where: str  # "after" | "middle"
    kill: str  # the child's --kill argument
    changes_made: int  # changes made when the process dies: the world the rerun finds
    change: str = ""  # the change just made, for a kill in the middle


def read_trace(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def kill_points(trace: list[dict]) -> list[KillPoint]:
    """After each step; in the middle of each step that changes something."""
    points = []
    changes = [e for e in trace if e["kind"] == "change"]
    for step in (e for e in trace if e["kind"] == "step"):
        n = step["n"]
        points.append(KillPoint(step["name"], "after", f"after-step:{n}",
                                sum(1 for c in changes if c["after_steps"] < n)))
        own = [c for c in changes if c["after_steps"] == n - 1 and c["step"] == step["name"]]
        if own:
            k = (len(own) - 1) // 2
            points.append(KillPoint(step["name"], "middle", f"in-step:{n - 1}:{k + 1}",
                                    sum(1 for c in changes if c["after_steps"] < n - 1) + k + 1,
                                    f"{own[k]['site']}: {own[k]['action']}"))
    return points


def one_per_world(points: list[KillPoint]) -> dict[int, int]:
    """Point index -> index of the first point that leaves the same world (itself when first)."""
    first: dict[int, int] = {}
    return {i: first.setdefault(p.changes_made, i) for i, p in enumerate(points)}


def step_label(name: str) -> str:
    """A task run's name or a change without Prefect's run suffix or what
    differs from pair to pair or host to host (directory, interpreter,
    addresses, epochs, windows)."""
    name = re.sub(r"-[0-9a-f]{3}$", "", name)
    name = re.sub(r"\S*/bin/python[\d.]*\b", "<python>", name)
    name = re.sub(r"/\S*/pair/(ms|bus)/", "<site dir>/", name)
    name = re.sub(r"-\d{8}T[\d.]+Z\.bak", "-<time>.bak", name)
    name = re.sub(r"recovery/\d+-\d+", "recovery/<window>", name)
    name = re.sub(r"epoch \d+", "epoch <n>", name)
    name = re.sub(r"\b\d{10}\.\d+\b", "<time>", name)
    return re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "(own)", name)


# --- children ------------------------------------------------------------------------------------
class Children:
    """Runs ``tests.flowproc`` children through one fork server of its own
    (``python -m tests.flowproc --serve``), one child at a time."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.dir, self.count = out_dir, 0
        env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}  # PREFECT_API_URL: tests/conftest.py
        self.server = subprocess.Popen([sys.executable, "-m", "tests.flowproc", "--serve"], cwd=REPO, env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, flow: str, pair: str, trace: Path, kill: str | None = None) -> subprocess.CompletedProcess[str]:
        self.count += 1
        out, err = self.dir / f"child{self.count}.out", self.dir / f"child{self.count}.err"
        argv = [flow, pair, "--trace", str(trace), *(["--param", 'reason="crash test"'] if flow == "failover" else []),
                *(["--kill", kill] if kill else [])]
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.write(json.dumps({"argv": argv, "stdout": str(out), "stderr": str(err)}) + "\n")
        self.server.stdin.flush()
        answer = self.server.stdout.readline()
        if not answer:
            raise RuntimeError(f"the fork server exited {self.server.wait()}")
        return subprocess.CompletedProcess(argv, json.loads(answer)["returncode"], out.read_text(), err.read_text())

    def close(self) -> None:
        if self.server.stdin:
            self.server.stdin.close()
        self.server.wait(30)


@contextmanager
def children(out_dir: Path) -> Iterator[Children]:
    c = Children(out_dir)
    try:
        yield c
    finally:
        c.close()


def last_error(stderr: str) -> str:
    """The exception line of a child's traceback."""
    lines = [line for line in stderr.splitlines() if re.match(r"^[\w.]+(Error|Exception|Refused|InProgress)\b", line)]
    return (lines or [stderr.strip()[-300:]])[-1]


# --- the pair and what it must look like ---------------------------------------------------------
# Approvals are answered within a second; a paused run looks for the answer 5 times a second.
POLICY = FAST.model_copy(update={"approval_poll_s": 0.2})


@dataclass
class Case:
    """A running pair with its block saved under ``name`` and a fresh lastid
    replica on BUS. Nothing may be lost on BUS after ``bus_since``; MS must hold
    every packet after ``ms_since`` once the outage window is merged."""

    pair: SimPair
    name: str
    epoch: int = 1  # the epoch the procedure under test must end at
    bus_since: float = 0.0
    ms_since: float = 0.0

    def origins(self, site: str) -> list[float]:
        return origin_times(self.pair.paths(site).dir)

    def wait_rows(self, site: str, after: float) -> None:
        SimPair.wait_for(lambda: newest_origin(self.pair.paths(site).dir) > after, 60,
                         f"{site} writes rows after {after}")


@contextmanager
def crash_pair(tmp: Path, name: str, base_address: str) -> Iterator[Case]:
    with registered_sim_pair(tmp / "pair", name, POLICY, OPERATORS.enroll(name), base_address=base_address) as (pair, _):
        case = Case(pair, name)
        SimPair.wait_for(lambda: len(case.origins("ms")) >= 3 and len(case.origins("bus")) >= 3,
                         60, "rows at both sites")
        replicate_lastid(pair_name=name)  # a fresh replica of MS's lastid on BUS, as the watcher keeps it
        case.bus_since = max(case.origins("bus"))
        yield case


def lost_on(case: Case, site: str, since: float, source: str | None = None) -> int:
    """Packets that ``source`` (default: ``site`` itself) received after
    ``since``, up to ``site``'s newest row, with no origin on ``site`` (one
    origin per packet, see rehearsal/drill.py final_checks)."""
    case.wait_rows(site, time.time())  # its writers run again: what they have not written yet is not lost
    interval = case.pair.settings.packet_interval_s
    seqs = {round(t / interval) for t in case.origins(site)}
    first, last = round(since / interval), max(seqs)
    packets = read_packets(case.pair.paths(source or site).dir / "orb" / "packets")
    return len({p.seq for p in packets if first <= p.seq <= last} - seqs)


def duplicated_ids(pair: SimPair) -> int:
    return sum(s.duplicated_values for site in ("ms", "bus")
               for s in scan_ids(pair.paths(site).dir / "db" / "db").keys.values())


def authority_problems(case: Case, site: str, runs: dict[str, dict[str, bool]]) -> list[str]:
    """``site`` holds ``case.epoch`` on the record and on both markers, both
    descriptors name its ID server, and each task runs exactly where ``runs`` says."""
    pair, problems = case.pair, []
    state = load_state(case.name)
    if (state.authority.site, state.authority.epoch) != (site, case.epoch) or state.fallback_in_progress:
        problems.append(f"record says {state.authority.site} epoch {state.authority.epoch}"
                        f"{' (fallback in progress)' if state.fallback_in_progress else ''}, "
                        f"not {site} epoch {case.epoch}")
    for s in ("ms", "bus"):
        marker = pair.paths(s).dir / "ha" / "authority"
        if not marker.exists() or json.loads(marker.read_text()) != {"site": site, "epoch": case.epoch}:
            problems.append(f"{s} authority marker: {marker.read_text() if marker.exists() else 'missing'}")
    for task, where in runs.items():
        for s, expected in where.items():
            if bool(pair.task_pids(s, task)) != expected:
                problems.append(f"{task} {'not ' if expected else ''}running on {s}")
    want = pair.settings.sites[site].idserver_address
    for s in ("ms", "bus") if site == "ms" else ("bus",):
        db = pair.paths(s).dir / "db" / "db"
        if (server := parse_descriptor(db.read_text(), str(db)).dbidserver) != want:
            problems.append(f"{s} descriptor names dbidserver {server}, not {want}")
    return problems


# --- the three procedures ------------------------------------------------------------------------
@dataclass(frozen=True)
class Procedure:
    flow: str
    expected: str  # what "correct" means, for the report
    problems: Callable[[Case], list[str]]
    lost: Callable[[Case], int]


def failover_problems(case: Case) -> list[str]:
    problems = authority_problems(case, "bus", {t: {"bus": True, "ms": False}
                                                for t in ("dbids", *WRITERS, *INFOSYS)})
    if not (case.pair.paths("ms").dir / "ha" / "armed").exists():
        problems.append("ms is not armed")
    return problems


def fallback_problems(case: Case) -> list[str]:
    problems = authority_problems(case, "ms", {"dbids": {"ms": True, "bus": False},
                                               **{t: {"ms": True, "bus": True} for t in WRITERS},
                                               **{t: {"ms": True, "bus": False} for t in INFOSYS}})
    if (case.pair.paths("ms").dir / "ha" / "armed").exists():
        problems.append("ms is still armed")
    return problems


def recovery_problems(case: Case) -> list[str]:
    """MS authoritative with its writers running, and nothing lost by the
    completeness rule over every outage of the lane's pair so far."""
    problems = [f"{t} not running on ms" for t in WRITERS if not case.pair.task_pids("ms", t)]
    state = load_state(case.name)
    if (state.authority.site, state.authority.epoch) != ("ms", case.epoch):
        problems.append(f"record says {state.authority.site} epoch {state.authority.epoch}")
    dbs = [case.pair.paths(site).dir / "db" / "db" for site in ("ms", "bus")]
    return problems + [p for v in check_here(*dbs, state) for p in v.problems()]


FAILOVER = Procedure(
    "failover", "BUS authoritative at epoch 2 (record and both markers), dbids, writers and pub2web only on "
    "BUS, BUS's descriptor naming its own ID server, MS armed; every packet BUS received since the crash on BUS",
    failover_problems, lambda case: lost_on(case, "bus", case.bus_since))
FALLBACK = Procedure(
    "fallback", "MS authoritative at the next epoch (record and both markers), dbids and pub2web only on MS, "
    "writers on both, both descriptors naming MS's ID server, MS not armed; every packet BUS received since "
    "the failover on BUS", fallback_problems, lambda case: lost_on(case, "bus", case.bus_since))
RECOVERY = Procedure(
    "recovery", "MS still authoritative, its writers running; by the completeness rule read from both sites' "
    "files, no row lacking, no orphan, no id naming two rows, over every outage so far; every packet BUS "
    "received from MS's last row before the outage on, with its origin on MS", recovery_problems,
    lambda case: lost_on(case, "ms", case.ms_since, "bus"))


@contextmanager
def in_process() -> Iterator[None]:
    """One flow at a time in this process; without heartbeats in lane threads too (tests/conftest.py)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with IN_PROCESS, temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def into_outage(case: Case) -> None:
    """Where the fallback starts: MS lost power, BUS took over (a fresh replica
    first, as the schedule keeps it), MS is back, rtexec not yet started."""
    with in_process():
        replicate_lastid(pair_name=case.name)
    case.ms_since = max(case.origins("ms"))
    case.pair.power_off("ms")
    with in_process():
        failover(pair_name=case.name, reason="crash test: MS powered off")
    case.bus_since = max(case.origins("bus"))
    case.wait_rows("bus", case.bus_since)
    case.pair.power_on("ms", start_rtexec=False)
    case.epoch = load_state(case.name).authority.epoch + 1  # what the fallback opens


# --- running the cases ---------------------------------------------------------------------------
@dataclass
class Row:
    point: KillPoint
    rerun: str
    lost: int
    duplicated: int
    problems: list[str] = field(default_factory=list)
    same_as: int | None = None  # 0-based index of the row whose case covers this point


def crash_and_rerun(run: Children, proc: Procedure, case: Case, point: KillPoint, trace: Path) -> Row:
    killed = run.run(proc.flow, case.name, trace, point.kill)
    if killed.returncode == 0 and point.where == "middle":
        # The step found less to change this time (e.g. rtexec had already
        # restarted a writer after the descriptor changed): the run went
        # through; it is checked like a rerun, and the table says so.
        rerun, outcome = killed, NOT_REACHED
    elif killed.returncode != -9:
        return Row(point, f"not killed (exit {killed.returncode}): {last_error(killed.stderr)}", -1, -1)
    else:
        release_dead_run_lock(case.name)
        rerun = run.run(proc.flow, case.name, trace.with_suffix(".rerun"))
        outcome = "completed"
    if rerun.returncode != 0 and "ProcedureInProgress" in last_error(rerun.stderr):
        # a loaded test server can take longer than the lock's 5 s wait to grant a free slot
        release_dead_run_lock(case.name)
        rerun = run.run(proc.flow, case.name, trace.with_suffix(".rerun2"))
        outcome = "completed (at the second try: the lock was not granted within 5 s)"
    if rerun.returncode != 0:
        outcome = f"failed: {last_error(rerun.stderr)}"
    return Row(point, outcome, proc.lost(case), duplicated_ids(case.pair), proc.problems(case))


def worlds(points: list[KillPoint]) -> tuple[dict[int, int], list[int]]:
    """Which case covers each point, and the points to run (the first of each world)."""
    covered_by = one_per_world(points)
    return covered_by, sorted(set(covered_by.values()))


def tabulate(points: list[KillPoint], covered_by: dict[int, int], ran: dict[int, Row]) -> list[Row]:
    return [ran[i] if covered_by[i] == i else Row(p, "", 0, 0, same_as=covered_by[i]) for i, p in enumerate(points)]


def discover(run: Children, proc: Procedure, case: Case, trace: Path) -> list[KillPoint]:
    """A clean run in a child lists the kill points, and must itself end right."""
    done = run.run(proc.flow, case.name, trace)
    assert done.returncode == 0, done.stderr[-3000:]
    assert proc.problems(case) == [], proc.problems(case)
    points = kill_points(read_trace(trace))
    assert len(points) >= 8 and {p.where for p in points} == {"after", "middle"}, points
    return points


def lane_address(lane: int) -> str:
    return f"127.0.{10 + lane}.2"  # each lane its own addresses: lanes run side by side


def failover_table(tmp: Path) -> list[Row]:
    """Each case on a fresh pair with MS up, so that fencing has work to do."""
    with crash_pair(tmp / "discover", "crash-failover-discover", "127.0.9.2") as case, \
            children(tmp / "discover-children") as run:
        case.epoch = 2
        points = discover(run, FAILOVER, case, tmp / "discover.trace")
    covered_by, firsts = worlds(points)

    def lane(k: int) -> list[tuple[int, Row]]:
        rows = []
        with children(tmp / f"lane{k}-children") as run:
            for i in firsts[k::LANES]:
                with crash_pair(tmp / f"case{i}", f"crash-failover-{i}", lane_address(k)) as case:
                    case.epoch = 2
                    rows.append((i, crash_and_rerun(run, FAILOVER, case, points[i], tmp / f"case{i}.trace")))
        return rows

    with ThreadPoolExecutor(LANES) as pool:
        ran = dict(r for rows in pool.map(lane, range(LANES)) for r in rows)
    return tabulate(points, covered_by, ran)


def fallback_and_recovery_tables(tmp: Path) -> tuple[list[Row], list[Row]]:
    """Cycles on each lane's pair: MS loses power and BUS takes over (in this
    process); a fallback case; a recovery case of the outage just made."""
    with crash_pair(tmp / "discover", "crash-cycle-discover", "127.0.9.2") as case, \
            children(tmp / "discover-children") as run:
        into_outage(case)
        fb_points = discover(run, FALLBACK, case, tmp / "discover-fallback.trace")
        rc_points = discover(run, RECOVERY, case, tmp / "discover-recovery.trace")
    fb_covered, fb_firsts = worlds(fb_points)
    rc_covered, rc_firsts = worlds(rc_points)

    def lane(k: int) -> tuple[list[tuple[int, Row]], list[tuple[int, Row]]]:
        fb_rows, rc_rows = [], []
        fb_mine, rc_mine = fb_firsts[k::LANES], rc_firsts[k::LANES]
        with crash_pair(tmp / f"lane{k}", f"crash-cycle-{k}", lane_address(k)) as case, \
                children(tmp / f"lane{k}-children") as run:
            for j in range(max(len(fb_mine), len(rc_mine))):
                into_outage(case)
                if j < len(fb_mine):
                    i = fb_mine[j]
                    fb_rows.append((i, crash_and_rerun(run, FALLBACK, case, fb_points[i], tmp / f"fallback{i}.trace")))
                else:
                    with in_process():
                        fallback(pair_name=case.name)
                if j < len(rc_mine):
                    i = rc_mine[j]
                    rc_rows.append((i, crash_and_rerun(run, RECOVERY, case, rc_points[i], tmp / f"recovery{i}.trace")))
        return fb_rows, rc_rows

    with ThreadPoolExecutor(LANES) as pool:
        lanes = list(pool.map(lane, range(LANES)))
    fb_ran = dict(r for fb, _ in lanes for r in fb)
    rc_ran = dict(r for _, rc in lanes for r in rc)
    return tabulate(fb_points, fb_covered, fb_ran), tabulate(rc_points, rc_covered, rc_ran)


def table(rows: list[Row]) -> str:
    lines = ["| # | step | killed | rerun | rows lost | ids used twice | end state |",
             "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        killed = "after it completed" if r.point.where == "after" else f"in the middle, right after `{r.point.change}`"
        killed = step_label(killed)
        if r.same_as is not None:
            lines.append(f"| {i} | {step_label(r.point.step)} | {killed} | as #{r.same_as + 1}: "
                         f"the same {r.point.changes_made} changes made | | | |")
            continue
        state = "correct" if not r.problems else "; ".join(r.problems)
        lines.append(f"| {i} | {step_label(r.point.step)} | {killed} | {r.rerun} | {r.lost} | {r.duplicated} | {state} |")
    return "\n".join(lines) + "\n"


def report(proc: Procedure, rows: list[Row]) -> None:
    """Print and keep the table; fail on any case that did not end right."""
    text = table(rows)
    print(f"\n{proc.flow}: {proc.expected}\n\n{text}")
    if out := os.environ.get("RELIABILITY_REPORT_DIR"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"crash-{proc.flow}.md").write_text(text)
    ran = [r for r in rows if r.same_as is None]
    bad = [r for r in ran if not r.rerun.startswith("completed") or r.lost or r.duplicated or r.problems]
    assert not bad, "\n" + text
    assert len([r for r in ran if r.rerun != NOT_REACHED]) >= len(ran) - 3, "\n" + text  # nearly all real crashes


# --- the tests -----------------------------------------------------------------------------------
def test_kill_points_that_leave_the_same_world_are_run_once():
    trace = [{"kind": "step", "n": 1, "name": "read"},
             {"kind": "change", "after_steps": 1, "step": "stop", "site": "ms", "action": "a"},
             {"kind": "change", "after_steps": 1, "step": "stop", "site": "ms", "action": "b"},
             {"kind": "step", "n": 2, "name": "stop"},
             {"kind": "step", "n": 3, "name": "check"}]
    points = kill_points(trace)
    assert [(p.step, p.where, p.kill, p.changes_made) for p in points] == [
        ("read", "after", "after-step:1", 0), ("stop", "after", "after-step:2", 2),
        ("stop", "middle", "in-step:1:1", 1), ("check", "after", "after-step:3", 2)]
    assert worlds(points) == ({0: 0, 1: 1, 2: 2, 3: 1}, [0, 1, 2])


def test_rerun_right_after_a_crash_is_refused_until_the_lock_is_released(tmp_path):
    """A killed run's lock lease outlives it (lease_duration 60 s): a rerun at
    once is refused, naming the dead run."""
    with crash_pair(tmp_path / "lock", "crash-lock", "127.0.9.2") as case, children(tmp_path / "children") as run:
        assert run.run("failover", case.name, tmp_path / "lock.trace", "after-step:1").returncode == -9
        refused = run.run("failover", case.name, tmp_path / "refused.trace")
        assert refused.returncode != 0
        assert re.search(r"refused: failover cannot start while failover run \S+ \(\S+\) is in progress "
                         r"on pair crash-lock", refused.stderr), refused.stderr[-2000:]
        assert load_state(case.name).authority.site == "ms"


@pytest.mark.timeout(900)
def test_failover_converges_after_a_crash_at_every_step(tmp_path):
    report(FAILOVER, failover_table(tmp_path))


@pytest.fixture(scope="module")
def cycle_tables(tmp_path_factory) -> tuple[list[Row], list[Row]]:
    with answering("fallback", lambda n: approve()):
        return fallback_and_recovery_tables(tmp_path_factory.mktemp("cycles"))


@pytest.mark.timeout(1200)
def test_fallback_converges_after_a_crash_at_every_step(cycle_tables):
    report(FALLBACK, cycle_tables[0])


@pytest.mark.timeout(1200)
def test_recovery_converges_after_a_crash_at_every_step(cycle_tables):
    report(RECOVERY, cycle_tables[1])
