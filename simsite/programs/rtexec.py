"""Stand-in for rtexec(1): the real-time system's supervisor.

Options (a subset of the man page): ``-f`` replace a running rtexec without
asking; ``-s`` save the old logs in ``logs/<time>/``; ``-k`` kill the running
rtexec; ``-d`` stay in the foreground. Without ``-d`` it becomes a daemon and
writes ``logs/rtexec.pid``.

Every 0.1 s it rereads ``rtexec.pf`` if it changed and converges: it starts the
tasks set to ``yes`` in ``Run`` that are not running, stops (SIGTERM, then
SIGKILL after ``Time_to_die``) those set to ``no`` or removed, restarts one
whose command line changed, and restarts a task that died ``Start_period``
seconds after its death. A task with a ``state/broken/<task>`` file is not
started (a broken program: see ``SimPair.crash``). Each task runs in its own
process group in the site directory, output to ``logs/<task>``. Every action
is logged to ``logs/rtexec``.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from antelope_ha.rtexec_pf import RtexecPfError, RtexecTask, parse_rtexec_pf
from simsite import procs
from simsite.layout import SITE_ENV, ProgramSite, SitePaths, this_site
from simsite.programs.cli import Parser, fail, stamp

PROG = "rtexec"
LOOP_S = 0.1


def _number(text: str, name: str, default: float) -> float:
    m = re.search(rf"^\s*{name}\s+(\d+(?:\.\d+)?)", text, re.M)
    return float(m.group(1)) if m else default


@dataclass
class Running:
    task: RtexecTask
    proc: subprocess.Popen
    stop_deadline: float | None = None  # set once asked to stop


class Supervisor:
    def __init__(self, paths: SitePaths, echo: bool):
        self.paths = paths
        self.log_file = open(self.paths.logs / "rtexec", "a")
        self.echo = echo
        self.text = ""
        self.tasks: dict[str, RtexecTask] = {}
        self.start_period = 1.0
        self.time_to_die = 5.0
        self.running: dict[str, Running] = {}
        self.died_at: dict[str, float] = {}
        self.reported_broken: set[str] = set()
        self.stopping = False

    def log(self, message: str) -> None:
        line = f"{stamp()} {PROG}: {message}\n"
        self.log_file.write(line)
        self.log_file.flush()
        if self.echo:
            sys.stderr.write(line)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self.log(f"started (pid {os.getpid()}) in {self.paths.dir}")
        while not self.stopping:
            self.reload()
            self.reap()
            self.converge()
            time.sleep(LOOP_S)
        self.shutdown()

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True

    def reload(self) -> None:
        try:
            text = self.paths.rtexec_pf.read_text()
        except OSError as exc:
            if self.text != "<unreadable>":
                self.log(f"cannot read rtexec.pf ({exc}); keeping the current tasks")
                self.text = "<unreadable>"
            return
        if text == self.text:
            return
        self.text = text
        try:
            tasks = parse_rtexec_pf(text, str(self.paths.rtexec_pf))
        except RtexecPfError as exc:
            self.log(f"{exc}; keeping the current tasks")
            return
        self.tasks = {t.name: t for t in tasks}
        self.start_period = _number(text, "Start_period", 1.0)
        self.time_to_die = _number(text, "Time_to_die", 5.0)
        self.log("read rtexec.pf: " + ", ".join(f"{t.name} {'yes' if t.run else 'no'}" for t in tasks))

    def reap(self) -> None:
        now = time.monotonic()
        for name, r in list(self.running.items()):
            status = r.proc.poll()
            if status is None:
                if r.stop_deadline is not None and now > r.stop_deadline:
                    self.log(f"{name} (pid {r.proc.pid}) ignored SIGTERM; sending SIGKILL")
                    self._signal(r, signal.SIGKILL)
                    r.stop_deadline = float("inf")
                continue
            del self.running[name]
            if r.stop_deadline is not None:
                self.log(f"stopped {name} (pid {r.proc.pid}, status {status})")
            else:
                self.died_at[name] = now
                self.log(f"{name} (pid {r.proc.pid}) died with status {status}; "
                         f"restart in {self.start_period:g} s")

    def converge(self) -> None:
        for name, r in self.running.items():
            want = self.tasks.get(name)
            if r.stop_deadline is not None:
                continue
            if want is None or not want.run:
                self.stop(r, "removed from rtexec.pf" if want is None else "set to no")
            elif want.command != r.task.command:
                self.stop(r, "its command line changed")
        now = time.monotonic()
        for name, task in self.tasks.items():
            if not task.run or name in self.running:
                continue
            if (self.paths.broken / name).exists():
                if name not in self.reported_broken:
                    self.log(f"cannot start {name}: marked broken ({self.paths.broken / name})")
                    self.reported_broken.add(name)
                continue
            self.reported_broken.discard(name)
            if now - self.died_at.get(name, -1e9) >= self.start_period:
                self.start(task)

    def start(self, task: RtexecTask) -> None:
        env = {
            **os.environ,
            "PATH": f"{self.paths.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANTELOPE": str(self.paths.dir),
            SITE_ENV: str(self.paths.dir),
            "PYTHONUNBUFFERED": "1",
        }
        try:
            with open(self.paths.logs / task.name, "a") as out:
                proc = subprocess.Popen(
                    task.command, cwd=self.paths.dir, env=env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
        except OSError as exc:
            self.died_at[task.name] = time.monotonic()
            self.log(f"cannot start {task.name}: {exc}")
            return
        self.running[task.name] = Running(task, proc)
        self.log(f"started {task.name} (pid {proc.pid}): {shlex.join(task.command)}")

    def stop(self, r: Running, why: str) -> None:
        self.log(f"stopping {r.task.name} (pid {r.proc.pid}): {why}")
        r.stop_deadline = time.monotonic() + self.time_to_die
        self._signal(r, signal.SIGTERM)
        self._signal(r, signal.SIGCONT)
        self.died_at.pop(r.task.name, None)

    @staticmethod
    def _signal(r: Running, sig: int) -> None:
        try:
            os.killpg(r.proc.pid, sig)
        except ProcessLookupError:
            pass

    def shutdown(self) -> None:
        self.log("asked to stop: stopping every task")
        for r in self.running.values():
            if r.stop_deadline is None:
                self.stop(r, "rtexec is shutting down")
        while self.running:
            self.reap()
            time.sleep(0.05)
        if procs.read_pid(self.paths.rtexec_pid) == os.getpid():
            self.paths.rtexec_pid.unlink(missing_ok=True)
        self.log("stopped")


def kill_running(site: ProgramSite, pid: int) -> bool:
    text = site.paths.rtexec_pf.read_text() if site.paths.rtexec_pf.exists() else ""
    os.kill(pid, signal.SIGTERM)
    if procs.wait_gone([pid], _number(text, "Time_to_die", 5.0) + 5.0):
        os.kill(pid, signal.SIGKILL)
        return False
    return True


def save_logs(logs: Path) -> None:
    """``-s``: move the old log files into a subdirectory named after the time."""
    old = [p for p in logs.iterdir() if p.is_file() and p.name != "rtexec.pid"]
    if not old:
        return
    base = logs / time.strftime("%Y%m%dT%H%M%S")
    dest, n = base, 1
    while dest.exists():
        dest, n = base.with_name(f"{base.name}.{n}"), n + 1
    dest.mkdir()
    for p in old:
        p.rename(dest / p.name)


def main(argv: list[str]) -> int:
    parser = Parser(PROG, "Run the simulated site's real-time system (rtexec.pf).")
    parser.add_argument("-f", action="store_true", help="replace a running rtexec without asking")
    parser.add_argument("-s", action="store_true", help="save old logs in a subdirectory of logs")
    parser.add_argument("-k", action="store_true", help="kill the running rtexec")
    parser.add_argument("-d", action="store_true", help="stay in the foreground, log also to stderr")
    args = parser.parse_args(argv)
    site = this_site()
    site.paths.logs.mkdir(exist_ok=True)
    pid = procs.rtexec_pid(site.paths)
    if args.k:
        if pid is None:
            print(f"{PROG}: no rtexec running in {site.paths.dir}")
            return 0
        orderly = kill_running(site, pid)
        print(f"{PROG}: stopped rtexec (pid {pid})" + ("" if orderly else " with SIGKILL"))
        return 0
    if pid is not None:
        if not args.f:
            return fail(PROG, f"rtexec already running in {site.paths.dir} (pid {pid}); use -f to replace it")
        kill_running(site, pid)
    if not site.paths.rtexec_pf.exists():
        return fail(PROG, f"no rtexec.pf in {site.paths.dir}")
    if args.s:
        save_logs(site.paths.logs)
    if args.d:
        site.paths.rtexec_pid.write_text(f"{os.getpid()}\n")
    else:
        procs.daemonize(site.paths.logs / "rtexec", site.paths.rtexec_pid)
    Supervisor(site.paths, echo=args.d).run()
    return 0
