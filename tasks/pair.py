"""Loading the pair's configuration from its block."""
from __future__ import annotations

from prefect.exceptions import ObjectNotFound

from antelope_ha.config import PairConfig
from blocks.pair import AntelopePair, NotifyTargets


def load_pair(pair_name: str) -> tuple[PairConfig, NotifyTargets | None]:
    """The pair's configuration and notification targets, or a clear error."""
    try:
        block = AntelopePair.load(pair_name)
    except ValueError as exc:
        if not isinstance(exc.__cause__, ObjectNotFound):
            raise
        raise ValueError(
            f"no Antelope Pair block named {pair_name!r}: create it with `antelope-ha setup` "
            f"or in the UI (Blocks > Antelope Pair) ({exc})"
        ) from None
    return block.config(), block.notify
