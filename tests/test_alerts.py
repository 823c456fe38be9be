"""The repeat window of notifications (antelope_ha/alerts.py), on its own clock."""
from __future__ import annotations

from antelope_ha.alerts import admit, digest_subject, due_digests

T0 = 1_700_000_000.0
WINDOW = 600.0


def test_a_subject_goes_once_per_window_per_channel_and_the_rest_makes_one_digest():
    book: dict[str, dict] = {}
    sent = [admit(book, "email", "replicate-lastid FAILED", T0 + 60 * m, WINDOW) for m in range(10)]
    assert sent == [True] + [False] * 9
    assert admit(book, "sms", "replicate-lastid FAILED", T0 + 120, WINDOW)  # another channel: its own window
    assert admit(book, "email", "FAILOVER to bus done", T0 + 120, WINDOW)  # another subject too
    assert due_digests(book, T0 + 599, WINDOW) == {}  # not before the window ends
    digests = due_digests(book, T0 + 600, WINDOW)
    assert list(digests) == ["email"] and len(digests["email"]) == 1, digests
    assert digests["email"][0].startswith("replicate-lastid FAILED: 9 more held back, from 2023-11-14 22:14:20")
    assert due_digests(book, T0 + 600, WINDOW) == {}  # told once
    assert admit(book, "email", "replicate-lastid FAILED", T0 + 601, WINDOW)  # a new window
    assert digest_subject(digests["email"]) == "DIGEST: 1 subject repeated and held back"


def test_approval_requests_alerts_and_a_window_of_zero_hold_nothing_back():
    book: dict[str, dict] = {}
    for subject in ("APPROVAL NEEDED on ms: fallback", "ALERT: 3 WRONG ONE-TIME CODES in a row on ms"):
        assert all(admit(book, "email", subject, T0 + s, WINDOW) for s in range(3))
    assert all(admit(book, "email", "replicate-lastid FAILED", T0 + s, 0) for s in range(3))
    assert book == {}
