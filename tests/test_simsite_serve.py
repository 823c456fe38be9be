"""`python -m simsite serve`: the pair behind one real sshd per site, driven by
the CLI from other processes as a rehearsal does (docs/operating.md, section 8):
`fault power-off` stops everything of the site, its sshd included, and
`power-on` brings both back; stopping `serve` leaves no process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from antelope_ha.config import SiteConfig
from antelope_ha.connect import make_runner
from antelope_ha.runner import HostUnreachable
from deployments.setup import SetupConfig
from simsite import procs
from tests.servers import wait_for

SIMSITE = [sys.executable, "-m", "simsite"]


def simsite(*args: str) -> str:
    result = subprocess.run([*SIMSITE, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def processes_under(root: Path) -> list[int]:
    """Every live process whose command line or environment names the pair's directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            marks = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(root).encode() in marks and procs.is_running(int(entry.name)):
            found.append(int(entry.name))
    return found


def start_serving(root: Path) -> tuple[subprocess.Popen, str]:
    """`python -m simsite serve ROOT`, once it says it serves; and what it printed."""
    server = subprocess.Popen([*SIMSITE, "serve", str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, stdin=subprocess.DEVNULL)
    lines = []
    for line in server.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if line.startswith("serving "):
            break
    assert lines and lines[-1].startswith("serving "), "".join(lines)
    return server, "".join(lines)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen, str]]:
    root = tmp_path / "pair"
    simsite("create", root)
    server, output = start_serving(root)
    try:
        yield root, server, output
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        for pid in processes_under(root):  # only if the test failed half-way
            os.kill(pid, signal.SIGKILL)


def site(text: str, name: str) -> SiteConfig:
    config = yaml.safe_load(text.split("# for the setup file", 1)[1].split("\n", 1)[1].rsplit("serving ", 1)[0])
    return SiteConfig.model_validate(config[{"ms": "main", "bus": "backup"}[name]])


def sshd_pid(status: str, name: str) -> int | None:
    block = status.split(f"\n{name} ", 1)[1]
    line = next(line for line in block.splitlines() if line.strip().startswith("sshd "))
    return int(line.rsplit("pid ", 1)[1]) if "pid " in line else None


def test_a_served_pair_is_reached_over_ssh_and_powered_off_for_real(served) -> None:
    root, server, output = served
    config = yaml.safe_load(simsite("config", root))
    SetupConfig.model_validate({"pair": "rehearsal", **config})  # what serve prints is a setup file's sites
    ms, bus = site(output, "ms"), site(output, "bus")
    assert ms.transport == bus.transport == "ssh"
    for cfg in (ms, bus):
        with make_runner(cfg) as runner:
            assert runner.run(["cat", "rtexec.pf"]).check().stdout.startswith(f"# rtexec.pf of the simulated site {cfg.name}")

    before = simsite("status", root)
    ms_sshd = sshd_pid(before, "ms")
    assert ms_sshd and procs.is_running(ms_sshd) and sshd_pid(before, "bus")

    after = simsite("fault", root, "power-off", "ms")
    assert "ms 127.0.0.2 power OFF, rtexec not running" in after and sshd_pid(after, "ms") is None
    assert not procs.is_running(ms_sshd)
    assert procs.site_pids(root / "ms") == []
    with make_runner(ms) as runner, pytest.raises(HostUnreachable):
        runner.run(["true"])
    with make_runner(bus) as runner:
        assert runner.run(["true"]).ok  # the other site is untouched

    again = simsite("fault", root, "power-on", "ms")
    assert "ms 127.0.0.2 power on, rtexec pid" in again and sshd_pid(again, "ms") not in (None, ms_sshd)
    with make_runner(ms) as runner:
        assert runner.run(["true"]).ok

    server.send_signal(signal.SIGTERM)
    rest = server.communicate(timeout=60)[0]
    assert server.returncode == 0 and f"stopped {root}" in rest
    wait_for("no process of the pair left", lambda: processes_under(root) == [], 10, 0.2)


def test_stop_from_another_process_stops_the_sshds_too(tmp_path: Path) -> None:
    """`serve` killed outright cannot clean up: `stop` still finds and stops every sshd."""
    root = tmp_path / "pair"
    simsite("create", root)
    server, _ = start_serving(root)
    try:
        server.kill()  # SIGKILL: serve cannot clean up
        server.wait(10)
        assert sshd_pid(simsite("status", root), "ms")
        simsite("stop", root)
        wait_for("no process of the pair left", lambda: processes_under(root) == [], 10, 0.2)
    finally:
        for pid in processes_under(root):
            os.kill(pid, signal.SIGKILL)
