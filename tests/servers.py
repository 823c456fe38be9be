"""The real parts the tests start on loopback: a Prefect server on its own
PostgreSQL cluster, process workers, an SMTP server (STARTTLS + login, certificate from a test CA)
and an HTTP receiver standing in for an SMS gateway.

Each is a context manager that owns its process or thread and stops it.
"""
from __future__ import annotations

import base64
import contextlib
import email
import json
import os
import select
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from simsite.ports import listen_port

PROJECT_DIR = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]


def wait_for(what: str, condition: Callable[[], Any], timeout_s: float, poll_s: float = 0.5) -> Any:
    """Poll until ``condition()`` is truthy and return it; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(poll_s)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo += children.get(current, [])
    return tree


def _signal_all(pidfds: list[int], sig: int) -> None:
    for fd in pidfds:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, sig)


def _stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- PostgreSQL ----------------------------------------------------------------------
@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster on loopback, the database a real Prefect server uses.

    On SQLite the server answers 503 whenever a write finds the database
    locked. Prefect's client retries, the UI does not: an approval submitted
    in the browser then fails with "Something went wrong". docs/operating.md
    tells operators to use PostgreSQL; so do these tests.
    """

    port: int = field(default_factory=listen_port)
    user: str = "prefect"
    database: str = "prefect"
    keep_in: Path | None = None  # a cluster kept there between starts; else a throwaway one
    directory: Path | None = None  # while it runs

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> None:
        # PostgreSQL refuses to run as root: then the cluster belongs to Debian's postgres user,
        # in a directory of its own (pytest's are closed to other users).
        if self.keep_in is None:
            self.directory = Path(tempfile.mkdtemp(prefix="antelope-ha-e2e-pg-"))
        else:
            self.directory = self.keep_in
            self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        data = self.directory / "data"
        new = not (data / "PG_VERSION").exists()
        if new:
            self._run("initdb", "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.directory / "server.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        if new:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database)

    def stop(self) -> None:
        if self.directory is None:
            return
        if (self.directory / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")
        if self.keep_in is None:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def query(self, sql: str) -> str:
        """One SQL statement's result, unaligned (psql -At)."""
        return self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", self.database,
                         "-Atc", sql).strip()

    def _run(self, program: str, *args: str) -> str:
        argv = [str(_postgres_bindir() / program), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if done.returncode != 0:
            log = self.directory / "server.log" if self.directory else None
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
                               + (log.read_text(errors="replace")[-2000:] if log and log.exists() else ""))
        return done.stdout


