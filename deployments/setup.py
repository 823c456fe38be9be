"""Set up antelope-ha on a Prefect server from one configuration file.

    PREFECT_API_URL=http://prefect-host:4200/api python -m deployments.setup config.yaml

Checks everything first and saves nothing until all of it passes: the file
(every problem names its field and the fix), the secrets it names in the
environment, every block built from it, the Prefect server, and both sites
(SSH login, the site's python3 runs the site tool). Then:

1. copies the site tool (the id checks, one standard-library-only file) to
   each site over SFTP, where the site's own python3 runs it;
2. saves the notification blocks: an ``EmailServerCredentials`` block
   (prefect-email) and its ``EmailNotification`` for automations, and one
   Prefect notification block per webhook (an SMS gateway's JSON POST, or any
   Apprise URL);
3. saves the ``AntelopePair`` block (sites, witness, policy, who to notify);
4. creates the pair's two process work pools (one per data centre) if missing;
5. applies ``deployments/prefect.yaml`` for this pair: every deployment is
   named after the pair (``watch/<pair>``, ``failover/<pair>``, ...) and runs
   with its name; a watcher run starts every ``schedules.watch_period_s``
   and copies lastid every ``schedules.replicate_lastid_s``;
6. saves two automations: one starts a new watcher when a watcher run
   crashes, the other (the dead-man's switch) tells the operators, through
   the same notification blocks, when no watcher heartbeat arrives for
   ``schedules.watcher_silent_s``, and asks for a new watcher;
7. starts a watcher now, so that a changed configuration is watched at once
   (it takes over from the one running);
8. checks that the server vacuums old flow runs and events as
   ``retention`` says, and writes the server's environment for that with
   ``--server-env FILE``: setup cannot restart the server itself.

Every deployment, pool, block, limit, automation and event of a pair carries
the pair's name (antelope_ha/names.py), so several pairs share one server
side by side. Deployments and pools of an earlier release, whose names did
not, are reported with the fix, never deleted.

Secrets never sit in the file: the SMTP password and webhook secrets are read
from the environment variables the file names, when setup runs, and stored in
the blocks as secret fields. Running setup again updates everything in place;
the pair's state record (who is authoritative) is never touched.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from antelope_ha.approvers import OPERATOR_NAME, Approver, new_secret, provisioning_uri, secret_block_name, valid_secret
from antelope_ha.config import PairConfig, PairPolicy, SiteConfig, WitnessConfig, check_distinct
from antelope_ha.names import (
    FLOWS, LEGACY_DEPLOYMENTS, LEGACY_POOLS, LEGACY_WORKER_UNITS, PAIR_NAME, SITES, TEMPLATE_PAIR, WATCH_FLOW,
    PairNames,
)
from deployments import schema

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

PROJECT_DIR = Path(__file__).resolve().parent.parent
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
# The workers' environment (docs/operating.md): a run asked for (a replacement
# watcher, a procedure started by hand) is taken within 2 s; no usage data sent.
WORKER_ENV = {"PREFECT_WORKER_QUERY_SECONDS": "2", "DO_NOT_TRACK": "1"}
BLOCK_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
SMTP_PORTS = {"SSL": 465, "STARTTLS": 587, "INSECURE": 25}
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{\{\s*([^}\s]+)\s*\}\}")
_TEMPLATE_KEYS = ("subject", "body", "name")  # what Prefect fills into a webhook's templates itself


class ConfigError(ValueError):
    """The configuration file cannot be used as it is."""


class EmailSettings(BaseModel):
    """The SMTP server the operators' mail goes through (prefect-email)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    smtp_server: str = Field(..., min_length=1, description="SMTP host name or address")
    smtp_port: int | None = Field(
        None, ge=1, le=65535, description="the server's port; by default 465 for SSL, 587 for STARTTLS, 25 for INSECURE"
    )
    smtp_type: Literal["SSL", "STARTTLS", "INSECURE"] = Field(
        "STARTTLS", description="SSL (TLS from the start, usually port 465), STARTTLS (plain, then TLS: 587), "
                                "INSECURE (no TLS: a relay on a trusted network, usually 25)"
    )
    username: str | None = Field(None, min_length=1, description="SMTP login; leave out for a relay without login")
    password_env: str | None = Field(
        None, pattern=_ENV_NAME.pattern,
        description="environment variable holding the SMTP password when setup runs (with username)"
    )
    verify: bool = Field(True, description="check the server's TLS certificate")
    sender: str = Field(..., alias="from", pattern=_ADDRESS.pattern, description="From: address")
    to: list[str] = Field(..., min_length=1, description="operators' addresses")

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not _ADDRESS.match(a)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(map(repr, bad))}; write each as name@domain")
        return v

    @model_validator(mode="after")
    def _login(self) -> EmailSettings:
        if self.username and not self.password_env:
            raise ValueError(f"username {self.username!r} is set but password_env is not: name the environment "
                             "variable holding the password (password_env: ANTELOPE_HA_SMTP_PASSWORD), or leave "
                             "out username for a relay without login")
        if self.password_env and not self.username:
            raise ValueError("password_env is set but username is not: add the SMTP login (username: ...), or "
                             "leave out password_env for a relay without login")
        if self.username and self.smtp_type == "INSECURE":
            raise ValueError("a login over smtp_type INSECURE would send the password unencrypted: use "
                             "smtp_type STARTTLS (port 587) or SSL (465), or leave out username and password_env")
        return self

    @property
    def port(self) -> int:
        return self.smtp_port or SMTP_PORTS[self.smtp_type]


