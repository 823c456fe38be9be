"""The pair's history as a timeline: each ``antelope-ha.*`` event (tasks/history.py)
as one entry saying when, at which epoch, what, who and why."""
from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Entry(BaseModel):
    """One moment of the history (``antelope-ha history --json`` prints a list of them)."""

    at: dt.datetime
    event: str  # the event's name without "antelope-ha."
    epoch: int | None
    who: str
    what: str
    why: str
    flow_run: str | None = None


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """``30m``, ``12h``, ``7d`` ago, or an ISO 8601 date or time (UTC unless it says)."""
    if match := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text):
        return now - dt.timedelta(seconds=float(match.group(1)) * UNITS[match.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r} is neither a duration (30m, 12h, 7d) nor an ISO date "
                         f"(2026-11-30 or 2026-11-30T22:05)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _what(name: str, p: dict) -> str:
    """What happened, in words, from the event's name and payload."""
    procedure, gate = p.get("procedure", "?"), f"{p.get('gate', '?')} (on {p.get('site', '?')})"
    return {
        "health.decision": f"health decided {str(p.get('action', '?')).upper()} ({p.get('code', '')})",
        "procedure.started": f"{procedure} started",
        "procedure.ended": f"{procedure} ended: {p.get('outcome', '?')}",
        "authority.changed": f"{p.get('site', '?')} authoritative, epoch {p.get('epoch', '?')} "
                             f"(was {p.get('previous', '?')})",
        "approval.approved": f"APPROVED {gate}",
        "approval.rejected": f"REJECTED {gate}",
        "approval.refused": f"answer REFUSED ({p.get('why', '?')}) at {gate}",
        "failover.paused": "automatic failover paused",
        "failover.resumed": "automatic failover resumed",
        "hold-down.acknowledged": "hold-down acknowledged: automatic failover may happen again",
    }.get(name, name)


def entry(event: dict) -> Entry:
    """An event as the API gives it (JSON), as an entry of the timeline."""
    p = event.get("payload") or {}
    name = event["event"].removeprefix("antelope-ha.")
    epoch = p.get("epoch")
    return Entry(at=dt.datetime.fromisoformat(event["occurred"]), event=name,
                 epoch=int(epoch) if epoch is not None else None,
                 who=str(p.get("operator") or ("health (automation)" if name == "health.decision" else "?")),
                 what=_what(name, p), why=str(p.get("reason") or ""), flow_run=p.get("flow_run"))


def lines(entries: list[Entry]) -> list[str]:
    """The timeline for a person: one line each for when, epoch and what, then who and why."""
    shown = []
    for e in entries:
        shown.append(f"{e.at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S}  "
                     f"{'epoch ' + str(e.epoch) if e.epoch is not None else 'epoch ?'}  {e.what}")
        shown.append(f"    by {e.who}" + (f": {e.why}" if e.why else ""))
    return shown
