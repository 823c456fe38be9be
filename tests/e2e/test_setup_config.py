"""deployments.setup: the configuration file is validated before anything is
saved, and every problem names its field; the shipped example is valid."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deployments.setup import (
    PROJECT_DIR, ConfigError, format_environment, load_config, render_prefect_file, server_environment,
)

EXAMPLE = PROJECT_DIR / "deployments" / "example-config.yaml"
EXAMPLE_SECRETS = ("ANTELOPE_HA_SMTP_PASSWORD", "ANTELOPE_HA_SMS_TOKEN", "ANTELOPE_HA_TELEGRAM_TOKEN")


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every secret the example names, exported."""
    for name in EXAMPLE_SECRETS:
        monkeypatch.setenv(name, "s")


def test_every_wrong_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"pair": "Bad Name", "main": {"name": "ms"}, "witness": {"host": "w"},
                                    "notify": {"email": {"smtp_server": "smtp", "to": []}}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for field_path in ("pair", "main.host", "backup", "notify.email.to", "notify.email.from"):
        assert f"  {field_path}:" in str(err.value), str(err.value)
    assert str(path) in str(err.value)


def test_a_secret_named_but_not_exported_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTELOPE_HA_SMTP_PASSWORD", raising=False)
    monkeypatch.setenv("ANTELOPE_HA_SMS_TOKEN", "t")
    with pytest.raises(ConfigError, match="notify.email.password_env: environment variable "
                                          "ANTELOPE_HA_SMTP_PASSWORD is not set"):
        load_config(EXAMPLE)


def test_example_is_valid_and_fills_the_pair_into_every_deployment(secrets: None) -> None:
    config = load_config(EXAMPLE)
    project = render_prefect_file(config)
    assert {d["parameters"]["pair_name"] for d in project["deployments"]} == {config.pair}
    by_flow = {d["entrypoint"].rpartition(":")[2]: d for d in project["deployments"]}
    watch = by_flow["watch"]
    assert [s["interval"] for s in watch["schedules"]] == [config.schedules.watch_period_s]
    assert watch["parameters"]["heartbeat_s"] == config.schedules.heartbeat_s
    assert watch["parameters"]["replicate_s"] == config.schedules.replicate_lastid_s
    assert "concurrency_limit" not in watch  # a successor starts while its predecessor still watches
    # the watcher is the only scheduled run, and nothing but the watcher (or a person) starts a failover
    assert [name for name, d in by_flow.items() if d.get("schedules")] == ["watch"]
    assert not any(d.get("triggers") for d in project["deployments"])


def test_the_server_environment_keeps_what_retention_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secrets: None) -> None:
    """The lines setup writes for the server are read back by Prefect as the retention configured."""
    from prefect.settings import Settings

    data = yaml.safe_load(EXAMPLE.read_text())
    data["retention"] = {"flow_runs_days": 14, "events_days": 3, "heartbeats_days": 0.5}
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(data))
    environment = server_environment(load_config(path))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    server = Settings().server
    assert server.services.db_vacuum.enabled_vacuum_types >= {"events", "flow_runs"}
    assert server.services.db_vacuum.retention_period.total_seconds() == 14 * 86400
    assert server.events.retention_period.total_seconds() == 3 * 86400
    assert {k: v.total_seconds() for k, v in server.services.db_vacuum.event_retention_overrides.items()} == {
        "antelope-ha.watcher.heartbeat": 43200, "prefect.flow-run.heartbeat": 43200}
    assert server.analytics_enabled is False
    assert format_environment(environment).count("\n") == len(environment)


def test_silence_must_be_longer_than_a_heartbeat(tmp_path: Path, secrets: None) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["schedules"] = {"heartbeat_s": 60, "watcher_silent_s": 30}
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="schedules: .*watcher_silent_s \\(30\\) must be longer than heartbeat_s"):
        load_config(path)


def test_json_is_read_too(tmp_path: Path, secrets: None) -> None:
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(yaml.safe_load(EXAMPLE.read_text())))
    assert load_config(path).pair == load_config(EXAMPLE).pair