class WebhookSettings(BaseModel):
    """One more way to reach the operators, e.g. an SMS gateway or a chat.

    ``custom-webhook``: an HTTP request whose ``url``, ``headers``,
    ``json_data`` and ``form_data`` may use ``{{subject}}``, ``{{body}}`` and
    the names in ``secrets_env`` (Prefect's CustomWebhookNotificationBlock).
    ``apprise``: any Apprise URL, e.g. ``json://gateway/path`` or
    ``tgram://{{token}}/chat`` (an ``AppriseUrl`` block, blocks/pair.py);
    placeholders in the URL are filled from ``secrets_env`` when setup runs.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=BLOCK_NAME, description="the webhook's name; its notification block is "
                                                           "saved as <pair>--<name>")
    kind: Literal["custom-webhook", "apprise"] = Field(..., description="custom-webhook or apprise")
    url: str = Field(..., min_length=3, description="where to send: http(s):// for custom-webhook, an Apprise URL")
    method: Literal["GET", "POST", "PUT", "PATCH"] | None = Field(None, description="custom-webhook: HTTP method "
                                                                                    "(POST when left out)")
    headers: dict[str, str] | None = Field(None, description="custom-webhook: HTTP headers")
    json_data: dict[str, Any] | None = Field(None, description="custom-webhook: JSON body")
    form_data: dict[str, str] | None = Field(None, description="custom-webhook: form body (instead of json_data)")
    timeout_s: float = Field(10.0, gt=0, le=120, description="custom-webhook: limit for one request")
    secrets_env: dict[str, str] = Field(
        default_factory=dict, description="placeholder name -> environment variable holding the secret"
    )

    @field_validator("secrets_env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, var in v.items():
            if not _ENV_NAME.match(var):
                raise ValueError(f"{name}: {var!r} is not an environment variable name (letters, digits, _)")
            if name in _TEMPLATE_KEYS:
                raise ValueError(f"{name!r} is filled in by antelope-ha itself; name the secret otherwise")
        return v

    @model_validator(mode="after")
    def _fits_kind(self) -> WebhookSettings:
        if self.kind == "apprise":
            given = [f for f in ("method", "headers", "json_data", "form_data") if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only for kind custom-webhook; an Apprise URL carries "
                                 "everything itself: remove them")
            templates = {"url": self.url}
        else:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url {self.url!r}: a custom-webhook posts over HTTP: write http://... or "
                                 "https://..., or use kind apprise for other URLs")
            if self.json_data is not None and self.form_data is not None:
                raise ValueError("json_data and form_data: give only one of them")
            templates = {"url": self.url, "headers": self.headers, "json_data": self.json_data,
                         "form_data": self.form_data}
        known = set(self.secrets_env) | (set(_TEMPLATE_KEYS) if self.kind == "custom-webhook" else set())
        for where, value in templates.items():
            for name in sorted(set(_PLACEHOLDER.findall(json.dumps(value))) - known):
                raise ValueError(f"{where} uses {{{{{name}}}}}, which nothing fills in: add secrets_env: "
                                 f"{{{name}: ENVIRONMENT_VARIABLE}}"
                                 + (", or use {{subject}} / {{body}}" if self.kind == "custom-webhook" else ""))
        return self


class NotifySettings(BaseModel):
    """Who hears about decisions, failures and approvals."""

    model_config = ConfigDict(extra="forbid")

    ui_url: str | None = Field(
        None, pattern=r"^https?://", description="the Prefect UI as operators reach it, for links to runs, "
                                                 "e.g. http://prefect:4200"
    )
    email: EmailSettings | None = Field(None, description="mail through an SMTP server")
    webhooks: list[WebhookSettings] = Field(default_factory=list, description="SMS gateways, chat, any Apprise URL")
    repeat_window_s: float = Field(
        900.0, ge=0, description="the same subject to the same channel at most once in this many seconds (a "
                                 "replicate failing every minute mails once); what was held back follows as one "
                                 "digest when the window ends. Approval requests are never held back. 0: no limit")

    @field_validator("webhooks")
    @classmethod
    def _unique(cls, v: list[WebhookSettings]) -> list[WebhookSettings]:
        names = [w.name for w in v]
        if len(names) != len(set(names)):
            raise ValueError(f"webhook names must be unique, got {names}")
        return v


class Schedules(BaseModel):
    """How often the scheduled procedures run."""

    model_config = ConfigDict(extra="forbid")

    replicate_lastid_s: float = Field(60.0, ge=1, description="how often MS's lastid is copied to BUS")
    watch_period_s: float = Field(3600.0, ge=300, description="how long one watcher run lasts before "
                                                              "the next takes over")
    heartbeat_s: float = Field(60.0, ge=5, le=3600, description="how often the watcher says it is alive")
    watcher_silent_s: float | None = Field(
        None, ge=15, description="no heartbeat for this long: the operators are told (default: 3 heartbeats)")

    @model_validator(mode="after")
    def _silence_after_heartbeats(self) -> Schedules:
        if self.watcher_silent_s is not None and self.watcher_silent_s <= self.heartbeat_s:
            raise ValueError(f"watcher_silent_s ({self.watcher_silent_s:g}) must be longer than heartbeat_s "
                             f"({self.heartbeat_s:g}), or every heartbeat would come too late")
        return self

    @property
    def silent_after_s(self) -> float:
        return self.watcher_silent_s or 3 * self.heartbeat_s


class MetricsSettings(BaseModel):
    """The watcher's Prometheus metrics (docs/operating.md, section 11)."""

    model_config = ConfigDict(extra="forbid")

    port: int | None = Field(None, ge=1, le=65535, description="serve the watcher's metrics on this port of the "
                                                               "BUS worker's host (not served when not given)")
    address: str = Field("127.0.0.1", description="the address they are served on (0.0.0.0: every interface)")


