"""Two pairs set up on one Prefect server run side by side.

A real ``prefect server`` on PostgreSQL, two simulated pairs (each with its
own sites and witness), ``deployments.setup`` run for one and then the other
with the same webhook name in both files, and a process worker in each
pair's BUS pool. The second setup leaves the first pair's deployments,
blocks, automations and watcher alone; a failover of one pair runs while the
other pair's procedure limit is held, and changes nothing of the other pair.
A deployment left from before pairs were namespaced is reported by setup,
with the fix, and left in place.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from antelope_ha.config import PairPolicy
from antelope_ha.names import FLOWS, SITES, WATCH_FLOW, PairNames
from simsite.pair import SimPair
from tests.servers import Api, HttpReceiver, PrefectServer, Worker, wait_for

pytestmark = pytest.mark.slow

PAIRS = ("net-a", "net-b")
POLICY = PairPolicy(failures_before_failover=2, probe_interval_s=2, probe_timeout_s=1, hold_down_s=3600,
                    lastid_margin=1000, lastid_max_age_s=600, approval_timeout_s=60, approval_poll_s=1)


@dataclass
class Pairs:
    server: PrefectServer
    api: Api
    sims: dict[str, SimPair]
    sms: HttpReceiver
    said: dict[str, list[str]]  # what each setup printed
    workers: list[Worker]

    def state(self, pair: str) -> dict:
        return self.api.block("antelope-pair-state", PairNames(pair).state_block)["data"]["state"]

    def deployment(self, pair: str, flow: str) -> dict:
        return self.api.request("GET", f"/deployments/name/{PairNames(pair).deployment(flow)}")

    def watching(self, pair: str) -> str:
        """The watch run holding the pair's lease, once it has probed and said so in a heartbeat."""
        def found() -> str | None:
            try:
                lease = self.state(pair).get("watcher")
            except httpx.HTTPStatusError:  # no record before the first watcher takes its lease
                return None
            if not lease:
                return None
            beats = self.api.request("POST", "/events/filter", json={"filter": {
                "event": {"name": ["antelope-ha.watcher.heartbeat"]},
                "resource": {"id": [PairNames(pair).resource_id]},
                "occurred": {"since": "2020-01-01T00:00:00Z"}}, "limit": 50})["events"]
            return lease["run"] if any(b["payload"]["run"] == lease["run"] and b["payload"]["cycles"] >= 1
                                       for b in beats) else None
        return wait_for(f"a watcher of {pair} watching", found, 120)

    def final_run(self, run_id: str, timeout_s: float) -> dict:
        return wait_for(f"flow run {run_id} final", lambda: (r := self.api.flow_run(run_id))["state"]["type"]
                        in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and r, timeout_s)


def write_config(path: Path, pair: str, sim: SimPair, sms: HttpReceiver) -> Path:
    cfg = sim.pair_config(POLICY)
    path.write_text(yaml.safe_dump({
        "pair": pair,
        "main": cfg.main.model_dump(mode="json", exclude_none=True),
        "backup": cfg.backup.model_dump(mode="json", exclude_none=True),
        "witness": cfg.witness.model_dump(mode="json"),
        "policy": POLICY.model_dump(mode="json"),
        "schedules": {"replicate_lastid_s": 5, "heartbeat_s": 5, "watcher_silent_s": 60},
        # the same webhook name in both files: each pair's block must keep its own address
        "notify": {"webhooks": [{"name": "sms", "kind": "custom-webhook", "url": f"{sms.url}/sms/{pair}",
                                 "json_data": {"text": "{{subject}}\n{{body}}"}}]},
    }, sort_keys=False))
    return path


