"""``antelope-ha status``: look at the record and the sites, and show it to a
person (80 columns), to a program (``--json``, ``antelope_ha.pairstatus.StatusReport``)
or to a monitoring system (the exit code)."""
from __future__ import annotations

import json
import time

from rich.console import Console
from rich.table import Table

from antelope_ha.config import PairConfig, SiteConfig
from antelope_ha.pairstatus import Level, Marker, SiteView, StatusReport, report, unknown
from antelope_ha.runner import RunnerError
from antelope_ha.site import Site, StepFailed
from antelope_ha.state import HAState


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"


def age(seconds: float) -> str:
    s = max(0.0, seconds)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def look_at(cfg: SiteConfig) -> SiteView:
    from tasks.sites import runner_for

    try:
        s = Site(cfg, runner_for(cfg))
        marker = s.authority_marker()
        return SiteView(name=cfg.name, reachable=True, rtexec=s.rtexec_running(),
                        dbids_pids=s.task_pids(cfg.idserver_task), dbidserver=s.dbidserver(), armed=s.armed(),
                        marker=Marker.model_validate(marker) if marker else None, replica=s.replica())
    except (RunnerError, OSError, StepFailed, ValueError) as exc:
        return SiteView(name=cfg.name, reachable=False, error=f"{type(exc).__name__}: {exc}")


def unreadable(exc: Exception) -> str:
    """Why the pair cannot be read, with the fix when it is known."""
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code == 401:
        return ("the Prefect server refused the request (401 Unauthorized): PREFECT_API_AUTH_STRING is unset or "
                "not the server's credential (docs/operating.md, section 1)")
    return f"cannot read the pair or its record: {type(exc).__name__}: {exc}"


def look(pair_name: str, decisions: int) -> tuple[StatusReport, PairConfig | None, HAState | None]:
    """The report now; UNKNOWN (and no pair, no state) when the pair or its
    record cannot be read."""
    from tasks.lock import procedure_holder
    from tasks.pair import load_pair
    from tasks.state import load_state

    try:
        pair, _ = load_pair(pair_name)
        state = load_state(pair_name)
        procedure = procedure_holder(pair_name)
    except Exception as exc:  # the server is down, the block is missing, the record invalid: all UNKNOWN
        if isinstance(exc, RuntimeError) and "ephemeral Prefect API server" in str(exc):
            raise  # embedded Prefect did not start: the command's main() says what to do
        return unknown(pair_name, unreadable(exc), time.time()), None, None
    views = [look_at(pair.main), look_at(pair.backup)]
    return report(pair_name, pair, state, views, procedure, time.time(), decisions), pair, state


def print_baselines(out: Console, state: HAState) -> None:
    for site, b in sorted(state.baselines.items()):
        out.print(f"old id problems of {site} (baseline taken {when(b.taken_at)}, {b.reason}; "
                  f"listed, not blocking): " + ("none" if not b.problems else ""))
        for p in b.problems:
            out.print(f"  - {p.shown()}")


def run_status(out: Console, pair_name: str, *, decisions: int, as_json: bool, every: float | None,
               count: int | None, schema: bool = False) -> int:
    """Look, show, and with ``every`` look again until Ctrl-C (or ``count``
    looks); the exit code is the last look's level."""
    if schema:
        print(json.dumps(StatusReport.model_json_schema(), indent=2))
        return 0
    code, looks = int(Level.UNKNOWN), 0
    try:
        while True:
            r, pair, state = look(pair_name, decisions)
            code, looks = r.exit_code, looks + 1
            if as_json:
                print(r.model_dump_json(), flush=True)  # one object a line
            else:
                if every is not None and out.is_terminal:
                    out.clear()
                show(out, r, pair, state)
                if every is not None:
                    out.print(f"(looked at {when(r.checked_at)}; again every {every:g} s, Ctrl-C to stop)")
            if every is None or (count is not None and looks >= count):
                return code
            time.sleep(every)
    except KeyboardInterrupt:
        return code


