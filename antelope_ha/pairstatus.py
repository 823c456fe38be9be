"""The pair's status for people and for monitoring: what the record says, what
each site says, where they disagree, and one level for all of it.

The levels follow the Nagios plugin convention (exit code 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN), so that Nagios, Icinga or a cron job can run
``antelope-ha status`` as a check; docs/operating.md lists which state gives
which level. ``StatusReport`` is the shape of ``antelope-ha status --json``.
"""
from __future__ import annotations

import time
from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, Field

from antelope_ha.config import PairConfig
from antelope_ha.decide import held
from antelope_ha.state import Acknowledged, Authority, Decision, Declined, HAState, Pause, Replica, WatcherLease


class Level(IntEnum):
    """A Nagios plugin's states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


LevelName = Literal["OK", "WARNING", "CRITICAL", "UNKNOWN"]


class Finding(BaseModel):
    level: Literal["WARNING", "CRITICAL", "UNKNOWN"]
    what: str


class Marker(BaseModel):
    site: str
    epoch: int


class SiteView(BaseModel):
    """What a site says about itself right now (unknown fields are None when it cannot be reached)."""

    name: str
    authoritative: bool = False
    reachable: bool
    error: str = ""
    rtexec: bool | None = None
    dbids_pids: list[int] = Field(default_factory=list)
    dbidserver: str | None = None
    armed: bool | None = None
    marker: Marker | None = None
    replica: Replica | None = None


class StatusReport(BaseModel):
    """``antelope-ha status --json``: one object per look (one a line with ``--watch``)."""

    pair: str
    checked_at: float = Field(description="when the sites were looked at (epoch s)")
    status: LevelName = Field(description="the Nagios level: the worst of the findings, OK without any")
    exit_code: int = Field(ge=0, le=3, description="the command's exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN")
    summary: str = Field(description="one line: the level and the worst finding")
    findings: list[Finding] = Field(default_factory=list, description="everything not OK, worst first")
    disagreements: list[str] = Field(default_factory=list, description="where the sites contradict the record "
                                                                       "(also among the findings)")
    authority: Authority | None = Field(None, description="the record's authority (None: the record is unreadable)")
    procedure_in_progress: str = Field("", description="the failover, fallback or recovery run holding the pair")
    fallback_in_progress: bool = False
    automatic_failover: Literal["enabled", "held", "not applicable", "unknown"] = "unknown"
    held: str = Field("", description="why an automatic failover would be held back now")
    pause: Pause | None = None
    acknowledged: Acknowledged | None = None
    declined: Declined | None = None
    watcher: WatcherLease | None = None
    consecutive_failures: int = 0
    failures_before_failover: int | None = None
    replica_age_s: float | None = Field(None, description="age of the lastid replica on the backup site")
    replica_max_age_s: float | None = None
    decisions: list[Decision] = Field(default_factory=list, description="the record's latest decisions")
    sites: list[SiteView] = Field(default_factory=list)


def disagreements(pair: PairConfig, state: HAState, views: list[SiteView]) -> list[Finding]:
    """Every way the reachable sites contradict the stored record; a second ID
    server, or none on the authoritative site, is CRITICAL."""
    auth = state.authority
    serving = pair.site(auth.site)
    found: list[Finding] = []

    def say(level: Literal["WARNING", "CRITICAL"], what: str) -> None:
        found.append(Finding(level=level, what=what))

    for v in (v for v in views if v.reachable):
        if v.marker is None:
            if auth.epoch > 1:
                say("WARNING", f"{v.name} has no authority marker; the record says {auth.site} epoch {auth.epoch}")
        elif v.marker.model_dump() != auth.marker():
            say("WARNING", f"{v.name}'s marker says {v.marker.site} epoch {v.marker.epoch}; "
                           f"the record says {auth.site} epoch {auth.epoch}")
        if v.name != auth.site and v.dbids_pids and not (state.fallback_in_progress and v.name == pair.main.name):
            say("CRITICAL", f"SPLIT BRAIN RISK: dbids runs on {v.name} (pid "
                            f"{', '.join(map(str, v.dbids_pids))}) but {auth.site} is authoritative")
        if v.name == auth.site and not v.dbids_pids:
            say("CRITICAL", f"dbids is not running on {v.name}, the authoritative site")
        if v.dbidserver != serving.idserver_address and not state.fallback_in_progress:
            say("WARNING", f"{v.name}'s descriptor uses dbidserver {v.dbidserver}; the authoritative ID server "
                           f"is {serving.idserver_address} ({auth.site})")
        if v.name == pair.main.name and auth.site == pair.backup.name and not v.armed:
            say("WARNING", f"{v.name} is not armed although {auth.site} is authoritative")
        if v.name == auth.site and v.armed and not state.fallback_in_progress:
            say("WARNING", f"{v.name} is armed although it is authoritative: its dbids cannot be restarted")
    return found


def situation(pair: PairConfig, state: HAState, views: list[SiteView], procedure: str,
              now: float) -> list[Finding]:
    """The pair's state as findings (before the disagreements): what an operator must know."""
    auth, main, backup = state.authority, pair.main.name, pair.backup.name
    found: list[Finding] = []
    reach = {v.name: v for v in views}
    if procedure.startswith("failover"):
        found.append(Finding(level="CRITICAL", what=f"failover in progress: {procedure}"))
    elif procedure:
        found.append(Finding(level="WARNING", what=f"in progress: {procedure}"))
    if state.fallback_in_progress and not procedure:
        found.append(Finding(level="WARNING", what="a fallback was started and has not finished"))
    if auth.site in reach and not reach[auth.site].reachable:
        found.append(Finding(level="CRITICAL", what=f"{auth.site}, the authoritative site, is unreachable"))
    if auth.site == backup:
        main_down = main in reach and not reach[main].reachable
        found.append(Finding(level="CRITICAL" if main_down else "WARNING",
                             what=f"{backup} is authoritative since {time.strftime('%Y-%m-%d %H:%M', time.gmtime(auth.since))}"
                                  f" UTC (epoch {auth.epoch})" + (f" and {main} is unreachable" if main_down
                                                                  else f": {main} awaits the fallback")))
    elif backup in reach and not reach[backup].reachable:
        found.append(Finding(level="WARNING", what=f"{backup} is unreachable: no failover is possible"))
    holding = held(state, pair, now) if auth.site == main else None
    if holding:
        found.append(Finding(level="WARNING", what="automatic failover HELD: " + holding[1].removeprefix("but ")))
    if state.consecutive_failures:
        found.append(Finding(level="WARNING", what=f"{state.consecutive_failures} consecutive failed probes of "
                                                   f"{auth.site}'s ID server "
                                                   f"(failover after {pair.policy.failures_before_failover})"))
    replica = reach[backup].replica if backup in reach else None
    if auth.site == main and backup in reach and reach[backup].reachable:
        if replica is None:
            found.append(Finding(level="WARNING", what=f"no lastid replica on {backup}"))
        elif now - replica.taken_at > pair.policy.lastid_max_age_s:
            found.append(Finding(level="WARNING", what=f"the lastid replica on {backup} is "
                                                       f"{now - replica.taken_at:.0f} s old (policy: at most "
                                                       f"{pair.policy.lastid_max_age_s:g} s)"))
    return found


