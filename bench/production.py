"""The deployed path, measured: what docs/operating.md starts, then MS powered off.

It starts a Prefect server on PostgreSQL with the environment ``setup
--server-env`` writes (retention, analytics off), one process worker per pool
with the documented settings, and runs ``antelope-ha setup`` on a
configuration file for a simulated pair (each site behind its own sshd). Then:

  steady      MS healthy for ``--steady-s``: CPU of the BUS worker and of the
              flow-run processes it started (the watcher), as a share of one
              core; the server database's growth; flow runs and events
              created, each scaled to a day
  outages     per repetition a fresh pair, a fresh watcher that took the
              lease, then MS powered off (every process of the host, sshd
              included). Measured: power-off -> the watcher's failover
              decision (its time on the record) -> the failover run created
              -> Running -> BUS's ID server answers (polled over TCP every
              20 ms). Medians of the repetitions.
  defaults    the same outages with the shipped policy (K=3, every 10 s)
  baseline    in the same run: the same probes, decision and failover steps
              called straight through ``Site`` (no Prefect), MS powered off

    python -m bench production [--json] [--repetitions 3] [--steady-s 180]
                               [--defaults-repetitions 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from uuid import UUID

import yaml

from antelope_ha.config import PairPolicy

PAIR = "bench-production"
FAST = PairPolicy(failures_before_failover=3, probe_interval_s=1.0, probe_timeout_s=1.0, hold_down_s=3600,
                  lastid_margin=1000, lastid_max_age_s=600, approval_timeout_s=300, approval_poll_s=1)
SHIPPED = PairPolicy()
TARGET_FAST_S = 5.0  # MS power-off to ids at K=3 x 1 s: keepalived class
DETECTION_SLACK_S = 0.5
DEFAULTS_SLACK_S = 3.0
FLOW_RUNS_TARGET = 50
CPU_TARGET = 0.03
DB_TARGET_MB = 20.0
GIVE_UP_S = 180.0
SETTLE_S = 30.0
BASELINE = "bare steps (no Prefect), same run"


@dataclass
class Outage:
    """One power-off of MS, seconds from the power-off."""

    policy: str
    detection_s: float  # the watcher's failover decision
    run_created_s: float  # the failover run (a subflow of the watcher's run) created
    run_running_s: float  # ... Running
    ids_s: float  # BUS's ID server answers

    @property
    def intervals(self) -> dict[str, float]:
        return {"decided (K failed probes)": self.detection_s,
                "failover run created": self.run_created_s - self.detection_s,
                "worker picks it up": 0.0,
                "run Running": self.run_running_s - self.run_created_s,
                "BUS dbids hands out ids": self.ids_s - self.run_running_s}


@dataclass
class Steady:
    seconds: float
    cpu_core: float
    db_growth_mb_per_day: float
    db_file_growth_mb_per_day: float
    flow_runs_per_day: float
    scheduled_runs_per_day: float
    events_per_day: float
    events_by_kind: dict[str, int] = field(default_factory=dict)
    rows_by_table: dict[str, int] = field(default_factory=dict)  # rows kept a day (inserted - deleted)


@dataclass
class Result:
    steady: Steady
    fast: list[Outage]
    shipped: list[Outage]
    bare: list[float]  # power-off -> ids, bare steps, K=3 x 1 s
    load: tuple[str, str] = ("", "")

    def figures(self) -> dict[str, float | None]:
        return {"ms_off_to_ids_s": _median([o.ids_s for o in self.fast]),
                "detection_s": _median([o.detection_s for o in self.fast]),
                "flow_runs_per_day": round(self.steady.flow_runs_per_day, 1),
                "db_growth_mb_per_day": round(self.steady.db_growth_mb_per_day, 2),
                "bus_cpu_core": round(self.steady.cpu_core, 4)}

    def to_json(self) -> str:
        return json.dumps({**self.figures(), "shipped_ms_off_to_ids_s": _median([o.ids_s for o in self.shipped]),
                           "bare_ms_off_to_ids_s": _median(self.bare),
                           "intervals_s": _median_intervals(self.fast),
                           "outages": [asdict(o) for o in self.fast + self.shipped],
                           "steady": asdict(self.steady), "load_average": self.load}, indent=2)

    def rows(self) -> list[dict[str, object]]:
        """Rows for bench/__main__'s table: figure, measured, baseline, ratio, target, met."""
        f, n = self.figures(), len(self.fast)
        bare = _median(self.bare)
        ids = f["ms_off_to_ids_s"]
        k, interval = FAST.failures_before_failover, FAST.probe_interval_s
        shipped = _median([o.ids_s for o in self.shipped])
        shipped_target = SHIPPED.failures_before_failover * SHIPPED.probe_interval_s + DEFAULTS_SLACK_S
        rows: list[dict[str, object]] = [
            _row(f"deployed: MS power-off -> BUS hands out ids (K={k} x {interval:g} s, median of {n})", ids, "s",
                 TARGET_FAST_S, baseline=bare),
        ]
        for name, value in _median_intervals(self.fast).items():
            rows.append(_row(f"  {name}", value, "s",
                             k * interval + DETECTION_SLACK_S if name.startswith("decided") else None))
        rows += [
            _row(f"deployed: MS power-off -> ids, shipped policy (K={SHIPPED.failures_before_failover} x "
                 f"{SHIPPED.probe_interval_s:g} s, median of {len(self.shipped)})", shipped, "s", shipped_target),
            _row(f"deployed: flow runs a day (watch runs {self.steady.scheduled_runs_per_day:g} + others)",
                 f["flow_runs_per_day"], "", FLOW_RUNS_TARGET),
            _row(f"deployed: BUS worker + watcher CPU, share of a core (probe every {interval:g} s, "
                 f"{self.steady.seconds:.0f} s)", f["bus_cpu_core"], "", CPU_TARGET),
            _row("deployed: server database growth a day (PostgreSQL)", f["db_growth_mb_per_day"], "MB",
                 DB_TARGET_MB),
            _row("deployed: events a day", round(self.steady.events_per_day), "", None),
        ]
        return rows

    def notes(self) -> list[str]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.steady.events_by_kind.items(), key=lambda kv: -kv[1]))
        return [
            "deployed = Prefect server on PostgreSQL + a process worker per pool + antelope-ha setup, as "
            "docs/operating.md says; bare = the same probes, decision and failover steps through Site",
            f"events in the steady window, by kind: {kinds or 'none'}",
            "rows kept a day by table (inserted - deleted): " + ", ".join(
                f"{t} {n}" for t, n in self.steady.rows_by_table.items()),
            f"the database file itself grew {self.steady.db_file_growth_mb_per_day:.1f} MB a day over the window "
            "(it grows in steps of pages and extents)",
            f"load average at the start {self.load[0]}, at the end {self.load[1]} (2 cores shared)",
        ]


