"""The independent checker on crafted files: a clean pair passes, and each
kind of damage (a lost row, an id used twice, an orphan, an id above lastid,
two ID servers serving at once) is caught and counted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from antelope_ha.css30 import TABLES
from rehearsal.checker import check, main

T0 = 1_800_000_000.0


def event_rows(seq: int, evid: int, orid: int, arid: int) -> list[tuple[str, str]]:
    t = T0 + seq
    return [
        ("event", TABLES["event"].format_row({"evid": evid, "prefor": orid, "auth": "orb2dbt", "lddate": t})),
        ("origin", TABLES["origin"].format_row({"lat": 46.0, "lon": 11.0, "depth": 5.0, "time": t, "orid": orid,
                                                "evid": evid, "jdate": 2027015, "auth": "orb2dbt", "lddate": t})),
        ("arrival", TABLES["arrival"].format_row({"sta": "STA1", "time": t + 3, "arid": arid, "jdate": 2027015,
                                                  "chan": "HHZ", "iphase": "P", "lddate": t})),
        ("assoc", TABLES["assoc"].format_row({"arid": arid, "orid": orid, "sta": "STA1", "phase": "P", "lddate": t})),
    ]


class Pair:
    """A pair's files as the writers and ID servers leave them."""

    def __init__(self, root: Path):
        self.root = root
        for site in ("ms", "bus"):
            (root / site / "db").mkdir(parents=True)
            (root / site / "records").mkdir()
            (root / site / "dbids").mkdir()
        self.lastid("ms", {"evid": 100, "orid": 100, "arid": 100})

    def lastid(self, site: str, values: dict[str, int]) -> None:
        (self.root / site / "dbids" / "dbids.lastid").write_text("".join(
            TABLES["lastid"].format_row({"keyname": k, "keyvalue": v, "lddate": T0}) for k, v in values.items()))

    def write(self, site: str, seq: int, rows: list[tuple[str, str]], *, record: bool = True,
              on_disk: bool = True, pid: int = 1) -> None:
        if on_disk:
            for table, line in rows:
                with open(self.root / site / "db" / f"db.{table}", "a") as f:
                    f.write(line)
        if record:
            with open(self.root / site / "records" / "orb2dbt.written", "a") as f:
                f.write(json.dumps({"t": T0 + seq, "pid": pid, "seq": seq, "idserver": "x:1",
                                    "rows": [list(r) for r in rows]}) + "\n")

    def serving(self, site: str, pid: int, start: float, end: float, stop: bool = False) -> None:
        lines = [f"{start:.3f} start {pid} x:1"]
        t = start
        while t + 0.2 < end:
            t += 0.2
            lines.append(f"{t:.3f} alive {pid} x:1")
        lines.append(f"{end:.3f} {'stop' if stop else 'alive'} {pid} x:1")
        with open(self.root / site / "records" / "dbids.serving", "a") as f:
            f.write("\n".join(lines) + "\n")


def healthy(tmp_path: Path) -> Pair:
    """MS writes packets 1-4 with ids 1-4; BUS writes 1-2 with ids 11-12 (ids from
    MS's server), then MS is down: BUS alone writes 3 (id 50, its own server)
    and recovery merged it onto MS; MS serves, BUS takes over, MS again."""
    pair = Pair(tmp_path)
    for seq in (1, 2, 4):
        pair.write("ms", seq, event_rows(seq, seq, seq, seq))
    for seq in (1, 2):
        pair.write("bus", seq, event_rows(seq, 10 + seq, 10 + seq, 10 + seq))
    bus3 = event_rows(3, 50, 50, 50)
    pair.write("bus", 3, bus3)
    pair.write("ms", 3, bus3, record=False)  # merged by recovery: on MS, not in MS's writer's record
    pair.serving("ms", 10, T0, T0 + 2)
    pair.serving("bus", 20, T0 + 3, T0 + 6, stop=True)
    pair.serving("ms", 11, T0 + 6.5, T0 + 9, stop=True)
    return pair


