"""The nemesis: many incident cycles on a simulated pair under faults drawn
from a seed, the pair brought back each time by the procedures themselves,
and the result judged by the independent checker (rehearsal/checker.py).

    python -m rehearsal.nemesis --cycles N --seed S [--minutes M] [--json]
    make nemesis CYCLES=N SEED=S

Writers run at both sites throughout. Each cycle, drawn from
``random.Random(seed)``: a few seconds of normal operation under the health
probes (with a writer or an ID server killed, the link BUS -> MS cut for a
while: none of which may move authority), then, in most cycles, an incident:
MS powered off at a drawn moment (sometimes under an operator's maintenance
pause, sometimes with BUS cut from the witness at the time), detected and
failed over by the health decision as the watcher does; BUS's writer or ID
server killed while BUS serves; MS powered on (without rtexec, as a repaired
host comes back); the fallback with scripted approvals given late, rejected,
left to time out, or given after MS was powered off at the gate; the
recovery, with MS sometimes powered off in the middle. Whatever a fault
left, the cycle ends only once the procedures have brought the pair back:
MS authoritative, recovered, both sites writing. A cycle they cannot bring
back within its limit is a finding: reported, and the run goes on from there.

The flows run in this process, one at a time, on the Prefect API of the
environment: embedded Prefect (``make nemesis``), or a server's
(PREFECT_API_URL, as the slow test's). Faults are applied by simsite, so a
worker or flow-run SIGKILL and a Prefect server restart are not among them
(tests/test_crash_steps.py and the end-to-end tests cover those, one at a time).

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
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from antelope_ha.config import PairPolicy
from deployments import cli
from flows.calling import call_flow
from rehearsal.drill import ScriptedOperators, answer_paused_runs, newest_origin, origin_times
from flows.failover import failover
from flows.fallback import fallback
from flows.health import health
from flows.recovery import recovery
from flows.replicate import replicate_lastid
from rehearsal import checker
from simsite.pair import SimPair
from antelope_ha.config import SiteConfig
from antelope_ha.site import Outcome
from tasks import realtime
from tasks.pair import register_pair
from tasks.sites import close_all
from tasks.state import load_state

PAIR = "nemesis"
OPERATORS = ["grace", "heidi", "ivan", "judy", "karl", "lena"]
# The margin covers the ids both sites' writers take in the oldest replica a failover accepts:
# the busiest key, arid, two a packet and site at 5 packets a second: 20 a second, 4,000 in 200 s.
POLICY = PairPolicy(failures_before_failover=2, probe_interval_s=0.5, probe_timeout_s=1.0, hold_down_s=3600,
                    lastid_margin=10000, lastid_max_age_s=200, approval_timeout_s=6, approval_poll_s=0.5)
BREAKS = {"margin": "the lastid safety margin removed",
          "stop-bus-dbids": "the fallback's step 'stop dbids on bus' removed"}
INCIDENTS = 0.75
REPLICATE_S = 60.0  # the watcher's default replication interval
CYCLE_LIMIT_S = 900.0  # a cycle not brought back within this is a finding
WRITERS = ("orb2dbt", "orb2wf")
GATE_ANSWERS = ("approve", "late", "reject", "timeout", "ms-off")


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
    minutes: float = 0.0
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
    ids_above_lastid: int = -1
    seconds_two_id_servers: float = -1.0
    seconds_no_id_server: float = -1.0
    handovers: list[dict] = field(default_factory=list)  # from the ID servers' own records
    checker_details: dict[str, list[str]] = field(default_factory=dict)
    fault_log: list[Fault] = field(default_factory=list)
    passed: bool = False


class Nemesis:
    def __init__(self, pair: SimPair, seed: int, report: NemesisReport, quiet: bool, incidents: float):
        self.pair, self.rng, self.report, self.quiet = pair, random.Random(seed), report, quiet
        # which cycles have an incident: a stream of its own, so that it depends on the seed alone
        self.incidents, self.incident_draws = incidents, random.Random(f"{seed}:incidents")
        self.t0 = time.time()
        self.cycle = 0
        self.operators = ScriptedOperators.new(OPERATORS)
        self.ms_off = False
        self.needs_recovery = False
        self.failing_since: float | None = None  # when MS was powered off, until the failover
        self.timers: list[threading.Timer] = []
        self.replicated_at = 0.0

    # --- the record -------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self.t0:8.2f} s] cycle {self.cycle}: {text}", flush=True)

    def fault(self, kind: str, detail: str, action: Callable[[], object]) -> None:
        action()
        self.report.fault_log.append(Fault(self.cycle, round(time.time() - self.t0, 3), kind, detail))
        self.say(f"FAULT {kind}: {detail}")

    def later(self, delay_s: float, kind: str, detail: str, action: Callable[[], object]) -> threading.Timer:
        """The fault in ``delay_s``, while the procedures run (a fault on a host
        that went down meanwhile is skipped, and said so)."""
        def apply() -> None:
            try:
                self.fault(kind, detail, action)
            except Exception as exc:
                self.say(f"fault {kind} not applied: {exc}")
        timer = threading.Timer(delay_s, apply)
        self.timers.append(timer)
        timer.start()
        return timer

    def authority(self) -> str:
        return load_state(PAIR).authority.site

    # --- faults ----------------------------------------------------------------------------
    def power_off_ms(self, kind: str = "ms-power-off", when: str = "") -> None:
        if not self.ms_off:
            self.ms_off, self.failing_since = True, time.time()
            self.fault(kind, f"MS powered off{when}", lambda: self.pair.power_off("ms"))

    def power_on_ms(self) -> None:
        if self.ms_off:
            self.fault("ms-power-on", "MS powered on (repaired; rtexec not started)",
                       lambda: self.pair.power_on("ms", start_rtexec=False))
            self.ms_off = False

    def minor_faults(self, most: int, within_s: float) -> None:
        """Up to ``most`` faults within ``within_s`` that must not move authority
        (drawn now, applied while the probes run)."""
        serving = self.authority()
        for _ in range(self.rng.randint(0, most)):
            at = self.rng.uniform(0.0, within_s)
            kind = self.rng.choice(["writer-killed", "writer-killed", "dbids-killed", "bus-ms-link-cut"])
            site, prog = self.rng.choice(["ms", "bus"]), self.rng.choice(WRITERS)
            held = round(self.rng.uniform(1.0, 2.5), 1)
            if kind == "dbids-killed" and not (serving == "ms" and self.ms_off):
                self.later(at, kind, f"dbids SIGKILLed on {serving}, the serving site (rtexec restarts it)",
                           lambda s=serving: self.pair.crash(s, "dbids"))
            elif kind == "bus-ms-link-cut":
                self.later(at, kind, f"link bus -> ms cut for {held} s", lambda: self.pair.cut_link("bus", "ms"))
                self.later(at + held, "bus-ms-link-healed", "link bus -> ms restored",
                           lambda: self.pair.heal_link("bus", "ms"))
            else:
                site = "bus" if self.ms_off else site
                self.later(at, "writer-killed", f"{prog} SIGKILLed on {site} (rtexec restarts it)",
                           lambda s=site, p=prog: self.pair.crash(s, p))

    # --- the procedures as the watcher and the operators run them ---------------------------
    def watch(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Health probes for ``seconds`` (or until ``until()``), failing over when it decides so."""
        deadline = time.time() + seconds
        while time.time() < deadline and not until():
            started = time.time()
            decision = call_flow(health, pair_name=PAIR)
            if decision.startswith("failover"):
                self.say(f"health: {decision}")
                failover(pair_name=PAIR, reason=decision.split(": ", 1)[1], by="automation")
                if self.authority() == "bus":
                    self.report.failovers += 1
                    self.needs_recovery = True
                    if self.failing_since is not None:
                        self.report.failover_s.append(round(time.time() - self.failing_since, 2))
                    self.failing_since = None
                    self.say("failed over: BUS authoritative")
            time.sleep(max(0.0, POLICY.probe_interval_s - (time.time() - started)))

    def answers(self, script: list[tuple[str, float]]) -> Callable[[int], dict | None]:
        """The operators' answers to the n-th pause of a fallback: (how, seconds late) from ``script``, then approve."""
        def answer(n: int) -> dict | None:
            how, wait = script[n] if n < len(script) else ("approve", 0.0)
            gate = f"approval {n + 1} of this fallback"
            if how == "timeout":
                self.fault("approval-timed-out", f"{gate} left unanswered", lambda: None)
                return None
            if how == "late":
                self.fault("approval-late", f"{gate} answered {wait} s late", lambda: time.sleep(wait))
            elif how == "ms-off":
                self.power_off_ms("ms-power-off-at-gate", f" while {gate} waits, then approved")
            decision = "reject" if how == "reject" else "approve"
            if how == "reject":
                self.fault("approval-rejected", f"{gate} rejected", lambda: None)
            return self.operators.answer(decision=decision, reason=f"nemesis cycle {self.cycle}", confirm_site="ms")
        return answer

    def run_fallback(self, script: list[tuple[str, float]]) -> None:
        records: list[dict] = []
        stop = threading.Event()
        answerer = threading.Thread(target=answer_paused_runs, args=(stop, "fallback", self.answers(script), records),
                                    daemon=True)
        answerer.start()
        started = time.time()
        try:
            outcome = fallback(pair_name=PAIR, by="nemesis")
        except Exception as exc:  # MS powered off under it: the rerun converges
            outcome = f"failed: {exc}"
        finally:
            stop.set()
            answerer.join(10)
        state = load_state(PAIR)
        if state.authority.site == "ms" and not state.fallback_in_progress:
            self.report.fallbacks += 1
            self.report.fallback_s.append(round(time.time() - started, 2))
            self.say(f"fallback done ({time.time() - started:.1f} s)")
        else:
            self.report.fallbacks_stopped += 1
            self.say(f"fallback stopped: {outcome.splitlines()[0][:160]}")

    def run_recovery(self) -> None:
        # As an operator does: once both sites have written past the fallback.
        self.both_write()
        self.replicate()
        timer = None
        if self.rng.random() < 0.2:
            timer = threading.Timer(self.rng.uniform(0.2, 3.0), self.power_off_ms,
                                    args=("ms-power-off-in-recovery", " during the recovery"))
            timer.start()
        try:
            recovery(pair_name=PAIR, by="nemesis")
            ok = not self.ms_off
        except Exception as exc:
            self.say(f"recovery failed: {str(exc).splitlines()[0][:160]}")
            ok = False
        if timer is not None:
            timer.cancel()
            timer.join()
        if ok:
            self.report.recoveries += 1
            self.needs_recovery = False
            self.say("recovery done")
        else:
            self.report.recoveries_failed += 1

    def replicate(self) -> None:
        """MS's lastid to BUS, as the watcher does every REPLICATE_S."""
        if time.time() - self.replicated_at > REPLICATE_S:
            replicate_lastid(pair_name=PAIR)
            self.replicated_at = time.time()

    def both_write(self) -> None:
        since = time.time()
        SimPair.wait_for(lambda: min(newest_origin(self.pair.paths(s).dir) for s in ("ms", "bus"))
                         > since, 60, "MS and BUS write")

    def bring_back(self, script: list[tuple[str, float]]) -> None:
        """The procedures, until MS is authoritative, recovered and both sites write."""
        deadline = time.time() + CYCLE_LIMIT_S
        while time.time() < deadline:
            state = load_state(PAIR)
            if state.authority.site == "bus" or state.fallback_in_progress:
                if self.ms_off:
                    time.sleep(self.rng.uniform(0.5, 2.0))
                    self.power_on_ms()
                    self.watch(POLICY.probe_interval_s)  # health fences MS as soon as it is back
                self.run_fallback(script)
                script = []
            elif self.ms_off:
                self.watch(60, lambda: self.authority() == "bus")
            elif self.needs_recovery:
                self.run_recovery()
            else:
                self.both_write()
                return
        raise TimeoutError(f"not brought back within {CYCLE_LIMIT_S:g} s")

    def run_cycle(self) -> None:
        rng = self.rng
        self.replicate()
        normal_s = rng.uniform(1.0, 3.0)
        self.minor_faults(2, normal_s)
        self.watch(normal_s)
        if self.incident_draws.random() < self.incidents and self.authority() == "ms":
            self.incident()
        script = ([(rng.choice(GATE_ANSWERS), round(rng.uniform(1.5, 4.0), 1)) for _ in range(2)]
                  if rng.random() < 0.6 else [])
        self.bring_back(script)
        for timer in self.timers:
            timer.join()
        self.timers.clear()

    def incident(self) -> None:
        rng = self.rng
        paused = rng.random() < 0.2
        witness_cut = not paused and rng.random() < 0.2
        if paused:
            self.operator("pause")
        if witness_cut:
            self.fault("bus-witness-cut", "link bus -> witness cut", lambda: self.pair.cut_link("bus", "witness"))
        self.failing_since = time.time()
        self.power_off_ms()
        if paused or witness_cut:
            self.watch(rng.uniform(1.5, 3.0))
            held = self.authority() == "ms"
            self.say(f"{'paused' if paused else 'witness cut'}: {'no failover (right)' if held else 'FAILED OVER'}")
            if not held:
                self.report.not_brought_back.append(f"cycle {self.cycle}: failed over while "
                                                    f"{'paused' if paused else 'BUS could not see the witness'}")
            if paused:
                self.operator("resume")
            else:
                self.fault("bus-witness-healed", "link bus -> witness restored",
                           lambda: self.pair.heal_link("bus", "witness"))
        self.watch(60, lambda: self.authority() == "bus")
        if self.authority() == "bus":
            serving_s = rng.uniform(1.0, 3.0)
            self.minor_faults(2, serving_s)
            self.watch(serving_s)

    def operator(self, what: str) -> None:
        """A person's ``antelope-ha pause`` / ``resume``."""
        command = {"pause": cli.pause, "resume": cli.resume}[what]
        with contextlib.redirect_stdout(sys.stderr):  # its message is for a terminal, not the report
            self.fault(f"operator-{what}", f"an operator runs antelope-ha {what}",
                       lambda: command(reason="nemesis: maintenance", by="lena", pair_name=PAIR))