def site_table(r: StatusReport) -> Table:
    """One column per site, one row per thing looked at: fits 80 columns, and a
    long dbidserver wraps in its cell rather than being cut."""
    table = Table(title="the sites, now", title_justify="left")
    table.add_column("", no_wrap=True)
    for v in r.sites:
        table.add_column(v.name + (" (authoritative)" if v.authoritative else ""), overflow="fold")

    def row(label: str, shown) -> None:
        table.add_row(label, *(shown(v) if v.reachable else "?" for v in r.sites))

    table.add_row("reachable", *("yes" if v.reachable else "[yellow]UNREACHABLE[/yellow]" for v in r.sites))
    row("rtexec", lambda v: "running" if v.rtexec else "stopped")
    row("dbids", lambda v: f"running (pid {', '.join(map(str, v.dbids_pids))})" if v.dbids_pids else "stopped")
    row("dbidserver", lambda v: v.dbidserver or "-")
    row("armed", lambda v: "ARMED" if v.armed else "no")
    row("authority marker", lambda v: f"{v.marker.site} epoch {v.marker.epoch}" if v.marker else "none")
    return table


def show(out: Console, r: StatusReport, pair: PairConfig | None, state: HAState | None) -> None:
    """The report for a person: the summary line first (a monitoring system
    reads that one), then the record, the sites and the findings."""
    style = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red", "UNKNOWN": "magenta"}[r.status]
    out.print(f"[{style}]{r.summary}[/{style}]", markup=True, highlight=False)
    if pair is None or state is None or r.authority is None:
        return
    auth = r.authority
    out.print(f"[bold]pair {r.pair}[/bold]: [bold]{auth.site}[/bold] authoritative, epoch {auth.epoch}, "
              f"since {when(auth.since)} ({auth.reason or 'no reason recorded'})")
    if r.procedure_in_progress:
        out.print(f"[yellow]in progress: {r.procedure_in_progress}[/yellow]")
    if r.fallback_in_progress:
        out.print("[yellow]fallback in progress[/yellow]")
    out.print("automatic failover: " + (f"[yellow]HELD[/yellow]: {r.held}" if r.automatic_failover == "held"
                                        else "enabled" if r.automatic_failover == "enabled"
                                        else f"not applicable ({auth.site} authoritative)"))
    if r.pause:
        out.print(f"  [yellow]PAUSED[/yellow] by {r.pause.by} since {when(r.pause.since)}: {r.pause.reason}")
    last = state.last_failover(pair.backup.name)
    ack = r.acknowledged
    if last is not None and r.checked_at - last.since < pair.policy.hold_down_s:
        acked = state.hold_down_ack is not None and state.hold_down_ack >= last.since
        out.print(f"  hold-down after the failover at {when(last.since)} (until "
                  f"{when(last.since + pair.policy.hold_down_s)}): "
                  + ((f"acknowledged at {when(state.hold_down_ack)}" + (f" by {ack.by}: {ack.reason}" if ack else ""))
                     if acked else "[yellow]not acknowledged[/yellow]"))
    if r.declined and (state.hold_down_ack is None or state.hold_down_ack < r.declined.at):
        out.print(f"  [yellow]failover declined[/yellow] at {when(r.declined.at)} ({r.declined.what}): "
                  f"no automatic failover until acknowledged (antelope-ha ack)")
    if r.watcher:
        out.print(f"watcher: flow run {r.watcher.run}, acting since {when(r.watcher.since)}")
    out.print(f"consecutive failed probes of {auth.site}'s ID server (last recorded): {r.consecutive_failures}"
              f"/{r.failures_before_failover}")
    print_baselines(out, state)
    if r.decisions:
        table = Table(title="recent decisions", title_justify="left")
        table.add_column("at (UTC)", no_wrap=True)
        table.add_column("action", no_wrap=True)
        table.add_column("reason", overflow="fold")
        for d in r.decisions:
            table.add_row(time.strftime("%m-%d %H:%M:%S", time.gmtime(d.at)), d.action, d.reason)
        out.print(table, soft_wrap=False)
    backup = next(v for v in r.sites if v.name == pair.backup.name)
    if auth.site == pair.main.name:
        out.print(f"lastid replica on {backup.name}: " + (
            f"{age(r.replica_age_s)} old (policy: at most {r.replica_max_age_s:g} s)" if r.replica_age_s is not None
            else "[yellow]none found[/yellow]" if backup.reachable else "unknown (unreachable)"))
    out.print(site_table(r), soft_wrap=False)
    for v in r.sites:
        if not v.reachable:
            out.print(f"[yellow]{v.name} is unreachable: what it says is unknown ({v.error})[/yellow]")
    if r.disagreements:
        out.print("[bold red]THE RECORD AND THE SITES DISAGREE:[/bold red]")
        for what in r.disagreements:
            out.print(f"[bold red]  ! {what}[/bold red]")
    else:
        out.print("[green]the record and every reachable site agree[/green]")
    for f in r.findings:
        if f.what not in r.disagreements:
            out.print(f"{f.level}: {f.what}")
