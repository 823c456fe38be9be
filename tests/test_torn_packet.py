"""A packet half written when its writer dies, on the simulated pair's real
processes: the writer writes the packet again, whole, when rtexec restarts it;
the half stays on MS. The independent checker counts it as torn, neither an
orphan nor a loss; the recovery's rule names it, apart from its findings."""
from __future__ import annotations

import json
from pathlib import Path

from antelope_ha import completeness as K
from antelope_ha.css30 import TABLES, read_table
from rehearsal.checker import check
from simsite.pair import SimPair


def table(db: Path, name: str) -> list[dict]:
    path = Path(f"{db}.{name}")
    return list(read_table(path, TABLES[name])) if path.exists() else []


def records(pair: SimPair, site: str) -> list[dict]:
    path = pair.paths(site).written_log("orb2dbt")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_packet_cut_by_its_writers_death_is_written_again_and_named_apart(tmp_path: Path) -> None:
    with SimPair.create(tmp_path / "pair", packet_interval_s=0.1) as pair:
        ms_db, bus_db = pair.paths("ms").db, pair.paths("bus").db
        SimPair.wait_for(lambda: table(ms_db, "origin") and table(bus_db, "origin"), 30, "both sites write")
        [held] = pair.tear_packet("ms", "orb2dbt", after_table="event")
        half = table(ms_db, "event")[-1]
        assert half["prefor"] not in {o["orid"] for o in table(ms_db, "origin")}
        last_whole = records(pair, "ms")[-1]
        assert last_whole["pid"] == held
        pair.crash("ms", "orb2dbt")  # rtexec starts it again

        def written_again() -> dict | None:
            return next((r for r in records(pair, "ms") if r["pid"] != held and r["seq"] == last_whole["seq"] + 1),
                        None)

        SimPair.wait_for(lambda: written_again() and len(records(pair, "ms")) > len(records(pair, "bus")) // 2,
                         30, "MS's writer writes the packet again")
        again = written_again()
        assert again is not None and sorted(t for t, _ in again["rows"]) == ["arrival", "arrival", "assoc", "assoc",
                                                                           "event", "origin"]  # whole
    # The rule, as the recovery applies it, from before the death to the last moment both sites wrote.
    end = min(max(o["time"] for o in table(db, "origin")) for db in (ms_db, bus_db))
    bus = K.take_inventory(bus_db, half["lddate"] - 60, end, {})
    verdict = K.judge(bus, K.take_inventory(ms_db, *K.issued_hull(bus, {}), K.reach(bus, {})), half["lddate"], {})
    assert verdict.ok, verdict.problems()
    [note] = [n for n in verdict.notes if "neither site holds" in n]
    assert note.startswith("1 references on MS to rows neither site holds")
    assert note.endswith(f"event evid {half['evid']} prefor {half['prefor']}: prefor {half['prefor']} has no origin row")

    report = check(pair.root)
    assert (report.torn_rows, report.orphans, report.rows_lost, report.ids_used_twice) == (1, 0, 0, 0), report.details
    assert report.details["torn_rows"][0].startswith(f"ms event.prefor {half['prefor']}: no origin row")
    assert report.passed
