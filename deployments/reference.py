"""The configuration reference, generated from the schema ``setup`` validates:
``python -m deployments.reference > docs/configuration.md``. A test
regenerates it and fails on any difference, and checks every example in it,
so it cannot drift from what setup accepts."""
from __future__ import annotations

import sys

from deployments import schema
from deployments.setup import SetupConfig

# Notification set-ups operators ask for; each is checked by the tests against setup.
EXAMPLES: list[tuple[str, str]] = [
    ("Mail through a relay that wants STARTTLS and a login (port 587)", """\
notify:
  email:
    smtp_server: smtp.example.org
    smtp_type: STARTTLS
    username: antelope-ha
    password_env: ANTELOPE_HA_SMTP_PASSWORD
    from: antelope-ha@example.org
    to: [seismic-oncall@example.org]
"""),
    ("Mail over TLS from the start (SSL, port 465) with a login", """\
notify:
  email:
    smtp_server: smtp.example.org
    smtp_type: SSL
    smtp_port: 465
    username: antelope-ha
    password_env: ANTELOPE_HA_SMTP_PASSWORD
    from: antelope-ha@example.org
    to: [seismic-oncall@example.org, duty-seismologist@example.org]
"""),
    ("Mail through the site's relay without login (no TLS, port 25)", """\
notify:
  email:
    smtp_server: mailrelay.example.org
    smtp_type: INSECURE
    from: antelope-ha@example.org
    to: [seismic-oncall@example.org]
"""),
    ("An SMS gateway taking a JSON POST with a bearer token", """\
notify:
  webhooks:
    - name: sms-gateway
      kind: custom-webhook
      url: https://sms.example.org/api/v1/send
      headers: {Authorization: "Bearer {{token}}"}
      json_data: {to: ["+10000000000"], text: "{{subject}}\\n{{body}}"}
      secrets_env: {token: ANTELOPE_HA_SMS_TOKEN}
"""),
    ("A gateway taking a form POST, its key in the URL", """\
notify:
  webhooks:
    - name: sms-form
      kind: custom-webhook
      url: "https://gateway.example.org/send?key={{key}}"
      form_data: {to: "+10000000000", message: "{{subject}}: {{body}}"}
      secrets_env: {key: ANTELOPE_HA_GATEWAY_KEY}
"""),
    ("Any Apprise URL, e.g. JSON to an HTTP endpoint, or a chat with its token from the environment", """\
notify:
  webhooks:
    - name: noc-json
      kind: apprise
      url: json://noc.example.org/antelope-ha
    - name: oncall-chat
      kind: apprise
      url: "tgram://{{bot_token}}/-1001234567890"
      secrets_env: {bot_token: ANTELOPE_HA_TELEGRAM_TOKEN}
"""),
]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the schema `antelope-ha setup` validates (`python -m deployments.reference`).",
             "The file is YAML (or JSON); `deployments/example-config.yaml` is a complete example.",
             "Setup checks all of it, the secrets it names, the Prefect server and both sites before it",
             "saves anything; each problem names its field (e.g. `main.ssh.known_hosts`) and the fix.", ""]
    for section in schema.sections(SetupConfig):
        where = ", ".join(f"`{p}`" for p in section.paths if p)
        lines += [f"## {where + ': ' if where else ''}{section.title}", ""]
        body = schema.split_doc(section.model.__doc__)[1] if section.paths != ("",) else ""
        if body:
            lines += [body, ""]
        lines += ["| field | type | default | limits | meaning |", "|---|---|---|---|---|"]
        for name, field in section.model.model_fields.items():
            lines.append(f"| `{schema.key_of(name, field)}` | {_cell(schema.yaml_type(field.annotation))} | "
                         f"{_cell(schema.default_text(field))} | {_cell(schema.limits(field))} | "
                         f"{_cell(field.description or '')} |")
        lines.append("")
    lines += ["## Examples", "", "Each is a section of the file; the tests check that setup accepts every one.", ""]
    for title, text in EXAMPLES:
        lines += [f"### {title}", "", "```yaml", text.rstrip("\n"), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(reference())
