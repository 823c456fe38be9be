"""Every name a pair's objects carry on the Prefect server, built in one place.

One server can hold several pairs: each object one pair owns has the pair's
name in it, so that setting up a second pair never overwrites or shares the
first one's. Within a kind, a name is the pair's name with a fixed prefix or
suffix, so two pairs never get the same one; a name the configuration chooses
(a webhook block) follows the pair's name after ``--``, which a pair's name
never holds.

Before pairs were namespaced, each flow had one deployment named after the
flow (``watch/watch``) and all pairs shared the pools ``antelope-ha-bus`` and
``antelope-ha-ms`` (their workers' units ``antelope-ha-worker@bus`` and
``@ms``): the ``LEGACY_`` names, which setup looks for and reports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# A pair's name: lower-case words joined by single dashes (no "--": see above).
PAIR_NAME = r"^[a-z0-9]+(-[a-z0-9]+)*$"
SEPARATOR = "--"
# The flows that have a deployment per pair (deployments/prefect.yaml).
FLOWS = ("watch", "health", "replicate-lastid", "failover", "fallback", "recovery")
WATCH_FLOW = "watch"
SITES: tuple[Literal["bus", "ms"], ...] = ("bus", "ms")  # where a pair's workers run
TEMPLATE_PAIR = "default"  # the pair deployments/prefect.yaml is written for, as it is
LEGACY_DEPLOYMENTS = tuple(f"{flow}/{flow}" for flow in FLOWS)
LEGACY_POOLS = tuple(f"antelope-ha-{site}" for site in SITES)
LEGACY_WORKER_UNITS = tuple(f"antelope-ha-worker@{site}" for site in SITES)


@dataclass(frozen=True)
class PairNames:
    """The names of one pair's deployments, pools, blocks, limits, variable,
    automations and event resource."""

    pair: str

    @property
    def deployment_name(self) -> str:
        """Each flow's deployment for this pair is named after the pair."""
        return self.pair

    def deployment(self, flow: str) -> str:
        """``flow/deployment``, as Prefect finds a deployment by name."""
        return f"{flow}/{self.deployment_name}"

    def pool(self, site: Literal["bus", "ms"]) -> str:
        """The work pool of this pair's worker at ``site``."""
        return f"antelope-ha-{self.pair}-{site}"

    def worker_unit(self, site: Literal["bus", "ms"]) -> str:
        """The systemd unit of that worker (deployments/systemd/antelope-ha-worker@.service)."""
        return f"antelope-ha-worker@{self.pair}-{site}"

    @property
    def pair_block(self) -> str:
        """The AntelopePair block: the pair's configuration."""
        return self.pair

    @property
    def state_block(self) -> str:
        """The pair's state record (who is authoritative, the watcher's lease)."""
        return f"{self.pair}-state"

    @property
    def smtp_block(self) -> str:
        return f"{self.pair}-smtp"

    @property
    def email_alert_block(self) -> str:
        return f"{self.pair}-email-alert"

    def webhook_block(self, webhook: str) -> str:
        """The notification block of the webhook the configuration names ``webhook``."""
        return f"{self.pair}{SEPARATOR}{webhook}"

    @property
    def procedure_limit(self) -> str:
        """The global concurrency limit held by a failover or fallback of this pair."""
        return f"antelope-ha-{self.pair}-procedure"

    @property
    def holder_variable(self) -> str:
        """The variable naming the run that holds ``procedure_limit``."""
        return f"{self.procedure_limit}-holder"

    @property
    def notified_variable(self) -> str:
        """The variable holding what was sent to whom and when, and what was held back (antelope_ha/alerts.py)."""
        return f"antelope-ha-{self.pair}-notified"

    @property
    def state_limit(self) -> str:
        """The global concurrency limit held while the state record is read, changed and written."""
        return f"antelope-ha-{self.pair}-state"

    @property
    def resource_id(self) -> str:
        """The resource of the pair's events (decisions, the watcher's heartbeat)."""
        return f"antelope-ha.pair.{self.pair}"

    def resource(self) -> dict[str, str]:
        return {"prefect.resource.id": self.resource_id, "antelope-ha.pair": self.pair}

    @property
    def silent_automation(self) -> str:
        """The dead-man's switch: no watcher heartbeat in time."""
        return f"antelope-ha {self.pair}: watcher silent"

    @property
    def crashed_automation(self) -> str:
        return f"antelope-ha {self.pair}: replace a crashed watcher"
