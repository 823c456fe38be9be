"""Argument parsing and messages shared by the stand-ins."""
from __future__ import annotations

import argparse
import datetime as dt
import socketserver
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits with status 1 like the Antelope programs."""

    def __init__(self, prog: str, description: str):
        super().__init__(prog=prog, description=description, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(1)


class HostServer(socketserver.ThreadingTCPServer):
    """A TCP service of a simulated host: one thread per connection, ended with
    the process; its port is taken again at once after a restart."""

    allow_reuse_address = True
    daemon_threads = True


def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def log(prog: str, message: str) -> None:
    """A timestamped line on stdout (rtexec sends a task's output to logs/<task>)."""
    print(f"{stamp()} {prog}: {message}", flush=True)


def fail(prog: str, message: str) -> int:
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    return 1
