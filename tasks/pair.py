"""Loading the pair's configuration from its block."""
from __future__ import annotations

from prefect.exceptions import ObjectNotFound

from antelope_ha.config import PairConfig
from blocks.pair import AntelopePair, NotifyTargets


def load_pair(pair_name: str) -> tuple[PairConfig, NotifyTargets | None]:
    """The pair's configuration and notification targets, or a clear error."""
    try:
        # _sync: Prefect would hand the async health flow a coroutine instead
        block = AntelopePair.load(pair_name, _sync=True)
    except ValueError as exc:
        if not isinstance(exc.__cause__, ObjectNotFound):
            raise
        raise ValueError(
            f"no Antelope Pair block named {pair_name!r}: create it with `antelope-ha setup` "
            f"or in the UI (Blocks > Antelope Pair) ({exc})"
        ) from None
    return block.config(), block.notify


def save_pair(pair_name: str, pair: PairConfig) -> None:
    """Save ``pair`` as the Antelope Pair block ``pair_name``; its record is left as it is."""
    AntelopePair.of(pair).save(pair_name, overwrite=True)


def register_pair(pair_name: str, pair: PairConfig) -> None:
    """Save the pair's block and start its record afresh (MS authoritative,
    epoch 1): what a new (simulated) pair needs."""
    from antelope_ha.state import HAState
    from tasks.state import save_state

    save_pair(pair_name, pair)
    save_state(pair_name, HAState.initial(pair.main.name))
