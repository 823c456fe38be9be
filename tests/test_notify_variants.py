"""Each way of reaching the operators, set up by ``antelope-ha setup`` from its
configuration on the real test server, delivers to a real receiver: mail with
and without a login, over STARTTLS, TLS from the start and no TLS, Apprise
URLs and HTTP webhooks. A value a block refuses stops setup before anything
is saved."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.setup import ConfigError, setup
from tests.servers import HttpReceiver, SmtpReceiver

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SITE = {"transport": "local", "rtexec_dir": "/rt", "python": "/usr/bin/python3"}
EMAIL = {"from": "antelope-ha@example.org", "to": ["oncall@example.org"]}


def config(pair: str, notify: dict[str, Any]) -> dict[str, Any]:
    return {"pair": pair, "witness": {"host": "witness"}, "notify": {"ui_url": "http://prefect:4200", **notify},
            "main": {"name": "ms", "host": "ms", "idserver_address": "ms:2498", **SITE},
            "backup": {"name": "bus", "host": "bus", "idserver_address": "bus:2498", **SITE}}


def set_up(tmp_path: Path, data: dict[str, Any]) -> None:
    """What an operator runs: setup on the file (the sites are not contacted here)."""
    path = tmp_path / f"{data['pair']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    setup(path, apply_deployments=False, site_tool=False)


def send_test_message(pair: str) -> list[str]:
    """docs/operating.md, section 6: the operators' test of the saved targets."""
    from blocks.pair import AntelopePair
    from tasks.notify import send

    targets = AntelopePair.load(pair, _sync=True).notify
    return send(targets, f"[antelope-ha {pair}] test", "notification test", logging.getLogger("test"))


@pytest.mark.parametrize("tls, login, smtp", [
    ("starttls", True, {"smtp_type": "STARTTLS"}),
    ("ssl", True, {"smtp_type": "SSL"}),
    ("starttls", False, {"smtp_type": "STARTTLS"}),
    ("none", False, {"smtp_type": "INSECURE"}),
], ids=["starttls-login", "ssl-login", "starttls-relay-without-login", "plain-relay-without-login"])
def test_mail_reaches_the_server_as_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: str,
                                               login: bool, smtp: dict[str, Any]) -> None:
    server = SmtpReceiver(tmp_path / "smtp", tls=tls, login=login)
    server.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_path))  # trust the test CA, as hosts trust a relay's
        monkeypatch.setenv("VARIANT_SMTP_PASSWORD", server.password)
        email = {"smtp_server": "127.0.0.1", "smtp_port": server.port, **smtp, **EMAIL}
        if login:
            email.update(username=server.username, password_env="VARIANT_SMTP_PASSWORD")
        pair = f"mail-{tls}-{'login' if login else 'relay'}"
        set_up(tmp_path, config(pair, {"email": email}))
        assert send_test_message(pair) == []
        assert [m["Subject"] for m in server.messages] == [f"[antelope-ha {pair}] test"]
        assert server.messages[0]["X-Envelope-To"] == "oncall@example.org"
        assert len(server.logins) == (1 if login else 0), server.logins  # a relay without login sees no attempt
    finally:
        server.stop()


def test_a_wrong_smtp_password_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = SmtpReceiver(tmp_path / "smtp")
    server.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_path))
        monkeypatch.setenv("VARIANT_SMTP_PASSWORD", "wrong")
        set_up(tmp_path, config("mail-wrong-password", {"email": {
            "smtp_server": "127.0.0.1", "smtp_port": server.port, "username": server.username,
            "password_env": "VARIANT_SMTP_PASSWORD", **EMAIL}}))
        assert send_test_message("mail-wrong-password") == ["email:mail-wrong-password-smtp"]
        assert server.messages == []
    finally:
        server.stop()


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def test_an_apprise_url_with_its_secret_from_the_environment(tmp_path: Path, http: HttpReceiver,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VARIANT_APPRISE_PATH", "secret-path")
    url = http.url.replace("http://", "json://") + "/hooks/{{path}}"
    set_up(tmp_path, config("apprise", {"webhooks": [
        {"name": "noc", "kind": "apprise", "url": url, "secrets_env": {"path": "VARIANT_APPRISE_PATH"}}]}))
    assert send_test_message("apprise") == []
    [request] = http.requests
    assert request["path"] == "/hooks/secret-path"
    assert request["json"]["title"] == "[antelope-ha apprise] test" and request["json"]["message"] == "notification test"


@pytest.mark.parametrize("body", [
    {"json_data": {"to": "+10000000000", "text": "{{subject}}: {{body}}"}},
    {"form_data": {"to": "+10000000000", "text": "{{subject}}: {{body}}"}},
], ids=["json", "form"])
def test_a_webhook_posts_with_its_token(tmp_path: Path, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch,
                                        body: dict[str, Any]) -> None:
    monkeypatch.setenv("VARIANT_SMS_TOKEN", "sms-token")
    kind = next(iter(body))
    set_up(tmp_path, config(f"webhook-{kind.partition('_')[0]}", {"webhooks": [
        {"name": "sms", "kind": "custom-webhook", "url": f"{http.url}/sms/send",
         "headers": {"Authorization": "Bearer {{token}}"}, "secrets_env": {"token": "VARIANT_SMS_TOKEN"}, **body}]}))
    assert send_test_message(f"webhook-{kind.partition('_')[0]}") == []
    [request] = http.requests
    assert request["path"] == "/sms/send" and request["headers"]["Authorization"] == "Bearer sms-token"
    text = f"[antelope-ha webhook-{kind.partition('_')[0]}] test: notification test"
    if kind == "json_data":
        assert request["json"] == {"to": "+10000000000", "text": text}
    else:
        assert "text=" in request["json"] and "notification+test" in request["json"]


def test_a_value_a_block_refuses_stops_setup_before_anything_is_saved(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The mail block comes first and is valid; the Apprise URL after it is not:
    neither it nor the pair may be saved."""
    from prefect.blocks.core import Block

    from blocks.pair import AntelopePair

    monkeypatch.setenv("VARIANT_SMTP_PASSWORD", "p")
    data = config("refused", {"email": {"smtp_server": "smtp", "username": "u",
                                        "password_env": "VARIANT_SMTP_PASSWORD", **EMAIL},
                              "webhooks": [{"name": "chat", "kind": "apprise", "url": "nosuch://chat/room"}]})
    with pytest.raises(ConfigError, match=r"notify.webhooks.0: Apprise does not understand 'nosuch://chat/room'"):
        set_up(tmp_path, data)
    for load in (lambda: AntelopePair.load("refused", _sync=True),
                 lambda: Block.load("email-server-credentials/refused-smtp", _sync=True)):
        with pytest.raises(ValueError, match="Unable to find block document"):
            load()
