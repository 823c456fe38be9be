"""The operators' one-time code secrets, each kept in a Prefect Secret block."""
from __future__ import annotations

from prefect.blocks.system import Secret


def save_secret(block_name: str, secret: str) -> None:
    Secret(value=secret).save(block_name, overwrite=True)


def secret_exists(block_name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_block_document_by_name(block_name, Secret.get_block_type_slug())
        except ObjectNotFound:
            return False
    return True
