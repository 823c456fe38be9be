"""Set up antelope-ha on a Prefect server from one configuration file.

    PREFECT_API_URL=http://prefect-host:4200/api python -m deployments.setup config.yaml

Reads the YAML (or JSON) file, validates all of it before touching the server
(an error names the field and the file), then:

1. saves the notification blocks: an ``EmailServerCredentials`` block
   (prefect-email) and its ``EmailNotification`` for automations, and one
   Prefect notification block per webhook (an SMS gateway's JSON POST, or any
   Apprise URL);
2. saves the ``AntelopePair`` block (sites, witness, policy, who to notify);
3. creates the two process work pools (one per data centre) if missing;
4. applies ``deployments/prefect.yaml`` for this pair: every deployment gets
   the pair's name; a watcher run starts every ``schedules.watch_period_s``
   and copies lastid every ``schedules.replicate_lastid_s``;
5. saves two automations: one starts a new watcher when a watcher run
   crashes, the other (the dead-man's switch) tells the operators, through
   the same notification blocks, when no watcher heartbeat arrives for
   ``schedules.watcher_silent_s``, and asks for a new watcher;
6. starts a watcher now, so that a changed configuration is watched at once
   (it takes over from the one running);
7. checks that the server vacuums old flow runs and events as
   ``retention`` says, and writes the server's environment for that with
   ``--server-env FILE``: setup cannot restart the server itself.

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
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from antelope_ha.config import PairPolicy, SiteConfig, WitnessConfig

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

PROJECT_DIR = Path(__file__).resolve().parent.parent
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
WORK_POOLS = ("antelope-ha-bus", "antelope-ha-ms")
WATCH = ("watch", "watch")  # the watcher's flow and deployment
# The workers' environment (docs/operating.md): a run asked for (a replacement
# watcher, a procedure started by hand) is taken within 2 s; no usage data sent.
WORKER_ENV = {"PREFECT_WORKER_QUERY_SECONDS": "2", "DO_NOT_TRACK": "1"}
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


class Retention(BaseModel):
    """How long the Prefect server keeps what runs leave behind (its database vacuum)."""

    model_config = ConfigDict(extra="forbid")

    flow_runs_days: float = Field(30.0, ge=0.05, description="finished flow runs, their task runs and logs")
    events_days: float = Field(7.0, gt=0, description="events (decisions, state changes)")
    heartbeats_days: float = Field(1.0, gt=0, description="heartbeat events (the watcher's, Prefect's flow runs')")


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
    retention: Retention = Field(default_factory=Retention)


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


def email_alert_block_name(pair: str) -> str:
    return f"{pair}-email-alert"


def save_notification_blocks(config: SetupConfig) -> dict[str, Any]:
    """Save the email and webhook blocks; return the NotifyTargets fields."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect_email import EmailServerCredentials

    from blocks.pair import AppriseUrl, EmailNotification

    notify = config.notify
    targets: dict[str, Any] = {"ui_url": notify.ui_url, "webhooks": []}
    if notify.email:
        e = notify.email
        credentials = EmailServerCredentials(
            smtp_server=e.smtp_server, smtp_port=e.smtp_port, smtp_type=e.smtp_type,
            username=e.username, password=os.environ[e.password_env] if e.password_env else None,
            verify=e.verify,
        )
        credentials.save(email_block_name(config.pair), overwrite=True)
        EmailNotification(credentials=credentials, email_from=e.sender, email_to=e.to).save(
            email_alert_block_name(config.pair), overwrite=True)
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
    """prefect.yaml with this pair's name, watch period and the watcher's cadences filled in."""
    project = yaml.safe_load(source.read_text())
    for deployment in project["deployments"]:
        deployment.setdefault("parameters", {})["pair_name"] = config.pair
        if deployment["name"] == WATCH[1]:
            deployment["parameters"].update(heartbeat_s=config.schedules.heartbeat_s,
                                            replicate_s=config.schedules.replicate_lastid_s)
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
def automation_names(pair: str) -> tuple[str, str]:
    return f"antelope-ha {pair}: watcher silent", f"antelope-ha {pair}: replace a crashed watcher"


