"""The pair's shared state: who is authoritative (with an epoch), the health
counters, maintenance pause, hold-down acknowledgement and a declined failover,
the watcher acting for the pair.

It is stored where every flow can read it even when MS is gone (a Prefect
block, see tasks/state.py); copies of the authority go to each reachable
site (``ha/authority``) so a site can refuse to start dbids on a stale epoch.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from antelope_ha.baseline import Baseline, take

if TYPE_CHECKING:
    from antelope_ha.idscan import IdReport

MAX_DECISIONS = 20


class Authority(BaseModel):
    site: str
    epoch: int = Field(ge=1)
    since: float
    flow_run: str | None = None
    reason: str = ""
    lastid: dict[str, int] | None = Field(
        None, description="the site's dbids.lastid when it took authority: its dbids issues ids above it "
                          "(None on records made before this was kept)")

    def marker(self) -> dict:
        """What is written to a site's ha/authority file."""
        return {"site": self.site, "epoch": self.epoch}


# What health decides, then what people do by the CLI.
Action = Literal["stay", "warn", "failover", "hold", "fence", "alert", "pause", "resume", "ack"]


class Decision(BaseModel):
    at: float
    action: Action
    reason: str
    code: str = Field("", description="what the health decision is about (antelope_ha.decide.CODES); "
                                      "a change of code is a change of decision")


class Pause(BaseModel):
    by: str
    reason: str
    since: float


class Declined(BaseModel):
    """A failover a person rejected or left unanswered: health holds until acknowledged."""

    at: float
    what: str  # the approval asked, its outcome, and who said why


class Acknowledged(BaseModel):
    """Who let automatic failover happen again after a failover, and why."""

    at: float
    by: str
    reason: str


class WatcherLease(BaseModel):
    """The health watcher that acts for the pair: the newest one to take the lease."""

    run: str
    since: float


class Replica(BaseModel):
    """A copy of the authoritative site's lastid, kept next to the copy on the
    other site (``ha/replica``): when it was read and the values."""

    taken_at: float
    values: dict[str, int]


class HAState(BaseModel):
    authority: Authority
    history: list[Authority] = Field(default_factory=list, description="earlier authorities, oldest first")
    consecutive_failures: int = 0
    decisions: list[Decision] = Field(default_factory=list)
    pause: Pause | None = None
    hold_down_ack: float | None = Field(None, description="when a person acknowledged the hold-down")
    acknowledged: Acknowledged | None = Field(None, description="who acknowledged last, and why")
    declined: Declined | None = Field(None, description="the last failover a person declined, until MS answers again")
    fallback_in_progress: bool = False
    fallback_approved_by: str | None = Field(
        None, description="who approved the fallback's point of no return, while it is in progress")
    codes_used: dict[str, int] = Field(
        default_factory=dict, description="per operator, the time step of their last accepted one-time code "
                                          "(antelope_ha/approvers.py): a code counts once")
    recovered_through: int = Field(0, description="the last backup epoch whose recovery was verified")
    baselines: dict[str, Baseline] = Field(
        default_factory=dict, description="per site, its id problems when its baseline was taken: old ones "
                                          "are listed, not blocking (antelope_ha/baseline.py)")
    watcher: WatcherLease | None = Field(None, description="the health watcher acting for the pair")

    @classmethod
    def initial(cls, main_site: str) -> HAState:
        return cls(authority=Authority(site=main_site, epoch=1, since=time.time(), reason="initial"))

    def with_authority(self, site: str, flow_run: str | None, reason: str, now: float | None = None,
                       lastid: dict[str, int] | None = None) -> HAState:
        """A new epoch for ``site``, whose dbids starts above ``lastid``; the old
        authority goes to history."""
        new = Authority(site=site, epoch=self.authority.epoch + 1, since=now or time.time(),
                        flow_run=flow_run, reason=reason, lastid=lastid)
        return self.model_copy(update={"authority": new, "history": [*self.history, self.authority],
                                       "consecutive_failures": 0, "declined": None})

    def with_baseline(self, site: str, report: IdReport, reason: str) -> HAState:
        """The site's baseline taken again from an id scan report (``idscan ids``)."""
        return self.model_copy(update={"baselines": {
            **self.baselines, site: take(report, self.baselines.get(site), reason)}})

    def record(self, decision: Decision) -> HAState:
        return self.model_copy(update={"decisions": [*self.decisions, decision][-MAX_DECISIONS:]})

    def acknowledge(self, by: str, reason: str, now: float) -> HAState:
        """A person lets automatic failover happen again (the hold-down, a declined failover)."""
        ack = Acknowledged(at=now, by=by, reason=reason)
        return self.model_copy(update={"hold_down_ack": now, "acknowledged": ack}).record(
            Decision(at=now, action="ack", reason=f"hold-down acknowledged by {by}: {reason}"))

    def last_health_code(self) -> str | None:
        """The code of the last health decision on the record (people's entries skipped)."""
        return next((d.code for d in reversed(self.decisions) if d.code), None)

    def last_failover(self, backup_site: str) -> Authority | None:
        """The most recent epoch that made the backup authoritative."""
        for a in reversed([*self.history, self.authority]):
            if a.site == backup_site:
                return a
        return None
