"""The antelope-ha command against a simulated pair (each site behind its own
sshd) on the test Prefect server."""
from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest
from typer.testing import CliRunner

from antelope_ha.state import Declined, HAState
from deployments.cli import app
from tests.simpair import Sim, sim_pair

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
cli = CliRunner()


@pytest.fixture(scope="module")
def sim(prefect_server, tmp_path_factory):
    with sim_pair(tmp_path_factory.mktemp("cli"), "cli") as s:
        yield s


@pytest.fixture(autouse=True)
def fresh_record(sim: Sim):
    """Each test starts from MS authoritative at epoch 1, no markers on the sites, no lastid replica."""
    sim.set_state(HAState.initial("ms"))
    for site in ("ms", "bus"):
        (sim.pair.paths(site).dir / "ha" / "authority").unlink(missing_ok=True)
    (sim.pair.paths("bus").dir / "ha" / "replica").unlink(missing_ok=True)  # made by the tests that need one


def run(*args: str):
    return cli.invoke(app, [*args, "--pair", "cli"], catch_exceptions=False)


def write_marker(sim: Sim, site: str, record: dict) -> None:
    path = sim.pair.paths(site).dir / "ha" / "authority"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(record, sort_keys=True))


def replicate(sim: Sim) -> None:
    """A fresh lastid replica on BUS, as the watcher keeps it."""
    from flows.replicate import copy_lastid
    from tasks.sites import site

    copy_lastid(site(sim.cfg.main), site(sim.cfg.backup))


def test_status_agrees_on_a_fresh_pair(sim: Sim):
    """And its site table fits 80 columns with each site's dbidserver whole."""
    replicate(sim)
    result = run("status")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ANTELOPE-HA OK - pair cli: ms authoritative, epoch 1")
    assert "ms authoritative, epoch 1" in result.output
    assert "the record and every reachable site agree" in result.output
    table = result.output[result.output.index("the sites, now"):].splitlines()
    assert all(len(line) <= 80 for line in table), "\n".join(table)
    dbidserver_row = next(line for line in table if "dbidserver" in line)
    assert dbidserver_row.count(sim.cfg.main.idserver_address) == 2, dbidserver_row


def test_status_json_is_one_object_of_the_schema_each_look(sim: Sim):
    import jsonschema

    from antelope_ha.pairstatus import StatusReport

    replicate(sim)
    result = run("status", "--json", "--watch", "--interval", "0.2", "--count", "2")
    assert result.exit_code == 0, result.output
    looks = [json.loads(line) for line in result.output.splitlines()]
    assert len(looks) == 2 and looks[1]["checked_at"] > looks[0]["checked_at"]
    schema = json.loads(run("status", "--schema").output)
    for look in looks:
        jsonschema.validate(look, schema)
        assert StatusReport.model_validate(look).status == "OK"
    assert looks[0]["authority"]["site"] == "ms" and [s["name"] for s in looks[0]["sites"]] == ["ms", "bus"]


def test_status_shows_bus_recorded_and_flags_the_sites_that_say_otherwise(sim: Sim):
    sim.set_state(HAState.initial("ms").with_authority("bus", None, "test"))
    write_marker(sim, "bus", {"site": "bus", "epoch": 2})
    write_marker(sim, "ms", {"site": "ms", "epoch": 1})
    result = run("status")
    assert result.exit_code == 2, result.output  # CRITICAL: a second ID server
    assert result.output.startswith("ANTELOPE-HA CRITICAL - pair cli: SPLIT BRAIN RISK")
    assert "bus authoritative, epoch 2" in result.output
    assert "DISAGREE" in result.output
    assert "ms's marker says ms epoch 1; the record says bus epoch 2" in result.output
    assert "SPLIT BRAIN RISK: dbids runs on ms" in result.output  # the sites were not failed over
    assert "dbids is not running on bus, the authoritative site" in result.output


def test_status_warns_of_an_unreachable_backup(sim: Sim):
    sim.pair.power_off("bus")
    try:
        result = run("status")
    finally:
        sim.pair.power_on("bus")
        sim.pair.start()
    assert result.exit_code == 1, result.output  # WARNING: no failover possible
    assert "WARNING: bus is unreachable: no failover is possible" in result.output
    assert "bus is unreachable: what it says is unknown" in result.output
    assert "the record and every reachable site agree" in result.output