def test_a_clean_pair_passes_and_handovers_are_timed(tmp_path: Path) -> None:
    report = check(healthy(tmp_path).root)
    assert report.passed, report.details
    assert (report.packets_checked, report.rows_lost, report.ids_used_twice, report.orphans) == (4, 0, 0, 0)
    assert report.rows_written == 6 * 4  # MS recorded packets 1, 2, 4; BUS 1, 2, 3
    assert report.seconds_two_id_servers == 0
    assert report.seconds_no_id_server == 1.5  # 1 s failover gap + 0.5 s fallback gap
    assert [(h.from_site, h.to_site, h.seconds_without) for h in report.handovers] == [("ms", "bus", 1.0),
                                                                                       ("bus", "ms", 0.5)]


def test_a_row_bus_wrote_under_its_authority_missing_on_ms_is_lost(tmp_path: Path) -> None:
    pair = healthy(tmp_path)
    bus4 = event_rows(5, 60, 60, 60)
    pair.write("bus", 5, bus4)
    pair.write("ms", 5, [r for r in bus4 if r[0] != "arrival"], record=False)  # merged without its arrival
    pair.write("ms", 6, event_rows(6, 6, 6, 6))
    report = check(pair.root)
    assert report.rows_lost == 1
    assert "packet 5" in report.details["rows_lost"][0]
    assert report.orphans == 1  # the assoc names the missing arrival
    assert not report.passed


def test_a_packet_half_written_as_its_writer_died_is_torn_not_an_orphan(tmp_path: Path) -> None:
    """MS's writer (pid 1) recorded packet 4, wrote packet 5's event row and
    died; its next process (pid 2) wrote packet 5 again whole, with new ids.
    The half is counted apart, and passes; the same half from a writer that
    went on recording (no death) is an orphan."""
    pair = healthy(tmp_path)
    half = event_rows(5, 70, 70, 70)[:1]  # event 70, prefor 70: no origin 70 anywhere
    pair.write("ms", 5, half, record=False)
    pair.write("ms", 6, event_rows(5, 71, 71, 71), pid=2)
    pair.write("bus", 6, event_rows(6, 72, 72, 72))
    pair.lastid("ms", {"evid": 100, "orid": 100, "arid": 100})
    report = check(pair.root)
    assert (report.torn_rows, report.orphans, report.rows_lost) == (1, 0, 0), report.details
    assert report.details["torn_rows"] == [f"ms event.prefor 70: no origin row with orid 70 (unrecorded, "
                                           f"written {T0 + 5:.3f} as its writer stopped mid-packet)"]
    assert report.passed

    went_on = healthy(tmp_path / "went-on")
    went_on.write("ms", 5, half, record=False)
    went_on.write("ms", 6, event_rows(5, 71, 71, 71))  # the same process: it did not die there
    went_on.write("bus", 6, event_rows(6, 72, 72, 72))
    report = check(went_on.root)
    assert (report.torn_rows, report.orphans) == (0, 1) and not report.passed


def test_a_recorded_row_whose_reference_is_gone_is_an_orphan_even_after_a_death(tmp_path: Path) -> None:
    """An origin the authoritative database lost under a recorded event is an
    orphan, whatever the writers did around it."""
    pair = healthy(tmp_path)
    rows = event_rows(5, 60, 60, 60)
    pair.write("bus", 5, rows)
    pair.write("ms", 5, [r for r in rows if r[0] != "origin"], record=False)  # merged without its origin
    pair.write("ms", 6, event_rows(6, 6, 6, 6), pid=2)
    report = check(pair.root)
    assert report.torn_rows == 0 and report.orphans == 2  # the event's prefor and the assoc's orid
    assert not report.passed


def test_packets_after_the_authoritys_last_are_not_yet_due(tmp_path: Path) -> None:
    pair = healthy(tmp_path)
    pair.write("bus", 7, event_rows(7, 17, 17, 17))  # MS has not written packet 7 yet
    assert check(pair.root).rows_lost == 0


def test_an_id_used_twice_across_the_sites_is_caught(tmp_path: Path) -> None:
    pair = healthy(tmp_path)
    pair.write("bus", 5, event_rows(5, 4, 40, 40))  # evid 4 again, a different event
    report = check(pair.root)
    assert report.ids_used_twice == 1
    assert report.details["ids_used_twice"][0].startswith("evid 4: 2 different rows")


