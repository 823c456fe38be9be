"""The runbooks are generated from dry runs of the flows: regenerating them
must give the committed documents, and every step a flow runs must be in its
runbook."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from rehearsal.guide import (APPROVAL, STEP_GUIDE, MissingGuide, Runbook, RunbookStep, Scenario, guide,
                                 normalizer, to_html, to_markdown)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "runbooks"
TASKS = Path(__file__).resolve().parent.parent / "tasks"
PROCEDURES = {"failover", "fallback", "recovery", "replicate-lastid", "health"}


def task_names() -> set[str]:
    """The name= of every @task in tasks/."""
    names = set()
    for path in TASKS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "task":
                names |= {k.value.value for k in node.keywords if k.arg == "name"}
    return names


def test_every_task_has_runbook_text():
    missing = task_names() - set(STEP_GUIDE)
    assert not missing, f"add these task names to STEP_GUIDE in rehearsal/guide.py: {sorted(missing)}"


def test_an_unknown_step_kind_is_refused_by_name():
    with pytest.raises(MissingGuide, match="Brand new step"):
        guide("Brand new step")


def test_normalizer_removes_paths_pids_and_timestamps():
    normalize = normalizer({"/tmp/x/pair/ms": "<rtexec_dir>", "/tmp/x/pair": "<pair>"})
    text = normalize("kill -TERM 4242 (pid 4242) /tmp/x/pair/ms/db/db-20261125T134334.199250166Z.bak /tmp/x/pair/y")
    assert text == "kill -TERM <pid> (pid <pid>) <rtexec_dir>/db/db-<timestamp>.bak <pair>/y"


def test_renderers_show_commands_per_site_and_the_manual_fallback():
    step = RunbookStep("stop orb2wf on ms", "Stop an rtexec task", ["ms"])
    step.commands.append(__import__("rehearsal.guide", fromlist=["Command"]).Command(
        "ms", "write <rtexec_dir>/rtexec.pf", "set orb2wf Run no"))
    gate = RunbookStep("approval: go on", APPROVAL, [])
    book = Runbook("x", "X", "x", "does x", "the procedure", [Scenario("s", "when", [step, gate], "done")])
    md, page = to_markdown(book), to_html(book)
    assert "- on `ms`:\n  - `write <rtexec_dir>/rtexec.pf` — set orb2wf Run no" in md
    assert STEP_GUIDE["Stop an rtexec task"].by_hand.split("`")[0] in md
    assert "#### 2. approval: go on" in md
    assert "<code>write &lt;rtexec_dir&gt;/rtexec.pf</code>" in page and page.startswith("<!DOCTYPE html>")


@pytest.fixture(scope="module")
def generated(prefect_server, tmp_path_factory):
    from rehearsal.runbook import generate

    return generate(tmp_path_factory.mktemp("runbook"))


@pytest.mark.slow
def test_committed_runbooks_are_what_the_flows_generate(generated, tmp_path):
    written = {p.name: p.read_text() for p in generated.write(tmp_path)}
    committed = {p.name: p.read_text() for p in DOCS.glob("*") if p.suffix in (".md", ".html")}
    assert set(generated.books) == PROCEDURES
    assert sorted(written) == sorted(committed), "run `antelope-ha runbook` and commit docs/runbooks"
    for name, text in written.items():
        assert text == committed[name], f"docs/runbooks/{name} is stale: run `antelope-ha runbook` and commit it"
    assert not re.search(r"/tmp/|127\.0\.0\.\d", "".join(written.values())), "a machine-specific path leaked"


@pytest.mark.slow
def test_every_task_run_of_a_dry_run_is_a_step_of_its_runbook(generated):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        for slug, run_ids in generated.flow_runs.items():
            for scenario, run_id in zip(generated.books[slug].scenarios, run_ids):
                runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
                runs.sort(key=lambda r: r.start_time)
                steps = [s for s in scenario.steps if s.kind != APPROVAL]
                assert len(runs) == len(steps), f"{slug} / {scenario.title}: {[r.name for r in runs]}"
                for run, step in zip(runs, steps):
                    assert (generated.normalize(run.name) == step.title
                            or re.fullmatch(re.escape(step.kind) + r"-[0-9a-f]+", run.name)), (run.name, step)
            for step in scenario.steps:  # a command belongs to the step that planned it
                named = set(re.findall(r"[a-z0-9_-]+", step.title))
                if step.kind != "Take authority":
                    assert {c.site for c in step.commands} <= named, (slug, step)
    failover = generated.books["failover"].scenarios[0]
    assert [s.title for s in failover.steps if s.kind == APPROVAL] == ["approval: failover with a stale lastid replica"]
    assert any(c.action == "write <rtexec_dir>/ha/armed" for s in failover.steps for c in s.commands)


@pytest.mark.slow
def test_the_real_failover_of_the_generation_published_its_incident(generated):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from rehearsal.runbook import PAIR_NAME
    from tasks.report import incident_key

    key = incident_key(PAIR_NAME, 2)
    with get_client(sync_client=True) as client:
        incident = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        assert len(incident) == 1 and incident[0].description == "failover"
        run_id = str(incident[0].flow_run_id)
        assert f"/runs/flow-run/{run_id}" in incident[0].data
        mine = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["failover-timeline", "failover-times"])))
    by_key = {a.key: a for a in mine if str(a.flow_run_id) == run_id}
    assert set(by_key) == {"failover-timeline", "failover-times"}
    assert '"site": "bus"' in by_key["failover-timeline"].data
    assert "dbids serving on bus" in by_key["failover-times"].data


def test_every_task_a_flow_calls_is_in_its_committed_runbook():
    """Read from the flows' source, not from the dry runs the runbooks are made
    of: a step only a real run takes (a notification, a final check) must be
    there too."""
    import importlib

    from prefect import Task

    modules = {"failover": "flows.failover", "fallback": "flows.fallback", "recovery": "flows.recovery",
               "replicate-lastid": "flows.replicate", "health": "flows.health"}
    assert set(modules) == PROCEDURES
    for slug, name in modules.items():
        module = importlib.import_module(name)
        called = set()
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            target = node.id if isinstance(node, ast.Name) else None
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                target = getattr(getattr(module, node.value.id, None), node.attr, None)
            obj = getattr(module, target, None) if isinstance(target, str) else target
            if isinstance(obj, Task):
                called.add(obj.name)
        text = (DOCS / f"{slug}.md").read_text()
        missing = sorted(n for n in called if f"*{n}*" not in text)
        assert called and not missing, f"docs/runbooks/{slug}.md lacks {missing}: run `antelope-ha runbook`"
