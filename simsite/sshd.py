"""A real OpenSSH ``sshd`` on loopback, with its own keys, for a simulated site.

Tests, the drill and the benchmarks log in to a simulated site exactly as the
flows log in to a production host: over SSH, with a strict known_hosts file.
``start_sshd`` generates an ed25519 host key and a client key, writes a private
``sshd_config`` (the system configuration is never read) and runs
``/usr/sbin/sshd -D -e`` as a child process, so the caller owns it and must stop
it (``SshdHandle`` is a context manager; ``stop_all`` runs at interpreter exit).
Started with ``stop_at_exit=False`` it outlives its starter instead; any
process can take it over later with ``SshdHandle.attach(directory)`` (its
settings are in ``handle.json``, its pid in ``sshd.pid``): that is how the
``python -m simsite`` commands power a served site off and on.

Logins are as the current user. As root this needs ``/run/sshd`` (created
here). ``HOME`` is set to a directory of the site (``SetEnv``) so that the
user's own shell start-up files, e.g. root's ``.bashrc``, are not read: they can
cost tens of milliseconds per command and are no part of the site.

Fault injection for the flows' tests: ``drop_connections`` drops every open
connection (a crash under running commands), ``pause``/``resume`` freeze the
site (TCP still connects, SSH never answers), ``stop``/``start`` power it off
(killing all it started) and on again with the same port and host key.
"""
from __future__ import annotations

import atexit
import dataclasses
import getpass
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simsite.ports import listen_port
from simsite.procs import cmdline, is_running, read_pid, wait_gone

SSHD = "/usr/sbin/sshd"  # absolute: sshd re-executes itself by this path
_running: set[SshdHandle] = set()


