"""Run one flow of a saved pair in its own process, and SIGKILL that process
at a chosen point: the child of the crash tests.

    python -m tests.flowproc FLOW PAIR [--param NAME=JSON ...] [--trace FILE]
                             [--kill after-step:N | after-change:K | in-step:N:K]

The flow talks to the Prefect API named by ``PREFECT_API_URL`` (the test
server). Every point where the process can be killed is counted, so that a
clean run lists them all and a crash run stops at exactly one, with no timing
guesses:

* a *step* is a Prefect task run; ``after-step:N`` kills the process once the
  N-th task run (1-based) has completed and its state has been recorded;
* a *change* is anything that changes a site or the pair's record: a site
  command marked ``changes``, a file written on a site, a save of the pair
  state; ``after-change:K`` kills the process as soon as the K-th change has
  been made, wherever it falls inside its step.

Each step and change is appended to the trace file as a JSON line before any
kill, so the parent knows what ran.

    python -m tests.flowproc --serve

is a fork server for the same runs: it imports the flows once, then runs each
request (a JSON line on stdin: ``argv``, ``stdout`` and ``stderr`` paths) in a
forked child and answers the child's exit status (a JSON line on stdout, a
negative signal number when killed). A forked child starts in milliseconds,
where a new interpreter spends one to three seconds importing Prefect.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

KILL_POINTS = ("after-step", "after-change", "in-step")


@dataclass
class Tracer:
    """Counts steps and changes, writes them to the trace, kills at the chosen one."""

    trace: IO[str] | None
    kill_point: str | None = None
    kill_at: int | tuple[int, int] = 0
    steps: int = 0
    changes: int = 0
    changes_in_step: int = 0
    step_names: list[str] = field(default_factory=list)

    def _emit(self, event: dict[str, Any]) -> None:
        if self.trace is not None:
            self.trace.write(json.dumps(event) + "\n")
            self.trace.flush()

    def _maybe_kill(self, point: str, count: int | tuple[int, int]) -> None:
        if self.kill_point == point and self.kill_at == count:
            self._emit({"kind": "killed", "point": point, "n": count})
            os.kill(os.getpid(), signal.SIGKILL)

    def step_done(self, name: str) -> None:
        self.steps += 1
        self.changes_in_step = 0
        self._emit({"kind": "step", "n": self.steps, "name": name})
        self._maybe_kill("after-step", self.steps)

    def changed(self, site: str, action: str) -> None:
        self.changes += 1
        self._emit({"kind": "change", "n": self.changes, "site": site, "action": action,
                    "step": current_step(), "after_steps": self.steps})
        self._maybe_kill("after-change", self.changes)
        self.changes_in_step += 1
        self._maybe_kill("in-step", (self.steps, self.changes_in_step))


def current_step() -> str | None:
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    return ctx.task_run.name if ctx else None


def instrument(tracer: Tracer) -> None:
    """Hook every task of the ``tasks`` package, every site change and every
    save of the pair state into ``tracer``."""
    import importlib

    from prefect import Task

    from antelope_ha import site as site_module

    modules = [importlib.import_module(f"tasks.{m}") for m in
               ("authority", "data", "health", "ids", "notify", "realtime", "state")]

    def on_completion(task: Task, task_run: Any, state: Any) -> None:
        tracer.step_done(task_run.name)

    for module in modules:
        for value in vars(module).values():
            if isinstance(value, Task) and on_completion not in value.on_completion_hooks:
                value.on_completion_hooks = [*value.on_completion_hooks, on_completion]

    original_run, original_write = site_module.Site.run, site_module.Site.write_text

    def run(self: site_module.Site, command: Any, **kwargs: Any) -> Any:
        result = original_run(self, command, **kwargs)
        if command.changes and not self.dry_run:
            tracer.changed(self.name, str(command))
        return result

    def write_text(self: site_module.Site, relative: str, text: str, purpose: str) -> None:
        original_write(self, relative, text, purpose)
        if not self.dry_run:
            tracer.changed(self.name, f"write {relative} ({purpose})")

    site_module.Site.run, site_module.Site.write_text = run, write_text  # type: ignore[method-assign]

    from tasks import authority, state

    original_save = state.save_state

    def save_state(pair_name: str, value: Any) -> None:
        original_save(pair_name, value)
        tracer.changed("record", f"save state: {value.authority.site} epoch {value.authority.epoch}")

    for module in (state, authority):
        module.save_state = save_state  # type: ignore[attr-defined]


FLOWS = {"failover": ("flows.failover", "failover"), "fallback": ("flows.fallback", "fallback"),
         "recovery": ("flows.recovery", "recovery"), "health": ("flows.health", "health"),
         "replicate": ("flows.replicate", "replicate_lastid")}


def flow_by_name(name: str) -> Callable[..., Any]:
    """Only the flow's own module is imported."""
    import importlib

    if name not in FLOWS:
        raise SystemExit(f"unknown flow {name!r}: use one of {', '.join(FLOWS)}")
    module, attr = FLOWS[name]
    return getattr(importlib.import_module(module), attr)


def parse_kill(value: str) -> tuple[str, int | tuple[int, int]]:
    """after-step:N, after-change:K, or in-step:N:K (the K-th change once N steps
    are done: the middle of step N+1, however many changes earlier steps made)."""
    point, _, rest = value.partition(":")
    numbers = rest.split(":")
    expected = 2 if point == "in-step" else 1
    if point not in KILL_POINTS or len(numbers) != expected or not all(n.isdigit() for n in numbers) \
            or (point != "in-step" and int(numbers[0]) < 1) or int(numbers[-1]) < 1:
        raise argparse.ArgumentTypeError(
            f"--kill must be after-step:N, after-change:K or in-step:N:K, got {value!r}")
    return (point, (int(numbers[0]), int(numbers[1]))) if point == "in-step" else (point, int(numbers[0]))


def parse_param(value: str) -> tuple[str, Any]:
    name, sep, text = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--param must be NAME=JSON, got {value!r}")
    return name, json.loads(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowproc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("flow")
    parser.add_argument("pair")
    parser.add_argument("--param", type=parse_param, action="append", default=[])
    parser.add_argument("--trace", help="JSON lines file of the steps and changes")
    parser.add_argument("--kill", type=parse_kill, help="after-step:N, after-change:K or in-step:N:K")
    args = parser.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit("set PREFECT_API_URL to the Prefect server the flow should use")
    trace = open(args.trace, "a", encoding="utf-8") if args.trace else None  # noqa: SIM115 (kept until exit)
    point, at = args.kill or (None, 0)
    instrument(Tracer(trace, point, at))
    from flows.calling import call_flow

    result = call_flow(flow_by_name(args.flow), pair_name=args.pair, **dict(args.param))
    print(json.dumps({"result": result}, default=str))
    return 0


def serve() -> int:
    import atexit
    import importlib
    import threading
    import traceback

    for module, _ in FLOWS.values():
        importlib.import_module(module)
    for line in sys.stdin:
        request = json.loads(line)
        if threading.active_count() != 1:  # forking a process with threads can deadlock the child
            raise SystemExit(f"flowproc --serve: threads running before fork: {threading.enumerate()}")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
                code = main(request["argv"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                atexit._run_exitfuncs()  # what interpreter exit does: Prefect sends its queued logs and events
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"returncode": code}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main())
