"""What health looks at in one cycle, over the connections the worker keeps open.

While MS is authoritative: its ID server, asked from BUS, every cycle. When
that fails: the witness from BUS and MS's own ID server on MS (a dead MS, or
only a cut link?), both at once. While it answers: MS's ORB and writers, at
most every ``look_s`` (they only ever make a warning).

While BUS is authoritative: BUS's own ID server, asked on BUS, every cycle,
and when it fails what rtexec on BUS is doing; whether MS is fenced, at most
every ``look_s``.

A host that does not answer must not hold the cycle up: what is asked of MS
runs in a thread of its own and is waited for at most the probe timeout (a
powered-off host can take the whole SSH connect timeout to fail). Until that
call returns, no second one is started and MS counts as unreachable.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from antelope_ha.config import PairConfig
from antelope_ha.decide import MainSeen, Probes
from antelope_ha.runner import RunnerError
from antelope_ha.site import Site, StepFailed
from antelope_ha.state import HAState

_T = TypeVar("_T")
CHECK_ERRORS = (RunnerError, StepFailed, OSError, ValueError)


class BoundedCall(Generic[_T]):
    """A call on a host that may hang, made in a thread of its own and waited
    for at most a given time. While one is still running, no second is started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._result: list[_T] = []

    def start(self, call: Callable[[], _T]) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._result = []
            self._thread = threading.Thread(target=lambda: self._result.append(call()), daemon=True,
                                            name=f"probe {self.name}")
            self._thread.start()

    def wait(self, timeout_s: float) -> _T | None:
        """The call's result, or None when it has not returned within ``timeout_s``."""
        assert self._thread is not None, "wait() before start()"
        self._thread.join(max(0.0, timeout_s))
        return None if self._thread.is_alive() or not self._result else self._result[0]

    def __call__(self, call: Callable[[], _T], timeout_s: float) -> _T | None:
        self.start(call)
        return self.wait(timeout_s)


def look_at_main(site: Site, timeout_s: float, ask_idserver: bool = True) -> tuple[bool | None, MainSeen]:
    """From the worker, on the site: does its own ID server answer (None when
    the site cannot be reached, or not asked: BUS already got an answer), and
    what else is seen there. Only the first tells a dead MS from a cut link;
    the rest is reported, never decisive, so it is not looked at while the ID
    server fails from BUS: detection would wait for it."""
    cfg = site.config
    try:
        site.runner.run(["true"], timeout_s=timeout_s).check()
    except RunnerError as exc:
        return None, MainSeen(reachable=False, detail=str(exc))
    if ask_idserver:
        later = "looked at once the ID server answers"
        return (site.probe_idserver(cfg.idserver_address, timeout_s)[0],
                MainSeen(reachable=True, not_checked={"ORB": later, "writers": later}))
    not_checked: dict[str, str] = {}
    latency = None
    try:
        latency = site.orb_latency(timeout_s)
    except RunnerError as exc:
        not_checked["ORB"] = str(exc)
    writers: dict[str, bool] = {}
    try:
        writers = site.tasks_running(cfg.writer_tasks, timeout_s)
    except CHECK_ERRORS as exc:
        not_checked["writers"] = str(exc)
    return None, MainSeen(reachable=True, orb_latency_s=latency, writers=writers, not_checked=not_checked)


@dataclass
class PairProbe:
    """The probes of one pair, kept between cycles (the watcher's) or used once
    (the one-shot health flow, ``look_s=0``: everything every time)."""

    pair: PairConfig
    ms: Site
    bus: Site
    look_s: float = 0.0
    _seen_main: MainSeen | None = None
    _fence: tuple[tuple[int, ...], str] = ((), "")
    _looked_at: float = float("-inf")
    _look_main: BoundedCall = field(default_factory=lambda: BoundedCall("ms ORB and writers"))
    _idserver_on_main: BoundedCall = field(default_factory=lambda: BoundedCall("ms ID server"))
    _fence_main: BoundedCall = field(default_factory=lambda: BoundedCall("ms fence"))

    @property
    def timeout_s(self) -> float:
        return self.pair.policy.probe_timeout_s

    def look(self, state: HAState, now: float | None = None) -> Probes:
        now = time.monotonic() if now is None else now
        due = now - self._looked_at >= self.look_s
        if due:
            self._looked_at = now
        if state.authority.site == self.bus.name:
            return self._backup_authoritative(due)
        return self._main_authoritative(due)

    def _main_authoritative(self, due: bool) -> Probes:
        ms, bus, timeout = self.ms, self.bus, self.timeout_s
        self._fence = ((), "")
        ok, detail = bus.probe_idserver(ms.config.idserver_address, timeout)
        if ok:
            if due or self._seen_main is None:
                found = self._look_main(lambda: look_at_main(ms, timeout, ask_idserver=False), timeout)
                self._seen_main = found[1] if found else self._no_answer()
            return Probes(True, detail, True, "not needed", main=self._seen_main)
        self._seen_main = None
        asked = time.monotonic()
        self._idserver_on_main.start(lambda: look_at_main(ms, timeout, ask_idserver=True))
        witness_ok, witness_detail = bus.ping(self.pair.witness.host, timeout)
        found = self._idserver_on_main.wait(timeout - (time.monotonic() - asked))
        self_ok, seen = found if found else (None, self._no_answer())
        return Probes(False, detail, witness_ok, witness_detail, main_self_idserver_ok=self_ok, main=seen)

    def _no_answer(self) -> MainSeen:
        return MainSeen(reachable=False, detail=f"no answer within {self.timeout_s:g} s")

    def _backup_authoritative(self, due: bool) -> Probes:
        ms, bus, timeout = self.ms, self.bus, self.timeout_s
        self._seen_main = None
        ok, detail = bus.probe_idserver(bus.config.idserver_address, timeout)
        if not ok:
            try:
                detail = f"{detail}; {bus.rtexec_report(timeout)}"
            except CHECK_ERRORS as exc:
                detail = f"{detail}; what rtexec does on {bus.name} is unknown: {exc}"
        if due:
            self._fence = self._fence_main(lambda: self._fence_gaps(ms), timeout) or ((), "")
        pids, gaps = self._fence
        return Probes(False, "not probed: BUS authoritative", True, "", main_dbids_pids=pids, main_unfenced=gaps,
                      backup_idserver_ok=ok, backup_detail=detail)

    def _fence_gaps(self, ms: Site) -> tuple[tuple[int, ...], str]:
        """MS's fence as seen now; nothing when MS cannot be reached (it is
        fenced as soon as it can be)."""
        try:
            pids, gaps = ms.fence_gaps(self.timeout_s)
        except CHECK_ERRORS:
            return (), ""
        return tuple(pids), gaps

    def fenced(self) -> None:
        """MS was just fenced: look again at the next cycle."""
        self._looked_at = float("-inf")
