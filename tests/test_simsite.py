"""The simulated pair, with real processes: ID server, writers, rtexec, ORB,
trexcerpt and the faults the flows are tested against."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from antelope_ha import commands
from antelope_ha.css30 import TABLES, read_table
from antelope_ha.rtexec_pf import set_task_run
from antelope_ha.runner import HostUnreachable, LocalRunner
from antelope_ha.site import Site
from simsite import procs
from simsite.orb import read_packets
from simsite.pair import SimPair
from simsite.ports import ephemeral_range

TABLE_IDS = {"origin": "orid", "event": "evid", "arrival": "arid", "wfdisc": "wfid"}


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def rows(pair: SimPair, site: str, table: str, db: Path | None = None) -> list[dict]:
    path = Path(f"{db or pair.paths(site).db}.{table}")
    return list(read_table(path, TABLES[table])) if path.exists() else []


def run(pair: SimPair, site: str, *argv: str) -> subprocess.CompletedProcess:
    """A command on the site's console (no network checks), as an operator would."""
    result = pair.console(site).run(list(argv))
    return subprocess.CompletedProcess(argv, result.exit_status, result.stdout, result.stderr)


def pair_processes(pair: SimPair) -> list[str]:
    ps = LocalRunner().run(commands.list_processes().argv).check()
    return [line for line in ps.stdout.splitlines() if f"{pair.root}/" in line]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimPair]:
    """A started pair shared by the tests that leave it as they found it."""
    with SimPair.create(tmp_path_factory.mktemp("shared") / "pair", packet_interval_s=0.1) as pair:
        yield pair


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[SimPair]:
    with SimPair.create(tmp_path / "pair", packet_interval_s=0.1) as pair:
        yield pair


