"""Set up antelope-ha on a Prefect server from one configuration file.

    PREFECT_API_URL=http://prefect-host:4200/api python -m deployments.setup config.yaml

Reads the YAML (or JSON) file, validates all of it before touching the server
(an error names the field and the file), then:

1. saves the notification blocks: an ``EmailServerCredentials`` block
   (prefect-email) and one Prefect notification block per webhook (an SMS
   gateway's JSON POST, or any Apprise URL);
2. saves the ``AntelopePair`` block (sites, witness, policy, who to notify);
3. creates the two process work pools (one per data centre) if missing;
4. applies ``deployments/prefect.yaml`` for this pair: every deployment gets
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
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from antelope_ha.config import PairPolicy, SiteConfig, WitnessConfig

PROJECT_DIR = Path(__file__).resolve().parent.parent
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
WORK_POOLS = ("antelope-ha-bus", "antelope-ha-ms")
BLOCK_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"


class ConfigError(ValueError):
    """The configuration file cannot be used as it is."""


class EmailSettings(BaseModel):
    """The SMTP server the operators' mail goes through (prefect-email)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    smtp_server: str = Field(..., min_length=1, description="SMTP host name or address")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_type: Literal["SSL", "STARTTLS", "INSECURE"] = Field(
        "STARTTLS", description="SSL (implicit TLS, port 465), STARTTLS (587), INSECURE (plain)"
    )
    username: str | None = Field(None, description="SMTP login, if the server wants one")
    password_env: str | None = Field(
        None, description="environment variable holding the SMTP password when setup runs"
    )
    verify: bool = Field(True, description="check the server's TLS certificate")
    sender: str = Field(..., alias="from", min_length=3, description="From: address")
    to: list[str] = Field(..., min_length=1, description="operators' addresses")


