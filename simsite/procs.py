"""Finding, signalling and daemonizing the processes of a simulated site.

Init may be slow to reap orphans, so a dead daemon can stay behind for a
while as a zombie: every check here treats a zombie as not running.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from simsite.layout import SITE_ENV, SitePaths


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (R, S, T, Z, ...), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def is_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    return _state(pid) not in (None, "Z", "X")


def is_stopped(pid: int) -> bool:
    """True if ``pid`` is stopped by a signal (SIGSTOP)."""
    return _state(pid) == "T"


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [w.decode(errors="replace") for w in raw.split(b"\0") if w]


def _environ_marker(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = f"{SITE_ENV}=".encode()
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def site_pids(site_dir: Path) -> list[int]:
    """Live processes of a site: marked with its directory in their environment,
    or with an argument under it (an rtexec or task started without the marker)."""
    under = f"{site_dir}/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if not is_running(pid):
            continue
        if _environ_marker(pid) == str(site_dir) or any(a.startswith(under) for a in cmdline(pid)):
            found.append(pid)
    return found


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def rtexec_pid(site: SitePaths) -> int | None:
    """The pid in the site's logs/rtexec.pid, if that process is the site's rtexec and alive."""
    pid = read_pid(site.rtexec_pid)
    if pid is None or pid == os.getpid() or not is_running(pid):
        return None
    return pid if str(site.bin / "rtexec") in cmdline(pid) else None


def send(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(pids: Iterable[int], timeout_s: float) -> list[int]:
    """Wait until no pid runs; return those still running at the timeout."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in pids if is_running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if is_running(p)]
    return alive


def terminate(pids: Iterable[int], grace_s: float) -> None:
    """SIGTERM (and SIGCONT, for stopped ones), then SIGKILL after ``grace_s``."""
    pids = list(pids)
    send(pids, signal.SIGTERM)
    send(pids, signal.SIGCONT)
    send(wait_gone(pids, grace_s), signal.SIGKILL)
    wait_gone(pids, 2.0)


def kill_site(site_dir: Path, first: Iterable[int] = ()) -> None:
    """SIGKILL every process of a site (``first`` before the others), until none is left."""
    send(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (pids := site_pids(site_dir)) and time.monotonic() < deadline:
        send(pids, signal.SIGKILL)
        wait_gone(pids, 1.0)


def daemonize(log: Path, pid_file: Path) -> None:
    """Become a daemon: fork, setsid, fork; stdin from /dev/null, output to ``log``.

    The calling process exits only once the daemon has written ``pid_file``
    (status 0), or with status 1 if the daemon died first; so whoever started
    us (subprocess, an SSH session) finds a running daemon when we return.
    Returns in the daemon.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    ready_r, ready_w = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(ready_w)
        os.waitpid(first, 0)
        os._exit(0 if os.read(ready_r, 1) == b"1" else 1)
    os.close(ready_r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    tmp = pid_file.with_name(f".{pid_file.name}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, pid_file)
    os.write(ready_w, b"1")
    os.close(ready_w)
