"""Ctrl-C for a long run: stop between two cycles, not in the middle of one.

A terminal sends Ctrl-C (SIGINT) to every process of its foreground group,
and a run's helpers are in it too: the Prefect server it started, embedded
Prefect's API server, a site's sshd. Killed in the middle of a cycle, they
leave the flows failing and a run that cannot be continued. So the run's
command line runs again in a session of its own, and this process, left in
the terminal's group, relays Ctrl-C:

1. the first asks the run to stop after the cycle it is in: the part ends as
   ``--minutes`` ends one, its progress saved for ``--resume``;
2. the second interrupts the run at once: it stops the pair and its servers,
   and cannot be continued;
3. the third kills the run's session, everything it started.

SIGTERM and SIGHUP to this process interrupt the run at once, as the second
Ctrl-C does.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

#: Set in the environment of the run's own session (the run then does not relay again).
IN_SESSION = "ANTELOPE_HA_RUN_IN_SESSION"
#: How the relay asks the run to stop after its cycle.
STOP_SIGNAL = signal.SIGUSR1


def in_own_session() -> bool:
    return os.environ.get(IN_SESSION) == "1"


def relay(argv: list[str]) -> int:
    """Run ``argv`` in a session of its own, relaying Ctrl-C as the module says; its exit status."""
    child = subprocess.Popen(argv, env={**os.environ, IN_SESSION: "1"}, start_new_session=True)
    presses = 0

    def say(text: str) -> None:
        print(f"\n{text}", file=sys.stderr, flush=True)

    def on_interrupt(signum: int, frame: object) -> None:
        nonlocal presses
        presses += 1
        with contextlib.suppress(ProcessLookupError):
            if presses == 1:
                say("Ctrl-C: the run stops after the cycle it is in (Ctrl-C again to interrupt it now)")
                os.kill(child.pid, STOP_SIGNAL)
            elif presses == 2:
                say("Ctrl-C: interrupting the run (Ctrl-C again to kill it and everything it started)")
                os.kill(child.pid, signal.SIGINT)
            else:
                say("Ctrl-C: killing the run and everything it started")
                os.killpg(child.pid, signal.SIGKILL)

    def on_terminate(signum: int, frame: object) -> None:
        nonlocal presses
        presses = max(presses, 2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGINT)

    handlers = {signal.SIGINT: on_interrupt, signal.SIGTERM: on_terminate, signal.SIGHUP: on_terminate}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        status = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - status if status < 0 else status


@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event set when the relay asks this run to stop after its cycle. The
    relay's SIGINT raises KeyboardInterrupt here, even in a run started with
    SIGINT ignored: a shell without job control starts ``cmd &`` so, and the
    run would go on after SIGTERM or a second Ctrl-C to the relay."""
    event = threading.Event()
    previous = {STOP_SIGNAL: signal.signal(STOP_SIGNAL, lambda signum, frame: event.set()),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