def test_an_id_handed_out_twice_is_caught_from_the_records_even_if_overwritten(tmp_path: Path) -> None:
    pair = healthy(tmp_path)
    pair.write("bus", 5, event_rows(5, 2, 42, 42), on_disk=False)  # recorded, but no longer in any table
    assert check(pair.root).ids_used_twice == 1


def test_ids_above_the_authoritys_lastid_are_caught(tmp_path: Path) -> None:
    pair = healthy(tmp_path)
    pair.lastid("ms", {"evid": 49, "orid": 100, "arid": 100})
    report = check(pair.root)
    assert report.ids_above_lastid == 1 and report.details["ids_above_lastid"][0].startswith("evid 50 > ms lastid 49")


def test_overlapping_id_servers_are_caught_and_timed(tmp_path: Path) -> None:
    pair = healthy(tmp_path)
    pair.serving("bus", 21, T0 + 8, T0 + 8.6)  # BUS serves again while MS does, then is killed
    report = check(pair.root)
    assert abs(report.seconds_two_id_servers - 0.6) < 1e-6
    assert not report.passed


def test_a_run_in_parts_counts_neither_its_pause_nor_the_packets_around_it(tmp_path: Path) -> None:
    """A run stopped after 9 s (both sites down) and continued at 100 s: the
    pause is no outage, and a packet BUS wrote after MS's writer stopped, or
    before it started again, is not due at MS; within a part, a second without
    an ID server is counted, and a packet MS missed is lost."""
    pair = healthy(tmp_path)
    pair.serving("ms", 12, T0 + 100, T0 + 105)
    pair.serving("ms", 13, T0 + 106, T0 + 110, stop=True)
    pair.write("bus", 5, event_rows(5, 15, 15, 15))  # part 1, after MS's last (4)
    pair.write("bus", 99, event_rows(99, 16, 16, 16))  # part 2, before MS's first (100)
    for seq in (100, 102):
        pair.write("ms", seq, event_rows(seq, seq, seq, seq))
    pair.write("bus", 101, event_rows(101, 17, 17, 17))  # between two of MS's: lost
    pair.lastid("ms", {"evid": 200, "orid": 200, "arid": 200})
    parts = [(T0 - 1, T0 + 9.5), (T0 + 95, T0 + 112)]  # from each start of the pair to its stop
    report = check(pair.root, windows=parts)
    assert report.seconds_no_id_server == 1.5 + 1.0
    assert report.rows_lost == 4 and "packet 101 " in report.details["rows_lost"][0], report.details
    as_one = check(pair.root)  # as one part, the pause is an outage and every packet BUS wrote in it lost
    assert as_one.seconds_no_id_server == 1.5 + 91.0 + 1.0
    assert as_one.rows_lost == 3 * 4


def test_the_command_judges_a_run_in_parts_from_its_run_file(tmp_path: Path, capsys) -> None:
    pair = healthy(tmp_path)
    pair.serving("ms", 12, T0 + 100, T0 + 105)
    run_file = tmp_path / "nemesis-run.json"
    run_file.write_text(json.dumps({"windows": [[T0 - 1, T0 + 9.5], [T0 + 95, T0 + 106]]}))
    assert main([str(pair.root), "--parts", str(run_file)]) == 0
    assert json.loads(capsys.readouterr().out)["seconds_no_id_server"] == 1.5
    assert main([str(pair.root)]) == 0
    assert json.loads(capsys.readouterr().out)["seconds_no_id_server"] == 1.5 + 91.0  # the pause counted
    run_file.write_text("{}")
    with pytest.raises(SystemExit):
        main([str(pair.root), "--parts", str(run_file)])
    assert f"--parts {run_file}: not a run's nemesis-run.json" in capsys.readouterr().err


def test_a_line_cut_by_a_kill_is_read_as_what_was_written_before(tmp_path: Path) -> None:
    pair = healthy(tmp_path)
    with open(pair.root / "bus" / "records" / "orb2dbt.written", "a") as f:
        f.write('{"t": 1, "seq": 9, "rows": [["ev')
    with open(pair.root / "ms" / "records" / "dbids.serving", "a") as f:
        f.write("1800000009.1")
    report = check(pair.root)
    assert report.passed and report.packets_written == 4
