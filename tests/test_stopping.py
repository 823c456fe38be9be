"""Ctrl-C for a long run (rehearsal/stopping.py), with a stand-in run: a
process that works in "cycles" beside a helper it started, as the nemesis
works beside its Prefect server. The relay is put in a process group of its
own, and Ctrl-C is sent to that whole group, as a terminal sends it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

RUN = textwrap.dedent('''
    import subprocess, sys, time
    from pathlib import Path
    from rehearsal import stopping

    if not stopping.in_own_session():
        sys.exit(stopping.relay([sys.executable, __file__, *sys.argv[1:]]))
    out = Path(sys.argv[1])
    helper = subprocess.Popen(["sleep", "60"])  # stands in for the run's Prefect server
    try:
        with stopping.stop_requests() as stop:
            cycle = 0
            out.write_text("started\\n")
            while not stop.is_set():
                cycle += 1
                time.sleep(0.2)  # a cycle
            with out.open("a") as f:
                f.write(f"stopped after cycle {cycle}, helper alive: {helper.poll() is None}\\n")
    except KeyboardInterrupt:
        with out.open("a") as f:
            f.write(f"interrupted, helper alive: {helper.poll() is None}\\n")
        sys.exit(130)
    finally:
        helper.kill()
''')


def start(tmp_path: Path, run: str = RUN, sigint_ignored: bool = False) -> tuple[subprocess.Popen, Path]:
    """The relay of ``run``; ``sigint_ignored``: started as a shell without job control starts ``cmd &``."""
    script, out = tmp_path / "run.py", tmp_path / "out"
    script.write_text(run)
    env = {k: v for k, v in os.environ.items() if k != "ANTELOPE_HA_RUN_IN_SESSION"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    relay = subprocess.Popen([sys.executable, str(script), str(out)], env=env, start_new_session=True,
                             stderr=subprocess.PIPE, text=True, preexec_fn=ignore)
    deadline = time.monotonic() + 30
    while not (out.exists() and out.read_text().startswith("started")):
        assert relay.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    return relay, out


def ctrl_c(relay: subprocess.Popen) -> None:
    """What a terminal does: SIGINT to every process of the foreground group."""
    os.killpg(relay.pid, signal.SIGINT)


def test_the_first_ctrl_c_stops_the_run_after_its_cycle_with_its_helpers_alive(tmp_path: Path) -> None:
    relay, out = start(tmp_path)
    time.sleep(0.5)
    ctrl_c(relay)
    assert relay.wait(timeout=30) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "started" and lines[1].startswith("stopped after cycle ")
    assert lines[1].endswith("helper alive: True"), lines
    assert "stops after the cycle it is in" in relay.stderr.read()


def test_a_second_ctrl_c_interrupts_the_run_at_once(tmp_path: Path) -> None:
    # a run whose cycle does not end: only the interrupt ends it
    relay, out = start(tmp_path, RUN.replace("while not stop.is_set():", "while True:"))
    ctrl_c(relay)
    time.sleep(0.5)
    assert relay.poll() is None  # still in its cycles
    ctrl_c(relay)
    assert relay.wait(timeout=30) == 130
    assert out.read_text().splitlines()[-1] == "interrupted, helper alive: True"
    assert "interrupting the run" in relay.stderr.read()


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["sigint-default", "sigint-ignored"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_terminating_the_relay_interrupts_the_run_rather_than_leaving_it(tmp_path: Path, sig: int,
                                                                         sigint_ignored: bool) -> None:
    relay, out = start(tmp_path, sigint_ignored=sigint_ignored)
    relay.send_signal(sig)
    assert relay.wait(timeout=30) == 130
    assert out.read_text().splitlines()[-1].startswith("interrupted")
