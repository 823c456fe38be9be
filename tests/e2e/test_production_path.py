"""The production path, end to end, on loopback: a real ``prefect server`` on
PostgreSQL, behind a credential with CSRF protection on (the environment
setup writes: credential, CSRF, retention), one process worker
per data-centre pool, the deployments and automations applied by
``deployments.setup``, the simulated pair with each site behind its own sshd,
a real SMTP server and an SMS-gateway stand-in.

The test only starts parts, injects faults, answers as an operator would
(REST, the UI) and reads the API. Everything else is the server's scheduler,
its automations, the workers and the watcher.

The scenario runs in order (each step is a module fixture, so a test run on
its own brings up what it needs): setup starts a watcher -> MS crashes -> the
watcher fails over in its own process -> MS comes back -> `antelope-ha
fallback` starts the fallback and follows it; it pauses for approval ->
requests without the credential are refused; a bad answer, a name not listed,
a wrong site are refused by the form (REJECT) and by `antelope-ha approve`
(never sent), a wrong code by the flow, a second procedure is refused -> a
listed operator approves in the UI (after its login) with their code; the
same one at the second gate is refused, another approves with `antelope-ha
approve` -> MS is authoritative again, every attempt audited,
the hold-down acknowledged by them -> the watcher's process is killed and
replaced -> the BUS worker is killed: the dead-man's switch mails and texts
people, a new watcher starts when the worker is back -> the Prefect server is
stopped while MS fails: the watcher probes on, acts on nothing it could not
record, and fails over once the server is back.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pyotp
import pytest
import yaml

from antelope_ha.approvers import code_at, new_secret
from antelope_ha.config import PairPolicy
from antelope_ha.names import SITES, PairNames
from simsite.pair import SimPair
from tests.servers import Api, HttpReceiver, PrefectServer, SmtpReceiver, Worker, basic_auth, process_tree, wait_for
from tests.test_secrets import server_texts

pytestmark = pytest.mark.slow

PAIR = "e2e"
NAMES = PairNames(PAIR)
POLICY = PairPolicy(failures_before_failover=2, probe_interval_s=1, probe_timeout_s=1, hold_down_s=3600,
                    lastid_margin=1000, lastid_max_age_s=600, approval_timeout_s=240, approval_poll_s=1)
SCHEDULES = {"replicate_lastid_s": 5, "heartbeat_s": 5, "watcher_silent_s": 25}
SMS_TOKEN = "sms-token-for-the-test"
CHROMIUM = "/usr/bin/chromium"
CREDENTIAL = f"e2e-{new_secret()}"  # the server's API credential, new for each run
# grace and heidi's secrets come from the environment; ivan is enrolled by setup --enroll
SECRETS = {"grace": new_secret(), "heidi": new_secret()}


@dataclass
class Stack:
    server: PrefectServer
    api: Api
    pair: SimPair
    smtp: SmtpReceiver
    sms: HttpReceiver
    workers: list[Worker]
    config_path: Path
    started_at: float
    secrets: dict[str, str]  # every operator's TOTP secret, as their app holds it
    server_env: Path  # what setup --server-env wrote

    def state(self) -> dict:
        return self.api.block("antelope-pair-state", NAMES.state_block)["data"]["state"]

    def authority(self) -> str | None:
        try:
            return self.state()["authority"]["site"]
        except Exception:  # no state record yet
            return None

    def runs(self, flow: str, deployment: str, states: list[str] | None = None) -> list[dict]:
        return self.api.flow_runs(self.api.deployment_id(flow, deployment), states)

    def watching(self, other_than: str | None = None, timeout_s: float = 120) -> str:
        """The watch run holding the lease, once it has probed (a heartbeat after its first cycle)."""
        def found() -> str | None:
            try:
                lease = self.state().get("watcher")
            except Exception:  # no record yet
                return None
            if not lease or lease["run"] == other_than:
                return None
            return lease["run"] if any(b["payload"]["run"] == lease["run"] and b["payload"]["cycles"] >= 1
                                       for b in self.heartbeats()) else None
        return wait_for("a watcher watching", found, timeout_s)

    def heartbeats(self) -> list[dict]:
        """The pair's newest watcher heartbeat events (one page)."""
        return self.api.request("POST", "/events/filter", json={"filter": {
            "event": {"name": ["antelope-ha.watcher.heartbeat"]}, "resource": {"id": [NAMES.resource_id]},
            "occurred": {"since": "2020-01-01T00:00:00Z"}}, "limit": 50})["events"]

    def ran(self) -> list[dict]:
        """Every flow run that started (not the ones scheduled ahead)."""
        return [r for r in self.api.request("POST", "/flow_runs/filter", json={"limit": 200})
                if r["start_time"] is not None]

    def flow_name(self, run: dict) -> str:
        return self.api.request("GET", f"/flows/{run['flow_id']}")["name"]

    def final_run(self, run_id: str, timeout_s: float) -> dict:
        return wait_for(f"flow run {run_id} final", lambda: (r := self.api.flow_run(run_id))["state"]["type"]
                        in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and r, timeout_s)

    def paused(self, run_id: str, timeout_s: float = 90, key: str | None = None) -> dict:
        """The run once paused (under pause ``key``, when given)."""
        def found() -> dict | None:
            run = self.api.flow_run(run_id)
            keys = run["state"]["state_details"].get("run_input_keyset") or {}
            return run if run["state"]["type"] == "PAUSED" and (
                key is None or keys.get("response") == f"paused-{key}-response") else None
        return wait_for(f"flow run {run_id} paused" + (f" at {key}" if key else ""), found, timeout_s)

    def description(self, run_id: str, key: str) -> str:
        """The form's text at pause ``key`` (stored just after the pause)."""
        return wait_for(f"the description of {key}", lambda: self.api.input_or_none(
            run_id, f"paused-{key}-description"), 30)

    def answer(self, name: str, code_of: str | None = None, **fields: str) -> dict:
        """An answer as ``name`` with the current code of ``code_of`` (theirs by default)."""
        return {"operator": name, "code": code_at(self.secrets[code_of or name], time.time()),
                "decision": "approve", "reason": "MS repaired, data flowing", "confirm_site": "ms", **fields}

    def timeline(self, since: float) -> str:
        """Every flow run since ``since``: when due, started, ended (seconds from ``since``), and its state."""
        def rel(stamp: str | None) -> str:
            return f"{datetime.fromisoformat(stamp).timestamp() - since:7.1f}" if stamp else "      -"

        runs = self.api.request("POST", "/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC", "limit": 200})
        return "\n".join(f"{rel(r['expected_start_time'])} {rel(r['start_time'])} {rel(r['end_time'])} "
                         f"{r['state']['type']:10} {r['name']} {r['parameters'].get('reason', '')[:60]}"
                         for r in runs if r["start_time"] and (r["end_time"] is None or rel(r["end_time"]) > "      0"))

    def diagnostics(self) -> str:
        return "\n".join([f"--- server\n{self.server.log_tail(2000)}",
                          *(f"--- worker {w.pool}\n{w.log_tail(3000)}" for w in self.workers)])


