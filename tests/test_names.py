"""antelope_ha.names: every object of a pair carries its name, and no two
pairs ever get the same name for one kind of object."""
from __future__ import annotations

import importlib
import itertools
import re

import pytest

from antelope_ha.names import FLOWS, LEGACY_DEPLOYMENTS, LEGACY_POOLS, PAIR_NAME, SITES, TEMPLATE_PAIR, PairNames
from deployments.setup import PREFECT_FILE, render_prefect_file

# names that would collide if a name were only the pair's name and the rest
# glued with a dash: "a" + "b-x" and "a-b" + "x", "a-state" + "procedure" ...
TRICKY_PAIRS = ("a", "a-b", "b", "a-state", "a-procedure", "a-bus", "a-smtp", "smtp", "watch", "default")
WEBHOOKS = ("x", "b-x", "sms", "state", "a--b")


def every_name(names: PairNames) -> dict[str, set[str]]:
    """Each kind of object (block names by their block type) and the names one pair gives it."""
    return {
        "deployment": {names.deployment(flow) for flow in FLOWS},
        "pool": {names.pool(site) for site in SITES},
        "worker unit": {names.worker_unit(site) for site in SITES},
        "block antelope-pair": {names.pair_block},
        "block antelope-pair-state": {names.state_block},
        "block email-server-credentials": {names.smtp_block},
        "block email-notification": {names.email_alert_block},
        "block webhook": {names.webhook_block(hook) for hook in WEBHOOKS},
        "concurrency limit": {names.procedure_limit, names.state_limit},
        "variable": {names.holder_variable, names.notified_variable},
        "event resource": {names.resource_id},
        "automation": {names.silent_automation, names.crashed_automation},
    }


def test_every_name_carries_the_pair_name() -> None:
    for pair in TRICKY_PAIRS:
        for kind, names in every_name(PairNames(pair)).items():
            assert all(pair in name for name in names), (kind, names)
        assert PairNames(pair).resource() == {"prefect.resource.id": f"antelope-ha.pair.{pair}",
                                              "antelope-ha.pair": pair}


@pytest.mark.parametrize("one, other", list(itertools.combinations(TRICKY_PAIRS, 2)))
def test_two_pairs_never_share_a_name(one: str, other: str) -> None:
    mine, theirs = every_name(PairNames(one)), every_name(PairNames(other))
    for kind in mine:
        assert not mine[kind] & theirs[kind], (kind, mine[kind] & theirs[kind])


@pytest.mark.parametrize("name, valid", [
    ("net1", True), ("a-b", True), ("sismo-ingv-2", True), ("default", True),
    ("a--b", False), ("-a", False), ("a-", False), ("Net1", False), ("net_1", False), ("", False), ("a b", False),
])
def test_a_pair_name_holds_no_double_dash(name: str, valid: bool) -> None:
    assert bool(re.match(PAIR_NAME, name)) is valid
    for pair in TRICKY_PAIRS:
        assert re.match(PAIR_NAME, pair), pair


def test_the_names_before_namespacing_are_no_pair_s() -> None:
    """setup reports these as left over: only a pair named after a flow could
    own one, and setup skips that one (its parameters name the pair)."""
    assert LEGACY_DEPLOYMENTS == ("watch/watch", "health/health", "replicate-lastid/replicate-lastid",
                                  "failover/failover", "fallback/fallback", "recovery/recovery")
    assert LEGACY_POOLS == ("antelope-ha-bus", "antelope-ha-ms")
    for pair in TRICKY_PAIRS:
        names = PairNames(pair)
        assert not {names.pool(site) for site in SITES} & set(LEGACY_POOLS)
        assert {names.deployment(flow) for flow in FLOWS} & set(LEGACY_DEPLOYMENTS) == (
            {f"{pair}/{pair}"} if pair in FLOWS else set())


def test_prefect_yaml_is_the_template_pair_s_and_names_every_flow() -> None:
    """deployments/prefect.yaml as written is pair "default"'s (so applied by
    hand it makes no un-namespaced deployment); its flows are FLOWS."""
    import yaml

    project = yaml.safe_load(PREFECT_FILE.read_text())
    template = PairNames(TEMPLATE_PAIR)
    assert {d["name"] for d in project["deployments"]} == {template.deployment_name}
    assert {d["work_pool"]["name"] for d in project["deployments"]} == {template.pool(site) for site in SITES}
    assert {d["parameters"]["pair_name"] for d in project["deployments"]} == {TEMPLATE_PAIR}
    flows = []
    for d in project["deployments"]:
        path, function = d["entrypoint"].split(":")
        flows.append(getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function).name)
    assert tuple(flows) == FLOWS


def test_render_gives_every_deployment_and_pool_the_pair_s_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from deployments.setup import PROJECT_DIR, load_config

    for secret in ("ANTELOPE_HA_SMTP_PASSWORD", "ANTELOPE_HA_SMS_TOKEN", "ANTELOPE_HA_TELEGRAM_TOKEN"):
        monkeypatch.setenv(secret, "s")
    config = load_config(PROJECT_DIR / "deployments" / "example-config.yaml").model_copy(update={"pair": "net1"})
    project = render_prefect_file(config)
    names = PairNames("net1")
    assert {d["name"] for d in project["deployments"]} == {names.deployment_name}
    assert {d["parameters"]["pair_name"] for d in project["deployments"]} == {"net1"}
    # watch, health, replicate-lastid, failover at BUS; fallback, recovery at MS
    assert [d["work_pool"]["name"] for d in project["deployments"]] == [names.pool("bus")] * 4 + [names.pool("ms")] * 2
    # the watcher serves the metrics the configuration asks for; no other flow takes them
    served = {d["entrypoint"]: (d["parameters"].get("metrics_port"), d["parameters"].get("metrics_address"))
              for d in project["deployments"]}
    assert served.pop("flows/watch.py:watch") == (9508, "127.0.0.1")
    assert set(served.values()) == {(None, None)}
