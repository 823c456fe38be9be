"""The health watcher: one long flow run at BUS that looks at the pair every
probe interval, on connections it keeps open, and acts itself.

Each cycle runs the one-shot health flow's cycle without its Prefect runs:
look (antelope_ha.probe), decide (antelope_ha.decide.step, the failure count
kept in memory). A decision is recorded, emitted as an event and told to
people only when it changes; a failover or a fence happens only once its
decision is on the record, and then here, in this process: the failover as a
subflow of this run, with BUS's connections already warm.

The probing loop runs in a thread of its own, and copies lastid from MS to
BUS every ``replicate_s`` while MS is authoritative (the copy's time is kept
on BUS, next to it). The flow's own thread, the keeper, does everything that
talks to the Prefect server: reading the record, recording decisions, acting
on recorded ones (the failover's tasks want the flow's thread). The probing
loop never waits for the server. While the server is down the loop goes on
probing, counting and replicating on the last record the keeper read;
nothing it could not record is acted on, and recording resumes when the
server answers again.

Exactly one watcher acts for a pair: each new watcher takes the lease on the
pair's record at its start, and a watcher that sees another run holding the
lease stops. The deployment's schedule starts a successor every watch
period: the two overlap for a cycle or so, never leave a gap. A watcher whose
process died is replaced by an automation (``deployments/setup.py``), and a
heartbeat event every ``heartbeat_s`` feeds the dead-man's switch that tells
people when no watcher is heard from.
"""
from __future__ import annotations

import contextvars
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import State

from antelope_ha.decide import Step, held, step
from antelope_ha.metrics import MetricsServer, WatcherCollector
from antelope_ha.probe import PairProbe
from antelope_ha.state import HAState
from flows.replicate import copy_lastid
from tasks.health import act_and_tell, emit_decision, pair_resource
from tasks.notify import notify_run_ended_badly, send_due_digests
from tasks.pair import load_pair
from tasks.sites import site
from tasks.lock import ensure_limit, lock_name
from tasks.state import load_state, record_health, take_watcher_lease

HEARTBEAT_EVENT = "antelope-ha.watcher.heartbeat"
REPLACED = "Replaced"  # the state name given to a watcher run whose process died without handing over


@flow(name="watch", on_failure=[notify_run_ended_badly], on_crashed=[notify_run_ended_badly],
      description="The health watcher at BUS: probe every interval, decide, record changes, fail over "
                  "in-process; runs until a newer watcher takes over.")
def watch(pair_name: str = "default", heartbeat_s: float = 60.0, replicate_s: float = 60.0,
          look_s: float = 10.0, metrics_port: int | None = None, metrics_address: str = "127.0.0.1") -> str:
    """Watch the pair until a newer watcher takes over (the module's docstring).

    Args:
        pair_name: the name of the pair's AntelopePair block (as saved by setup)
        heartbeat_s: how often the watcher says it is alive (the dead-man's switch listens)
        replicate_s: how often MS's dbids.lastid is copied to BUS while MS is authoritative
        look_s: how often MS's ORB and writers (MS authoritative) or MS's fence (BUS
            authoritative) are looked at; the ID server is probed every probe interval
        metrics_port: serve Prometheus metrics on this port (antelope_ha/metrics.py); none when not given
        metrics_address: the address the metrics are served on
    """
    return Watcher(pair_name, heartbeat_s=heartbeat_s, replicate_s=replicate_s, look_s=look_s,
                   metrics=(metrics_address, metrics_port) if metrics_port else None).run()


