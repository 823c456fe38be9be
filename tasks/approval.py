"""A person's approval before a dangerous step: Prefect's pause with a typed
input (operator, decision, reason, and the site typed back), with a timeout;
the re-check of a site after the answer, before acting on it; and the record
of the answers, as an artifact.

Called from a flow (a pause belongs to the flow run, not to a task).
"""
from __future__ import annotations

import time
from typing import Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from antelope_ha.commands import fmt_time
from antelope_ha.config import SiteConfig
from antelope_ha.runner import RunnerError
from tasks.notify import notify, targets_of_this_run
from tasks.sites import site


class Approval(RunInput):
    """What the operator answers in the UI."""

    operator: str = Field(..., min_length=2, description="your name")
    decision: Literal["approve", "reject"] = Field(..., description="approve or reject this step")
    reason: str = Field(..., min_length=3, description="why: recorded with the incident")
    confirm_site: str = Field(..., description="type the site this step acts on, to confirm")


class ApprovalRecord(BaseModel):
    gate: str
    site: str
    outcome: Literal["approved", "approved, not acted on", "rejected", "timed out", "skipped (dry run)"]
    operator: str | None = None
    reason: str | None = None
    at: float


def ask_approval(gate: str, site: str, findings: str, timeout_s: float, poll_s: float,
                 dry_run: bool = False) -> ApprovalRecord:
    """Pause until a person approves or rejects ``gate``; a wrong confirmation
    asks again until the time is up."""
    log = get_run_logger()
    if dry_run:
        log.info("DRY RUN: would wait up to %.0f s for approval: %s", timeout_s, gate)
        return ApprovalRecord(gate=gate, site=site, outcome="skipped (dry run)", at=time.time())
    deadline = time.monotonic() + timeout_s
    note = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _timed_out(gate, site, timeout_s)
        description = (
            f"## Approval needed: {gate}\n\n{note}**Site:** `{site}` (type it in *confirm_site*)\n\n"
            f"### What the checks found\n\n{findings}\n\n"
            f"Times out in {remaining:.0f} s; on timeout or rejection nothing further changes."
        )
        log.warning("waiting for approval: %s on %s", gate, site)
        notify(targets_of_this_run(), f"APPROVAL NEEDED on {site}: {gate}",
               f"{note}Open the run, Resume, and answer (type {site} as confirm_site). "
               f"Times out in {remaining:.0f} s.")
        try:
            answer = pause_flow_run(
                wait_for_input=Approval.with_initial_data(description=description),
                timeout=max(1, int(remaining)),
                poll_interval=max(1, int(poll_s)),
            )
        except FlowPauseTimeout:
            return _timed_out(gate, site, timeout_s)
        if answer.confirm_site.strip() != site:
            note = (f"> {answer.operator} typed `{answer.confirm_site}` as the site, "
                    f"which is not `{site}`: asked again.\n\n")
            log.warning("approval for %s: confirmation %r does not name %s; asking again",
                        gate, answer.confirm_site, site)
            continue
        outcome = "approved" if answer.decision == "approve" else "rejected"
        log.warning("%s %s by %s: %s", gate, outcome, answer.operator, answer.reason)
        notify(targets_of_this_run(), f"{outcome.upper()} on {site}: {gate}",
               f"{gate} {outcome} by {answer.operator}: {answer.reason}")
        return ApprovalRecord(gate=gate, site=site, outcome=outcome, operator=answer.operator,
                              reason=answer.reason, at=time.time())


def _timed_out(gate: str, site: str, timeout_s: float) -> ApprovalRecord:
    get_run_logger().error("no answer for %s within %.0f s", gate, timeout_s)
    notify(targets_of_this_run(), f"APPROVAL TIMED OUT on {site}: {gate}",
           f"no answer within {timeout_s:.0f} s: nothing further changes")
    return ApprovalRecord(gate=gate, site=site, outcome="timed out", at=time.time())


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

    rows = "\n".join(f"| {cell(a.gate)} | {a.outcome} | {cell(a.operator)} | {fmt_time(a.at)} | {cell(a.reason)} |"
                     for a in approvals)
    create_markdown_artifact(f"| gate | outcome | operator | at | reason |\n|---|---|---|---|---|\n{rows}",
                             key=f"{procedure}-approvals", description=f"{procedure}: who answered what, and when")