def alert_block_ids(config: SetupConfig) -> list[Any]:
    """The saved notification blocks the server itself sends alerts through."""
    from prefect.client.orchestration import get_client

    from blocks.pair import EmailNotification

    names = [(email_alert_block_name(config.pair), EmailNotification.get_block_type_slug())
             ] if config.notify.email else []
    names += [(hook.name, "apprise-url" if hook.kind == "apprise" else "custom-webhook")
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

    pair, silent_s = config.pair, config.schedules.silent_after_s
    silent_name, crashed_name = automation_names(pair)
    resource = f"antelope-ha.pair.{pair}"
    subject = f"[antelope-ha {pair}] WATCHER SILENT at {config.backup.name}: no health watcher heard from"
    body = (f"No heartbeat from the health watcher of pair {pair} for {silent_s:g} s (the last one: "
            f"{{{{ event.occurred }}}}). While no watcher runs, nothing detects a failure of {config.main.name} "
            f"and nothing fails over to {config.backup.name}.\n\nLook at the worker of pool {WORK_POOLS[0]} at "
            f"{config.backup.name} (is it running?) and at the runs of the {WATCH[1]} deployment"
            + (f": {config.notify.ui_url.rstrip('/')}/runs" if config.notify.ui_url else "")
            + ". A new watcher has been asked for; it starts as soon as a worker of that pool takes it.")
    with get_client(sync_client=True) as client:
        watch_id = client.read_deployment_by_name("/".join(WATCH)).id
        for name in (silent_name, crashed_name):
            for existing in client.read_automations_by_name(name):
                client.delete_automation(existing.id)
        client.create_automation(AutomationCore(
            name=silent_name, description="The dead-man's switch of the health watcher (antelope-ha setup).",
            trigger=EventTrigger(after={HEARTBEAT_EVENT}, expect={HEARTBEAT_EVENT},
                                 match={"prefect.resource.id": resource}, for_each={"prefect.resource.id"},
                                 posture=Posture.Proactive, threshold=1, within=timedelta(seconds=silent_s)),
            actions=[*(SendNotification(block_document_id=block, subject=subject, body=body)
                       for block in alert_block_ids(config)),
                     RunDeployment(source="selected", deployment_id=watch_id)]))
        client.create_automation(AutomationCore(
            name=crashed_name, description="A watcher run crashed: start another (antelope-ha setup).",
            trigger=EventTrigger(expect={"prefect.flow-run.Crashed"},
                                 match={"prefect.resource.id": "prefect.flow-run.*"},
                                 match_related={"prefect.resource.id": f"prefect.deployment.{watch_id}"},
                                 posture=Posture.Reactive, threshold=1, within=timedelta(0)),
            actions=[RunDeployment(source="selected", deployment_id=watch_id)]))


def start_watcher() -> FlowRun:
    """A watcher run now: it takes over from the one running, with the configuration just saved."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.create_flow_run_from_deployment(client.read_deployment_by_name("/".join(WATCH)).id)


# --- retention: the server's database vacuum ------------------------------------------------
def server_environment(config: SetupConfig) -> dict[str, str]:
    """What the Prefect server's environment must hold for ``retention``: the
    vacuum of old flow runs (with their task runs, logs, artifacts) and of
    events, heartbeats kept shorter; and no analytics sent out."""
    from flows.watch import HEARTBEAT_EVENT

    r, day = config.retention, 86400
    return {
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
    seconds = lambda value: TypeAdapter(timedelta).validate_python(value).total_seconds()  # noqa: E731
    vacuum, want = server["services"]["db_vacuum"], server_environment(config)
    found = {
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": ",".join(sorted(vacuum["enabled"]))
        if isinstance(vacuum["enabled"], list) else str(vacuum["enabled"]).lower(),
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": f"{seconds(vacuum['retention_period']):.0f}",
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"PT{seconds(server['events']['retention_period']):.0f}S",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_EVENT_RETENTION_OVERRIDES": json.dumps({
            k: round(seconds(v)) for k, v in vacuum["event_retention_overrides"].items()}),
        "PREFECT_SERVER_ANALYTICS_ENABLED": str(server["analytics_enabled"]).lower(),
    }
    return [f"{name}: the server has {found[name]}, the configuration wants {value}"
            for name, value in want.items()
            if (json.loads(found[name]) != json.loads(value) if name.endswith("OVERRIDES") else found[name] != value)]


def format_environment(environment: dict[str, str]) -> str:
    """An environment file (systemd's EnvironmentFile=, or ``set -a; . FILE``)."""
    return "".join(f"{k}='{v}'\n" for k, v in environment.items())


def setup(config_path: Path, *, apply_deployments: bool = True, server_env: Path | None = None) -> list[str]:
    """Validate the configuration, then save blocks, work pools, deployments and
    automations on the server named by PREFECT_API_URL, and start a watcher.
    Returns what still differs on the server itself (its retention settings)."""
    from prefect.settings import PREFECT_API_URL

    config = load_config(Path(config_path))
    if not PREFECT_API_URL.value():
        raise ConfigError(
            "PREFECT_API_URL is not set: point it at the Prefect server, "
            "e.g. export PREFECT_API_URL=http://prefect-host:4200/api"
        )
    if server_env is not None:
        server_env.write_text(format_environment(server_environment(config)))
    save_pair(config)
    ensure_work_pools()
    if apply_deployments:
        deploy_all(config)
        save_automations(config)
        start_watcher()
    return server_differences(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="the pair's configuration (YAML or JSON)")
    parser.add_argument("--no-deploy", action="store_true", help="save blocks and work pools only")
    parser.add_argument("--server-env", type=Path, metavar="FILE",
                        help="write the Prefect server's environment for the configured retention to FILE")
    args = parser.parse_args(argv)
    try:
        differences = setup(args.config, apply_deployments=not args.no_deploy, server_env=args.server_env)
    except (ConfigError, RuntimeError) as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    print(f"antelope-ha set up from {args.config}")
    if differences:
        print("the Prefect server does not keep its database as configured (retention:), until its environment "
              "holds the following and it is restarted"
              + (f" ({args.server_env} has it)" if args.server_env else " (--server-env FILE writes it)") + ":\n  "
              + "\n  ".join(differences))
    return 0


if __name__ == "__main__":
    sys.exit(main())
