"""The flows on the simulated pair, each site behind a real sshd, on a real
(test) Prefect server."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from antelope_ha.commands import list_processes
from antelope_ha.completeness import Verdict
from antelope_ha.css30 import TABLES, append_rows, read_table
from antelope_ha.idscan import ids_report
from antelope_ha.lastid import read_lastid, write_lastid
from antelope_ha.site import StepFailed
from antelope_ha.runner import LocalRunner
from deployments.cli import app as cli
from flows.calling import call_flow
from rehearsal.drill import DrillReport, answering, final_checks, newest_origin, origin_times
from rehearsal.drill import main as drill_main
from flows.failover import failover
from flows.fallback import fallback
from flows.health import health
from flows.recovery import WindowError, recovery
from flows.replicate import replicate_lastid
from simsite.pair import SimPair
from antelope_ha.site import EpochRefused
from tasks.authority import activate_idserver
from tasks.pair import save_pair
from tests.simpair import FAST, Sim, approve, run_artifact, sim_pair, wrong_answer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

CONFIG_FILES = ("rtexec.pf", "db/db", "ha/authority", "ha/armed")


def running(sim: Sim, site: str, task: str) -> bool:
    return bool(sim.pair.task_pids(site, task))


def dbidserver(sim: Sim, site: str) -> str:
    text = (sim.pair.paths(site).dir / "db" / "db").read_text()
    return next(line.split()[1] for line in text.splitlines() if line.startswith("dbidserver"))


def fail_over(sim: Sim) -> None:
    """MS dies; health cycles until the automatic failover has run."""
    sim.pair.power_off("ms")
    for _ in range(sim.cfg.policy.failures_before_failover + 2):
        if call_flow(health, pair_name=sim.name, failover_inline=True).startswith("failover"):
            return
    raise AssertionError(f"no failover; last decisions: {sim.state().decisions[-3:]}")


def assert_bus_authoritative(sim: Sim) -> None:
    state = sim.state()
    assert state.authority.site == "bus" and not state.fallback_in_progress
    assert running(sim, "bus", "dbids") and not running(sim, "ms", "dbids")
    assert dbidserver(sim, "bus") == sim.cfg.backup.idserver_address
    assert running(sim, "bus", "orb2dbt") and running(sim, "bus", "orb2wf")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drill_at_ten_times_the_rate_loses_nothing_and_leaves_no_process(tmp_path, capsys, seed):
    """Writers ten times faster (50 packets a second, each an event with two
    arrivals and a waveform segment) and health probing three times as often:
    judged by the completeness rule over every table of both sites."""
    assert drill_main(["--json", "--workdir", str(tmp_path), "--rate", "50", "--probe-interval", "0.333",
                       "--seed", str(seed)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["problems"] == [] and report["seed"] == seed
    assert report["rows_lost"] == 0 and report["orphans"] == 0 and report["duplicate_ids"] == 0
    assert report["packets_missing"] == 0
    assert len(report["gaps"]) == 1 and report["rows_required"] > 0 and report["rows_written"] > 0
    assert report["detection_s"] > 0 and report["failover_s"] > 0 and report["fallback_s"] > 0
    names = [s["name"] for s in report["steps"]]
    assert "health detects the failure and fails over, without a person" in names
    assert all(s["end"] >= s["start"] and s["outcome"] != "running" and not s["outcome"].startswith("failed")
               for s in report["steps"])
    # the only approvals answered were the fallback's two gates
    assert len(report["approvals"]) == 2
    ps = LocalRunner().run(list_processes().argv).check().stdout
    assert [line for line in ps.splitlines() if f"{tmp_path}/" in line] == []
    if seed == 1:
        drill_loses_one_arrival_and_fails(tmp_path / "pair")


def drill_loses_one_arrival_and_fails(pair: Path) -> None:
    """The drill's final check on the same files, with one merged arrival taken away from MS."""
    report, interval = DrillReport(), SimPair.open(pair).settings.packet_interval_s
    arrivals = pair / "ms" / "db" / "db.arrival"
    lines = arrivals.read_bytes().splitlines(keepends=True)
    bus = set((pair / "bus" / "db" / "db.arrival").read_bytes().splitlines(keepends=True))
    merged = [i for i, line in enumerate(lines) if line in bus]
    arrivals.write_bytes(b"".join(line for i, line in enumerate(lines) if i != merged[-1]))
    final_checks(report, pair / "ms", pair / "bus", interval, "drill")
    assert not report.passed and report.rows_lost == 1 and report.lost_by_table == {"arrival": 1}
    assert report.orphans == 1  # its assoc on MS