class Retention(BaseModel):
    """How long the Prefect server keeps what runs leave behind (its database vacuum)."""

    model_config = ConfigDict(extra="forbid")

    flow_runs_days: float = Field(30.0, ge=0.05, description="finished flow runs, their task runs and logs")
    events_days: float = Field(7.0, gt=0, description="events (decisions, state changes)")
    heartbeats_days: float = Field(1.0, gt=0, description="heartbeat events (the watcher's, Prefect's flow runs')")


class OperatorSettings(BaseModel):
    """One person who may answer approvals, with a second factor.

    Their TOTP secret (the one their authenticator app holds) comes from the
    environment variable ``totp_secret_env`` names when setup runs (setup
    keeps it in a Prefect Secret block), or is already in the Prefect Secret
    block ``totp_secret_block`` (``setup --enroll NAME`` makes one and shows
    the app's provisioning URI once)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=OPERATOR_NAME, description="the name they answer approvals with")
    contact: str = Field(..., min_length=3, description="how to reach them (mail address, phone)")
    totp_secret_env: str | None = Field(None, pattern=_ENV_NAME.pattern,
                                        description="environment variable holding their TOTP secret (base32) "
                                                    "when setup runs")
    totp_secret_block: str | None = Field(None, pattern=BLOCK_NAME,
                                          description="the Prefect Secret block holding their TOTP secret")

    @model_validator(mode="after")
    def _one_source(self) -> OperatorSettings:
        if (self.totp_secret_env is None) == (self.totp_secret_block is None):
            raise ValueError(f"operator {self.name}: give one of totp_secret_env (an environment variable holding "
                             "the secret) or totp_secret_block (a Secret block, e.g. made by setup --enroll)")
        return self


class SetupConfig(BaseModel):
    """Everything ``setup`` needs, in one file."""

    model_config = ConfigDict(extra="forbid")

    pair: str = Field(..., pattern=PAIR_NAME, max_length=63,
                      description="name of the pair: lower-case letters and digits, words joined by single "
                                  "dashes; every deployment, pool, block, limit and event of the pair carries it")
    main: SiteConfig = Field(..., description="the Main System (MS)")
    backup: SiteConfig = Field(..., description="the Backup System (BUS)")
    witness: WitnessConfig = Field(..., description="a third host BUS must reach before it takes over")
    policy: PairPolicy = Field(default_factory=PairPolicy, description="when to fail over, and the margins")
    notify: NotifySettings = Field(default_factory=NotifySettings, description="who to tell")
    schedules: Schedules = Field(default_factory=Schedules, description="how often scheduled procedures run")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings,
                                     description="the watcher's Prometheus metrics")
    retention: Retention = Field(default_factory=Retention,
                                 description="how long the Prefect server keeps runs and events")
    operators: list[OperatorSettings] = Field(default_factory=list,
                                              description="who may answer approvals (nobody when none)")

    @model_validator(mode="after")
    def _two_sites(self) -> SetupConfig:
        check_distinct(self.main.name, self.backup.name, [o.name for o in self.operators])
        return self

    def secret_block(self, operator: OperatorSettings) -> str:
        """Where the operator's TOTP secret is kept on the server."""
        return operator.totp_secret_block or secret_block_name(self.pair, operator.name)

    def approvers(self) -> list[Approver]:
        return [Approver(name=o.name, contact=o.contact, secret_block=self.secret_block(o)) for o in self.operators]

    def pair_config(self) -> PairConfig:
        """What the flows read of this configuration (the pair's block)."""
        return PairConfig(main=self.main, backup=self.backup, witness=self.witness, policy=self.policy,
                          operators=self.approvers())

    def operator_problems(self) -> list[str]:
        """What keeps the listed operators from approving as the policy asks."""
        if not self.operators:
            return ["no operators are listed: nobody can approve a fallback or a gated failover; add operators: "
                    "(docs/operating.md, section 4)"]
        if self.policy.two_people_for_fallback and len(self.operators) < 2:
            return [f"policy.two_people_for_fallback needs two listed operators, the file lists one "
                    f"({self.operators[0].name}): the fallback cannot pass its second gate"]
        return []


def load_config(path: Path) -> SetupConfig:
    """Read and validate the file and the secrets it names; a ConfigError lists
    every problem with its field and the fix."""
    path = Path(path)
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration {path}: {exc}") from None
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (pair, main, backup, witness, ...), got {type(data).__name__}; "
                          "start from deployments/example-config.yaml")
    try:
        config = SetupConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc.error_count()} problem(s), nothing was saved:\n"
                          + "\n".join(schema.problems(SetupConfig, exc))) from None
    _check_env(path, config)
    return config