def _postgres_bindir() -> Path:
    """Debian keeps the server programs under /usr/lib/postgresql/<major>/bin, off PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `make test` and `make nemesis` install Debian's "
                           "postgresql (or run the nemesis with --prefect embedded)")
    return found[-1].parent


# --- Prefect ------------------------------------------------------------------------
@dataclass
class PrefectServer:
    """``prefect server start`` with its own home on a free port, on a PostgreSQL
    cluster of its own (started first, stopped last)."""

    home: Path
    port: int = field(default_factory=listen_port)
    database: PostgresServer = field(default_factory=PostgresServer)
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. its retention settings, a CA to trust
    proc: subprocess.Popen | None = None
    # the credential its clients present; the server asks for it when extra_env holds
    # PREFECT_SERVER_API_AUTH_STRING (as setup --server-env writes it)
    credential: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def env(self) -> dict[str, str]:
        """Environment for any process that talks to this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(self.home), PREFECT_API_URL=self.api_url,
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore")
        if self.credential:
            env["PREFECT_API_AUTH_STRING"] = self.credential
        return env

    def start(self, timeout_s: float = 90.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.database.directory is None:
            self.database.start()
        from deployments.setup import DURABLE_LEASES

        # The UI must call this server's API, not the default port 4200; its leases on disk, as deployed.
        env = {**self.env(), "PREFECT_UI_API_URL": self.api_url,
               "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.database.url, **DURABLE_LEASES, **self.extra_env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.home)

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(f"prefect server on port {self.port} healthy (log {self.log_path})", healthy, timeout_s)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        self.stop_server()
        self.database.stop()

    def stop_server(self) -> None:
        """Stop ``prefect server`` only, its database left running (``start`` starts it again)."""
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def __enter__(self) -> PrefectServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Worker:
    """``prefect worker start --pool POOL``: runs that pool's flow runs as subprocesses."""

    server: PrefectServer
    pool: str
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        from deployments.setup import WORKER_ENV

        env = {**self.server.env(), **WORKER_ENV, "ANTELOPE_HA_HOME": str(PROJECT_DIR), **self.extra_env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*PREFECT, "worker", "start", "--pool", self.pool, "--type", "process"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_DIR)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """As its systemd unit stops it (deployments/systemd/antelope-ha-worker@.service):
        SIGTERM to the flow-run processes first, each then records that it crashed (a
        run under way, a watcher's, outlives its worker otherwise); then the worker;
        SIGKILL to whatever is left."""
        if self.proc is None:
            return
        runs = []  # pidfds: a pid reused meanwhile is not signalled
        for pid in process_tree(self.proc.pid)[1:]:
            with contextlib.suppress(ProcessLookupError):
                runs.append(os.pidfd_open(pid))
        _signal_all(runs, signal.SIGTERM)
        deadline, pending = time.monotonic() + 20, runs
        while pending and (left := deadline - time.monotonic()) > 0:
            ended, _, _ = select.select(pending, [], [], left)  # a pidfd is readable once its process ended
            pending = [fd for fd in pending if fd not in ended]
        _stop(self.proc)
        self.proc = None
        _signal_all(runs, signal.SIGKILL)
        for fd in runs:
            os.close(fd)

    def kill(self) -> list[int]:
        """The worker's host lost: SIGKILL to the worker and every process it
        started (its flow runs), nothing handed over. Returns the pids killed."""
        assert self.proc is not None, "worker not started"
        pids = process_tree(self.proc.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None
        return pids


def basic_auth(credential: str) -> dict[str, str]:
    """The header Prefect's clients send its server: HTTP basic with the credential alone."""
    return {"Authorization": "Basic " + base64.b64encode(credential.encode()).decode()}


class Api:
    """The server's REST API as an operator's script would use it: plain HTTP
    with the credential (HTTP basic) and, for changes, a CSRF token; retrying
    the 503s database contention gives."""

    def __init__(self, api_url: str, credential: str | None = None):
        self.http = httpx.Client(base_url=api_url, timeout=30, headers=basic_auth(credential) if credential else {})
        self.csrf: dict[str, str] = {}

    def csrf_headers(self) -> dict[str, str]:
        """Prefect's CSRF token for this client, asked for once (it lasts an hour)."""
        if not self.csrf:
            client = str(uuid.uuid4())
            response = self.http.get("/csrf-token", params={"client": client})
            if response.status_code == 422 and "CSRF protection is disabled" in response.text:
                self.csrf = {"Prefect-Csrf-Client": client}
            else:
                response.raise_for_status()
                self.csrf = {"Prefect-Csrf-Token": response.json()["token"], "Prefect-Csrf-Client": client}
        return self.csrf

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if method not in ("GET", "HEAD"):
            kwargs["headers"] = {**self.csrf_headers(), **kwargs.get("headers", {})}
        for attempt in range(8):
            response = self.http.request(method, path, **kwargs)
            if response.status_code != 503:
                break
            time.sleep(0.5 * (attempt + 1))
        response.raise_for_status()
        return response.json() if response.content else None

    def deployment_id(self, flow: str, deployment: str) -> str:
        return self.request("GET", f"/deployments/name/{flow}/{deployment}")["id"]

    def run_deployment(self, flow: str, deployment: str, parameters: dict | None = None) -> dict:
        return self.request("POST", f"/deployments/{self.deployment_id(flow, deployment)}/create_flow_run",
                            json={"parameters": parameters or {}})

    def flow_run(self, run_id: str) -> dict:
        return self.request("GET", f"/flow_runs/{run_id}")

    def flow_runs(self, deployment_id: str, states: list[str] | None = None) -> list[dict]:
        flow_runs: dict[str, Any] = {"deployment_id": {"any_": [deployment_id]}}
        if states:
            flow_runs["state"] = {"type": {"any_": states}}
        return self.request("POST", "/flow_runs/filter", json={"flow_runs": flow_runs, "sort": "START_TIME_DESC"})

    def input_or_none(self, run_id: str, key: str) -> Any:
        """A flow run input, or None while it is not stored (yet)."""
        try:
            return self.request("GET", f"/flow_runs/{run_id}/input/{key}")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise

    def resume(self, run_id: str, run_input: dict) -> dict:
        return self.request("POST", f"/flow_runs/{run_id}/resume", json={"run_input": run_input})

    def block(self, block_type: str, name: str) -> dict:
        return self.request("GET", f"/block_types/slug/{block_type}/block_documents/name/{name}",
                            params={"include_secrets": "false"})

    def artifacts(self, flow_run_id: str) -> list[dict]:
        return self.request("POST", "/artifacts/filter",
                            json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})

    def close(self) -> None:
        self.http.close()


# --- notification receivers -------------------------------------------------------------
@dataclass
class SmtpReceiver:
    """aiosmtpd on loopback. By default it requires STARTTLS and a login, as a
    real relay does; ``tls="ssl"`` speaks TLS from the first byte (SMTPS),
    ``tls="none"`` never; ``login=False`` is a relay without login, which
    refuses (and counts) every login attempt."""

    directory: Path
    username: str = "antelope-ha"
    password: str = "not-a-real-password"
    tls: str = "starttls"
    login: bool = True
    messages: list[Message] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    port: int = field(default_factory=listen_port)
    ca_path: Path | None = None
    _controller: Any = None

    def start(self) -> None:
        import trustme
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ca = trustme.CA()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_path = self.directory / "smtp-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        received = self.messages

        class Sink:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content)
                message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
                received.append(message)
                return "250 OK"

        def login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            self.logins.append(mechanism)
            ok = (self.login and isinstance(data, LoginPassword) and data.login == self.username.encode()
                  and data.password == self.password.encode())
            return AuthResult(success=ok, handled=False)  # handled=False: a refusal gets its 535 reply

        # With SMTPS the whole connection is TLS, which aiosmtpd's own check cannot see.
        options: dict[str, Any] = {"authenticator": login, "auth_required": self.login,
                                   "auth_require_tls": self.tls == "starttls"}
        if self.tls == "starttls":
            options.update(tls_context=context, require_starttls=True)
        elif self.tls == "ssl":
            options.update(ssl_context=context)
        self._controller = Controller(Sink(), hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()

    def texts(self) -> list[str]:
        """Subject and plain-text body of each message received."""
        out = []
        for m in self.messages:
            plain = next((p.get_payload(decode=True).decode() for p in m.walk()
                          if p.get_content_type() == "text/plain"), "")
            out.append(f"{m['Subject']}\n{plain}")
        return out

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@dataclass
class HttpReceiver:
    """A stand-in SMS gateway: records every request's path, headers and JSON body."""

    requests: list[dict] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                received.append({"path": self.path, "headers": dict(self.headers), "json": body})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"queued": true}')

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

