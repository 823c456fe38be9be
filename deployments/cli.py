"""The operators' command: ``antelope-ha``.

  status    who is authoritative, on the record AND on the sites, and where they disagree
  history   who did what, when, why and at which epoch
  plan      the exact commands a procedure would run now (a dry run of its flow)
  runbook   regenerate the runbooks under docs/runbooks
  drill     the whole cycle on a simulated pair, measured
  pause / resume / ack   automatic failover: maintenance pause, hold-down acknowledgement
  baseline  record each site's id problems now as old ones (checks then block only on new ones)
  setup     save the pair's blocks and deployments from a configuration file, take the baseline
  site-tool build   write the site tool (the id checks, one file) that setup copies to each site
  failover / fallback / recovery   start the pair's deployment and follow the run
  approve   answer the approval a run waits for (refused here when the flow would refuse it)
  notify-test   a test message through each notification channel

Every command talks to the Prefect API in PREFECT_API_URL, with the credential
in PREFECT_API_AUTH_STRING; without PREFECT_API_URL only drill, runbook and
site-tool run (on embedded Prefect), others only when given --embedded.
"""
from __future__ import annotations

import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from antelope_ha.config import PairConfig
from antelope_ha.decide import held
from antelope_ha.runner import RunnerError
from antelope_ha.site import Site, StepFailed
from antelope_ha.state import Decision, HAState, Pause

# Embedded Prefect (no PREFECT_API_URL) starts a temporary server at the first
# call, which must answer within a limit. In a new PREFECT_HOME it first
# creates and migrates its database: 16-40 s on 2 busy cores (measured), past
# Prefect's default limit of 20 s. And when the directory holding PREFECT_HOME
# does not exist, the server cannot create its database and exits at once;
# Prefect takes that exit for a busy port and starts it again until the limit
# ends in "Timed out while attempting to connect to ephemeral Prefect API
# server". Both are settled here, before Prefect is imported (it reads its
# settings once).
STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
os.environ.setdefault(STARTUP_TIMEOUT, "120")
if os.environ.get("PREFECT_HOME"):
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
out = Console(highlight=False, soft_wrap=True)

PairOption = Annotated[str, typer.Option("--pair", help="name of the Antelope Pair block")]
DEFAULT_PAIR = "default"


# What runs without a Prefect server: the drill and the runbooks start embedded
# Prefect on purpose (a simulated pair), the site tool needs none.
NO_SERVER_NEEDED = {"drill", "runbook", "site-tool"}


@app.callback()
def on_a_server(ctx: typer.Context, embedded: Annotated[bool, typer.Option(
        "--embedded", help="use embedded Prefect when PREFECT_API_URL is not set")] = False) -> None:
    from deployments.operate import api_url, embedded_refusal

    if not (embedded or ctx.invoked_subcommand in NO_SERVER_NEEDED or api_url()):
        out.print(embedded_refusal(), style="red", markup=False)
        raise typer.Exit(2)


def load_pair_and_state(pair_name: str) -> tuple[PairConfig, HAState]:
    from tasks.pair import load_pair
    from tasks.state import load_state

    try:
        pair, _ = load_pair(pair_name)
    except ValueError as exc:
        out.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    return pair, load_state(pair_name)


# --- status ------------------------------------------------------------------------------
@app.command()
def status(pair_name: PairOption = DEFAULT_PAIR,
           decisions: Annotated[int, typer.Option(help="how many recent decisions to show")] = 5,
           json: Annotated[bool, typer.Option("--json", help="print a JSON object (antelope-ha status "
                                                            "--schema gives its JSON schema)")] = False,
           watch: Annotated[bool, typer.Option("--watch", help="look again every --interval until Ctrl-C")] = False,
           interval: Annotated[float, typer.Option(help="with --watch: seconds between looks", min=0.1)] = 10.0,
           count: Annotated[int | None, typer.Option(help="with --watch: stop after this many looks")] = None,
           schema: Annotated[bool, typer.Option("--schema", help="print the JSON schema of --json and exit")] = False,
           ) -> None:
    """The stored record next to what each site says now. Exit code as a Nagios
    plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (docs/operating.md)."""
    from deployments.status import run_status

    raise typer.Exit(run_status(out, pair_name, decisions=decisions, as_json=json, every=interval if watch else None,
                                count=count,
                                schema=schema))


@app.command()
def history(pair_name: PairOption = DEFAULT_PAIR,
            since: Annotated[str, typer.Option(help="from when: 30m, 12h, 7d ago, or an ISO date (UTC)")] = "24h",
            json: Annotated[bool, typer.Option("--json", help="print the entries as a JSON list")] = False) -> None:
    """Who did what, when, why and at which epoch: decisions, failovers, fallbacks,
    recoveries, approvals, pauses, resumes, acknowledgements (the pair's events)."""
    from deployments.history import run_history

    raise typer.Exit(run_history(out, pair_name, since, as_json=json))