@dataclass
class WatcherStatus:
    """What the watcher knows between cycles: its heartbeat's payload (and what
    a metrics endpoint would serve)."""

    run: str
    pair: str
    authority: str = ""
    epoch: int = 0
    decision: str = ""
    consecutive_failures: int = 0
    cycles: int = 0
    last_probe_at: float = 0.0
    probe_seconds: list[float] = field(default_factory=list)  # the last cycles' look times
    record_read_at: float = 0.0  # when the keeper last read the record (0: never)
    recorded: bool = True  # the last decision to record is on the record
    paused: bool = False
    held: str = ""  # why an automatic failover would be held back now
    replica_taken_at: float | None = None
    decisions: Counter = field(default_factory=Counter)  # recorded decisions, by action

    def payload(self) -> dict:
        data = asdict(self)
        data["probe_median_s"] = round(statistics.median(self.probe_seconds), 4) if self.probe_seconds else None
        data["probe_last_s"] = round(self.probe_seconds[-1], 4) if self.probe_seconds else None
        del data["probe_seconds"]
        data["decisions"] = dict(self.decisions)
        return data


class Watcher:
    def __init__(self, pair_name: str, *, heartbeat_s: float, replicate_s: float, look_s: float,
                 metrics: tuple[str, int] | None = None) -> None:
        self.pair_name = pair_name
        self.pair, self.targets = load_pair(pair_name)
        self.run_id = str(flow_run.get_id())
        self.heartbeat_s, self.replicate_s = heartbeat_s, replicate_s
        self.interval_s = self.pair.policy.probe_interval_s
        self.retry_s = max(look_s, 10.0)  # an act that did not change the decision is tried again after this
        self.probe = PairProbe(self.pair, site(self.pair.main), site(self.pair.backup), look_s=look_s)
        self.status = WatcherStatus(run=self.run_id, pair=pair_name)
        self.keeper = Keeper(self)
        self.metrics = metrics

    def run(self) -> str:
        log = get_run_logger()
        previous = self.keeper.take_lease()
        log.info("watching pair %s every %g s (K=%d); took over from %s", self.pair_name, self.interval_s,
                 self.pair.policy.failures_before_failover, previous or "no earlier watcher")
        context = contextvars.copy_context()  # the loop's heartbeat events and logs belong to this run
        looker = threading.Thread(target=context.run, args=(self._loop,), name="watcher probes", daemon=True)
        with self._metrics_server(log.info):
            looker.start()
            try:
                self.keeper.keep(previous)
            finally:
                self.keeper.stopping.set()
                looker.join(self.interval_s + 2 * self.pair.policy.probe_timeout_s + 5)
        return self.keeper.stop_reason

    def _metrics_server(self, log: Callable[[str], None]) -> AbstractContextManager:
        if self.metrics is None:
            return nullcontext()
        collector = WatcherCollector(self.status.payload, (self.pair.main.name, self.pair.backup.name))
        return MetricsServer(collector, *self.metrics, log)

    def _loop(self) -> None:
        failures, authority = self.keeper.record.consecutive_failures, self.keeper.record.authority.marker()
        next_cycle = time.monotonic()
        beat_at = replicated_at = float("-inf")
        while not self.keeper.stopping.is_set():
            record = self.keeper.record
            if record.authority.marker() != authority:  # a new epoch: its ID server's count starts afresh
                failures, authority = record.consecutive_failures, record.authority.marker()
            holder = record.watcher.run if record.watcher else None
            if holder not in (self.run_id, None):
                self.keeper.stop(f"replaced by watch run {holder} after {self.status.cycles} cycles")
                self._beat(stopping=self.keeper.stop_reason)  # the last word, with its last probe's time
                return
            started = time.monotonic()
            try:
                probes = self.probe.look(record)
            except Exception as exc:  # a bug, not a site's answer: say so and stop, a new watcher starts
                self.keeper.stop(f"the probes failed: {type(exc).__name__}: {exc}", failed=True)
                raise
            now = step(record, failures, probes, self.pair, time.time())
            failures = now.state.consecutive_failures
            self._update_status(record, now, time.monotonic() - started)
            if now.changed or (now.acts and time.monotonic() - self.keeper.acted_at >= self.retry_s):
                self.keeper.submit(now, record)
            if time.monotonic() - replicated_at >= self.replicate_s and record.authority.site == self.pair.main.name:
                replicated_at = time.monotonic()
                self._replicate()
            if time.monotonic() - beat_at >= self.heartbeat_s:
                beat_at = time.monotonic()
                self._beat()
            next_cycle += self.interval_s
            pause = next_cycle - time.monotonic()
            if pause < 0:  # a cycle overran: the next starts now, not in a burst to catch up
                next_cycle, pause = time.monotonic(), 0.0
            self.keeper.stopping.wait(pause)

    def _beat(self, **more: str) -> None:
        """A heartbeat names the pair and this run only: emitted outside the run's
        context, Prefect does not attach the flow, deployment, pool, queue and
        tags to it, five rows fewer in the server's database each time."""
        contextvars.Context().run(
            emit_event, event=HEARTBEAT_EVENT, resource=pair_resource(self.pair_name),
            related=[{"prefect.resource.id": f"prefect.flow-run.{self.run_id}", "prefect.resource.role": "flow-run"}],
            payload={**self.status.payload(), **more})

    def _replicate(self) -> None:
        """Copy MS's lastid to BUS (flows/replicate.py's steps); a failure is logged once."""
        ms, bus = self.pair.main, self.pair.backup
        try:
            self.status.replica_taken_at = copy_lastid(site(ms), site(bus)).taken_at
        except Exception as exc:
            self.keeper.problem("replica", f"lastid not replicated from {ms.name} to {bus.name}: {exc}")
        else:
            self.keeper.solved("replica")

    def _update_status(self, record: HAState, now: Step, took_s: float) -> None:
        s = self.status
        s.authority, s.epoch = record.authority.site, record.authority.epoch
        s.decision, s.consecutive_failures = now.decision.code, now.state.consecutive_failures
        s.cycles += 1
        s.last_probe_at = time.time()
        s.probe_seconds = [*s.probe_seconds[-59:], took_s]
        s.paused = record.pause is not None
        holding = held(record, self.pair, time.time()) if record.authority.site == self.pair.main.name else None
        s.held = holding[1] if holding else ""


