"""A simulated pair for flow tests: each site behind its own sshd, the pair's
block saved under a name of its own and its state reset to epoch 1."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from antelope_ha.completeness import Verdict
from antelope_ha.outages import check_here
from antelope_ha.config import PairConfig, PairPolicy
from antelope_ha.state import HAState
from rehearsal.drill import ScriptedOperators, newest_origin, origin_times
from rehearsal.pair import registered_sim_pair
from simsite.pair import SimPair
from tasks.sites import close_all
from tasks.state import load_state, save_state

# The operators of every test pair, with the same secrets: one answering thread
# serves the pairs of several lanes.
OPERATORS = ScriptedOperators.new(["tester", "grace", "heidi", "ivan", "judy", "karl"])
FAST = PairPolicy(failures_before_failover=2, probe_interval_s=0.5, probe_timeout_s=1.0, hold_down_s=3600,
                  lastid_margin=1000, lastid_max_age_s=600, approval_timeout_s=60, approval_poll_s=1)


def run_artifact(flow_run_id: UUID, key: str) -> str:
    """The newest artifact ``key`` of a flow run, as text."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert found, f"no {key} artifact for run {flow_run_id}"
    return str(found[-1].data)


@dataclass
class Sim:
    pair: SimPair
    name: str
    cfg: PairConfig

    def state(self) -> HAState:
        return load_state(self.name)

    def set_state(self, state: HAState) -> None:
        save_state(self.name, state)

    def origins(self, site: str) -> list[float]:
        return origin_times(self.pair.paths(site).dir)

    def wait_rows(self, site: str, after: float, timeout_s: float = 30) -> None:
        SimPair.wait_for(lambda: newest_origin(self.pair.paths(site).dir) > after, timeout_s,
                         f"{site} writes rows after {after}")

    def db(self, site: str) -> Path:
        return self.pair.paths(site).dir / "db" / "db"

    def judged(self) -> list[Verdict]:
        """The completeness rule over every outage on the record, both sites' files read here."""
        return check_here(self.db("ms"), self.db("bus"), self.state())

    def snapshot(self, *relative: str) -> dict[str, bytes | None]:
        """Bytes of the given files of both sites (None when absent)."""
        out = {}
        for site in ("ms", "bus"):
            for rel in relative:
                p = self.pair.paths(site).dir / rel
                out[f"{site}:{rel}"] = p.read_bytes() if p.exists() else None
        return out


@contextmanager
def sim_pair(tmp: Path, name: str, policy: PairPolicy = FAST) -> Iterator[Sim]:
    with registered_sim_pair(tmp / "pair", name, policy, OPERATORS.enroll(name)) as (pair, cfg):
        try:
            sim = Sim(pair, name, cfg)
            sim.wait_rows("ms", 0)
            sim.wait_rows("bus", 0)
            yield sim
        finally:
            close_all()


def approve(site: str = "ms", decision: str = "approve", operator: str | None = None) -> dict:
    """An answer by a test operator (``operator``, or the first one free), with their current code."""
    return OPERATORS.answer(operator, decision=decision, reason="flow test", confirm_site=site)


def wrong_answer(operator: str, code_of: str = "grace", site: str = "ms") -> dict:
    """An approval as ``operator`` with a code that is not ``code_of``'s now (the
    flow refuses it as a wrong code if the form lets it through); it spends no
    operator's code, so the answers after it wait for no new time step."""
    return {"operator": operator, "code": OPERATORS.wrong_code(code_of), "decision": "approve",
            "reason": "flow test", "confirm_site": site}