def _check_env(path: Path, config: SetupConfig) -> None:
    """Every environment variable the file names must be set now."""
    wanted = []
    if config.notify.email and config.notify.email.password_env:
        wanted.append(("notify.email.password_env", config.notify.email.password_env))
    for i, hook in enumerate(config.notify.webhooks):
        wanted += [(f"notify.webhooks.{i}.secrets_env.{k}", v) for k, v in hook.secrets_env.items()]
    wanted += [(f"operators.{i}.totp_secret_env", o.totp_secret_env) for i, o in enumerate(config.operators)
               if o.totp_secret_env]
    missing = [f"  {field}: environment variable {var} is not set\n      fix: export {var}=... before setup"
               for field, var in wanted if not os.environ.get(var)]
    missing += [f"  operators.{i}.totp_secret_env: {o.totp_secret_env} does not hold a TOTP secret (base32)\n"
                f"      fix: export the secret of their authenticator app, or enroll them: setup --enroll {o.name}"
                for i, o in enumerate(config.operators)
                if o.totp_secret_env and os.environ.get(o.totp_secret_env) and not valid_secret(
                    os.environ[o.totp_secret_env])]
    if missing:
        raise ConfigError(f"{path}: secrets missing, nothing was saved:\n" + "\n".join(missing))


# --- the blocks, built (and so validated) before any is saved ---------------------------
@dataclass
class Blocks:
    """Every block setup saves, already validated."""

    email: Any = None
    email_alert: Any = None
    webhooks: list[tuple[str, Any]] = field(default_factory=list)
    pair: Any = None
    secrets: list[tuple[str, str]] = field(default_factory=list)  # operators' TOTP secrets: block name, secret


def _fill(template: str, secrets: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: secrets.get(m.group(1), m.group(0)), template)


def _webhook_block(hook: WebhookSettings) -> Any:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from blocks.pair import AppriseUrl

    secrets = {k: os.environ[v] for k, v in hook.secrets_env.items()}
    if hook.kind == "apprise":
        import apprise

        url = _fill(hook.url, secrets)
        if not apprise.Apprise().add(url):
            raise ValueError(f"Apprise does not understand {hook.url!r}: check the scheme and the parts after it "
                             "(https://github.com/caronc/apprise/wiki lists every service's URL form)")
        return AppriseUrl(url=url)
    return CustomWebhookNotificationBlock(
        name=hook.name, url=hook.url, method=hook.method or "POST", headers=hook.headers,
        json_data=hook.json_data, form_data=hook.form_data, timeout=hook.timeout_s, secrets=secrets,
    )


def build_blocks(config: SetupConfig, path: Path | str = "the configuration") -> Blocks:
    """Build every block from the configuration without saving any: a value a
    block refuses is a ConfigError naming the field."""
    from prefect_email import EmailServerCredentials

    from blocks.pair import AntelopePair, EmailNotification, NotifyTargets

    problems: list[str] = []
    blocks = Blocks()
    notify, names = config.notify, PairNames(config.pair)

    def attempt(where: str, make: Any) -> Any:
        try:
            return make()
        except Exception as exc:  # a block's own validation: ValidationError, ValueError, KeyError
            problems.append(f"  {where}: {exc}\n      fix: correct {where} (docs/configuration.md)")
            return None

    targets: dict[str, Any] = {"ui_url": notify.ui_url, "webhooks": [], "repeat_window_s": notify.repeat_window_s}
    if notify.email:
        e = notify.email
        login = {"username": e.username, "password": os.environ[e.password_env]} if e.username and e.password_env else {}
        blocks.email = attempt("notify.email", lambda: EmailServerCredentials(
            smtp_server=e.smtp_server, smtp_port=e.port, smtp_type=e.smtp_type, verify=e.verify, **login))
        if blocks.email is not None:
            blocks.email_alert = attempt("notify.email", lambda: EmailNotification(
                credentials=blocks.email, email_from=e.sender, email_to=e.to))
        targets.update(email_server=names.smtp_block, email_from=e.sender, email_to=e.to)
    for i, hook in enumerate(notify.webhooks):
        block = attempt(f"notify.webhooks.{i}", lambda hook=hook: _webhook_block(hook))
        if block is not None:
            blocks.webhooks.append((names.webhook_block(hook.name), block))
            targets["webhooks"].append(f"{block.get_block_type_slug()}/{names.webhook_block(hook.name)}")
    blocks.pair = attempt("(the pair)", lambda: AntelopePair.of(config.pair_config(), NotifyTargets(**targets)))
    for o in config.operators:
        if o.totp_secret_env:
            blocks.secrets.append((config.secret_block(o), os.environ[o.totp_secret_env]))
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s), nothing was saved:\n" + "\n".join(problems))
    return blocks


