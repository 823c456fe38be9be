"""Blocks for a site, the pair with its policy and notification targets, and
the pair's state record.

The fields and their validation come from ``antelope_ha.config``; a block adds
only what Prefect needs to store it and show it in the UI.
"""
from __future__ import annotations

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.blocks.notifications import AppriseNotificationBlock
from prefect_email import EmailServerCredentials
from pydantic import Field, model_validator

from antelope_ha.config import PairConfig, SiteConfig
from antelope_ha.state import HAState


class AntelopeSite(Block, SiteConfig):
    """One data centre's Antelope host: how to reach it and where things are."""

    _block_type_name = "Antelope Site"
    _block_type_slug = "antelope-site"
    _description = "An Antelope real-time system host (MS or BUS) and how to reach it."

    @model_validator(mode="before")
    @classmethod
    def _without_prefect_keys(cls, data: object) -> object:
        """Prefect adds ``block_type_slug`` when it nests a block document; any
        other unknown field is still refused (extra="forbid", from SiteConfig)."""
        if isinstance(data, dict) and "block_type_slug" in data:
            return {k: v for k, v in data.items() if k != "block_type_slug"}
        return data


class AppriseUrl(AppriseNotificationBlock):
    """Any Apprise URL: an SMS gateway, a chat webhook, ``json://`` to an HTTP
    endpoint. Prefect's AppriseNotificationBlock is an abstract base that
    cannot be saved; this is its concrete, general form."""

    _block_type_name = "Apprise URL"
    _block_type_slug = "apprise-url"
    _description = "Send notifications to any Apprise URL (json://, mailto://, an SMS gateway, ...)."


class EmailNotification(NotificationBlock):
    """Mail through the operators' SMTP server (prefect-email), as a
    notification block: what a Prefect automation sends, from the server
    itself, when no worker can (the watcher-silent alert).

    The server finds this class through the project's ``prefect.collections``
    entry point: install the project where ``prefect server`` runs."""

    _block_type_name = "Antelope HA Email"
    _block_type_slug = "antelope-ha-email"
    _description = "Mail to the operators through an SMTP server, for automations."

    credentials: EmailServerCredentials = Field(..., description="the SMTP server and its login")
    email_from: str = Field(..., description="sender address")
    email_to: list[str] = Field(..., min_length=1, description="operators' addresses")

    async def notify(self, body: str, subject: str | None = None) -> None:
        from prefect_email import email_send_message

        await email_send_message.fn(subject=subject or "", msg="", msg_plain=body,
                                    email_server_credentials=self.credentials,
                                    email_from=self.email_from, email_to=self.email_to)


class NotifyTargets(Block):
    """Who hears about decisions, failures and approvals.

    Each entry is the document name of a saved notification block, e.g.
    ``email-server-credentials/default-smtp`` (prefect-email) or
    ``apprise-url/default--sms-gateway`` (an Apprise URL), as setup names them
    for the pair ``default`` (antelope_ha/names.py).
    """

    _block_type_name = "Antelope HA Notify Targets"
    _block_type_slug = "antelope-ha-notify-targets"

    email_server: str | None = Field(None, description="name of a saved EmailServerCredentials block")
    email_from: str = Field("antelope-ha@localhost", description="sender address")
    email_to: list[str] = Field(default_factory=list, description="operators' addresses")
    webhooks: list[str] = Field(
        default_factory=list, description="saved notification blocks (slug/name), e.g. an SMS gateway"
    )
    ui_url: str | None = Field(None, description="Prefect UI base URL, for links to runs")
    repeat_window_s: float = Field(
        900.0, ge=0, description="the same subject to the same channel at most once in this many seconds; "
                                 "what was held back follows as one digest when the window ends (0: no limit)")


class AntelopePair(Block, PairConfig):
    """MS, BUS, the witness, the failover policy and who to notify."""

    _block_type_name = "Antelope Pair"
    _block_type_slug = "antelope-pair"
    _description = "The redundant pair of Antelope data centres and its failover policy."

    main: AntelopeSite = Field(..., description="the Main System (MS)")
    backup: AntelopeSite = Field(..., description="the Backup System (BUS)")
    notify: NotifyTargets | None = Field(None, description="notification targets")

    @classmethod
    def of(cls, pair: PairConfig, notify: NotifyTargets | None = None) -> AntelopePair:
        """The block that holds ``pair`` (the inverse of ``config``)."""
        return cls(main=pair.main.model_dump(), backup=pair.backup.model_dump(), witness=pair.witness,
                   policy=pair.policy, operators=pair.operators, notify=notify)

    def config(self) -> PairConfig:
        """The plain configuration, with secrets readable, for the Antelope layer."""
        data = {name: getattr(self, name) for name in PairConfig.model_fields}
        data["main"], data["backup"] = (
            SiteConfig.model_validate({f: getattr(s, f) for f in SiteConfig.model_fields})
            for s in (self.main, self.backup)
        )
        return PairConfig.model_validate(data)


class PairState(Block):
    """Who is authoritative and the health counters: written by the flows."""

    _block_type_name = "Antelope Pair State"
    _block_type_slug = "antelope-pair-state"

    state: HAState
