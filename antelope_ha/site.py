"""What the procedures do on one site, each step converging: check, act only
if needed, verify.

``Site`` knows Antelope (rtexec.pf, ps, descriptors, lastid tables) but not
Prefect. In a dry run it still reads what it can, and records every command
or file write that would change the site instead of running it.
"""
from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from antelope_ha import commands as C
from antelope_ha.config import SiteConfig
from antelope_ha.descriptor import (
    backup_name,
    check_editable,
    missing_descriptor,
    parse_descriptor,
    set_dbidserver,
)
from antelope_ha.idscan import IdReport
from antelope_ha.lastid import format_lastid, parse_lastid, raised_lastid
from antelope_ha.rtexec_pf import RtexecTask, parse_rtexec_pf, set_task_run
from antelope_ha.runner import CommandResult, Runner, RunnerError
from antelope_ha.state import Authority, Replica


_T = TypeVar("_T")


class StepFailed(RuntimeError):
    """A step acted but the site did not reach the state it should have."""


@dataclass(frozen=True)
class Outcome:
    """What a converging step found and did; ``changed`` is False when it only checked."""

    site: str
    step: str
    changed: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.site}: {self.detail}"


class EpochRefused(StepFailed):
    """A site asked to serve ids does not hold the current epoch."""


@dataclass(frozen=True)
class Fenced:
    """What fencing a site found and did."""

    armed: Outcome
    stopped: tuple[Outcome, ...]
    idserver_pids: tuple[int, ...]  # the ID servers that ran when the fence began
    lastid: dict[str, int]  # what they had reached; empty when none ran

    def __str__(self) -> str:
        changed = [o.detail for o in self.stopped if o.changed]
        text = f"{self.armed.detail}; " + ("; ".join(changed) if changed
                                            else "dbids, writers and information systems already stopped")
        return text + (f"; its dbids had reached lastid {self.lastid}" if self.idserver_pids else "")


@dataclass(frozen=True)
class Planned:
    site: str
    action: str  # the command line, or "write <path>"
    purpose: str


