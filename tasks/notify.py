"""Tell the operators: email through prefect-email, anything else through
saved Prefect notification blocks (Apprise: SMS gateways, chat, paging).

A notification that cannot be sent is logged loudly but never stops a
failover: the pair's safety comes first.
"""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.utilities.asyncutils import run_coro_as_sync

from blocks.pair import NotifyTargets


def run_link(ui_url: str | None) -> str:
    ctx = get_run_context()
    run_id = getattr(getattr(ctx, "task_run", None), "flow_run_id", None) or getattr(
        getattr(ctx, "flow_run", None), "id", None
    )
    base = (ui_url or "").rstrip("/")
    return f"{base}/runs/flow-run/{run_id}" if base else f"flow run {run_id}"


@task(name="Notify operators", cache_policy=NO_CACHE, timeout_seconds=60)
def notify(targets: NotifyTargets | None, subject: str, body: str) -> list[str]:
    """Send to every target; return the ones that failed."""
    log = get_run_logger()
    log.info("NOTIFY %s: %s", subject, body)
    if targets is None:
        return []
    text = f"{body}\n\n{run_link(targets.ui_url)}"
    failed = []
    if targets.email_server and targets.email_to:
        from prefect_email import EmailServerCredentials, email_send_message

        try:
            creds = EmailServerCredentials.load(targets.email_server)
            run_coro_as_sync(email_send_message.fn(
                email_server_credentials=creds, subject=subject, msg=text,
                email_from=targets.email_from, email_to=targets.email_to,
            ))
        except Exception as exc:  # any failure to notify is reported, not raised
            log.error("email to %s failed: %s", ", ".join(targets.email_to), exc)
            failed.append(f"email:{targets.email_server}")
    for name in targets.webhooks:
        try:
            Block.load(name).notify(body=text, subject=subject)
        except Exception as exc:
            log.error("notification block %s failed: %s", name, exc)
            failed.append(name)
    return failed