@contextlib.contextmanager
def rule_removed(broken: str | None) -> Iterator[PairPolicy]:
    """The policy to run with; the code as it is, or with the rule ``broken`` removed."""
    if broken != "stop-bus-dbids":
        yield POLICY.model_copy(update={"lastid_margin": 0}) if broken == "margin" else POLICY
        return
    original = realtime.stop_task

    def stop_task(cfg: SiteConfig, name: str, dry_run: bool = False) -> Outcome:
        if cfg.name == "bus" and name == cfg.idserver_task:
            return Outcome(cfg.name, f"stop {name}", False, "not stopped: the rule is removed (--break)")
        return original(cfg, name, dry_run)

    realtime.stop_task = stop_task
    try:
        yield POLICY
    finally:
        realtime.stop_task = original


def run(workdir: Path, cycles: int, seed: int, minutes: float | None = None, quiet: bool = False,
        broken: str | None = None, rate: float = 5.0, incidents: float = INCIDENTS) -> NemesisReport:
    """``cycles`` cycles (fewer if ``minutes`` pass first) on a new pair under
    ``workdir``, an MS incident in a share ``incidents`` of them."""
    report = NemesisReport(seed=seed, incidents=incidents, broken_rule=BREAKS[broken] if broken else None,
                           prefect=os.environ.get("PREFECT_API_URL") or "embedded")
    pair = SimPair.create(workdir / "pair", packet_interval_s=1.0 / rate, seed=seed)
    nemesis = Nemesis(pair, seed, report, quiet, incidents)
    with rule_removed(broken) as policy:
        authority = run_cycles(pair, nemesis, policy, cycles, minutes)
    report.minutes = round((time.time() - nemesis.t0) / 60, 2)
    report.faults = dict(Counter(f.kind for f in report.fault_log))
    judged = checker.check(workdir / "pair", authority)
    for name in ("rows_written", "rows_lost", "ids_used_twice", "orphans", "ids_above_lastid",
                 "seconds_two_id_servers", "seconds_no_id_server"):
        setattr(report, name, getattr(judged, name))
    report.handovers = [asdict(h) for h in judged.handovers]
    report.checker_details = judged.details
    report.passed = judged.passed and not report.not_brought_back
    return report