# --- the sites: the site tool ----------------------------------------------------------------
def install_site_tools(config: SetupConfig) -> list[str]:
    """Check that both sites can be logged in to and that their python runs the
    site tool, then copy it to each (where it is not already current).
    Returns what was done per site; a ConfigError names the site's fields."""
    from antelope_ha import sitetool
    from antelope_ha.connect import make_runner
    from antelope_ha.runner import RunnerError

    sites = {"main": config.main, "backup": config.backup}
    with tempfile.TemporaryDirectory(prefix="antelope-ha-setup-") as tmp:
        data = sitetool.build(Path(tmp)).read_bytes()
    runners = {key: make_runner(site) for key, site in sites.items()}
    try:
        problems = []
        for key, site in sites.items():
            try:
                sitetool.check_python(runners[key], site.python)
            except sitetool.PythonTooOld as exc:
                problems.append(f"  {key}.python: {exc}\n      fix: set {key}.python to the site's python3 "
                                f"({sitetool.MIN_PYTHON[0]}.{sitetool.MIN_PYTHON[1]} or later), e.g. /usr/bin/python3")
            except (RunnerError, OSError) as exc:
                problems.append(f"  {key} ({site.name}, {site.host}): {exc}\n      fix: check {key}.host and "
                                f"{key}.ssh (docs/operating.md, section 2), or run setup with --no-site-tool")
        if problems:
            raise ConfigError("the sites cannot take the site tool, nothing was saved:\n" + "\n".join(problems))
        done = []
        for key, site in sites.items():
            path = site.path(site.site_tool)
            try:
                done.append(f"{site.name}: site tool {sitetool.install(runners[key], site.python, path, data)}")
            except (RunnerError, OSError, sitetool.SiteToolError) as exc:
                raise ConfigError(f"  {key}.site_tool: cannot put the site tool at {path} on {site.name}: {exc}\n"
                                  f"      fix: make its directory writable for {key}.ssh.username, or set "
                                  f"{key}.site_tool to a writable path") from None
        return done
    finally:
        for runner in runners.values():
            runner.close()


# --- the server ---------------------------------------------------------------------------
def check_server() -> str:
    """PREFECT_API_URL is set and the server answers; returns its address."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError("PREFECT_API_URL is not set: point it at the Prefect server, "
                          "e.g. export PREFECT_API_URL=http://prefect-host:4200/api")
    from prefect.exceptions import PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()  # /health answers without the credential
        if problem is None:
            try:
                client.request("GET", "/admin/version")
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 401:
                    raise
                problem = "it refuses this client's credential"
    if problem is not None:
        raise ConfigError(f"the Prefect server at {url} does not answer ({problem}): start it "
                          "(docs/operating.md, section 1), correct PREFECT_API_URL, or set PREFECT_API_AUTH_STRING "
                          "as the server's (/etc/antelope-ha/api-auth.env)")
    return url


def refuses_strangers(api_url: str) -> bool:
    """Whether the server refuses a request that carries no credential."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/admin/version", timeout=10):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401


def check_operator_blocks(config: SetupConfig) -> None:
    """Every operator whose secret the file says is in a Secret block has one."""
    from tasks.operators import secret_exists

    missing = [f"  operators.{i}.totp_secret_block: no Secret block {o.totp_secret_block} on the server\n"
               f"      fix: enroll them: antelope-ha setup CONFIG --enroll {o.name}"
               for i, o in enumerate(config.operators) if o.totp_secret_block and not secret_exists(o.totp_secret_block)]
    if missing:
        raise ConfigError("operators without a one-time code secret, nothing was saved:\n" + "\n".join(missing))


def enroll(config: SetupConfig, name: str, replace: bool = False) -> str:
    """A new TOTP secret for operator ``name``, saved in their Secret block; the
    provisioning URI for their authenticator app, to be shown once."""
    from tasks.operators import save_secret, secret_exists

    listed = {o.name: o for o in config.operators}
    if name not in listed:
        raise ConfigError(f"operator {name!r} is not listed under operators: in the configuration "
                          f"(listed: {', '.join(listed) or 'none'}): add them (name, contact, totp_secret_block) first")
    operator = listed[name]
    if operator.totp_secret_env:
        raise ConfigError(f"operator {name} takes their secret from ${operator.totp_secret_env}: to enroll them "
                          f"here, write totp_secret_block: {secret_block_name(config.pair, name)} instead")
    block = config.secret_block(operator)
    if secret_exists(block) and not replace:
        raise ConfigError(f"operator {name} is already enrolled (Secret block {block}): add --replace to give them a "
                          "new secret (the codes of the old one stop counting)")
    secret = new_secret()
    save_secret(block, secret)
    return provisioning_uri(secret, name, config.pair)


def save_blocks(config: SetupConfig, blocks: Blocks) -> None:
    names = PairNames(config.pair)
    if blocks.email is not None:
        blocks.email.save(names.smtp_block, overwrite=True)
        blocks.email_alert.save(names.email_alert_block, overwrite=True)
    for name, block in blocks.webhooks:
        block.save(name, overwrite=True)
    from tasks.operators import save_secret

    for name, secret in blocks.secrets:
        save_secret(name, secret)
    blocks.pair.save(names.pair_block, overwrite=True)


