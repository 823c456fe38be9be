"""Stand-in for orb2dbt(1): one located event per packet.

For each packet: an event, its origin (at the packet time, a location drawn
from the pair's seed and the packet number, so both sites compute the same
one), and a P and an S arrival at the packet's station with their assocs.
See ``simsite.programs.writer`` for ids, state and failures.
"""
from __future__ import annotations

import random
import time
from collections.abc import Sequence

from simsite.layout import ProgramSite
from simsite.orb import Packet
from simsite.programs.writer import Rows, run_writer

PROG = "orb2dbt"
KEYS = ("evid", "orid", "arid", "arid")
VP_KM_S, VS_KM_S = 6.0, 3.5


def jdate(t: float) -> int:
    return int(time.strftime("%Y%j", time.gmtime(t)))


def event_rows(packet: Packet, ids: list[int], site: ProgramSite) -> Rows:
    evid, orid, p_arid, s_arid = ids
    rng = random.Random(f"{site.settings.seed}:{packet.seq}")
    lat, lon, depth = rng.uniform(45.0, 47.0), rng.uniform(10.0, 13.0), rng.uniform(2.0, 30.0)
    distance_km = rng.uniform(10.0, 120.0)
    now, t = time.time(), packet.time
    common = {"auth": PROG, "lddate": now}
    rows: Rows = [
        ("event", {"evid": evid, "prefor": orid, **common}),
        ("origin", {"lat": round(lat, 4), "lon": round(lon, 4), "depth": round(depth, 4), "time": t,
                    "orid": orid, "evid": evid, "jdate": jdate(t), "nass": 2, "ndef": 2,
                    "algorithm": PROG, **common}),
    ]
    for arid, phase, speed in ((p_arid, "P", VP_KM_S), (s_arid, "S", VS_KM_S)):
        at = round(t + distance_km / speed, 3)
        rows.append(("arrival", {"sta": packet.sta, "time": at, "arid": arid, "jdate": jdate(at),
                                 "chan": "HHZ", "iphase": phase, **common}))
        rows.append(("assoc", {"arid": arid, "orid": orid, "sta": packet.sta, "phase": phase,
                               "delta": round(distance_km / 111.19, 3), "timedef": "d",
                               "lddate": now}))
    return rows


def main(argv: Sequence[str]) -> int:
    return run_writer(PROG, argv, KEYS, event_rows)
