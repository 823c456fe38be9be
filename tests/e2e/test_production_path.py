"""The production path, end to end, on loopback: a real ``prefect server``,
one process worker per data-centre pool, the deployments applied from
prefect.yaml by ``deployments.setup``, the simulated pair with each site
behind its own sshd, a real SMTP server and an SMS-gateway stand-in.

The test only starts parts, injects faults, answers as an operator would
(REST, the UI) and reads the API. Everything else is the server's scheduler,
its trigger and the workers.

The scenario runs in order (each step is a module fixture, so a test run on
its own brings up what it needs): MS crashes -> scheduled health detects it ->
the trigger fails over -> MS comes back -> fallback pauses for approval ->
a bad answer is refused, a second procedure is refused -> an operator
approves in the UI, another over REST -> MS is authoritative again.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from antelope_ha.config import PairPolicy
from simsite.pair import SimPair
from tests.servers import Api, HttpReceiver, PrefectServer, SmtpReceiver, Worker, wait_for

pytestmark = pytest.mark.slow

PAIR = "e2e"
POLICY = PairPolicy(failures_before_failover=2, probe_interval_s=2, probe_timeout_s=1, hold_down_s=3600,
                    lastid_margin=1000, lastid_max_age_s=600, approval_timeout_s=240, approval_poll_s=1)
SMS_TOKEN = "sms-token-for-the-test"
CHROMIUM = "/usr/bin/chromium"


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

    def state(self) -> dict:
        return self.api.block("antelope-pair-state", f"{PAIR}-state")["data"]["state"]

    def authority(self) -> str | None:
        try:
            return self.state()["authority"]["site"]
        except Exception:  # no state record yet
            return None

    def runs(self, flow: str, deployment: str, states: list[str] | None = None) -> list[dict]:
        return self.api.flow_runs(self.api.deployment_id(flow, deployment), states)

    def final_run(self, run_id: str, timeout_s: float) -> dict:
        return wait_for(f"flow run {run_id} final", lambda: (r := self.api.flow_run(run_id))["state"]["type"]
                        in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and r, timeout_s)

    def paused(self, run_id: str, timeout_s: float = 90) -> dict:
        return wait_for(f"flow run {run_id} paused", lambda: (r := self.api.flow_run(run_id))["state"]["type"]
                        == "PAUSED" and r, timeout_s)

    def timeline(self, since: float) -> str:
        """Every flow run since ``since``: when due, started, ended (seconds from ``since``), and its state."""
        from datetime import datetime

        def rel(stamp: str | None) -> str:
            return f"{datetime.fromisoformat(stamp).timestamp() - since:7.1f}" if stamp else "      -"

        runs = self.api.request("POST", "/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC", "limit": 200})
        return "\n".join(f"{rel(r['expected_start_time'])} {rel(r['start_time'])} {rel(r['end_time'])} "
                         f"{r['state']['type']:10} {r['name']} {r['parameters'].get('reason', '')[:60]}"
                         for r in runs if r["end_time"] is None or rel(r["end_time"]) > "      0")

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
        "schedules": {"replicate_lastid_s": 5},
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
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.setup import setup

    tmp = tmp_path_factory.mktemp("e2e")
    server = PrefectServer(home=tmp / "prefect-home")
    smtp, sms = SmtpReceiver(tmp / "smtp"), HttpReceiver()
    pair = SimPair.create(tmp / "pair")
    # every part started is stopped, in reverse order, even when stopping another fails
    with pytest.MonkeyPatch.context() as env, ExitStack() as started:
        started_at = time.time()
        started.callback(server.stop)
        server.start()
        print(f"e2e: prefect server healthy after {time.time() - started_at:.1f} s")
        for part in (smtp, sms):
            started.callback(part.stop)
            part.start()
        started.callback(pair.stop)
        pair.serve_ssh()
        pair.start()
        env.setenv("PREFECT_API_URL", server.api_url)  # setup's `prefect deploy` child reads it
        env.setenv("E2E_SMTP_PASSWORD", smtp.password)
        env.setenv("E2E_SMS_TOKEN", SMS_TOKEN)
        config_path = tmp / "antelope-ha.yaml"
        write_config(config_path, pair, server, smtp, sms)
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            t0 = time.time()
            setup(config_path)
            print(f"e2e: setup (blocks, pools, deployments) took {time.time() - t0:.1f} s")
        # the workers trust the SMTP server's test CA, as hosts trust a real relay's
        workers = [Worker(server, pool, tmp / f"worker-{pool}.log", {"SSL_CERT_FILE": str(smtp.ca_path)})
                   for pool in ("antelope-ha-bus", "antelope-ha-ms")]
        for w in workers:
            started.callback(w.stop)
            w.start()
        api = Api(server.api_url)
        started.callback(api.close)
        yield Stack(server, api, pair, smtp, sms, workers, config_path, started_at)


@dataclass
class Failover:
    crashed_at: float
    run: dict


@pytest.fixture(scope="module")
def failed_over(stack: Stack) -> Failover:
    """MS healthy and replicated, then powered off; returns once BUS is authoritative."""
    try:
        wait_for("lastid replicated to BUS at least once",
                 lambda: (stack.state() if stack.authority() else {}).get("replica"), 120)
        wait_for("a scheduled health run completed with MS healthy",
                 lambda: stack.runs("health", "health", ["COMPLETED"]), 60)
        crashed_at = time.time()
        print(f"e2e: MS powered off {crashed_at - stack.started_at:.1f} s after the stack started")
        stack.pair.power_off("ms")
        wait_for("BUS authoritative", lambda: stack.authority() == "bus", 150)
        print(f"e2e: BUS authoritative {time.time() - crashed_at:.1f} s after MS's crash")
        print(stack.timeline(crashed_at))
        runs = wait_for("the failover run", lambda: stack.runs("failover", "failover"), 30)
        return Failover(crashed_at, stack.final_run(runs[-1]["id"], 120))
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{stack.diagnostics()}")


@dataclass
class PausedFallback:
    run_id: str
    run_name: str


@pytest.fixture(scope="module")
def paused_fallback(stack: Stack, failed_over: Failover) -> PausedFallback:
    """MS repaired and powered on (rtexec not started); fallback started by hand, at its first gate."""
    stack.pair.power_on("ms", start_rtexec=False)
    wait_for("no failover run under way (as an operator checks before a fallback)", lambda: not stack.runs(
        "failover", "failover", ["SCHEDULED", "PENDING", "RUNNING", "PAUSED"]), 120)
    run = stack.api.run_deployment("fallback", "fallback", {"pair_name": PAIR})
    try:
        stack.paused(run["id"], 120)
    except TimeoutError as exc:
        pytest.fail(f"{exc}: {stack.api.flow_run(run['id'])['state']}\n{stack.diagnostics()}")
    return PausedFallback(run["id"], run["name"])


# --- 1. scheduled health -> event -> trigger -> failover, no person ------------------------------
def test_scheduled_health_fails_over_to_bus_without_a_person(stack: Stack, failed_over: Failover) -> None:
    run = failed_over.run
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert "failed 2/2 consecutive probes" in run["parameters"]["reason"], run["parameters"]
    assert run["parameters"]["pair_name"] == PAIR
    state = stack.state()
    assert state["authority"]["site"] == "bus" and state["authority"]["epoch"] == 2, state["authority"]
    assert state["authority"]["flow_run"] == run["id"]
    # the failover deployment's trigger, an automation, created the run: not a person, not the test
    assert (run["created_by"] or {}).get("type") == "AUTOMATION", run["created_by"]


def test_health_runs_never_overlap(stack: Stack, failed_over: Failover) -> None:
    """K consecutive failures are counted across runs in the state record: runs must take turns."""
    runs = stack.runs("health", "health")
    ran = sorted((r for r in runs if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")),
                 key=lambda r: r["start_time"])
    assert len(ran) >= 3, [r["state"]["type"] for r in runs]
    for earlier, later in zip(ran, ran[1:]):
        assert earlier["end_time"] <= later["start_time"], [
            (r["name"], r["state"]["type"], r["start_time"], r["end_time"]) for r in (earlier, later)]


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
    starting = [t for t in stack.smtp.texts() if "FAILOVER to bus starting" in t]
    assert starting and "failed 2/2 consecutive probes" in starting[0], stack.smtp.texts()


# --- 2. approval: invalid answers refused, the run stays paused ---------------------------------
@pytest.mark.parametrize("answer, why", [
    ({"decision": "approve", "reason": "MS repaired", "confirm_site": "ms"}, "operator"),
    ({"operator": "grace", "decision": "maybe", "reason": "MS repaired", "confirm_site": "ms"}, "maybe"),
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
    assert "confirm_site" in mail[0]


# --- 4. one procedure at a time -------------------------------------------------------------
def test_failover_started_while_fallback_waits_is_refused_naming_it(
        stack: Stack, paused_fallback: PausedFallback) -> None:
    run = stack.api.run_deployment("failover", "failover", {"pair_name": PAIR, "reason": "e2e: second procedure"})
    final = stack.final_run(run["id"], 90)
    assert final["state"]["type"] == "FAILED", final["state"]
    assert (f"refused: failover cannot start while fallback run {paused_fallback.run_name} "
            f"({paused_fallback.run_id}) is in progress") in final["state"]["message"], final["state"]
    assert stack.authority() == "bus"
    assert stack.api.flow_run(paused_fallback.run_id)["state"]["type"] == "PAUSED"
    wait_for("the refusal notified", lambda: [t for t in stack.smtp.texts()
                                              if "failover FAILED" in t and paused_fallback.run_id in t], 30)


# --- 2. approval in the UI (gate 1), over REST (gate 2) ----------------------------------------
def approve_in_ui(base_url: str, run_id: str, answer: dict[str, str], screenshots: Path) -> None:
    """What an operator does: open the run's link, Resume, fill the form, Submit.

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
            page.goto(f"{base_url}/runs/flow-run/{run_id}")
            page.get_by_role("button", name="Resume").first.click()
            form = page.locator(".p-modal")
            form.wait_for()
            fields = form.locator("textarea")  # operator, reason, confirm_site, in the model's order
            fields.nth(0).fill(answer["operator"])
            fields.nth(1).fill(answer["reason"])
            fields.nth(2).fill(answer["confirm_site"])
            form.locator(".p-select-button__control").press("ArrowDown")  # opens the decision list
            page.get_by_role("option", name=answer["decision"], exact=True).click()
            page.screenshot(path=str(screenshots / "resume-form.png"))
            form.get_by_role("button", name="Submit").click()
            form.wait_for(state="hidden")
        except Exception as exc:
            page.screenshot(path=str(screenshots / "failed.png"))
            raise AssertionError("the UI did not take the answer:\n" + "\n".join(trouble)) from exc
        finally:
            browser.close()


