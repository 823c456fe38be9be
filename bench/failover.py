"""Failover time on the simulated pair: the Prefect flows against the same steps
called directly through ``antelope_ha.site.Site`` (the "bare commands" baseline),
in one run.

Each repetition builds a fresh simulated pair (each site behind its own sshd),
runs one healthy health cycle, and crashes MS's ID server for good half an
interval later (the average phase against the health schedule). Then:

  detection   health cycles, started every ``probe_interval_s``, until the
              decision is failover (K failed probes, the witness seen)
  failover    the failover procedure, all seven steps
  first id    a watcher pings BUS's ID server over TCP every 20 ms (from just
              before the crash); the first ``pong`` is BUS handing out ids

The Prefect path calls the ``health`` and ``failover`` flows on embedded
Prefect; the bare path runs the same probes, ``decide`` and the same failover
steps through ``Site`` objects, keeping the state in a JSON file. Both paths'
runners are wrapped to time every command and file operation, and
``Site._wait`` (waiting for rtexec to start or stop a task) is timed too, so
the flow's wall time splits into time on the sites and Prefect's own time:
before the flow body runs (creating the run, Pending -> Running), inside it,
and after the Completed state (the flow-run heartbeat thread is joined there,
up to 1 s per sync flow run).

The caller sets an isolated PREFECT_HOME before Prefect is imported (see
``bench/__main__.py``) and runs ``warm_up`` before the clock, so the embedded
server's start-up is not in any figure.

    python -m bench --only failover [--repetitions 3]
"""
from __future__ import annotations

import re
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

import tasks.sites
from antelope_ha.config import PairConfig, PairPolicy
from antelope_ha.connect import make_runner
from antelope_ha.decide import Probes, decide
from antelope_ha.lastid import failover_lastid
from antelope_ha.runner import CommandResult, Runner, RunnerError
from antelope_ha.site import Site
from antelope_ha.state import HAState
from flows.calling import call_flow
from flows.failover import failover
from flows.health import health
from flows.replicate import copy_lastid, replicate_lastid
from simsite.pair import SimPair
from tasks.pair import register_pair
from tasks.state import load_state

PAIR_NAME = "bench-failover"
# The drill's policy: K = 3 failed probes one second apart.
POLICY = PairPolicy(failures_before_failover=3, probe_interval_s=1.0, probe_timeout_s=1.0, hold_down_s=3600,
                    lastid_margin=1000, lastid_max_age_s=600, approval_timeout_s=300, approval_poll_s=1)
FLOW_OWN_TARGET_S = 3.0
DETECTION_SLACK_S = 1.0
FIRST_ID_POLL_S = 0.02
GIVE_UP_S = 60.0
REASON = "bench: MS ID server crashed"
# Published figures of other systems, for scale only: not measured here.
ANCHORS = (
    "keepalived (VRRP, default advert_int 1 s): 3-4 s",
    "Orchestrator (MySQL): 10-13 s",
    "Patroni (PostgreSQL, default ttl/loop_wait): 30-45 s",
)


# --- timing what happens on the sites -------------------------------------------------------
class SiteClock:
    """Intervals (wall clock) spent on the sites: each runner call, and each
    ``Site._wait`` (rtexec acting on a changed rtexec.pf, polled with commands)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.intervals: list[tuple[str, float, float]] = []  # (kind, start, end)

    def timed(self, kind: str, call: Callable[[], object]) -> object:
        start = time.time()
        try:
            return call()
        finally:
            with self._lock:
                self.intervals.append((kind, start, time.time()))

    def seconds(self, start: float, end: float, kinds: Sequence[str] = ("command", "wait")) -> float:
        """Length of the union of the intervals of ``kinds`` within [start, end]
        (a wait contains the commands it polls with: counted once)."""
        spans = sorted((max(a, start), min(b, end)) for k, a, b in self.intervals
                       if k in kinds and b > start and a < end)
        total, reach = 0.0, start
        for a, b in spans:
            if b > reach:
                total += b - max(a, reach)
                reach = b
        return total

    def runner(self, inner: Runner) -> TimedRunner:
        return TimedRunner(inner, self)

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Time every runner the flows create (``tasks.sites.make_runner``) and every ``Site._wait``."""
        original_make, original_wait = tasks.sites.make_runner, Site._wait
        clock = self

        def timed_wait(site: Site, what: str, ready: Callable[[], bool]) -> None:
            clock.timed("wait", lambda: original_wait(site, what, ready))

        tasks.sites.make_runner = lambda config: clock.runner(original_make(config))
        Site._wait = timed_wait  # type: ignore[method-assign]
        try:
            yield
        finally:
            tasks.sites.make_runner, Site._wait = original_make, original_wait  # type: ignore[method-assign]


