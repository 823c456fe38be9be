"""The status levels (Nagios convention), case by case, and the JSON schema of ``status --json``."""
import json

import jsonschema
import pytest

from antelope_ha.config import PairConfig, PairPolicy
from antelope_ha.pairstatus import Marker, SiteView, StatusReport, report, unknown
from antelope_ha.state import Declined, HAState, Pause, Replica

SITE = dict(host="h", transport="local", rtexec_dir="/rt")
PAIR = PairConfig(main=dict(SITE, name="ms", idserver_address="ms.example.org:2498"),
                  backup=dict(SITE, name="bus", idserver_address="bus.example.org:2498"), witness=dict(host="w"),
                  policy=PairPolicy(failures_before_failover=3, hold_down_s=600, lastid_max_age_s=300))
T0 = 1_000_000.0
MS_SERVING = "ms.example.org:2498"


def site(name: str, *, dbids: bool, epoch: int = 1, holder: str = "ms", armed: bool = False,
         replica_age: float | None = 10, dbidserver: str = MS_SERVING) -> SiteView:
    return SiteView(name=name, reachable=True, rtexec=True, dbids_pids=[42] if dbids else [], dbidserver=dbidserver,
                    armed=armed, marker=Marker(site=holder, epoch=epoch),
                    replica=None if replica_age is None else Replica(taken_at=T0 - replica_age, values={"arid": 1}))


def down(name: str) -> SiteView:
    return SiteView(name=name, reachable=False, error="OSError: no route to host")


def healthy() -> list[SiteView]:
    return [site("ms", dbids=True), site("bus", dbids=False)]


def level(state: HAState, views: list[SiteView], procedure: str = "") -> tuple[str, int, list[str]]:
    r = report("p", PAIR, state, views, procedure, T0)
    return r.status, r.exit_code, [f.what for f in r.findings]


def test_a_healthy_pair_is_ok():
    assert level(HAState.initial("ms"), healthy()) == ("OK", 0, [])


def test_paused_held_or_an_old_replica_are_warnings():
    paused = HAState.initial("ms").model_copy(update={"pause": Pause(by="ana", reason="disk swap", since=T0)})
    status, code, findings = level(paused, healthy())
    assert (status, code) == ("WARNING", 1) and "automatic failover HELD: automatic failover paused by ana" in findings[0]
    declined = HAState.initial("ms").model_copy(update={"declined": Declined(at=T0, what="rejected by bo")})
    assert level(declined, healthy())[:2] == ("WARNING", 1)
    old = [site("ms", dbids=True), site("bus", dbids=False, replica_age=301)]
    assert level(HAState.initial("ms"), old)[2] == ["the lastid replica on bus is 301 s old (policy: at most 300 s)"]
    failing = HAState.initial("ms").model_copy(update={"consecutive_failures": 1})
    assert level(failing, healthy())[:2] == ("WARNING", 1)


def test_the_backup_down_is_a_warning_and_the_authoritative_site_down_critical():
    status, code, findings = level(HAState.initial("ms"), [site("ms", dbids=True), down("bus")])
    assert (status, code, findings) == ("WARNING", 1, ["bus is unreachable: no failover is possible"])
    assert level(HAState.initial("ms"), [down("ms"), site("bus", dbids=False)])[:2] == ("CRITICAL", 2)


def test_failover_in_progress_and_bus_authoritative_with_ms_down_are_critical():
    assert level(HAState.initial("ms"), healthy(), "failover run red-fox (1234)")[:2] == ("CRITICAL", 2)
    assert level(HAState.initial("ms"), healthy(), "recovery run red-fox (1234)")[:2] == ("WARNING", 1)
    on_bus = HAState.initial("ms").with_authority("bus", None, "failover", now=T0 - 60)
    bus = site("bus", dbids=True, epoch=2, holder="bus", dbidserver="bus.example.org:2498")
    status, code, findings = level(on_bus, [down("ms"), bus])
    assert (status, code) == ("CRITICAL", 2) and "ms is unreachable" in findings[0]
    fenced = site("ms", dbids=False, epoch=2, holder="bus", armed=True, dbidserver="bus.example.org:2498")
    status, code, findings = level(on_bus, [fenced, bus])  # MS is back, fenced: the fallback awaits
    assert (status, code) == ("WARNING", 1) and findings == [
        "bus is authoritative since 1970-01-12 13:45 UTC (epoch 2): ms awaits the fallback"]


def test_a_second_id_server_is_critical_and_named_first():
    views = [site("ms", dbids=True), site("bus", dbids=True, replica_age=999)]
    status, code, findings = level(HAState.initial("ms"), views)
    assert (status, code) == ("CRITICAL", 2)
    assert findings[0].startswith("SPLIT BRAIN RISK: dbids runs on bus")
    r = report("p", PAIR, HAState.initial("ms"), views, "", T0)
    assert r.summary == "ANTELOPE-HA CRITICAL - pair p: " + findings[0] + " (+1 more)"
    assert r.disagreements == [findings[0]]


def test_an_unreadable_record_is_unknown():
    r = unknown("p", "the pair's record cannot be read: ConnectError", T0)
    assert (r.status, r.exit_code, r.authority) == ("UNKNOWN", 3, None)


def test_every_report_validates_against_the_published_schema():
    schema = StatusReport.model_json_schema()
    on_bus = HAState.initial("ms").with_authority("bus", None, "failover", now=T0 - 60)
    for r in (report("p", PAIR, HAState.initial("ms"), healthy(), "", T0),
              report("p", PAIR, on_bus, [down("ms"), site("bus", dbids=True)], "failover run x (1)", T0),
              unknown("p", "server down", T0)):
        jsonschema.validate(json.loads(r.model_dump_json()), schema)
    bad = json.loads(unknown("p", "x", T0).model_dump_json()) | {"exit_code": 4}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_the_site_table_fits_80_columns_and_wraps_a_long_dbidserver_whole():
    from rich.console import Console

    from deployments.status import site_table

    long = "dbids-primary.main-datacentre.seismic-network.example.org:2498"
    views = [site("ms", dbids=True, dbidserver=long), site("bus", dbids=False, dbidserver=long)]
    console = Console(width=80, record=True)
    console.print(site_table(report("p", PAIR, HAState.initial("ms"), views, "", T0)))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    column = [line.split("│")[2].strip() for line in text.splitlines() if line.count("│") == 4]
    assert long in "".join(column), text  # the ms column, its wrapped pieces joined