def _row(figure: str, value: float | None, unit: str, target: float | None,
         baseline: float | None = None) -> dict[str, object]:
    shown = "" if value is None else f"{value:g} {unit}".strip()
    return {"figure": figure, "measured": shown,
            "baseline": "" if baseline is None else f"{baseline:.2f} s bare",
            "ratio": f"{value / baseline:.2f}x bare" if value and baseline else "",
            "target": "" if target is None else f"<= {target:g} {unit}".strip(),
            "met": None if target is None or value is None else value <= target}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _median_intervals(outages: list[Outage]) -> dict[str, float]:
    if not outages:
        return {}
    return {name: round(statistics.median(o.intervals[name] for o in outages), 2) for name in outages[0].intervals}


# --- the deployed stack ---------------------------------------------------------------------------
@dataclass
class Stack:
    server: object
    bus_worker: object
    workdir: Path

    def api(self) -> str:
        return self.server.api_url  # type: ignore[attr-defined]


def write_config(path: Path, pair: object, policy: PairPolicy) -> Path:
    cfg = pair.pair_config(policy)  # type: ignore[attr-defined]
    path.write_text(yaml.safe_dump({
        "pair": PAIR, "main": cfg.main.model_dump(mode="json", exclude_none=True),
        "backup": cfg.backup.model_dump(mode="json", exclude_none=True),
        "witness": cfg.witness.model_dump(mode="json"), "policy": policy.model_dump(mode="json"),
    }, sort_keys=False))
    return path


