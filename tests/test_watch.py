"""The health watcher on the simulated pair (each site behind a real sshd), on
the real test server: it runs in a thread here as a worker would run it in a
process of its own."""
from __future__ import annotations

import socket
import threading
import urllib.request
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from antelope_ha.state import Pause
from blocks.pair import AntelopePair, AppriseUrl, NotifyTargets
from flows.watch import HEARTBEAT_EVENT, watch
from tasks.health import DECISION_EVENT
from tasks.state import take_watcher_lease, update_state
from tests.servers import HttpReceiver, wait_for
from tests.simpair import Sim, sim_pair

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
STOP = "00000000-0000-0000-0000-00000000dead"  # a lease no watcher holds: the one running stops


@dataclass
class Running:
    """A watcher run in a thread; ``result`` is what its flow returned."""

    thread: threading.Thread
    result: list[str] = field(default_factory=list)

    def stopped(self, timeout_s: float = 30) -> str:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the watcher did not stop"
        return self.result[0]


@contextmanager
def watcher(sim: Sim, start: bool = True, metrics_port: int | None = None) -> Iterator[Running]:
    """A watch run in a thread; stopped (a lease no one holds) before the pair is."""
    running = Running(threading.Thread(target=lambda: running.result.append(
        watch(pair_name=sim.name, heartbeat_s=1.0, replicate_s=1.0, look_s=1.0, metrics_port=metrics_port)),
        daemon=True))
    if start:
        running.thread.start()
    try:
        yield running
    finally:
        if running.thread.is_alive():
            take_watcher_lease(sim.name, STOP, time.time())
        if running.thread.ident is not None:
            running.thread.join(30)


def lease_holder(sim: Sim) -> str | None:
    state = sim.state()
    return state.watcher.run if state.watcher else None


def watching(sim: Sim, other_than: str | None = None) -> str:
    """The run holding the lease once it has probed (a heartbeat after its first cycle), not ``other_than``."""
    def found() -> str | None:
        held = sim.state().watcher
        if not held or held.run == other_than:
            return None
        return held.run if any(b["payload"]["run"] == held.run and b["payload"]["cycles"] >= 1
                               for b in events(HEARTBEAT_EVENT, sim.name, held.since - 1)) else None
    return wait_for("a watcher watching", found, 60, 0.2)


def events(name: str, pair: str, since: float) -> list[dict]:
    """The newest 50 events ``name`` of the pair since ``since`` (the API's page)."""
    with get_client(sync_client=True) as client:
        found = client.request("POST", "/events/filter", json={"filter": {
            "event": {"name": [name]}, "resource": {"id": [f"antelope-ha.pair.{pair}"]},
            "occurred": {"since": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(since))}}, "limit": 50})
    return found.json()["events"]


