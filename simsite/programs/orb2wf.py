"""Stand-in for orb2wf(1): one wfdisc row per packet (no waveform file is
written; ``dir``/``dfile`` name where it would be). See
``simsite.programs.writer`` for ids, state and failures."""
from __future__ import annotations

import time
from collections.abc import Sequence

from simsite.layout import ProgramSite
from simsite.orb import Packet
from simsite.programs.orb2dbt import jdate
from simsite.programs.writer import Rows, run_writer

PROG = "orb2wf"
KEYS = ("wfid",)
CHAN = "HHZ"


def wfdisc_rows(packet: Packet, ids: list[int], site: ProgramSite) -> Rows:
    [wfid] = ids
    t = packet.time
    return [("wfdisc", {
        "sta": packet.sta, "chan": CHAN, "time": t, "wfid": wfid, "jdate": jdate(t),
        "endtime": t + (packet.nsamp - 1) / packet.samprate, "nsamp": packet.nsamp,
        "samprate": packet.samprate, "calib": 1.0, "calper": 1.0, "segtype": "o", "datatype": "s4",
        "dir": time.strftime("wf/%Y/%j", time.gmtime(t)), "dfile": f"{packet.sta}.{CHAN}.{packet.seq}",
        "foff": 0, "lddate": time.time(),
    })]


def main(argv: Sequence[str]) -> int:
    return run_writer(PROG, argv, KEYS, wfdisc_rows)