def leave_a_deployment_of_an_earlier_release() -> None:
    """What setup made before pairs were namespaced: watch/watch in the shared pool antelope-ha-bus."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="antelope-ha-bus", type="process"))
        client.create_deployment(flow_id=client.create_flow_from_name("watch"), name="watch",
                                 parameters={"pair_name": "old"}, work_pool_name="antelope-ha-bus")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pairs]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.setup import setup

    tmp = tmp_path_factory.mktemp("two-pairs")
    server, sms = PrefectServer(home=tmp / "prefect-home"), HttpReceiver()
    sims = {"net-a": SimPair.create(tmp / "net-a"), "net-b": SimPair.create(tmp / "net-b", base_address="127.0.0.6")}
    with pytest.MonkeyPatch.context() as env, ExitStack() as started:
        started.callback(sms.stop)
        sms.start()
        for sim in sims.values():
            started.callback(sim.stop)
            sim.start()
        started.callback(server.stop)
        server.start()
        env.setenv("PREFECT_API_URL", server.api_url)  # setup's `prefect deploy` child reads it
        started.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
        leave_a_deployment_of_an_earlier_release()
        said = {pair: setup(write_config(tmp / f"{pair}.yaml", pair, sim, sms)) for pair, sim in sims.items()}
        workers = [Worker(server, PairNames(pair).pool("bus"), tmp / f"worker-{pair}.log") for pair in PAIRS]
        for w in workers:
            started.callback(w.stop)
            w.start()
        api = Api(server.api_url)
        started.callback(api.close)
        yield Pairs(server, api, sims, sms, said, workers)


def test_each_pair_has_its_own_deployments_pools_blocks_and_automations(pairs: Pairs) -> None:
    automations = {a["name"]: a for a in pairs.api.request("POST", "/automations/filter", json={})}
    for pair in PAIRS:
        names = PairNames(pair)
        for flow in FLOWS:
            deployment = pairs.deployment(pair, flow)
            assert deployment["parameters"]["pair_name"] == pair, deployment
            assert deployment["work_pool_name"] in {names.pool(site) for site in SITES}
        assert pairs.deployment(pair, WATCH_FLOW)["work_pool_name"] == names.pool("bus")
        for site in SITES:
            pairs.api.request("GET", f"/work_pools/{names.pool(site)}")
        assert pairs.api.block("antelope-pair", names.pair_block)["data"]["main"]["host"] == \
            pairs.sims[pair].settings.sites["ms"].address
        hook = pairs.api.block("custom-webhook", names.webhook_block("sms"))
        assert hook["data"]["url"].endswith(f"/sms/{pair}")
        watch_id = pairs.deployment(pair, WATCH_FLOW)["id"]
        for name in (names.silent_automation, names.crashed_automation):
            actions = automations[name]["actions"]
            assert watch_id in [a.get("deployment_id") for a in actions], (name, actions)
        assert automations[names.silent_automation]["trigger"]["match"]["prefect.resource.id"] == names.resource_id


def test_the_second_setup_leaves_the_first_pair_s_watcher_watching(pairs: Pairs) -> None:
    runs = {pair: pairs.watching(pair) for pair in PAIRS}
    assert runs["net-a"] != runs["net-b"]
    for pair, run in runs.items():
        assert pairs.api.flow_run(run)["deployment_id"] == pairs.deployment(pair, WATCH_FLOW)["id"]
    limits = {limit["name"] for limit in pairs.api.request("POST", "/v2/concurrency_limits/filter", json={})}
    assert {PairNames(pair).procedure_limit for pair in PAIRS} <= limits, limits


def test_a_failover_of_one_pair_runs_while_the_other_s_procedure_is_held(pairs: Pairs) -> None:
    from prefect.concurrency.sync import concurrency

    from tasks.lock import ensure_limit

    for pair in PAIRS:
        pairs.watching(pair)  # its lastid replica taken
    other = PairNames("net-b").procedure_limit
    ensure_limit(other)
    with concurrency(other, occupy=1, strict=True, timeout_seconds=30, lease_duration=60):
        refused = pairs.api.run_deployment("failover", "net-b", {"pair_name": "net-b", "reason": "e2e: held"})
        run = pairs.api.run_deployment("failover", "net-a", {"pair_name": "net-a", "reason": "e2e: one pair"})
        final = pairs.final_run(run["id"], 180)
        assert final["state"]["type"] == "COMPLETED", (final["state"], pairs.workers[0].log_tail())
        assert pairs.final_run(refused["id"], 120)["state"]["type"] == "FAILED"  # the hold is real
    a, b = pairs.state("net-a"), pairs.state("net-b")
    assert (a["authority"]["site"], a["authority"]["epoch"]) == ("bus", 2)
    assert (b["authority"]["site"], b["authority"]["epoch"]) == ("ms", 1), b["authority"]
    assert pairs.sims["net-a"].task_pids("bus", "dbids") and not pairs.sims["net-b"].task_pids("bus", "dbids")
    wait_for("the failover told through net-a's webhook", lambda: [
        r for r in pairs.sms.requests if r["path"] == "/sms/net-a" and "FAILOVER to bus done" in r["json"]["text"]], 30)
    assert not [r for r in pairs.sms.requests if r["path"] == "/sms/net-b" and "FAILOVER to bus done"
                in r["json"]["text"]]


def test_setup_names_a_deployment_of_an_earlier_release_and_leaves_it(pairs: Pairs) -> None:
    for pair in PAIRS:
        warning = "\n".join(line for line in pairs.said[pair] if "WARNING" in line or "fix:" in line)
        print(f"two pairs: setup of {pair} said:\n{warning}")
        assert "deployment watch/watch (pair old, pool antelope-ha-bus" in warning, pairs.said[pair]
        assert "work pool antelope-ha-bus" in warning
        assert "prefect deployment delete watch/watch" in warning
        assert "prefect work-pool delete antelope-ha-bus" in warning
        assert "systemctl disable --now antelope-ha-worker@bus antelope-ha-worker@ms" in warning
    assert pairs.api.request("GET", "/deployments/name/watch/watch")["parameters"] == {"pair_name": "old"}
