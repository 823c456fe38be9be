"""Set up antelope-ha on a Prefect server from one configuration file.

    PREFECT_API_URL=http://prefect-host:4200/api python -m deployments.setup config.yaml

Checks everything first and saves nothing until all of it passes: the file
(every problem names its field and the fix), the secrets it names in the
environment, every block built from it, the Prefect server, and both sites
(SSH login, the site's python3 runs the site tool). Then:

1. copies the site tool (the id checks, one standard-library-only file) to
   each site over SFTP, where the site's own python3 runs it;
2. saves the notification blocks: an ``EmailServerCredentials`` block
   (prefect-email) and one Prefect notification block per webhook (an SMS
   gateway's JSON POST, or any Apprise URL);
3. saves the ``AntelopePair`` block (sites, witness, policy, who to notify);
4. creates the two process work pools (one per data centre) if missing;
5. applies ``deployments/prefect.yaml`` for this pair: every deployment gets
   the pair's name, health runs every ``policy.probe_interval_s``, lastid
   replication every ``schedules.replicate_lastid_s``.

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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from antelope_ha.config import PairPolicy, SiteConfig, WitnessConfig
from deployments import schema

PROJECT_DIR = Path(__file__).resolve().parent.parent
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
WORK_POOLS = ("antelope-ha-bus", "antelope-ha-ms")
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

    name: str = Field(..., pattern=BLOCK_NAME, description="name of the saved notification block")
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


class SetupConfig(BaseModel):
    """Everything ``setup`` needs, in one file."""

    model_config = ConfigDict(extra="forbid")

    pair: str = Field(..., pattern=BLOCK_NAME, description="name of the pair (its block and state record)")
    main: SiteConfig = Field(..., description="the Main System (MS)")
    backup: SiteConfig = Field(..., description="the Backup System (BUS)")
    witness: WitnessConfig = Field(..., description="a third host BUS must reach before it takes over")
    policy: PairPolicy = Field(default_factory=PairPolicy, description="when to fail over, and the margins")
    notify: NotifySettings = Field(default_factory=NotifySettings, description="who to tell")
    schedules: Schedules = Field(default_factory=Schedules, description="how often scheduled procedures run")

    @model_validator(mode="after")
    def _two_sites(self) -> SetupConfig:
        if self.main.name == self.backup.name:
            raise ValueError(f"main.name and backup.name are both {self.main.name!r}: give each site its own name")
        return self


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
    missing = [f"  {field}: environment variable {var} is not set\n      fix: export {var}=... before setup"
               for field, var in wanted if not os.environ.get(var)]
    if missing:
        raise ConfigError(f"{path}: secrets missing, nothing was saved:\n" + "\n".join(missing))


# --- the blocks, built (and so validated) before any is saved ---------------------------
def email_block_name(pair: str) -> str:
    return f"{pair}-smtp"


@dataclass
class Blocks:
    """Every block setup saves, already validated."""

    email: Any = None
    webhooks: list[tuple[str, Any]] = field(default_factory=list)
    pair: Any = None


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

    from blocks.pair import AntelopePair, NotifyTargets

    problems: list[str] = []
    blocks = Blocks()
    notify = config.notify

    def attempt(where: str, make: Any) -> Any:
        try:
            return make()
        except Exception as exc:  # a block's own validation: ValidationError, ValueError, KeyError
            problems.append(f"  {where}: {exc}\n      fix: correct {where} (docs/configuration.md)")
            return None

    targets: dict[str, Any] = {"ui_url": notify.ui_url, "webhooks": []}
    if notify.email:
        e = notify.email
        login = {"username": e.username, "password": os.environ[e.password_env]} if e.username and e.password_env else {}
        blocks.email = attempt("notify.email", lambda: EmailServerCredentials(
            smtp_server=e.smtp_server, smtp_port=e.port, smtp_type=e.smtp_type, verify=e.verify, **login))
        targets.update(email_server=email_block_name(config.pair), email_from=e.sender, email_to=e.to)
    for i, hook in enumerate(notify.webhooks):
        block = attempt(f"notify.webhooks.{i}", lambda hook=hook: _webhook_block(hook))
        if block is not None:
            blocks.webhooks.append((hook.name, block))
            targets["webhooks"].append(f"{block.get_block_type_slug()}/{hook.name}")
    blocks.pair = attempt("(the pair)", lambda: AntelopePair(
        main=config.main.model_dump(), backup=config.backup.model_dump(),
        witness=config.witness, policy=config.policy, notify=NotifyTargets(**targets)))
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
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise ConfigError(f"the Prefect server at {url} does not answer ({problem}): start it "
                          "(docs/operating.md, section 1) or correct PREFECT_API_URL")
    return url


def save_blocks(config: SetupConfig, blocks: Blocks) -> None:
    if blocks.email is not None:
        blocks.email.save(email_block_name(config.pair), overwrite=True)
    for name, block in blocks.webhooks:
        block.save(name, overwrite=True)
    blocks.pair.save(config.pair, overwrite=True)


def save_pair(config: SetupConfig) -> None:
    """The pair's block and its notification blocks, validated then saved."""
    save_blocks(config, build_blocks(config))


def ensure_work_pools() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        for name in WORK_POOLS:
            try:
                client.create_work_pool(WorkPoolCreate(
                    name=name, type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template()))
            except ObjectAlreadyExists:
                pass


def render_prefect_file(config: SetupConfig, source: Path = PREFECT_FILE) -> dict[str, Any]:
    """prefect.yaml with this pair's name and schedules filled in."""
    project = yaml.safe_load(source.read_text())
    intervals = {"health": config.policy.probe_interval_s, "replicate-lastid": config.schedules.replicate_lastid_s}
    for deployment in project["deployments"]:
        deployment.setdefault("parameters", {})["pair_name"] = config.pair
        if deployment["name"] in intervals:
            for schedule in deployment.get("schedules") or []:
                schedule["interval"] = intervals[deployment["name"]]
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


def setup(config_path: Path, *, apply_deployments: bool = True, site_tool: bool = True) -> list[str]:
    """Check the configuration, the server and the sites; then put the site tool
    on the sites and save blocks, work pools and deployments on the server named
    by PREFECT_API_URL. Returns what was done."""
    config = load_config(Path(config_path))
    blocks = build_blocks(config, config_path)
    done = [f"Prefect server {check_server()} answers"]
    if site_tool:
        done += install_site_tools(config)
    save_blocks(config, blocks)
    done.append(f"saved the blocks of pair {config.pair}")
    ensure_work_pools()
    if apply_deployments:
        deploy_all(config)
        done.append("applied the deployments")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="the pair's configuration (YAML or JSON)")
    parser.add_argument("--no-deploy", action="store_true", help="save blocks and work pools only")
    parser.add_argument("--no-site-tool", action="store_true",
                        help="do not contact the sites (e.g. one is down): the site tool there stays as it is")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    args = parser.parse_args(argv)
    try:
        for line in setup(args.config, apply_deployments=not args.no_deploy, site_tool=not args.no_site_tool):
            print(line)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