@dataclass
class TimedRunner:
    """A runner whose every call is recorded on a ``SiteClock``."""

    inner: Runner
    clock: SiteClock

    @property
    def host(self) -> str:
        return self.inner.host

    def run(self, argv: Sequence[str], *, timeout_s: float | None = None,
            stdin: str | None = None) -> CommandResult:
        return self.clock.timed(  # type: ignore[return-value]
            "command", lambda: self.inner.run(argv, timeout_s=timeout_s, stdin=stdin))

    def read_file(self, path: str) -> bytes:
        return self.clock.timed("command", lambda: self.inner.read_file(path))  # type: ignore[return-value]

    def write_file(self, path: str, data: bytes) -> None:
        self.clock.timed("command", lambda: self.inner.write_file(path, data))

    def exists(self, path: str) -> bool:
        return self.clock.timed("command", lambda: self.inner.exists(path))  # type: ignore[return-value]

    def close(self) -> None:
        self.inner.close()


# --- one repetition -------------------------------------------------------------------------
@dataclass
class Repetition:
    """One crash-to-first-id run, Prefect (``mode="flow"``) or bare (``mode="bare"``).
    Times in seconds; ``before_body_s`` and ``after_completed_s`` only for flows."""

    mode: str
    detection_s: float
    health_cycles: int
    health_cycle_s: float
    failover_s: float
    failover_to_first_id_s: float | None
    crash_to_first_id_s: float | None
    on_sites_s: float
    commands_s: float
    before_body_s: float | None = None
    after_completed_s: float | None = None
    health_after_completed_s: float | None = None
    step_s: dict[str, float] = field(default_factory=dict)  # the flow's task runs, in start order
    bus_authoritative: bool = False
    bus_answered: bool = False

    @property
    def own_s(self) -> float:
        """Failover wall time not spent on the sites."""
        return self.failover_s - self.on_sites_s


def _step_name(task_run_name: str) -> str:
    """A task run's name without the suffix Prefect adds when the task names no run,
    and without host:port addresses (each repetition's pair has its own ports)."""
    return re.sub(r"\d+(\.\d+){3}:\d+", "<address>", re.sub(r"-[0-9a-f]{3}$", "", task_run_name))


def id_server_answers(address: str) -> bool:
    """The ``ping`` of the ID server line protocol (simsite/programs/dbids.py)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.3) as s:
            s.settimeout(0.3)
            s.sendall(b"ping\n")
            return s.recv(64).startswith(b"pong")
    except OSError:
        return False


class FirstIdWatcher:
    """Polls an ID server from the moment it is started until it first answers."""

    def __init__(self, address: str) -> None:
        self.address, self.answered_at = address, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True, name="first-id-watcher")

    def _poll(self) -> None:
        while not self._stop.is_set():
            if id_server_answers(self.address):
                self.answered_at = time.time()
                return
            self._stop.wait(FIRST_ID_POLL_S)

    def start(self) -> FirstIdWatcher:
        self._thread.start()
        return self

    def result(self, wait_s: float = 10.0) -> float | None:
        self._thread.join(wait_s)
        self._stop.set()
        return self.answered_at


@dataclass
class Detection:
    crashed_at: float
    decided_at: float
    cycle_s: list[float]


def crash_idserver(pair: SimPair) -> None:
    """MS's ID server dies and stays dead."""
    pair.crash("ms", pair.site_config("ms").idserver_task, restart=False)


def power_off(pair: SimPair) -> None:
    """MS loses power: every process of the host, sshd included, gone at once."""
    pair.power_off("ms")


def detect(pair: SimPair, cycle: Callable[[], str], interval_s: float,
           fault: Callable[[SimPair], None] = crash_idserver) -> Detection:
    """One healthy cycle; ``fault`` hits MS half an interval after it started;
    cycles every ``interval_s`` (start to start, back to back when a cycle
    overruns) until one decides to fail over."""
    started = time.time()
    if (first := cycle()) != "stay":
        raise RuntimeError(f"the pair is not healthy before the crash: the health cycle decided {first!r}")
    time.sleep(max(0.0, started + interval_s / 2 - time.time()))
    fault(pair)
    crashed_at, next_start, durations = time.time(), started + interval_s, []
    while time.time() - crashed_at < GIVE_UP_S:
        time.sleep(max(0.0, next_start - time.time()))
        start = time.time()
        action = cycle()
        durations.append(time.time() - start)
        if action == "failover":
            return Detection(crashed_at, time.time(), durations)
        next_start = start + interval_s
    raise TimeoutError(f"no failover decided within {GIVE_UP_S:g} s of the crash of MS's ID server")


