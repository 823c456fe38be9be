"""A dry run says so on every line it logs, and its plan reads as a plan.

The steps of a dry run log what they would do in the words of the real run
("ms: stopped dbids"): a filter on Prefect's run loggers puts ``DRY RUN:``
before every message of a flow run started with ``dry_run=True``, on the
console and in the UI alike, whatever step logged it.
"""
from __future__ import annotations

import logging

from prefect.context import FlowRunContext

from antelope_ha.site import Planned

MARK = "DRY RUN"
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class MarkDryRuns(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = FlowRunContext.get()
        if ctx is not None and (ctx.parameters or {}).get("dry_run") and not str(record.msg).startswith(MARK):
            record.msg = f"{MARK}: {record.msg}"
        return True


def mark_dry_runs() -> None:
    """Install the filter once per process (flows import this module)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MarkDryRuns) for f in logger.filters):
            logger.addFilter(MarkDryRuns())


def plan_lines(procedure: str, pair_name: str, situation: list[str], plan: list[Planned]) -> list[str]:
    """The plan as a person reads it at a terminal: the situation first, then
    each command site by site, every line marked."""
    lines = [f"{MARK} of {procedure} for pair {pair_name}: nothing on the sites changes",
             *(f"{MARK}: {line}" for line in situation)]
    lines += [f"{MARK} on {p.site}: {p.action}  ({p.purpose})" for p in plan]
    if not plan:
        lines.append(f"{MARK}: nothing would change: every step is already in its target state")
    return lines