def write_config(path: Path, pair: SimPair, server: PrefectServer, smtp: SmtpReceiver, sms: HttpReceiver) -> None:
    """The operator's configuration file, as docs/operating.md describes it."""
    cfg = pair.pair_config(POLICY)
    config = {
        "pair": PAIR,
        "main": cfg.main.model_dump(mode="json", exclude_none=True),
        "backup": cfg.backup.model_dump(mode="json", exclude_none=True),
        "witness": cfg.witness.model_dump(mode="json"),
        "policy": POLICY.model_dump(mode="json"),
        "schedules": SCHEDULES,
        "notify": {
            "ui_url": server.url,
            "email": {"smtp_server": "127.0.0.1", "smtp_port": smtp.port, "smtp_type": "STARTTLS",
                      "username": smtp.username, "password_env": "E2E_SMTP_PASSWORD", "verify": True,
                      "from": "antelope-ha@example.org", "to": ["oncall@example.org"]},
            "webhooks": [{"name": "e2e-sms", "kind": "custom-webhook", "url": f"{sms.url}/sms/send",
                          "headers": {"Authorization": "Bearer {{token}}"},
                          "json_data": {"to": "+10000000000", "text": "{{subject}}\n{{body}}"},
                          "secrets_env": {"token": "E2E_SMS_TOKEN"}}],
        },
        "operators": [{"name": name, "contact": f"{name}@example.org", "totp_secret_env": f"E2E_TOTP_{name.upper()}"}
                      for name in SECRETS] + [{"name": "ivan", "contact": "+10000000001",
                                               "totp_secret_block": f"{PAIR}-totp-ivan"}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from deployments.setup import load_config, server_credential, server_differences, server_environment, setup
    from deployments.setup import main as setup_main

    tmp = tmp_path_factory.mktemp("e2e")
    server = PrefectServer(home=tmp / "prefect-home", credential=CREDENTIAL)
    smtp, sms = SmtpReceiver(tmp / "smtp"), HttpReceiver()
    pair = SimPair.create(tmp / "pair")
    # every part started is stopped, in reverse order, even when stopping another fails
    with pytest.MonkeyPatch.context() as env, ExitStack() as started:
        started_at = time.time()
        for part in (smtp, sms):
            started.callback(part.stop)
            part.start()
        started.callback(pair.stop)
        pair.serve_ssh()
        pair.start()
        env.setenv("PREFECT_API_URL", server.api_url)  # setup's `prefect deploy` child reads it
        env.setenv("PREFECT_API_AUTH_STRING", CREDENTIAL)
        env.setenv("E2E_SMTP_PASSWORD", smtp.password)
        env.setenv("E2E_SMS_TOKEN", SMS_TOKEN)
        for name, secret in SECRETS.items():
            env.setenv(f"E2E_TOTP_{name.upper()}", secret)
        config_path = tmp / "antelope-ha.yaml"
        write_config(config_path, pair, server, smtp, sms)
        # the server as docs/operating.md runs it: the environment setup writes (its credential, CSRF
        # protection, the retention); it sends the watcher-silent alert itself, so it trusts the SMTP
        # server's test CA as hosts trust a relay's
        with temporary_settings(updates={PREFECT_API_AUTH_STRING: CREDENTIAL}):
            server.extra_env = {**server_environment(load_config(config_path)), **server_credential(),
                                "SSL_CERT_FILE": str(smtp.ca_path)}
        started.callback(server.stop)
        server.start()
        print(f"e2e: prefect server healthy after {time.time() - started_at:.1f} s")
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: CREDENTIAL}):
            secrets = dict(SECRETS)
            enrolled = enroll_printing(setup_main, config_path, "ivan")
            secrets["ivan"] = pyotp.parse_uri(enrolled).secret
            t0 = time.time()
            server_env = tmp / "server-setup.env"
            setup(config_path, server_env=server_env)
            assert server_differences(load_config(config_path)) == [], \
                "the server does not run as configured"
            print(f"e2e: setup (blocks, pools, deployments, automations, a watcher) took {time.time() - t0:.1f} s")
        # the workers trust the SMTP server's test CA too
        workers = [Worker(server, pool, tmp / f"worker-{pool}.log", {"SSL_CERT_FILE": str(smtp.ca_path)})
                   for pool in (NAMES.pool(site) for site in SITES)]
        for w in workers:
            started.callback(w.stop)
            w.start()
        api = Api(server.api_url, CREDENTIAL)
        started.callback(api.close)
        yield Stack(server, api, pair, smtp, sms, workers, config_path, started_at, secrets, server_env)