@contextmanager
def deployed(workdir: Path) -> Iterator[tuple[Stack, object]]:
    """Server, workers, a pair and setup, as docs/operating.md has them."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from antelope_ha.names import SITES, PairNames
    from antelope_ha.approvers import new_secret
    from deployments.setup import load_config, server_differences, server_environment, setup
    from simsite.pair import SimPair
    from tests.servers import PrefectServer, Worker

    pair = SimPair.create(workdir / "pair-0")
    with ExitStack() as started:
        started.callback(pair.stop)
        pair.serve_ssh()
        pair.start()
        config = write_config(workdir / "pair.yaml", pair, FAST)
        credential = new_secret()  # behind a credential with CSRF protection, as deployed
        server = PrefectServer(home=workdir / "prefect-home", credential=credential,
                               extra_env={**server_environment(load_config(config)),
                                          "PREFECT_SERVER_API_AUTH_STRING": credential})
        started.callback(server.stop)
        server.start(timeout_s=180)
        for name, value in (("PREFECT_API_URL", server.api_url), ("PREFECT_API_AUTH_STRING", credential)):
            previous = os.environ.get(name)
            os.environ[name] = value  # setup's `prefect deploy` child reads it
            started.callback(lambda name=name, previous=previous: os.environ.pop(name) if previous is None
                             else os.environ.update({name: previous}))
        started.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url,
                                                          PREFECT_API_AUTH_STRING: credential}))
        setup(config)
        differences = server_differences(load_config(config))
        if differences:
            raise RuntimeError("the bench's server does not run as setup asks:\n"
                               + "\n".join(differences))
        workers = [Worker(server, pool, workdir / f"worker-{pool}.log")
                   for pool in (PairNames(PAIR).pool(site) for site in SITES)]
        for w in workers:
            started.callback(w.stop)
            w.start()
        yield Stack(server, workers[0], workdir), pair


def _wait(what: str, condition: Callable[[], object], timeout_s: float = GIVE_UP_S, poll_s: float = 0.1) -> object:
    from tests.servers import wait_for

    return wait_for(what, condition, timeout_s, poll_s)


def watching(run_id: UUID, since: float) -> bool:
    """The watcher ``run_id`` holds the lease and has recorded a decision since taking it."""
    from tasks.state import load_state

    state = load_state(PAIR)
    return bool(state.watcher and state.watcher.run == str(run_id)
                and any(d.at >= state.watcher.since and d.code for d in state.decisions))


def hand_over_to_a_new_watcher(pair: object, policy: PairPolicy) -> UUID:
    """Stop the watcher of the previous pair, save this pair, start a watcher and
    wait until it watches. The old watcher must be gone before the record is
    reset: it would act on the new record with the old pair's addresses."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    from deployments.setup import start_watcher
    from tasks.pair import register_pair
    from tasks.state import take_watcher_lease

    take_watcher_lease(PAIR, "stopped-between-repetitions", time.time())
    with get_client(sync_client=True) as client:
        _wait("the previous watcher stopped", lambda: not client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["watch"])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING])))), 60)
    register_pair(PAIR, pair.pair_config(policy))  # type: ignore[attr-defined]
    run = start_watcher(PAIR)
    since = time.time()
    _wait(f"watch run {run.name} watching", lambda: watching(run.id, since))
    return run.id


