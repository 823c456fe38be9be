"""What the operators' command does on a Prefect server beyond the state
record: start a procedure's deployment and follow its run, answer the gate a
run waits at, send a test notification.

Answers are judged before they are sent, as the flow would judge them
(antelope_ha/approvers.py, and the gate's form: tasks/approval.py): a wrong
answer is refused here with the reason and never reaches the run.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import TaskRunSort
from prefect.utilities.schema_tools import ValidationError, validate

from antelope_ha.approvers import Refused, judge
from antelope_ha.names import PairNames

Say = Callable[[str], None]

# The run's final state as the command's exit code.
EXIT_CODES = {StateType.COMPLETED: 0, StateType.FAILED: 1}
EXIT_OTHER = 2  # crashed, cancelled
EXIT_REFUSED = 2  # an answer refused before it was sent, or by the server


class Refusal(Exception):
    """An answer, or a request, that is not sent: the message says why and what to do."""


def api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def embedded_refusal() -> str:
    return ("PREFECT_API_URL is not set: this command would talk to an embedded Prefect of its own, not to the "
            "server the workers and the watcher use, and change nothing there. Set it as the workers have it, "
            "e.g. export PREFECT_API_URL=http://prefect-host:4200/api with PREFECT_API_AUTH_STRING from "
            "/etc/antelope-ha/api-auth.env (docs/operating.md, section 1), or give --embedded to use embedded "
            "Prefect on purpose (a simulated pair, a test).")


def find_run(client: SyncPrefectClient, ref: str) -> FlowRun:
    """A flow run by its id, or by its name (as the UI and the notifications show it)."""
    try:
        return client.read_flow_run(UUID(ref))
    except ValueError:
        pass
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[ref])), limit=2)
    if len(runs) != 1:
        raise Refusal(f"no flow run named {ref!r}" if not runs else f"more than one flow run is named {ref!r}: "
                      "give its id")
    return runs[0]


def run_link(client: SyncPrefectClient, run_id: UUID) -> str:
    """The run's page, under the UI of the server ``client`` talks to when no UI address is set."""
    from prefect.settings import PREFECT_UI_URL

    from tasks.notify import run_url

    return run_url(str(run_id), PREFECT_UI_URL.value() or str(client.api_url).removesuffix("/").removesuffix("/api"))


# --- answering a gate ------------------------------------------------------------------------
@dataclass(frozen=True)
class Waiting:
    """The gate a run waits at: its pause key, form (JSON schema) and text."""

    run: FlowRun
    key: str
    schema: dict
    description: str

    @property
    def gate(self) -> dict:
        from tasks.approval import GATE_KEY

        return self.schema.get(GATE_KEY) or {}


def waiting(client: SyncPrefectClient, run: FlowRun) -> Waiting | None:
    state = run.state
    keyset = state.state_details.run_input_keyset if state and state.is_paused() else None
    if not keyset:
        return None
    schema = json.loads(client.read_flow_run_input(run.id, keyset["schema"]) or "{}")
    description = client.read_flow_run_input(run.id, keyset["description"]) or ""
    return Waiting(run, state.state_details.pause_key or "", schema, json.loads(description) if description else "")


def judged_answer(gate: Waiting, by: str, code: str, reason: str, decision: str, site: str | None,
                  roster: dict[str, str], used: dict[str, int], now: float) -> dict[str, str]:
    """The answer to send, or Refusal naming what the flow would refuse."""
    facts = gate.gate
    if not facts:
        raise Refusal(f"run {gate.run.name} waits at {gate.key!r}, which is not an antelope-ha approval gate")
    verdict = judge(by, code, roster, used, now, facts.get("after") if decision == "approve" else None)
    if isinstance(verdict, Refused):
        raise Refusal(f"{verdict.reason} ({verdict.kind})")
    site = facts["site"] if site is None else site.strip()
    if site != facts["site"]:
        raise Refusal(f"--site {site} is not the site this gate acts on ({facts['site']})")
    answer = {"operator": by.strip(), "code": code.strip(), "decision": decision, "reason": reason,
              "confirm_site": site}
    try:
        validate(answer, gate.schema, raise_on_error=True)
    except ValidationError as exc:
        raise Refusal(str(exc)) from None
    return answer


def approve(ref: str, by: str, code: str, reason: str, decision: str, site: str | None, say: Say,
            settle_s: float | None = None) -> int:
    """Answer the gate run ``ref`` waits at; 0 when the run took the answer,
    2 (with the reason) when it was refused, here, by the server or by the flow."""
    from tasks.approval import operator_secrets
    from tasks.pair import load_pair
    from tasks.state import load_state

    with get_client(sync_client=True) as client:
        run = find_run(client, ref)
        gate = waiting(client, run)
        if gate is None:
            raise Refusal(f"run {run.name} ({run.id}) is not waiting for an approval: it is "
                          f"{run.state.name if run.state else 'without a state'}")
        pair_name = str(run.parameters.get("pair_name", "default"))
        pair, _ = load_pair(pair_name)
        state = load_state(pair_name)
        answer = judged_answer(gate, by, code, reason, decision, site, operator_secrets(pair.operators),
                               state.codes_used, time.time())
        result = client.resume_flow_run(run.id, run_input=answer)
        if result.status.value != "ACCEPT":
            raise Refusal(f"the server refused the answer: {getattr(result.details, 'reason', result.details)}")
        say(f"{decision} by {answer['operator']} sent to run {run.name} at {gate.key} ({gate.gate['site']})")
        return settled(client, run.id, gate.key, say, settle_s or 3 * pair.policy.approval_poll_s + 30)


