"""SSHRunner against a real OpenSSH sshd on loopback, plus LocalRunner basics.

Time bounds below check that a timeout feature works (an error comes within
the configured timeout plus a generous margin); they are not performance goals.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antelope_ha.runner import (
    AuthenticationRefused,
    CommandTimeout,
    ConnectionLost,
    HostKeyMismatch,
    HostUnreachable,
    LocalRunner,
)
from antelope_ha.ssh import SSHRunner, remote_command_line
from tests.sshd import SshdHandle

StartSshd = Callable[..., SshdHandle]

MARGIN_S = 3.0
NASTY_ARGS = [
    "a b", "  leading and trailing  ", "it's", 'say "hi"', "back\\slash", "$HOME", "${PATH}",
    "*", "~", "-n", "--", "", "a;b", "a|b", "a&&b", "a>b", "line1\nline2", "tab\there",
    "carriage\rreturn", "é ü 漢字 🙂", "'", '"', "!", "#comment",
]
# Any text a command line can carry: no NUL, no lone surrogates (not encodable).
ARG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


def printed(args: list[str]) -> bytes:
    return b"".join(a.encode() + b"\0" for a in args)


def runner_for(sshd: SshdHandle, **overrides: object) -> SSHRunner:
    kwargs = {**sshd.runner_kwargs(), "connect_timeout_s": 5.0, "command_timeout_s": 20.0}
    return SSHRunner(**{**kwargs, **overrides})  # type: ignore[arg-type]


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True
    )
    return path


def injection_args(marker: Path) -> list[str]:
    return [
        f"$(touch {marker})", f"`touch {marker}`", f"; touch {marker}", f"x\ntouch {marker}",
        f"' ; touch {marker} ; '", f'" ; touch {marker} ; "', f"&& touch {marker}",
    ]


# -- commands -----------------------------------------------------------------


def test_stdout_stderr_and_exit_status_come_back(ssh_runner: SSHRunner, sshd: SshdHandle) -> None:
    result = ssh_runner.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert result.host == sshd.host
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 7")
    assert result.duration_s > 0
    assert ssh_runner.run(["true"]).ok


def test_argv_is_passed_literally_and_nothing_is_injected(
    ssh_runner: SSHRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "injected"
    args = NASTY_ARGS + injection_args(marker)
    result = ssh_runner.run(["printf", "%s\\0", *args]).check()
    assert result.stdout.encode() == printed(args)
    assert ssh_runner.run(["echo", *args]).check().stdout == " ".join(args) + "\n"
    assert not marker.exists()


def test_env_and_cwd_are_applied(sshd: SshdHandle, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    workdir = tmp_path / "work dir; $(touch x)"
    workdir.mkdir()
    env = {"SITE": "ms", "TRICKY": f"a b $(touch {marker}) 'q' \"d\"\nnext"}
    with runner_for(sshd, env=env, cwd=str(workdir)) as runner:
        result = runner.run(["sh", "-c", 'printf "%s\\0" "$SITE" "$TRICKY" "$PWD"']).check()
    assert result.stdout.split("\0")[:-1] == [env["SITE"], env["TRICKY"], str(workdir)]
    assert not marker.exists()


def test_invalid_env_name_is_refused_before_connecting(sshd: SshdHandle) -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        runner_for(sshd, env={"A B": "x"})


def test_command_past_its_timeout_raises_and_the_runner_stays_usable(
    ssh_runner: SSHRunner, sshd: SshdHandle
) -> None:
    ssh_runner.run(["true"])
    logins = sshd.accepted_logins()
    start = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        ssh_runner.run(["sh", "-c", "echo started; sleep 30"], timeout_s=0.5)
    assert time.monotonic() - start < 0.5 + MARGIN_S
    assert sshd.host in str(caught.value) and "sleep 30" in str(caught.value)
    assert "started" in str(caught.value)  # the output so far
    assert ssh_runner.run(["echo", "ok"]).stdout == "ok\n"
    assert sshd.accepted_logins() == logins  # same connection


def test_one_connection_is_reused_across_commands(sshd: SshdHandle, tmp_path: Path) -> None:
    logins = sshd.accepted_logins()
    with runner_for(sshd) as runner:
        for _ in range(5):
            runner.run(["echo", "x"]).check()
        runner.write_file(str(tmp_path / "f"), b"x")
        assert runner.exists(str(tmp_path / "f"))
    assert sshd.accepted_logins() == logins + 1


def test_big_outputs_and_input_do_not_deadlock(ssh_runner: SSHRunner) -> None:
    # stderr first: a reader that waited for stdout alone would stall sshd's stderr window.
    script = "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o"
    result = ssh_runner.run(["sh", "-c", script]).check()
    assert (len(result.stdout), len(result.stderr)) == (3_000_000, 3_000_000)
    data = "0123456789\n" * 200_000
    assert ssh_runner.run(["cat"], stdin=data).check().stdout == data


def test_command_killed_by_a_signal_has_no_exit_status(ssh_runner: SSHRunner) -> None:
    result = ssh_runner.run(["sh", "-c", "kill -9 $$"])
    assert result.exit_status == -1 and not result.ok
    assert ssh_runner.run(["true"]).ok


# -- host keys and authentication ---------------------------------------------------


def test_wrong_host_key_is_refused_and_nothing_runs(sshd: SshdHandle, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    public = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {public}\n")
    marker = tmp_path / "ran"
    logins = sshd.accepted_logins()
    with runner_for(sshd, known_hosts=str(known_hosts)) as runner:
        with pytest.raises(HostKeyMismatch) as caught:
            runner.run(["touch", str(marker)])
    message = str(caught.value)
    assert f"{sshd.host}:{sshd.port}" in message and str(known_hosts) in message
    assert "ssh-keyscan" in message and "SHA256:" in message
    assert not marker.exists() and sshd.accepted_logins() == logins


def test_unknown_host_is_refused(sshd: SshdHandle, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with runner_for(sshd, known_hosts=str(empty)) as runner:
        with pytest.raises(HostKeyMismatch, match="not in known_hosts file"):
            runner.run(["true"])


def test_missing_known_hosts_file_is_refused(sshd: SshdHandle, tmp_path: Path) -> None:
    with runner_for(sshd, known_hosts=str(tmp_path / "absent")) as runner:
        with pytest.raises(HostKeyMismatch, match="does not exist"):
            runner.run(["true"])


def test_key_from_a_running_ssh_agent(sshd: SshdHandle, tmp_path: Path, monkeypatch) -> None:
    """allow_agent: no key file given, the key is held by a real ssh-agent."""
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start listening"
            time.sleep(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        without = runner_for(sshd, key_filename=None, allow_agent=True)
        with pytest.raises(AuthenticationRefused, match=f"the ssh-agent at {socket_path} holds no key"):
            without.run(["true"])
        without.close()
        subprocess.run(["ssh-add", "-q", str(sshd.client_key_path)], check=True,
                       env={**os.environ, "SSH_AUTH_SOCK": str(socket_path)}, capture_output=True)
        with runner_for(sshd, key_filename=None, allow_agent=True) as runner:
            assert runner.run(["echo", "agent"]).stdout == "agent\n"
    finally:
        agent.terminate()
        agent.wait(10)


def test_wrong_client_key_is_refused(sshd: SshdHandle, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    with runner_for(sshd, key_filename=str(stranger)) as runner:
        with pytest.raises(AuthenticationRefused) as caught:
            runner.run(["true"])
    assert f"{sshd.host}:{sshd.port}" in str(caught.value)
    assert str(stranger) in str(caught.value) and "authorized_keys" in str(caught.value)


def test_private_key_text_is_never_shown(
    sshd: SshdHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pem = sshd.client_key_path.read_text()
    body = pem.splitlines()[1]  # a line of the key material itself
    passphrase = "correct horse battery staple"
    locked = keygen(tmp_path / "locked", passphrase)
    locked_pem = locked.read_text()
    errors: list[BaseException] = []

    runner = runner_for(sshd, key_filename=None, private_key=pem)
    assert runner.run(["echo", "in"]).stdout == "in\n"  # the text key really works
    with pytest.raises(CommandTimeout) as timeout:
        runner.run(["sleep", "5"], timeout_s=0.2)
    errors.append(timeout.value)
    runner.close()

    stranger = runner_for(sshd, key_filename=None, private_key=locked_pem, passphrase=passphrase)
    with pytest.raises(AuthenticationRefused) as refused:
        stranger.run(["true"])
    errors.append(refused.value)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    mismatch = runner_for(sshd, key_filename=None, private_key=pem, known_hosts=str(empty))
    with pytest.raises(HostKeyMismatch) as mismatched:
        mismatch.run(["true"])
    errors.append(mismatched.value)
    for bad_kwargs in (
        {"private_key": pem.replace(body, body[::-1])},
        {"private_key": locked_pem},
        {"private_key": locked_pem, "passphrase": "wrong " + passphrase},
        {"private_key": pem, "key_filename": str(sshd.client_key_path)},
    ):
        with pytest.raises(ValueError) as invalid:
            runner_for(sshd, **{"key_filename": None, **bad_kwargs})
        errors.append(invalid.value)

    shown = [repr(runner), str(runner), repr(stranger), caplog.text]
    for error in errors:
        while error is not None:  # the error and everything chained to it
            shown += [str(error), repr(error)]
            error = error.__cause__ or error.__context__
    for text in shown:
        assert body not in text and "PRIVATE KEY" not in text and passphrase not in text


# -- unreachable hosts ------------------------------------------------------------


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A port where SYNs are dropped: a full accept queue that nobody drains."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        yield listener.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_refused_port_fails_fast(sshd: SshdHandle) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with runner_for(sshd, port=free) as runner:
        with pytest.raises(HostUnreachable, match=f"127.0.0.1:{free}: connection refused"):
            runner.run(["true"])


@pytest.mark.parametrize("kind", ["blackhole", "silent"])
def test_dead_host_errors_within_the_connect_timeout(
    kind: str, sshd: SshdHandle, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(f"{kind}_port")
    with runner_for(sshd, port=port, connect_timeout_s=1.0) as runner:
        start = time.monotonic()
        with pytest.raises(HostUnreachable, match=f"127.0.0.1:{port}"):
            runner.run(["true"])
        assert time.monotonic() - start < 1.0 + MARGIN_S


def test_hung_sshd_errors_within_the_timeouts(sshd_factory: StartSshd) -> None:
    server = sshd_factory()
    with runner_for(server, connect_timeout_s=1.0) as runner:
        runner.run(["true"])
        server.pause()
        try:
            start = time.monotonic()
            with pytest.raises(HostUnreachable):
                runner.run(["true"], timeout_s=1.0)
            # channel open on the old connection, then one reconnect: each 1 s at most
            assert time.monotonic() - start < 2 * 1.0 + MARGIN_S
        finally:
            server.resume()


def test_dead_connection_is_replaced_before_a_command(sshd_factory: StartSshd) -> None:
    server = sshd_factory()
    with runner_for(server) as runner:
        runner.run(["true"])
        server.drop_connections()  # the idle connection drops
        assert runner.run(["echo", "again"]).stdout == "again\n"
    assert server.accepted_logins() == 2


def test_connection_dropped_mid_command_is_not_retried(
    sshd_factory: StartSshd, tmp_path: Path
) -> None:
    server = sshd_factory()
    runs = tmp_path / "runs"
    with runner_for(server) as runner:
        runner.run(["true"])
        threading.Timer(0.5, server.drop_connections).start()
        start = time.monotonic()
        with pytest.raises(ConnectionLost, match="may or may not have run") as caught:
            runner.run(["sh", "-c", f"echo run >> {runs}; sleep 30"])
        assert time.monotonic() - start < 0.5 + MARGIN_S
        assert "sleep 30" in str(caught.value)
        assert runs.read_text() == "run\n"  # ran once, not re-run
        assert runner.run(["echo", "back"]).stdout == "back\n"


def test_stopped_sshd_is_unreachable(sshd_factory: StartSshd) -> None:
    server = sshd_factory()
    with runner_for(server) as runner:
        runner.run(["true"])
        server.stop()
        with pytest.raises(HostUnreachable):
            runner.run(["true"])
        server.start()
        assert runner.run(["echo", "on"]).stdout == "on\n"


# -- files --------------------------------------------------------------------


def test_sftp_write_read_round_trip(ssh_runner: SSHRunner, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000 + b"\xff\xfe not utf-8"
    target = tmp_path / "blob.bin"
    assert not ssh_runner.exists(str(target))
    ssh_runner.write_file(str(target), data)
    assert ssh_runner.exists(str(target))
    assert ssh_runner.read_file(str(target)) == data == target.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin"]  # no temporary left


def test_sftp_write_is_atomic_and_keeps_the_mode(ssh_runner: SSHRunner, tmp_path: Path) -> None:
    target = tmp_path / "db"
    target.write_text("old descriptor\n")
    target.chmod(0o640)
    with target.open() as reader_of_old:  # a reader that opened the file before the write
        ssh_runner.write_file(str(target), b"new descriptor\n")
        assert reader_of_old.read() == "old descriptor\n"  # replaced by rename, not rewritten
    assert target.read_text() == "new descriptor\n"
    assert target.stat().st_mode & 0o7777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


def test_sftp_relative_paths_use_cwd_and_errors_name_host(sshd: SshdHandle, tmp_path: Path) -> None:
    with runner_for(sshd, cwd=str(tmp_path)) as runner:
        runner.write_file("rel.txt", b"here")
        assert (tmp_path / "rel.txt").read_bytes() == b"here"
        assert runner.read_file("rel.txt") == b"here" and runner.exists("rel.txt")
        with pytest.raises(FileNotFoundError) as caught:
            runner.read_file("absent.txt")
    assert sshd.host in str(caught.value) and "absent.txt" in str(caught.value)


def test_sftp_on_a_hung_or_restarted_host(sshd_factory: StartSshd, tmp_path: Path) -> None:
    server = sshd_factory()
    (tmp_path / "f").write_bytes(b"data")
    with runner_for(server, command_timeout_s=1.0, connect_timeout_s=1.0) as runner:
        assert runner.read_file(str(tmp_path / "f")) == b"data"
        server.drop_connections()  # the connection drops between two file operations
        assert runner.read_file(str(tmp_path / "f")) == b"data"
        server.pause()
        try:
            start = time.monotonic()
            with pytest.raises(HostUnreachable):
                runner.read_file(str(tmp_path / "f"))
            # the reused connection's 1 s, then one reconnect's 1 s
            assert time.monotonic() - start < 2 * 1.0 + MARGIN_S
        finally:
            server.resume()
        assert runner.exists(str(tmp_path / "f"))


# -- quoting, as a property -----------------------------------------------------


@given(st.lists(ARG_TEXT, max_size=8))
def test_joined_command_gives_sh_exactly_the_arguments(args: list[str]) -> None:
    line = remote_command_line(["printf", "%s\\0", "first", *args], env={"V": "x"}, cwd="/")
    out = subprocess.run(["sh", "-c", line], capture_output=True, check=True).stdout
    assert out == printed(["first", *args])


@given(ARG_TEXT)
def test_env_values_reach_the_command_literally(value: str) -> None:
    line = remote_command_line(["printenv", "V"], env={"V": value})
    out = subprocess.run(["sh", "-c", line], capture_output=True, check=True).stdout
    assert out == value.encode() + b"\n"


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(ARG_TEXT, max_size=6))
def test_arguments_come_back_identical_over_ssh(ssh_runner: SSHRunner, args: list[str]) -> None:
    result = ssh_runner.run(["printf", "%s\\0", "first", *args]).check()
    assert result.stdout.encode() == printed(["first", *args])


# LocalRunner runs without a shell: arguments, carriage returns included, come back as given.
@given(st.lists(ARG_TEXT, max_size=8))
def test_arguments_come_back_identical_locally(args: list[str]) -> None:
    result = LocalRunner().run(["printf", "%s\\0", "first", *args]).check()
    assert result.stdout.encode() == printed(["first", *args])


def test_local_runner_keeps_carriage_returns() -> None:
    assert LocalRunner().run(["printf", "a\\r\\nb\\r"]).stdout == "a\r\nb\r"


# -- LocalRunner ------------------------------------------------------------------


def test_local_runner_basics(tmp_path: Path) -> None:
    runner = LocalRunner(cwd=str(tmp_path), env={"SITE": "bus"}, default_timeout_s=5)
    result = runner.run(["sh", "-c", 'echo "$SITE $PWD"; echo e >&2; exit 3'])
    assert (result.exit_status, result.stdout, result.stderr) == (3, f"bus {tmp_path}\n", "e\n")
    assert runner.run(["cat"], stdin="in").stdout == "in"
    assert runner.run(["/nonexistent/program"]).exit_status == 127
    with pytest.raises(CommandTimeout):
        runner.run(["sleep", "5"], timeout_s=0.2)
    runner.write_file("f", b"data")
    assert runner.read_file("f") == b"data" and runner.exists("f") and not runner.exists("g")
    assert os.listdir(tmp_path) == ["f"]
    (tmp_path / "f").chmod(0o640)
    runner.write_file("f", b"new")
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640 and runner.read_file("f") == b"new"


def test_the_workers_key_options_hold_and_the_runner_needs_none_of_what_they_forbid(sshd: SshdHandle) -> None:
    """The key logs in under docs/operating.md's authorized_keys options: a
    terminal and a port forwarding are refused; commands and SFTP work."""
    import paramiko

    from simsite.sshd import KEY_OPTIONS

    assert (sshd.directory / "authorized_keys").read_text().startswith(KEY_OPTIONS + " ")
    with runner_for(sshd) as runner:
        assert runner.run(["echo", "ok"]).stdout == "ok\n"
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(sshd.host, sshd.port, username=sshd.username, key_filename=str(sshd.client_key_path),
                   allow_agent=False, look_for_keys=False, timeout=10)
    try:
        transport = client.get_transport()
        with pytest.raises(paramiko.SSHException):
            transport.open_session().get_pty()
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", sshd.port), ("127.0.0.1", 0))
        sftp = client.open_sftp()
        assert sftp.listdir(str(sshd.directory))
        sftp.close()
    finally:
        client.close()
