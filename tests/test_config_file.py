"""The configuration file setup reads: the shipped example is a whole real
site's, every example of the reference is accepted, and every bad field is
refused naming the field and the fix, before anything is saved."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments import schema
from deployments.reference import EXAMPLES
from deployments.setup import PROJECT_DIR, ConfigError, SetupConfig, build_blocks, load_config

EXAMPLE = PROJECT_DIR / "deployments" / "example-config.yaml"
SECRETS = {
    "ANTELOPE_HA_SMTP_PASSWORD": "smtp-password",
    "ANTELOPE_HA_SMS_TOKEN": "sms-token",
    "ANTELOPE_HA_GATEWAY_KEY": "gateway-key",
    "ANTELOPE_HA_TELEGRAM_TOKEN": "123456789:AAbbccddeeffgghhiijjkkllmmnnoopp",  # the form Telegram gives out
}
# Fields the example leaves out, and why: each is an alternative to one it shows.
NOT_IN_EXAMPLE = {
    "main.ssh.private_key": "the example uses key_filename: a key in the file would be a secret in the file",
    "main.ssh.passphrase": "as private_key",
    "backup.ssh.private_key": "as main",
    "backup.ssh.passphrase": "as main",
    "notify.webhooks[].form_data": "instead of json_data; shown in the reference's examples",
    "operators[].totp_secret_env": "the example's operators are enrolled (totp_secret_block), a comment shows it",
}
DELETE = object()


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def written(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


FREE_MAPPINGS = {"headers", "json_data", "form_data", "secrets_env"}  # their keys are the operator's own


def paths_in(data: Any, prefix: str = "") -> set[str]:
    """Every key path of a YAML document, lists as ``[]``: main.ssh.port, notify.webhooks[].name, ..."""
    if isinstance(data, list):
        return set().union(*(paths_in(item, f"{prefix}[]") for item in data))
    if not isinstance(data, dict):
        return set()
    out = set()
    for key, value in data.items():
        path = f"{prefix}.{key}".lstrip(".")
        out |= {path} | (set() if key in FREE_MAPPINGS else paths_in(value, path))
    return out


def schema_paths() -> set[str]:
    return {f"{p}.{k}".lstrip(".") for s in schema.sections(SetupConfig) for p in s.paths for k in schema.keys(s.model)}


def test_the_example_writes_out_every_field_a_site_has() -> None:
    shown, known = paths_in(example()), schema_paths()
    assert shown <= known, f"not in the schema: {sorted(shown - known)}"
    missing = known - shown - set(NOT_IN_EXAMPLE)
    assert not missing, f"add to deployments/example-config.yaml: {sorted(missing)}"
    assert set(NOT_IN_EXAMPLE) <= known


def test_the_example_is_accepted_and_builds_every_block() -> None:
    config = load_config(EXAMPLE)
    for site in (config.main, config.backup):
        assert site.path_prepend and site.orb and site.python == "/usr/bin/python3"
        assert site.site_tool_command()[-1] == "/export/home/rt/rtsystem/ha/antelope-ha-site.pyz"
    blocks = build_blocks(config)
    assert blocks.email.username == "antelope-ha" and blocks.email.password.get_secret_value() == "smtp-password"
    assert [name for name, _ in blocks.webhooks] == [f"{config.pair}--sms-gateway", f"{config.pair}--oncall-chat"]
    assert blocks.webhooks[1][1].url.get_secret_value() == f"tgram://{SECRETS['ANTELOPE_HA_TELEGRAM_TOKEN']}/-1001234567890"
    assert blocks.pair.notify.webhooks == [f"custom-webhook/{config.pair}--sms-gateway",
                                           f"apprise-url/{config.pair}--oncall-chat"]


@pytest.mark.parametrize("title, text", EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_every_example_of_the_reference_is_accepted(tmp_path: Path, title: str, text: str) -> None:
    data = {**example(), **yaml.safe_load(text)}
    config = load_config(written(tmp_path, data))
    blocks = build_blocks(config)
    email = config.notify.email
    if email is not None:
        assert blocks.email.smtp_port == email.port and blocks.email.smtp_type.name == email.smtp_type
        assert (blocks.email.username, blocks.email.password.get_secret_value()) == (
            (email.username, SECRETS[email.password_env]) if email.username else (None, ""))
    assert len(blocks.webhooks) == len(config.notify.webhooks)


@pytest.mark.parametrize("smtp_type, port", [("SSL", 465), ("STARTTLS", 587), ("INSECURE", 25)])
def test_the_smtp_port_follows_the_tls_mode_unless_given(tmp_path: Path, smtp_type: str, port: int) -> None:
    data = example()
    data["notify"]["email"] = {"smtp_server": "relay", "smtp_type": smtp_type, "from": "a@b", "to": ["c@d"]}
    assert build_blocks(load_config(written(tmp_path, data))).email.smtp_port == port
    data["notify"]["email"]["smtp_port"] = 2525
    assert build_blocks(load_config(written(tmp_path, data))).email.smtp_port == 2525


def changed(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    node = data
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


BAD = [  # (field changed, new value, the field the error names, words of the message or the fix)
    ("pair", "Bad Name", "pair", "write a value matching"),
    ("main.host", DELETE, "main.host", "add `host:`: host name or address"),
    ("main.hots", "x", "main.hots", "did you mean `host`?"),
    ("main.transport", "telnet", "main.transport", "write one of 'ssh' or 'local'"),
    ("main.idserver_address", "antelope-ms.example.org", "main.idserver_address", "host:port"),
    ("main.ssh", DELETE, "main", "transport is ssh but no ssh settings"),
    ("main.ssh.port", 0, "main.ssh.port", "that is >= 1, <= 65535"),
    ("main.ssh.known_hosts", DELETE, "main.ssh.known_hosts", "add `known_hosts:`"),
    ("main.writer_tasks", ["orb2dbt; rm -rf /"], "main.writer_tasks", "rtexec task name must match"),
    ("main.path_prepend", "/export/home/rt/bin", "main.path_prepend", "write list of texts"),
    ("main.site_tool", "", "main.site_tool", "at least 1 long"),
    ("main.max_orb_latency_s", "soon", "main.max_orb_latency_s", "write a number"),
    ("backup.name", "ms", "(top level)", "main.name and backup.name are both 'ms'"),
    ("backup", DELETE, "backup", "add the `backup:` section"),
    ("witness", DELETE, "witness", "add the `witness:` section"),
    ("policy.failures_before_failover", 0, "policy.failures_before_failover", ">= 1"),
    ("policy.require_fence", "maybe", "policy.require_fence", "write true/false"),
    ("schedules.replicate_lastid_s", 0, "schedules.replicate_lastid_s", ">= 1"),
    ("schedules.every", 5, "schedules.every", "this section takes: replicate_lastid_s"),
    ("notify.ui_url", "prefect.example.org:4200", "notify.ui_url", "matching `^https?://`"),
    ("notify.email.smtp_type", "TLS", "notify.email.smtp_type", "'SSL', 'STARTTLS' or 'INSECURE'"),
    ("notify.email.smtp_port", 70000, "notify.email.smtp_port", "<= 65535"),
    ("notify.email.from", "oncall", "notify.email.from", "matching"),
    ("notify.email.to", [], "notify.email.to", "give at least 1 entries"),
    ("notify.email.to", ["oncall"], "notify.email.to", "not an email address: 'oncall'"),
    ("notify.email.password_env", DELETE, "notify.email", "password_env is not: name the environment variable"),
    ("notify.email.username", DELETE, "notify.email", "username is not: add the SMTP login"),
    ("notify.email.smtp_type", "INSECURE", "notify.email", "would send the password unencrypted"),
    ("notify.email.password_env", "smtp password", "notify.email.password_env", "matching"),
    ("notify.email.form", "a@b", "notify.email.form", "did you mean `from`?"),
    ("notify.webhooks.0.kind", "sms", "notify.webhooks.0.kind", "'custom-webhook' or 'apprise'"),
    ("notify.webhooks.0.url", "ftp://sms.example.org", "notify.webhooks.0", "write http://... or https://"),
    ("notify.webhooks.0.form_data", {"to": "x"}, "notify.webhooks.0", "give only one of them"),
    ("notify.webhooks.0.headers", {"Authorization": "Bearer {{tokn}}"}, "notify.webhooks.0",
     "headers uses {{tokn}}, which nothing fills in: add secrets_env"),
    ("notify.webhooks.0.secrets_env", {"subject": "X"}, "notify.webhooks.0.secrets_env", "filled in by antelope-ha"),
    ("notify.webhooks.0.secrets_env", {"token": "sms token"}, "notify.webhooks.0.secrets_env",
     "not an environment variable name"),
    ("notify.webhooks.0.timeout_s", 0, "notify.webhooks.0.timeout_s", "> 0"),
    ("notify.webhooks.1.name", "sms-gateway", "notify.webhooks", "webhook names must be unique"),
    ("notify.webhooks.1.method", "POST", "notify.webhooks.1", "only for kind custom-webhook"),
    ("notify.webhooks.1.url", "tgram://{{token}}/1", "notify.webhooks.1", "url uses {{token}}, which nothing fills in"),
]


@pytest.mark.parametrize("field, value, named, words", BAD, ids=[f"{b[0]}=" + ("<deleted>" if b[1] is DELETE else repr(b[1]))[:60] for b in BAD])
def test_every_bad_field_is_named_with_the_fix(tmp_path: Path, field: str, value: Any, named: str,
                                               words: str) -> None:
    path = written(tmp_path, changed(example(), field, value))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}: " in text and "nothing was saved" in text
    line = next((line for line in text.splitlines() if line.startswith(f"  {named}: ")), None)
    assert line is not None, f"no line for {named}:\n{text}"
    entry = text[text.index(line):].split("\n  ", 2)
    assert entry[1].startswith("    fix: "), text  # every problem comes with its fix
    assert words in line + entry[1], text


def test_an_apprise_url_apprise_cannot_use_is_refused_before_anything_is_saved(tmp_path: Path) -> None:
    config = load_config(written(tmp_path, changed(example(), "notify.webhooks.1.url", "nosuch://gateway/x")))
    with pytest.raises(ConfigError, match=r"notify.webhooks.1: Apprise does not understand 'nosuch://gateway/x'"):
        build_blocks(config, "pair.yaml")


@pytest.mark.parametrize("variable, field", [("ANTELOPE_HA_SMTP_PASSWORD", "notify.email.password_env"),
                                             ("ANTELOPE_HA_TELEGRAM_TOKEN", "notify.webhooks.1.secrets_env.bot_token")])
def test_a_secret_named_but_not_exported_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                    field: str) -> None:
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigError, match=f"{field}: environment variable {variable} is not set\n"
                                          f"      fix: export {variable}=... before setup"):
        load_config(EXAMPLE)


def test_a_file_that_is_not_a_mapping_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "pair.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping .* start from deployments/example-config.yaml"):
        load_config(path)
