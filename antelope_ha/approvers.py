"""Who may approve: the listed operators, each proving it is them with a
one-time code (TOTP, RFC 6238) from an authenticator app.

Plain functions, no Prefect: the approval gates (tasks/approval.py) read the
operators' secrets and the record of used codes, and ask ``judge`` whether an
answer counts.

A code is accepted one 30-second step either side of now (the clocks of a
phone and a worker drift), and once only: RFC 6238, section 5.2, asks the
verifier not to accept the same code a second time. The record keeps, per
operator, the step of their last accepted code; a code of that step or an
earlier one is "reused".
"""
from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Literal

import pyotp
from pydantic import BaseModel, ConfigDict, Field

STEP_S = 30  # RFC 6238's default time step, what authenticator apps use
DRIFT_STEPS = 1  # steps accepted either side of now
LOUD_AFTER = 3  # wrong codes in a row at one gate before the operators are alerted
OPERATOR_NAME = r"^[a-z][a-z0-9._-]{1,31}$"
ISSUER = "antelope-ha"


class Approver(BaseModel):
    """One person who may answer approvals: their name, how to reach them and
    where their TOTP secret is kept (the name of a Prefect Secret block)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=OPERATOR_NAME, description="the name the operator types in an approval")
    contact: str = Field(..., min_length=3, description="how to reach them (mail address, phone)")
    secret_block: str = Field(..., min_length=1, description="the Prefect Secret block holding their TOTP secret")


Refusal = Literal["no operators listed", "unknown operator", "same person", "wrong code", "reused code"]


@dataclass(frozen=True)
class Accepted:
    operator: str
    step: int  # the time step of the accepted code: recorded as used


@dataclass(frozen=True)
class Refused:
    kind: Refusal
    reason: str

    @property
    def wrong_code(self) -> bool:
        return self.kind in ("wrong code", "reused code")


def secret_block_name(pair_name: str, operator: str) -> str:
    """The Prefect Secret block an operator's TOTP secret is kept in, unless the configuration names one."""
    return f"{pair_name}-totp-{operator}"


def step_at(now: float) -> int:
    return int(now // STEP_S)


def new_secret() -> str:
    """A fresh TOTP secret (base32, 160 bits as RFC 4226 recommends)."""
    return pyotp.random_base32(32)


def valid_secret(secret: str) -> bool:
    try:
        pyotp.TOTP(secret).at(0)
    except Exception:  # binascii.Error, ValueError: not base32
        return False
    return bool(secret.strip())


def provisioning_uri(secret: str, operator: str, pair: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans (as a QR code) or takes typed in."""
    return pyotp.TOTP(secret).provisioning_uri(name=f"{operator}@{pair}", issuer_name=ISSUER)


def code_at(secret: str, now: float) -> str:
    """The code an authenticator app shows at ``now`` (the drill and the tests answer with it)."""
    return pyotp.TOTP(secret).at(now)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step within the drift whose code is ``code``, or None."""
    code = code.strip()
    if not re.fullmatch(r"[0-9]{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    here = step_at(now)
    for step in range(here - DRIFT_STEPS, here + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_S), code):
            return step
    return None


def judge(name: str, code: str, roster: dict[str, str], used: dict[str, int], now: float,
          must_differ_from: str | None = None) -> Accepted | Refused:
    """Whether an answer given as ``name`` with ``code`` counts.

    ``roster``: each listed operator's TOTP secret; ``used``: per operator,
    the step of their last accepted code; ``must_differ_from``: the operator
    who answered the earlier gate, when the policy asks for two people.
    The reasons are shown to whoever answered: they never hold a secret or
    the expected code.
    """
    name = name.strip()
    if not roster:
        return Refused("no operators listed", "no operators are listed for this pair, so nobody can approve: add "
                                              "them under operators: in the configuration and run setup again")
    if name not in roster:
        return Refused("unknown operator", f"{name!r} is not a listed operator (listed: {', '.join(sorted(roster))})")
    if must_differ_from is not None and name == must_differ_from:
        return Refused("same person", f"{name} answered the earlier gate: this gate needs a second listed operator "
                                      "(the policy two_people_for_fallback)")
    step = matching_step(roster[name], code, now)
    if step is None:
        return Refused("wrong code", f"the code given for {name} is not their current one-time code")
    if step <= used.get(name, -1):
        return Refused("reused code", f"the code given for {name} was already used: wait for the next code "
                                      f"(a new one every {STEP_S} s)")
    return Accepted(name, step)


def wrong_in_a_row(history: list[Accepted | Refused]) -> int:
    """How many wrong or reused codes were given at one gate since the last
    accepted answer (``history`` oldest first); other refusals (a name not
    listed, the same person) neither count nor break the row."""
    count = 0
    for verdict in reversed(history):
        if isinstance(verdict, Accepted):
            break
        count += verdict.wrong_code
    return count
