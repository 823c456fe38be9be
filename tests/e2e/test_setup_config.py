"""deployments.setup: the configuration file is validated before anything is
saved, and every problem names its field; the shipped example is valid."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deployments.setup import PROJECT_DIR, ConfigError, load_config, render_prefect_file

EXAMPLE = PROJECT_DIR / "deployments" / "example-config.yaml"


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


def test_example_is_valid_and_fills_the_pair_into_every_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTELOPE_HA_SMTP_PASSWORD", "p")
    monkeypatch.setenv("ANTELOPE_HA_SMS_TOKEN", "t")
    monkeypatch.setenv("ANTELOPE_HA_TELEGRAM_TOKEN", "t")
    config = load_config(EXAMPLE)
    project = render_prefect_file(config)
    assert {d["parameters"]["pair_name"] for d in project["deployments"]} == {config.pair}
    health = next(d for d in project["deployments"] if d["name"] == "health")
    assert health["schedules"][0]["interval"] == config.policy.probe_interval_s
    failover = next(d for d in project["deployments"] if d["name"] == "failover")
    assert failover["triggers"][0]["parameters"]["pair_name"] == "{{ event.resource['antelope-ha.pair'] }}"


def test_json_is_read_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTELOPE_HA_SMTP_PASSWORD", "p")
    monkeypatch.setenv("ANTELOPE_HA_SMS_TOKEN", "t")
    monkeypatch.setenv("ANTELOPE_HA_TELEGRAM_TOKEN", "t")
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(yaml.safe_load(EXAMPLE.read_text())))
    assert load_config(path).pair == load_config(EXAMPLE).pair
