"""A person's approval before a dangerous step: Prefect's pause with a typed
input (operator, one-time code, decision, reason, and the site typed back),
with a timeout; only a listed operator's answer with their current code counts
(antelope_ha/approvers.py), any other is refused, told and asked again; the
re-check of a site after the answer, before acting on it; and the record of
every answer, counted or refused, as an artifact and as events.

Called from a flow (a pause belongs to the flow run, not to a task).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field

from antelope_ha.approvers import LOUD_AFTER, Accepted, Approver, Refused, judge, wrong_in_a_row
from antelope_ha.commands import fmt_time
from antelope_ha.config import PairConfig, SiteConfig
from antelope_ha.state import HAState
from antelope_ha.runner import RunnerError
from tasks.notify import notify, targets_of_this_run
from tasks.report import operator_event
from tasks.sites import site
from tasks.state import update_state


class Approval(RunInput):
    """What the operator answers in the UI."""

    operator: str = Field(..., min_length=2, description="your name, as listed under operators")
    code: str = Field(..., pattern=r"^[0-9]{6}$", description="the 6-digit code your authenticator app shows now")
    decision: Literal["approve", "reject"] = Field(..., description="approve or reject this step")
    reason: str = Field(..., min_length=3, description="why: recorded with the incident")
    confirm_site: str = Field(..., description="type the site this step acts on, to confirm")


class RefusedAnswer(BaseModel):
    """An answer that did not count: who it was given as, why, when."""

    operator: str
    why: str
    reason: str
    at: float


class ApprovalRecord(BaseModel):
    gate: str
    site: str
    outcome: Literal["approved", "approved, not acted on", "rejected", "timed out", "skipped (dry run)"]
    operator: str | None = None
    reason: str | None = None
    at: float
    refused: list[RefusedAnswer] = Field(default_factory=list, description="answers that did not count, in order")


@dataclass(frozen=True)
class Gate:
    """One approval a procedure asks for.

    ``key`` names its pauses (``fallback-2``, then ``fallback-2-again-1``, ...):
    an answer refused at one gate is asked again under a key of that gate, never
    one that could be taken for the next gate's. ``after`` is who answered the
    earlier gate when this one needs a second person."""

    key: str
    title: str
    site: str
    after: str | None = None


GATE_KEY = "x-antelope-ha-gate"  # the form's own statement of what it checks, for `antelope-ha approve`


def approval_form(gate: Gate, operators: list[str]) -> type[Approval]:
    """The Approval input of one gate, checking what needs no secret: the site
    typed must be the gate's, the operator a listed one and, at a gate for a
    second person, another than the earlier gate's approver when approving.

    The checks are in the JSON schema Prefect stores with the pause and
    validates every resume against (server side): the UI form and the API
    answer such an input REJECT, with the field and the reason, and the run
    stays paused under the same key. The one-time code is judged by the flow
    against the secrets (and by `antelope-ha approve` before it sends)."""
    names = "|".join(re.escape(o) for o in operators) or "(?!)"  # none listed: nobody may answer
    extra: dict = {GATE_KEY: {"site": gate.site, "after": gate.after, "operators": operators}}
    if gate.after:
        extra |= {"if": {"properties": {"decision": {"const": "approve"}}, "required": ["decision"]},
                  "then": {"properties": {"operator": {"not": {"const": gate.after}}}}}

    class GateApproval(Approval):
        model_config = ConfigDict(title="Approval", json_schema_extra=extra)
        operator: str = Field(..., pattern=f"^({names})$",
                              description="your name, as listed under operators: " + (", ".join(operators) or "none"))
        confirm_site: str = Field(..., pattern=f"^{re.escape(gate.site)}$",
                                  description=f"type the site this step acts on ({gate.site}), to confirm")

    GateApproval.__name__ = "Approval"
    return GateApproval


def ask_approval(pair_name: str, pair: PairConfig, gate: Gate, findings: str, dry_run: bool = False) -> ApprovalRecord:
    """Pause until a listed operator approves or rejects ``gate`` with their
    current one-time code; any other answer is refused, told and asked again
    until the time is up."""
    log = get_run_logger()
    timeout_s, site_name = pair.policy.approval_timeout_s, gate.site
    if dry_run:
        log.info("DRY RUN: would wait up to %.0f s for approval: %s", timeout_s, gate.title)
        return ApprovalRecord(gate=gate.title, site=site_name, outcome="skipped (dry run)", at=time.time())
    deadline = time.monotonic() + timeout_s
    refused: list[RefusedAnswer] = []
    verdicts: list[Accepted | Refused] = []
    note = ""
    second = (f"**A second person:** {gate.after} answered the earlier gate; another listed operator answers "
              "this one.\n\n" if gate.after else "")
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _timed_out(gate, timeout_s, refused)
        description = (
            f"## Approval needed: {gate.title}\n\n{note}**Site:** `{site_name}` (type it in *confirm_site*)\n\n"
            f"{second}**Answer as a listed operator** ({', '.join(o.name for o in pair.operators) or 'none listed'}) "
            f"with the code your authenticator app shows now.\n\n### What the checks found\n\n{findings}\n\n"
            f"Times out in {remaining:.0f} s; on timeout or rejection nothing further changes."
        )
        log.warning("waiting for approval: %s on %s", gate.title, site_name)
        if not refused:  # after a refusal, its own message says the run waits on
            notify(targets_of_this_run(), f"APPROVAL NEEDED on {site_name}: {gate.title}",
                   f"Open the run, Resume, and answer with your name and one-time code (type {site_name} as "
                   f"confirm_site). Times out in {remaining:.0f} s.")
        try:
            answer = pause_flow_run(
                wait_for_input=approval_form(gate, [o.name for o in pair.operators]).with_initial_data(
                    description=description),
                timeout=max(1, int(remaining)),
                poll_interval=max(1, int(pair.policy.approval_poll_s)),
                key=f"{gate.key}-again-{len(refused)}" if refused else gate.key,
            )
        except FlowPauseTimeout:
            return _timed_out(gate, timeout_s, refused)
        verdict = check_answer(pair_name, pair, gate, answer)
        verdicts.append(verdict)
        if isinstance(verdict, Refused):
            refused.append(RefusedAnswer(operator=answer.operator, why=verdict.kind, reason=verdict.reason,
                                         at=time.time()))
            note = f"> Refused: {verdict.reason}. Asked again.\n\n"
            tell_refused(pair_name, gate, answer.operator, verdict, wrong_in_a_row(verdicts))
            continue
        outcome = "approved" if answer.decision == "approve" else "rejected"
        log.warning("%s %s by %s: %s", gate.title, outcome, verdict.operator, answer.reason)
        audit(pair_name, f"approval.{outcome}", gate, verdict.operator, answer.reason)
        notify(targets_of_this_run(), f"{outcome.upper()} on {site_name}: {gate.title}",
               f"{gate.title} {outcome} by {verdict.operator}: {answer.reason}")
        return ApprovalRecord(gate=gate.title, site=site_name, outcome=outcome, operator=verdict.operator,
                              reason=answer.reason, at=time.time(), refused=refused)


def check_answer(pair_name: str, pair: PairConfig, gate: Gate, answer: Approval) -> Accepted | Refused:
    """Judge the answer (antelope_ha/approvers.py) and, if it counts, record its
    code as used, in one change of the state record: two answers with the same
    code cannot both count."""
    roster = operator_secrets(pair.operators)
    after = gate.after if answer.decision == "approve" else None  # rejecting needs no second person
    verdicts: list[Accepted | Refused] = []

    def change(state: HAState) -> HAState:
        verdicts.append(judge(answer.operator, answer.code, roster, state.codes_used, time.time(), after))
        if isinstance(verdicts[-1], Accepted):
            return state.model_copy(update={"codes_used": {**state.codes_used, verdicts[-1].operator:
                                                           verdicts[-1].step}})
        return state

    update_state(pair_name, change)
    return verdicts[-1]


def tell_refused(pair_name: str, gate: Gate, given_as: str, verdict: Refused, wrong_codes: int) -> None:
    """A refused answer is logged, audited and notified; wrong codes in a row, loudly."""
    log = get_run_logger()
    log.warning("answer for %s given as %r refused (%s): %s", gate.title, given_as, verdict.kind, verdict.reason)
    audit(pair_name, "approval.refused", gate, given_as, verdict.reason, why=verdict.kind)
    targets = targets_of_this_run()
    if wrong_codes >= LOUD_AFTER:
        log.error("%d wrong one-time codes in a row for %s", wrong_codes, gate.title)
        notify(targets, f"ALERT: {wrong_codes} WRONG ONE-TIME CODES in a row on {gate.site}: {gate.title}",
               f"Someone who can reach the Prefect UI or API answered {gate.title} {wrong_codes} times in a row "
               f"with a wrong or used code (the last as {given_as!r}). If this was not one of you, treat the "
               "Prefect credential as leaked: change it (docs/operating.md, section 1). The run waits on.")
    else:
        notify(targets, f"APPROVAL REFUSED on {gate.site}: {gate.title}",
               f"an answer given as {given_as!r} was refused: {verdict.reason}. The run waits for a valid answer.")


def audit(pair_name: str, what: str, gate: Gate, operator: str, reason: str, **more: str) -> None:
    operator_event(pair_name, what, operator, gate=gate.title, site=gate.site, reason=reason, **more)


def operator_secrets(operators: list[Approver]) -> dict[str, str]:
    """Each listed operator's TOTP secret, from their Secret block."""
    roster = {}
    for operator in operators:
        try:
            roster[operator.name] = Secret.load(operator.secret_block, _sync=True).get()
        except ValueError as exc:
            raise RuntimeError(f"the one-time code secret of operator {operator.name} (Secret block "
                               f"{operator.secret_block}) cannot be read: enroll them with `antelope-ha setup "
                               f"CONFIG --enroll {operator.name}` ({type(exc).__name__})") from None
    return roster