class Keeper:
    """The watcher's side that talks to the Prefect server: it reads the
    record, records decisions and then acts on them. Everything it does may
    wait for the server; the probing loop does not."""

    def __init__(self, watcher: Watcher) -> None:
        self.w = watcher
        self.record: HAState = HAState.initial(watcher.pair.main.name)
        self.acted_at = float("-inf")
        self.stopping = threading.Event()
        self.stop_reason = ""
        self._failed = False
        self._pending: tuple[Step, HAState] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._refresh_s = min(max(watcher.interval_s, 1.0), 5.0)
        self._troubles: dict[str, str] = {}  # lasting problems, by kind: logged once

    def take_lease(self) -> str | None:
        """From now on this watcher acts for the pair; returns the run that did before."""
        before = load_state(self.w.pair_name)
        self.record = take_watcher_lease(self.w.pair_name, self.w.run_id, time.time())
        ensure_limit(lock_name(self.w.pair_name))  # asked now, not on the way to a failover
        self.w.status.record_read_at = time.time()
        return before.watcher.run if before.watcher and before.watcher.run != self.w.run_id else None

    def stop(self, reason: str, failed: bool = False) -> None:
        self.stop_reason, self._failed = reason, failed
        self.stopping.set()
        self._wake.set()

    def submit(self, now: Step, seen: HAState) -> None:
        """The newest decision to record (and act on); an older one not yet recorded is dropped."""
        with self._lock:
            self._pending = (now, seen)
        self._wake.set()

    def keep(self, previous: str | None) -> None:
        """Until the watcher stops: read the record, record and act."""
        reap_at = time.monotonic() + max(3 * self._refresh_s, 2 * self.w.interval_s) + 10.0
        digests_at = time.monotonic()
        with get_client(sync_client=True) as client:
            while not self.stopping.is_set():
                with self._lock:
                    pending, self._pending = self._pending, None
                if pending is not None:  # first: a failover waits for nothing else
                    self._record_and_act(*pending, client)
                self._refresh(client)
                if time.monotonic() - digests_at >= self.w.heartbeat_s:
                    digests_at = time.monotonic()
                    self._send_due_digests()
                if previous is not None and time.monotonic() >= reap_at:
                    self._reap(previous, client)
                    previous = None
                self._wake.wait(self._refresh_s)
                self._wake.clear()
        if self._failed:
            raise RuntimeError(self.stop_reason)

    def _send_due_digests(self) -> None:
        """What notifications held back, once their window has ended (tasks/notify.py). Here,
        not in the probe loop: with the server down this waits on it, and probing must not."""
        try:
            send_due_digests(self.w.pair_name)
        except Exception as exc:  # telling people must never stop the watching
            self.problem("digest", f"the digest of held-back notifications was not sent: {exc}")
        else:
            self.solved("digest")

    def problem(self, key: str, what: str) -> None:
        """Log a lasting problem once, not at every cycle it lasts (``key`` names its kind)."""
        with self._lock:
            new, self._troubles[key] = self._troubles.get(key) != what, what
        if new:
            get_run_logger().warning("%s", what)

    def solved(self, key: str) -> None:
        """The problem of kind ``key`` is over (said once)."""
        with self._lock:
            was = self._troubles.pop(key, None)
        if was is not None:
            get_run_logger().info("over: %s", was)

    def _refresh(self, client) -> None:
        try:
            self.record = load_state(self.w.pair_name, client)
        except Exception as exc:  # the server is down or answers errors: keep the last record
            self.problem("record", f"cannot read the pair's record, probing on with the one read at "
                          f"{time.strftime('%H:%M:%S', time.gmtime(self.w.status.record_read_at))} UTC: {exc}")
            return
        self.solved("record")
        self.w.status.record_read_at = time.time()

    def _record_and_act(self, now: Step, seen: HAState, client) -> None:
        log = get_run_logger()
        decision, pair = now.decision, self.w.pair
        if seen.decisions != self.record.decisions:
            return  # decided before the last decision was stored: the loop decides again on the new record
        try:
            recorded = record_health.fn(self.w.pair_name, seen, now.state)
        except Exception as exc:
            recorded, why = False, f"the server did not take it ({exc})"
        else:
            why = "a procedure holds the pair, or the record changed since it was read"
        self.w.status.recorded = recorded
        if not recorded:
            self.problem("decision", f"decision {decision.code} NOT recorded, so not acted on: {why}")
            return
        self.solved("decision")
        self.record = now.state  # what was stored over ``seen``; read back once acted
        self.w.status.decisions[decision.action] += 1
        log.log(20 if decision.code in ("main-answers", "backup-serving") else 30,
                "decision: %s: %s", decision.action.upper(), decision.reason)
        if now.changed:
            emit_decision(self.w.pair_name, decision, now.state)
        if now.acts:
            self.acted_at = time.monotonic()
        try:
            act_and_tell(self.w.pair_name, pair, self.w.targets, seen.last_health_code(), decision, now.state,
                         run_failover=True, wait=False)
        except Exception as exc:  # a failed failover has told people itself; the watcher goes on
            log.error("acting on %s failed: %s", decision.code, exc)
        if decision.code in ("split-brain", "fence"):
            self.w.probe.fenced()
        if now.acts:
            with self._lock:  # decided on the record as it was before acting
                self._pending = None

    def _reap(self, previous: str, client) -> None:
        """The watcher replaced at this one's start should have stopped by now;
        if its run still shows Running, its process died without handing over
        (a killed worker): its run gets a final state, named so, instead of
        staying Running for ever. Not Crashed: a crash starts a replacement."""
        try:
            run = client.read_flow_run(UUID(previous))
            if run.state is not None and run.state.type == StateType.RUNNING:
                client.set_flow_run_state(UUID(previous), State(
                    type=StateType.CRASHED, name=REPLACED,
                    message=f"replaced by watch run {self.w.run_id}; its process did not hand over"), force=True)
                get_run_logger().warning("watch run %s still showed Running without watching: marked %s",
                                         previous, REPLACED)
        except Exception as exc:
            self.problem("reap", f"could not look at the replaced watch run {previous}: {exc}")