def run_cycles(pair: SimPair, nemesis: Nemesis, policy: PairPolicy, cycles: int, minutes: float | None) -> str:
    """Start the pair, run the cycles, stop the pair; the site authoritative at the end."""
    report = nemesis.report
    try:
        pair.serve_ssh()
        pair.start()
        cfg = pair.pair_config(policy).model_copy(update={"operators": nemesis.operators.enroll(PAIR)})
        register_pair(PAIR, cfg)
        SimPair.wait_for(lambda: all(origin_times(pair.paths(s).dir) for s in ("ms", "bus")), 60, "rows at both sites")
        for n in range(1, cycles + 1):
            if minutes is not None and time.time() - nemesis.t0 > minutes * 60:
                break
            nemesis.cycle = n
            try:
                nemesis.run_cycle()
            except Exception as exc:  # a finding: the procedures did not bring the pair back
                report.not_brought_back.append(f"cycle {n}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                nemesis.say(f"NOT BROUGHT BACK: {exc}")
            report.cycles = n
    finally:
        for timer in nemesis.timers:
            timer.cancel()
        close_all()
        authority = load_state(PAIR).authority.site if report.cycles else "ms"
        pair.stop()
    return authority


def table(report: NemesisReport) -> str:
    durations = lambda xs: f"{min(xs):.1f} / {sorted(xs)[len(xs) // 2]:.1f} / {max(xs):.1f} s" if xs else "-"
    rows = [
        ("seed", report.seed), ("cycles", report.cycles), ("share with an MS incident", report.incidents),
        ("minutes", report.minutes),
        ("prefect", report.prefect), ("broken rule", report.broken_rule or "none"),
        ("faults", ", ".join(f"{k} {v}" for k, v in sorted(report.faults.items())) or "none"),
        ("failovers", report.failovers), ("failover min/median/max", durations(report.failover_s)),
        ("fallbacks (stopped)", f"{report.fallbacks} ({report.fallbacks_stopped})"),
        ("fallback min/median/max", durations(report.fallback_s)),
        ("recoveries (failed)", f"{report.recoveries} ({report.recoveries_failed})"),
        ("cycles not brought back", len(report.not_brought_back)),
        ("rows written", report.rows_written), ("rows lost", report.rows_lost),
        ("ids used twice", report.ids_used_twice), ("orphans", report.orphans),
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
    parser = argparse.ArgumentParser(prog="python -m rehearsal.nemesis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=10, metavar="N", help="incident cycles (default 10)")
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="seed of the faults; replays the run")
    parser.add_argument("--minutes", type=float, metavar="M", help="start no cycle after M minutes")
    parser.add_argument("--incidents", type=float, default=INCIDENTS, metavar="P",
                        help=f"share of cycles with an MS incident, 0 to 1 (default {INCIDENTS}); the others "
                             "have only faults that must not move authority")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the fault log included)")
    parser.add_argument("--workdir", type=Path, help="where to build the pair (default: a temporary directory)")
    parser.add_argument("--break", dest="broken", choices=sorted(BREAKS),
                        help="run with a safety rule removed, to see the checker catch it: "
                             + "; ".join(f"{k}: {v}" for k, v in BREAKS.items()))
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error(f"--cycles {args.cycles}: give at least 1")
    if not 0 <= args.incidents <= 1:
        parser.error(f"--incidents {args.incidents}: give a share from 0 to 1")
    with tempfile.TemporaryDirectory(prefix="antelope-ha-nemesis-") as tmp:
        report = run(args.workdir or Path(tmp), args.cycles, args.seed, args.minutes, args.json, args.broken,
                     incidents=args.incidents)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(table(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