def test_pause_resume_and_ack_change_only_the_record(sim: Sim):
    """And each is an event of the pair naming who acted and why (the audit)."""
    from tests.test_watch import events

    started = time.time()
    before = sim.snapshot("rtexec.pf", "db/db")
    assert run("pause", "--reason", "disk swap on ms", "--by", "ana").exit_code == 0
    paused = sim.state().pause
    assert paused is not None and (paused.by, paused.reason) == ("ana", "disk swap on ms")
    shown = run("status")
    assert shown.exit_code == 1 and "PAUSED by ana" in shown.output
    assert run("resume", "--reason", "disk swapped", "--by", "ana").exit_code == 0
    assert sim.state().pause is None
    assert sim.state().decisions[-1].reason == "automatic failover resumed by ana: disk swapped"
    assert run("ack", "--by", "bo", "--reason", "MS is really down").exit_code == 0
    state = sim.state()
    assert state.hold_down_ack is not None
    assert [d.action for d in state.decisions[-3:]] == ["pause", "resume", "ack"]
    assert "bo" in state.decisions[-1].reason
    assert sim.snapshot("rtexec.pf", "db/db") == before
    said = {"antelope-ha.failover.paused": ("ana", "disk swap on ms"), "antelope-ha.failover.resumed": ("ana", "disk swapped"),
            "antelope-ha.hold-down.acknowledged": ("bo", "MS is really down")}
    deadline = time.time() + 30
    while (found := {name: [(e["payload"]["operator"], e["payload"]["reason"]) for e in events(name, sim.name, started - 1)]
                     for name in said}) != {name: [who] for name, who in said.items()} and time.time() < deadline:
        time.sleep(0.5)
    assert found == {name: [who] for name, who in said.items()}
    shown = json.loads(run("history", "--since", "10m", "--json").output)
    ours = [(e["event"], e["who"], e["why"], e["epoch"]) for e in shown if e["at"] >= time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1))]
    assert ours == [("failover.paused", "ana", "disk swap on ms", 1), ("failover.resumed", "ana", "disk swapped", 1),
                    ("hold-down.acknowledged", "bo", "MS is really down", 1)]
    text = run("history", "--since", "10m").output
    assert "automatic failover paused\n    by ana: disk swap on ms" in text
    assert run("history", "--since", "last week").exit_code == 2


def test_plan_prints_the_failover_commands_and_changes_nothing(sim: Sim):
    files = ("rtexec.pf", "db/db", "ha/armed", "ha/authority")  # not MS's lastid: its dbids is serving
    before, bus_lastid = sim.snapshot(*files), sim.pair.lastid("bus")
    result = run("plan", "failover")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["DRY RUN of failover for pair cli: nothing on the sites changes",
                         "DRY RUN: ms authoritative, epoch 1", "DRY RUN: automatic failover: enabled"], lines
    assert all(line.startswith("DRY RUN") for line in lines), lines
    ms_part = "\n".join(line for line in lines if line.startswith("DRY RUN on ms: "))
    bus_part = "\n".join(line for line in lines if line.startswith("DRY RUN on bus: "))
    assert len(set(lines)) == len(lines), "a line printed twice"
    assert "set dbids Run no" in ms_part and "arm: no dbids may start here" in ms_part
    assert f"dbidserver {sim.cfg.backup.idserver_address}" in bus_part
    assert sim.snapshot(*files) == before and sim.pair.lastid("bus") == bus_lastid
    assert sim.state().authority.site == "ms"


def test_plan_of_replicate_shows_the_lastid_write_and_changes_nothing(sim: Sim):
    replica = sim.pair.paths("bus").dir / "dbids" / "dbids.lastid"
    kept = replica.read_bytes()
    replica.unlink()  # the replica is missing on BUS
    try:
        result = run("plan", "replicate")
        assert not replica.exists() and not (sim.pair.paths("bus").dir / "ha" / "replica").exists()
    finally:
        replica.write_bytes(kept)
    assert result.exit_code == 0, result.output
    assert "DRY RUN of replicate for pair cli" in result.output
    assert f"write {replica}" in result.output


def test_ack_lifts_a_hold_down_and_a_declined_failover(sim: Sim):
    now = time.time()
    state = HAState.initial("ms").with_authority("bus", None, "test", now=now - 60)
    state = state.with_authority("ms", None, "fallback", now=now - 30)
    sim.set_state(state.model_copy(update={"declined": Declined(at=now - 10, what="failover without fencing ms: "
                                                                                "rejected by ana: MS is fine")}))
    shown = run("status").output
    assert "not acknowledged" in shown and "failover declined" in shown and "rejected by ana" in shown
    assert run("ack", "--by", "bo", "--reason", "MS really is down").exit_code == 0
    shown = run("status").output
    assert "hold-down after the failover" in shown and "acknowledged at" in shown
    assert "not acknowledged" not in shown and "failover declined" not in shown


def test_plan_of_recovery_takes_the_window(sim: Sim):
    """A window with rows: the plan extracts BUS's events of it to their last
    arrival, narrows, copies and merges; a window with none changes nothing."""
    end = time.time() - 1
    start = end - 2
    result = run("plan", "recovery", "--start", f"{start:.3f}", "--end", f"{end:.3f}")
    assert result.exit_code == 0, result.output
    extract = re.search(r"trexcerpt -v -e db/db recovery/(\d+)-(\d+)/db ([\d.]+) ([\d.]+)", result.output)
    assert extract, result.output
    first, last = float(extract[3]), float(extract[4])
    assert first >= start - 0.001 and last > end  # past the window: its events' S arrivals
    window = f"recovery/{extract[1]}-{extract[2]}"
    assert f"narrow {window}/db {window}/keep.json" in result.output
    assert f"trexcerpt -v -a -e {window}/db db/db {extract[3]} {extract[4]}" in result.output
    empty = run("plan", "recovery", "--start", "1700000000", "--end", "1700000600")
    assert empty.exit_code == 0 and "DRY RUN: nothing would change" in empty.output