@contextmanager
def running_pair(workdir: Path, policy: PairPolicy = POLICY) -> Iterator[tuple[SimPair, PairConfig]]:
    with SimPair.running(workdir / "pair") as pair:
        yield pair, pair.pair_config(policy)


def flow_repetition(workdir: Path, clock: SiteClock) -> Repetition:
    """Detection and failover through the Prefect flows."""
    with running_pair(workdir) as (pair, cfg):
        register_pair(PAIR_NAME, cfg)
        try:
            with clock.watching():
                replicate_lastid(pair_name=PAIR_NAME)  # a fresh replica: no approval needed
                health_runs: list[tuple[UUID, float]] = []  # (flow run, when the call returned)

                def cycle() -> str:
                    state = call_flow(health, pair_name=PAIR_NAME, return_state=True)
                    health_runs.append((state.state_details.flow_run_id, time.time()))
                    return state.result().split(":", 1)[0]

                detection, watcher = _with_watcher(pair, cfg, lambda: detect(pair, cycle, POLICY.probe_interval_s))
                called = time.time()
                state = failover(pair_name=PAIR_NAME, reason=REASON, return_state=True)
                returned = time.time()
            state.result()  # raises if the flow failed
            authority = load_state(PAIR_NAME).authority
            return _repetition("flow", detection, called, returned, watcher.result(), clock,
                               **_from_the_api(state.state_details.flow_run_id, called, returned, health_runs),
                               bus_authoritative=authority.site == cfg.backup.name)
        finally:
            tasks.sites.close_all()


