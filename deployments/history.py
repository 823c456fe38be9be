"""``antelope-ha history``: the pair's timeline from its events on the Prefect
server (tasks/history.py), for a person or as JSON."""
from __future__ import annotations

import datetime as dt
import json

from pydantic import TypeAdapter
from rich.console import Console

from antelope_ha.timeline import Entry, entry, lines, parse_since

ENTRIES = TypeAdapter(list[Entry])


def run_history(out: Console, pair_name: str, since: str, as_json: bool) -> int:
    """Print the timeline since ``since``; 2 on a ``since`` that cannot be read."""
    from tasks.history import read_history

    now = dt.datetime.now(dt.timezone.utc)
    try:
        start = parse_since(since, now)
    except ValueError as exc:
        out.print(str(exc), style="red", markup=False)
        return 2
    entries = [entry(e) for e in read_history(pair_name, start)]
    if as_json:
        print(json.dumps(ENTRIES.dump_python(entries, mode="json"), indent=1))
        return 0
    out.print(f"pair {pair_name}: {len(entries)} events since {start:%Y-%m-%d %H:%M:%S} UTC "
              "(the server keeps events as long as its retention period)", markup=False)
    for line in lines(entries):
        out.print(line, markup=False, highlight=False)
    return 0
