"""The outages on the pair's state record, and the completeness rule over them.

Apart from antelope_ha.completeness, which runs on the sites in the site tool
and so stays standard-library only: the state record is a pydantic model.
"""
from __future__ import annotations

import os

from antelope_ha.completeness import Outage, Verdict, assess, coverage_bounds, take_inventory
from antelope_ha.state import HAState


def outages(state: HAState, main: str, backup: str) -> list[Outage]:
    """Every epoch of the backup's authority that the main site took back, oldest first.

    The ids issued are known from lastid at each change: the backup's dbids
    started above the lastid recorded when it took authority, and stopped at
    the lastid the main site took back (its own start)."""
    epochs = [*state.history, state.authority]
    found = []
    for held, after in zip(epochs, epochs[1:]):
        if held.site != backup or after.site != main:
            continue
        ids = None
        if held.lastid is not None and after.lastid is not None:
            ids = {k: (held.lastid.get(k, 0) + 1, last) for k, last in after.lastid.items()
                   if last > held.lastid.get(k, 0)}
        found.append(Outage(held.epoch, held.since, after.since, ids))
    return found


def to_recover(state: HAState, main: str, backup: str) -> list[Outage]:
    """The outages not yet verified as recovered, or else the last one (a rerun checks it again)."""
    done = outages(state, main, backup)
    pending = [o for o in done if o.epoch > state.recovered_through]
    return pending or done[-1:]


def check_here(ms_db: str | os.PathLike[str], bus_db: str | os.PathLike[str], state: HAState,
               main: str = "ms", backup: str = "bus") -> list[Verdict]:
    """The rule over every outage on the record, both databases read where
    this runs (the drill and the tests, which reach both sites' files)."""
    return [assess(o, coverage_bounds(ms_db, o.since, o.until),
                   lambda a, b, r: take_inventory(bus_db, a, b, r), lambda a, b, r: take_inventory(ms_db, a, b, r))
            for o in outages(state, main, backup)]
