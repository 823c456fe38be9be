"""The SSH private key given as text (``SSHSettings.private_key``, a secret)
never shows: not in Prefect's logs, artifacts, flow or task runs, variables,
the state record or the stored pair block, not in the files of the pair
(site trees, sshd logs), not in the errors of a failing run. Nor do the
operators' TOTP secrets, kept in Secret blocks the pair names.

The end-to-end test (tests/e2e/test_production_path.py) looks the same way
(``server_texts``) for the server's API credential and the operators'
secrets after approvals answered and refused on a real server.

The key is the simulated pair's own client key, read from its file, so the
runs below really log in with it.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from blocks.pair import AntelopePair, PairState
from flows.calling import call_flow
from flows.failover import failover
from flows.health import health
from flows.replicate import replicate_lastid
from tasks.sites import close_all
from tasks.state import state_block_name
from tests.simpair import OPERATORS, Sim, sim_pair

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

PAGE = 200


def secret_fragments(pem: str) -> list[str]:
    """Pieces of the key that must never show. The first two lines of an
    OpenSSH key's body hold its header and public key, which may show (the
    public key is in authorized_keys); the private part follows."""
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    private = body[2:]
    assert private and all(len(line) >= 20 for line in private[:-1]), "unexpected key layout"
    return ["".join(private), *private]


def save_with_key_text(sim: Sim, pem: str) -> None:
    """The pair's block with the key as secret text instead of a key file."""
    sites = []
    for cfg in (sim.cfg.main, sim.cfg.backup):
        ssh = cfg.ssh.model_copy(update={"key_filename": None, "private_key": SecretStr(pem)})
        sites.append(cfg.model_copy(update={"ssh": ssh}).model_dump())
    AntelopePair(main=sites[0], backup=sites[1], witness=sim.cfg.witness, policy=sim.cfg.policy,
                 operators=sim.cfg.operators).save(sim.name, overwrite=True)


def paged(read: Callable[..., list], **kwargs: object) -> Iterator:
    offset = 0
    while True:
        page = read(limit=PAGE, offset=offset, **kwargs)
        yield from page
        if len(page) < PAGE:
            return
        offset += PAGE


def server_texts() -> Iterable[tuple[str, str]]:
    """Everything the Prefect server holds about runs, as (what, JSON text)."""
    with get_client(sync_client=True) as client:
        for run in paged(client.read_flow_runs):
            yield f"flow run {run.name}", run.model_dump_json()
            for name in (run.state.state_details.run_input_keyset or {}).values() if run.state else ():
                yield f"flow run input {name}", str(client.read_flow_run_input(run.id, name))
        for task_run in paged(client.read_task_runs):
            yield f"task run {task_run.name}", task_run.model_dump_json()
        for log in paged(client.read_logs):
            yield f"log of {log.flow_run_id}", log.model_dump_json()
        for artifact in paged(client.read_artifacts):
            yield f"artifact {artifact.key}", artifact.model_dump_json()
        for variable in client.read_variables():
            yield f"variable {variable.name}", variable.model_dump_json()
        for document in client.read_block_documents(include_secrets=False):
            yield f"block {document.name}", document.model_dump_json()


def file_texts(root: Path) -> Iterable[tuple[str, str]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in ("client_ed25519",):  # the key file the test read
            yield str(path), path.read_bytes().decode("latin-1")


def test_private_key_text_never_shows(tmp_path):
    failures: list[str] = []
    with sim_pair(tmp_path, "secret") as sim:
        key_file = Path(sim.cfg.backup.ssh.key_filename)
        pem = key_file.read_text()
        fragments = secret_fragments(pem)
        save_with_key_text(sim, pem)
        close_all()  # no connection made with the key file is reused

        assert replicate_lastid(pair_name=sim.name).startswith("replica of ms lastid")
        assert call_flow(health, pair_name=sim.name).startswith("stay")
        plan = failover(pair_name=sim.name, reason="dry run with a secret key", dry_run=True)
        assert "Dry run of failover" in plan

        # a failing run: BUS no longer accepts the key
        (key_file.parent.parent / "bus" / "authorized_keys").write_text("")
        close_all()
        with pytest.raises(Exception) as info:
            replicate_lastid(pair_name=sim.name)
        failures = [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]
        assert "refused key the given key" in failures[0]

        state_block = PairState.load(state_block_name(sim.name)).model_dump_json()
        with get_client(sync_client=True) as client:
            stored = client.read_block_document_by_name(sim.name, "antelope-pair", include_secrets=False)
        stored_json = stored.model_dump_json()
        texts = [*server_texts(), *file_texts(sim.pair.root), ("state block", state_block),
                 ("stored pair block", stored_json), *(("error", f) for f in failures)]

    assert "**********" in stored_json or "********" in stored_json  # shown obfuscated, not missing
    assert sim.cfg.operators and all(len(secret) >= 32 for secret in OPERATORS.secrets.values())
    fragments += list(OPERATORS.secrets.values())
    leaks = [what for what, text in texts if any(fragment in text for fragment in fragments)]
    assert len(texts) > 100 and not leaks, leaks
