"""Rehearse by hand on a simulated pair.

    python -m simsite create DIR [--interval S] [--seed N] [--base-address A]
    python -m simsite start DIR | stop DIR | status DIR
    python -m simsite serve DIR      start it with each site behind its own sshd, in the
                                     foreground until Ctrl-C or SIGTERM, then stop it all
    python -m simsite config DIR     main, backup and witness for the setup file (YAML)
    python -m simsite fault DIR crash SITE TASK [--no-restart]
    python -m simsite fault DIR repair SITE TASK
    python -m simsite fault DIR power-off HOST | power-on HOST [--no-rtexec]
    python -m simsite fault DIR cut SRC DST | heal SRC DST
    python -m simsite fault DIR isolate HOST | rejoin HOST
    python -m simsite fault DIR stall-orb SITE | unstall-orb SITE
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

import yaml

from antelope_ha.descriptor import parse_descriptor
from antelope_ha.rtexec_pf import parse_rtexec_pf
from simsite.build import DB_TABLES
from simsite.layout import SITES, WITNESS
from simsite.pair import SimPair


def status(pair: SimPair) -> str:
    lines = [f"pair {pair.root}"]
    cuts = pair.net.cuts()
    lines.append("cut links: " + (", ".join(f"{a}->{b}" for a, b in sorted(cuts)) or "none"))
    for site in SITES:
        paths, settings = pair.paths(site), pair.settings.sites[site]
        power = "on" if pair.net.is_on(site) else "OFF"
        rtexec = pair.rtexec_pid(site)
        lines.append(f"{site} {settings.address} power {power}, rtexec "
                     + (f"pid {rtexec}" if rtexec else "not running"))
        if (sshd := pair.sshd(site)) is not None:
            listener = sshd.pid()
            lines.append(f"  sshd {sshd.username}@{sshd.host}:{sshd.port} "
                         + (f"pid {listener}" if listener else "not running"))
        dbidserver = parse_descriptor(paths.db.read_text(), str(paths.db)).dbidserver
        lines.append(f"  db/db dbidserver {dbidserver}; ID server of this site {settings.idserver_address}")
        lines.append("  lastid " + ", ".join(f"{k} {v}" for k, v in sorted(pair.lastid(site).items())))
        for task in parse_rtexec_pf(paths.rtexec_pf.read_text()):
            pids = pair.task_pids(site, task.name)
            broken = " BROKEN" if (paths.broken / task.name).exists() else ""
            lines.append(f"  {task.name:<10} Run {'yes' if task.run else 'no ':<3} "
                         + (f"running (pid {', '.join(map(str, pids))})" if pids else "not running") + broken)
        tables = [(t, Path(f"{paths.db}.{t}")) for t in DB_TABLES]
        lines.append("  rows " + ", ".join(
            f"{t} {sum(1 for _ in path.open()) if path.exists() else 0}" for t, path in tables))
    witness = "on" if pair.net.is_on(WITNESS) else "OFF"
    lines.append(f"witness {pair.settings.witness_address}:{pair.settings.witness_port} power {witness}")
    return "\n".join(lines)


FAULTS = {
    "crash": (("site", "task"), lambda p, a: p.crash(a.site, a.task, restart=not a.no_restart)),
    "repair": (("site", "task"), lambda p, a: p.repair(a.site, a.task)),
    "power-off": (("host",), lambda p, a: p.power_off(a.host)),
    "power-on": (("host",), lambda p, a: p.power_on(a.host, start_rtexec=not a.no_rtexec)),
    "cut": (("src", "dst"), lambda p, a: p.cut_link(a.src, a.dst)),
    "heal": (("src", "dst"), lambda p, a: p.heal_link(a.src, a.dst)),
    "isolate": (("host",), lambda p, a: p.isolate(a.host)),
    "rejoin": (("host",), lambda p, a: p.rejoin(a.host)),
    "stall-orb": (("site",), lambda p, a: p.stall_orb(a.site)),
    "unstall-orb": (("site",), lambda p, a: p.unstall_orb(a.site)),
}


def config_text(pair: SimPair) -> str:
    """The sites and the witness as a setup file names them."""
    cfg = pair.pair_config()
    return yaml.safe_dump({"main": cfg.main.model_dump(mode="json", exclude_none=True),
                           "backup": cfg.backup.model_dump(mode="json", exclude_none=True),
                           "witness": cfg.witness.model_dump(mode="json")}, sort_keys=False)


def serve(pair: SimPair) -> None:
    """Start the pair behind one sshd per site and keep it up until Ctrl-C or
    SIGTERM; then stop everything, sshd included. Meanwhile other commands
    (fault, status) act on it, powering sites and their sshd off and on."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        pair.serve_ssh()
        pair.start()
        print(status(pair))
        print(f"# for the setup file (python -m simsite config {pair.root}):")
        print(config_text(pair), end="")
        print(f"serving {pair.root}: Ctrl-C or SIGTERM stops it all", flush=True)
        done.wait()
    finally:
        pair.stop()
    print(f"stopped {pair.root}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m simsite", description="A simulated Antelope pair.")
    sub = top.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="lay out a new pair in DIR")
    create.add_argument("dir", type=Path)
    create.add_argument("--interval", type=float, default=0.2, help="seconds between ORB packets")
    create.add_argument("--seed", type=int, default=1)
    create.add_argument("--base-address", default="127.0.0.2", help="ms's address; bus and witness follow")
    for name, help_ in (("start", "start rtexec on each site and the witness"),
                        ("stop", "stop everything, sshd included, leave no process"), ("status", "show the pair"),
                        ("serve", "start it behind one sshd per site; stop it all on Ctrl-C or SIGTERM"),
                        ("config", "print main, backup and witness for the setup file")):
        sub.add_parser(name, help=help_).add_argument("dir", type=Path)
    fault_parser = sub.add_parser("fault", help="inject a fault")
    fault_parser.add_argument("dir", type=Path)
    fault = fault_parser.add_subparsers(dest="fault", required=True)
    for name, (params, _) in FAULTS.items():
        p = fault.add_parser(name)
        for param in params:
            p.add_argument(param)
        if name == "crash":
            p.add_argument("--no-restart", action="store_true", help="mark the task broken: no restart")
        if name == "power-on":
            p.add_argument("--no-rtexec", action="store_true", help="do not start rtexec at boot")
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "create":
            pair = SimPair.create(args.dir, packet_interval_s=args.interval, seed=args.seed,
                                  base_address=args.base_address)
            print(f"created {pair.root}")
            return 0
        pair = SimPair.open(args.dir)
        if args.command == "serve":
            serve(pair)
            return 0
        if args.command == "config":
            print(config_text(pair), end="")
            return 0
        if args.command == "start":
            pair.start()
        elif args.command == "stop":
            pair.stop()
        elif args.command == "fault":
            FAULTS[args.fault][1](pair, args)
        print(status(pair))
    except RuntimeError as exc:  # SimError, or an sshd that cannot start
        print(f"simsite: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
