"""Who may approve: listed operators, each with a one-time code accepted once
(antelope_ha/approvers.py, no Prefect)."""
from __future__ import annotations

import pyotp
import pytest

from antelope_ha.approvers import (
    STEP_S, Accepted, Refused, code_at, judge, new_secret, provisioning_uri, valid_secret, wrong_in_a_row,
)

NOW = 1_800_000_015.0  # 15 s into a time step
GRACE, HEIDI = new_secret(), new_secret()
ROSTER = {"grace": GRACE, "heidi": HEIDI}


def test_the_current_code_of_a_listed_operator_is_accepted_with_its_step():
    verdict = judge("grace", code_at(GRACE, NOW), ROSTER, {}, NOW)
    assert verdict == Accepted("grace", int(NOW // STEP_S))


def test_codes_one_step_either_side_are_accepted_two_are_not():
    for offset, accepted in ((-STEP_S, True), (STEP_S, True), (-2 * STEP_S, False), (2 * STEP_S, False)):
        verdict = judge("grace", code_at(GRACE, NOW + offset), ROSTER, {}, NOW)
        assert isinstance(verdict, Accepted) is accepted, (offset, verdict)


def test_another_operators_code_is_wrong():
    verdict = judge("grace", code_at(HEIDI, NOW), ROSTER, {}, NOW)
    assert verdict == Refused("wrong code", "the code given for grace is not their current one-time code")


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", " 12 34 "])
def test_malformed_codes_are_wrong(code):
    assert judge("grace", code, ROSTER, {}, NOW).kind == "wrong code"


def test_a_code_is_taken_once():
    first = judge("grace", code_at(GRACE, NOW), ROSTER, {}, NOW)
    again = judge("grace", code_at(GRACE, NOW), ROSTER, {"grace": first.step}, NOW + 5)
    assert again.kind == "reused code" and "already used" in again.reason
    # an earlier step's code, still within the drift, is reused too; the next step's is new
    assert judge("grace", code_at(GRACE, NOW - STEP_S), ROSTER, {"grace": first.step}, NOW).kind == "reused code"
    assert isinstance(judge("grace", code_at(GRACE, NOW + STEP_S), ROSTER, {"grace": first.step}, NOW + STEP_S),
                      Accepted)
    # heidi's record does not hold grace's code
    assert isinstance(judge("grace", code_at(GRACE, NOW), ROSTER, {"heidi": first.step}, NOW), Accepted)


def test_an_unlisted_name_is_refused_naming_the_listed_ones_and_never_a_code():
    verdict = judge("mallory", code_at(GRACE, NOW), ROSTER, {}, NOW)
    assert verdict.kind == "unknown operator"
    assert verdict.reason == "'mallory' is not a listed operator (listed: grace, heidi)"


def test_with_nobody_listed_nobody_can_approve():
    verdict = judge("grace", code_at(GRACE, NOW), {}, {}, NOW)
    assert verdict.kind == "no operators listed" and "operators:" in verdict.reason


def test_the_same_person_at_both_gates_is_refused_with_that_reason():
    verdict = judge("grace", code_at(GRACE, NOW), ROSTER, {}, NOW, must_differ_from="grace")
    assert verdict.kind == "same person" and "second listed operator" in verdict.reason
    assert isinstance(judge("heidi", code_at(HEIDI, NOW), ROSTER, {}, NOW, must_differ_from="grace"), Accepted)


def test_reasons_never_hold_a_secret_or_the_expected_code():
    for name, code in (("grace", "000000"), ("grace", "12"), ("mallory", "000000")):
        reason = judge(name, code, ROSTER, {}, NOW).reason
        assert GRACE not in reason and code_at(GRACE, NOW) not in reason


def test_wrong_codes_in_a_row_count_until_an_accepted_answer():
    wrong, unknown = Refused("wrong code", ""), Refused("unknown operator", "")
    reused, accepted = Refused("reused code", ""), Accepted("grace", 1)
    assert wrong_in_a_row([]) == 0
    assert wrong_in_a_row([wrong, unknown, reused, wrong]) == 3  # a stray name does not break the row
    assert wrong_in_a_row([wrong, wrong, accepted, wrong]) == 1


def test_a_new_secret_is_valid_and_its_uri_provisions_an_app():
    secret = new_secret()
    assert valid_secret(secret) and not valid_secret("not base32!") and not valid_secret("")
    uri = provisioning_uri(secret, "grace", "pair1")
    assert uri.startswith("otpauth://totp/antelope-ha:grace%40pair1?") and f"secret={secret}" in uri
    assert pyotp.parse_uri(uri).at(NOW) == code_at(secret, NOW)
