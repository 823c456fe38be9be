"""deployments.setup: the configuration file is validated before anything is
saved, and every problem names its field; the shipped example is valid."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from antelope_ha.approvers import new_secret
from deployments.setup import (
    PROJECT_DIR, ConfigError, format_environment, load_config, render_prefect_file, server_credential,
    server_environment,
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
    """The lines setup writes for the server are read back by Prefect as the retention configured,
    with the leases of concurrency slots on disk."""
    from prefect.settings import PREFECT_API_AUTH_STRING, Settings, temporary_settings

    data = yaml.safe_load(EXAMPLE.read_text())
    data["retention"] = {"flow_runs_days": 14, "events_days": 3, "heartbeats_days": 0.5}
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(data))
    with temporary_settings(updates={PREFECT_API_AUTH_STRING: "a-credential-of-24-chars"}):
        environment = server_environment(load_config(path)) | server_credential()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    server = Settings().server
    assert server.api.auth_string.get_secret_value() == "a-credential-of-24-chars"
    assert server.api.csrf_protection_enabled is True
    assert server.services.db_vacuum.enabled_vacuum_types >= {"events", "flow_runs"}
    assert server.services.db_vacuum.retention_period.total_seconds() == 14 * 86400
    assert server.events.retention_period.total_seconds() == 3 * 86400
    assert {k: v.total_seconds() for k, v in server.services.db_vacuum.event_retention_overrides.items()} == {
        "antelope-ha.watcher.heartbeat": 43200, "prefect.flow-run.heartbeat": 43200}
    assert server.analytics_enabled is False
    assert server.concurrency.lease_storage == "prefect.server.concurrency.lease_storage.filesystem"
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


@pytest.mark.parametrize("credential, why", [
    (None, "PREFECT_API_AUTH_STRING is not set"), ("short", "at least 16 characters"),
    ("it's-a-long-credential", "without quotes"),
])
def test_the_server_credential_is_the_clients_and_a_usable_one(credential: str | None, why: str) -> None:
    from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

    with temporary_settings(updates={PREFECT_API_AUTH_STRING: credential}), pytest.raises(ConfigError, match=why):
        server_credential()


@pytest.mark.parametrize("operator, why", [
    ({"name": "grace", "contact": "g@example.org"}, "give one of totp_secret_env .* or totp_secret_block"),
    ({"name": "grace", "contact": "g@example.org", "totp_secret_env": "A", "totp_secret_block": "b"},
     "give one of totp_secret_env"),
    ({"name": "Grace Hopper", "contact": "g@example.org", "totp_secret_block": "b"}, "operators.0.name"),
    ({"name": "grace", "contact": "g@example.org", "totp_secret_env": "E2E_UNSET_TOTP"},
     "operators.0.totp_secret_env: environment variable E2E_UNSET_TOTP is not set"),
    ({"name": "grace", "contact": "g@example.org", "totp_secret_env": "E2E_BAD_TOTP"},
     "E2E_BAD_TOTP does not hold a TOTP secret"),
])
def test_each_operator_names_one_place_for_their_secret(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secrets: None, operator: dict, why: str) -> None:
    monkeypatch.setenv("E2E_BAD_TOTP", "not base32!")
    data = yaml.safe_load(EXAMPLE.read_text())
    data["operators"] = [operator]
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=why):
        load_config(path)


def test_operators_go_into_the_pair_with_where_their_secret_is(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secrets: None) -> None:
    from deployments.setup import build_blocks

    from tests.test_config_file import SECRETS

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    secret = new_secret()
    monkeypatch.setenv("E2E_TOTP_IVAN", secret)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["operators"].append({"name": "ivan", "contact": "ivan@example.org", "totp_secret_env": "E2E_TOTP_IVAN"})
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    blocks = build_blocks(config)
    assert [(o.name, o.secret_block) for o in blocks.pair.operators] == [
        ("grace", "default-totp-grace"), ("heidi", "default-totp-heidi"), ("ivan", "default-totp-ivan")]
    assert blocks.secrets == [("default-totp-ivan", secret)]  # saved by setup; the others are enrolled
    assert config.operator_problems() == []
    alone = config.model_copy(update={"operators": config.operators[:1]})
    assert "two_people_for_fallback needs two listed operators" in alone.operator_problems()[0]
