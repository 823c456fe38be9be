"""``SSHRunner``: the runner interface over one reused paramiko connection.

Trust and safety rules, and why:

* Host keys are checked strictly against one known_hosts file given by the
  caller (never ``~/.ssh``, never auto-added): talking to an impostor "MS" is
  how a failover system creates a split brain.
* A command is an argv; it is joined with ``shlex.join`` (and the optional
  ``cd``/``env`` prefix quoted the same way), so no value reaches the remote
  shell unquoted. The login shell of the remote user must be POSIX (sh, bash,
  ksh, zsh); csh-family shells quote differently.
* A command is never re-run on its own: if the connection is dead before a
  command starts, the runner reconnects once; if it drops while the command
  runs, ``HostUnreachable`` says the command may or may not have run.
* Every wait has a deadline: TCP connect, handshake and authentication share
  ``connect_timeout_s``; each command, and each file operation, has its own.
* The private key, given as text or as a file, and its passphrase are parsed at
  construction and never kept as text, logged, shown in ``repr`` or in errors.
"""
from __future__ import annotations

import io
import os
import posixpath
import re
import select
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import TypeVar

import paramiko

from antelope_ha.runner import (
    AuthenticationRefused,
    CommandResult,
    CommandTimeout,
    ConnectionLost,
    HostKeyMismatch,
    HostUnreachable,
    RunnerError,
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
_IO_ERRORS = (paramiko.SSHException, EOFError, OSError)
_T = TypeVar("_T")


def remote_command_line(
    argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
) -> str:
    """The exact string a POSIX login shell is given for ``argv``.

    ``env`` is applied with ``env K=V ...`` rather than SSH's SetEnv, which
    sshd refuses unless configured with AcceptEnv.
    """
    if not argv:
        raise ValueError("a command needs at least one argument (the program)")
    words = []
    if cwd is not None:
        words += ["cd", shlex.quote(cwd), "&&"]
    if env:
        for name in env:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"not a valid environment variable name: {name!r}")
        words += ["env", *(shlex.quote(f"{k}={v}") for k, v in env.items())]
    words.append(shlex.join(argv))
    return " ".join(words)


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that remembers what the unknown host offered, for the error."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _UnknownHostKey(hostname, key)


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey):
        super().__init__(f"{hostname} not found in known_hosts")
        self.key = key