# --- plan -----------------------------------------------------------------------------------
class Procedure(str, Enum):
    failover = "failover"
    fallback = "fallback"
    recovery = "recovery"
    replicate = "replicate"
    health = "health"


@app.command()
def plan(procedure: Annotated[Procedure, typer.Argument(help="the procedure to dry-run")],
         pair_name: PairOption = DEFAULT_PAIR,
         start: Annotated[float | None, typer.Option(help="recovery: window start (epoch s)")] = None,
         end: Annotated[float | None, typer.Option(help="recovery: window end (epoch s)")] = None) -> None:
    """Dry-run the procedure's flow (the same code as the real run) and print
    what holds automatic failover now, then the commands it would run on each
    site, every line marked DRY RUN. Nothing on the sites changes."""
    from flows.calling import call_flow
    from flows.failover import failover
    from flows.fallback import fallback
    from flows.health import health
    from flows.recovery import recovery
    from flows.replicate import replicate_lastid
    from tasks.dryrun import plan_lines
    from tasks.report import format_plan
    from tasks.sites import plans

    pair, state_now = load_pair_and_state(pair_name)
    flows = {"failover": failover, "fallback": fallback, "recovery": recovery,
             "replicate": replicate_lastid, "health": health}
    params = {"start": start, "end": end} if procedure is Procedure.recovery else {}
    state = call_flow(flows[procedure.value], pair_name=pair_name, dry_run=True, return_state=True, **params)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        out.print(f"DRY RUN of {procedure.value} failed: {result}", style="red", markup=False)
        raise typer.Exit(1)
    planned = plans(str(state.state_details.flow_run_id))
    out.print("\n".join(plan_lines(procedure.value, pair_name, situation(pair, state_now), planned)), markup=False)
    if str(result) != format_plan(procedure.value, planned):
        out.print(f"DRY RUN result: {result}", markup=False)


def situation(pair: PairConfig, state: HAState) -> list[str]:
    """Who is authoritative and what holds automatic failover, as ``status`` says it."""
    auth = state.authority
    lines = [f"{auth.site} authoritative, epoch {auth.epoch}" + (", fallback in progress"
                                                                   if state.fallback_in_progress else "")]
    holding = held(state, pair, time.time()) if auth.site == pair.main.name else None
    lines.append("automatic failover: " + (f"HELD ({holding[0]}): {holding[1].removeprefix('but ')}" if holding
                                           else "enabled" if auth.site == pair.main.name
                                           else f"not applicable ({auth.site} authoritative)"))
    return lines


# --- procedures and approvals on the server -----------------------------------------------------
ByOption = Annotated[str, typer.Option("--by", help="your name (recorded)")]
ReasonOption = Annotated[str, typer.Option("--reason", help="why (recorded)")]


