"""`antelope-ha approve` answers the gate a fallback waits at, on the test
Prefect server: what the flow would refuse is refused by the command with the
reason and never sent; what needs no secret (the site, a name not listed, the
first gate's approver at the second) is refused by the server itself too, so
the UI and a script over REST get REJECT, never ACCEPT."""
from __future__ import annotations

import threading
import time
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from typer.testing import CliRunner

from deployments.cli import app
from flows.fallback import fallback
from flows.replicate import replicate_lastid
from simsite.pair import SimPair
from tests.simpair import FAST, OPERATORS, Sim, sim_pair
from tests.test_flows import fail_over

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
cli = CliRunner()
# Each operator gives at most two codes a time step (tests/simpair.py OPERATORS):
# the refusals below are spread over operators so that no answer waits for the
# next step, and the gates wait long enough for a loaded machine.
POLICY = FAST.model_copy(update={"approval_timeout_s": 300})
NOT_A_CODE = "000000"  # for answers the server refuses on their other fields, before any code is judged


def approve_cli(run_id: UUID, operator: str, *more: str, code: str | None = None):
    code = code or OPERATORS.answer(operator)["code"]
    return cli.invoke(app, ["approve", str(run_id), "--by", operator, "--code", code, "--reason", "cli test",
                            *more], catch_exceptions=False)


def paused_at(run_id: UUID, key: str) -> None:
    def at_key() -> bool:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        return bool(state and state.is_paused() and state.state_details.pause_key == key)
    SimPair.wait_for(at_key, 60, f"the fallback paused at {key}")


def test_answers_the_flow_would_refuse_are_refused_with_the_reason_and_never_sent(tmp_path):
    with sim_pair(tmp_path, "cliok", POLICY) as sim:
        replicate_lastid(pair_name=sim.name)
        fail_over(sim)
        sim.pair.power_on("ms", start_rtexec=False)
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(state=fallback(pair_name=sim.name,
                                                                              return_state=True)))
        runner.start()
        try:
            run_id = wait_for_fallback_run(sim)
            paused_at(run_id, "fallback-1")
            refusals = [
                (approve_cli(run_id, "ivan", "--site", "bus"), "--site bus is not the site this gate acts on (ms)"),
                (approve_cli(run_id, "mallory", code="123456"), "'mallory' is not a listed operator"),
                (approve_cli(run_id, "grace", code=OPERATORS.answer("heidi")["code"]),
                 "the code given for grace is not their current one-time code"),
            ]
            for refused, why in refusals:
                assert refused.exit_code == 2 and "REFUSED" in refused.output and why in refused.output, \
                    refused.output
            # over REST (what the UI form sends), the server refuses what the form checks
            for wrong in ({"confirm_site": "bus"}, {"operator": "mallory"}):
                answer = {"operator": "grace", "code": NOT_A_CODE, "decision": "approve", "reason": "rest",
                          "confirm_site": "ms", **wrong}
                with pytest.raises(RuntimeError, match="Validation failed for field"):
                    resume_flow_run(run_id, run_input=answer)
            paused_at(run_id, "fallback-1")  # nothing reached the flow: not asked again
            taken = approve_cli(run_id, "grace")
            assert taken.exit_code == 0 and "the run took the answer" in taken.output, taken.output
            paused_at(run_id, "fallback-2")
            same = approve_cli(run_id, "grace")
            assert same.exit_code == 2 and "grace answered the earlier gate" in same.output, same.output
            with pytest.raises(RuntimeError, match="'grace' should not be valid"):
                resume_flow_run(run_id, run_input={"operator": "grace", "code": NOT_A_CODE, "decision": "approve",
                                                   "reason": "rest", "confirm_site": "ms"})
            done = approve_cli(run_id, "heidi")
            assert done.exit_code == 0, done.output
        finally:
            runner.join(180)
        assert result["state"].is_completed(), result
        assert sim.state().authority.site == "ms"
        with get_client(sync_client=True) as client:
            keys = client.read_flow_run(run_id).empirical_policy.pause_keys
        assert sorted(keys) == ["fallback-1", "fallback-2"], keys  # never asked again: nothing wrong was sent
        not_waiting = approve_cli(run_id, "heidi")
        assert not_waiting.exit_code == 2 and "is not waiting for an approval: it is Completed" in not_waiting.output


def wait_for_fallback_run(sim: Sim) -> UUID:
    """The fallback run of this pair, once it exists."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["fallback"])))
        mine = [r.id for r in runs if r.parameters.get("pair_name") == sim.name]
        if mine:
            return mine[0]
        time.sleep(0.5)
    raise AssertionError(f"no fallback run of {sim.name} within 60 s")
