"""What a run leaves behind for people: the step timeline, the dry-run plan,
the approval records, as Prefect artifacts."""
from __future__ import annotations

import datetime as dt

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.runtime import flow_run

from antelope_ha.site import Planned


def _t(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3] if value else ""


def step_timeline(flow_run_id: str) -> list[dict]:
    """Each task run of the flow run, in start order: step, start, end, outcome."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    runs.sort(key=lambda r: r.start_time or r.expected_start_time or dt.datetime.max.replace(tzinfo=dt.timezone.utc))
    return [
        {"step": r.name, "start": _t(r.start_time), "end": _t(r.end_time),
         "outcome": r.state.name if r.state else "?"}
        for r in runs
    ]


def publish_timeline(procedure: str) -> list[dict]:
    rows = step_timeline(str(flow_run.get_id()))
    create_table_artifact(rows, key=f"{procedure}-timeline", description=f"{procedure}: steps in order")
    return rows


def publish_plan(procedure: str, plan: list[Planned]) -> str:
    """Log and publish the commands a dry run would have run, site by site."""
    lines = [f"# Dry run of {procedure}: what would change", ""]
    for site in dict.fromkeys(p.site for p in plan):
        lines += [f"## on {site}", ""]
        lines += [f"- `{p.action}`  — {p.purpose}" for p in plan if p.site == site]
        lines.append("")
    if not plan:
        lines.append("Nothing would change: every step is already in its target state.")
    text = "\n".join(lines)
    get_run_logger().info("%s", text)
    create_markdown_artifact(text, key=f"{procedure}-plan", description=f"dry run of {procedure}")
    return text
