"""Test settings, set before Prefect is imported: an isolated Prefect home, and
the address of the one Prefect server the session's flows use (started by the
``prefect_server`` fixture). Every thread and child process sees it."""
import atexit
import os
import shutil
import tempfile

from simsite.ports import listen_port

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="antelope-ha-test-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], True)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
API_PORT = listen_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{API_PORT}/api"

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

pytest_plugins = ["tests.fixtures_ssh"]

# No time limit per example: Hypothesis's default 200 ms per example is a timing assert, and under
# the suite's load an example that runs `sh` can take longer. Tests assert behaviour, never time.
settings.register_profile("antelope-ha", deadline=None)
settings.load_profile("antelope-ha")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real ``prefect server`` on PostgreSQL, as on real hosts. On SQLite,
    concurrent writers get 503s that Prefect's client retries after seconds of
    backoff, and the flow tests waited on those more than on the sites."""
    from tests.servers import PrefectServer

    server = PrefectServer(home=tmp_path_factory.mktemp("prefect-server"), port=API_PORT)
    try:
        server.start(timeout_s=120)
        yield server
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        # what is still queued goes out while the server is up (else retried at exit, for minutes);
        # bounded: a drain was seen to wait forever on a worker thread that had already stopped
        APILogWorker.drain_all(timeout=30)
        EventsWorker.drain_all(timeout=30)
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def no_flow_run_heartbeats():
    """Flows called in this process skip the flow-run heartbeat thread, which a
    sync flow run waits for at its end (up to a second each time). Heartbeats
    let a server notice dead runs; no test relies on that, and the end-to-end
    tests run their flows in worker processes with the default."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


# The slowest modules first (their times: README, Tests). `make test` runs the
# modules on two workers (pytest-xdist, --dist loadfile), each taking the next
# module when it is free: a long module collected last would run on its own at
# the end while the other worker idles.
SLOWEST_FIRST = (
    "tests/test_crash_steps.py", "tests/test_flows.py", "tests/e2e/test_production_path.py",
    "tests/test_approval_recheck.py", "tests/test_dependencies.py", "tests/test_approve_cli.py",
    "tests/test_notifications.py", "tests/test_nemesis.py", "tests/e2e/test_two_pairs.py", "tests/test_watch.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))