@dataclass(eq=False)
class SshdHandle:
    """A running (or stopped) sshd and everything a client needs to log in."""

    host: str
    port: int
    username: str
    directory: Path
    home: Path
    client_key_path: Path
    host_key_path: Path
    extra_config: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def known_hosts_path(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def pid_path(self) -> Path:
        return self.directory / "sshd.pid"

    @property
    def handle_path(self) -> Path:
        return self.directory / "handle.json"

    @classmethod
    def attach(cls, directory: str | os.PathLike[str]) -> SshdHandle:
        """The handle of an sshd set up in ``directory`` by any process, running or not."""
        fields = json.loads((Path(directory) / "handle.json").read_text())
        paths = {"directory", "home", "client_key_path", "host_key_path"}
        return cls(**{k: Path(v) if k in paths else tuple(v) if k == "extra_config" else v
                      for k, v in fields.items()})

    def pid(self) -> int | None:
        """The running listener: this process's child, or the one its pid file names."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        pid = read_pid(self.pid_path)
        # sshd rewrites its command line ("sshd: /usr/sbin/sshd -D -e -f CONFIG [listener] ...")
        if pid is not None and is_running(pid) and str(self.config_path) in " ".join(cmdline(pid)):
            return pid
        return None

    @property
    def host_public_key(self) -> str:
        """``<type> <base64>`` of the host key, as in a known_hosts line."""
        return " ".join(self.host_key_path.with_suffix(".pub").read_text().split()[:2])

    def runner_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``antelope_ha.ssh.SSHRunner`` to log in here."""
        return {
            "host": self.host, "port": self.port, "username": self.username,
            "key_filename": str(self.client_key_path),
            "known_hosts": str(self.known_hosts_path),
        }

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def accepted_logins(self) -> int:
        """How many logins sshd accepted so far (one per SSH connection)."""
        return self.log_text().count("Accepted publickey for ")

    def start(self, ready_timeout_s: float = 10.0, *, stop_at_exit: bool = True) -> None:
        """Start sshd (again) with this configuration; return once it listens.
        Without ``stop_at_exit`` it runs on, in a session of its own, after this process ends."""
        if self.pid() is not None:
            return
        if not Path(SSHD).exists():
            raise RuntimeError(f"{SSHD} not found: install openssh-server (`make sysdeps`)")
        _write_config(self)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=not stop_at_exit,
            )
        if stop_at_exit:
            _running.add(self)
        ready = f"Server listening on {self.host} port {self.port}.".encode()
        deadline = time.monotonic() + ready_timeout_s
        while ready not in (log := self.log_path.read_bytes()[log_offset:]):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = log[-2000:].decode(errors="replace")
                self.stop()
                raise RuntimeError(
                    f"sshd on {self.host}:{self.port} did not start (config {self.config_path}):"
                    f"\n{tail}"
                )
            time.sleep(0.005)

    def stop(self) -> None:
        """Power the site off: kill the listener and all it started. Idempotent."""
        pid = self.pid()
        if pid is not None:
            for child in self._site_processes(detached=True):
                _signal(child, signal.SIGKILL)
            _signal(pid, signal.SIGCONT)  # a paused sshd cannot act on SIGTERM
            _signal(pid, signal.SIGTERM)
            if self.proc is not None and self.proc.pid == pid:
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            elif wait_gone([pid], 5.0):
                _signal(pid, signal.SIGKILL)
                wait_gone([pid], 5.0)
        self.proc = None
        _running.discard(self)

    def drop_connections(self) -> None:
        """SIGKILL every process below the listener: open connections drop mid-way.

        Processes that already outlived their connection keep running.
        """
        for pid in self._site_processes(detached=False):
            _signal(pid, signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the site: the kernel still accepts TCP, but SSH never answers."""
        self._signal_tree(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_tree(signal.SIGCONT)

    def _signal_tree(self, sig: signal.Signals) -> None:
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"sshd on {self.host}:{self.port} is not running")
        for target in [pid, *self._site_processes(detached=True)]:
            _signal(target, sig)

    def _site_processes(self, detached: bool) -> list[int]:
        """Every process below the listener, collected before any is signalled.

        With ``detached``, also those started through it that outlived their
        connection (sshd does not kill a command when its channel closes
        without a tty) and were re-parented to init: every login gets the
        ``SIMSITE_SSHD`` variable, which finds them.
        """
        listener = self.pid()
        if listener is None:
            return []
        marker = f"SIMSITE_SSHD={self.config_path}".encode()
        children: dict[int, list[int]] = {}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:  # the process ended while we looked
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
            if detached and marker in environ:
                found.append(int(entry.name))
        todo = [listener]
        while todo:
            kids = children.get(todo.pop(), [])
            found += kids
            todo += kids
        return sorted(set(found) - {listener})

    def __enter__(self) -> SshdHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sshd(
    directory: str | os.PathLike[str],
    port: int | None = None,
    host: str = "127.0.0.1",
    *,
    home: str | os.PathLike[str] | None = None,
    client_key_path: str | os.PathLike[str] | None = None,
    extra_config: Sequence[str] = (),
    ready_timeout_s: float = 10.0,
    stop_at_exit: bool = True,
) -> SshdHandle:
    """Start an sshd on ``host`` (any 127.x.y.z works on Linux) and a free port.

    ``directory`` holds keys, config, log and known_hosts: one per sshd. A
    ``client_key_path`` lets several sites accept the same client key; by
    default one is generated. ``home`` (default ``directory/home``) becomes the
    login's ``HOME``. ``extra_config`` lines are appended to sshd_config.
    ``stop_at_exit``: see ``SshdHandle.start``.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    host_key = _keygen(directory / "host_ed25519", "simsite-host")
    client_key = (
        Path(client_key_path).resolve() if client_key_path
        else _keygen(directory / "client_ed25519", "simsite-client")
    )
    home_dir = Path(home).resolve() if home else directory / "home"
    home_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        handle = SshdHandle(
            host=host, port=port or listen_port(host), username=getpass.getuser(),
            directory=directory, home=home_dir, client_key_path=client_key,
            host_key_path=host_key, extra_config=tuple(extra_config),
        )
        try:
            handle.start(ready_timeout_s, stop_at_exit=stop_at_exit)
            return handle
        except RuntimeError as exc:
            # A free port can be taken by someone else before sshd binds it.
            if port is not None or "Address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def stop_all() -> None:
    """Stop every sshd this process started and has not stopped yet."""
    for handle in list(_running):
        handle.stop()


atexit.register(stop_all)


# The options docs/operating.md (section 2) gives the workers' keys on the
# Antelope hosts: only from where the workers are (here: loopback), no terminal,
# no forwarding. Every test and the drill log in under them, so nothing the
# flows do may need a terminal or a forwarding (sshd(8), AUTHORIZED_KEYS FILE FORMAT).
KEY_OPTIONS = 'from="127.0.0.0/8",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding'


def _write_config(handle: SshdHandle) -> None:
    d = handle.directory
    (d / "authorized_keys").write_text(f"{KEY_OPTIONS} {handle.client_key_path.with_suffix('.pub').read_text()}")
    name = handle.host if handle.port == 22 else f"[{handle.host}]:{handle.port}"
    handle.known_hosts_path.write_text(f"{name} {handle.host_public_key}\n")
    lines = [
        f"Port {handle.port}",
        f"ListenAddress {handle.host}",
        f"HostKey {handle.host_key_path}",
        f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}",
        f"AllowUsers {handle.username}",
        # One SetEnv line: sshd uses only the first.
        f'SetEnv "HOME={handle.home}" "SIMSITE_SSHD={handle.config_path}"',
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        *handle.extra_config,
    ]
    handle.config_path.write_text("\n".join(lines) + "\n")
    settings = {f.name: getattr(handle, f.name) for f in dataclasses.fields(handle) if f.name != "proc"}
    handle.handle_path.write_text(json.dumps(settings, default=str, indent=2) + "\n")


def _keygen(path: Path, comment: str) -> Path:
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True, capture_output=True,
        )
    return path


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
