"""Configuration of a site, of the pair and its policy: plain pydantic models.

The Prefect blocks in ``blocks/`` inherit these fields, so the same validation
runs whether a value comes from a block, a YAML file or a test.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from antelope_ha.approvers import Approver
from antelope_ha.commands import site_tool
from antelope_ha.sitetool import FILE_NAME as SITE_TOOL_FILE

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_TASK = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_address(value: str, field: str) -> str:
    """``host:port`` with a port in 1..65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{field} must be host:port with a port in 1..65535, got {value!r}")
    return value


class SSHSettings(BaseModel):
    """How to reach a site over SSH. Host keys are checked strictly, never added."""

    model_config = ConfigDict(extra="forbid")

    port: int = Field(22, ge=1, le=65535, description="sshd port on the site host")
    username: str = Field(..., min_length=1, description="account that runs Antelope commands")
    known_hosts: str = Field(..., description="known_hosts file holding the site's host key")
    key_filename: str | None = Field(None, description="private key file on the worker")
    private_key: SecretStr | None = Field(None, description="private key (PEM text), kept secret")
    passphrase: SecretStr | None = Field(None, description="passphrase of the private key")
    allow_agent: bool = Field(False, description="also try keys from a running ssh-agent")
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="limit for a TCP connect + handshake, and for "
                                     "the host to answer a new command's channel or a file request")
    command_timeout_s: float = Field(60.0, gt=0, le=3600, description="limit for one command")


class SiteConfig(BaseModel):
    """One data centre's Antelope installation, as the flows see it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="short site name, e.g. ms or bus")
    host: str = Field(..., min_length=1, description="host name or address of the site's Antelope host")
    transport: Literal["ssh", "local"] = Field(
        "ssh", description="ssh: run commands over SSH; local: run them on the worker itself"
    )
    ssh: SSHSettings | None = Field(None, description="SSH settings, required when transport is ssh")
    antelope: str = Field("/opt/antelope/5.15", description="Antelope installation ($ANTELOPE)")
    path_prepend: list[str] = Field(
        default_factory=list, description="directories put before $ANTELOPE/bin on PATH"
    )
    rtexec_dir: str = Field(..., description="real-time system directory holding rtexec.pf")
    db: str = Field("db/db", description="production database descriptor, relative to rtexec_dir")
    dbids: str = Field("dbids/dbids", description="ID server database, relative to rtexec_dir")
    idserver_task: str = Field("dbids", description="rtexec task name of the ID server")
    idserver_address: str = Field(..., description="host:port other sites use to reach this ID server")
    writer_tasks: list[str] = Field(
        default_factory=lambda: ["orb2dbt", "orb2wf"], description="rtexec tasks that write the db"
    )
    infosys_tasks: list[str] = Field(
        default_factory=list, description="rtexec tasks that publish results to the world"
    )
    orb: str = Field(":6510", description="ORB address for orbstat, as seen on the site")
    max_orb_latency_s: float = Field(30.0, gt=0, description="ORB data older than this is stalled")
    python: str = Field(
        "python3", description="the site host's own Python 3.8 or later, which runs the site tool (id checks)"
    )
    site_tool: str = Field(
        f"ha/{SITE_TOOL_FILE}", min_length=1,
        description="where setup puts the site tool (the id checks, one file) on the site, relative to rtexec_dir",
    )
    ha_dir: str = Field("ha", description="directory (relative to rtexec_dir) for authority and fence markers")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"site name must match {_NAME.pattern}, got {v!r}")
        return v

    @field_validator("idserver_address")
    @classmethod
    def _address(cls, v: str) -> str:
        return check_address(v, "idserver_address")

    @field_validator("idserver_task", "writer_tasks", "infosys_tasks")
    @classmethod
    def _tasks(cls, v: str | list[str]) -> str | list[str]:
        for name in [v] if isinstance(v, str) else v:
            if not _TASK.match(name):
                raise ValueError(f"rtexec task name must match {_TASK.pattern}, got {name!r}")
        return v

    @model_validator(mode="after")
    def _ssh_needed(self) -> SiteConfig:
        if self.transport == "ssh" and self.ssh is None:
            raise ValueError(f"site {self.name}: transport is ssh but no ssh settings are given")
        return self

    def path(self, relative: str) -> str:
        """A site path: relative paths are under rtexec_dir."""
        return relative if relative.startswith("/") else f"{self.rtexec_dir.rstrip('/')}/{relative}"

    def site_tool_command(self) -> tuple[str, ...]:
        """The command that runs the site tool on this site."""
        return site_tool(self.python, self.path(self.site_tool))


class PairPolicy(BaseModel):
    """When to fail over, and the margins that keep ids unique."""

    model_config = ConfigDict(extra="forbid")

    failures_before_failover: int = Field(
        3, ge=1, le=100, description="K: consecutive failed probes of the main ID server"
    )
    probe_interval_s: float = Field(10.0, gt=0, le=3600, description="time between health probes")
    probe_timeout_s: float = Field(3.0, gt=0, le=120, description="limit for one probe")
    hold_down_s: float = Field(
        3600.0, ge=0, description="after a failover, no automatic failover again for this long"
    )
    lastid_margin: int = Field(
        1000, ge=0, description="added to each replicated lastid: ids MS may have issued since"
    )
    lastid_max_age_s: float = Field(
        900.0, gt=0, description="an older replica needs a person's approval before failover"
    )
    approval_timeout_s: float = Field(
        1800.0, gt=0, description="how long an approval step waits before leaving things as they are"
    )
    approval_poll_s: float = Field(2.0, gt=0, le=60, description="how often a paused run checks for an answer")
    require_fence: bool = Field(
        False, description="when MS cannot be reached to fence it, a person approves the failover first; "
                           "off: an unreachable MS is taken for dead (see docs/reliability.md, cut links)"
    )
    two_people_for_fallback: bool = Field(
        True, description="the fallback's two approvals (before the point of no return, before dbids starts on "
                          "MS) must come from two different listed operators"
    )


class WitnessConfig(BaseModel):
    """A third host that BUS must still see before it promotes itself."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(..., min_length=1, description="witness host name or address, pinged from BUS")


def check_distinct(main: str, backup: str, operators: list[str]) -> None:
    """The two sites of a pair have their own names, and no operator is listed twice."""
    if main == backup:
        raise ValueError(f"main.name and backup.name are both {main!r}: give each site its own name")
    if len(operators) != len(set(operators)):
        raise ValueError(f"operator names must be unique, got {operators}")


class PairConfig(BaseModel):
    """The two sites, the witness and the policy."""

    model_config = ConfigDict(extra="forbid")

    main: SiteConfig = Field(..., description="the Main System (MS)")
    backup: SiteConfig = Field(..., description="the Backup System (BUS)")
    witness: WitnessConfig
    policy: PairPolicy = Field(default_factory=PairPolicy)
    operators: list[Approver] = Field(default_factory=list, description="who may answer approvals")

    @model_validator(mode="after")
    def _distinct(self) -> PairConfig:
        check_distinct(self.main.name, self.backup.name, [o.name for o in self.operators])
        return self

    def site(self, name: str) -> SiteConfig:
        for s in (self.main, self.backup):
            if s.name == name:
                return s
        raise UnknownSite(name, [self.main.name, self.backup.name])


class UnknownSite(ValueError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown site {name!r}: this pair has {', '.join(known)}")