def _operate(action) -> None:
    """Run ``action`` (deployments/operate.py); a refusal is its message and exit 2."""
    from deployments.operate import Refusal

    try:
        code = action()
    except (Refusal, ValueError) as exc:
        out.print(f"REFUSED: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _procedure(flow: str, pair_name: str, parameters: dict) -> None:
    from deployments.operate import follow, start

    def run() -> int:
        started = start(flow, pair_name, parameters)
        out.print(f"{flow} of pair {pair_name} started: run {started.name} ({started.id})", markup=False)
        return follow(started.id, lambda line: out.print(line, markup=False))

    _operate(run)


@app.command()
def failover(reason: ReasonOption = "started by hand", by: ByOption = "", pair_name: PairOption = DEFAULT_PAIR
             ) -> None:
    """Start the pair's failover deployment and follow the run (exit 0 completed, 1 failed, 2 otherwise)."""
    _procedure("failover", pair_name, {"reason": reason, "by": by or None})


@app.command()
def fallback(reason: ReasonOption = "", by: ByOption = "", pair_name: PairOption = DEFAULT_PAIR) -> None:
    """Start the pair's fallback deployment and follow the run; it waits for two approvals."""
    _procedure("fallback", pair_name, {"reason": reason, "by": by or None})


@app.command()
def recovery(reason: ReasonOption = "", by: ByOption = "", pair_name: PairOption = DEFAULT_PAIR,
             start: Annotated[float | None, typer.Option(help="window start (epoch s)")] = None,
             end: Annotated[float | None, typer.Option(help="window end (epoch s)")] = None) -> None:
    """Start the pair's recovery deployment (the outages on the record, or a window) and follow the run."""
    window = {"start": start, "end": end} if start is not None or end is not None else {}
    _procedure("recovery", pair_name, {"reason": reason, "by": by or None, **window})


@app.command()
def approve(run: Annotated[str, typer.Argument(help="the waiting flow run: its id or name")],
            by: Annotated[str, typer.Option("--by", help="your name, as listed under operators")],
            code: Annotated[str, typer.Option("--code", help="the code your authenticator app shows now")],
            reason: ReasonOption,
            reject: Annotated[bool, typer.Option("--reject", help="reject the step instead")] = False,
            site: Annotated[str | None, typer.Option("--site", help="the site the step acts on, to confirm "
                                                                    "(default: the gate's)")] = None) -> None:
    """Answer the gate a run waits at. An answer the flow would refuse is refused
    here with the reason and not sent (exit 2)."""
    from deployments.operate import approve as answer

    _operate(lambda: answer(run, by, code, reason, "reject" if reject else "approve", site,
                            lambda line: out.print(line, markup=False)))


@app.command("notify-test")
def notify_test(by: ByOption = "", pair_name: PairOption = DEFAULT_PAIR) -> None:
    """Send a test message through each of the pair's notification channels."""
    from deployments.operate import notify_test as send_test

    _operate(lambda: send_test(pair_name, by or "an operator", lambda line: out.print(line, markup=False)))


# --- runbook, drill, setup --------------------------------------------------------------------
@app.command()
def runbook(out_dir: Annotated[Path, typer.Option("--out", help="where to write")] = Path("docs/runbooks")) -> None:
    """Regenerate the runbooks from dry runs on a fresh simulated pair."""
    from rehearsal.runbook import write_runbooks

    for path in write_runbooks(out_dir):
        out.print(f"wrote {path}")


@app.command()
def drill(json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
          interactive: Annotated[bool, typer.Option(help="answer the approvals at the terminal")] = False) -> None:
    """Failover, fallback and recovery on a simulated pair, measured."""
    from rehearsal.drill import main

    raise typer.Exit(main([*(["--json"] if json else []), *(["--interactive"] if interactive else [])]))


@app.command()
def setup(config: Annotated[Path, typer.Argument(help="the pair's YAML configuration", exists=True,
                                                 dir_okay=False)],
          server_env: Annotated[Path | None, typer.Option(
              "--server-env", help="write the Prefect server's environment (its credential, CSRF protection, "
                                   "the configured retention) to this file")] = None,
          enroll: Annotated[str | None, typer.Option(
              "--enroll", help="only enroll this operator: a new one-time code secret, its provisioning URI "
                               "shown once")] = None,
          replace: Annotated[bool, typer.Option("--replace", help="with --enroll: replace their secret")] = False,
          server_env_only: Annotated[bool, typer.Option(
              "--server-env-only", help="with --server-env: write that file and nothing else")] = False,
          ) -> None:
    """Save the pair's blocks, work pools and deployments from CONFIG, then take the
    baseline of each reachable site's id problems; or enroll an operator."""
    from deployments.setup import load_config
    from deployments.setup import main as run_setup

    if enroll:
        raise typer.Exit(run_setup([str(config), "--enroll", enroll, *(["--replace"] if replace else [])]))
    code = run_setup([str(config), *(["--server-env", str(server_env)] if server_env else []),
                      *(["--server-env-only"] if server_env_only else [])])
    if code == 0 and not server_env_only:
        take_baselines(load_config(config).pair, "setup")
    raise typer.Exit(code)


# --- baseline of old id problems ---------------------------------------------------------------
def _print_baselines(state: HAState) -> None:
    from deployments.status import print_baselines

    print_baselines(out, state)


def take_baselines(pair_name: str, reason: str) -> HAState:
    """Scan both sites' ids and record their problems as the baseline (a site that
    cannot be scanned keeps its baseline, and is named)."""
    from tasks.sites import runner_for
    from tasks.state import update_state

    pair, _ = load_pair_and_state(pair_name)
    reports = {}
    for cfg in (pair.main, pair.backup):
        try:
            reports[cfg.name] = Site(cfg, runner_for(cfg)).scan_ids()
        except (RunnerError, OSError, StepFailed, ValueError) as exc:
            out.print(f"[yellow]{cfg.name}: its ids could not be scanned ({type(exc).__name__}: {exc}); "
                      f"its baseline is unchanged: run antelope-ha baseline again when it can be[/yellow]")

    def change(s: HAState) -> HAState:
        for name, report in reports.items():
            s = s.with_baseline(name, report, reason)
        return s

    state = update_state(pair_name, change)
    _print_baselines(state)
    return state


@app.command()
def baseline(by: Annotated[str, typer.Option(help="your name")], reason: Annotated[str, typer.Option(help="why")],
             pair_name: PairOption = DEFAULT_PAIR) -> None:
    """Record each site's id problems now as old: from then on the fallback's id check
    blocks only on problems new since, or touching the ids issued during an outage."""
    take_baselines(pair_name, f"taken by {by}: {reason}")


site_tool_app = typer.Typer(help="The site tool: the id checks as one standard-library-only file "
                                 "that the Antelope hosts run with their own python3.", no_args_is_help=True)
app.add_typer(site_tool_app, name="site-tool")


@site_tool_app.command("build")
def site_tool_build(out_path: Annotated[Path, typer.Option("--out", help="file or directory to write")] = Path(".")
                    ) -> None:
    """Write the site tool (antelope-ha-site.pyz); `setup` copies it to each site itself."""
    from antelope_ha.sitetool import SiteToolError, build, digest

    try:
        path = build(out_path)
    except (SiteToolError, OSError) as exc:
        out.print(f"[red]site tool not built: {exc}[/red]", markup=True)
        raise typer.Exit(2) from None
    out.print(f"wrote {path} (sha256 {digest(path)})", markup=False)


# --- pause, resume, ack: the state record only -------------------------------------------
def _change_state(pair_name: str, change, event: str, by: str, reason: str) -> HAState:
    """Change the record as a person asked, and say so in an event naming them."""
    from tasks.report import operator_event
    from tasks.state import update_state

    pair, _ = load_pair_and_state(pair_name)
    changed = update_state(pair_name, change)
    operator_event(pair_name, event, by, reason=reason)
    return changed


@app.command()
def pause(reason: Annotated[str, typer.Option(help="why (recorded)")],
          by: Annotated[str, typer.Option(help="your name")],
          pair_name: PairOption = DEFAULT_PAIR) -> None:
    """Pause automatic failover (maintenance). Health keeps probing and reporting."""
    now = time.time()
    _change_state(pair_name, lambda s: s.model_copy(update={"pause": Pause(by=by, reason=reason, since=now)}).record(
        Decision(at=now, action="pause", reason=f"automatic failover paused by {by}: {reason}")),
        "failover.paused", by, reason)
    out.print(f"automatic failover of {pair_name} paused by {by}: {reason}")


@app.command()
def resume(reason: Annotated[str, typer.Option(help="why (recorded)")],
           by: Annotated[str, typer.Option(help="your name")], pair_name: PairOption = DEFAULT_PAIR) -> None:
    """Resume automatic failover."""
    now = time.time()
    _change_state(pair_name, lambda s: s.model_copy(update={"pause": None}).record(
        Decision(at=now, action="resume", reason=f"automatic failover resumed by {by}: {reason}")),
        "failover.resumed", by, reason)
    out.print(f"automatic failover of {pair_name} resumed by {by}: {reason}")


@app.command()
def ack(by: Annotated[str, typer.Option(help="your name")], reason: Annotated[str, typer.Option(help="why")],
        pair_name: PairOption = DEFAULT_PAIR) -> None:
    """Acknowledge the hold-down after a failover, or a declined failover: another
    automatic failover may happen."""
    now = time.time()
    _change_state(pair_name, lambda s: s.acknowledge(by, reason, now), "hold-down.acknowledged", by, reason)
    out.print(f"hold-down of {pair_name} acknowledged by {by}: {reason}")


def main() -> None:
    """The ``antelope-ha`` command: embedded Prefect that does not start, or a
    server that refuses the credential, is a message, not a traceback."""
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        app()
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 401:
            raise
        out.print(f"the Prefect server at {exc.request.url.host}:{exc.request.url.port} refused the request "
                  "(401 Unauthorized): PREFECT_API_AUTH_STRING is unset or not the server's credential. Set it as "
                  "/etc/antelope-ha/api-auth.env holds it (docs/operating.md, section 1).", style="red", markup=False)
        sys.exit(2)
    except RuntimeError as exc:
        if "ephemeral Prefect API server" not in str(exc):
            raise
        home = os.environ.get("PREFECT_HOME", "~/.prefect")
        out.print(f"embedded Prefect did not answer within {os.environ[STARTUP_TIMEOUT]} s ({exc})", style="red",
                  markup=False)
        out.print(f"The first start in a new PREFECT_HOME ({home}) creates its database and is the slowest; the "
                  f"machine may be busy. Run the command again, or raise {STARTUP_TIMEOUT}, or point "
                  "PREFECT_API_URL at a Prefect server.", markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
