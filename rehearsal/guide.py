"""Runbooks: one document per procedure, written from what a dry run of its
flow did, so the written procedure cannot drift from the code.

This module holds the document model, the hand-written knowledge per kind of
step (``STEP_GUIDE``, keyed by the Prefect task name: what the step is for,
what it checks, what to do by hand when it fails) and the Markdown and HTML
renderers. It does not import Prefect: ``rehearsal/runbook.py`` runs the dry runs
and fills the model.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

APPROVAL = "Approval"  # the kind of a person-approved gate (a flow pause, not a task)


@dataclass(frozen=True)
class StepGuide:
    purpose: str
    checks: str
    by_hand: str
    acts: bool = True  # False: the step only reads (the record, a site, a probe)


@dataclass(frozen=True)
class Command:
    site: str
    action: str
    purpose: str


@dataclass
class RunbookStep:
    title: str  # the task run's name as the UI shows it, e.g. "start dbids on bus"
    kind: str  # the task's name, a key of STEP_GUIDE
    sites: list[str]
    commands: list[Command] = field(default_factory=list)


@dataclass
class Scenario:
    title: str
    situation: str
    steps: list[RunbookStep]
    result: str


@dataclass
class Runbook:
    slug: str  # file name without suffix, e.g. "replicate-lastid"
    title: str
    flow_name: str
    description: str
    procedure: str  # the flow module's docstring
    scenarios: list[Scenario]
    real_run_only: list[str] = field(default_factory=list)  # step kinds no dry run reaches


class MissingGuide(KeyError):
    """A step kind with no entry in STEP_GUIDE: a new task needs its runbook text."""


GATE = StepGuide(
    purpose="A person decides before the flow goes on: the run pauses and shows what its checks found.",
    checks="The answer names a listed operator with their current one-time code, the decision (approve or "
           "reject), a reason, and the site typed back. The form itself refuses a name not listed, a wrong "
           "site and the first gate's approver at the fallback's second (the run stays paused); a wrong or "
           "used code is refused, notified and asked again. After the answer the flow re-checks the state "
           "before acting.",
    by_hand="Open the paused run in the Prefect UI (Runs > the run > Resume) and fill the form, or run "
            "`antelope-ha approve RUN --by NAME --code CODE --reason TEXT` (add --reject to reject). On rejection "
            "or timeout the flow stops as its docstring says; nothing further changes.",
)

STEP_GUIDE: dict[str, StepGuide] = {
    "Read the pair state": StepGuide(
        "Read the authority record (site, epoch), health decisions, pause, acknowledgement and watcher lease.",
        "The record is the `<pair>-state` block; a missing one means MS holds epoch 1.",
        "`antelope-ha status --pair <pair>` shows the record next to what the sites say. If the Prefect "
        "server is down, read `ha/authority` on both sites and stop: act only with a readable record.", acts=False),
    "Mark fallback in progress": StepGuide(
        "Tell the health flow a fallback is under way, so it does not fence MS while dbids starts there.",
        "The flag in the state record.",
        "`antelope-ha status` shows the flag; rerun the fallback, which clears it at the end.", acts=False),
    "Re-check a site after an answer": StepGuide(
        "After a person's approval, before acting on it: the site is still as they saw it, since the answer "
        "may come long after the question.",
        "The site answers and `logs/rtexec.pid` names a live rtexec process (a dry run checks only that it "
        "answers).",
        "`ssh` to the site and `cat logs/rtexec.pid; ps -p <pid>`. If the site is down or rtexec stopped, the "
        "approval was not acted on: find out why, then run the procedure again.", acts=False),
    "Record the health decision": StepGuide(
        "Store the decision and the failure counter, unless another flow changed the record meanwhile. "
        "Nothing is acted on before its decision is stored.",
        "The record read at the start of the run is still the stored one; otherwise the decision is dropped "
        "and the next cycle decides again.",
        "Check the Prefect server; the watcher keeps probing and records once the server answers.", acts=False),
    "Record a declined failover": StepGuide(
        "Keep on the record that a person rejected or left unanswered a failover approval, so the health "
        "flow holds instead of asking again at every probe of the same outage.",
        "The record's declined entry (cleared when MS's ID server answers again or at a new authority).",
        "`antelope-ha status` shows it; `antelope-ha ack` lets health request a failover again.", acts=False),
    "Record the recovery": StepGuide(
        "Keep on the record that the outages up to this epoch of the backup are recovered and verified, so "
        "the next recovery looks at later ones (and a rerun checks the last one again).",
        "The record's recovered_through epoch only ever rises.",
        "`antelope-ha status` shows the record; a lost entry only makes the next recovery check the outage again.",
        acts=False),
    "Acknowledge the hold-down": StepGuide(
        "Let automatic failover happen again after a failover, saying who and why: the approvers of a "
        "completed fallback, or a person with `antelope-ha ack`.",
        "The record's acknowledgement (time, by whom, why); a failover within the hold-down is held only "
        "when it came after the acknowledgement.",
        "`antelope-ha ack --by NAME --reason TEXT`; `antelope-ha status` shows who acknowledged last.",
        acts=False),
    "Read the replica's time": StepGuide(
        "When BUS's lastid was last copied from MS (`ha/replica` on BUS, next to the copy).",
        "A replica older than the policy's `lastid_max_age_s`, or none, asks a person before the failover.",
        "`cat <rtexec_dir>/ha/replica` on BUS: `taken_at` is epoch seconds.", acts=False),
    "Record the replica's time": StepGuide(
        "Write when MS's lastid was read, and the values, to `ha/replica` on BUS next to the copy.",
        "The file is rewritten at every copy.",
        "Nothing to do by hand: the next copy writes it (the watcher copies every `replicate_lastid_s`).",
        acts=False),
    "Check the site is ready": StepGuide(
        "Before anything changes anywhere: read the site's descriptor, lastid and rtexec.pf.",
        "The descriptor names a dbidserver, lastid parses, rtexec.pf lists the ID server, writer and "
        "information-system tasks.",
        "Fix the file the error names on the site (e.g. add `dbidserver host:port` to `<rtexec_dir>/db/db`), "
        "then rerun the flow: nothing has changed yet.", acts=False),
    "Time of the descriptor change": StepGuide(
        "When the descriptor last changed, on the site's clock: writers started before read the old "
        "dbidserver and must restart.",
        "`stat -c %.9Y` of the descriptor.",
        "`stat -c %.9Y <rtexec_dir>/db/db` on the site; restart the writers started before it.", acts=False),
    "Read lastid": StepGuide(
        "Read a site's `dbids.lastid`: the last id given per key.",
        "The file parses as a CSS3.0 lastid table.",
        "`cat <rtexec_dir>/dbids/dbids.lastid` on the site; if it is damaged, restore it from the replica "
        "or backup, never lower any value.", acts=False),
    "Check ids": StepGuide(
        "Scan the site's database: max id per key and any id used twice, against its lastid.",
        "Every max id is <= lastid, and no key is used twice.",
        "Run the same command on the site (`<python> -I -S ha/antelope-ha-site.pyz ids db/db --lastid "
        "dbids/dbids.lastid`); raise lastid above the max ids before any dbids starts there.", acts=False),
    "Judge ids against the baseline": StepGuide(
        "Sort the id scan's problems into those that block dbids on the site and old ones: a problem blocks "
        "when it is new since the site's baseline, touches the ids BUS issued during the outage, or is an id "
        "above lastid.",
        "No blocking problem; old ones are listed with when they were first seen.",
        "`antelope-ha status --pair <pair>` lists the baseline's old problems; fix each blocking one on the "
        "site (raise lastid, remove the duplicate rows) and scan again.", acts=False),
    "Record the baseline of old id problems": StepGuide(
        "When a site takes authority, its id problems as scanned then become its baseline: later checks "
        "block only on problems new since.",
        "The state record keeps, per site, each problem and when it was first seen.",
        "`antelope-ha baseline --by <name> --reason <why> --pair <pair>` takes it again by hand."),
    "Raise lastid": StepGuide(
        "Raise `dbids.lastid` so the next ids are above every id that may have been given; never lowers "
        "a value.",
        "The file is rewritten only if a key must go up.",
        "Edit `dbids/dbids.lastid` on the site (dbids stopped): set each key to the value shown in the flow "
        "log, keeping any higher value."),
    "Point the descriptor at an ID server": StepGuide(
        "Make the database descriptor's `dbidserver` line name the ID server that is authoritative.",
        "The previous descriptor is kept as `db/db-<timestamp>.bak`; the line is replaced only if different.",
        "Edit `db/db` on the site: `dbidserver <host:port>`; restart the db writers so they read it."),
    "Look at the pair": StepGuide(
        "From BUS, over the connections the worker keeps open: while MS is authoritative, MS's ID server "
        "(every probe); when it does not answer, the witness (BUS may be the isolated one) and MS's own ID "
        "server on MS (a dead MS or only a cut BUS -> MS link?); while it answers, MS's ORB data and db "
        "writers. While BUS is authoritative: BUS's own ID server, what rtexec on BUS does when it fails, "
        "and whether MS is fenced. Only the authoritative ID server counts towards a decision; the rest "
        "goes into its reason.",
        "Each command answers within the probe timeout; a host that does not is reported, never waited for.",
        "From BUS: `idserver_connect <ms_idserver>` and `ping -c 1 <witness>`; on MS: "
        "`idserver_connect <ms_idserver>`, `orbstat -s <orb>`, `ps -ww -eo pid=,args=` (orb2dbt, orb2wf, "
        "dbids) and `ls <rtexec_dir>/ha/armed`.", acts=False),
    "Fence a site": StepGuide(
        "Arm the site (`ha/armed`: no dbids may start there) and stop its dbids, db writers and "
        "information systems, including copies started by hand.",
        "After it, no dbids runs there; an unreachable site is reported and fenced when it is back.",
        "On the site: `touch <rtexec_dir>/ha/armed`, set `Run no` for dbids, the writers and information "
        "systems in `rtexec.pf`, and `kill -TERM` any copy left in `ps -ww -eo pid=,args=`."),
    "Disarm a site": StepGuide(
        "Remove the fence marker so dbids may start there again.",
        "`ha/armed` is gone.",
        "`rm -f <rtexec_dir>/ha/armed` on the site, only once its epoch is recorded."),
    "Take authority": StepGuide(
        "Record a new authority epoch for the site (once), then write it to `ha/authority` on every "
        "reachable site.",
        "The record changes only if another site held authority; a site that cannot be reached keeps a "
        "stale marker until it is back.",
        "`antelope-ha status` shows record and markers; write `{\"epoch\": N, \"site\": \"<site>\"}` to "
        "`ha/authority` on the site by hand only with the epoch of the record."),
    "Start the ID server": StepGuide(
        "Start dbids on the authoritative site.",
        "Refused unless the site holds the current epoch (record and marker agree) and is not armed.",
        "Set `Run yes` for dbids in `rtexec.pf`; check `ps` shows it and `idserver_connect -p` answers. "
        "Never start dbids on an armed site."),
    "Start rtexec": StepGuide(
        "Start the real-time system if it is not running.",
        "`logs/rtexec.pid` names a live rtexec process.",
        "`rtexec -fs` in the rtexec directory; read `logs/rtexec` for the reason it did not start."),
    "Start an rtexec task": StepGuide(
        "Make rtexec run the task.",
        "`Run yes` in `rtexec.pf`, and the task's process appears in `ps`.",
        "Set `Run yes` for the task in `rtexec.pf`; rtexec starts it within its Start_period. Read "
        "`logs/<task>` if it keeps dying."),
    "Stop an rtexec task": StepGuide(
        "Make rtexec stop the task.",
        "`Run no` in `rtexec.pf`, and no process of the task in `ps`.",
        "Set `Run no` for the task in `rtexec.pf`; if a process stays, `kill -TERM <pid>`."),
    "Restart an rtexec task": StepGuide(
        "Restart the task so it reads its configuration again (writers read the descriptor once).",
        "A process of the task started after the authority change runs; a newer one is left alone.",
        "`kill -TERM <pid>` of the task: rtexec restarts it; check `ps` shows a new pid."),
    "Verify data flow": StepGuide(
        "Check the ORB receives data.",
        "The newest packet is younger than the site's `max_orb_latency_s`.",
        "`orbstat -s <orb>` on the site; check the acquisition links before going on.", acts=False),
    "Check nothing is lost": StepGuide(
        "Find what MS lacks, by the completeness rule, each site's tables read on the site: MS's gaps since "
        "the last common point (moments BUS recorded and MS did not), the whole events of those moments, "
        "every event with an id BUS's dbids issued that MS did not record itself; and orphans, ids naming "
        "two rows.",
        "Before the merge: what to extract. After it: nothing lacking, no orphan, no id twice; the findings "
        "name the table and ids of each row.",
        "Run `<python> -I -S ha/antelope-ha-site.pyz inventory db/db <start> <end> --ids=<key>=<first>-<last>` on "
        "both sites (the ids BUS issued are in the record's authority history, `lastid`) and compare the "
        "digests; or give start and end to the recovery to merge a window by hand.", acts=False),
    "Extract the window": StepGuide(
        "Extract a time window from BUS's database into an excerpt: one per run of events MS lacks, "
        "wide enough for every row of each.",
        "trexcerpt exits 0.",
        "`trexcerpt -v -e db/db <excerpt> <start> <end>` on BUS; check free disk space."),
    "Narrow the excerpt": StepGuide(
        "Keep in the excerpt only the rows of the events MS lacks (listed in `keep.json` beside it), each "
        "line byte for byte: a time window also holds rows of events MS recorded itself.",
        "The rows kept, dropped, and any listed row trexcerpt did not bring (the next round widens the window).",
        "`<python> -I -S ha/antelope-ha-site.pyz narrow <excerpt> <excerpt dir>/keep.json` on BUS."),
    "Move the excerpt": StepGuide(
        "Copy every file of the excerpt from BUS to MS (SFTP); with an excerpt_path on a disk both sites "
        "reach, copy nothing and only check that MS sees the excerpt.",
        "MS holds the same files of the excerpt as BUS (or sees the excerpt on the shared disk).",
        "`scp -r` the excerpt directory from BUS to the same path on MS, or mount the external disk on MS."),
    "Merge the window": StepGuide(
        "Append the narrowed excerpt into MS's database (not retried: a rerun checks again what MS lacks "
        "and merges only that).",
        "trexcerpt exits 0; the check after it finds nothing lacking.",
        "`trexcerpt -v -a -e <excerpt> db/db <start> <end>` on MS with the writers stopped, then rerun the "
        "recovery: it merges nothing twice."),
    "Notify operators": StepGuide(
        "Tell the operators what was decided or done (email, SMS gateway).",
        "A failed notification is logged and never stops the procedure.",
        "Check the notification blocks; tell the on-call operator by phone.", acts=False),
}


def guide(kind: str) -> StepGuide:
    if kind == APPROVAL:
        return GATE
    try:
        return STEP_GUIDE[kind]
    except KeyError:
        raise MissingGuide(f"no runbook text for step kind {kind!r}: add it to STEP_GUIDE in "
                           f"rehearsal/guide.py") from None


# --- making generated text independent of the machine it was generated on ---------
_PID = re.compile(r"\b(kill -TERM |pid )\d+")
_STAMP = re.compile(r"\d{8}T\d{6}(\.\d+)?Z")


def normalizer(replacements: dict[str, str]) -> Callable[[str], str]:
    """Replace machine-specific strings (longest first), pids and timestamps."""
    ordered = sorted(((k, v) for k, v in replacements.items() if k), key=lambda kv: -len(kv[0]))

    def normalize(text: str) -> str:
        for old, new in ordered:
            text = text.replace(old, new)
        text = _PID.sub(lambda m: f"{m.group(1)}<pid>", text)
        return _STAMP.sub("<timestamp>", text)

    return normalize


# --- Markdown -------------------------------------------------------------------------
GENERATED = ("Generated by `antelope-ha runbook` from dry runs of the `{flow}` flow on a freshly created "
             "simulated pair: the steps and commands are the ones the flow runs. Do not edit; regenerate.")
READS_ONLY = "none that change a site: this step only reads and checks."
DRY_RUN_NOTE = ("No command in the dry run: on the generation pair this step found its target state "
                "already (a dry run does not apply earlier steps). In production it may act.")


def _md_step(n: int, step: RunbookStep) -> list[str]:
    g = guide(step.kind)
    lines = [f"#### {n}. {step.title}", "",
             f"*{step.kind}*" + (f" — on {', '.join(step.sites)}" if step.sites else ""), "",
             f"**Purpose.** {g.purpose}", ""]
    if step.commands:
        lines.append("**Commands:**")
        lines.append("")
        for site in dict.fromkeys(c.site for c in step.commands):
            lines.append(f"- on `{site}`:")
            lines += [f"  - `{c.action}` — {c.purpose}" for c in step.commands if c.site == site]
        lines.append("")
    elif step.kind != APPROVAL:
        lines += [f"**Commands:** {DRY_RUN_NOTE if g.acts else READS_ONLY}", ""]
    lines += [f"**Checked.** {g.checks}", "", f"**If it fails.** {g.by_hand}", ""]
    return lines


REAL_RUN_ONLY = ("The dry runs above do not reach these steps: they record, notify or verify what a real "
                 "run did, or need a situation the dry runs were not in. A real run takes them where the "
                 "procedure at the top says, in the order listed here.")


def to_markdown(book: Runbook) -> str:
    lines = [f"# Runbook: {book.title}", "", f"> {GENERATED.format(flow=book.flow_name)}", "",
             book.description, "", "```text", book.procedure.strip(), "```", ""]
    for scenario in book.scenarios:
        lines += [f"## {scenario.title}", "", scenario.situation, "", "### Steps", ""]
        for n, step in enumerate(scenario.steps, 1):
            lines += _md_step(n, step)
        lines += ["### What the dry run reported", "", "```text", scenario.result.strip(), "```", ""]
    if book.real_run_only:
        lines += ["## Steps of a real run only", "", REAL_RUN_ONLY, ""]
        for kind in book.real_run_only:
            g = guide(kind)
            lines += [f"#### {kind}", "", f"*{kind}*", "", f"**Purpose.** {g.purpose}", "",
                      f"**Checked.** {g.checks}", "", f"**If it fails.** {g.by_hand}", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- printable HTML ---------------------------------------------------------------------
CSS = """body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}
code,pre{font-family:monospace;background:#f4f4f4}pre{padding:.5em;white-space:pre-wrap}
.step{border-left:3px solid #888;padding-left:1em;margin:1em 0;page-break-inside:avoid}
.gate{border-left-color:#c60}.kind{color:#555}
@media print{body{margin:0;max-width:none}a{color:inherit}}"""


def _code(text: str) -> str:
    """Markdown `code` spans of the hand-written text as <code>."""
    return re.sub(r"`([^`]*)`", lambda m: f"<code>{m.group(1)}</code>", html.escape(text, quote=False))


def _html_step(n: int, step: RunbookStep) -> Iterable[str]:
    g = guide(step.kind)
    where = f" — on {', '.join(step.sites)}" if step.sites else ""
    yield f'<div class="step{" gate" if step.kind == APPROVAL else ""}">'
    yield f"<h4>{n}. {html.escape(step.title)}</h4>"
    yield f'<p class="kind"><em>{html.escape(step.kind)}</em>{html.escape(where)}</p>'
    yield f"<p><strong>Purpose.</strong> {_code(g.purpose)}</p>"
    if step.commands:
        yield "<p><strong>Commands:</strong></p><ul>"
        for site in dict.fromkeys(c.site for c in step.commands):
            yield f"<li>on <code>{html.escape(site)}</code>:<ul>"
            for c in step.commands:
                if c.site == site:
                    yield f"<li><code>{html.escape(c.action)}</code> — {html.escape(c.purpose)}</li>"
            yield "</ul></li>"
        yield "</ul>"
    elif step.kind != APPROVAL:
        yield f"<p><strong>Commands:</strong> {html.escape(DRY_RUN_NOTE if g.acts else READS_ONLY)}</p>"
    yield f"<p><strong>Checked.</strong> {_code(g.checks)}</p>"
    yield f"<p><strong>If it fails.</strong> {_code(g.by_hand)}</p>"
    yield "</div>"


def to_html(book: Runbook) -> str:
    title = f"Runbook: {book.title}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>",
           f"<blockquote>{_code(GENERATED.format(flow=book.flow_name))}</blockquote>",
           f"<p>{html.escape(book.description)}</p>", f"<pre>{html.escape(book.procedure.strip())}</pre>"]
    for scenario in book.scenarios:
        out += [f"<h2>{html.escape(scenario.title)}</h2>", f"<p>{_code(scenario.situation)}</p>", "<h3>Steps</h3>"]
        for n, step in enumerate(scenario.steps, 1):
            out += list(_html_step(n, step))
        out += ["<h3>What the dry run reported</h3>", f"<pre>{html.escape(scenario.result.strip())}</pre>"]
    if book.real_run_only:
        out += ["<h2>Steps of a real run only</h2>", f"<p>{html.escape(REAL_RUN_ONLY)}</p>"]
        for kind in book.real_run_only:
            g = guide(kind)
            out += ['<div class="step">', f"<h4>{html.escape(kind)}</h4>",
                    f"<p><strong>Purpose.</strong> {_code(g.purpose)}</p>",
                    f"<p><strong>Checked.</strong> {_code(g.checks)}</p>",
                    f"<p><strong>If it fails.</strong> {_code(g.by_hand)}</p>", "</div>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"