def ensure_work_pools(pair: str) -> None:
    """The pair's two process work pools, one per data centre."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        for name in (PairNames(pair).pool(site) for site in SITES):
            try:
                client.create_work_pool(WorkPoolCreate(
                    name=name, type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template()))
            except ObjectAlreadyExists:
                pass


def render_prefect_file(config: SetupConfig, source: Path = PREFECT_FILE) -> dict[str, Any]:
    """prefect.yaml (written for the pair ``TEMPLATE_PAIR``) for this pair: its
    name on every deployment and pool, the watch period and the watcher's
    cadences filled in."""
    project = yaml.safe_load(source.read_text())
    names, template = PairNames(config.pair), PairNames(TEMPLATE_PAIR)
    site_of_pool = {template.pool(site): site for site in SITES}
    for deployment in project["deployments"]:
        deployment["name"] = names.deployment_name
        deployment.setdefault("parameters", {})["pair_name"] = config.pair
        deployment["work_pool"] = {**deployment["work_pool"],
                                   "name": names.pool(site_of_pool[deployment["work_pool"]["name"]])}
        if deployment["entrypoint"].endswith(f":{WATCH_FLOW}"):
            deployment["parameters"].update(heartbeat_s=config.schedules.heartbeat_s,
                                            replicate_s=config.schedules.replicate_lastid_s)
            if config.metrics.port:
                deployment["parameters"].update(metrics_port=config.metrics.port,
                                                metrics_address=config.metrics.address)
            for schedule in deployment.get("schedules") or []:
                schedule["interval"] = config.schedules.watch_period_s
    return project


def deploy_all(config: SetupConfig) -> None:
    """``prefect deploy --all`` on the rendered prefect.yaml, from the project directory."""
    with tempfile.TemporaryDirectory(prefix="antelope-ha-deploy-") as tmp:
        rendered = Path(tmp) / "prefect.yaml"
        rendered.write_text(yaml.safe_dump(render_prefect_file(config), sort_keys=False))
        result = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(rendered)],
            cwd=PROJECT_DIR, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"prefect deploy failed (exit {result.returncode}) for {PREFECT_FILE}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


# --- the watcher's automations -----------------------------------------------------------
def alert_block_ids(config: SetupConfig) -> list[Any]:
    """The saved notification blocks the server itself sends alerts through."""
    from prefect.client.orchestration import get_client

    from blocks.pair import EmailNotification

    pair = PairNames(config.pair)
    names = [(pair.email_alert_block, EmailNotification.get_block_type_slug())] if config.notify.email else []
    names += [(pair.webhook_block(hook.name), "apprise-url" if hook.kind == "apprise" else "custom-webhook")
              for hook in config.notify.webhooks]
    with get_client(sync_client=True) as client:
        return [client.read_block_document_by_name(name, slug).id for name, slug in names]


def save_automations(config: SetupConfig) -> None:
    """A new watcher when one crashes; the operators told, and a new watcher
    asked for, when no watcher heartbeat arrives in time (the dead-man's switch).

    The silence trigger starts after a heartbeat and expects the next one: it
    fires once per silence, not again until heartbeats have come back."""
    from datetime import timedelta

    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment, SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from flows.watch import HEARTBEAT_EVENT

    pair, silent_s, names = config.pair, config.schedules.silent_after_s, PairNames(config.pair)
    subject = f"[antelope-ha {pair}] WATCHER SILENT at {config.backup.name}: no health watcher heard from"
    body = (f"No heartbeat from the health watcher of pair {pair} for {silent_s:g} s (the last one: "
            f"{{{{ event.occurred }}}}). While no watcher runs, nothing detects a failure of {config.main.name} "
            f"and nothing fails over to {config.backup.name}.\n\nLook at the worker of pool {names.pool('bus')} "
            f"at {config.backup.name} ({names.worker_unit('bus')}: is it running?) and at the runs of the "
            f"{names.deployment(WATCH_FLOW)} deployment"
            + (f": {config.notify.ui_url.rstrip('/')}/runs" if config.notify.ui_url else "")
            + ". A new watcher has been asked for; it starts as soon as a worker of that pool takes it.")
    with get_client(sync_client=True) as client:
        watch_id = client.read_deployment_by_name(names.deployment(WATCH_FLOW)).id
        for name in (names.silent_automation, names.crashed_automation):
            for existing in client.read_automations_by_name(name):
                client.delete_automation(existing.id)
        client.create_automation(AutomationCore(
            name=names.silent_automation, description="The dead-man's switch of the health watcher (antelope-ha setup).",
            trigger=EventTrigger(after={HEARTBEAT_EVENT}, expect={HEARTBEAT_EVENT},
                                 match={"prefect.resource.id": names.resource_id}, for_each={"prefect.resource.id"},
                                 posture=Posture.Proactive, threshold=1, within=timedelta(seconds=silent_s)),
            actions=[*(SendNotification(block_document_id=block, subject=subject, body=body)
                       for block in alert_block_ids(config)),
                     RunDeployment(source="selected", deployment_id=watch_id)]))
        client.create_automation(AutomationCore(
            name=names.crashed_automation, description="A watcher run crashed: start another (antelope-ha setup).",
            trigger=EventTrigger(expect={"prefect.flow-run.Crashed"},
                                 match={"prefect.resource.id": "prefect.flow-run.*"},
                                 match_related={"prefect.resource.id": f"prefect.deployment.{watch_id}"},
                                 posture=Posture.Reactive, threshold=1, within=timedelta(0)),
            actions=[RunDeployment(source="selected", deployment_id=watch_id)]))


def start_watcher(pair: str) -> FlowRun:
    """A watcher run now: it takes over from the one running, with the configuration just saved."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.create_flow_run_from_deployment(
            client.read_deployment_by_name(PairNames(pair).deployment(WATCH_FLOW)).id)