@dataclass(eq=False)
class SSHRunner:
    """Runs commands and moves files on one host over SSH (paramiko).

    Give exactly one of ``key_filename`` or ``private_key`` (PEM/OpenSSH text),
    or ``allow_agent=True``. ``known_hosts`` is the only file host keys are
    trusted from. ``env`` and ``cwd`` apply to every command, and ``cwd`` also
    to relative SFTP paths. ``dead_peer_timeout_s`` bounds how long an
    established connection to a vanished host looks alive (TCP_USER_TIMEOUT
    and SSH keepalives).
    """

    host: str
    username: str
    known_hosts: str
    port: int = 22
    key_filename: str | None = None
    private_key: InitVar[str | None] = None
    passphrase: InitVar[str | None] = None
    allow_agent: bool = False
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 60.0
    dead_peer_timeout_s: float = 15.0
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    _pkey: paramiko.PKey | None = field(init=False, repr=False, default=None)
    _client: paramiko.SSHClient | None = field(init=False, repr=False, default=None)
    _sftp_client: paramiko.SFTPClient | None = field(init=False, repr=False, default=None)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self, private_key: str | None, passphrase: str | None) -> None:
        if private_key is not None and self.key_filename is not None:
            raise ValueError(f"{self._where}: give key_filename or private_key, not both")
        if private_key is None and self.key_filename is None and not self.allow_agent:
            raise ValueError(
                f"{self._where}: give key_filename or private_key, or allow_agent=True"
            )
        remote_command_line(["true"], self.env, self.cwd)  # validates env names early
        if private_key is not None:
            self._pkey = _load_key_text(private_key, passphrase, self._where)
        elif self.key_filename is not None:
            self._pkey = _load_key_file(self.key_filename, passphrase, self._where)

    @property
    def _where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    # -- commands ---------------------------------------------------------

    def run(
        self, argv: Sequence[str], *, timeout_s: float | None = None, stdin: str | None = None
    ) -> CommandResult:
        """Run ``argv`` and return its exit status and output, whatever the status.

        ``exit_status`` is -1 when the remote process ended without one (killed
        by a signal). Output is decoded as UTF-8, undecodable bytes replaced.
        """
        command = remote_command_line(argv, self.env, self.cwd)
        timeout = timeout_s or self.command_timeout_s
        start = time.monotonic()
        transport, channel = self._open_channel(command)
        out, err = bytearray(), bytearray()
        try:
            status = self._execute(channel, transport, command, stdin, start + timeout, out, err)
        except _Deadline:
            raise CommandTimeout(self.host, argv, timeout, out.decode(errors="replace")) from None
        except _IO_ERRORS as exc:
            self._discard(transport)
            raise self._dropped(command) from exc
        finally:
            channel.close()
        if status is None:
            self._discard(transport)
            raise self._dropped(command)
        return CommandResult(
            self.host, tuple(argv), status, out.decode(errors="replace"),
            err.decode(errors="replace"), time.monotonic() - start,
        )

    def _execute(
        self, channel: paramiko.Channel, transport: paramiko.Transport, command: str,
        stdin: str | None, deadline: float, out: bytearray, err: bytearray,
    ) -> int | None:
        """Start ``command`` on ``channel`` and collect its output until ``deadline``.

        Returns the exit status, -1 if the process ended without one, or None
        if the connection dropped first. Raises ``_Deadline`` on timeout.
        Reading stdout and stderr as they come, and sending stdin only when the
        channel window allows, means a big output never deadlocks the command.
        """
        # exec_command waits for sshd's reply without a timeout; a hung sshd
        # would block it forever, so a timer closes the channel at the deadline.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            channel.close()

        watchdog = threading.Timer(max(deadline - time.monotonic(), 0), expire)
        watchdog.start()
        try:
            channel.exec_command(command)
        except paramiko.SSHException:
            if expired.is_set():
                raise _Deadline() from None
            raise
        finally:
            watchdog.cancel()
        if expired.is_set():
            raise _Deadline()
        pending = memoryview((stdin or "").encode())
        if not pending:
            channel.shutdown_write()
        ready = select.poll()  # poll, not select: no limit on descriptor numbers
        ready.register(channel.fileno(), select.POLLIN)  # stdout/stderr data or EOF arrived
        while True:
            _drain(channel, out, err)
            if channel.eof_received or channel.closed:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline()
            if pending and channel.send_ready():
                channel.settimeout(remaining)
                pending = pending[channel.send(pending[:32768]):]
                if not pending:
                    channel.shutdown_write()
            ready.poll(1000 * (min(remaining, 0.05) if pending else remaining))
        # sshd may send the exit status just after EOF.
        if not channel.status_event.wait(max(deadline - time.monotonic(), 0)):
            raise _Deadline()
        _drain(channel, out, err)
        if channel.exit_status != -1:
            return channel.exit_status
        # No exit status: a signal killed the process (transport alive) or the
        # connection dropped. The transport thread marks itself inactive just
        # after closing its channels, so give it a moment to finish.
        transport.join(0.05)
        return -1 if transport.is_active() else None

    def _open_channel(self, command: str) -> tuple[paramiko.Transport, paramiko.Channel]:
        """A new channel, reconnecting once if a reused connection is dead.

        Safe to retry: nothing has been sent to the remote shell yet.
        """
        for attempt in (1, 2):
            transport, fresh = self._transport()
            try:
                return transport, transport.open_session(timeout=self.connect_timeout_s)
            except _IO_ERRORS as exc:
                self._discard(transport)
                if fresh or attempt == 2:
                    raise HostUnreachable(
                        f"{self._where}: could not open a channel for `{command}` "
                        f"(it did not start): {exc or type(exc).__name__}; check that the "
                        "host is up and sshd is running"
                    ) from exc
        raise AssertionError("unreachable")

    def _dropped(self, command: str) -> ConnectionLost:
        return ConnectionLost(
            f"{self._where}: connection dropped while `{command}` was running: it may or may "
            f"not have run; check its effect on {self.host} before running it again"
        )

    # -- files --------------------------------------------------------------

    def read_file(self, path: str) -> bytes:
        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(self._path(path), "rb") as f:
                return f.read()

        return self._file_op(path, read)

    def write_file(self, path: str, data: bytes) -> None:
        """Write to a temporary file beside ``path``, then rename it over ``path``.

        Readers see the old or the new content, never a partial file. An
        existing file's permission bits are kept.
        """
        target = self._path(path)
        head, name = posixpath.split(target)

        def write(sftp: paramiko.SFTPClient) -> None:
            tmp = posixpath.join(head, f".{name}.tmp-{uuid.uuid4().hex}")
            try:
                mode = sftp.stat(target).st_mode
            except FileNotFoundError:
                mode = None
            try:
                with sftp.open(tmp, "wb") as f:
                    f.write(data)
                if mode is not None:
                    sftp.chmod(tmp, mode & 0o7777)
                sftp.posix_rename(tmp, target)
            except BaseException:
                _try_remove(sftp, tmp)
                raise

        self._file_op(path, write)

    def exists(self, path: str) -> bool:
        def stat(sftp: paramiko.SFTPClient) -> bool:
            try:
                sftp.stat(self._path(path))
            except FileNotFoundError:
                return False
            return True

        return self._file_op(path, stat)

    def _path(self, path: str) -> str:
        return posixpath.join(self.cwd, path) if self.cwd else path

    def _file_op(self, path: str, op: Callable[[paramiko.SFTPClient], _T]) -> _T:
        """Run an SFTP operation, once more on a new connection if the reused one died.

        Unlike a command, every file operation here is safe to repeat. File
        errors (FileNotFoundError, PermissionError, ...) are raised as from
        LocalRunner, naming host and path.
        """
        for attempt in (1, 2):
            sftp, transport, fresh = self._sftp()
            try:
                return op(sftp)
            except _IO_ERRORS as exc:
                if transport.is_active() and isinstance(exc, OSError) and exc.errno is not None:
                    raise type(exc)(exc.errno, f"{exc.strerror} on {self._where}", path) from exc
                self._discard(transport)
                if fresh or attempt == 2:
                    raise HostUnreachable(
                        f"{self._where}: no answer within {self.connect_timeout_s:g} s, or "
                        f"connection lost, during a file operation on {path} "
                        f"({exc or type(exc).__name__}); check that the host is up"
                    ) from exc
        raise AssertionError("unreachable")

    def _sftp(self) -> tuple[paramiko.SFTPClient, paramiko.Transport, bool]:
        """The SFTP client of the live connection, and whether that connection is new."""
        with self._lock:
            transport, fresh = self._transport_locked()
            if self._sftp_client is None:
                try:
                    self._sftp_client = paramiko.SFTPClient.from_transport(transport)
                    # Each SFTP request is answered at once by a live host: wait for
                    # one no longer than for a new command's channel. Behind a cut
                    # link the open connection looks alive; this bounds the wait.
                    self._sftp_client.get_channel().settimeout(self.connect_timeout_s)
                except _IO_ERRORS as exc:
                    self._discard_locked(transport)
                    raise HostUnreachable(
                        f"{self._where}: could not start SFTP: {exc}; check that sshd "
                        "has `Subsystem sftp` configured"
                    ) from exc
            return self._sftp_client, transport, fresh

    # -- connection ---------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._discard_locked(self._client.get_transport())

    def __enter__(self) -> SSHRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transport(self) -> tuple[paramiko.Transport, bool]:
        with self._lock:
            return self._transport_locked()

    def _transport_locked(self) -> tuple[paramiko.Transport, bool]:
        """The live connection, and whether it was made just now."""
        transport = self._client.get_transport() if self._client else None
        if transport is not None and transport.is_active():
            return transport, False
        self._discard_locked(transport)
        self._client = self._connect()
        transport = self._client.get_transport()
        assert transport is not None
        return transport, True

    def _discard(self, transport: paramiko.Transport | None) -> None:
        with self._lock:
            self._discard_locked(transport)

    def _discard_locked(self, transport: paramiko.Transport | None) -> None:
        """Forget the connection (if ``transport`` is still the current one)."""
        if self._client is None or self._client.get_transport() is not transport:
            return
        if self._sftp_client is not None:
            self._sftp_client.close()
        self._client.close()
        self._client = self._sftp_client = None

    def _connect(self) -> paramiko.SSHClient:
        """Connect and authenticate, all within ``connect_timeout_s``."""
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(self.known_hosts)  # only this file: never ~/.ssh
        except FileNotFoundError:
            raise HostKeyMismatch(
                f"{self._where}: known_hosts file {self.known_hosts} does not exist; create it "
                "with the host's key (ssh-keyscan) after verifying its fingerprint"
            ) from None
        client.set_missing_host_key_policy(_RejectUnknownHost())
        deadline = time.monotonic() + self.connect_timeout_s
        sock = self._tcp_connect()
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes paramiko wherever it waits
            except OSError:
                pass

        watchdog = threading.Timer(max(deadline - time.monotonic(), 0), expire)
        watchdog.start()
        try:
            remaining = max(deadline - time.monotonic(), 0.001)
            client.connect(
                self.host, port=self.port, username=self.username, pkey=self._pkey, sock=sock,
                allow_agent=self.allow_agent, look_for_keys=False, timeout=remaining,
                banner_timeout=remaining, auth_timeout=remaining,
            )
        except Exception as exc:
            client.close()
            sock.close()
            # paramiko's own timeouts end at the same deadline and may fire first, failing with
            # another message ("No existing session"): a failure at the deadline is the timeout.
            error = self._connect_error(exc, timed_out.is_set() or time.monotonic() >= deadline - 0.1)
            if error is None:
                raise
            raise error from exc
        finally:
            watchdog.cancel()
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(max(1, int(self.dead_peer_timeout_s / 3)))
        return client

    def _tcp_connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except socket.gaierror as exc:
            raise HostUnreachable(
                f"{self._where}: cannot resolve {self.host!r} ({exc.strerror}); check the host name"
            ) from exc
        except TimeoutError as exc:
            raise HostUnreachable(
                f"{self._where}: no answer within {self.connect_timeout_s:g} s: the host is "
                "down or a firewall drops the packets; check the host and the network path"
            ) from exc
        except ConnectionRefusedError as exc:
            raise HostUnreachable(
                f"{self._where}: connection refused: the host is up but nothing listens on "
                f"port {self.port}; check that sshd runs there"
            ) from exc
        except OSError as exc:
            raise HostUnreachable(
                f"{self._where}: cannot connect ({exc.strerror or exc}); check the network path"
            ) from exc
        # Without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to every command.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.dead_peer_timeout_s * 1000)
        )
        return sock

    def _connect_error(self, exc: Exception, timed_out: bool) -> RunnerError | None:
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyMismatch(
                f"host key for {self.host}:{self.port} does not match known_hosts file "
                f"{self.known_hosts} (it offered {exc.key.get_name()} {exc.key.fingerprint}); "
                "if the host was legitimately re-keyed, update "
                f"{self.known_hosts} with ssh-keyscan after verifying the fingerprint"
            )
        if isinstance(exc, _UnknownHostKey):
            return HostKeyMismatch(
                f"{self.host}:{self.port} is not in known_hosts file {self.known_hosts} (it "
                f"offered {exc.key.get_name()} {exc.key.fingerprint}); verify that fingerprint "
                f"with the host's administrator, then add it with "
                f"`ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}`"
            )
        if timed_out:
            return HostUnreachable(
                f"{self._where}: the SSH handshake did not complete within "
                f"{self.connect_timeout_s:g} s: the host or its sshd is hung or overloaded"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            key = self.key_filename or ("the given key" if self._pkey else "the agent's keys")
            return AuthenticationRefused(
                f"{self._where} refused key {key} for user {self.username!r}: add its public "
                f"key to that user's authorized_keys on {self.host}, or fix username/key"
            )
        if isinstance(exc, paramiko.SSHException) and "No authentication methods" in str(exc):
            agent = os.environ.get("SSH_AUTH_SOCK")
            return AuthenticationRefused(
                f"{self._where}: no key to log in with: no key file or key text is configured and "
                + (f"the ssh-agent at {agent} holds no key (ssh-add one)" if agent else
                   "no ssh-agent runs (SSH_AUTH_SOCK is not set)")
                + "; or give key_filename or private_key"
            )
        if isinstance(exc, _IO_ERRORS):
            return HostUnreachable(
                f"{self._where}: SSH connection setup failed ({exc or type(exc).__name__}); "
                "check that the port is an sshd and the host is healthy"
            )
        return None


class _Deadline(Exception):
    """The command ran past its timeout."""


def _drain(channel: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    while channel.recv_ready():
        out += channel.recv(65536)
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(65536)


def _try_remove(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.remove(path)
    except _IO_ERRORS:
        pass


def _load_key_text(text: str, passphrase: str | None, where: str) -> paramiko.PKey:
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise ValueError(
                f"{where}: the private key is encrypted: give its passphrase"
            ) from None
        except (paramiko.SSHException, ValueError):
            continue
    raise ValueError(
        f"{where}: private_key is not an Ed25519, ECDSA or RSA private key, or its "
        "passphrase is wrong"
    )


def _load_key_file(path: str, passphrase: str | None, where: str) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path, password=passphrase)
    except OSError as exc:
        raise ValueError(f"{where}: cannot read key file {path}: {exc.strerror}") from None
    except (paramiko.SSHException, ValueError, TypeError):
        raise ValueError(
            f"{where}: key file {path} is not a usable private key, or it is encrypted and "
            "the passphrase is missing or wrong"
        ) from None