class WebhookSettings(BaseModel):
    """One more way to reach the operators, e.g. an SMS gateway.

    ``custom-webhook``: an HTTP request whose ``json_data``/``form_data``
    strings may use ``{{subject}}``, ``{{body}}`` and the names in
    ``secrets_env`` (Prefect's CustomWebhookNotificationBlock).
    ``apprise``: any Apprise URL, e.g. ``json://gateway/path`` (an ``AppriseUrl``
    block, blocks/pair.py).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=BLOCK_NAME, description="name of the saved notification block")
    kind: Literal["custom-webhook", "apprise"]
    url: str = Field(..., min_length=3)
    method: Literal["GET", "POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    json_data: dict[str, Any] | None = None
    form_data: dict[str, str] | None = None
    timeout_s: float = Field(10.0, gt=0, le=120)
    secrets_env: dict[str, str] = Field(
        default_factory=dict, description="template name -> environment variable holding the secret"
    )


class NotifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ui_url: str | None = Field(
        None, description="the Prefect UI as operators reach it, for links to runs, e.g. http://prefect:4200"
    )
    email: EmailSettings | None = None
    webhooks: list[WebhookSettings] = Field(default_factory=list)

    @field_validator("webhooks")
    @classmethod
    def _unique(cls, v: list[WebhookSettings]) -> list[WebhookSettings]:
        names = [w.name for w in v]
        if len(names) != len(set(names)):
            raise ValueError(f"webhook names must be unique, got {names}")
        return v


class Schedules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicate_lastid_s: float = Field(60.0, ge=1, description="how often MS's lastid is copied to BUS")


class SetupConfig(BaseModel):
    """Everything ``setup`` needs, in one file."""

    model_config = ConfigDict(extra="forbid")

    pair: str = Field(..., pattern=BLOCK_NAME, description="name of the pair (its block and state record)")
    main: SiteConfig
    backup: SiteConfig
    witness: WitnessConfig
    policy: PairPolicy = Field(default_factory=PairPolicy)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    schedules: Schedules = Field(default_factory=Schedules)


def load_config(path: Path) -> SetupConfig:
    """Read and validate the file; a ConfigError lists every problem with its field."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration {path}: {exc}") from None
    try:
        data = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {'JSON' if Path(path).suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (pair, main, backup, witness, ...), got {type(data).__name__}")
    try:
        config = SetupConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {exc.error_count()} problem(s):\n{problems}") from None
    if config.main.name == config.backup.name:
        raise ConfigError(f"{path}: main.name and backup.name must differ, both are {config.main.name!r}")
    _check_env(path, config)
    return config


def _check_env(path: Path, config: SetupConfig) -> None:
    """Every environment variable the file names must be set now."""
    wanted = []
    if config.notify.email and config.notify.email.password_env:
        wanted.append(("notify.email.password_env", config.notify.email.password_env))
    for i, hook in enumerate(config.notify.webhooks):
        wanted += [(f"notify.webhooks.{i}.secrets_env.{k}", v) for k, v in hook.secrets_env.items()]
    missing = [f"  {field}: environment variable {var} is not set" for field, var in wanted if var not in os.environ]
    if missing:
        raise ConfigError(f"{path}: secrets missing (export them before setup):\n" + "\n".join(missing))


# --- saving to the server -------------------------------------------------------------
def email_block_name(pair: str) -> str:
    return f"{pair}-smtp"


def save_notification_blocks(config: SetupConfig) -> dict[str, Any]:
    """Save the email and webhook blocks; return the NotifyTargets fields."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect_email import EmailServerCredentials

    from blocks.pair import AppriseUrl

    notify = config.notify
    targets: dict[str, Any] = {"ui_url": notify.ui_url, "webhooks": []}
    if notify.email:
        e = notify.email
        EmailServerCredentials(
            smtp_server=e.smtp_server, smtp_port=e.smtp_port, smtp_type=e.smtp_type,
            username=e.username, password=os.environ[e.password_env] if e.password_env else None,
            verify=e.verify,
        ).save(email_block_name(config.pair), overwrite=True)
        targets.update(email_server=email_block_name(config.pair), email_from=e.sender, email_to=e.to)
    for hook in notify.webhooks:
        if hook.kind == "apprise":
            block = AppriseUrl(url=hook.url)
        else:
            block = CustomWebhookNotificationBlock(
                name=hook.name, url=hook.url, method=hook.method, headers=hook.headers or None,
                json_data=hook.json_data, form_data=hook.form_data, timeout=hook.timeout_s,
                secrets={k: os.environ[v] for k, v in hook.secrets_env.items()},
            )
        block.save(hook.name, overwrite=True)
        targets["webhooks"].append(f"{block.get_block_type_slug()}/{hook.name}")
    return targets


def save_pair(config: SetupConfig) -> None:
    from blocks.pair import AntelopePair, NotifyTargets

    targets = NotifyTargets(**save_notification_blocks(config))
    AntelopePair(
        main=config.main.model_dump(), backup=config.backup.model_dump(),
        witness=config.witness, policy=config.policy, notify=targets,
    ).save(config.pair, overwrite=True)


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


def setup(config_path: Path, *, apply_deployments: bool = True) -> None:
    """Validate the configuration, then save blocks, work pools and deployments
    on the server named by PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL

    config = load_config(Path(config_path))
    if not PREFECT_API_URL.value():
        raise ConfigError(
            "PREFECT_API_URL is not set: point it at the Prefect server, "
            "e.g. export PREFECT_API_URL=http://prefect-host:4200/api"
        )
    save_pair(config)
    ensure_work_pools()
    if apply_deployments:
        deploy_all(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="the pair's configuration (YAML or JSON)")
    parser.add_argument("--no-deploy", action="store_true", help="save blocks and work pools only")
    args = parser.parse_args(argv)
    try:
        setup(args.config, apply_deployments=not args.no_deploy)
    except (ConfigError, RuntimeError) as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    print(f"antelope-ha set up from {args.config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