@contextmanager
def told(sim: Sim) -> Iterator[HttpReceiver]:
    """The pair's notifications go to an Apprise ``json://`` URL on a real HTTP receiver."""
    receiver = HttpReceiver()
    receiver.start()
    try:
        name = f"{sim.name}-hook"
        AppriseUrl(url=receiver.url.replace("http://", "json://") + "/hook").save(name, overwrite=True)
        AntelopePair(main=sim.cfg.main.model_dump(), backup=sim.cfg.backup.model_dump(), witness=sim.cfg.witness,
                     policy=sim.cfg.policy, notify=NotifyTargets(webhooks=[f"apprise-url/{name}"])).save(
            sim.name, overwrite=True)
        yield receiver
    finally:
        receiver.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> list[Sample] | None:
    """The watcher's metrics over HTTP, parsed as Prometheus parses them (None while not served)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The one sample ``name`` with these labels (among others), None when there is none."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def titles(receiver: HttpReceiver, subject: str) -> list[str]:
    return [r["json"]["message"] for r in receiver.requests if subject in r["json"]["title"]]


def test_the_watcher_records_changes_only_fails_over_itself_and_alerts_once_when_bus_dbids_dies(tmp_path):
    port = free_port()
    with sim_pair(tmp_path, "watch") as sim, told(sim) as receiver, watcher(sim, metrics_port=port) as running:
        started = time.time()
        run_id = watching(sim)

        # healthy: many probes, few records; lastid copied to BUS every second, its time beside it
        wait_for("ten heartbeats", lambda: len(events(HEARTBEAT_EVENT, sim.name, started)) >= 10, 60, 0.5)
        beats = events(HEARTBEAT_EVENT, sim.name, started)
        cycles = max(b["payload"]["cycles"] for b in beats)
        recorded = [d for d in sim.state().decisions if d.at >= started]
        assert cycles >= 10 and 1 <= len(recorded) < cycles / 2, (cycles, [d.code for d in recorded])
        assert all(a.code != b.code for a, b in zip(recorded, recorded[1:])), [d.code for d in recorded]
        assert len(events(DECISION_EVENT, sim.name, started)) == len(recorded)
        replica = wait_for("a fresh replica on bus", lambda: (r := sim.pair.paths("bus").dir / "ha" / "replica")
                           .exists() and r.stat().st_mtime > time.time() - 5, 20, 0.2)
        assert replica

        # its metrics, scraped over HTTP: the record, the probes, the replica, the decisions
        m = wait_for("metrics with a replica", lambda: (m := scrape(port)) and [
            s for s in m if s.name == "antelope_ha_replica_age_seconds"] and m, 30, 0.2)
        assert metric(m, "antelope_ha_watcher_info", pair=sim.name, run=run_id) == 1
        assert (metric(m, "antelope_ha_authority_site", site="ms"), metric(m, "antelope_ha_authority_site", site="bus"),
                metric(m, "antelope_ha_authority_epoch")) == (1, 0, 1)
        assert metric(m, "antelope_ha_consecutive_failures") == 0 and metric(m, "antelope_ha_watcher_cycles_total") >= 10
        assert 0 <= metric(m, "antelope_ha_seconds_since_last_probe") < 600
        assert metric(m, "antelope_ha_probe_duration_seconds") > 0 and metric(m, "antelope_ha_replica_age_seconds") >= 0
        assert metric(m, "antelope_ha_decisions_total", action="stay") >= 1
        assert (metric(m, "antelope_ha_paused"), metric(m, "antelope_ha_held")) == (0, 0)
        update_state(sim.name, lambda s: s.model_copy(update={"pause": Pause(by="ana", reason="swap",
                                                                                  since=time.time())}))
        wait_for("paused and held", lambda: (m := scrape(port)) and metric(m, "antelope_ha_paused") == 1
                 and metric(m, "antelope_ha_held") == 1, 30, 0.2)
        update_state(sim.name, lambda s: s.model_copy(update={"pause": None}))
        wait_for("resumed", lambda: (m := scrape(port)) and metric(m, "antelope_ha_held") == 0, 30, 0.2)

        # MS powered off: the watcher decides, records, and runs the failover itself, as its subflow
        powered_off = time.time()
        sim.pair.power_off("ms")
        wait_for("bus authoritative", lambda: sim.state().authority.site == "bus", 60, 0.2)
        state = sim.state()
        with get_client(sync_client=True) as client:
            failover_run = client.read_flow_run(UUID(state.authority.flow_run))
            parent = client.read_task_run(failover_run.parent_task_run_id)
        assert parent.flow_run_id == UUID(run_id)
        failover = [d for d in state.decisions if d.code == "failover"]
        assert len(failover) == 1 and failover[0].at > powered_off and "witness reachable" in failover[0].reason
        wait_for("bus serving, recorded", lambda: sim.state().last_health_code() == "backup-serving", 30, 0.2)
        m = wait_for("metrics of epoch 2", lambda: (m := scrape(port)) and metric(
            m, "antelope_ha_authority_epoch") == 2 and m, 30, 0.2)
        assert metric(m, "antelope_ha_authority_site", site="bus") == 1
        assert metric(m, "antelope_ha_decisions_total", action="failover") == 1

        # BUS's own dbids dies and stays dead: one alert saying what rtexec does, never a move back to MS
        sim.pair.crash("bus", "dbids", restart=False)
        wait_for("the alert", lambda: titles(receiver, "ID SERVER DOWN on bus"), 60, 0.2)
        time.sleep(3 * sim.cfg.policy.probe_interval_s * sim.cfg.policy.failures_before_failover)
        alerts = titles(receiver, "ID SERVER DOWN on bus")
        assert len(alerts) == 1, alerts
        assert "rtexec running on bus; dbids NOT running although its Run line says yes" in alerts[0]
        assert "never moved back to ms automatically" in alerts[0]
        state = sim.state()
        assert state.authority.site == "bus" and state.last_health_code() == "backup-down"
        assert not sim.pair.task_pids("ms", "dbids")

        # a person repairs it: told once that it answers again
        sim.pair.repair("bus", "dbids")
        wait_for("answers again", lambda: titles(receiver, "ID server on bus answers again"), 60, 0.2)

        take_watcher_lease(sim.name, STOP, time.time())
        assert running.stopped().startswith(f"replaced by watch run {STOP} after ")


def test_a_new_watcher_takes_over_without_a_gap_and_the_old_one_stops(tmp_path):
    """And the new one serves the metrics on the same port once the old one lets go of it."""
    port = free_port()
    with (sim_pair(tmp_path, "handover") as sim, watcher(sim, metrics_port=port) as first,
          watcher(sim, start=False, metrics_port=port) as second):
        first_id = watching(sim)
        second.thread.start()
        second_id = watching(sim, other_than=first_id)
        assert first.stopped().startswith(f"replaced by watch run {second_id} after ")
        assert lease_holder(sim) == second_id and second.thread.is_alive()
        # no gap: the old watcher probed until after the new one had taken the lease
        last_word = wait_for("the old watcher's last heartbeat", lambda: [
            b["payload"] for b in events(HEARTBEAT_EVENT, sim.name, 0)
            if b["payload"]["run"] == first_id and b["payload"].get("stopping")], 30, 0.5)[0]
        assert last_word["last_probe_at"] >= sim.state().watcher.since, last_word
        wait_for("the new watcher's metrics", lambda: (m := scrape(port)) and metric(
            m, "antelope_ha_watcher_info", run=second_id) == 1, 30, 0.2)