def outage(stack: Stack, pair: object, policy: PairPolicy, label: str) -> Outage:
    """MS powered off at a random point of the watcher's cycle; the times of what followed."""
    from prefect.client.orchestration import get_client

    from bench.failover import FirstIdWatcher
    from tasks.state import load_state

    cfg = pair.pair_config(policy)  # type: ignore[attr-defined]
    time.sleep(random.uniform(2, 2 + policy.probe_interval_s))
    first_id = FirstIdWatcher(cfg.backup.idserver_address).start()
    off = time.time()
    pair.power_off("ms")  # type: ignore[attr-defined]
    answered = first_id.result(wait_s=GIVE_UP_S)
    if answered is None:
        raise RuntimeError(f"{label}: BUS's ID server did not answer within {GIVE_UP_S:g} s of MS's power-off")
    state = _wait("BUS authoritative on the record", lambda: (s := load_state(PAIR)).authority.site == "bus"
                  and s.authority.flow_run and s, 30)
    decided = next(d.at for d in reversed(state.decisions) if d.code == "failover")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(state.authority.flow_run))
    return Outage(label, round(decided - off, 3), round(run.created.timestamp() - off, 3),
                  round(run.start_time.timestamp() - off, 3), round(answered - off, 3))


# The bytes the server's database holds in rows and index entries (pgstattuple,
# PostgreSQL's contrib module), after a VACUUM (what autovacuum does anyway):
# growth of what is stored, not of the files, which grow by pages and extents
# ahead of the rows, nor of the row versions updates leave until vacuumed.
LIVE_BYTES_SQL = """
create extension if not exists pgstattuple;
with ours as (  -- Prefect's tables, their indexes and the toast tables and indexes behind them
  select c.oid, c.relkind, c.relam from pg_class c where c.relnamespace = 'public'::regnamespace
  union all
  select t.oid, t.relkind, t.relam from pg_class c join pg_class t on t.oid = c.reltoastrelid
    where c.relnamespace = 'public'::regnamespace
  union all
  select i.indexrelid, 'i', x.relam from pg_class c join pg_index i on i.indrelid = c.reltoastrelid
    join pg_class x on x.oid = i.indexrelid where c.relnamespace = 'public'::regnamespace)
select
  (select coalesce(sum((pgstattuple(oid)).tuple_len), 0) from ours where relkind in ('r', 't'))
+ (select coalesce(sum(((s).leaf_pages * coalesce(nullif((s).avg_leaf_density, 'NaN'), 0) / 100
                        + (s).internal_pages) * 8192), 0)
     from (select pgstatindex(oid) as s from ours
           where relkind = 'i' and relam = (select oid from pg_am where amname = 'btree')) b)
+ (select coalesce(sum(pg_relation_size(oid)), 0) from ours
     where relkind = 'i' and relam <> (select oid from pg_am where amname = 'btree'))
"""
ROWS_SQL = ("select relname, n_tup_ins - n_tup_del from pg_stat_user_tables "
            "where n_tup_ins - n_tup_del <> 0 order by relname")


def live_bytes(db: object) -> float:
    db.query("vacuum")  # type: ignore[attr-defined]
    return float(db.query(LIVE_BYTES_SQL).splitlines()[-1])  # type: ignore[attr-defined]


