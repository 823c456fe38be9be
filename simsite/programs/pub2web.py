"""Stand-in for an information system (the task that feeds the world).

``pub2web -o DIR``: while it runs, writes the time to ``DIR/<program>.heartbeat``
every second, so a test or a person can see whether it publishes.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from antelope_ha.css30 import atomic_write
from simsite.programs.cli import Parser, log

PROG = "pub2web"


def main(argv: list[str]) -> int:
    parser = Parser(PROG, "Simulated information system: writes a heartbeat file every second.")
    parser.add_argument("-o", dest="out", required=True, help="directory of the heartbeat file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    heartbeat = out / f"{Path(sys.argv[0]).name}.heartbeat"
    log(PROG, f"publishing; heartbeat in {heartbeat}")
    while True:
        atomic_write(heartbeat, f"{time.time():.3f}\n".encode())
        time.sleep(1.0)
