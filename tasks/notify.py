"""Tell the operators: email through prefect-email, anything else through
saved Prefect notification blocks (an SMS gateway's webhook, Apprise URLs).

Every message names the pair, the decision (in the subject, e.g.
``FAILOVER to bus done``), the flow run and a link to it in the UI, so the
person on call can open the run from a phone.

A notification that cannot be sent is logged loudly but never stops a
failover: the pair's safety comes first.

Blocks are loaded and notify with ``_sync=True``: in the async health flow,
and in its failure hooks, Prefect would otherwise hand back coroutines.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from prefect import get_run_logger, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_logger
from prefect.runtime import flow_run as this_run
from prefect.utilities.asyncutils import run_coro_as_sync

from blocks.pair import NotifyTargets


def run_link(ui_url: str | None, flow_run_id: str) -> str:
    """The run's page in the Prefect UI, or its id when no UI address is configured."""
    base = (ui_url or "").rstrip("/")
    return f"{base}/runs/flow-run/{flow_run_id}" if base else f"flow run {flow_run_id} (no ui_url configured)"


def compose(subject: str, body: str, *, pair: str, flow: str, run_name: str, run_id: str,
            ui_url: str | None) -> tuple[str, str]:
    """Subject and text of one message."""
    text = (f"{subject}\n\n{body}\n\npair: {pair}\nflow: {flow} (run {run_name})\n"
            f"run: {run_link(ui_url, run_id)}\n")
    return f"[antelope-ha {pair}] {subject}", text


def send(targets: NotifyTargets, subject: str, text: str, log: logging.Logger | logging.LoggerAdapter) -> list[str]:
    """Send to every target; return the ones that failed."""
    failed = []
    if targets.email_server and targets.email_to:
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
    for name in targets.webhooks:
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
    return send(targets, *compose_for_this_run(targets, subject, body), log)


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
    # The async health flow runs its hooks on its event loop, where Apprise's
    # synchronous send cannot run: send from a thread of its own.
    sender = threading.Thread(target=send, args=(targets, full_subject, text, log), name="notify-run-ended")
    sender.start()
    sender.join()