def test_operator_approves_the_first_gate_in_the_ui(
        stack: Stack, paused_fallback: PausedFallback, tmp_path: Path) -> None:
    if not (shutil.which(CHROMIUM) and _has_playwright()):
        pytest.fail("the UI test needs Debian's chromium and pip's playwright: run `make test` (it installs them)")
    first_key = stack.api.flow_run(paused_fallback.run_id)["state"]["state_details"]["run_input_keyset"]
    approve_in_ui(stack.server.url, paused_fallback.run_id,
                  {"operator": "grace (ui)", "decision": "approve", "reason": "MS repaired, data flowing",
                   "confirm_site": "ms"}, tmp_path)
    answer = stack.api.request("GET", f"/flow_runs/{paused_fallback.run_id}/input/{first_key['response']}")
    assert answer["operator"] == "grace (ui)" and answer["decision"] == "approve", answer
    second = wait_for("the second gate", lambda: (r := stack.api.flow_run(paused_fallback.run_id))["state"]["type"]
                      == "PAUSED" and r["state"]["state_details"]["run_input_keyset"] != first_key and r, 120)
    assert "start dbids on ms" in stack.api.request(
        "GET", f"/flow_runs/{paused_fallback.run_id}/input/{second['state']['state_details']['run_input_keyset']['description']}")


def test_second_gate_over_rest_completes_the_fallback(stack: Stack, paused_fallback: PausedFallback) -> None:
    run = stack.paused(paused_fallback.run_id)
    assert "paused-2" in run["state"]["state_details"]["run_input_keyset"]["response"], "first gate not passed"
    result = stack.api.resume(paused_fallback.run_id, {"operator": "heidi", "decision": "approve",
                                                      "reason": "ids consistent", "confirm_site": "ms"})
    assert result["status"] == "ACCEPT", result
    final = stack.final_run(paused_fallback.run_id, 120)
    assert final["state"]["type"] == "COMPLETED", f"{final['state']}\n{stack.diagnostics()}"
    assert stack.authority() == "ms"
    approvals = [a for a in stack.api.artifacts(paused_fallback.run_id) if a["key"] == "fallback-approvals"]
    assert "grace (ui)" in approvals[0]["data"] and "heidi" in approvals[0]["data"], approvals
    wait_for("fallback-done SMS", lambda: [r for r in stack.sms.requests
                                           if "FALLBACK to ms done" in r["json"]["text"]], 30)
    wait_for("approved email", lambda: [t for t in stack.smtp.texts() if "APPROVED on ms" in t and "heidi" in t], 30)


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True