def test_newest_origin_reads_the_last_records_and_leaves_one_being_written(tmp_path):
    origin = TABLES["origin"]
    db = tmp_path / "db"
    assert newest_origin(tmp_path) == 0.0  # no table yet
    db.mkdir()
    times = [1000.0 + i for i in range(100)]
    times[-3] = 5000.5  # the newest is not the last row
    append_rows(db / "db.origin", origin, [{"orid": i + 1, "time": t} for i, t in enumerate(times)])
    assert newest_origin(tmp_path) == 5000.5 == max(origin_times(tmp_path))
    assert newest_origin(tmp_path, records=2) == 1099.0  # only the last two are read
    with open(db / "db.origin", "ab") as f:  # a writer half-way through a record
        f.write(origin.format_row({"orid": 101, "time": 9999.0}).encode()[:40])
    assert newest_origin(tmp_path) == 5000.5


def test_drill_exits_non_zero_when_a_row_is_lost(monkeypatch, capsys):
    import rehearsal.drill

    monkeypatch.setattr(rehearsal.drill, "drill", lambda **kw: DrillReport(rows_written=10, rows_lost=1,
                                                                      duplicate_ids=0))
    assert drill_main([]) == 1
    assert "rows lost 1" in capsys.readouterr().out


def test_failover_then_rerun_changes_nothing(tmp_path):
    with sim_pair(tmp_path, "rerun") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        assert_bus_authoritative(sim)
        epoch = sim.state().authority.epoch
        before = sim.snapshot(*CONFIG_FILES)
        pids = {t: sim.pair.task_pids("bus", t) for t in ("dbids", "orb2dbt", "orb2wf", "pub2web")}
        failover(pair_name=sim.name, reason="rerun")
        assert sim.snapshot(*CONFIG_FILES) == before
        assert {t: sim.pair.task_pids("bus", t) for t in pids} == pids
        assert sim.state().authority.epoch == epoch


def test_failover_refuses_dbids_on_a_site_without_the_epoch_or_armed(tmp_path):
    """dbids starts only on the site holding the current epoch on the record and
    on its own marker, and never on an armed one. With the armed check taken out
    of activate_idserver, BUS's dbids started here and the test failed (tried by
    hand, then put back)."""
    with sim_pair(tmp_path, "epoch") as sim:
        with pytest.raises(EpochRefused, match="epoch 1 belongs to ms"):
            activate_idserver.fn(sim.name, sim.cfg.backup)
        state = sim.state().with_authority("bus", None, "test")
        sim.set_state(state)  # on the record, but BUS's own marker was never written
        with pytest.raises(EpochRefused, match="its marker says None"):
            activate_idserver.fn(sim.name, sim.cfg.backup)
        ha = sim.pair.paths("bus").dir / "ha"
        (ha / "authority").write_text(json.dumps(state.authority.marker()))  # epoch and marker agree now
        (ha / "armed").write_text("test: fenced\n")
        with pytest.raises(EpochRefused, match="refusing to start dbids on bus: the site is armed"):
            activate_idserver(sim.name, sim.cfg.backup)  # a task run of its own, as the flows run it
        assert not running(sim, "bus", "dbids")
        (ha / "armed").unlink()  # the armed marker was all that held it back
        assert activate_idserver(sim.name, sim.cfg.backup).changed
        assert running(sim, "bus", "dbids")


def test_isolated_backup_and_cut_link_do_not_fail_over(tmp_path):
    with sim_pair(tmp_path, "isolated") as sim:
        sim.pair.isolate("bus")
        sim.pair.heal_link("orchestrator", "bus")  # the flows still reach BUS; BUS reaches no one
        decisions = [call_flow(health, pair_name=sim.name, failover_inline=True) for _ in range(3)]
        assert all(d.startswith("stay") for d in decisions)
        assert "isolated" in decisions[-1]
        sim.pair.rejoin("bus")
        sim.pair.cut_link("bus", "ms")  # MS healthy, only BUS -> MS is cut
        decisions = [call_flow(health, pair_name=sim.name, failover_inline=True) for _ in range(3)]
        assert all(d.startswith("stay") for d in decisions)
        assert "only the link bus -> ms is down" in decisions[-1]
        assert sim.state().authority.site == "ms" and running(sim, "ms", "dbids")


