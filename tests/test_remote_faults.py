"""Faults of the remote commands, through the task layer and a real sshd in
front of a simulated site: each error names the host, the command and its
output, each wait is bounded, and a step is retried only when retrying is
safe (the command did not start), never after a connection dropped under a
running command.

Retries are counted by the task run's ``run_count`` on the Prefect server,
and the retry decisions by a wrapper around ``tasks.sites.retry_if_transient``
that can also repair the fault between two attempts (no timing guesses).
"""
from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from antelope_ha.config import SiteConfig, SSHSettings
from antelope_ha.runner import (
    AuthenticationRefused, CommandFailed, CommandTimeout, ConnectionLost, HostKeyMismatch, HostUnreachable,
)
from simsite.pair import SimPair
from tasks import data, ids
from tasks.sites import close_all, retry_if_transient, runner_for
from tests.sshd import SshdHandle, start_sshd

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 2.0
SLACK_S = 3.0  # process start, Prefect's own calls: the bounds below are the timeouts plus this
SLOW_ORBSTAT = """#!/bin/sh
# orbstat that hangs: lets a test drop the connection while it runs
touch {mark}
exec sleep 60
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimPair]:
    """Site files only: no process of the pair is needed for these faults."""
    yield SimPair.create(tmp_path_factory.mktemp("faults") / "pair")


@dataclass
class Remote:
    """BUS reached over its own sshd, with short timeouts."""

    sshd: SshdHandle
    cfg: SiteConfig
    decisions: list[tuple[str, bool]] = field(default_factory=list)

    def step(self, task, repair: Callable[[], None] | None = None):
        """``task`` with no retry delay and a retry condition that records each
        decision and runs ``repair`` after the first failure."""
        def decide(task_, task_run, state) -> bool:
            retry = retry_if_transient(task_, task_run, state)
            try:
                state.result()
            except Exception as exc:
                self.decisions.append((type(exc).__name__, retry))
            if repair is not None and len(self.decisions) == 1:
                repair()
            return retry
        return task.with_options(retry_delay_seconds=0, retry_condition_fn=decide)


@pytest.fixture
def bus(pair: SimPair, tmp_path: Path) -> Iterator[Remote]:
    sshd = start_sshd(tmp_path / "sshd", host=pair.settings.sites["bus"].address, home=pair.paths("bus").dir)
    cfg = pair.site_config("bus").model_copy(update={"transport": "ssh", "ssh": SSHSettings(
        port=sshd.port, username=sshd.username, known_hosts=str(sshd.known_hosts_path),
        key_filename=str(sshd.client_key_path), connect_timeout_s=CONNECT_TIMEOUT_S,
        command_timeout_s=COMMAND_TIMEOUT_S)})
    try:
        yield Remote(sshd, cfg)
    finally:
        if sshd.proc is not None:
            sshd.resume()  # a paused sshd must answer the closing connections
        close_all()
        sshd.stop()


def run_count(state) -> int:
    with get_client(sync_client=True) as client:
        return client.read_task_run(state.state_details.task_run_id).run_count


def failure(state) -> BaseException:
    assert state.is_failed(), state
    with pytest.raises(Exception) as info:
        state.result()
    return info.value


def test_non_zero_exit_names_host_command_and_output(bus: Remote):
    state = bus.step(data.extract)(bus.cfg.model_copy(update={"db": "db/no-such-db"}), "recovery/x/db",
                                   1000.0, 2000.0, return_state=True)
    error = failure(state)
    assert isinstance(error, CommandFailed)
    text = str(error)
    assert bus.cfg.host in text and "trexcerpt -v -e db/no-such-db recovery/x/db" in text
    assert "exited 1" in text and error.result.stderr.strip() and error.result.stderr.strip()[-40:] in text
    assert run_count(state) == 1 and bus.decisions == [("CommandFailed", False)]  # a failed check is final


def slow_orbstat(remote: Remote, tmp_path: Path, command_timeout_s: float) -> tuple[SiteConfig, Path]:
    """BUS with an orbstat that marks its start, then hangs."""
    slow_bin, mark = tmp_path / "slowbin", tmp_path / "orbstat-started"
    slow_bin.mkdir()
    (slow_bin / "orbstat").write_text(SLOW_ORBSTAT.format(mark=shlex.quote(str(mark))))
    (slow_bin / "orbstat").chmod(0o755)
    cfg = remote.cfg.model_copy(update={
        "path_prepend": [str(slow_bin), *remote.cfg.path_prepend],
        "ssh": remote.cfg.ssh.model_copy(update={"command_timeout_s": command_timeout_s})})
    return cfg, mark


def in_background(call: Callable[[], object]) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    return thread, results


def test_site_that_hangs_under_a_command_times_out_within_bounds(bus: Remote, tmp_path: Path):
    cfg, mark = slow_orbstat(bus, tmp_path, COMMAND_TIMEOUT_S)
    started = time.monotonic()
    thread, states = in_background(lambda: bus.step(data.check_data_flow).with_options(retries=0)(
        cfg, return_state=True))
    SimPair.wait_for(mark.exists, 20, "the slow orbstat started")
    bus.sshd.pause()
    thread.join(COMMAND_TIMEOUT_S + 30)
    elapsed = time.monotonic() - started
    error = failure(states[0])
    assert isinstance(error, CommandTimeout)
    assert f"on {cfg.host}: `orbstat -s {cfg.orb}` did not finish within {COMMAND_TIMEOUT_S:g} s" in str(error)
    assert COMMAND_TIMEOUT_S <= elapsed < COMMAND_TIMEOUT_S + SLACK_S
    assert retry_if_transient(None, None, states[0])  # a converging step may try again


def test_a_file_operation_on_a_hung_site_gives_up_within_the_connect_limit(bus: Remote):
    """The open connection to a hung site (or one behind a cut link) looks alive: an SFTP
    request on it waits no longer than a new command's channel would, not a command's limit."""
    cfg = bus.cfg.model_copy(update={"ssh": bus.cfg.ssh.model_copy(update={"command_timeout_s": 60.0})})
    runner = runner_for(cfg)
    assert runner.read_file(cfg.path("rtexec.pf"))  # the connection and its SFTP channel are up
    bus.sshd.pause()
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match=f"within {CONNECT_TIMEOUT_S:g} s"):
        runner.read_file(cfg.path("rtexec.pf"))
    # the request, then once more on a new connection: each bounded by the connect limit
    assert time.monotonic() - started < 2 * CONNECT_TIMEOUT_S + SLACK_S


def test_hung_site_is_unreachable_within_bounds_and_the_step_retried(bus: Remote):
    assert ids.read_lastid(bus.cfg)  # the connection is up before the site hangs
    bus.sshd.pause()
    started = time.monotonic()
    state = bus.step(data.check_data_flow)(bus.cfg, return_state=True)  # the step's own 2 retries
    elapsed = time.monotonic() - started
    error = failure(state)
    assert isinstance(error, HostUnreachable) and not isinstance(error, ConnectionLost)
    assert f"@{bus.cfg.host}:{bus.sshd.port}" in str(error) and "hung" in str(error)
    # the condition is asked after each attempt but the last
    assert run_count(state) == 3 and bus.decisions == [("HostUnreachable", True)] * 2
    # each attempt: at most a channel request and a new handshake, each bounded by the connect timeout
    assert elapsed < 3 * 2 * CONNECT_TIMEOUT_S + SLACK_S


def test_new_connection_to_a_hung_site_is_refused_within_the_connect_timeout(bus: Remote):
    bus.sshd.pause()
    started = time.monotonic()
    state = bus.step(ids.read_lastid).with_options(retries=0)(bus.cfg, return_state=True)
    elapsed = time.monotonic() - started
    error = failure(state)
    assert isinstance(error, HostUnreachable) and not isinstance(error, ConnectionLost)
    assert f"@{bus.cfg.host}:{bus.sshd.port}" in str(error) and "did not complete within" in str(error)
    assert CONNECT_TIMEOUT_S <= elapsed < CONNECT_TIMEOUT_S + SLACK_S


def test_connection_dropped_mid_command_is_reported_and_not_retried(bus: Remote, tmp_path: Path):
    cfg, mark = slow_orbstat(bus, tmp_path, 30.0)
    thread, states = in_background(lambda: bus.step(data.check_data_flow)(cfg, return_state=True))
    SimPair.wait_for(mark.exists, 20, "the slow orbstat started")
    bus.sshd.drop_connections()
    thread.join(30)
    error = failure(states[0])
    assert isinstance(error, ConnectionLost)
    text = str(error)
    assert cfg.host in text and "orbstat -s" in text and "may or may not have run" in text
    assert run_count(states[0]) == 1 and bus.decisions == [("ConnectionLost", False)]


def test_connect_failure_before_the_command_is_retried_and_the_step_completes(bus: Remote):
    bus.sshd.stop()  # powered off: connection refused
    state = bus.step(ids.read_lastid, repair=bus.sshd.start)(bus.cfg, return_state=True)
    assert state.is_completed(), state
    assert set(state.result()) == {"arid", "evid", "orid", "wfid"}
    assert run_count(state) == 2 and bus.decisions == [("HostUnreachable", True)]


def test_refused_key_names_the_host_and_the_fix(bus: Remote, tmp_path: Path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    cfg = bus.cfg.model_copy(update={"ssh": bus.cfg.ssh.model_copy(update={"key_filename": str(other)})})
    state = bus.step(ids.read_lastid)(cfg, return_state=True)
    error = failure(state)
    assert isinstance(error, AuthenticationRefused)
    assert f"@{bus.cfg.host}:{bus.sshd.port} refused key {other}" in str(error) and "authorized_keys" in str(error)
    assert run_count(state) == 1 and bus.decisions == [("AuthenticationRefused", False)]


def test_changed_host_key_is_refused_naming_the_host_and_the_fix(bus: Remote, tmp_path: Path):
    impostor = tmp_path / "impostor_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    known_hosts = tmp_path / "known_hosts"
    key = " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
    known_hosts.write_text(f"[{bus.cfg.host}]:{bus.sshd.port} {key}\n")
    cfg = bus.cfg.model_copy(update={"ssh": bus.cfg.ssh.model_copy(update={"known_hosts": str(known_hosts)})})
    state = bus.step(ids.read_lastid)(cfg, return_state=True)
    error = failure(state)
    assert isinstance(error, HostKeyMismatch)
    text = str(error)
    assert f"host key for {bus.cfg.host}:{bus.sshd.port} does not match" in text
    assert str(known_hosts) in text and "ssh-keyscan" in text
    assert run_count(state) == 1 and bus.decisions == [("HostKeyMismatch", False)]
    assert bus.sshd.accepted_logins() == 0  # nothing was run on a host that is not the one we trust