def _from_the_api(run_id: UUID, called: float, returned: float,
                  health_runs: list[tuple[UUID, float]]) -> dict[str, object]:
    """What the Prefect server recorded: when the failover run went Running and
    Completed, each health run's Completed time, the failover's task runs."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        health_tails = [returned_at - client.read_flow_run(health_run).end_time.timestamp()
                        for health_run, returned_at in health_runs]
        steps = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return {
        "before_body_s": run.start_time.timestamp() - called,
        "after_completed_s": returned - run.end_time.timestamp(),
        "health_after_completed_s": statistics.median(health_tails),
        "step_s": {_step_name(t.name): t.end_time.timestamp() - t.start_time.timestamp()
                   for t in sorted(steps, key=lambda t: t.start_time) if t.end_time and t.start_time},
    }


def bare_repetition(workdir: Path, clock: SiteClock, policy: PairPolicy = POLICY,
                    fault: Callable[[SimPair], None] = crash_idserver) -> Repetition:
    """The same probes, decision and failover steps through ``Site``, no Prefect."""
    with running_pair(workdir, policy) as (pair, cfg):
        store = StateFile(workdir / "state.json")
        store.save(HAState.initial(cfg.main.name))
        ms = Site(cfg.main, clock.runner(make_runner(cfg.main)))
        bus = Site(cfg.backup, clock.runner(make_runner(cfg.backup)))
        try:
            with clock.watching():
                copy_lastid(ms, bus)
                detection, watcher = _with_watcher(pair, cfg, lambda: detect(
                    pair, lambda: bare_health(ms, bus, cfg, store), policy.probe_interval_s, fault))
                called = time.time()
                bare_failover(ms, bus, cfg, store, REASON)
                returned = time.time()
            return _repetition("bare", detection, called, returned, watcher.result(), clock,
                               bus_authoritative=store.load().authority.site == cfg.backup.name)
        finally:
            ms.runner.close()
            bus.runner.close()


def _with_watcher(pair: SimPair, cfg: PairConfig,
                  run_detection: Callable[[], Detection]) -> tuple[Detection, FirstIdWatcher]:
    """Run the detection with the first-id watcher started at the crash (the
    watcher starts just before: BUS's ID server is down until the failover)."""
    if id_server_answers(cfg.backup.idserver_address):
        raise RuntimeError(f"BUS's ID server {cfg.backup.idserver_address} answers before any failover")
    watcher = FirstIdWatcher(cfg.backup.idserver_address).start()
    return run_detection(), watcher


def _repetition(mode: str, detection: Detection, called: float, returned: float, first_id: float | None,
                clock: SiteClock, **extra: object) -> Repetition:
    return Repetition(
        mode=mode,
        detection_s=detection.decided_at - detection.crashed_at,
        health_cycles=len(detection.cycle_s),
        health_cycle_s=statistics.median(detection.cycle_s),
        failover_s=returned - called,
        failover_to_first_id_s=None if first_id is None else first_id - called,
        crash_to_first_id_s=None if first_id is None else first_id - detection.crashed_at,
        on_sites_s=clock.seconds(called, returned),
        commands_s=clock.seconds(called, returned, ("command",)),
        bus_answered=first_id is not None,
        **extra,  # type: ignore[arg-type]
    )


# --- the bare baseline: the flows' steps, straight through Site ---------------------------------
class StateFile:
    """The pair state as a local JSON file: the bare baseline's stand-in for the state block."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> HAState:
        return HAState.model_validate_json(self.path.read_text())

    def save(self, state: HAState) -> None:
        self.path.write_text(state.model_dump_json())




def bare_health(ms: Site, bus: Site, pair: PairConfig, store: StateFile) -> str:
    """flows/health.py's probes and decision while MS is authoritative; returns the action."""
    timeout = pair.policy.probe_timeout_s
    ok, detail = bus.probe_idserver(ms.config.idserver_address, timeout)
    witness_ok, witness_detail = (True, "not needed") if ok else bus.ping(pair.witness.host, timeout)
    self_ok = None
    if not ok:
        try:
            ms.runner.run(["true"], timeout_s=5).check()
            self_ok = ms.probe_idserver(ms.config.idserver_address, timeout)[0]
        except RunnerError:
            self_ok = None
    decision, new_state = decide(store.load(), Probes(ok, detail, witness_ok, witness_detail,
                                                      main_self_idserver_ok=self_ok), pair, time.time())
    store.save(new_state)
    return decision.action


def bare_failover(ms: Site, bus: Site, pair: PairConfig, store: StateFile, reason: str) -> None:
    """flows/failover.py's steps in its order, with a fresh replica (no approval)."""
    state = store.load()
    replica, scan = bus.read_lastid(), bus.scan_ids()
    targets = failover_lastid(replica, pair.policy.lastid_margin, scan.max_ids())
    copied = bus.replica()
    if copied is None or time.time() - copied.taken_at > pair.policy.lastid_max_age_s:
        raise RuntimeError("bare failover: the lastid replica is stale; the bench replicates it first")
    try:  # 0. fence MS
        ms.fence(f"{bus.name} takes over: {reason}")
    except (RunnerError, OSError):
        pass
    bus.raise_lastid(targets, "failover: replica + margin")  # 1
    state = state.with_authority(bus.name, None, reason)  # 2
    store.save(state)
    bus.write_authority_marker(state.authority.marker())
    try:
        ms.write_authority_marker(state.authority.marker())
    except (RunnerError, OSError):
        pass
    bus.start_idserver_for(state.authority)  # 3
    bus.ensure_dbidserver(bus.config.idserver_address)  # 4
    for writer in bus.config.writer_tasks:  # 5
        bus.restart_task(writer, since=state.authority.since)
    for infosys in bus.config.infosys_tasks:  # 6
        bus.ensure_task(infosys, True)


# --- Prefect's fixed costs ---------------------------------------------------------------------
@flow(name="bench-trivial")
def trivial() -> None:
    """A flow that does nothing: Prefect's cost of one sync flow run."""


def warm_up() -> None:
    """Start the embedded server and load the flow engine, before any clock."""
    trivial()
    trivial()


def trivial_run_s(heartbeat: bool, runs: int = 3) -> float:
    """Median wall time of a trivial sync flow run, with the flow-run heartbeat on (the default) or off."""
    def once() -> float:
        start = time.time()
        trivial()
        return time.time() - start

    if heartbeat:
        return statistics.median(once() for _ in range(runs))
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return statistics.median(once() for _ in range(runs))


# --- the whole benchmark --------------------------------------------------------------------------
@dataclass
class FailoverBench:
    flow: list[Repetition] = field(default_factory=list)
    bare: list[Repetition] = field(default_factory=list)
    trivial_heartbeat_s: float = 0.0
    trivial_no_heartbeat_s: float = 0.0

    def rows(self) -> list[dict[str, object]]:
        """One row per figure: figure, measured, baseline, ratio, target, met (medians)."""
        k, interval = POLICY.failures_before_failover, POLICY.probe_interval_s
        detection_bound = k * interval + DETECTION_SLACK_S
        n = len(self.flow)

        def med(reps: list[Repetition], get: Callable[[Repetition], float | None]) -> float | None:
            values = [v for r in reps if (v := get(r)) is not None]
            return statistics.median(values) if values else None

        def row(figure: str, get: Callable[[Repetition], float | None], target: float | None = None,
                baseline: bool = True, ratio: bool = True) -> dict[str, object]:
            measured = med(self.flow, get)
            base = med(self.bare, get) if baseline else None
            return {"figure": figure, "measured": _s(measured),
                    "baseline": _s(base) + (" bare" if base is not None else ""),
                    "ratio": f"{measured / base:.2f}x bare" if ratio and measured and base else "",
                    "target": f"<= {target:g} s" if target is not None else "",
                    "met": None if target is None or measured is None else measured <= target}

        return [
            row(f"failover: MS ID server crash -> BUS hands out ids (median of {n})", lambda r: r.crash_to_first_id_s),
            row(f"  detection: crash -> failover decided (K={k}, every {interval:g} s)", lambda r: r.detection_s,
                detection_bound),
            row("  health cycle, one run (median)", lambda r: r.health_cycle_s),
            row("    health run after Completed (heartbeat join, exit)", lambda r: r.health_after_completed_s,
                baseline=False),
            row("  failover start -> BUS ID server answers", lambda r: r.failover_to_first_id_s),
            row("failover: the flow, all 7 steps, wall", lambda r: r.failover_s),
            row("  on the sites (commands + waiting for rtexec)", lambda r: r.on_sites_s, ratio=False),
            row("    of which commands and file operations", lambda r: r.commands_s, ratio=False),
            row("  flow's own time (wall - on the sites)", lambda r: r.own_s, FLOW_OWN_TARGET_S, ratio=False),
            row("    before the body (create run, -> Running)", lambda r: r.before_body_s, baseline=False),
            row("    after Completed (heartbeat join, exit)", lambda r: r.after_completed_s, baseline=False),
            {"figure": "prefect: trivial sync flow run, heartbeat on (default)",
             "measured": _s(self.trivial_heartbeat_s),
             "baseline": f"{_s(self.trivial_no_heartbeat_s)} heartbeat off", "ratio":
             f"{self.trivial_heartbeat_s / self.trivial_no_heartbeat_s:.1f}x" if self.trivial_no_heartbeat_s else "",
             "target": "", "met": None},
        ]

    def step_medians(self) -> dict[str, float]:
        """Median time of each task run of the failover flow, in the order of the first repetition."""
        names = dict.fromkeys(name for r in self.flow for name in r.step_s)
        return {name: statistics.median(r.step_s[name] for r in self.flow if name in r.step_s) for name in names}

    def notes(self) -> list[str]:
        steps = ", ".join(f"{name} {seconds:.2f}" for name, seconds in self.step_medians().items())
        return [
            "failover anchors, published figures of other systems, NOT measured here: " + "; ".join(ANCHORS),
            "bare = the same probes, decision and failover steps called through antelope_ha.site.Site, no Prefect",
            "production flows keep the flow-run heartbeat on: its join at each flow run's exit is inside the "
            "flow's own time and inside every health cycle (so inside detection), not inside failover start -> "
            "BUS answers (dbids starts at step 3, before the flow ends)",
            f"failover flow task runs, median s: {steps}",
        ]


def _s(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.2f} s"


def run(repetitions: int = 3) -> FailoverBench:
    """Warm Prefect up, then alternate Prefect and bare repetitions on fresh pairs."""
    warm_up()
    bench = FailoverBench(trivial_heartbeat_s=trivial_run_s(heartbeat=True),
                          trivial_no_heartbeat_s=trivial_run_s(heartbeat=False))
    with tempfile.TemporaryDirectory(prefix="failoverbench-") as tmp:
        for i in range(repetitions):
            bench.flow.append(flow_repetition(Path(tmp) / f"flow-{i}", SiteClock()))
            bench.bare.append(bare_repetition(Path(tmp) / f"bare-{i}", SiteClock()))
    return bench