def test_ms_alive_behind_a_cut_link_is_not_taken_over_unfenced_without_a_person(tmp_path):
    """require_fence: BUS and its worker reach nothing of MS, whose dbids still
    serves: the failover cannot fence MS and asks; rejected, nothing changes;
    approved, BUS takes over and the health flow fences MS once it is reachable."""
    policy = FAST.model_copy(update={"require_fence": True, "approval_poll_s": 0.5})
    with sim_pair(tmp_path, "unfenced", policy) as sim:
        # behind a cut link, connects and commands on the open connection to MS hang until their limits
        ms = sim.cfg.main.model_copy(update={"ssh": sim.cfg.main.ssh.model_copy(
            update={"connect_timeout_s": 1.0, "command_timeout_s": 5.0})})
        save_pair(sim.name, sim.cfg.model_copy(update={"main": ms}))
        replicate_lastid(pair_name=sim.name)
        for src in ("bus", "orchestrator"):
            sim.pair.cut_link(src, "ms")
        before = sim.snapshot(*CONFIG_FILES)
        with answering("failover", lambda n: approve(site="bus", decision="reject")) as answers:
            result = failover(pair_name=sim.name, reason="test: MS unreachable")
        assert len(answers) == 1 and "could not be fenced" in result and "nothing was changed" in result
        assert sim.snapshot(*CONFIG_FILES) == before and sim.state().authority.site == "ms"
        assert running(sim, "ms", "dbids") and not running(sim, "bus", "dbids")
        held = [call_flow(health, pair_name=sim.name, failover_inline=True) for _ in range(2)]
        assert held[-1].startswith("hold") and "declined in this outage" in held[-1]  # not asked again
        assert sim.state().authority.site == "ms"

        with answering("failover", lambda n: approve(site="bus")) as answers:
            failover(pair_name=sim.name, reason="test: MS known cut off")
        assert len(answers) == 1
        assert sim.state().authority.site == "bus" and running(sim, "bus", "dbids")
        assert running(sim, "ms", "dbids")  # not fenced: that is what the person approved
        for src in ("bus", "orchestrator"):
            sim.pair.heal_link(src, "ms")
        assert call_flow(health, pair_name=sim.name).startswith("fence")
        assert not running(sim, "ms", "dbids")


def test_fallback_rejected_at_first_gate_leaves_everything(tmp_path):
    with sim_pair(tmp_path, "reject1") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.pair.power_on("ms", start_rtexec=False)
        call_flow(health, pair_name=sim.name)  # fences MS now that it is back
        before = sim.snapshot("db/db", "ha/authority", "ha/armed")
        plan = CliRunner().invoke(cli, ["plan", "fallback", "--pair", sim.name], catch_exceptions=False)
        assert plan.exit_code == 0, plan.output
        ms_part, bus_part = ("\n".join(line for line in plan.stdout.splitlines()
                                       if line.startswith(f"DRY RUN on {site}:")) for site in ("ms", "bus"))
        assert "rtexec -fs" in ms_part and "set dbids Run yes" in ms_part and "set orb2dbt Run yes" in ms_part
        assert "set orb2dbt Run no" in bus_part and "set dbids Run no" in bus_part
        assert f"dbidserver {sim.cfg.main.idserver_address}" in bus_part
        assert sim.snapshot("db/db", "ha/authority", "ha/armed") == before
        with answering("fallback", lambda n: approve(decision="reject")) as answers:
            result = fallback(pair_name=sim.name)
        assert len(answers) == 1 and "stopped" in result and "nothing was changed" in result
        assert sim.snapshot("db/db", "ha/authority", "ha/armed") == before
        assert_bus_authoritative(sim)


