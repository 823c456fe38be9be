"""Notifications on the simulated pair, as operators receive them: the blocks
are saved by ``deployments.setup`` from a configuration (prefect-email to a
real SMTP server that wants STARTTLS and a login, and an Apprise ``json://``
URL to a real HTTP receiver), and the flows run on the real test server."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from antelope_ha.config import PairPolicy
from antelope_ha.state import Pause
from deployments.setup import SetupConfig, build_blocks, save_blocks
from flows.calling import call_flow
from flows.failover import failover
from flows.health import health
from flows.replicate import replicate_lastid
from tests.servers import HttpReceiver, SmtpReceiver, wait_for
from rehearsal.drill import answering
from tests.simpair import FAST, Sim, approve, sim_pair

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

APPRISE_PATH = "/apprise/oncall"


@dataclass
class Inbox:
    smtp: SmtpReceiver
    http: HttpReceiver

    def emails(self, subject: str) -> list[str]:
        """Subject and text of each email with ``subject`` (a long Subject: header is folded)."""
        return [text for m, text in zip(self.smtp.messages, self.smtp.texts()) if subject in " ".join(m["Subject"].split())]

    def apprise(self, subject: str) -> list[dict]:
        return [r["json"] for r in self.http.requests
                if r["path"] == APPRISE_PATH and subject in r["json"]["title"]]

    def both(self, subject: str, count: int = 1) -> tuple[str, str]:
        """The one email and the one Apprise post with ``subject``: their texts."""
        wait_for(f"{count} messages {subject!r} by email and Apprise",
                 lambda: len(self.emails(subject)) >= count and len(self.apprise(subject)) >= count, 10, 0.1)
        emails, posts = self.emails(subject), self.apprise(subject)
        assert len(emails) == count and len(posts) == count, (emails, posts)
        return emails[-1], posts[-1]["message"]


@pytest.fixture
def inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    smtp, http = SmtpReceiver(tmp_path / "smtp"), HttpReceiver()
    smtp.start()
    http.start()
    monkeypatch.setenv("NOTIFY_TEST_SMTP_PASSWORD", smtp.password)
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp.ca_path))  # trust the SMTP server's test CA, as hosts trust a relay's
    try:
        yield Inbox(smtp, http)
    finally:
        smtp.stop()
        http.stop()


def save_with_targets(sim: Sim, inbox: Inbox, policy: PairPolicy = FAST, repeat_window_s: float = 900) -> None:
    """The pair's block with its notification blocks, saved as ``antelope-ha setup`` saves them."""
    config = SetupConfig.model_validate({
        "pair": sim.name,
        "main": sim.cfg.main.model_dump(), "backup": sim.cfg.backup.model_dump(),
        "witness": sim.cfg.witness.model_dump(), "policy": policy.model_dump(),
        "notify": {
            "ui_url": "http://prefect.example.org:4200",
            "email": {"smtp_server": "127.0.0.1", "smtp_port": inbox.smtp.port, "smtp_type": "STARTTLS",
                      "username": inbox.smtp.username, "password_env": "NOTIFY_TEST_SMTP_PASSWORD",
                      "from": "antelope-ha@example.org", "to": ["oncall@example.org"]},
            "webhooks": [{"name": f"{sim.name}-apprise", "kind": "apprise",
                          "url": inbox.http.url.replace("http://", "json://") + APPRISE_PATH}],
            "repeat_window_s": repeat_window_s,
        },
        "operators": [{"name": o.name, "contact": o.contact, "totp_secret_block": o.secret_block}
                      for o in sim.cfg.operators],
    })
    save_blocks(config, build_blocks(config))