@dataclass
class Site:
    config: SiteConfig
    runner: Runner
    dry_run: bool = False
    wait_s: float = 30.0
    poll_s: float = 0.05  # waiting for rtexec: a poll is one command, and a failover waits on these
    plan: list[Planned] = field(default_factory=list)
    # A dry run's file changes, by path (None: removed): its later steps read
    # them back, and so plan what the real run would do after them.
    planned_files: dict[str, bytes | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def path(self, relative: str) -> str:
        return self.config.path(relative)

    # --- running commands and writing files ------------------------------------
    def run(self, command: C.Command, *, check: bool = True, timeout_s: float | None = None) -> CommandResult:
        if self.dry_run and command.changes:
            self.plan.append(Planned(self.name, str(command), command.purpose))
            return CommandResult(self.config.host, command.argv, 0, "", "", 0.0)
        result = self.runner.run(command.argv, timeout_s=timeout_s)
        return result.check() if check else result

    def read_bytes(self, relative: str) -> bytes:
        path = self.path(relative)
        if path not in self.planned_files:
            return self.runner.read_file(path)
        if (planned := self.planned_files[path]) is None:
            raise FileNotFoundError(path)
        return planned

    def read_text(self, relative: str) -> str:
        """The file as latin-1 text. Antelope's files (descriptors, tables, parameter
        files) are byte files: latin-1 maps each byte to one character, so any
        content, whatever its encoding, is written back byte for byte."""
        return self.read_bytes(relative).decode("latin-1")

    def write_text(self, relative: str, text: str, purpose: str) -> None:
        """Write text read by ``read_text`` (latin-1, byte for byte)."""
        self.write_bytes(relative, text.encode("latin-1"), purpose)

    def write_bytes(self, relative: str, data: bytes, purpose: str) -> None:
        if self.dry_run:
            self.plan.append(Planned(self.name, f"write {self.path(relative)}", purpose))
            self.planned_files[self.path(relative)] = data
            return
        self.runner.write_file(self.path(relative), data)

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        if self.dry_run:
            return
        deadline = time.monotonic() + self.wait_s
        while not ready():
            if time.monotonic() > deadline:
                raise StepFailed(f"{self.name}: {what} did not happen within {self.wait_s:g} s")
            time.sleep(self.poll_s)

    # --- the real-time system --------------------------------------------------
    def rtexec_running(self) -> bool:
        try:
            pid = int(self.read_text(C.RTEXEC_PID_FILE).split()[0])
        except (FileNotFoundError, IndexError, ValueError, OSError):
            return False
        result = self.run(C.process_args(pid), check=False)
        # A dead rtexec not yet reaped shows as "[rtexec] <defunct>": not running.
        return result.ok and any(w.rsplit("/", 1)[-1] == "rtexec" for w in result.stdout.split())

    def ensure_rtexec_running(self) -> Outcome:
        if self.rtexec_running():
            return Outcome(self.name, "rtexec", False, "rtexec already running")
        self.run(C.start_rtexec())
        self._wait("rtexec start", self.rtexec_running)
        return Outcome(self.name, "rtexec", True, "started rtexec")

    def tasks(self) -> dict[str, RtexecTask]:
        text = self.read_text("rtexec.pf")
        return {t.name: t for t in parse_rtexec_pf(text, f"{self.name}:{self.path('rtexec.pf')}")}

    def task(self, name: str) -> RtexecTask:
        tasks = self.tasks()
        if name not in tasks:
            raise StepFailed(f"{self.name}: task {name!r} is not in rtexec.pf Processes")
        return tasks[name]

    def task_pids(self, name: str, task: RtexecTask | None = None) -> list[int]:
        task = task or self.task(name)
        procs = C.parse_ps(self.run(C.list_processes()).stdout)
        return C.task_pids(procs, task.command)

    def tasks_running(self, names: Iterable[str], timeout_s: float | None = None) -> dict[str, bool]:
        """Which of these tasks have a process, from one reading of rtexec.pf and one ps."""
        return {n: bool(pids) for n, pids in self.tasks_pids(names, timeout_s)[1].items()}

    def tasks_pids(self, names: Iterable[str], timeout_s: float | None = None
                   ) -> tuple[dict[str, RtexecTask], dict[str, list[int]]]:
        """rtexec.pf's tasks, and the processes of each named task (none for a
        task rtexec.pf does not list): one reading of rtexec.pf and one ps."""
        tasks = self.tasks()
        procs = C.parse_ps(self.run(C.list_processes(), timeout_s=timeout_s).stdout)
        return tasks, {n: C.task_pids(procs, tasks[n].command) if n in tasks else [] for n in names}

    def fence_gaps(self, timeout_s: float | None = None) -> tuple[list[int], str]:
        """What of the fence does not hold on this site: the pids of its ID
        server, and what else is wrong ("" when armed with the ID server, the
        writers and the information systems stopped)."""
        cfg = self.config
        _, pids = self.tasks_pids([cfg.idserver_task, *cfg.writer_tasks, *cfg.infosys_tasks], timeout_s)
        gaps = [] if self.armed() else ["not armed"]
        gaps += [f"{name} running (pid {', '.join(map(str, found))})" for name, found in pids.items()
                 if found and name != cfg.idserver_task]
        return pids[cfg.idserver_task], ", ".join(gaps)

    def rtexec_report(self, timeout_s: float | None = None) -> str:
        """What rtexec is doing about the ID server and the writers, for a person
        reading why the site's ID server does not answer."""
        if not self.rtexec_running():
            return f"rtexec is NOT running on {self.name}: nothing restarts dbids or the writers"
        cfg = self.config
        tasks, pids = self.tasks_pids([cfg.idserver_task, *cfg.writer_tasks], timeout_s)
        found = []
        for name, running in pids.items():
            wanted = name in tasks and tasks[name].run
            if running:
                found.append(f"{name} running (pid {', '.join(map(str, running))})")
            else:
                found.append(f"{name} NOT running" + (" although its Run line says yes: rtexec restarts it, or it "
                                                      "exits at once" if wanted else " (Run line: no)"))
        return f"rtexec running on {self.name}; " + "; ".join(found)

    def ensure_task(self, name: str, run: bool) -> Outcome:
        """Set the task's Run line and wait until rtexec has started or stopped it."""
        task = self.task(name)
        pids = self.task_pids(name, task)
        want = "running" if run else "stopped"
        if task.run == run and bool(pids) == run:
            return Outcome(self.name, name, False, f"{name} already {want}" + (f" (pid {pids[0]})" if pids else ""))
        if task.run != run:
            text = self.read_text("rtexec.pf")
            self.write_text("rtexec.pf", set_task_run(text, name, run), f"set {name} Run {'yes' if run else 'no'}")
        self._wait(f"{name} {want}", lambda: bool(self.task_pids(name, task)) == run)
        return Outcome(self.name, name, True, f"{'started' if run else 'stopped'} {name}")

    def stop_everywhere(self, name: str) -> Outcome:
        """Stop the task under rtexec and any copy of it started by hand."""
        outcome = self.ensure_task(name, False)
        if self.dry_run:  # rtexec has not been told yet: every process would still show
            return outcome
        strays = self.task_pids(name)
        for pid in strays:
            self.run(C.signal_process(pid, f"stop {name} (pid {pid}) started outside rtexec"))
        self._wait(f"{name} stopped", lambda: not self.task_pids(name))
        if strays:
            return Outcome(self.name, name, True, f"stopped {name} started by hand (pid {', '.join(map(str, strays))})")
        return outcome

    def restart_task(self, name: str, since: float | None = None) -> Outcome:
        """Make the task run a process started after ``since`` (the site's clock;
        default: restart now).

        rtexec restarts a task that dies, so stopping its process restarts it.
        A process already younger than ``since`` is left alone: a rerun after a
        crash does not restart the writers twice.
        """
        task = self.task(name)
        if not task.run:
            return self.ensure_task(name, True)
        old = set(self.task_pids(name, task))
        if since is not None and old and all(self._started_after(p, since) for p in old):
            return Outcome(self.name, name, False, f"{name} already restarted")
        if self.dry_run and not old:  # none runs now (rtexec may be restarting it): the run stops the one it finds
            self.plan.append(Planned(self.name, f"kill -TERM <pid of {name}>",
                                     f"stop {name} (pid <then>) so rtexec restarts it"))
        for pid in sorted(old):
            self.run(C.signal_process(pid, f"stop {name} (pid {pid}) so rtexec restarts it"), check=False)
        self._wait(f"{name} restart", lambda: bool(set(self.task_pids(name, task)) - old))
        return Outcome(self.name, name, True, f"restarted {name}")

    def _started_after(self, pid: int, since: float) -> bool:
        """Did the process start after ``since`` (the site's own clock)? The
        estimate is taken 0.02 s early, beyond the 1/100 s resolution of the
        kernel's counters: a needless restart is safe, a missed one is not."""
        clock = float(self.run(C.site_clock()).stdout)
        ticks = int(self.run(C.clock_ticks()).stdout)
        found = self.run(C.process_start(pid), check=False)
        if not found.ok:  # gone already: rtexec starts a new one
            return False
        return C.parse_process_start(clock, found.stdout, ticks) - 0.02 > since

    # --- ID server, descriptor, lastid -----------------------------------------
    def check_ready(self) -> Outcome:
        """Read everything a takeover will edit, before it edits anything: the
        descriptor must be one its dbidserver line can be set in, lastid must
        parse, rtexec.pf must list the ID server, writer and information-system tasks."""
        check_editable(*self.descriptor())
        self.read_lastid()
        tasks = self.tasks()
        missing = [t for t in (self.config.idserver_task, *self.config.writer_tasks, *self.config.infosys_tasks)
                   if t not in tasks]
        if missing:
            raise StepFailed(f"{self.name}: rtexec.pf has no task {', '.join(missing)} in Processes; "
                             f"add it there or correct the site's configuration")
        return Outcome(self.name, "ready", False, "descriptor, lastid and rtexec.pf read and complete")

    def descriptor(self) -> tuple[str, str]:
        """The text of the database descriptor, and ``site:path`` naming it in errors."""
        source = f"{self.name}:{self.path(self.config.db)}"
        try:
            return self.read_text(self.config.db), source
        except FileNotFoundError:
            raise missing_descriptor(source) from None

    def dbidserver(self) -> str | None:
        return parse_descriptor(*self.descriptor()).dbidserver

    def ensure_dbidserver(self, address: str) -> Outcome:
        text, source = self.descriptor()
        current = parse_descriptor(text, source).dbidserver
        if current == address:
            return Outcome(self.name, "descriptor", False, f"{self.config.db} already uses dbidserver {address}")
        self.write_text(backup_name(self.config.db), text, "keep the previous descriptor")
        self.write_text(self.config.db, set_dbidserver(text, address, source), f"dbidserver {address}")
        return Outcome(self.name, "descriptor", True, f"{self.config.db}: dbidserver {current} -> {address}")

    def modified_at(self, relative: str) -> float:
        return float(self.run(C.modified_time(self.path(relative))).stdout.split()[0])

    def lastid_path(self) -> str:
        return self.config.dbids + ".lastid"

    def read_lastid(self) -> dict[str, int]:
        return parse_lastid(self.read_text(self.lastid_path()), f"{self.name}:{self.path(self.lastid_path())}")

    def raise_lastid(self, values: Mapping[str, int], purpose: str) -> Outcome:
        """Make each key's lastid at least ``values[key]``; never lower one."""
        try:
            current = self.read_lastid()
        except FileNotFoundError:
            current = {}
        merged = raised_lastid(current, values)
        if merged == current:
            return Outcome(self.name, "lastid", False, "lastid already covers every key")
        self.write_text(self.lastid_path(), format_lastid(merged, time.time()), purpose)
        raised = {k: (current.get(k), v) for k, v in merged.items() if current.get(k) != v}
        return Outcome(self.name, "lastid", True, "lastid raised: " + ", ".join(
            f"{k} {old} -> {new}" for k, (old, new) in sorted(raised.items())))

    def probe_idserver(self, address: str, timeout_s: float) -> tuple[bool, str]:
        """Ask the ID server at ``address`` from this site."""
        try:
            r = self.run(C.probe_idserver(address), check=False, timeout_s=timeout_s)
        except RunnerError as exc:
            return False, str(exc)
        return r.ok, (r.stdout.strip() or r.stderr.strip())

    def start_idserver_for(self, authority: Authority) -> Outcome:
        """Start this site's ID server, only if it holds ``authority`` (the epoch on
        the record), its own marker says so and it is not armed: two ID servers
        would hand out the same ids."""
        refusal = f"refusing to start dbids on {self.name}"
        if authority.site != self.name:
            raise EpochRefused(f"{refusal}: epoch {authority.epoch} belongs to {authority.site}")
        marker = self.authority_marker()
        if marker != authority.marker():
            raise EpochRefused(f"{refusal}: its marker says {marker}, the current authority is {authority.marker()}")
        if self.armed():
            raise EpochRefused(f"{refusal}: the site is armed (fenced)")
        return self.ensure_idserver(self.config.idserver_address)

    def ensure_idserver(self, address: str) -> Outcome:
        """Start the ID server task and verify it answers at ``address``: writers
        restarted next must find it serving, not merely started."""
        outcome = self.ensure_task(self.config.idserver_task, True)
        self._wait(f"dbids answering at {address}", lambda: self.probe_idserver(address, 2.0)[0])
        return outcome

    def ping(self, host: str, timeout_s: float) -> tuple[bool, str]:
        try:
            r = self.run(C.ping(host, timeout_s), check=False, timeout_s=timeout_s + 2)
        except RunnerError as exc:
            return False, str(exc)
        return r.ok, (r.stdout.strip().splitlines() or [r.stderr.strip()])[-1]

    def orb_latency(self, timeout_s: float | None = None) -> float | None:
        """Latency of the freshest ORB source in seconds; None if orbstat failed."""
        r = self.run(C.orb_sources(self.config.orb), check=False, timeout_s=timeout_s)
        lat = C.parse_orb_latencies(r.stdout) if r.ok else {}
        return min(lat.values()) if lat else None

    def scan_ids(self) -> IdReport:
        cfg = self.config
        r = self.run(C.scan_ids(cfg.site_tool_command(), cfg.db, cfg.dbids), timeout_s=3600)
        return IdReport.from_json(json.loads(r.stdout))

    # --- excerpts of the database (trexcerpt) ---------------------------------
    def extract_excerpt(self, excerpt: str, start: float, end: float) -> Outcome:
        """Extract the window into a fresh excerpt database. Its directory is
        emptied first: trexcerpt refuses an output database that has rows."""
        self.run(C.remove_tree(self.path(excerpt_dir(excerpt))))
        result = self.run(C.extract_window(self.config.db, excerpt, start, end))
        return Outcome(self.name, "extract", True,
                       f"extracted to {excerpt}: {result.stdout.strip() or result.stderr.strip()}")

    def excerpt_files(self, excerpt: str) -> list[str]:
        """Every file under the excerpt's directory, relative to it: the descriptor,
        its tables, and any waveform files written for its wfdisc rows."""
        directory = self.path(excerpt_dir(excerpt))
        if not self.runner.exists(directory):
            return []
        found = self.run(C.cmd(f"list the files of {excerpt}",
                               "find", directory, "-type", "f", "-printf", "%P\\0"))
        return sorted(name for name in found.stdout.split("\0") if name)

    def copy_excerpt(self, source: Site, excerpt: str) -> Outcome:
        """Make the excerpt here a byte-for-byte copy of every file of ``source``'s."""
        names = source.excerpt_files(excerpt)
        directory = excerpt_dir(excerpt)
        self.run(C.remove_tree(self.path(directory)))
        for sub in sorted({directory, *(posixpath.dirname(f"{directory}/{n}") for n in names)}):
            self.run(C.make_dirs(self.path(sub)))
        if self.dry_run and not names:  # the extraction is only planned: its files are known once it ran
            self.plan.append(Planned(self.name, f"write {self.path(directory)}/*",
                                     f"copy {directory}/* from {source.name}: every file the extraction writes"))
        for name in names:
            relative = f"{directory}/{name}"
            self.write_bytes(relative, source.read_bytes(relative), f"copy {relative} from {source.name}")
        copied = names if self.dry_run else self.excerpt_files(excerpt)
        if copied != names:
            raise StepFailed(f"{self.name}: the copy of {directory} differs from {source.name}'s: "
                             f"{source.name} holds {names}, {self.name} {copied}")
        done = "would copy" if self.dry_run else f"copied {len(names)} files of"
        return Outcome(self.name, "copy", True, f"{done} {excerpt} from {source.name}")

    def check_excerpt(self, excerpt: str, source: str) -> Outcome:
        """This site sees the excerpt ``source`` wrote on a disk both reach."""
        if self.dry_run:
            return Outcome(self.name, "excerpt", False, f"would read {excerpt} where {source} writes it")
        if not self.runner.exists(self.path(excerpt)):
            raise StepFailed(f"{self.name} does not see {excerpt}, which {source} extracted: give as excerpt_path "
                             f"a directory both sites reach at the same path (an external disk, a shared mount)")
        return Outcome(self.name, "excerpt", False, f"reads {excerpt} where {source} extracted it")

    # --- authority and fence markers ------------------------------------------
    def _ha_file(self, name: str, parse: Callable[[str], _T]) -> _T | None:
        """``ha/<name>`` parsed, None when the site has none."""
        try:
            return parse(self.read_text(f"{self.config.ha_dir}/{name}"))
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            raise StepFailed(f"{self.name}: cannot read {self.config.ha_dir}/{name}: {exc}") from None

    def authority_marker(self) -> dict | None:
        return self._ha_file("authority", json.loads)

    def write_authority_marker(self, record: Mapping) -> Outcome:
        if self.authority_marker() == dict(record):
            return Outcome(self.name, "authority", False, f"already holds epoch {record['epoch']}")
        self.write_text(f"{self.config.ha_dir}/authority", json.dumps(dict(record), sort_keys=True),
                        f"authority epoch {record['epoch']} ({record['site']})")
        return Outcome(self.name, "authority", True, f"records authority {record['site']} epoch {record['epoch']}")

    def replica(self) -> Replica | None:
        """When this site's lastid was last copied from the authoritative site's,
        and the values copied (``ha/replica``); None when never."""
        return self._ha_file("replica", Replica.model_validate_json)

    def write_replica(self, replica: Replica) -> Outcome:
        self.write_text(f"{self.config.ha_dir}/replica", replica.model_dump_json(),
                        "when lastid was copied from the authoritative site")
        return Outcome(self.name, "replica", True, "replica time recorded")

    def armed(self) -> bool:
        path = self.path(f"{self.config.ha_dir}/armed")
        if path in self.planned_files:
            return self.planned_files[path] is not None
        return self.runner.exists(path)

    def set_armed(self, armed: bool, reason: str) -> Outcome:
        if self.armed() == armed:
            return Outcome(self.name, "fence", False, "already armed" if armed else "not armed")
        if armed:
            self.write_bytes(f"{self.config.ha_dir}/armed", f"{reason}\n".encode(), "arm: no dbids may start here")
        else:
            path = self.path(f"{self.config.ha_dir}/armed")
            self.run(C.cmd("disarm", "rm", "-f", path, changes=True))
            if self.dry_run:
                self.planned_files[path] = None
        return Outcome(self.name, "fence", True, f"{'armed' if armed else 'disarmed'}: {reason}")

    def fence(self, reason: str) -> Fenced:
        """Arm the site first (no dbids may start here from then on), then stop its
        dbids, even one started by hand, its db writers and its information
        systems, and read the lastid its dbids reached, so that no id it handed out
        is lost track of."""
        cfg = self.config
        running = tuple(self.task_pids(cfg.idserver_task))
        armed = self.set_armed(True, reason)
        stopped = tuple(self.stop_everywhere(t) for t in (cfg.idserver_task, *cfg.writer_tasks, *cfg.infosys_tasks))
        return Fenced(armed, stopped, running, self.read_lastid() if running else {})


def excerpt_db(start: float, end: float, under: str | None = None) -> str:
    """Where the excerpt database of a window lives: ``recovery/<start>-<end>/db``
    in each site's rtexec_dir, or below ``under``, an absolute path both sites
    reach (an external disk, a shared mount)."""
    label = f"recovery/{int(start)}-{int(end)}/db"
    return label if under is None else f"{check_excerpt_path(under).rstrip('/')}/{label}"


def check_excerpt_path(path: str) -> str:
    """An excerpt_path must be absolute: a relative one is read in each site's own rtexec_dir."""
    if not path.startswith("/"):
        raise ValueError(f"excerpt_path {path!r} is relative, so each site would look for it in its own "
                         f"rtexec_dir: give the absolute path at which both sites reach the disk")
    return path


def excerpt_keep(excerpt: str) -> str:
    """Where the rows an excerpt is narrowed to are listed: beside its descriptor."""
    return posixpath.join(excerpt_dir(excerpt), "keep.json")


def excerpt_dir(excerpt: str) -> str:
    """The directory of an excerpt database, which holds nothing else."""
    directory = posixpath.dirname(excerpt)
    if directory in ("", "/"):
        raise ValueError(f"excerpt {excerpt!r} is not in a directory of its own")
    return directory