def test_fallback_rejected_at_second_gate_restores_backup(tmp_path):
    with sim_pair(tmp_path, "reject2") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.pair.power_on("ms", start_rtexec=False)
        with answering("fallback", lambda n: approve(decision="approve" if n == 0 else "reject")) as answers:
            result = fallback(pair_name=sim.name)
        assert len(answers) == 2 and "restored as authority" in result
        assert_bus_authoritative(sim)
        assert (sim.pair.paths("ms").dir / "ha" / "armed").exists()
        t = time.time()
        sim.wait_rows("bus", t)  # BUS writes again, with its own ids
        # once more, the second gate left unanswered: it times out and BUS is restored the same way
        save_pair(sim.name, sim.cfg.model_copy(update={"policy": sim.cfg.policy.model_copy(
            update={"approval_timeout_s": 3, "approval_poll_s": 0.5})}))
        with answering("fallback", lambda n: approve() if n == 0 else None) as answers:
            result = fallback(pair_name=sim.name)
        assert len(answers) == 1 and "start dbids on ms: timed out" in result and "restored as authority" in result
        assert_bus_authoritative(sim)
        sim.wait_rows("bus", time.time())


def test_wrong_site_confirmation_is_asked_again(tmp_path):
    with sim_pair(tmp_path, "confirm") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.pair.power_on("ms", start_rtexec=False)
        answers_given = [approve(site="bus"), approve(decision="reject")]
        with answering("fallback", lambda n: answers_given[min(n, 1)]) as answers:
            result = fallback(pair_name=sim.name)
        assert len(answers) == 2 and "nothing was changed" in result
        assert_bus_authoritative(sim)


def rows(sim: Sim, site: str, table: str) -> list[dict]:
    return list(read_table(f"{sim.db(site)}.{table}", TABLES[table]))


def copies_of_bus(sim: Sim) -> int:
    """MS's lines that are byte-for-byte BUS's: the rows merged into it."""
    tables = ("event", "origin", "arrival", "assoc", "wfdisc")
    bus = {t: set(open(f"{sim.db('bus')}.{t}", "rb")) for t in tables}
    return sum(line in bus[t] for t in tables for line in open(f"{sim.db('ms')}.{t}", "rb"))


def assert_nothing_lost(sim: Sim, gaps: int) -> list[Verdict]:
    """By the completeness rule, read here from both sites' files: 0 rows missing,
    0 orphans, 0 ids naming two rows; and MS's ids clean against its lastid."""
    verdicts = sim.judged()
    assert [len(v.gaps) for v in verdicts] == [gaps], [v.gaps for v in verdicts]
    for v in verdicts:
        assert v.ok and not v.missing and not v.orphans and not v.twice, v.problems()
        assert v.present == v.required and sum(v.required.values()) > 0
    ids = ids_report(str(sim.db("ms")), str(sim.pair.paths("ms").lastid))
    assert ids.ok, ids.problems
    return verdicts


