"""A simulated pair the flows can work on: running, and saved as a pair's block."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from antelope_ha.approvers import Approver
from antelope_ha.config import PairConfig, PairPolicy
from simsite.pair import SimPair
from tasks.pair import register_pair


@contextmanager
def registered_sim_pair(root: Path, pair_name: str, policy: PairPolicy, operators: list[Approver] | None = None,
                        **layout: Any) -> Iterator[tuple[SimPair, PairConfig]]:
    """A new simulated pair under ``root`` (``layout`` as for ``SimPair.create``),
    running behind its sshds, saved as the Antelope Pair block ``pair_name`` with
    ``policy`` and ``operators`` and a new record (MS authoritative, epoch 1);
    stopped when the block ends."""
    with SimPair.running(root, **layout) as pair:
        cfg = pair.pair_config(policy)
        if operators is not None:
            cfg = cfg.model_copy(update={"operators": operators})
        register_pair(pair_name, cfg)
        yield pair, cfg