def test_plan_of_health_prints_the_decision(sim: Sim):
    result = run("plan", "health")
    assert result.exit_code == 0, result.output
    assert "DRY RUN result: stay: ms ID server answers" in result.output


def test_plan_states_a_pause_first(sim: Sim):
    assert run("pause", "--by", "ana", "--reason", "MS disk swap").exit_code == 0
    lines = run("plan", "failover").stdout.splitlines()
    assert lines[2] == "DRY RUN: automatic failover: HELD (paused): automatic failover paused by ana: MS disk swap", \
        lines


def test_an_unknown_pair_is_named_with_the_fix(sim: Sim):
    """Status says UNKNOWN (exit 3), as a monitoring check that cannot tell."""
    result = cli.invoke(app, ["status", "--pair", "nosuchpair"])
    assert result.exit_code == 3
    assert result.output.startswith("ANTELOPE-HA UNKNOWN - pair nosuchpair: cannot read the pair or its record")
    assert "no Antelope Pair block named 'nosuchpair'" in result.output and "antelope-ha setup" in result.output
    as_json = cli.invoke(app, ["status", "--pair", "nosuchpair", "--json"])
    assert as_json.exit_code == 3 and json.loads(as_json.output)["status"] == "UNKNOWN"


def test_setup_drill_and_runbook_call_their_implementations(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import deployments.cli
    import deployments.setup
    import rehearsal.drill
    import rehearsal.runbook

    calls = []
    config = tmp_path / "pair.yaml"
    config.write_text("pair: x\n")
    monkeypatch.setattr(deployments.setup, "setup", lambda path, **kw: calls.append(("setup", path)) or [])
    monkeypatch.setattr(deployments.setup, "load_config", lambda path: SimpleNamespace(pair="x", operator_problems=list))
    monkeypatch.setattr(deployments.setup, "server_differences", lambda config: [])
    monkeypatch.setattr(deployments.cli, "take_baselines", lambda pair, reason: calls.append(("baseline", pair, reason)))
    monkeypatch.setattr(rehearsal.drill, "main", lambda argv: calls.append(("drill", argv)) or 1)
    monkeypatch.setattr(rehearsal.runbook, "write_runbooks", lambda out: calls.append(("runbook", out)) or [out / "x.md"])
    assert cli.invoke(app, ["setup", str(config)]).exit_code == 0
    assert cli.invoke(app, ["drill", "--json"]).exit_code == 1  # the drill's own exit status
    assert cli.invoke(app, ["runbook", "--out", str(tmp_path / "rb")]).exit_code == 0
    assert calls == [("setup", config), ("baseline", "x", "setup"), ("drill", ["--json"]), ("runbook", tmp_path / "rb")]


def test_baseline_records_each_sites_old_id_problems_and_status_lists_them(sim: Sim):
    from antelope_ha.css30 import TABLES, append_rows, read_table

    arrivals = sim.pair.paths("bus").dir / f"{sim.cfg.backup.db}.arrival"
    first = next(read_table(arrivals, TABLES["arrival"]))
    append_rows(arrivals, TABLES["arrival"], [first])  # the same arrival twice on BUS
    result = run("baseline", "--by", "ana", "--reason", "known since 2019")
    assert result.exit_code == 0, result.output
    state = sim.state()
    assert state.baselines["ms"].problems == [] and state.baselines["ms"].reason == "taken by ana: known since 2019"
    # BUS's lastid is a replica never taken here: its keys are also above it
    (old,) = [p for p in state.baselines["bus"].problems if p.kind == "duplicates"]
    assert (old.key, old.ids) == ("arid", [first["arid"]])
    shown = run("status").output
    assert "old id problems of ms (baseline taken" in shown and "taken by ana: known since 2019" in shown
    assert "1 arid values are used more than once" in shown and "(first seen 20" in shown


def test_history_reads_every_page_oldest_first_without_heartbeats():
    """More events than one page of the events API (50), and heartbeats left out."""
    from prefect.events import emit_event

    from antelope_ha.names import PairNames
    from tasks.history import PAGE, read_history

    pair, since = f"pages-{time.time_ns()}", time.time() - 1
    for i in range(PAGE + 7):
        emit_event(event="antelope-ha.failover.paused", resource=PairNames(pair).resource(),
                   payload={"operator": "ana", "reason": f"pause {i}"})
    emit_event(event="antelope-ha.watcher.heartbeat", resource=PairNames(pair).resource(), payload={})
    start = dt.datetime.fromtimestamp(since, dt.timezone.utc)
    deadline = time.time() + 30
    while len(found := read_history(pair, start)) < PAGE + 7 and time.time() < deadline:
        time.sleep(0.5)
    assert [e["payload"]["reason"] for e in found] == [f"pause {i}" for i in range(PAGE + 7)]