def report(pair_name: str, pair: PairConfig, state: HAState, views: list[SiteView], procedure: str,
           now: float, decisions: int = 5) -> StatusReport:
    """Everything ``status`` shows, with its level."""
    auth, main, backup = state.authority, pair.main.name, pair.backup.name
    contradictions = disagreements(pair, state, views)
    findings = situation(pair, state, views, procedure, now) + contradictions
    holding = held(state, pair, now) if auth.site == main else None
    replica = next((v.replica for v in views if v.name == backup), None)
    return _levelled(StatusReport(
        pair=pair_name, checked_at=now, status="OK", exit_code=0, summary="", findings=findings,
        disagreements=[f.what for f in contradictions], authority=auth,
        procedure_in_progress=procedure, fallback_in_progress=state.fallback_in_progress,
        automatic_failover="not applicable" if auth.site != main else "held" if holding else "enabled",
        held=holding[1].removeprefix("but ") if holding else "", pause=state.pause, acknowledged=state.acknowledged,
        declined=state.declined, watcher=state.watcher, consecutive_failures=state.consecutive_failures,
        failures_before_failover=pair.policy.failures_before_failover,
        replica_age_s=None if replica is None else round(now - replica.taken_at, 1),
        replica_max_age_s=pair.policy.lastid_max_age_s, decisions=state.decisions[-decisions:] if decisions else [],
        sites=[v.model_copy(update={"authoritative": v.name == auth.site}) for v in views]),
        f"{auth.site} authoritative, epoch {auth.epoch}; the record and every reachable site agree")


def unknown(pair_name: str, why: str, now: float) -> StatusReport:
    """The record or the pair cannot be read (the server is down, the record is invalid)."""
    return _levelled(StatusReport(pair=pair_name, checked_at=now, status="UNKNOWN", exit_code=3, summary="",
                                  findings=[Finding(level="UNKNOWN", what=why)]), "")


def _levelled(r: StatusReport, ok: str) -> StatusReport:
    ranked = sorted(r.findings, key=lambda f: -Level[f.level])
    level = Level[ranked[0].level] if ranked else Level.OK
    more = f" (+{len(ranked) - 1} more)" if len(ranked) > 1 else ""
    summary = f"ANTELOPE-HA {level.name} - pair {r.pair}: " + (ranked[0].what + more if ranked else ok)
    return r.model_copy(update={"findings": ranked, "status": level.name, "exit_code": int(level),
                                "summary": summary})