def settled(client: SyncPrefectClient, run_id: UUID, key: str, say: Say, within_s: float) -> int:
    """Wait until the run has taken the answer given at ``key``: it runs on, ends, or waits at
    the next gate (0); or it asks again at this gate, refused (2, with the flow's reason)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        now_waiting = waiting(client, run)
        if now_waiting is None or now_waiting.key != key:
            if now_waiting and now_waiting.key.startswith(f"{key.split('-again-')[0]}-again-"):
                said = now_waiting.description.split("> Refused: ", 1)[-1].split(". Asked again.")[0]
                say(f"REFUSED by the flow: {said}; the run waits at {now_waiting.key}")
                return EXIT_REFUSED
            say(f"the run took the answer: now {run.state.name if run.state else '?'}"
                + (f", waiting at {now_waiting.key}" if now_waiting else ""))
            return 0
        time.sleep(1)
    say(f"the run has not picked the answer up within {within_s:.0f} s: is its worker running?")
    return EXIT_OTHER


# --- starting and following a procedure ------------------------------------------------------
def start(flow: str, pair_name: str, parameters: dict[str, Any]) -> FlowRun:
    from prefect.deployments import run_deployment

    name = PairNames(pair_name).deployment(flow)
    try:
        return run_deployment(name=name, parameters={"pair_name": pair_name, **parameters}, timeout=0)
    except Exception as exc:  # ObjectNotFound, or a bad parameter the server refused
        if "not found" in str(exc).lower() or type(exc).__name__ == "ObjectNotFound":
            raise Refusal(f"no deployment {name}: run `antelope-ha setup CONFIG` for pair {pair_name}") from None
        raise


def follow(run_id: UUID, say: Say, poll_s: float = 1.0) -> int:
    """Print each step of the run as it starts and ends, and each approval it
    waits for (with the command that answers it); the run's end as exit code."""
    shown: dict[UUID, StateType] = {}
    asked: set[str] = set()
    with get_client(sync_client=True) as client:
        say(f"run: {run_link(client, run_id)}")
        while True:
            run = client.read_flow_run(run_id)
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
                                          sort=TaskRunSort.EXPECTED_START_TIME_ASC)
            for t in tasks:
                kind = t.state.type if t.state else None
                if kind is None or shown.get(t.id) == kind or kind in (StateType.PENDING, StateType.SCHEDULED):
                    continue
                shown[t.id] = kind
                say(f"  {time.strftime('%H:%M:%S')} {t.name}: {t.state.name}"
                    + (f" ({t.state.message})" if t.state.message and kind != StateType.COMPLETED else ""))
            gate = waiting(client, run)
            if gate and gate.key not in asked:
                asked.add(gate.key)
                title = next((line.removeprefix("## ") for line in gate.description.splitlines()
                              if line.startswith("## ")), gate.key)
                say(f"WAITING FOR APPROVAL at {gate.key}: {title}\n  answer with: antelope-ha approve {run.id} "
                    f"--by NAME --code CODE --reason TEXT [--reject]   (site {gate.gate.get('site', '?')})")
            if run.state and run.state.is_final():
                say(f"run {run.name}: {run.state.name}" + (f": {run.state.message}" if run.state.message else ""))
                return EXIT_CODES.get(run.state.type, EXIT_OTHER)
            time.sleep(poll_s)


# --- a test notification ---------------------------------------------------------------------
def notify_test(pair_name: str, by: str, say: Say) -> int:
    """Send a test message through each configured channel; 0 when all took it."""
    import logging

    from tasks.notify import send, targets_named
    from tasks.pair import load_pair

    _, targets = load_pair(pair_name)
    channels = targets_named(targets)
    if not channels:
        say(f"pair {pair_name} has no notification targets: add notify: to its configuration and run setup")
        return EXIT_OTHER
    subject = f"[antelope-ha {pair_name}] TEST notification"
    text = (f"TEST notification\n\nsent by {by} with `antelope-ha notify-test`: if you read this, this channel "
            f"reaches you.\n\npair: {pair_name}\n")
    failed = send(targets, subject, text, logging.getLogger("antelope_ha.notify"))
    for channel in channels:
        say(f"{channel}: " + ("FAILED (see the error above)" if channel in failed else "sent"))
    return 1 if failed else 0