# --- the server's environment: leases, retention -------------------------------------------
# Prefect keeps the leases of concurrency slots in the server's memory by default. A server
# restarted while a procedure holds the pair's lock then forgets the lease, never expires it,
# and the slot stays taken: every later failover and fallback is refused (seen in the nemesis,
# docs/reliability.md, Findings). On disk, under the server's PREFECT_HOME, the lease outlives
# the restart and expires as it should.
DURABLE_LEASES = {"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}


def server_environment(config: SetupConfig) -> dict[str, str]:
    """What the Prefect server's environment must hold: concurrency leases kept
    on disk; CSRF protection on; for ``retention``, the vacuum of old flow runs
    (with their task runs, logs, artifacts) and of events, heartbeats kept
    shorter; and no analytics sent out. The credential comes on top
    (``server_credential``)."""
    from flows.watch import HEARTBEAT_EVENT

    r, day = config.retention, 86400
    return {
        **DURABLE_LEASES,
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": f"{r.flow_runs_days * day:.0f}",
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"PT{r.events_days * day:.0f}S",  # ISO 8601: no bare seconds here
        "PREFECT_SERVER_SERVICES_DB_VACUUM_EVENT_RETENTION_OVERRIDES": json.dumps({
            HEARTBEAT_EVENT: round(min(r.heartbeats_days, r.events_days) * day),
            "prefect.flow-run.heartbeat": round(min(r.heartbeats_days, r.events_days) * day)}),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def server_differences(config: SetupConfig) -> list[str]:
    """Where the running server's settings differ from ``server_environment``."""
    from datetime import timedelta

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        server = client.request("GET", "/admin/settings").json()["server"]
        api_url = str(client.api_url)
    seconds = lambda value: TypeAdapter(timedelta).validate_python(value).total_seconds()  # noqa: E731
    vacuum, want = server["services"]["db_vacuum"], server_environment(config)
    found = {
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": server["concurrency"]["lease_storage"],
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": ",".join(sorted(vacuum["enabled"]))
        if isinstance(vacuum["enabled"], list) else str(vacuum["enabled"]).lower(),
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": f"{seconds(vacuum['retention_period']):.0f}",
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"PT{seconds(server['events']['retention_period']):.0f}S",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_EVENT_RETENTION_OVERRIDES": json.dumps({
            k: round(seconds(v)) for k, v in vacuum["event_retention_overrides"].items()}),
        "PREFECT_SERVER_ANALYTICS_ENABLED": str(server["analytics_enabled"]).lower(),
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": str(server["api"]["csrf_protection_enabled"]).lower(),
    }
    differ = [f"{name}: the server has {found[name]}, the configuration wants {value}"
              for name, value in want.items()
              if (json.loads(found[name]) != json.loads(value) if name.endswith("OVERRIDES") else found[name] != value)]
    if not refuses_strangers(api_url):
        differ.append("PREFECT_SERVER_API_AUTH_STRING: the server answers requests without a credential, "
                      "the configuration wants it to refuse them")
    return differ


def server_credential() -> dict[str, str]:
    """The server's credential: the one this client uses (PREFECT_API_AUTH_STRING)."""
    from prefect.settings import PREFECT_API_AUTH_STRING

    credential = PREFECT_API_AUTH_STRING.value()
    if not credential:
        raise ConfigError("PREFECT_API_AUTH_STRING is not set, so there is no credential to put in the server's "
                          "environment: set it as docs/operating.md, section 1 says (/etc/antelope-ha/api-auth.env), "
                          "then run setup again")
    if any(c in credential for c in "'\n\\") or len(credential) < 16:
        raise ConfigError("PREFECT_API_AUTH_STRING must be at least 16 characters, without quotes, backslashes or "
                          "line breaks: make one with `openssl rand -hex 24`")
    return {"PREFECT_SERVER_API_AUTH_STRING": credential}