def test_full_cycle_and_recovery_merges_once(tmp_path):
    with sim_pair(tmp_path, "recovery") as sim:
        replicate_lastid(pair_name=sim.name)
        # MS loses power with a packet half written: its event row on disk, its origin not yet
        sim.pair.tear_packet("ms", "orb2dbt", after_table="event")
        torn = rows(sim, "ms", "event")[-1]
        fail_over(sim)
        t_failover = time.time()
        sim.wait_rows("bus", t_failover)
        with pytest.raises(WindowError, match="still authoritative"):
            recovery(pair_name=sim.name)
        sim.pair.power_on("ms", start_rtexec=False)
        with answering("fallback", lambda n: approve()):
            fallback(pair_name=sim.name)
        state = sim.state()
        assert state.authority.site == "ms" and state.authority.epoch == 3
        assert running(sim, "ms", "dbids") and not running(sim, "bus", "dbids")
        assert dbidserver(sim, "bus") == sim.cfg.main.idserver_address
        sim.wait_rows("ms", time.time())
        run = recovery(pair_name=sim.name, return_state=True)
        first = run.result()
        assert first.startswith("merged ")
        [verdict] = assert_nothing_lost(sim, gaps=1)
        assert sim.state().recovered_through == 2
        assert_history_tells_the_incident(sim, t_failover - 120)

        # Events straddling the gap's ends: BUS's events of the gap whose S arrival comes after
        # its end are on MS whole; BUS's copies of events MS recorded before the gap, whose S
        # arrival falls in it, are not merged (MS has its own).
        [gap] = verdict.gaps
        on_ms = {r["arid"] for r in rows(sim, "ms", "arrival")}
        assocs = rows(sim, "bus", "assoc")  # first: BUS writes on, an event's assocs after its origin and arrivals
        bus_origins = {o["orid"]: o["time"] for o in rows(sim, "bus", "origin")}
        bus_arrivals = {a["arid"]: a["time"] for a in rows(sim, "bus", "arrival")}
        late = [a["arid"] for a in assocs
                if gap.start <= bus_origins[a["orid"]] <= gap.end and bus_arrivals[a["arid"]] > gap.end]
        early = [a["arid"] for a in assocs
                 if bus_origins[a["orid"]] < gap.start and gap.start <= bus_arrivals[a["arid"]] <= gap.end]
        assert late and early
        assert set(late) <= on_ms and not set(early) & on_ms

        gap_text = run_artifact(run.state_details.flow_run_id, "recovery-gap")
        arrival = next(line for line in gap_text.splitlines() if line.startswith("| arrival |"))
        must, before, after = (int(c) for c in arrival.strip("| ").split(" | ")[1:])
        assert must > 0 and before == 0 and after == must, gap_text
        # the half packet is not the recovery's to mend, and its report names it
        assert torn["prefor"] not in {o["orid"] for o in rows(sim, "ms", "origin")}
        assert (f"event evid {torn['evid']} prefor {torn['prefor']}: prefor {torn['prefor']} has no origin row"
                in gap_text), gap_text
        merged = copies_of_bus(sim)
        second = recovery(pair_name=sim.name)
        assert second.startswith("nothing to merge")
        assert_nothing_lost(sim, gaps=1)
        assert copies_of_bus(sim) == merged
        with pytest.raises(WindowError, match="empty or reversed"):
            recovery(pair_name=sim.name, start=2000.0, end=1000.0)

        # The verification reads MS's whole id scan: an id above lastid, none used twice, fails it.
        sim.pair.crash("ms", "dbids", restart=False)  # a serving dbids would rewrite its lastid
        lastid = sim.pair.paths("ms").lastid
        write_lastid(lastid, read_lastid(lastid) | {"orid": 1})
        with pytest.raises(StepFailed, match=r"verification failed on ms: MS ids: orid: .* lastid is 1\b"):
            recovery(pair_name=sim.name)


