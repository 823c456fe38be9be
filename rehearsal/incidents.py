"""The nemesis's cycles: the faults, drawn from a seed, and the procedures
that bring the pair back each time (rehearsal/nemesis.py runs them and
reports; rehearsal/checker.py judges the files they leave).

Imported once the Prefect API to use is set: Prefect reads its settings when
it is first imported.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prefect.client.orchestration import get_client
from prefect.states import Crashed

from antelope_ha.config import PairPolicy, SiteConfig
from antelope_ha.decide import held
from antelope_ha.site import Outcome
from deployments import cli
from flows.calling import call_flow
from flows.failover import failover
from flows.fallback import fallback
from flows.health import health
from flows.recovery import recovery
from flows.replicate import replicate_lastid
from rehearsal import checker
from rehearsal.drill import ScriptedOperators, answering, newest_origin, origin_times
from rehearsal.nemesis import BREAKS, SAVED, Fault, NemesisReport, Plan
from simsite.pair import SimPair
from tasks import realtime
from tasks.lock import release_dead_run_lock, unfinished_runs
from tasks.pair import register_pair, save_pair
from tasks.sites import close_all
from tasks.state import load_state
from tests.servers import PrefectServer

T = TypeVar("T")
PROJECT_DIR = Path(__file__).resolve().parents[1]
PAIR = "nemesis"
OPERATORS = ["grace", "heidi", "ivan", "judy", "karl", "lena"]
# The margin covers the ids both sites' writers take in the oldest replica a failover accepts:
# the busiest key, arid, two a packet and site at 5 packets a second: 20 a second, 4,000 in 200 s.
POLICY = PairPolicy(failures_before_failover=2, probe_interval_s=0.5, probe_timeout_s=1.0, hold_down_s=3600,
                    lastid_margin=10000, lastid_max_age_s=200, approval_timeout_s=6, approval_poll_s=0.5)
REPLICATE_S = 60.0  # the watcher's default replication interval
CYCLE_LIMIT_S = 900.0  # a cycle not brought back within this is a finding
WRITERS = ("orb2dbt", "orb2wf")
GATE_ANSWERS = ("approve", "late", "reject", "timeout", "ms-off")
# The failover's own gate: a lastid replica older than the policy allows asks a person first
# (flows/failover.py); MS is already off there. A refusal holds automatic failover until an ack.
STALE_GATE_ANSWERS = ("approve", "late", "reject", "timeout")
# a killed run dies right after its K-th change, K drawn up to the changes a full run makes
# (docs/reliability.md, section 1: 13 for the failover, 24 for the fallback, 11 for the recovery)
CHANGES = {"failover": 13, "fallback": 24, "recovery": 11}
SERVER_RESTARTS = 0.15  # the share of procedure runs during which the Prefect server is restarted
POWER_OFF_IN_REPLICATION = 0.1  # the share of lastid replications MS is powered off in


class Nemesis:
    def __init__(self, pair: SimPair, seed: int, report: NemesisReport, quiet: bool, incidents: float,
                 server: PrefectServer | None, killed_runs: float):
        self.pair, self.rng, self.report, self.quiet = pair, random.Random(seed), report, quiet
        # which cycles have an incident: a stream of its own, so that it depends on the seed alone
        self.incidents, self.incident_draws = incidents, random.Random(f"{seed}:incidents")
        # the answers to the failover's stale-replica gate: a stream of its own, drawn only when it asks
        self.gate_draws = random.Random(f"{seed}:failover-gate")
        self.server = server  # ours to restart; None when the Prefect API is embedded or someone else's
        self.killed_runs = killed_runs
        self.api_url = os.environ.get("PREFECT_API_URL")  # for a procedure in a process of its own
        self.t0 = time.time()
        self.cycle = 0
        self.operators = ScriptedOperators.new(OPERATORS)
        self.ms_off = False
        self.needs_recovery = False
        self.failing_since: float | None = None  # when MS was powered off, until the failover
        self.timers: list[threading.Timer] = []
        self.replicated_at = 0.0
        self.server_up = threading.Event()
        self.server_up.set()
        self.server_back_at = 0.0  # when the last restart of the server ended

    # --- a run in parts ---------------------------------------------------------------------
    def progress(self, plan: Plan, windows: list[tuple[float, float]], own_server: bool) -> dict:
        """What the next part needs to go on as this run would have: the plan,
        the report so far, the draws' states, the times the pair ran."""
        return {"plan": asdict(plan), "prefect": "own-server" if own_server else self.report.prefect,
                "report": asdict(self.report), "seconds": time.time() - self.t0, "windows": windows,
                "random": self.rng.getstate(), "incident_random": self.incident_draws.getstate(),
                "gate_random": self.gate_draws.getstate(),
                "ms_off": self.ms_off, "needs_recovery": self.needs_recovery}

    def restore(self, saved: dict) -> list[tuple[float, float]]:
        """Go on from ``saved`` (``progress`` of the last part); the times the pair ran so far."""
        streams = [(self.rng, saved["random"]), (self.incident_draws, saved["incident_random"])]
        if "gate_random" in saved:  # kept since the failover's gate is answered
            streams.append((self.gate_draws, saved["gate_random"]))
        for rng, (version, state, gauss) in streams:
            rng.setstate((version, tuple(state), gauss))
        self.t0 = time.time() - saved["seconds"]
        self.ms_off, self.needs_recovery = saved["ms_off"], saved["needs_recovery"]
        self.cycle = self.report.cycles
        return [(a, b) for a, b in saved["windows"]]

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

    def when_server_up(self) -> None:
        """Wait out a restart of the Prefect server the nemesis is doing."""
        if not self.server_up.wait(300):
            raise TimeoutError("the Prefect server did not come back within 300 s of its restart")

    def restarted_since(self, since: float) -> bool:
        """Whether the server was restarted, or is being restarted, since ``since``."""
        return not self.server_up.is_set() or self.server_back_at >= since

    def on_api(self, call: Callable[[], T]) -> T:
        """``call()``, which talks to the Prefect API, again if a restart of the server broke it."""
        tries = 0
        while True:
            self.when_server_up()
            since, tries = time.time(), tries + 1
            try:
                return call()
            except httpx.HTTPError:
                if tries == 3 or not self.restarted_since(since):
                    raise

    def authority(self) -> str:
        return self.on_api(lambda: load_state(PAIR).authority.site)

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

    def restart_server(self) -> None:
        """``prefect server`` stopped and started again on its port and database,
        as ``systemctl restart`` does; runs in flight retry their calls meanwhile."""
        assert self.server is not None
        self.server_up.clear()
        try:
            self.server.stop_server()
            self.server.start()
        finally:
            self.server_back_at = time.time()
            self.server_up.set()

    def minor_faults(self, most: int, within_s: float) -> None:
        """Up to ``most`` faults within ``within_s`` that must not move authority
        (drawn now, applied while the probes run)."""
        serving = self.authority()
        for _ in range(self.rng.randint(0, most)):
            at = self.rng.uniform(0.0, within_s)
            kind = self.rng.choice(["writer-killed", "writer-killed", "dbids-killed", "bus-ms-link-cut",
                                    "operator-ack", "prefect-server-restarted"])
            site, prog = self.rng.choice(["ms", "bus"]), self.rng.choice(WRITERS)
            held = round(self.rng.uniform(1.0, 2.5), 1)
            if kind == "dbids-killed" and not (serving == "ms" and self.ms_off):
                self.later(at, kind, f"dbids SIGKILLed on {serving}, the serving site (rtexec restarts it)",
                           lambda s=serving: self.pair.crash(s, "dbids"))
            elif kind == "bus-ms-link-cut":
                self.later(at, kind, f"link bus -> ms cut for {held} s", lambda: self.pair.cut_link("bus", "ms"))
                self.later(at + held, "bus-ms-link-healed", "link bus -> ms restored",
                           lambda: self.pair.heal_link("bus", "ms"))
            elif kind == "operator-ack":
                self.later(at, kind, "an operator runs antelope-ha ack", lambda: self.operator_command("ack"))
            elif kind == "prefect-server-restarted" and self.server is not None:
                self.later(at, kind, "prefect server restarted while the health runs go on", self.restart_server)
            else:
                site = "bus" if self.ms_off else site
                self.later(at, "writer-killed", f"{prog} SIGKILLed on {site} (rtexec restarts it)",
                           lambda s=site, p=prog: self.pair.crash(s, p))

    def killed_run(self, flow: str, **params: Any) -> None:
        """Sometimes (drawn): the procedure first runs in a process of its own,
        SIGKILLed right after its K-th change. Then what a process worker does
        for a flow run whose process died (the run marked Crashed) and what an
        operator does once it is known dead (its lock dropped); the caller then
        runs the procedure again, which must finish the job."""
        if self.api_url is None or self.rng.random() >= self.killed_runs:
            return
        change = self.rng.randint(1, CHANGES[flow])
        argv = [sys.executable, "-m", "tests.flowproc", flow, PAIR, "--kill", f"after-change:{change}",
                *(f"--param={name}={json.dumps(value)}" for name, value in params.items())]
        done = subprocess.run(argv, env={**os.environ, "PREFECT_API_URL": self.api_url}, cwd=PROJECT_DIR,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CYCLE_LIMIT_S)
        if done.returncode != -signal.SIGKILL:
            self.say(f"{flow} in a process of its own ended before its change {change} (exit {done.returncode})")
            return
        self.fault("flow-run-killed", f"the {flow} run's process SIGKILLed right after its change {change}",
                   lambda: None)
        self.on_api(lambda: _mark_crashed(flow))
        self.on_api(lambda: release_dead_run_lock(PAIR))

    def maybe_restart_during(self, what: str) -> None:
        """Sometimes (drawn): the Prefect server restarted a few seconds into ``what``."""
        if self.server is not None and self.rng.random() < SERVER_RESTARTS:
            self.later(self.rng.uniform(0.5, 6.0), "prefect-server-restarted",
                       f"prefect server restarted during the {what}", self.restart_server)

    # --- the procedures as the watcher and the operators run them ---------------------------
    def watch(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Health probes for ``seconds`` (or until ``until()``), failing over when it decides so."""
        deadline = time.time() + seconds
        while time.time() < deadline and not until():
            started = time.time()
            try:
                decision = call_flow(health, pair_name=PAIR)
            except Exception as exc:
                if not self.restarted_since(started):
                    raise
                self.say(f"health run failed while the Prefect server restarts: {str(exc).splitlines()[0][:120]}")
                decision = "stay"
            if decision.startswith("failover"):
                self.say(f"health: {decision}")
                reason = decision.split(": ", 1)[1]
                try:
                    with answering("failover", self.stale_gate_answer):
                        self.killed_run("failover", reason=reason, by="automation")
                        failover(pair_name=PAIR, reason=reason, by="automation")
                except Exception as exc:  # as for the watcher: the health asks again at the next probe
                    self.say(f"failover run failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
                if self.authority() == "bus":
                    self.report.failovers += 1
                    self.needs_recovery = True
                    if self.failing_since is not None:
                        self.report.failover_s.append(round(time.time() - self.failing_since, 2))
                    self.failing_since = None
                    self.say("failed over: BUS authoritative")
            time.sleep(max(0.0, POLICY.probe_interval_s - (time.time() - started)))

    def answer_gate(self, how: str, wait: float, gate: str, site: str) -> dict | None:
        """An operator's answer to ``gate``, given ``how`` (GATE_ANSWERS) and ``wait`` s late; None: unanswered."""
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
        return self.operators.answer(decision=decision, reason=f"nemesis cycle {self.cycle}", confirm_site=site)

    def answers(self, script: list[tuple[str, float]]) -> Callable[[int], dict | None]:
        """The operators' answers to the n-th pause of a fallback: (how, seconds late) from ``script``, then approve."""
        def answer(n: int) -> dict | None:
            how, wait = script[n] if n < len(script) else ("approve", 0.0)
            return self.answer_gate(how, wait, f"approval {n + 1} of this fallback", "ms")
        return answer

    def stale_gate_answer(self, n: int) -> dict | None:
        """An operator's answer to the failover's stale-replica gate, drawn when it asks."""
        how, wait = self.gate_draws.choice(STALE_GATE_ANSWERS), round(self.gate_draws.uniform(1.5, 4.0), 1)
        return self.answer_gate(how, wait, "the failover's approval of a stale lastid replica", "bus")

    def failover_declined(self) -> bool:
        """Automatic failover held until a person acknowledges a failover refused at its gate."""
        state = self.on_api(lambda: load_state(PAIR))
        found = held(state, self.pair.pair_config(POLICY), time.time())
        return found is not None and found[0] == "declined"

    def run_fallback(self, script: list[tuple[str, float]]) -> None:
        started = time.time()
        try:
            with answering("fallback", self.answers(script)):
                self.killed_run("fallback", by="nemesis")
                self.maybe_restart_during("fallback")
                outcome = fallback(pair_name=PAIR, by="nemesis")
        except Exception as exc:  # MS powered off under it, the server restarted: the rerun converges
            outcome = f"failed: {exc}"
        state = self.on_api(lambda: load_state(PAIR))
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
            self.killed_run("recovery", by="nemesis")
            self.maybe_restart_during("recovery")
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
        """MS's lastid to BUS, as the watcher does every REPLICATE_S; sometimes
        (drawn) with MS powered off in the middle of one, once BUS holds a replica."""
        if time.time() - self.replicated_at <= REPLICATE_S:
            return
        timer = None
        if self.replicated_at and not self.ms_off and self.rng.random() < POWER_OFF_IN_REPLICATION:
            timer = threading.Timer(self.rng.uniform(0.0, 0.8), self.power_off_ms,
                                    args=("ms-power-off-in-replication", " during a lastid replication"))
            timer.start()
        try:
            replicate_lastid(pair_name=PAIR)
            self.replicated_at = time.time()
        except Exception as exc:  # MS went down under it: the previous replica stands
            self.say(f"lastid replication failed: {str(exc).splitlines()[0][:160]}")
        if timer is not None:
            timer.cancel()
            timer.join()

    def both_write(self) -> None:
        since = time.time()
        SimPair.wait_for(lambda: min(newest_origin(self.pair.paths(s).dir) for s in ("ms", "bus"))
                         > since, 60, "MS and BUS write")

    def bring_back(self, script: list[tuple[str, float]]) -> None:
        """The procedures, until MS is authoritative, recovered and both sites write."""
        deadline = time.time() + CYCLE_LIMIT_S
        while time.time() < deadline:
            state = self.on_api(lambda: load_state(PAIR))
            if state.authority.site == "bus" or state.fallback_in_progress:
                if self.ms_off:
                    time.sleep(self.rng.uniform(0.5, 2.0))
                    self.power_on_ms()
                    self.watch(POLICY.probe_interval_s)  # health fences MS as soon as it is back
                self.run_fallback(script)
                script = []
            elif self.ms_off:
                self.watch(60, lambda: self.authority() == "bus" or self.failover_declined())
                if self.failover_declined():  # as the notification asks a person to
                    self.fault("operator-ack-declined", "an operator acknowledges the declined failover",
                               lambda: self.operator_command("ack"))
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
        if self.incident_draws.random() < self.incidents and not self.ms_off and self.authority() == "ms":
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
        self.watch(60, lambda: self.authority() == "bus" or self.failover_declined())
        if self.authority() == "bus":
            serving_s = rng.uniform(1.0, 3.0)
            self.minor_faults(2, serving_s)
            self.watch(serving_s)

    def operator(self, what: str) -> None:
        """A person's ``antelope-ha pause`` / ``resume``, as a fault of its own."""
        self.fault(f"operator-{what}", f"an operator runs antelope-ha {what}", lambda: self.operator_command(what))

    def operator_command(self, what: str) -> None:
        command = {"pause": cli.pause, "resume": cli.resume, "ack": cli.ack}[what]
        with contextlib.redirect_stdout(sys.stderr):  # its message is for a terminal, not the report
            self.on_api(lambda: command(reason="nemesis: maintenance", by="lena", pair_name=PAIR))


def _mark_crashed(flow: str) -> None:
    """The unfinished runs of ``flow`` on the pair marked Crashed, as the process
    worker marks a flow run whose process died (the health flow would otherwise
    take a dead failover run for one in progress)."""
    with get_client(sync_client=True) as client:
        for run in unfinished_runs(flow, PAIR):
            client.set_flow_run_state(run.id, Crashed(message="its process was SIGKILLed (nemesis)"), force=True)


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


def run(workdir: Path, plan: Plan, minutes: float | None = None, quiet: bool = False,
        server: PrefectServer | None = None, saved: dict | None = None,
        stop: threading.Event | None = None) -> NemesisReport:
    """The run ``plan`` on a new pair under ``workdir``, or its next part when
    ``saved`` holds its progress (rehearsal/nemesis.py's ``saved_run``); a part
    starts no cycle after ``minutes``, or once ``stop`` is set. ``server``: the Prefect server the API
    is on, when it is the nemesis's to restart. The run's progress is saved in
    ``workdir`` at the end, for the next part."""
    broken = plan.broken
    if saved is None:
        report = NemesisReport(seed=plan.seed, incidents=plan.incidents,
                               broken_rule=BREAKS[broken] if broken else None,
                               prefect=os.environ.get("PREFECT_API_URL") or "embedded")
        pair = SimPair.create(workdir / "pair", packet_interval_s=1.0 / plan.rate, seed=plan.seed)
    else:
        report, pair = NemesisReport.from_dict(saved["report"]), SimPair.open(workdir / "pair")
    nemesis = Nemesis(pair, plan.seed, report, quiet, plan.incidents, server, plan.killed_runs)
    windows = nemesis.restore(saved) if saved else []
    with rule_removed(broken) as policy:
        authority = run_cycles(pair, nemesis, policy, plan.cycles, minutes, windows, stop)
    report.parts += 1
    report.minutes = round((time.time() - nemesis.t0) / 60, 2)
    report.faults = dict(Counter(f.kind for f in report.fault_log))
    (workdir / SAVED).write_text(json.dumps(nemesis.progress(plan, windows, own_server=server is not None)))
    judged = checker.check(workdir / "pair", authority, windows)
    for name in ("rows_written", "rows_lost", "ids_used_twice", "orphans", "torn_rows", "ids_above_lastid",
                 "seconds_two_id_servers", "seconds_no_id_server"):
        setattr(report, name, getattr(judged, name))
    report.handovers = [asdict(h) for h in judged.handovers]
    report.checker_details = judged.details
    report.passed = judged.passed and not report.not_brought_back
    return report


def run_cycles(pair: SimPair, nemesis: Nemesis, policy: PairPolicy, cycles: int, minutes: float | None,
               windows: list[tuple[float, float]], stop: threading.Event | None = None) -> str:
    """Start the pair, run the cycles left (none started after ``minutes`` or once ``stop`` is set),
    stop the pair; the site authoritative at the end. ``windows``, the times
    the pair ran in earlier parts, gets this part's. The first part starts the
    pair's record afresh; a later one finds it where the last part left it."""
    report, started, first = nemesis.report, time.time(), not windows
    try:
        pair.serve_ssh()
        pair.start()
        cfg = pair.pair_config(policy).model_copy(update={"operators": nemesis.operators.enroll(PAIR)})
        if first:
            register_pair(PAIR, cfg)
        else:
            save_pair(PAIR, cfg)
        SimPair.wait_for(lambda: all(origin_times(pair.paths(s).dir) for s in ("ms", "bus")), 60, "rows at both sites")
        for n in range(report.cycles + 1, cycles + 1):
            if (minutes is not None and time.time() - started > minutes * 60) or (stop and stop.is_set()):
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
        authority = nemesis.authority() if report.cycles else "ms"
        # the other site first: its ORB then holds no packet the authoritative one lacks, and a
        # writer that goes on from it in the next part writes nothing the authority did not get
        pair.stop(order=tuple(sorted(("ms", "bus"), key=lambda site: site == authority)))
        windows.append((started, time.time()))
    return authority