def _timed_out(gate: Gate, timeout_s: float, refused: list[RefusedAnswer]) -> ApprovalRecord:
    get_run_logger().error("no answer for %s within %.0f s", gate.title, timeout_s)
    notify(targets_of_this_run(), f"APPROVAL TIMED OUT on {gate.site}: {gate.title}",
           f"no answer within {timeout_s:.0f} s: nothing further changes")
    return ApprovalRecord(gate=gate.title, site=gate.site, outcome="timed out", at=time.time(), refused=refused)


@task(name="Re-check a site after an answer", task_run_name="re-check {cfg.name} after the answer",
      cache_policy=NO_CACHE, timeout_seconds=180)
def site_changed(cfg: SiteConfig, dry_run: bool = False) -> str | None:
    """Why ``cfg`` is no longer as the person saw it (unreachable, rtexec
    stopped), or None. A dry run only planned rtexec's start: it checks that
    the site answers."""
    try:
        running = site(cfg, dry_run).rtexec_running()
    except RunnerError as exc:
        return f"{cfg.name} cannot be reached: {exc}"
    return None if running or dry_run else f"rtexec no longer runs on {cfg.name}"


def publish_approvals(procedure: str, approvals: list[ApprovalRecord]) -> None:
    """Who answered which approval, how and when, as the ``<procedure>-approvals`` artifact."""
    def cell(text: str | None) -> str:
        return (text or "").replace("|", "\\|").replace("\n", " ")

    rows = "\n".join(
        line for a in approvals for line in [
            *(f"| {cell(a.gate)} | refused: {r.why} | {cell(r.operator)} | {fmt_time(r.at)} | {cell(r.reason)} |"
              for r in a.refused),
            f"| {cell(a.gate)} | {a.outcome} | {cell(a.operator)} | {fmt_time(a.at)} | {cell(a.reason)} |"])
    create_markdown_artifact(f"| gate | outcome | operator | at | reason |\n|---|---|---|---|---|\n{rows}",
                             key=f"{procedure}-approvals", description=f"{procedure}: who answered what, and when")
