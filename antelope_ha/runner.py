"""One interface to run a command on a site: locally (subprocess) or over SSH.

A command is always an argument vector. Remote execution joins it with
``shlex.join`` so that no value can reach the shell unquoted.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    """What a command did on a host."""

    host: str
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    def check(self) -> CommandResult:
        """Return self, or raise CommandFailed naming host, command and output."""
        if not self.ok:
            raise CommandFailed(self)
        return self


class RunnerError(Exception):
    """Base class of every error raised by a runner."""


class CommandFailed(RunnerError):
    def __init__(self, result: CommandResult):
        self.result = result
        out = (result.stderr.strip() or result.stdout.strip())[-2000:]
        super().__init__(
            f"on {result.host}: `{result.command_line}` exited {result.exit_status}"
            + (f": {out}" if out else "")
        )


class CommandTimeout(RunnerError):
    def __init__(self, host: str, argv: Sequence[str], timeout_s: float, output: str = ""):
        self.host, self.argv, self.timeout_s = host, tuple(argv), timeout_s
        super().__init__(
            f"on {host}: `{shlex.join(argv)}` did not finish within {timeout_s:g} s"
            + (f"; output so far: {output[-1000:]}" if output else "")
        )


class HostUnreachable(RunnerError):
    """The host could not be reached (refused, timed out, no route, dropped)."""


class ConnectionLost(HostUnreachable):
    """The connection dropped while a command ran: it may or may not have run."""


class HostKeyMismatch(RunnerError):
    """The host presented a key that is not the one in known_hosts: never trusted."""


class AuthenticationRefused(RunnerError):
    """The host refused our credentials."""


class Runner(Protocol):
    """Runs commands and moves files on one site."""

    host: str

    def run(
        self, argv: Sequence[str], *, timeout_s: float | None = None, stdin: str | None = None
    ) -> CommandResult: ...

    def read_file(self, path: str) -> bytes: ...

    def write_file(self, path: str, data: bytes) -> None:
        """Write atomically: a temporary file beside ``path``, then rename."""

    def exists(self, path: str) -> bool: ...

    def close(self) -> None: ...


@dataclass
class LocalRunner:
    """Runs commands with subprocess, in a site's own environment and directory."""

    host: str = "localhost"
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    default_timeout_s: float = 60.0

    def _path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() or self.cwd is None else Path(self.cwd) / p

    def run(
        self, argv: Sequence[str], *, timeout_s: float | None = None, stdin: str | None = None
    ) -> CommandResult:
        timeout = timeout_s or self.default_timeout_s
        env = {**os.environ, **self.env}
        start = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv), cwd=self.cwd, env=env, input=stdin.encode() if stdin is not None else None,
                capture_output=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeout(self.host, argv, timeout, _text(exc.stdout)) from None
        except FileNotFoundError as exc:
            return CommandResult(self.host, tuple(argv), 127, "", str(exc), time.monotonic() - start)
        return CommandResult(
            self.host, tuple(argv), proc.returncode, _text(proc.stdout), _text(proc.stderr),
            time.monotonic() - start,
        )

    def read_file(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def write_file(self, path: str, data: bytes) -> None:
        target = self._path(path)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        if target.exists():  # keep the file's mode, as the SSH runner does
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def close(self) -> None:
        pass


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