def enroll_printing(setup_main, config_path: Path, name: str) -> str:
    """``setup CONFIG --enroll NAME`` as an operator runs it: the provisioning URI it prints."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert setup_main([str(config_path), "--enroll", name]) == 0
    uri = next(line for line in printed.getvalue().splitlines() if line.startswith("otpauth://"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as again:
        assert setup_main([str(config_path), "--enroll", name]) == 2  # shown once: no second enrolment
    assert "already enrolled" in again.getvalue()
    return uri


@dataclass
class Failover:
    crashed_at: float
    run: dict
    watcher: str


@pytest.fixture(scope="module")
def failed_over(stack: Stack) -> Failover:
    """The watcher setup started watches MS and copies its lastid; MS is powered
    off; returns once BUS is authoritative."""
    try:
        watcher = stack.watching()
        wait_for("lastid copied to BUS", lambda: (stack.pair.paths("bus").dir / "ha" / "replica").exists(), 60)
        crashed_at = time.time()
        print(f"e2e: MS powered off {crashed_at - stack.started_at:.1f} s after the stack started")
        stack.pair.power_off("ms")
        wait_for("BUS authoritative", lambda: stack.authority() == "bus", 120)
        print(f"e2e: BUS authoritative {time.time() - crashed_at:.1f} s after MS's power-off")
        print(stack.timeline(crashed_at))
        return Failover(crashed_at, stack.final_run(stack.state()["authority"]["flow_run"], 120), watcher)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{stack.diagnostics()}")


@dataclass
class PausedFallback:
    run_id: str
    run_name: str
    follower: subprocess.Popen  # `antelope-ha fallback`, following the run
    followed: Path  # what it printed


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """`antelope-ha ARGS` as an operator runs it on a host with the server's address and credential."""
    return subprocess.run([sys.executable, "-m", "deployments.cli", *args], env=stack.server.env(),
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def paused_fallback(stack: Stack, failed_over: Failover) -> Iterator[PausedFallback]:
    """MS repaired and powered on (rtexec not started); fallback started by hand with
    `antelope-ha fallback`, which follows the run; at its first gate."""
    stack.pair.power_on("ms", start_rtexec=False)
    wait_for("no failover run under way (as an operator checks before a fallback)", lambda: not stack.runs(
        "failover", PAIR, ["SCHEDULED", "PENDING", "RUNNING", "PAUSED"]), 120)
    followed = stack.config_path.parent / "fallback-followed.txt"
    with followed.open("w") as sink:
        follower = subprocess.Popen([sys.executable, "-m", "deployments.cli", "fallback", "--by", "grace", "--reason",
                                     "MS repaired", "--pair", PAIR], env=stack.server.env(), stdout=sink,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        started = wait_for("the fallback started", lambda: re.search(
            r"fallback of pair e2e started: run (\S+) \(([0-9a-f-]{36})\)", followed.read_text()), 60)
        stack.paused(started[2], 120)
    except TimeoutError as exc:
        follower.kill()
        pytest.fail(f"{exc}: {followed.read_text()}\n{stack.diagnostics()}")
    yield PausedFallback(started[2], started[1], follower, followed)
    if follower.poll() is None:
        follower.kill()


# --- 1. the watcher fails over itself, no person, no new process ---------------------------------
def test_the_watcher_fails_over_in_its_own_run_without_a_person(stack: Stack, failed_over: Failover) -> None:
    run = failed_over.run
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert "failed 2/2 consecutive probes" in run["parameters"]["reason"], run["parameters"]
    assert run["parameters"]["pair_name"] == PAIR
    started = [a for a in stack.api.artifacts(run["id"]) if a["key"] == "failover-started"]
    assert "failover of pair e2e started by **automation**" in started[0]["data"], started
    state = stack.state()
    assert state["authority"]["site"] == "bus" and state["authority"]["epoch"] == 2, state["authority"]
    # a subflow of the watch run: started in the watcher's process, not by an automation nor a person
    parent = stack.api.request("GET", f"/task_runs/{run['parent_task_run_id']}")
    assert parent["flow_run_id"] == failed_over.watcher
    assert stack.flow_name(stack.api.flow_run(failed_over.watcher)) == "watch"


def test_watching_makes_no_flow_run_per_probe(stack: Stack, failed_over: Failover) -> None:
    """One watch run did every probe and the replication: no health or replicate runs."""
    names = sorted(stack.flow_name(r) for r in stack.ran())
    assert names.count("watch") <= 2 and names.count("failover") == 1, names
    assert not {"health", "replicate-lastid"} & set(names), names


# --- 3. notifications, by email and SMS gateway --------------------------------------------
def test_failover_is_notified_by_email_and_sms_with_site_decision_and_link(
        stack: Stack, failed_over: Failover) -> None:
    link = f"{stack.server.url}/runs/flow-run/{failed_over.run['id']}"
    mail = wait_for("failover-done email", lambda: [t for t in stack.smtp.texts() if "FAILOVER to bus done" in t], 30)
    assert link in mail[0] and "pair: e2e" in mail[0], mail[0]
    assert stack.smtp.messages[0]["X-Envelope-To"] == "oncall@example.org"
    sms = wait_for("failover-done SMS", lambda: [r for r in stack.sms.requests
                                                 if "FAILOVER to bus done" in r["json"]["text"]], 30)
    assert sms[0]["path"] == "/sms/send"
    assert sms[0]["headers"]["Authorization"] == f"Bearer {SMS_TOKEN}"
    assert sms[0]["json"]["to"] == "+10000000000" and link in sms[0]["json"]["text"]
    starting = wait_for("failover-starting email", lambda: [t for t in stack.smtp.texts()
                                                            if "FAILOVER to bus starting" in t], 30)
    assert "failed 2/2 consecutive probes" in starting[0], stack.smtp.texts()


# --- 2. approval: invalid answers refused, the run stays paused ---------------------------------
@pytest.mark.parametrize("answer, why", [
    ({"code": "000000", "decision": "approve", "reason": "MS repaired", "confirm_site": "ms"}, "operator"),
    ({"operator": "grace", "code": "000000", "decision": "maybe", "reason": "MS repaired", "confirm_site": "ms"},
     "maybe"),
    ({"operator": "grace", "code": "12345", "decision": "approve", "reason": "MS repaired", "confirm_site": "ms"},
     "code"),
])
def test_invalid_approval_is_refused_and_the_run_stays_paused(
        stack: Stack, paused_fallback: PausedFallback, answer: dict, why: str) -> None:
    result = stack.api.resume(paused_fallback.run_id, answer)
    assert result["status"] == "REJECT", result
    assert why in str(result["details"]), result
    assert stack.api.flow_run(paused_fallback.run_id)["state"]["type"] == "PAUSED"


def test_approval_request_is_notified(stack: Stack, paused_fallback: PausedFallback) -> None:
    link = f"{stack.server.url}/runs/flow-run/{paused_fallback.run_id}"
    mail = wait_for("approval-needed email", lambda: [t for t in stack.smtp.texts()
                                                      if "APPROVAL NEEDED on ms" in t and link in t], 30)
    assert "confirm_site" in mail[0] and "one-time code" in mail[0]


# --- 2b. who may act: the credential ------------------------------------------------------------
def test_requests_without_the_credential_are_refused(stack: Stack, paused_fallback: PausedFallback) -> None:
    api, run_id = stack.server.api_url, paused_fallback.run_id
    resume = {"run_input": stack.answer("grace")}
    for headers in ({}, basic_auth("not-the-credential")):
        assert httpx.get(f"{api}/flow_runs/{run_id}", headers=headers).status_code == 401
        # a change is refused for want of a CSRF token (403) before the credential is looked at (401)
        assert httpx.post(f"{api}/flow_runs/{run_id}/resume", json=resume, headers=headers).status_code in (401, 403)
        token = httpx.get(f"{api}/csrf-token", params={"client": "intruder"}, headers=headers)
        assert token.status_code == 401, token.text  # and no token without the credential
    # with the credential but no CSRF token, a change is refused too
    refused = httpx.post(f"{api}/flow_runs/{run_id}/resume", json=resume, headers=basic_auth(CREDENTIAL))
    assert refused.status_code == 403 and "CSRF" in refused.text, refused.text
    # Prefect's own client without the credential: the CLI an intruder would use
    env = {k: v for k, v in stack.server.env().items() if k != "PREFECT_API_AUTH_STRING"}
    listed = subprocess.run([sys.executable, "-m", "prefect", "deployment", "ls"], env=env, capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert listed.returncode != 0 and "401" in listed.stdout + listed.stderr, listed.stdout + listed.stderr
    status = subprocess.run([sys.executable, "-m", "deployments.cli", "status", "--pair", PAIR], env=env,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert status.returncode == 3 and "refused the request (401 Unauthorized): PREFECT_API_AUTH_STRING" in \
        status.stdout, status.stdout + status.stderr[-2000:]
    setup = subprocess.run([sys.executable, "-m", "deployments.setup", str(stack.config_path), "--no-deploy",
                            "--no-site-tool"], env=env, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    assert setup.returncode == 2 and "refuses this client's credential" in setup.stderr, setup.stderr[-2000:]
    assert stack.paused(run_id, key="fallback-1")  # nothing reached the run


@pytest.mark.parametrize("name, wrong, why", [
    ("mallory", {}, "'mallory' does not match '^(grace|heidi|ivan)$'"),
    ("grace", {"confirm_site": "bus"}, "'bus' does not match '^ms$'"),
])
def test_a_name_not_listed_or_a_wrong_site_is_refused_by_the_form_and_the_run_stays_paused(
        stack: Stack, paused_fallback: PausedFallback, name: str, wrong: dict, why: str) -> None:
    run_id = paused_fallback.run_id
    stack.paused(run_id, key="fallback-1")
    result = stack.api.resume(run_id, {**stack.answer(name, code_of="grace"), **wrong})
    assert result["status"] == "REJECT" and why in str(result["details"]), result
    assert stack.paused(run_id, key="fallback-1")  # not asked again: the answer never reached the run


def test_the_approve_command_refuses_a_wrong_answer_with_the_reason_and_sends_nothing(
        stack: Stack, paused_fallback: PausedFallback) -> None:
    run_id = paused_fallback.run_id
    for args, why in ((["--by", "grace", "--site", "bus"], "--site bus is not the site this gate acts on (ms)"),
                      (["--by", "mallory"], "'mallory' is not a listed operator (listed: grace, heidi, ivan)")):
        refused = cli(stack, "approve", run_id, "--code", code_at(stack.secrets["grace"], time.time()),
                      "--reason", "MS repaired", *args)
        assert refused.returncode == 2 and why in " ".join(refused.stdout.split()), refused.stdout + refused.stderr
    assert stack.paused(run_id, key="fallback-1")
    assert "WAITING FOR APPROVAL at fallback-1" in paused_fallback.followed.read_text()
    assert f"antelope-ha approve {run_id} --by NAME" in paused_fallback.followed.read_text()


# --- 4. one procedure at a time -------------------------------------------------------------
def test_failover_started_while_fallback_waits_is_refused_naming_it(
        stack: Stack, paused_fallback: PausedFallback) -> None:
    run = stack.api.run_deployment("failover", PAIR, {"pair_name": PAIR, "reason": "e2e: second procedure"})
    final = stack.final_run(run["id"], 90)
    assert final["state"]["type"] == "FAILED", final["state"]
    assert (f"refused: failover cannot start while fallback run {paused_fallback.run_name} "
            f"({paused_fallback.run_id}) is in progress") in final["state"]["message"], final["state"]
    assert stack.authority() == "bus"
    assert stack.api.flow_run(paused_fallback.run_id)["state"]["type"] == "PAUSED"
    wait_for("the refusal notified", lambda: [t for t in stack.smtp.texts()
                                              if "failover FAILED" in t and paused_fallback.run_id in t], 30)


# --- 2. approval in the UI (gate 1), with the approve command (gate 2) ----------------------------
def approve_in_ui(base_url: str, run_id: str, answer: dict[str, str], screenshots: Path,
                  refused_with: str | None = None) -> None:
    """What an operator does: log in with the credential (the UI asks first),
    open the run's link, Resume, fill the form, Submit.

    The link is the one the notifications carry; it opens the default UI's
    run page, whose Resume form is generated from the Approval input.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        trouble: list[str] = []
        page.on("console", lambda m: m.type == "error" and trouble.append(f"console: {m.text}"))
        page.on("requestfailed", lambda r: trouble.append(f"failed: {r.method} {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and trouble.append(
            f"{r.status}: {r.request.method} {r.url} {r.request.post_data} -> {r.text()}"))
        try:
            page.goto(f"{base_url}/runs")
            page.wait_for_url("**/login?redirect=/runs")  # the UI asks for the credential before anything else
            page.screenshot(path=str(screenshots / "login.png"))
            page.locator("input[type=password]").fill(CREDENTIAL)
            page.get_by_role("button", name="Login").click()
            page.wait_for_url("**/runs")
            trouble.clear()  # the UI's calls before the login were refused, as they should be
            page.goto(f"{base_url}/runs/flow-run/{run_id}")
            page.get_by_role("button", name="Resume").first.click()
            form = page.locator(".p-modal")
            form.wait_for()
            fields = form.locator("textarea")  # operator, code, reason, confirm_site, in the model's order
            fields.nth(0).fill(answer["operator"])
            fields.nth(1).fill(answer["code"])
            fields.nth(2).fill(answer["reason"])
            fields.nth(3).fill(answer["confirm_site"])
            form.locator(".p-select-button__control").press("ArrowDown")  # opens the decision list
            page.get_by_role("option", name=answer["decision"], exact=True).click()
            page.screenshot(path=str(screenshots / "resume-form.png"))
            form.get_by_role("button", name="Submit").click()
            if refused_with is not None:  # the server's refusal, shown by the UI
                page.get_by_text(refused_with, exact=False).first.wait_for()
                page.screenshot(path=str(screenshots / "refused.png"))
                return
            form.wait_for(state="hidden")
        except Exception as exc:
            page.screenshot(path=str(screenshots / "failed.png"))
            raise AssertionError("the UI did not take the answer:\n" + "\n".join(trouble)) from exc
        finally:
            browser.close()


def needs_the_ui() -> None:
    if not (shutil.which(CHROMIUM) and _has_playwright()):
        pytest.fail("the UI test needs Debian's chromium and pip's playwright: run `make test` (it installs them)")


def test_a_wrong_site_typed_in_the_ui_is_refused_by_the_form_and_the_run_stays_paused(
        stack: Stack, paused_fallback: PausedFallback, tmp_path: Path) -> None:
    needs_the_ui()
    run_id = paused_fallback.run_id
    stack.paused(run_id, key="fallback-1")
    approve_in_ui(stack.server.url, run_id, stack.answer("grace", confirm_site="bus"), tmp_path,
                  refused_with="does not match")
    assert stack.paused(run_id, key="fallback-1")  # the answer never reached the run


def test_a_wrong_code_given_in_the_ui_is_refused_in_the_form_and_the_run_stays_paused(
        stack: Stack, paused_fallback: PausedFallback, tmp_path: Path) -> None:
    needs_the_ui()
    run_id = paused_fallback.run_id
    stack.paused(run_id, key="fallback-1")
    approve_in_ui(stack.server.url, run_id, stack.answer("grace", code_of="heidi"), tmp_path)
    stack.paused(run_id, key="fallback-1-again-1")
    form = stack.description(run_id, "fallback-1-again-1")
    assert "Refused: the code given for grace is not their current one-time code" in form, form
    wait_for("the refusal notified", lambda: [t for t in stack.smtp.texts()
                                              if "APPROVAL REFUSED on ms" in t and "grace" in t], 30)


def test_operator_approves_the_first_gate_in_the_ui_with_their_code(
        stack: Stack, paused_fallback: PausedFallback, tmp_path: Path) -> None:
    needs_the_ui()
    run_id = paused_fallback.run_id
    stack.paused(run_id, key="fallback-1-again-1")
    approve_in_ui(stack.server.url, run_id, stack.answer("grace"), tmp_path)
    answer = stack.api.request("GET", f"/flow_runs/{run_id}/input/paused-fallback-1-again-1-response")
    assert answer["operator"] == "grace" and answer["decision"] == "approve", answer
    stack.paused(run_id, 120, key="fallback-2")
    form = stack.description(run_id, "fallback-2")
    assert "start dbids on ms" in form and "grace answered the earlier gate" in form, form


def test_the_same_operator_at_the_second_gate_is_refused_with_that_reason(
        stack: Stack, paused_fallback: PausedFallback) -> None:
    run_id = paused_fallback.run_id
    stack.paused(run_id, 120, key="fallback-2")
    result = stack.api.resume(run_id, stack.answer("grace"))
    assert result["status"] == "REJECT" and "'grace' should not be valid" in str(result["details"]), result
    refused = cli(stack, "approve", paused_fallback.run_name, "--by", "grace", "--code",
                  code_at(stack.secrets["grace"], time.time()), "--reason", "MS repaired")
    assert refused.returncode == 2 and "grace answered the earlier gate: this gate needs a second listed operator" \
        in " ".join(refused.stdout.split()), refused.stdout + refused.stderr
    assert stack.paused(run_id, key="fallback-2")
    assert stack.state()["authority"]["site"] == "bus"


def test_second_gate_by_another_operator_with_the_approve_command_completes_the_fallback(
        stack: Stack, paused_fallback: PausedFallback) -> None:
    run_id = paused_fallback.run_id
    stack.paused(run_id, key="fallback-2")
    answered = cli(stack, "approve", run_id, "--by", "heidi", "--code", code_at(stack.secrets["heidi"], time.time()),
                   "--reason", "ids consistent")
    assert answered.returncode == 0 and "the run took the answer" in answered.stdout, answered.stdout + answered.stderr
    final = stack.final_run(run_id, 120)
    assert final["state"]["type"] == "COMPLETED", f"{final['state']}\n{stack.diagnostics()}"
    # the command that started the fallback followed it to its end: each step, the gates, exit 0
    assert paused_fallback.follower.wait(60) == 0, paused_fallback.followed.read_text()
    followed = paused_fallback.followed.read_text()
    assert f"run: {stack.server.url}/runs/flow-run/{run_id}" in followed, followed
    assert "WAITING FOR APPROVAL at fallback-2" in followed and "Completed" in followed, followed
    assert re.search(r"start dbids on ms.*: Completed", followed), followed
    assert stack.authority() == "ms"
    wait_for("fallback-done SMS", lambda: [r for r in stack.sms.requests
                                           if "FALLBACK to ms done" in r["json"]["text"]], 30)
    wait_for("approved email", lambda: [t for t in stack.smtp.texts() if "APPROVED on ms" in t and "heidi" in t], 30)


def test_the_audit_lists_every_attempt_with_its_operator(stack: Stack, paused_fallback: PausedFallback) -> None:
    stack.final_run(paused_fallback.run_id, 120)
    approvals = [a for a in stack.api.artifacts(paused_fallback.run_id) if a["key"] == "fallback-approvals"]
    rows = [line.split(" | ")[1:3] for line in approvals[0]["data"].splitlines()[2:]]
    assert rows == [["refused: wrong code", "grace"], ["approved", "grace"], ["approved", "heidi"]], rows
    events = stack.api.request("POST", "/events/filter", json={"filter": {
        "event": {"prefix": ["antelope-ha.approval."]}, "resource": {"id": [f"antelope-ha.pair.{PAIR}"]},
        "occurred": {"since": "2020-01-01T00:00:00Z"}}, "limit": 50})["events"]
    seen = sorted((e["event"], e["payload"]["operator"]) for e in events)
    started = [a for a in stack.api.artifacts(paused_fallback.run_id) if a["key"] == "fallback-started"]
    assert "fallback of pair e2e started by **grace**" in started[0]["data"], started
    assert seen == sorted([("antelope-ha.approval.refused", "grace"), ("antelope-ha.approval.approved", "grace"),
                           ("antelope-ha.approval.approved", "heidi")]), seen


@pytest.fixture(scope="module")
def fallen_back(stack: Stack, paused_fallback: PausedFallback) -> None:
    """The fallback the approval tests drive has completed: MS authoritative, a watcher watching."""
    final = stack.final_run(paused_fallback.run_id, 300)
    if final["state"]["type"] != "COMPLETED":
        pytest.fail(f"the fallback did not complete: {final['state']}\n{stack.diagnostics()}")
    stack.watching()


def test_the_fallback_acknowledges_the_hold_down_with_its_approvers(stack: Stack, fallen_back: None) -> None:
    acknowledged = stack.state()["acknowledged"]
    assert acknowledged["by"] == "grace and heidi" and "fallback to ms completed" in acknowledged["reason"]
    mail = wait_for("fallback-done email", lambda: [t for t in stack.smtp.texts() if "FALLBACK to ms done" in t], 30)
    assert "acknowledged by grace and heidi: automatic failover to bus is enabled again" in mail[0]


# --- 5. a watcher that dies is replaced; a silent one is told ------------------------------------
def watch_run_process(stack: Stack, run_id: str) -> int:
    """The process the BUS worker started for the watch run ``run_id``."""
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for pid in process_tree(stack.workers[0].proc.pid):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
        except OSError:
            continue
    raise AssertionError(f"no process of watch run {run_id} below the BUS worker")


def test_a_crashed_watcher_is_replaced_within_seconds(stack: Stack, fallen_back: None) -> None:
    old = stack.watching()
    os.kill(watch_run_process(stack, old), signal.SIGKILL)
    killed_at = time.time()
    new = stack.watching(other_than=old)
    print(f"e2e: watcher killed; a new one watching {time.time() - killed_at:.1f} s later")
    assert stack.api.flow_run(old)["state"]["type"] == "CRASHED"
    assert (stack.api.flow_run(new)["created_by"] or {}).get("type") == "AUTOMATION"


def test_a_dead_worker_is_told_and_a_new_watcher_starts_when_it_is_back(stack: Stack, fallen_back: None) -> None:
    old = stack.watching()
    worker = stack.workers[0]
    silent = "WATCHER SILENT at bus"
    alerts = lambda: [t for t in stack.smtp.texts() if silent in t]  # noqa: E731
    texts = lambda: [r for r in stack.sms.requests if silent in r["json"]["text"]]  # noqa: E731
    before, texts_before = len(alerts()), len(texts())  # a replacement slower than the silence alerts too
    worker.kill()  # the BUS worker's host is lost: the worker and its flow runs, nothing handed over
    killed_at = time.time()
    mail = wait_for("the watcher-silent email", lambda: alerts()[before:], SCHEDULES["watcher_silent_s"] + 60)[0]
    print(f"e2e: the dead-man's alert {time.time() - killed_at:.1f} s after the BUS worker was killed")
    assert f"No heartbeat from the health watcher of pair {PAIR}" in mail and NAMES.pool("bus") in mail
    assert wait_for("the watcher-silent SMS", lambda: texts()[texts_before:], 30)
    assert stack.api.flow_run(old)["state"]["type"] == "RUNNING"  # nobody left to say otherwise
    worker.start()  # as systemd restarts it
    new = stack.watching(other_than=old)
    print(f"e2e: a new watcher watching {time.time() - killed_at:.1f} s after the BUS worker was killed")
    assert wait_for("the dead watcher's run given its end", lambda: (s := stack.api.flow_run(old)["state"])["type"]
                    == "CRASHED" and s["name"] == "Replaced" and s, 90)
    assert len(alerts()) == before + 1  # once per silence
    assert stack.state()["watcher"]["run"] == new


# --- 6. the Prefect server restarted while the watcher runs -----------------------------------
def sessions(stack: Stack, site: str) -> int:
    """Commands run on the site over SSH so far (sshd logs each session)."""
    return stack.pair.sshd_log(site).count("Starting session: command")


def test_with_the_server_down_the_watcher_probes_on_acts_on_nothing_unrecorded_and_records_once_back(
        stack: Stack, fallen_back: None) -> None:
    stack.watching()
    epoch = stack.state()["authority"]["epoch"]
    marker = stack.pair.paths("bus").dir / "ha" / "authority"
    before = marker.read_text()
    # the pair's lock, held across the restart by a procedure in flight
    lease = stack.api.request("POST", "/v2/concurrency_limits/increment-with-lease", json={
        "names": [PairNames(PAIR).procedure_limit], "slots": 1, "mode": "concurrency", "lease_duration": 60})
    stack.server.stop_server()  # the server only: its PostgreSQL keeps running
    down_at, probes_before = time.time(), sessions(stack, "bus")
    stack.pair.power_off("ms")
    time.sleep(8 * POLICY.failures_before_failover * POLICY.probe_interval_s)
    probed = sessions(stack, "bus") - probes_before
    # it went on probing (MS's ID server from BUS, the witness) and decided to fail over ...
    assert probed >= 2 * POLICY.failures_before_failover, probed
    # ... but did not act on a decision it could not record
    assert not stack.pair.task_pids("bus", "dbids") and marker.read_text() == before
    stack.server.start()
    up_at = time.time()
    # The lease outlived the restart (kept on disk, as setup's server environment says): the procedure
    # renews it, then lets go. Kept in the server's memory, it would be gone, its slot taken for good,
    # and the failover below refused.
    stack.api.request("POST", f"/v2/concurrency_limits/leases/{lease['lease_id']}/renew", json={"lease_duration": 60})
    stack.api.request("POST", "/v2/concurrency_limits/decrement-with-lease", json={"lease_id": lease["lease_id"]})
    print(f"e2e: server down {up_at - down_at:.1f} s; BUS probed {probed} times meanwhile")
    wait_for("BUS authoritative once the server is back", lambda: stack.authority() == "bus", 120)
    state = stack.state()
    assert state["authority"]["epoch"] == epoch + 1  # automatic: the fallback acknowledged the hold-down
    started = stack.api.flow_run(state["authority"]["flow_run"])["start_time"]
    assert datetime.fromisoformat(started).timestamp() >= up_at, (started, up_at)  # acted only once recorded
    print(f"e2e: BUS authoritative {time.time() - up_at:.1f} s after the server was back")


def test_neither_the_credential_nor_a_totp_secret_shows_anywhere(stack: Stack, fallen_back: None) -> None:
    """Not in what the server holds (runs and their parameters, inputs, task
    runs, logs, artifacts, variables, blocks as the UI shows them), not in the
    logs of the server and the workers, not in a message sent; only in the
    server's environment file, which only its owner reads."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.server.api_url, PREFECT_API_AUTH_STRING: CREDENTIAL}):
        texts = list(server_texts())
    texts += [("server log", stack.server.log_tail(10**9)), *((f"worker {w.pool} log", w.log_tail(10**9))
                                                             for w in stack.workers),
              *(("mail", t) for t in stack.smtp.texts()), *(("sms", str(r)) for r in stack.sms.requests)]
    secrets = [CREDENTIAL, *stack.secrets.values()]
    leaks = [what for what, text in texts if any(secret in text for secret in secrets)]
    assert len(texts) > 100 and not leaks, leaks
    assert f"PREFECT_SERVER_API_AUTH_STRING='{CREDENTIAL}'" in stack.server_env.read_text()
    assert stack.server_env.stat().st_mode & 0o777 == 0o600


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True