def steady(stack: Stack, seconds: float) -> Steady:
    """MS healthy, the watcher watching: what a day of it costs.

    The database's growth is that of the bytes it holds in rows and index
    entries; the file's own growth, in steps of pages, is reported beside it."""
    from prefect.client.orchestration import get_client

    from tests.servers import process_tree

    db = stack.server.database  # type: ignore[attr-defined]
    worker = stack.bus_worker.proc.pid  # type: ignore[attr-defined]
    size = lambda: int(db.query("select pg_database_size(current_database())"))  # noqa: E731
    rows = lambda: dict(line.split("|") for line in db.query(ROWS_SQL).splitlines() if line)  # noqa: E731
    t0, cpu0, size0, live0, rows0 = time.time(), _cpu(worker, process_tree), size(), live_bytes(db), rows()
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0))
    time.sleep(seconds)
    wall = time.time() - t0
    cpu = _cpu(worker, process_tree) - cpu0
    grown_file, grown = size() - size0, live_bytes(db) - live0
    rows1 = rows()  # the server's statistics lag by seconds, alike at both ends
    kinds = dict(line.split("|") for line in db.query(
        f"select event, count(*) from events where received >= '{since}+00' group by event").splitlines() if line)
    with get_client(sync_client=True) as client:
        scheduled = sum(86400 / s.schedule.interval.total_seconds() for d in client.read_deployments()
                        for s in d.schedules if s.active and getattr(s.schedule, "interval", None))
    day = 86400 / wall
    net = {t: int(n) - int(rows0.get(t, 0)) for t, n in rows1.items()}
    return Steady(seconds=round(wall, 1), cpu_core=cpu / wall, db_growth_mb_per_day=grown * day / 2**20,
                  db_file_growth_mb_per_day=grown_file * day / 2**20,
                  flow_runs_per_day=scheduled + net.get("flow_run", 0) * day,
                  scheduled_runs_per_day=round(scheduled, 1),
                  events_per_day=sum(int(v) for v in kinds.values()) * day,
                  events_by_kind={k: int(v) for k, v in kinds.items()},
                  rows_by_table={t: round(n * day) for t, n in sorted(net.items(), key=lambda x: -x[1]) if n})


def _cpu(pid: int, tree: Callable[[int], list[int]]) -> float:
    """CPU seconds of ``pid`` and its live descendants, with its reaped children's."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if p == pid else 0)
    return total / tick


def run(repetitions: int = 3, steady_s: float = 180.0, defaults_repetitions: int = 3) -> Result:
    from bench.failover import SiteClock, bare_repetition, power_off
    from simsite.pair import SimPair

    load_at_start = f"{os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory(prefix="bench-production-") as tmp:
        workdir = Path(tmp)
        with deployed(workdir) as (stack, pair):
            _wait("the first watcher watching", lambda: _first_watcher_watching(), GIVE_UP_S)
            time.sleep(SETTLE_S)  # the schedule's first watch run takes over from setup's, as it does once
            quiet = steady(stack, steady_s)
            outages: dict[str, list[Outage]] = {"fast": [], "shipped": []}
            plan = [("fast", FAST)] * repetitions + [("shipped", SHIPPED)] * defaults_repetitions
            for i, (label, policy) in enumerate(plan):
                if i:
                    pair = SimPair.create(workdir / f"pair-{i}")
                    pair.serve_ssh()
                    pair.start()
                try:
                    hand_over_to_a_new_watcher(pair, policy)
                    outages[label].append(outage(stack, pair, policy, label))
                    print(f"  {label} outage {len(outages[label])}: {outages[label][-1]}", file=sys.stderr, flush=True)
                finally:
                    if i:
                        pair.stop()
        bare = [bare_repetition(workdir / f"bare-{i}", SiteClock(), FAST, power_off).crash_to_first_id_s
                for i in range(repetitions)]
    return Result(quiet, outages["fast"], outages["shipped"], [b for b in bare if b is not None],
                  (load_at_start, f"{os.getloadavg()[0]:.2f}"))


def _first_watcher_watching() -> bool:
    from tasks.state import load_state

    state = load_state(PAIR)
    return bool(state.watcher and any(d.at >= state.watcher.since and d.code for d in state.decisions))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench production", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--repetitions", type=int, default=3, help="outages at K=3 x 1 s (median reported)")
    parser.add_argument("--defaults-repetitions", type=int, default=3, help="outages with the shipped policy")
    parser.add_argument("--steady-s", type=float, default=180.0, help="length of the steady window, seconds")
    args = parser.parse_args(argv)
    result = run(args.repetitions, args.steady_s, args.defaults_repetitions)
    if args.json:
        print(result.to_json())
        return 0
    from bench.__main__ import format_table

    print(format_table(result.rows()))
    for note in result.notes():
        print(f"- {note}")
    return 0