def test_decisions_approvals_and_failed_runs_reach_the_operators(tmp_path: Path, inbox: Inbox):
    with sim_pair(tmp_path, "notify") as sim:
        save_with_targets(sim, inbox)

        # healthy: the reason tells what the worker saw on MS; nobody is bothered
        decision = call_flow(health, pair_name=sim.name)
        assert decision.startswith("stay: ms ID server answers")
        assert "ms reachable, ORB flowing (latency" in decision and "writers orb2dbt, orb2wf running" in decision
        assert not inbox.smtp.messages and not inbox.http.requests

        # a writer down while the ID server answers: a warning, sent once, no failover
        sim.pair.crash("ms", "orb2wf", restart=False)
        decisions = [call_flow(health, pair_name=sim.name) for _ in range(2)]
        assert all(d.startswith("warn") and "writer orb2wf NOT running" in d for d in decisions), decisions
        mail, post = inbox.both("WARNING on ms")
        assert "writer orb2wf NOT running" in mail and "writer orb2wf NOT running" in post
        sim.pair.repair("ms", "orb2wf")
        sim.pair.wait_for(lambda: bool(sim.pair.task_pids("ms", "orb2wf")), 20, "orb2wf runs again")

        # BUS isolated: it cannot see MS nor the witness: exactly one "did NOT fail over", with the reason
        sim.pair.isolate("bus")
        sim.pair.heal_link("orchestrator", "bus")  # the worker still reaches BUS; BUS reaches no one
        decisions = [call_flow(health, pair_name=sim.name, failover_inline=True) for _ in range(3)]
        sim.pair.rejoin("bus")
        assert all(d.startswith("stay") for d in decisions) and sim.state().authority.site == "ms"
        mail, post = inbox.both("did NOT fail over to bus")
        for text in (mail, post):
            assert "bus cannot reach the witness" in text and "bus may be the isolated one" in text
            assert "ms reachable" in text  # what the worker saw on MS
            assert "pair: notify" in text and "http://prefect.example.org:4200/runs/flow-run/" in text
        assert call_flow(health, pair_name=sim.name).startswith("stay")

        # approvals: no replica, so failover asks; rejected by name, then left unanswered
        with answering("failover", lambda n: {**approve(site="bus", decision="reject", operator="grace"),
                                              "reason": "MS is fine, BUS was cut off"}) as answers:
            result = failover(pair_name=sim.name, reason="test")
        assert len(answers) == 1 and "nothing was changed" in result
        inbox.both("APPROVAL NEEDED on bus: failover with a stale lastid replica")
        mail, post = inbox.both("REJECTED on bus: failover with a stale lastid replica")
        assert "rejected by grace: MS is fine, BUS was cut off" in mail
        assert "rejected by grace: MS is fine, BUS was cut off" in post
        inbox.both("FAILOVER to bus NOT done")

        save_with_targets(sim, inbox, FAST.model_copy(update={"approval_timeout_s": 2, "approval_poll_s": 1}))
        with answering("failover", lambda n: None):
            failover(pair_name=sim.name, reason="test")
        mail, post = inbox.both("APPROVAL TIMED OUT on bus: failover with a stale lastid replica")
        assert "no answer within 2 s" in mail and "no answer within 2 s" in post

        # runs that fail tell the operators, whatever step they stopped at
        sim.pair.crash("ms", "dbids", restart=False)  # a running dbids rewrites its lastid as it serves
        lastid = sim.pair.paths("ms").dir / "dbids" / "dbids.lastid"
        kept = lastid.read_bytes()
        lastid.write_text("not a lastid table\n")
        with pytest.raises(ValueError, match="lastid"):
            replicate_lastid(pair_name=sim.name)
        lastid.write_bytes(kept)
        sim.pair.repair("ms", "dbids")
        mail, post = inbox.both("replicate-lastid FAILED")
        assert "The replicate-lastid run stopped" in mail and "The replicate-lastid run stopped" in post

        corrupt_state_record(sim)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="failed validation"):
            call_flow(health, pair_name=sim.name)
        mail, post = inbox.both("health FAILED")
        assert "The health run stopped" in mail and "The health run stopped" in post
        assert time.monotonic() - started < 30


def test_a_replicate_failing_for_ten_minutes_sends_one_message_and_one_digest(
        tmp_path: Path, inbox: Inbox, monkeypatch: pytest.MonkeyPatch):
    """MS down, nobody told the pair (no pause, no failover): the replicate
    fails every two and a half minutes for ten minutes of the notifier's clock
    (moved by the test, nothing sleeps). One message per channel, then, when the
    10-minute window has ended, one digest of the three held back (sent by the
    watcher at its heartbeat). Paused for maintenance, or while a failover is under way,
    the same failure pages nobody."""
    import tasks.notify

    now = [time.time()]
    monkeypatch.setattr(tasks.notify, "clock", lambda: now[0])
    with sim_pair(tmp_path, "storm") as sim:
        save_with_targets(sim, inbox, repeat_window_s=600)
        sim.pair.power_off("ms")
        for _ in range(4):
            with pytest.raises(Exception):
                replicate_lastid(pair_name=sim.name)
            now[0] += 150
        tasks.notify.send_due_digests(sim.name)
        mail, post = inbox.both("replicate-lastid FAILED")  # exactly one of each
        digest, digest_post = inbox.both("DIGEST: 1 subject repeated and held back")
        for text in (digest, digest_post):
            assert "replicate-lastid FAILED: 3 more held back" in text, text
        assert len(inbox.smtp.messages) == 2 and len(inbox.http.requests) == 2

        paused = sim.state().model_copy(update={"pause": Pause(by="ana", reason="MS maintenance", since=now[0])})
        sim.set_state(paused)
        now[0] += 3600  # a new window: only the pause keeps it quiet
        with pytest.raises(Exception):
            replicate_lastid(pair_name=sim.name)
        sim.set_state(paused.model_copy(update={"pause": None}))
        # a failover under way (it waits for a person: BUS has no replica) keeps it quiet too
        save_with_targets(sim, inbox, FAST.model_copy(update={"approval_timeout_s": 20}), repeat_window_s=600)
        with answering("failover", lambda n: None):
            failing_over = threading.Thread(target=failover, kwargs={"pair_name": sim.name, "reason": "test"})
            failing_over.start()
            wait_for("the failover waiting for approval", lambda: inbox.emails("APPROVAL NEEDED on bus"), 60)
            with pytest.raises(Exception):
                replicate_lastid(pair_name=sim.name)
            failing_over.join(120)
        tasks.notify.send_due_digests(sim.name)
        # the hooks send before the run returns: anything sent has arrived
        failed = [t for t in inbox.smtp.texts() if "replicate-lastid FAILED" in t or "DIGEST" in t]
        assert len(failed) == 2, failed
        assert len([r for r in inbox.http.requests if "replicate-lastid FAILED" in r["json"]["title"]]) == 1


def corrupt_state_record(sim: Sim) -> None:
    """The pair's state record, stored with a field missing: it can no longer be read."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentUpdate

    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name(f"{sim.name}-state", "antelope-pair-state")
        client.update_block_document(doc.id, BlockDocumentUpdate(data={"state": {"authority": {"site": "ms"}}}))