def assert_history_tells_the_incident(sim: Sim, since: float) -> None:
    """``antelope-ha history`` shows every step of the incident in order, each
    with who, why and the epoch (each event read back from the server)."""
    expected = [("health.decision", "health (automation)", "health decided FAILOVER", 1),
                ("procedure.started", "automation", "failover started", 1),
                ("authority.changed", "automation", "bus authoritative, epoch 2 (was ms epoch 1)", 2),
                ("procedure.ended", "automation", "failover ended: Completed", 2),
                ("procedure.started", "not named", "fallback started", 2),
                ("approval.approved", "", "APPROVED", 2), ("approval.approved", "", "APPROVED", 2),
                ("authority.changed", "not named", "ms authoritative, epoch 3 (was bus epoch 2)", 3),
                ("hold-down.acknowledged", " and ", "hold-down acknowledged", 3),
                ("procedure.ended", "not named", "fallback ended: Completed", 3),
                ("procedure.started", "not named", "recovery started", 3),
                ("procedure.ended", "not named", "recovery ended: Completed", 3)]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(since))

    def told() -> list[dict]:
        result = CliRunner().invoke(cli, ["history", "--pair", sim.name, "--since", iso, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    deadline = time.time() + 30
    entries = told()
    while not any(e["what"] == expected[-1][2] for e in entries) and time.time() < deadline:
        time.sleep(0.5)
        entries = told()
    rest = iter(entries)  # each expected entry, in order, among the others
    for kind, who, what, epoch in expected:
        found = next((e for e in rest if e["event"] == kind and who in e["who"] and what in e["what"]), None)
        assert found is not None, f"no {kind} {what!r} by {who!r} in order in {entries}"
        assert found["epoch"] == epoch and (found["why"] or kind == "procedure.started"), found
    approvals = [e for e in entries if e["event"] == "approval.approved"]
    assert len({e["who"] for e in approvals}) == 2 and all(e["why"] == "flow test" for e in approvals)


def test_ms_off_at_the_second_gate_then_one_recovery_merges_both_gaps(tmp_path):
    """MS loses power while the fallback waits at its second approval: approved,
    not acted on, BUS restored. MS's ORB ran from the fallback's start to the
    power-off, so MS has two gaps; after a second fallback one recovery merges both."""
    with sim_pair(tmp_path, "gate2") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.wait_rows("bus", time.time())
        sim.pair.power_on("ms", start_rtexec=False)

        def answer(n: int) -> dict:
            if n == 1:
                sim.pair.power_off("ms")
            return approve()

        with answering("fallback", answer):
            first = fallback(pair_name=sim.name)
        assert "approved, not acted on" in first and "restored" in first, first
        assert_bus_authoritative(sim)
        sim.wait_rows("bus", time.time())
        sim.pair.power_on("ms", start_rtexec=False)
        with answering("fallback", lambda n: approve()):
            fallback(pair_name=sim.name)
        assert sim.state().authority.site == "ms"
        sim.wait_rows("ms", time.time())
        assert recovery(pair_name=sim.name).startswith("merged ")
        assert_nothing_lost(sim, gaps=2)
        assert recovery(pair_name=sim.name).startswith("nothing to merge")


def test_stale_replica_asks_a_person_and_rejection_or_timeout_changes_nothing(tmp_path):
    """An approval left unanswered is not an approval. With the failover
    counting "timed out" as approved, BUS took over at the unanswered approval
    and this test failed there (tried by hand, then put back)."""
    with sim_pair(tmp_path, "stale") as sim:  # never replicated: the replica's age is unknown
        sim.pair.power_off("ms")
        before = sim.snapshot("rtexec.pf", "db/db", "dbids/dbids.lastid")
        with answering("failover", lambda n: approve(site="bus", decision="reject")) as answers:
            result = failover(pair_name=sim.name, reason="test")
        assert len(answers) == 1 and "did not fail over" in result
        assert sim.snapshot("rtexec.pf", "db/db", "dbids/dbids.lastid") == before
        assert sim.state().authority.site == "ms"
        save_pair(sim.name, sim.cfg.model_copy(update={"policy": sim.cfg.policy.model_copy(
            update={"approval_timeout_s": 2})}))
        result = failover(pair_name=sim.name, reason="test: nobody answers")
        assert "did not fail over" in result and "nothing was changed" in result
        assert sim.snapshot("rtexec.pf", "db/db", "dbids/dbids.lastid") == before
        state = sim.state()
        assert state.authority.site == "ms" and state.authority.epoch == 1
        assert state.declined is not None and "failover with a stale lastid replica: timed out" in state.declined.what
        assert not running(sim, "bus", "dbids")
        save_pair(sim.name, sim.cfg)
        with answering("failover", lambda n: approve(site="bus")):
            failover(pair_name=sim.name, reason="approved despite the stale replica")
        assert_bus_authoritative(sim)


def test_split_brain_is_stopped_within_one_health_cycle(tmp_path, caplog):
    with sim_pair(tmp_path, "split") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.pair.power_on("ms", start_rtexec=True)  # MS boots with its old rtexec.pf: dbids starts
        sim.pair.wait_for(lambda: running(sim, "ms", "dbids"), 20, "dbids starts on MS")
        decision = call_flow(health, pair_name=sim.name)
        assert decision.startswith("fence") and "split brain" in decision
        assert not running(sim, "ms", "dbids")
        alerts = [r.getMessage() for r in caplog.records if "NOTIFY SPLIT BRAIN stopped on ms" in r.getMessage()]
        assert alerts and "its dbids had reached lastid {" in alerts[0], alerts  # the ids it handed out
        assert call_flow(health, pair_name=sim.name).startswith("stay")


def test_dry_runs_print_the_plan_and_change_nothing(tmp_path):
    with sim_pair(tmp_path, "dry") as sim:
        before = sim.snapshot(*CONFIG_FILES, "dbids/dbids.lastid")
        plan = failover(pair_name=sim.name, dry_run=True)
        assert "## on ms" in plan and "## on bus" in plan
        assert "write " + str(sim.pair.paths("bus").dir / "rtexec.pf") in plan
        assert "write " + str(sim.pair.paths("bus").dir / "db" / "db") in plan
        assert sim.snapshot("rtexec.pf", "db/db", "ha/authority", "ha/armed") == {
            k: v for k, v in before.items() if not k.endswith("lastid")}
        assert sim.state().authority.site == "ms"


def test_only_listed_operators_with_their_current_code_count_and_two_people_pass_the_point_of_no_return(
        tmp_path, caplog):
    """A name not listed, and the first gate's approver at the second, are
    refused by the form itself (the run stays paused under the same key); a
    wrong code is refused, told, and asked again under a key of that gate;
    three wrong codes in a row alert loudly."""
    with sim_pair(tmp_path, "who") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.pair.power_on("ms", start_rtexec=False)
        given: dict[int, dict] = {}

        def answer(n: int) -> dict:
            script = [
                lambda: wrong_answer("mallory"),  # not listed
                *[lambda: wrong_answer("grace")] * 3,  # not grace's code: wrong
                lambda: approve(operator="grace"),  # gate 1 passes
                lambda: {**given[4], "operator": "grace"},  # gate 2: grace again
                lambda: approve(operator="heidi"),  # gate 2 passes
            ]
            given[n] = script[n]()
            return given[n]

        with answering("fallback", answer) as answers:
            result = fallback(pair_name=sim.name)
        assert len(answers) == 7 and sim.state().authority.site == "ms", result
        assert "point of no return): approved by grace" in result and "start dbids on ms: approved by heidi" in result
        assert "Validation failed for field 'operator'" in answers[0]["refused"], answers[0]
        assert "'mallory' does not match" in answers[0]["refused"]
        assert "'grace' should not be valid under {'const': 'grace'}" in answers[5]["refused"], answers[5]
        assert [n for n, a in enumerate(answers) if "refused" in a] == [0, 5], answers
        # the run stayed paused, asked again under keys of the same gate
        from prefect.client.orchestration import get_client
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(answers[0]["run"])
        assert sorted(run.empirical_policy.pause_keys) == sorted(
            ["fallback-1", *(f"fallback-1-again-{i}" for i in range(1, 4)), "fallback-2"])
        table = run_artifact(run.id, "fallback-approvals")
        assert table.count("| refused: wrong code | grace |") == 3, table
        assert "mallory" not in table  # never reached the flow
        assert "same person" not in table
        messages = [r.getMessage() for r in caplog.records]
        assert sum("NOTIFY APPROVAL REFUSED on ms" in m for m in messages) == 2, messages
        assert sum("NOTIFY ALERT: 3 WRONG ONE-TIME CODES in a row on ms" in m for m in messages) == 1
        # each accepted code is recorded as used; no code reaches a log or the artifact
        assert set(sim.state().codes_used) == {"grace", "heidi"}
        for code in {a["code"] for a in given.values()}:
            assert code not in table and not [m for m in messages if code in m]


def test_a_completed_fallback_acknowledges_the_hold_down_so_ms_failing_again_fails_over(tmp_path):
    """The two people who approved the fallback decided MS is fit again: MS
    failing within the hold-down of the first failover fails over again,
    without anyone running `antelope-ha ack`; the record says who acknowledged.

    MS's dbids starts above every id BUS issued: its lastid was raised from
    BUS's. With the fallback raising MS's lastid from MS's own instead, MS's
    lastid stayed below BUS's and this test failed (tried by hand, then put back)."""
    with sim_pair(tmp_path, "flap") as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.wait_rows("bus", time.time())  # BUS issues ids of its own
        sim.pair.power_on("ms", start_rtexec=False)
        with answering("fallback", lambda n: approve(operator=["grace", "heidi"][n % 2])):
            result = fallback(pair_name=sim.name)
        assert "acknowledged by grace and heidi" in result
        ms_lastid, bus_lastid = read_lastid(sim.pair.paths("ms").lastid), read_lastid(sim.pair.paths("bus").lastid)
        assert not running(sim, "bus", "dbids")  # BUS's lastid is the one it handed over
        assert all(ms_lastid.get(k, -1) >= v for k, v in bus_lastid.items()), (ms_lastid, bus_lastid)
        acked = sim.state().acknowledged
        assert acked is not None and acked.by == "grace and heidi" and "fallback to ms completed" in acked.reason
        sim.wait_rows("ms", time.time())
        replicate_lastid(pair_name=sim.name)
        sim.pair.power_off("ms")  # down again, well within the hold-down of the first failover
        decisions = [call_flow(health, pair_name=sim.name, failover_inline=True)
                     for _ in range(sim.cfg.policy.failures_before_failover)]
        assert decisions[-1].startswith("failover"), decisions
        assert_bus_authoritative(sim)
        assert sim.state().authority.epoch == 4


