"""The operators' one-time code secrets, each kept in a Prefect Secret block."""
from __future__ import annotations

from prefect.blocks.system import Secret

from antelope_ha.approvers import Approver, new_secret


def secret_block_name(pair_name: str, operator: str) -> str:
    return f"{pair_name}-totp-{operator}"


def save_secret(block_name: str, secret: str) -> None:
    Secret(value=secret).save(block_name, overwrite=True)


def enroll(pair_name: str, name: str, contact: str) -> tuple[Approver, str]:
    """A new TOTP secret for ``name``, saved in their Secret block: the operator
    and the secret (to show once, as a provisioning URI, and forget)."""
    operator = Approver(name=name, contact=contact, secret_block=secret_block_name(pair_name, name))
    secret = new_secret()
    save_secret(operator.secret_block, secret)
    return operator, secret
