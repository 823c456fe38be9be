"""Tell the operators: email through prefect-email, anything else through
saved Prefect notification blocks (an SMS gateway's webhook, Apprise URLs).

Every message names the pair, the decision (in the subject, e.g.
``FAILOVER to bus done``), the flow run and a link to it in the UI, so the
person on call can open the run from a phone.

A notification that cannot be sent is logged loudly but never stops a
failover: the pair's safety comes first.

No storms (antelope_ha/alerts.py): the same subject goes to the same channel
at most once per ``repeat_window_s``; what was held back follows as a digest
once the window has ended (sent before the next message, or by the watcher
at its heartbeat). A replicate that fails while MS is known to be down (a
failover under way, a maintenance pause) pages nobody: once BUS is
authoritative there is nothing to replicate.

Blocks are loaded and notify with ``_sync=True``: in the async health flow,
and in its failure hooks, Prefect would otherwise hand back coroutines.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_logger
from prefect.runtime import flow_run as this_run
from prefect.settings import PREFECT_UI_URL
from prefect.utilities.asyncutils import run_coro_as_sync

from antelope_ha.alerts import admit, digest_subject, digest_text, due_digests
from antelope_ha.names import PairNames
from blocks.pair import NotifyTargets

# Flows that fail when MS is down: expected, not news, during a failover or a pause.
FAIL_WHEN_MS_IS_DOWN = ("replicate-lastid",)


def run_url(flow_run_id: str, ui_url: str | None = None) -> str:
    """The run's page in the Prefect UI: under ``ui_url``, else under Prefect's
    UI_URL setting; with neither, a path relative to the UI (which still works
    as a link in an artifact the UI shows)."""
    base = (ui_url or PREFECT_UI_URL.value() or "").rstrip("/")
    return f"{base}/runs/flow-run/{flow_run_id}"


def compose(subject: str, body: str, *, pair: str, flow: str, run_name: str, run_id: str,
            ui_url: str | None) -> tuple[str, str]:
    """Subject and text of one message."""
    link = run_url(run_id, ui_url)
    if not link.startswith(("http://", "https://")):  # a path is no use in a message
        link = f"flow run {run_id} (no ui_url configured)"
    text = f"{subject}\n\n{body}\n\npair: {pair}\nflow: {flow} (run {run_name})\nrun: {link}\n"
    return f"[antelope-ha {pair}] {subject}", text


def clock() -> float:
    """Now, for the repeat window (the tests move it)."""
    return time.time()


@contextmanager
def ledger(pair: str) -> Iterator[dict[str, dict]]:
    """What was sent to whom and held back (antelope_ha/alerts.py), kept in the
    pair's variable; changes are written back. Two runs notifying at once may
    each send: a message twice is better than none."""
    from prefect.variables import Variable

    name = PairNames(pair).notified_variable
    book = dict(Variable.get(name, default={}, _sync=True) or {})
    yield book
    Variable.set(name, book, overwrite=True, _sync=True)


def send_paced(targets: NotifyTargets, pair: str, bare_subject: str, subject: str, text: str,
               log: logging.Logger | logging.LoggerAdapter) -> list[str]:
    """Send the digests that are due, then the message to each channel that has not
    had ``bare_subject`` within the window; return the channels that failed."""
    channels = targets_named(targets)
    with ledger(pair) as book:
        now = clock()
        digests = due_digests(book, now, targets.repeat_window_s)
        admitted = [c for c in channels if admit(book, c, bare_subject, now, targets.repeat_window_s)]
    failed = _send_digests(targets, pair, digests, log)
    if held := [c for c in channels if c not in admitted]:
        log.info("not sent again within %g s to %s: %s", targets.repeat_window_s, ", ".join(held), bare_subject)
    return failed + (send(targets, subject, text, log, admitted) if admitted else [])


def send_due_digests(pair: str) -> list[str]:
    """Send the digests whose window has ended (the watcher calls this at each heartbeat)."""
    targets = _targets_of(pair)
    if targets is None:
        return []
    with ledger(pair) as book:
        digests = due_digests(book, clock(), targets.repeat_window_s)
    return _send_digests(targets, pair, digests, get_logger("antelope_ha.notify"))


def _send_digests(targets: NotifyTargets, pair: str, digests: dict[str, list[str]],
                  log: logging.Logger | logging.LoggerAdapter) -> list[str]:
    failed = []
    for channel, lines in digests.items():
        text = f"{digest_subject(lines)}\n\n{digest_text(lines, targets.repeat_window_s)}\n\npair: {pair}\n"
        failed += send(targets, f"[antelope-ha {pair}] {digest_subject(lines)}", text, log, [channel])
    return failed


def send(targets: NotifyTargets, subject: str, text: str, log: logging.Logger | logging.LoggerAdapter,
         channels: list[str] | None = None) -> list[str]:
    """Send to every target (or to those of ``channels``, as ``targets_named``
    names them); return the ones that failed."""
    failed = []
    if targets.email_server and targets.email_to and (channels is None or f"email:{targets.email_server}" in channels):
        from prefect_email import EmailServerCredentials, email_send_message

        try:
            creds = EmailServerCredentials.load(targets.email_server, _sync=True)
            run_coro_as_sync(email_send_message.fn(
                email_server_credentials=creds, subject=subject, msg=_html(text), msg_plain=text,
                email_from=targets.email_from, email_to=targets.email_to,
            ))
        except Exception as exc:  # any failure to notify is reported, not raised
            log.error("email to %s failed: %s", ", ".join(targets.email_to), exc)
            failed.append(f"email:{targets.email_server}")
    for name in targets.webhooks if channels is None else [w for w in targets.webhooks if w in channels]:
        try:
            Block.load(name, _sync=True).notify(body=text, subject=subject, _sync=True)
        except Exception as exc:
            log.error("notification block %s failed: %s", name, exc)
            failed.append(name)
    return failed


def targets_named(targets: NotifyTargets | None) -> list[str]:
    """Each channel of ``targets`` by the name ``send`` reports a failure under."""
    if targets is None:
        return []
    email = [f"email:{targets.email_server}"] if targets.email_server and targets.email_to else []
    return email + list(targets.webhooks)


def _html(text: str) -> str:
    from html import escape

    return f"<pre>{escape(text)}</pre>"


@task(name="Notify operators", task_run_name="notify: {subject}", cache_policy=NO_CACHE, timeout_seconds=60)
def notify(targets: NotifyTargets | None, subject: str, body: str) -> list[str]:
    """Send ``subject`` (the decision, naming the site) and ``body`` (why) to
    every target; return the targets that failed."""
    log = get_run_logger()
    log.info("NOTIFY %s: %s", subject, body)
    if targets is None:
        return []
    pair = str(this_run.get_parameters().get("pair_name", "?"))
    return send_paced(targets, pair, subject, *compose_for_this_run(targets, subject, body), log)


def compose_for_this_run(targets: NotifyTargets, subject: str, body: str) -> tuple[str, str]:
    """Subject and text of a message about the current flow run."""
    return compose(subject, body, pair=str(this_run.get_parameters().get("pair_name", "?")),
                   flow=this_run.get_flow_name() or "?", run_name=this_run.get_name() or "?",
                   run_id=str(this_run.get_id()), ui_url=targets.ui_url)


def targets_of_this_run() -> NotifyTargets | None:
    """The notification targets of the pair the current flow run works on."""
    return _targets_of(this_run.get_parameters().get("pair_name"))


def _targets_of(pair_name: Any) -> NotifyTargets | None:
    from blocks.pair import AntelopePair

    if not isinstance(pair_name, str):
        return None
    try:
        return AntelopePair.load(pair_name, _sync=True).notify
    except ValueError:
        return None


def notify_run_ended_badly(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (on_failure, on_crashed): a procedure that did not finish is
    news for the operators, whatever step it stopped at."""
    log = get_logger("antelope_ha.notify")
    pair = flow_run.parameters.get("pair_name")
    targets = _targets_of(pair)
    subject = f"{flow.name} {state.name.upper()}"
    body = f"The {flow.name} run stopped: {state.message or state.name}. Look at the run before acting by hand."
    log.error("NOTIFY %s: %s", subject, body)
    if targets is None:
        return
    full_subject, text = compose(subject, body, pair=str(pair), flow=flow.name, run_name=flow_run.name,
                                 run_id=str(flow_run.id), ui_url=targets.ui_url)

    def tell() -> None:
        if quiet := expected_failure(flow.name, str(pair)):
            log.warning("not paged: %s failed while %s", flow.name, quiet)
            return
        send_paced(targets, str(pair), subject, full_subject, text, log)

    # The async health flow runs its hooks on its event loop, where Apprise's
    # synchronous send (and the variable of the repeat window) cannot run:
    # send from a thread of its own.
    sender = threading.Thread(target=tell, name="notify-run-ended")
    sender.start()
    sender.join()


def expected_failure(flow_name: str, pair: str) -> str | None:
    """Why a failed run of ``flow_name`` is no news (MS known to be down), or None."""
    if flow_name not in FAIL_WHEN_MS_IS_DOWN:
        return None
    from tasks.lock import procedure_holder
    from tasks.pair import load_pair
    from tasks.state import load_state

    try:
        config, _ = load_pair(pair)
        state = load_state(pair)
        holder = procedure_holder(pair)
    except Exception as exc:  # what cannot be read cannot excuse a failure: page
        get_logger("antelope_ha.notify").warning("cannot tell whether %s was expected to fail: %s", flow_name, exc)
        return None
    if state.pause is not None:
        return f"automatic failover is paused for maintenance by {state.pause.by}: {state.pause.reason}"
    if holder.startswith("failover"):
        return f"{holder} is in progress"
    return None
