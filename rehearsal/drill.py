"""The drill: the whole cycle on a simulated pair, measured.

  writers running at both sites -> MS crashes -> health detects it -> automatic
  failover -> BUS writes with its own ids -> MS restored (and fenced) ->
  fallback (two approvals) -> recovery of MS's gap -> final checks

Run with ``make drill`` (or ``python -m rehearsal.drill [--json] [--interactive]
[--probe-interval S] [--rate N] [--seed N]``; ``make drill ARGS="--rate 50"``).
The final checks read both sites' files with the completeness rule the
recovery verifies (antelope_ha/completeness.py) over every outage on the
record and every table, and count, as a second opinion, the ORB packets BUS
received that have no origin on MS. Exit status 1 if any row was lost, any
row on MS references a row it lacks, or any id was used twice.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from secrets import randbelow

import httpx
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from antelope_ha import completeness, outages
from antelope_ha.approvers import DRIFT_STEPS, STEP_S, Approver, code_at, new_secret, secret_block_name, step_at
from antelope_ha.config import PairPolicy
from antelope_ha.css30 import TABLES, read_table, scan_ids
from antelope_ha.idscan import ids_report
from flows.calling import call_flow
from flows.failover import failover
from flows.fallback import fallback
from flows.health import health
from flows.recovery import recovery
from flows.replicate import replicate_lastid
from simsite.orb import read_packets
from simsite.pair import SimPair
from tasks.operators import save_secret
from tasks.pair import register_pair
from tasks.sites import close_all
from tasks.state import load_state

CATCH_UP_S = 180.0  # how long writers may take to write what queued up while they could not
# lastid_margin covers the ids MS may issue after the replica it is added to: at the default rate
# (5 packets a second, 2 arids a packet and site, 20 a second) 1000 is 50 s of them. The drill
# scales it with its rate, as a site sizes it for its own (docs/configuration.md, lastid_margin).
MARGIN_COVER_S = 50.0
DRILL_POLICY = PairPolicy(failures_before_failover=3, probe_interval_s=1.0, probe_timeout_s=1.0,
                          hold_down_s=3600, lastid_margin=1000, lastid_max_age_s=600,
                          approval_timeout_s=300, approval_poll_s=1)
# The operators the drill enrolls (each with a fresh one-time code secret) and answers as.
DRILL_OPERATORS = ["grace", "heidi", "ivan"]


@dataclass
class Step:
    name: str
    start: float
    end: float | None = None
    outcome: str = "running"


@dataclass
class DrillReport:
    steps: list[Step] = field(default_factory=list)
    detection_s: float | None = None
    failover_s: float | None = None
    fallback_s: float | None = None
    recovery_s: float | None = None
    rows_written: int = 0
    rows_required: int = 0  # rows of BUS that MS must hold, by the completeness rule
    rows_lost: int = -1  # of those, not on MS byte for byte
    lost_by_table: dict[str, int] = field(default_factory=dict)
    orphans: int = -1
    duplicate_ids: int = -1  # ids used twice within a site, or naming two rows across the sites
    gaps: list[list[float]] = field(default_factory=list)  # MS's gaps, [start, end] epoch seconds
    packets_missing: int = -1  # ORB packets BUS received with no origin on MS (one origin per packet)
    problems: list[str] = field(default_factory=list)  # the rule's findings and MS's id scan's problems
    seed: int = 1
    rate: float = 5.0  # packets per second
    probe_interval_s: float = 1.0
    approvals: list[dict] = field(default_factory=list)
    passed: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class Timeline:
    """Steps as they happen, printed live for the person watching."""

    def __init__(self, report: DrillReport, quiet: bool):
        self.report, self.quiet, self.t0 = report, quiet, time.time()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self.t0:7.2f} s] {text}", flush=True)

    def step(self, name: str, action: Callable[[], str | None]) -> str | None:
        step = Step(name, time.time())
        self.report.steps.append(step)
        self.say(f"▶ {name}")
        try:
            result = action()
        except BaseException as exc:
            step.end, step.outcome = time.time(), f"failed: {exc}"
            self.say(f"✗ {name}: {exc}")
            raise
        step.end, step.outcome = time.time(), result or "done"
        self.say(f"✓ {name} ({step.end - step.start:.2f} s){': ' + result if result else ''}")
        return result


def origin_times(site_dir: Path) -> list[float]:
    path = site_dir / "db" / "db.origin"
    return [float(r["time"]) for r in read_table(path, TABLES["origin"])] if path.exists() else []


def newest_origin(site_dir: Path, records: int = 64) -> float:
    """The latest time among the last ``records`` origins of the site (0 if none).
    Writers append in packet order, so this is the newest they wrote; waits poll
    it, because parsing a whole table ten times a second took the CPU the
    writers needed to catch up."""
    table = TABLES["origin"]
    length, start, width = table.record_length, table.offset("time"), table.field("time").width
    try:
        with open(site_dir / "db" / "db.origin", "rb") as f:
            end = f.seek(0, 2) // length * length  # a record being appended is left out
            f.seek(max(0, end - records * length))
            tail = f.read(end - f.tell())
    except FileNotFoundError:
        return 0.0
    return max((float(tail[i + start:i + start + width]) for i in range(0, len(tail), length)), default=0.0)


def rows_in(site_dir: Path) -> int:
    files, _ = completeness.table_files(site_dir / "db" / "db")
    return sum(sum(1 for _ in open(p)) for _, p in files)


def answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.3) as s:
            s.sendall(b"ping\n")
            return s.recv(64).startswith(b"pong")
    except OSError:
        return False


def wait_until(what: str, condition: Callable[[], bool], timeout_s: float = 60.0, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"drill: {what} did not happen within {timeout_s:g} s")
        time.sleep(poll_s)


def answer_paused_runs(stop: threading.Event, flow_name: str, answer: Callable[[int], dict | None],
                       records: list[dict]) -> None:
    """Answer each pause of ``flow_name`` runs through Prefect's resume API;
    ``answer(n)`` gives the n-th answer (0-based; answers the form refused
    count), or None to leave that pause unanswered."""
    seen: set = set()
    while not stop.is_set():
        try:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
        except httpx.HTTPError:  # the server restarting: look again at the next poll
            runs = []
        for run in runs:
            key = (run.id, run.state.state_details.pause_key if run.state else None)
            if key in seen:
                continue
            given = answer(len(records))
            seen.add(key)
            if given is None:
                continue
            # the record is published: the one-time code stays out of it
            record = {"run": str(run.id), **{k: v for k, v in given.items() if k != "code"}, "at": time.time()}
            try:
                resume_flow_run(run.id, run_input=given)
            except RuntimeError as exc:  # the form refused it (REJECT): the run waits on under the same key
                seen.discard(key)
                record["refused"] = str(exc)
            except httpx.HTTPError as exc:  # not delivered (the server restarting): the run waits on
                seen.discard(key)
                record["undelivered"] = str(exc)
            records.append(record)
        stop.wait(0.3)


@contextlib.contextmanager
def answering(flow_name: str, answer: Callable[[int], dict | None],
              records: list[dict] | None = None) -> Iterator[list[dict]]:
    """``answer_paused_runs`` in a background thread while the block runs; yields
    its records (``records``, when given, for the caller to keep)."""
    records = [] if records is None else records
    stop = threading.Event()
    thread = threading.Thread(target=answer_paused_runs, args=(stop, flow_name, answer, records), daemon=True)
    thread.start()
    try:
        yield records
    finally:
        stop.set()
        thread.join(10)


@dataclass
class ScriptedOperators:
    """Operators answering by script with the codes their authenticator apps
    would show: each code once (at most two a time step each: the current one
    and the next, both within the drift), and never the person who gave the
    answer before (the two-people rule). Enrolled for a pair by saving their
    secrets in its Secret blocks."""

    secrets: dict[str, str]
    used: dict[str, int] = field(default_factory=dict)
    last: str | None = None

    @classmethod
    def new(cls, names: list[str]) -> ScriptedOperators:
        return cls({name: new_secret() for name in names})

    def enroll(self, pair_name: str) -> list[Approver]:
        """The operators, listed for ``pair_name``, their secrets saved for it."""
        listed = []
        for name, secret in self.secrets.items():
            listed.append(Approver(name=name, contact=f"{name}@drill.invalid",
                                   secret_block=secret_block_name(pair_name, name)))
            save_secret(listed[-1].secret_block, secret)
        return listed

    def answer(self, operator: str | None = None, **fields: str) -> dict:
        """An answer with ``fields`` (decision, reason, confirm_site) by
        ``operator``, or the first one free to answer; when none is, at the
        next time step."""
        while True:
            here = step_at(time.time())
            for name in [operator] if operator else self.secrets:
                if name == self.last and operator is None:
                    continue
                step = next((s for s in (here, here + 1) if s > self.used.get(name, -1)), None)
                if step is not None:
                    self.used[name], self.last = step, name
                    return {"operator": name, "code": code_at(self.secrets[name], step * STEP_S), **fields}
            time.sleep((here + 1) * STEP_S - time.time() + 0.1)

    def wrong_code(self, operator: str) -> str:
        """A code the flow judges wrong for ``operator`` now: none of the codes
        their app shows within the drift. Using it spends none of theirs."""
        now = time.time()
        valid = {code_at(self.secrets[operator], now + d * STEP_S) for d in range(-DRIFT_STEPS - 1, DRIFT_STEPS + 2)}
        while (code := f"{randbelow(1_000_000):06d}") in valid:
            pass
        return code


def ask_terminal(site: str, operators: ScriptedOperators) -> dict:
    print(f"\nThe fallback is waiting for approval (site {site}). Operators: {', '.join(operators.secrets)}; "
          "the drill shows each one's code as their app would.", flush=True)
    name = input("your name: ").strip()
    if name in operators.secrets:
        print(f"{name}'s code now: {code_at(operators.secrets[name], time.time())}", flush=True)
    return {"operator": name, "code": input("one-time code: ").strip(),
            "decision": input("approve or reject: ").strip(),
            "reason": input("reason: ").strip(), "confirm_site": input("type the site to confirm: ").strip()}


@flow(name="drill", description="Failover, recovery and fallback on a simulated pair, measured.")
def drill(workdir: str, interactive: bool = False, quiet: bool = False, probe_interval_s: float = 1.0,
          rate: float = 5.0, seed: int = 1) -> DrillReport:
    """The whole cycle on a new simulated pair under ``workdir``: health probes
    every ``probe_interval_s``, the ORBs receive ``rate`` packets a second (each
    an event with two arrivals and a waveform segment), event locations drawn
    from ``seed``."""
    report = DrillReport(seed=seed, rate=rate, probe_interval_s=probe_interval_s)
    policy = DRILL_POLICY.model_copy(update={"probe_interval_s": probe_interval_s,
                                             "lastid_margin": round(MARGIN_COVER_S * 4 * rate)})
    tl = Timeline(report, quiet)
    pair = SimPair.create(Path(workdir) / "pair", packet_interval_s=1.0 / rate, seed=seed)
    ms_dir, bus_dir = pair.paths("ms").dir, pair.paths("bus").dir
    interval = pair.settings.packet_interval_s
    try:
        tl.step("start the simulated pair (MS, BUS, witness), each site behind its own sshd",
                lambda: (pair.serve_ssh(), pair.start()) and None)
        operators = ScriptedOperators.new(DRILL_OPERATORS)
        cfg = pair.pair_config(policy).model_copy(update={"operators": operators.enroll("drill")})
        register_pair("drill", cfg)
        tl.step("ids flowing at both sites", lambda: wait_until(
            "rows at both sites", lambda: len(origin_times(ms_dir)) >= 5 and len(origin_times(bus_dir)) >= 5)
            or f"MS {len(origin_times(ms_dir))} origins, BUS {len(origin_times(bus_dir))} origins")
        tl.step("replicate lastid MS -> BUS", lambda: replicate_lastid(pair_name="drill"))
        tl.step("health check, MS healthy", lambda: call_flow(health, pair_name="drill"))

        t_fail = time.time()
        tl.step("MS crashes (power off)", lambda: pair.power_off("ms") or None)
        first_id: list[float] = []
        watcher = threading.Thread(target=lambda: wait_until(
            "BUS ID server answers", lambda: answers(cfg.backup.idserver_address), 120, 0.05)
            or first_id.append(time.time()), daemon=True)
        watcher.start()

        def detect_and_fail_over() -> str:
            deadline = time.time() + 60
            while time.time() < deadline:
                started = time.time()
                decision = call_flow(health, pair_name="drill")
                if decision.startswith("failover"):  # on a server, the event it emits starts the failover
                    report.detection_s = round(started - t_fail, 2)
                    return failover(pair_name="drill", reason=decision.split(": ", 1)[1], by="automation")
                time.sleep(max(0.0, policy.probe_interval_s - (time.time() - started)))
            raise TimeoutError(f"no failover within 60 s of MS's crash; last decision: {decision}")
        tl.step("health detects the failure and fails over, without a person", detect_and_fail_over)
        watcher.join(10)
        report.failover_s = round(first_id[0] - t_fail, 2) if first_id else None
        t_failover = time.time()
        # At high rates the writers work off a backlog first: one ID server serves them all.
        tl.step("BUS writes with its own ids", lambda: wait_until(
            "BUS rows after the failover", lambda: newest_origin(bus_dir) > t_failover,
            CATCH_UP_S) or None)

        tl.step("MS repaired and powered on (rtexec not started)", lambda: pair.power_on("ms", start_rtexec=False) or None)
        tl.step("health fences MS as soon as it is back", lambda: call_flow(health, pair_name="drill"))

        def answer(_: int) -> dict:
            if interactive:
                if report.approvals and "refused" in report.approvals[-1]:
                    print(f"refused by the form: {report.approvals[-1]['refused']}", flush=True)
                return ask_terminal(cfg.main.name, operators)
            return operators.answer(decision="approve", reason="scheduled drill", confirm_site=cfg.main.name)
        t0 = time.time()
        with answering("fallback", answer, report.approvals):
            tl.step("fallback to MS (two approvals)", lambda: fallback(pair_name="drill", by="drill"))
        report.fallback_s = round(time.time() - t0, 2)
        t_fallback = time.time()
        # As an operator does: recover once both sites' writers have written past the fallback
        # (a busy BUS writes the outage's last events late, and a check before then sees fewer).
        tl.step("MS and BUS writers catch up", lambda: wait_until(
            "MS and BUS rows after the fallback",
            lambda: min(newest_origin(d) for d in (ms_dir, bus_dir)) > t_fallback,
            CATCH_UP_S) or None)

        t0 = time.time()
        tl.step("recover MS's gaps from BUS", lambda: recovery(pair_name="drill", by="drill"))
        report.recovery_s = round(time.time() - t0, 2)
        tl.step("final checks", lambda: final_checks(report, ms_dir, bus_dir, interval, "drill"))
    finally:
        close_all()
        tl.step("stop the simulated pair", lambda: pair.stop() or None)
    return report


def final_checks(report: DrillReport, ms_dir: Path, bus_dir: Path, interval: float, pair_name: str) -> str:
    """Nothing lost, by the completeness rule over every outage on the record,
    each site's files read here; the whole-database id scans of both sites; and
    every ORB packet BUS received between MS's first and last row with an
    origin on MS."""
    ms_db, bus_db = ms_dir / "db" / "db", bus_dir / "db" / "db"
    verdicts = outages.check_here(ms_db, bus_db, load_state(pair_name))
    report.rows_required = sum(sum(v.required.values()) for v in verdicts)
    report.rows_lost = sum(len(v.missing) for v in verdicts)
    report.lost_by_table = {t: sum(v.missing_by_table().get(t, 0) for v in verdicts)
                            for t in {t for v in verdicts for t in v.missing_by_table()}}
    report.orphans = sum(len(v.orphans) for v in verdicts)
    report.gaps = [[g.start, g.end] for v in verdicts for g in v.gaps]
    report.duplicate_ids = sum(len(v.twice) for v in verdicts) + sum(
        s.duplicated_values for d in (ms_db, bus_db) for s in scan_ids(d).keys.values())
    ids = ids_report(str(ms_db), str(ms_dir / "dbids" / "dbids.lastid"))
    report.problems = completeness.verification_problems(verdicts, ids.problems)  # a drill's db has no old ones

    ms_seqs = {round(t / interval) for t in origin_times(ms_dir)}
    first, last = min(ms_seqs), max(ms_seqs)
    expected = {p.seq for p in read_packets(bus_dir / "orb" / "packets") if first <= p.seq <= last}
    report.packets_missing = len(expected - ms_seqs)
    report.rows_written = rows_in(ms_dir)
    report.passed = (bool(verdicts) and not report.problems and report.packets_missing == 0
                     and report.duplicate_ids == 0)
    return (f"{len(report.gaps)} gaps; {report.rows_required} rows of BUS MS must hold, {report.rows_lost} "
            f"missing, {report.orphans} orphans, {report.duplicate_ids} ids used twice; {report.packets_missing} "
            f"packets with no origin on MS; {report.rows_written} rows on MS")


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--interactive", action="store_true", help="answer the approvals at the terminal")
    parser.add_argument("--workdir", help="where to build the simulated pair (default: a temporary directory)")
    parser.add_argument("--probe-interval", type=positive, default=1.0, metavar="S",
                        help="seconds between health probes (default 1)")
    parser.add_argument("--rate", type=positive, default=5.0, metavar="N",
                        help="ORB packets per second, each an event with two arrivals (default 5)")
    parser.add_argument("--seed", type=int, default=1, metavar="N", help="seed of the events' locations (default 1)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="antelope-ha-drill-") as tmp:
        report = drill(workdir=args.workdir or tmp, interactive=args.interactive, quiet=args.json,
                       probe_interval_s=args.probe_interval, rate=args.rate, seed=args.seed)
    if args.json:
        print(report.to_json())
    else:
        print(f"\ndetection {report.detection_s} s, failover {report.failover_s} s (MS failure to BUS "
              f"handing out ids), fallback {report.fallback_s} s, recovery {report.recovery_s} s")
        seconds = ", ".join(f"{end - start:.1f} s" for start, end in report.gaps)
        print(f"gaps {len(report.gaps)} ({seconds}), rows MS must hold {report.rows_required}, rows lost {report.rows_lost}"
              f"{' ' + str(report.lost_by_table) if report.lost_by_table else ''}, orphans {report.orphans}, "
              f"ids used twice {report.duplicate_ids}, packets missing {report.packets_missing}")
        for problem in report.problems:
            print(f"  {problem}")
        print(f"rows written {report.rows_written} (rate {report.rate:g}/s, probe every {report.probe_interval_s:g} s, "
              f"seed {report.seed}): {'PASSED' if report.passed else 'FAILED'}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
