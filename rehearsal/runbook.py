"""Write the runbooks from dry runs of the flows on a freshly created simulated
pair, so each document lists the steps the flow really runs, in the order it
runs them, with the exact commands it would run on each site.

The steps come from the dry-run flow runs themselves: every task run that
finishes closes a step, and the commands the run's sites planned since the
previous step belong to it; an approval gate (a pause, not a task) is a step
too. A new task with no text in ``rehearsal.guide.STEP_GUIDE`` stops the
generation, so a flow cannot gain a step its runbook does not explain.

The pair is driven through the situations each procedure starts from:
MS authoritative (health, replicate, failover, recovery), MS's ID server down
(health), BUS authoritative after a real failover (health, fallback).
"""
from __future__ import annotations

import ast
import inspect
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prefect import Flow, Task

from antelope_ha.config import PairConfig, PairPolicy
from rehearsal.guide import (APPROVAL, Command, Runbook, RunbookStep, Scenario, guide, normalizer,
                                 to_html, to_markdown)
from flows.calling import call_flow
from flows.failover import failover
from flows.fallback import fallback
from flows.health import health
from flows.recovery import recovery
from flows.replicate import replicate_lastid
from rehearsal.pair import registered_sim_pair
from simsite.pair import SimPair
from tasks.dryrun import MARK as DRY_RUN
from tasks.sites import close_all, plans

PAIR_NAME = "runbook-sim"
RUNBOOK_POLICY = PairPolicy(failures_before_failover=3, probe_interval_s=10, probe_timeout_s=3,
                            hold_down_s=3600, lastid_margin=1000, lastid_max_age_s=900,
                            approval_timeout_s=1800, approval_poll_s=2)
# The recovery's windows come from the rows: their times become placeholders.
_WINDOW_DIR = re.compile(r"recovery/\d+-\d+")
_EPOCHS = re.compile(r"\b\d{10}\.\d{3} \d{10}\.\d{3}\b")
_TIMES = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC \.\. \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC")

TITLES = {"failover": "Failover (BUS takes over)", "fallback": "Fallback (authority back to MS)",
          "recovery": "Data recovery (MS's outage window from BUS)",
          "replicate-lastid": "Replicate lastid (MS -> BUS)", "health": "Health check and decision"}
_FINISHED = "Finished in state "
_GATE = re.compile(r"DRY RUN: would wait up to \S+ s for approval: (?P<gate>.+)$")
_CHANGES = re.compile(r"\b(\w+) \d+ -> \d+")
_CLOCK = re.compile(r"\b\d\d:\d\d:\d\d UTC\b")
_LATENCY = re.compile(r"\blatency \d+(?:\.\d+)? s\b")


@dataclass
class DryRun:
    """One dry-run flow run, as recorded."""

    flow_run_id: str
    steps: list[RunbookStep]
    result: str


