"""What a run leaves behind for people: the step timeline, the dry-run plan,
the measured times, the data gap, the incident link, as Prefect artifacts.

The runs of one incident (the failover, then the fallback and the recovery
that undo it) share the key ``incident-<pair>-epoch-<n>``, ``n`` being the
epoch the failover gave BUS: the artifact's history under that key lists
every run of the incident, with links.
"""
from __future__ import annotations

import datetime as dt

import re
import time
from collections.abc import Mapping, Sequence

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.runtime import flow_run

from antelope_ha.commands import fmt_time
from antelope_ha.completeness import Verdict
from antelope_ha.config import PairConfig
from antelope_ha.site import Planned
from blocks.pair import NotifyTargets
from tasks.dryrun import mark_dry_runs
from tasks.history import operator_event, who_started
from tasks.notify import run_url
from tasks.pair import load_pair

mark_dry_runs()  # every flow reports through this module: its dry runs say so on every line


def _t(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3] if value else ""


def sites_named(step: str, sites: Sequence[str]) -> str:
    """The sites a step's name mentions, in the order it mentions them."""
    words = re.findall(r"[a-z0-9_-]+", step)
    return " -> ".join(dict.fromkeys(w for w in words if w in sites))


def step_timeline(flow_run_id: str, sites: Sequence[str] = ()) -> list[dict]:
    """Each task run of the flow run, in start order: step, site, start, end, outcome."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    runs.sort(key=lambda r: r.start_time or r.expected_start_time or dt.datetime.max.replace(tzinfo=dt.timezone.utc))
    return [
        {"step": r.name, "site": sites_named(r.name, sites), "start": _t(r.start_time), "end": _t(r.end_time),
         "outcome": r.state.name if r.state else "?"}
        for r in runs
    ]


def publish_timeline(procedure: str, sites: Sequence[str] = ()) -> list[dict]:
    rows = step_timeline(str(flow_run.get_id()), sites)
    create_table_artifact(rows, key=f"{procedure}-timeline", description=f"{procedure}: steps in order")
    return rows


def format_plan(procedure: str, plan: list[Planned]) -> str:
    """The commands a dry run would have run, site by site, as Markdown."""
    lines = [f"# Dry run of {procedure}: what would change", ""]
    for site in dict.fromkeys(p.site for p in plan):
        lines += [f"## on {site}", ""]
        lines += [f"- `{p.action}`  — {p.purpose}" for p in plan if p.site == site]
        lines.append("")
    if not plan:
        lines.append("Nothing would change: every step is already in its target state.")
    return "\n".join(lines)


def publish_plan(procedure: str, plan: list[Planned]) -> str:
    """Publish the commands a dry run would have run, site by site (the
    artifact ``<procedure>-plan``), and log how many."""
    text = format_plan(procedure, plan)
    get_run_logger().info("%s: %d commands on %s (artifact %s-plan)", procedure, len(plan),
                          ", ".join(dict.fromkeys(p.site for p in plan)) or "no site", procedure)
    create_markdown_artifact(text, key=f"{procedure}-plan", description=f"dry run of {procedure}",
                             _sync=True)  # also from the async health flow
    return text


def publish_times(procedure: str, marks: Mapping[str, float]) -> list[dict]:
    """Measured moments of the run (epoch seconds), each with its offset from the first."""
    t0 = min(marks.values())
    rows = [{"moment": name, "at": _t(dt.datetime.fromtimestamp(at, dt.timezone.utc)),
             "after_s": round(at - t0, 2)} for name, at in marks.items()]
    create_table_artifact(rows, key=f"{procedure}-times", description=f"{procedure}: measured times")
    return rows


def publish_gap(main: str, backup: str, before: Sequence[Verdict], after: Sequence[Verdict]) -> str:
    """MS's data gaps: per outage its window and gaps, and per table the rows
    of the backup the main site must hold, how many it held before the
    recovery and how many it holds after."""
    parts = [f"# Data gaps of {main}"]
    for b, a in zip(before, after):
        gaps = "\n".join(f"| {fmt_time(g.start)} | {fmt_time(g.end)} | {g.end - g.start:.1f} | {g.moments} |"
                         for g in a.gaps)
        rows = "\n".join(f"| {t} | {n} | {b.present.get(t, 0)} | {a.present.get(t, 0)} |"
                         for t, n in sorted(a.required.items()))
        parts.append(
            f"## {fmt_time(a.window[0])} .. {fmt_time(a.window[1])}\n\n"
            f"{len(a.gaps)} gaps (moments {backup} recorded and {main} did not):\n\n"
            f"| from | to | seconds | moments |\n|---|---|---|---|\n{gaps}\n\n"
            f"| table | rows of {backup} {main} must hold | on {main} before | on {main} after |\n"
            f"|---|---|---|---|\n{rows}" + "".join(f"\n\n{n}" for n in a.notes))
    text = "\n\n".join(parts)
    create_markdown_artifact(text, key="recovery-gap", description=f"data gaps of {main} and what was merged")
    return text


def incident_key(pair_name: str, backup_epoch: int) -> str:
    """Artifact keys allow only lowercase letters, digits and dashes."""
    return f"incident-{re.sub(r'[^a-z0-9-]+', '-', pair_name.lower())}-epoch-{backup_epoch}"


def publish_incident(procedure: str, pair_name: str, backup_epoch: int, ui_url: str | None = None) -> str:
    """Add this run to the incident's artifact: a table of every run of the
    incident so far (each a link), published under the shared key."""
    key, this_run = incident_key(pair_name, backup_epoch), str(flow_run.get_id())
    with get_client(sync_client=True) as client:
        earlier = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    runs = {str(a.flow_run_id): (a.description or "?") for a in sorted(earlier, key=lambda a: a.created)
            if a.flow_run_id is not None}
    runs[this_run] = procedure
    rows = "\n".join(f"| {proc} | [{run_id}]({run_url(run_id, ui_url)}) |" for run_id, proc in runs.items())
    text = (f"# Incident on {pair_name}: epoch {backup_epoch}\n\nEvery run of this incident (the failover that opened epoch "
            f"{backup_epoch}, and the fallback and recovery after it):\n\n| procedure | flow run |\n|---|---|\n{rows}")
    create_markdown_artifact(text, key=key, description=procedure)
    return key


def start_procedure(procedure: str, pair_name: str, by: str | None, reason: str,
                    dry_run: bool) -> tuple[PairConfig, NotifyTargets | None]:
    """Who started this run, on the record (not for a dry run); then the pair's
    configuration and whom to notify."""
    if not dry_run:
        record_start(procedure, pair_name, by, reason)
    return load_pair(pair_name)


def record_start(procedure: str, pair_name: str, by: str | None, reason: str = "") -> str:
    """Who started this run (a person by the name they gave, or the automation),
    as the ``<procedure>-started`` artifact and an event."""
    who = who_started(by)
    get_run_logger().info("%s started by %s%s", procedure, who, f": {reason}" if reason else "")
    operator_event(pair_name, "procedure.started", who, procedure=procedure, reason=reason)
    create_markdown_artifact(f"{procedure} of pair {pair_name} started by **{who}** at {fmt_time(time.time())}"
                             + (f": {reason}" if reason else ""), key=f"{procedure}-started",
                             description=f"{procedure}: who started it")
    return who