def test_dbids_ids_are_unique_increasing_and_survive_a_restart(tmp_path: Path) -> None:
    pair = SimPair.create(tmp_path / "pair")
    address = pair.settings.sites["ms"].idserver_address
    argv = [str(pair.paths("ms").bin / "dbids"), "-p", str(pair.settings.sites["ms"].idserver_port),
            str(pair.paths("ms").dbids)]

    def serve() -> subprocess.Popen:
        server = subprocess.Popen(argv, env={**os.environ, **pair.env("ms")},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: run(pair, "bus", "idserver_connect", address).returncode == 0, "dbids answers")
        return server

    def next_ids(key: str, n: int) -> list[int]:
        return [int(r) for r in pair.net.exchange("bus", address, [f"next {key}"] * n, 2.0)]

    server = serve()
    try:
        sequential = next_ids("orid", 5)
        assert sequential == sorted(sequential) and len(set(sequential)) == 5
        got: list[int] = []
        threads = [threading.Thread(target=lambda: got.extend(next_ids("orid", 10))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == len(set(got)) == 40 and min(got) > max(sequential)
        assert pair.lastid("ms")["orid"] == max(got)
    finally:
        server.kill()
        server.wait()
    def bare(key: bytes) -> int:
        """As pr_origin.xpl asks: the key name alone, no newline; one line back."""
        host, _, port = address.rpartition(":")
        with pair.net.connect("bus", host, int(port), 2.0) as sock, sock.makefile("rb") as f:
            sock.sendall(key)
            return int(f.readline())

    server = serve()
    try:
        assert next_ids("orid", 1) == [max(got) + 1]
        assert bare(b"orid") == max(got) + 2 and bare(b"evid") == 1
        assert bare(b"mykey") == 1  # not a css3.0 key: answered once the client pauses
        assert pair.lastid("ms") == {"orid": max(got) + 2, "evid": 1, "mykey": 1,
                                     **{k: 0 for k in ("arid", "wfid")}}
    finally:
        server.kill()
        server.wait()


def test_dbids_refuses_a_missing_lastid(tmp_path: Path) -> None:
    pair = SimPair.create(tmp_path / "pair")
    pair.paths("bus").lastid.unlink()
    result = run(pair, "bus", "dbids", "-p", "1", str(pair.paths("bus").dbids))
    assert result.returncode == 1 and "dbids.lastid does not exist" in result.stderr


def test_writers_of_both_sites_never_share_an_id(running: SimPair) -> None:
    wait_until(lambda: all(len(rows(running, s, "origin")) >= 5 and len(rows(running, s, "wfdisc")) >= 5
                           for s in ("ms", "bus")), "both sites wrote rows")
    written = {(table, site): [r[key] for r in rows(running, site, table)]
               for table, key in TABLE_IDS.items() for site in ("ms", "bus")}
    lastid = running.lastid("ms")  # read after the rows: the writers go on writing meanwhile
    for table, key in TABLE_IDS.items():
        ms, bus = written[(table, "ms")], written[(table, "bus")]
        assert len(set(ms)) == len(ms) and len(set(bus)) == len(bus), table
        assert not set(ms) & set(bus), f"{key} used by both sites"
        assert all(0 < i <= lastid[key] for i in ms + bus), key
    assert running.lastid("bus") == dict.fromkeys(lastid, 0)  # BUS's own ID server never ran


def test_writers_exit_naming_the_dbidserver_when_it_is_gone(fresh: SimPair) -> None:
    address = fresh.settings.sites["ms"].idserver_address
    message = f"cannot get ids from dbidserver {address}"
    logs = {s: fresh.paths(s).logs / "orb2dbt" for s in ("ms", "bus")}
    before = {s: logs[s].read_text().count(message) for s in logs}
    fresh.crash("ms", "dbids", restart=False)
    wait_until(lambda: all(logs[s].read_text().count(message) > before[s] for s in logs),
               "both orb2dbt report the ID server gone")
    counts = {s: len(rows(fresh, s, "origin")) for s in logs}
    wait_until(lambda: all(logs[s].read_text().count(message) > before[s] + 1 for s in logs),
               "the restarted writers fail again", timeout_s=30)
    for site in logs:
        assert len(rows(fresh, site, "origin")) == counts[site], "a row was written without an id"
        for table, key in TABLE_IDS.items():
            assert all(r[key] > 0 for r in rows(fresh, site, table)), f"{site} {table} row without {key}"
        origins = {r["orid"] for r in rows(fresh, site, "origin")}
        assert {r["orid"] for r in rows(fresh, site, "assoc")} == origins, "a partial packet was written"
    assert not fresh.task_pids("ms", "dbids"), "a task marked broken was restarted"
    fresh.repair("ms", "dbids")
    wait_until(lambda: fresh.task_pids("ms", "dbids"), "dbids restarted after repair")


def test_rtexec_follows_run_lines_and_restarts_a_crashed_task(running: SimPair) -> None:
    runner = running.runner("ms")
    text = runner.read_file("rtexec.pf").decode()
    runner.write_file("rtexec.pf", set_task_run(text, "pub2web", False).encode())
    try:
        wait_until(lambda: not running.task_pids("ms", "pub2web"), "pub2web stopped")
    finally:
        runner.write_file("rtexec.pf", text.encode())
    wait_until(lambda: running.task_pids("ms", "pub2web"), "pub2web started again")
    [old] = running.crash("ms", "pub2web")
    wait_until(lambda: running.task_pids("ms", "pub2web") not in ([], [old]), "pub2web restarted")
    assert "pub2web (pid %d) died" % old in (running.paths("ms").logs / "rtexec").read_text()
    pub = str(running.paths("ms").pub)
    runner.write_file("rtexec.pf", text.replace(f"pub2web -o {pub}", f"pub2web -o {pub}2").encode())
    try:
        wait_until(lambda: (running.paths("ms").dir / "pub2" / "pub2web.heartbeat").exists(),
                   "pub2web restarted with its new command line")
    finally:
        runner.write_file("rtexec.pf", text.encode())
    wait_until(lambda: running.task_pids("ms", "pub2web"), "pub2web back to its command line")
    again = runner.run(["rtexec", "-s"])
    assert again.exit_status == 1 and "already running" in again.stderr


def test_restart_task_tells_a_process_started_just_after_a_change_from_one_just_before(running: SimPair) -> None:
    site = Site(running.site_config("ms"), running.runner("ms"))
    [before] = site.task_pids("pub2web")
    changed_at = time.time()  # the site's clock: the site runs on this machine
    first = site.restart_task("pub2web", since=changed_at)
    [after] = site.task_pids("pub2web")
    assert first.changed and after != before
    again = site.restart_task("pub2web", since=changed_at)
    assert (again.changed, again.detail, site.task_pids("pub2web")) == (False, "pub2web already restarted", [after])
    later = site.restart_task("pub2web", since=time.time())
    assert later.changed and site.task_pids("pub2web") not in ([], [after])


@pytest.mark.parametrize("argv", [
    ["rtexec", "-x"], ["dbids", "dbids/dbids"], ["idserver_connect"], ["ping", "127.0.0.4"],
    ["orbstat"], ["orb2dbt", "db/db"], ["trexcerpt", "-v", "db/db", "out/db", "1"], ["pub2web"],
])
def test_stand_ins_reject_bad_arguments(tmp_path: Path, argv: list[str]) -> None:
    result = run(SimPair.create(tmp_path / "pair"), "ms", *argv)
    assert result.returncode == 1 and "usage:" in result.stderr


def test_ps_tells_the_two_sites_writers_apart(running: SimPair) -> None:
    ps = commands.parse_ps(running.runner("ms").run(commands.list_processes().argv).check().stdout)
    ms = commands.task_pids(ps, running.task_command("ms", "orb2dbt"))
    bus = commands.task_pids(ps, running.task_command("bus", "orb2dbt"))
    assert len(ms) == 1 and len(bus) == 1 and ms != bus
    assert str(running.paths("ms").db) in " ".join(procs.cmdline(ms[0]))


def test_orbstat_latency_grows_while_the_orb_is_stalled(running: SimPair) -> None:
    def latency() -> float:
        out = running.runner("ms").run(commands.orb_sources(running.settings.sites["ms"].orb).argv).check()
        return min(commands.parse_orb_latencies(out.stdout).values())

    wait_until(lambda: latency() < 1.0, "the ORB is fresh")
    running.stall_orb("ms")
    try:
        wait_until(lambda: latency() > 2.0, "latency grows")
    finally:
        running.unstall_orb("ms")
    wait_until(lambda: latency() < 1.0, "the ORB is fresh again")


def test_an_orb_that_wakes_late_skips_no_packet(running: SimPair) -> None:
    """A loaded CPU wakes the orbserver late: it then writes every packet since
    the last one, so no row is lost to the ORB (stalled here for ten intervals)."""
    interval = running.settings.packet_interval_s
    packets = running.paths("ms").packets
    before = read_packets(packets)[-1].seq
    running.stall_orb("ms")
    try:
        time.sleep(10 * interval)
    finally:
        running.unstall_orb("ms")
    stalled_at = time.time()
    wait_until(lambda: read_packets(packets)[-1].time > stalled_at, "packets after the stall")
    seqs = [p.seq for p in read_packets(packets) if p.seq >= before]
    assert seqs == list(range(before, seqs[-1] + 1)) and len(seqs) > 10


def test_orbstat_fails_when_the_orbserver_is_down(fresh: SimPair) -> None:
    fresh.crash("bus", "orbserver", restart=False)
    result = fresh.runner("bus").run(commands.orb_sources(fresh.settings.sites["bus"].orb).argv)
    assert result.exit_status == 1 and "cannot connect to ORB" in result.stderr


def test_trexcerpt_extracts_and_merges_a_window(running: SimPair, tmp_path: Path) -> None:
    bus = running.runner("bus")
    pf = bus.read_file("rtexec.pf").decode()
    stopped = set_task_run(set_task_run(pf, "orb2dbt", False), "orb2wf", False)
    wait_until(lambda: len(rows(running, "bus", "origin")) >= 10, "BUS has origins")
    bus.write_file("rtexec.pf", stopped.encode())
    try:
        wait_until(lambda: not running.task_pids("bus", "orb2dbt") and not running.task_pids("bus", "orb2wf"),
                   "BUS writers stopped")
        times = sorted(r["time"] for r in rows(running, "bus", "origin"))
        start, end = times[2], times[-3]
        excerpt = tmp_path / "disk" / "excerpt"
        out = bus.run(commands.extract_window("db/db", str(excerpt), start, end).argv).check().stdout
        reported = dict(re.findall(r"^(\w+): (\d+) records$", out, re.M))
        in_window = {t: [r for r in rows(running, "bus", t) if start <= r["time"] < end]
                     for t in ("origin", "arrival", "wfdisc")}
        for table, expected in in_window.items():
            got = rows(running, "bus", table, db=excerpt)
            assert int(reported[table]) == len(got) == len(expected) > 0, table
            assert all(start <= r["time"] < end for r in got)
        orids = {r["orid"] for r in in_window["origin"]}
        assert {r["prefor"] for r in rows(running, "bus", "event", db=excerpt)} == orids
        assert "dbidserver" not in excerpt.read_text()

        again = bus.run(commands.extract_window("db/db", str(excerpt), start, end).argv)
        assert again.exit_status == 1 and "already has rows" in again.stderr
        reversed_ = bus.run(commands.extract_window("db/db", str(tmp_path / "rev" / "db"), end, start).argv)
        assert reversed_.exit_status == 1 and "not after start time" in reversed_.stderr

        target = tmp_path / "merged" / "db"
        target.parent.mkdir()
        target.write_text("schema css3.0\n")
        merge = commands.merge_window(str(excerpt), str(target), start, end)
        merged = dict(re.findall(r"^(\w+): (\d+) records", bus.run(merge.argv).check().stdout, re.M))
        assert merged == reported
        for table in ("event", "origin", "arrival", "assoc", "wfdisc"):
            assert rows(running, "bus", table, db=target) == rows(running, "bus", table, db=excerpt)
        rerun = bus.run(merge.argv).check().stdout
        assert set(re.findall(r"^\w+: (\d+) records", rerun, re.M)) == {"0"}
    finally:
        bus.write_file("rtexec.pf", pf.encode())
    wait_until(lambda: running.task_pids("bus", "orb2dbt") and running.task_pids("bus", "orb2wf"),
               "BUS writers running again")


def test_power_off_kills_the_site_and_makes_it_unreachable(fresh: SimPair) -> None:
    ms = fresh.settings.sites["ms"]
    fresh.power_off("ms")
    with pytest.raises(HostUnreachable, match=re.escape(ms.address)):
        fresh.runner("ms").run(["true"])
    assert not procs.site_pids(fresh.paths("ms").dir)
    assert not [p for p in pair_processes(fresh) if f"{fresh.root}/ms/" in p]
    bus = fresh.runner("bus")
    assert bus.run(commands.ping(ms.address, 1).argv).exit_status == 1
    probe = bus.run(commands.probe_idserver(ms.idserver_address).argv)
    assert probe.exit_status == 1 and "cannot reach ID server" in probe.stdout
    fresh.power_on("ms")
    fresh.wait_for(lambda: bool(fresh.task_pids("ms", "dbids")), 20, "ms's dbids runs again")
    assert bus.run(commands.ping(ms.address, 1).argv).exit_status == 0
    witness = commands.ping(fresh.settings.witness_address, 1).argv
    fresh.power_off("witness")
    assert bus.run(witness).exit_status == 1
    fresh.power_on("witness")
    assert bus.run(witness).ok


def test_cut_link_makes_the_id_server_unreachable_from_bus_only(running: SimPair) -> None:
    address = running.settings.sites["ms"].idserver_address
    probe = commands.probe_idserver(address).argv
    witness = commands.ping(running.settings.witness_address, 1).argv
    running.cut_link("bus", "ms")
    try:
        cut = running.runner("bus").run(probe)
        assert cut.exit_status == 1 and f"cannot reach ID server at {address}" in cut.stdout
        assert running.runner("ms").run(probe).ok
        assert running.runner("bus").run(witness).ok
    finally:
        running.heal_link("bus", "ms")
    assert running.runner("bus").run(probe).ok
    running.isolate("bus")
    try:
        with pytest.raises(HostUnreachable):
            running.runner("bus").run(["true"])
        assert run(running, "bus", *witness).returncode == 1
    finally:
        running.rejoin("bus")
    assert running.runner("bus").run(witness).ok


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    pair = SimPair.create(tmp_path / "pair", packet_interval_s=0.1)
    try:
        pair.start()
        assert len(pair_processes(pair)) == 11  # 2 rtexec, 5 tasks on ms, 3 on bus, the witness
        pair.stall_orb("ms")
    finally:
        pair.stop()
    assert pair_processes(pair) == []
    assert not any(procs.site_pids(pair.paths(h).dir) for h in ("ms", "bus", "witness"))


def test_cli_creates_and_shows_a_pair(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "simsite", "create", str(tmp_path / "p")],
                         capture_output=True, text=True, check=True).stdout
    assert "created" in out
    status = subprocess.run([sys.executable, "-m", "simsite", "status", str(tmp_path / "p")],
                            capture_output=True, text=True, check=True).stdout
    assert "dbids      Run yes not running" in status and "rtexec not running" in status


def test_server_ports_are_outside_the_ephemeral_range_so_no_client_can_hold_them(tmp_path: Path) -> None:
    low, high = ephemeral_range()
    settings = SimPair.create(tmp_path / "pair").settings
    ports = [p for s in settings.sites.values() for p in (s.idserver_port, s.orb_port)] + [settings.witness_port]
    assert len(set(ports)) == len(ports), ports
    assert not [p for p in ports if low <= p <= high], (ports, (low, high))


def test_fence_stops_every_task_reads_lastid_and_refuses_dbids_after(fresh: SimPair) -> None:
    """The fence and the three refusals before an ID server starts, on the site
    itself: what failover, fallback, health and the benchmark all call."""
    from antelope_ha.lastid import parse_lastid
    from antelope_ha.site import EpochRefused
    from antelope_ha.state import Authority

    cfg = fresh.site_config("ms")
    site = Site(cfg, fresh.runner("ms"))
    [dbids] = site.task_pids(cfg.idserver_task)
    fenced = site.fence("test: bus takes over")
    assert fenced.armed.changed and site.armed() and fenced.idserver_pids == (dbids,)
    tasks = (cfg.idserver_task, *cfg.writer_tasks, *cfg.infosys_tasks)
    assert {t: site.task_pids(t) for t in tasks} == {t: [] for t in tasks}
    lastid_file = fresh.paths("ms").dir / f"{cfg.dbids}.lastid"
    assert fenced.lastid == parse_lastid(lastid_file.read_text(), lastid_file) and fenced.lastid["arid"] > 0
    again = site.fence("test: bus takes over")
    assert not again.armed.changed and not any(o.changed for o in again.stopped) and again.lastid == {}
    assert str(again).endswith("dbids, writers and information systems already stopped")

    ours = Authority(site="ms", epoch=3, since=time.time())
    with pytest.raises(EpochRefused, match="epoch 3 belongs to bus"):
        site.start_idserver_for(ours.model_copy(update={"site": "bus"}))
    with pytest.raises(EpochRefused, match=r"its marker says .*the current authority is \{'site': 'ms', 'epoch': 3\}"):
        site.start_idserver_for(ours)
    site.write_authority_marker(ours.marker())
    with pytest.raises(EpochRefused, match="the site is armed"):
        site.start_idserver_for(ours)
    assert site.task_pids(cfg.idserver_task) == []
    site.set_armed(False, "test: fallback")
    assert site.start_idserver_for(ours).changed and site.task_pids(cfg.idserver_task)
