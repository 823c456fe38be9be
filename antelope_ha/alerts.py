"""No alert storms: the same subject to the same channel at most once per
window, and a digest of what was held back once the window has ended.

Plain functions over a ledger (a JSON-able dict, kept by tasks/notify.py in a
Prefect variable of the pair): per channel and subject, when its window
started and what was held back since. A message that asks a person to act
now (an approval waiting, wrong codes in a row) is never held back.
"""
from __future__ import annotations

from collections import defaultdict

from antelope_ha.commands import fmt_time

NEVER_HELD = ("APPROVAL NEEDED", "ALERT")  # subjects that ask a person to act now


def _key(channel: str, subject: str) -> str:
    return f"{channel}\t{subject}"


def admit(ledger: dict[str, dict], channel: str, subject: str, now: float, window_s: float) -> bool:
    """Whether ``subject`` goes to ``channel`` now; a message held back is counted
    in the ledger for the digest. A window of 0 holds nothing back."""
    if window_s <= 0 or subject.startswith(NEVER_HELD):
        return True
    entry = ledger.get(_key(channel, subject))
    if entry is None or now - entry["since"] >= window_s:
        ledger[_key(channel, subject)] = {"since": now, "held": 0}
        return True
    entry["held"] += 1
    entry.setdefault("first_held", now)
    entry["last_held"] = now
    return False


def due_digests(ledger: dict[str, dict], now: float, window_s: float) -> dict[str, list[str]]:
    """Per channel, a line for each subject whose window has ended with messages
    held back; those entries leave the ledger (their windows are over)."""
    digests: dict[str, list[str]] = defaultdict(list)
    for key, entry in list(ledger.items()):
        if now - entry["since"] < window_s:
            continue
        channel, subject = key.split("\t", 1)
        if entry["held"]:
            digests[channel].append(
                f"{subject}: {entry['held']} more held back, from {fmt_time(entry['first_held'])} to "
                f"{fmt_time(entry['last_held'])} (first sent {fmt_time(entry['since'])})")
        del ledger[key]
    return dict(digests)


def digest_subject(lines: list[str]) -> str:
    return f"DIGEST: {len(lines)} subject{'s' if len(lines) != 1 else ''} repeated and held back"


def digest_text(lines: list[str], window_s: float) -> str:
    return (f"Messages repeated within {window_s:g} s were not sent again (notify.repeat_window_s):\n\n"
            + "\n".join(f"- {line}" for line in lines))

