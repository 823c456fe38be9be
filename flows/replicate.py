"""Replicate lastid: copy MS's dbids.lastid to BUS and record when, on BUS
next to the copy (``ha/replica``), so failover knows how fresh its replica is.

The watcher (flows/watch.py) does this every ``replicate_s`` with the same
steps (``copy_lastid``); this flow is the same copy as a run of its own,
started by hand (or to show its plan).

Values on BUS are only ever raised, never lowered: an id BUS once knew to be
taken stays taken.
"""
from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from antelope_ha.site import Site
from antelope_ha.state import Replica
from tasks import ids
from tasks.notify import notify_run_ended_badly
from tasks.pair import load_pair
from tasks.report import publish_plan
from tasks.sites import plans
from tasks.state import read_state


@flow(name="replicate-lastid", on_failure=[notify_run_ended_badly], on_crashed=[notify_run_ended_badly],
      description="Copy MS dbids.lastid to BUS and record the replica's time.")
def replicate_lastid(pair_name: str = "default", dry_run: bool = False) -> str:
    """Raise BUS's lastid replica to MS's values and record when they were read.

    Args:
        pair_name: the name of the pair's AntelopePair block (as saved by setup)
        dry_run: print the file BUS would get, change nothing
    """
    pair, _ = load_pair(pair_name)
    ms, bus = pair.main, pair.backup
    state = read_state(pair_name)
    if state.authority.site != ms.name:
        msg = f"{state.authority.site} is authoritative: nothing to replicate from {ms.name}"
        get_run_logger().info(msg)
        return msg
    taken_at = time.time()
    values = ids.read_lastid(ms)
    outcome = ids.raise_lastid(bus, values, replica_purpose(ms.name), dry_run)
    ids.record_replica(bus, Replica(taken_at=taken_at, values=values), dry_run)
    if dry_run:
        return publish_plan("replicate-lastid", plans(str(flow_run.get_id()))) + f"\n{outcome.detail}"
    return f"replica of {ms.name} lastid taken at {time.strftime('%H:%M:%S', time.gmtime(taken_at))} UTC: {outcome.detail}"


def replica_purpose(main_site: str) -> str:
    return f"replica of {main_site} dbids.lastid"


def copy_lastid(ms: Site, bus: Site) -> Replica:
    """The flow's three steps without their runs (the watcher's minute)."""
    replica = Replica(taken_at=time.time(), values=ms.read_lastid())
    bus.raise_lastid(replica.values, replica_purpose(ms.name))
    bus.write_replica(replica)
    return replica