def write_environment(path: Path, environment: dict[str, str]) -> None:
    """The environment file, readable by its owner only: it holds the credential."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(format_environment(environment))


def format_environment(environment: dict[str, str]) -> str:
    """An environment file (systemd's EnvironmentFile=, or ``set -a; . FILE``)."""
    return "".join(f"{k}='{v}'\n" for k, v in environment.items())


def setup(config_path: Path, *, apply_deployments: bool = True, site_tool: bool = True,
          server_env: Path | None = None) -> list[str]:
    """Check the configuration, the server and the sites; then put the site tool
    on the sites and save blocks, work pools, deployments and automations on the
    server named by PREFECT_API_URL, and start a watcher. Returns what was done;
    ``server_differences`` says where the server's own retention settings differ."""
    config = load_config(Path(config_path))
    blocks = build_blocks(config, config_path)
    done = [f"Prefect server {check_server()} answers"]
    if server_env is not None:
        write_environment(server_env, server_environment(config) | server_credential())
        done.append(f"wrote the server's environment (credential, CSRF protection, retention) to {server_env}")
    check_operator_blocks(config)
    if site_tool:
        done += install_site_tools(config)
    save_blocks(config, blocks)
    done.append(f"saved the blocks of pair {config.pair}")
    ensure_work_pools(config.pair)
    names = PairNames(config.pair)
    done.append(f"the pair's work pools: {names.pool('bus')} (its worker at {config.backup.name}: "
                f"{names.worker_unit('bus')}), {names.pool('ms')} (at {config.main.name}: {names.worker_unit('ms')})")
    if apply_deployments:
        deploy_all(config)
        save_automations(config)
        start_watcher(config.pair)
        done.append(f"applied the deployments ({', '.join(names.deployment(flow) for flow in FLOWS)}) "
                    "and automations, started a watcher")
    return done + legacy_leftovers(config.pair)


def legacy_leftovers(pair: str) -> list[str]:
    """What setup of an earlier release left on the server under names without
    a pair's: deployments named after their flow, the pools all pairs shared.
    Nothing is deleted: they are named, with the fix."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deployments, pools = [], []
    with get_client(sync_client=True) as client:
        for name in LEGACY_DEPLOYMENTS:
            try:
                old = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            if (old.parameters or {}).get("pair_name") == old.name:  # a pair named after the flow: its own
                continue
            active = any(s.active for s in old.schedules or [])
            deployments.append((name, f"{name} (pair {(old.parameters or {}).get('pair_name', '?')}, pool "
                                      f"{old.work_pool_name}{', its schedule ACTIVE' if active else ''})"))
        for name in LEGACY_POOLS:
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                continue
            pools.append(name)
    if not deployments and not pools:
        return []
    names = PairNames(pair)
    commands = [*(f"prefect deployment delete {name}" for name, _ in deployments),
                *(f"prefect work-pool delete {p}" for p in pools)]
    return [
        "WARNING: the server still holds what setup made before every deployment and pool carried its pair's "
        "name, left as it is: "
        + "; ".join([*(f"deployment {what}" for _, what in deployments), *(f"work pool {p}" for p in pools)])
        + f". Pair {pair} now runs the deployments <flow>/{pair} in the pools {names.pool('bus')} and "
        f"{names.pool('ms')}. An old watch/watch whose schedule is active starts a watcher of its pair every watch "
        "period, which takes the watch over from the new one.",
        "  fix: run setup for every pair of this server, start the new workers (docs/operating.md, section 1), "
        f"stop the old ones (systemctl disable --now {' '.join(LEGACY_WORKER_UNITS)}), then delete "
        "what is listed:" + "".join(f"\n    {command}" for command in commands)]


def enroll_main(config_path: Path, name: str, replace: bool) -> int:
    try:
        config = load_config(config_path)
        check_server()
        uri = enroll(config, name, replace)
    except ConfigError as exc:
        print(f"enroll failed: {exc}", file=sys.stderr)
        return 2
    print(f"enrolled {name} for pair {config.pair}. Their authenticator app takes this provisioning URI (as a QR "
          f"code, e.g. `qrencode -t ansiutf8 'URI'`, or typed in); it is shown this once and kept nowhere else:\n"
          f"{uri}\nThen run setup without --enroll, so that the pair lists them.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="the pair's configuration (YAML or JSON)")
    parser.add_argument("--no-deploy", action="store_true", help="save blocks and work pools only")
    parser.add_argument("--no-site-tool", action="store_true",
                        help="do not contact the sites (e.g. one is down): the site tool there stays as it is")
    parser.add_argument("--server-env", type=Path, metavar="FILE",
                        help="write the Prefect server's environment for the configured retention to FILE")
    parser.add_argument("--server-env-only", action="store_true",
                        help="with --server-env: write that file and nothing else (the server need not run yet)")
    parser.add_argument("--enroll", metavar="NAME",
                        help="only enroll operator NAME (listed in the file with totp_secret_block): a new one-time "
                             "code secret, whose provisioning URI is shown this once")
    parser.add_argument("--replace", action="store_true", help="with --enroll: replace a secret already enrolled")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    args = parser.parse_args(argv)
    if args.server_env_only and args.server_env is None:
        parser.error("--server-env-only needs --server-env FILE")
    if args.enroll:
        return enroll_main(args.config, args.enroll, args.replace)
    if args.server_env_only:
        try:
            write_environment(args.server_env, server_environment(load_config(args.config)) | server_credential())
        except ConfigError as exc:
            print(f"setup failed: {exc}", file=sys.stderr)
            return 2
        print(f"wrote the server's environment (credential, CSRF protection, retention) to {args.server_env}")
        return 0
    try:
        for line in setup(args.config, apply_deployments=not args.no_deploy, site_tool=not args.no_site_tool,
                          server_env=args.server_env):
            print(line)
        differences = server_differences(load_config(args.config))
    except (ConfigError, RuntimeError) as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # never a bare traceback for the operator: what failed, and how to see more
        print(f"setup failed: {type(exc).__name__}: {exc}\n(run again with --debug for the traceback; "
              "setup converges, so running it again after a fix finishes the job)", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return 2
    print(f"antelope-ha set up from {args.config}")
    for problem in load_config(args.config).operator_problems():
        print(f"warning: {problem}", file=sys.stderr)
    if differences:
        print("the Prefect server does not keep its database as configured (retention:), until its environment "
              "holds the following and it is restarted"
              + (f" ({args.server_env} has it)" if args.server_env else " (--server-env FILE writes it)") + ":\n  "
              + "\n  ".join(differences))
    return 0


if __name__ == "__main__":
    sys.exit(main())