@dataclass
class Generated:
    books: dict[str, Runbook]
    flow_runs: dict[str, list[str]]  # slug -> the dry-run flow run of each scenario
    normalize: Callable[[str], str]

    def write(self, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for slug, book in self.books.items():
            for suffix, text in ((".md", to_markdown(book)), (".html", to_html(book))):
                path = out / f"{slug}{suffix}"
                path.write_text(text)
                written.append(path)
        return written


class StepRecorder(logging.Handler):
    """Steps of the flow run in progress, from its log records: a task run's
    "Finished in state" record closes a step; an approval's dry-run record is
    a step of its own."""

    def __init__(self, site_names: list[str], normalize: Callable[[str], str]):
        super().__init__(logging.INFO)
        self.site_names, self.normalize = site_names, normalize
        self.steps: list[RunbookStep] = []
        self._planned: dict[str, int] = {}  # site -> commands already given to a step

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        task_name = getattr(record, "task_name", None)
        if task_name and message.removeprefix(f"{DRY_RUN}: ").startswith(_FINISHED):
            run_name = getattr(record, "task_run_name", task_name)
            title = task_name if re.fullmatch(re.escape(task_name) + r"-[0-9a-f]+", run_name) else run_name
            self._add(self.normalize(title), task_name, str(record.flow_run_id))
        elif gate := _GATE.search(message):
            self._add(f"approval: {self.normalize(gate['gate'])}", APPROVAL, None)

    def _add(self, title: str, kind: str, flow_run_id: str | None) -> None:
        guide(kind)  # fails at once, naming the kind, if the step has no runbook text
        commands = []
        if flow_run_id is not None:
            # plans() lists site after site, each in the order planned: take what
            # each site planned since the previous step.
            per_site: dict[str, list] = {}
            for p in plans(flow_run_id):
                per_site.setdefault(p.site, []).append(p)
            for site, planned in per_site.items():
                commands += [Command(p.site, self.normalize(p.action), self.normalize(p.purpose))
                             for p in planned[self._planned.get(site, 0):]]
                self._planned[site] = len(planned)
        words = set(re.findall(r"[a-z0-9_-]+", title))
        sites = list(dict.fromkeys([c.site for c in commands] + [s for s in self.site_names if s in words]))
        self.steps.append(RunbookStep(title=title, kind=kind, sites=sites, commands=commands))


@contextmanager
def recording(recorder: StepRecorder) -> Iterator[StepRecorder]:
    """Attach the recorder to Prefect's run loggers, at INFO, for one flow run."""
    loggers = [logging.getLogger(n) for n in ("prefect.task_runs", "prefect.flow_runs")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(recorder)
        lg.setLevel(min(lg.getEffectiveLevel(), logging.INFO))
    try:
        yield recorder
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(recorder)
            lg.setLevel(level)


class Generator:
    def __init__(self, pair: SimPair, cfg: PairConfig):
        self.pair, self.cfg = pair, cfg
        self.normalize = machine_independent(pair, cfg)
        self.books: dict[str, Runbook] = {}
        self.flow_runs: dict[str, list[str]] = {}

    def dry_run(self, flow: Flow, **params) -> DryRun:
        recorder = StepRecorder([self.cfg.main.name, self.cfg.backup.name], self.normalize)
        with recording(recorder):
            state = call_flow(flow, pair_name=PAIR_NAME, dry_run=True, return_state=True, **params)
        result = state.result()
        text = _CHANGES.sub(r"\1 <n> -> <n>", self.normalize(str(result)))
        text = _LATENCY.sub("latency <n> s", _CLOCK.sub("<time> UTC", text))
        return DryRun(str(state.state_details.flow_run_id), recorder.steps, text)

    def scenario(self, slug: str, flow: Flow, title: str, situation: str, **params) -> None:
        run = self.dry_run(flow, **params)
        book = self.books.setdefault(slug, Runbook(
            slug=slug, title=TITLES[slug], flow_name=flow.name, description=flow.description or "",
            procedure=sys.modules[flow.fn.__module__].__doc__ or "", scenarios=[]))
        book.scenarios.append(Scenario(title, situation, run.steps, run.result))
        self.flow_runs.setdefault(slug, []).append(run.flow_run_id)


def machine_independent(pair: SimPair, cfg: PairConfig) -> Callable[[str], str]:
    """Placeholders for everything that depends on where and when the pair was made."""
    ms, bus = cfg.main, cfg.backup
    paths = normalizer({
        ms.rtexec_dir: "<rtexec_dir>", bus.rtexec_dir: "<rtexec_dir>", str(pair.root): "<pair>",
        ms.python: "<python>", ms.idserver_address: f"<{ms.name}_idserver>",
        bus.idserver_address: f"<{bus.name}_idserver>", cfg.witness.host: "<witness>",
    })

    def normalize(text: str) -> str:
        text = _WINDOW_DIR.sub("recovery/<start>-<end>", paths(text))
        return _TIMES.sub("<start> .. <end>", _EPOCHS.sub("<start> <end>", text))

    return normalize


def generate(workdir: Path) -> Generated:
    """Create a simulated pair under ``workdir`` and dry-run every procedure on
    it, in the situation it is meant for. Needs a Prefect API (embedded or
    PREFECT_API_URL); saves the pair as the block ``runbook-sim``."""
    with registered_sim_pair(workdir / "pair", PAIR_NAME, RUNBOOK_POLICY) as (pair, cfg):
        try:
            g = Generator(pair, cfg)
            ms, bus = cfg.main.name, cfg.backup.name
            g.scenario("replicate-lastid", replicate_lastid, f"{ms} authoritative",
                       f"The copy of {ms}'s `dbids.lastid` to {bus} (the watcher makes it every minute).")
            g.scenario("health", health, f"{ms} authoritative and healthy",
                       f"One cycle of the watcher at {bus}: {ms}'s ID server answers.")
            g.scenario("failover", failover, f"{ms} authoritative, no fresh lastid replica on {bus}",
                       "Run by the watcher on its decision (or started by hand). With a replica older than the "
                       "policy allows, a person approves the lastid first; with a fresh one that gate is skipped.")
            end = time.time() - 1
            g.scenario("recovery", recovery, f"{ms} authoritative, a window given by hand",
                       "Without `start` and `end` the outages come from the authority history; here the last "
                       f"seconds are given, so every event {bus} recorded in them is merged whole (in a real run "
                       "the check then finds them lacking no more).", start=end - 2, end=end)
            pair.crash(ms, cfg.main.idserver_task, restart=False)
            g.scenario("health", health, f"{ms}'s ID server does not answer",
                       f"One failed probe out of the K needed: {bus} also asks the witness and {ms} itself.")
            pair.repair(ms, cfg.main.idserver_task)
            replicate_lastid(pair_name=PAIR_NAME)
            failover(pair_name=PAIR_NAME, reason="runbook generation")
            g.scenario("health", health, f"{bus} authoritative",
                       f"After a failover the watcher probes {bus}'s own ID server and keeps {ms} fenced "
                       "(armed, no dbids).")
            g.scenario("fallback", fallback, f"{bus} authoritative, {ms} repaired",
                       "Started by hand once MS is fit again; two people-approved gates.")
            for slug, flow in (("replicate-lastid", replicate_lastid), ("health", health), ("failover", failover),
                               ("recovery", recovery), ("fallback", fallback)):
                book = g.books[slug]
                reached = {step.kind for scenario in book.scenarios for step in scenario.steps}
                book.real_run_only = [kind for kind in tasks_in_source(flow) if kind not in reached]
            return Generated(g.books, g.flow_runs, g.normalize)
        finally:
            close_all()


def tasks_in_source(flow: Flow) -> list[str]:
    """The names of the tasks the flow's module calls, in the order they first
    appear in its source: the steps a real run may take, dry or not."""
    module = sys.modules[flow.fn.__module__]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Name):
            obj = vars(module).get(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            obj = getattr(vars(module).get(node.value.id), node.attr, None)
        else:
            continue
        if isinstance(obj, Task) and (obj.name not in found or node.lineno < found[obj.name]):
            found[obj.name] = node.lineno
    return sorted(found, key=found.__getitem__)


def write_runbooks(out: Path) -> list[Path]:
    """Generate every runbook into ``out`` (Markdown and printable HTML)."""
    with tempfile.TemporaryDirectory(prefix="antelope-ha-runbook-") as tmp:
        return generate(Path(tmp)).write(out)
