"""The systemd units of deployments/systemd: valid for systemd, pointing at
what `make deps` makes, and stopping a worker leaves no flow-run process.

The stop is done as systemd does it for KillMode=control-group: the worker is
started as the unit starts it, inside a control group of its own (cgroup v1
`pids` here, as systemd's own hierarchy is not ours to use), and stopping it
sends KillSignal to every process of the group, then SIGKILL after
TimeoutStopSec to any left."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from antelope_ha.names import SITES, PairNames
from deployments.setup import WORKER_ENV
from simsite.procs import is_running
from tests.servers import wait_for

PROJECT = Path(__file__).resolve().parent.parent
UNITS = PROJECT / "deployments" / "systemd"
INSTALLED = "/opt/antelope-ha"  # where docs/operating.md puts the project
CGROUPS = Path("/sys/fs/cgroup/pids")


def unit(name: str) -> dict[str, list[str]]:
    """The [Service] settings of a unit file: key -> every value given."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def test_units_point_at_what_make_deps_makes_and_stop_every_process() -> None:
    venv = next(line.split("?=")[1].strip() for line in (PROJECT / "Makefile").read_text().splitlines()
                if line.startswith("VENV"))
    for name in ("antelope-ha-worker@.service", "antelope-ha-prefect-server.service"):
        s = unit(name)
        assert shlex.split(s["ExecStart"][0])[0] == f"{INSTALLED}/{venv}/bin/prefect", name
        assert s["WorkingDirectory"] == [INSTALLED]
        assert s["KillMode"][0] in ("control-group", "mixed"), f"{name}: KillMode must reach the flow runs"
        assert s["SendSIGKILL"] == ["yes"] and 0 < seconds(s["TimeoutStopSec"][0]) <= 120
        assert s["Restart"] == ["always"]
    worker = unit("antelope-ha-worker@.service")
    assert "ANTELOPE_HA_HOME=/opt/antelope-ha" in worker["Environment"]
    assert {f"{k}={v}" for k, v in WORKER_ENV.items()} <= set(worker["Environment"]), \
        "the worker unit must set what the tests' and the bench's workers run with (deployments/setup.py WORKER_ENV)"
    server = unit("antelope-ha-prefect-server.service")
    assert "/etc/antelope-ha/server-setup.env" in server["EnvironmentFile"], "the server must not start without " \
        "the credential setup writes"
    assert shlex.split(server["ExecStart"][0])[shlex.split(server["ExecStart"][0]).index("--host") + 1] == \
        "127.0.0.1", "the server listens on loopback only, behind its TLS reverse proxy"
    assert "/etc/antelope-ha/api-auth.env" in worker["EnvironmentFile"], "workers need the credential"
    pool = shlex.split(worker["ExecStart"][0])[shlex.split(worker["ExecStart"][0]).index("--pool") + 1]
    names = PairNames("pair-a")  # the unit antelope-ha-worker@pair-a-bus polls the pool of pair-a at BUS
    for site in SITES:
        instance = names.worker_unit(site).removeprefix("antelope-ha-worker@")
        assert pool.replace("%i", instance) == names.pool(site)
    for example in ("worker.env.example", "server.env.example"):
        assert (UNITS / example).exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """As installed (the project's path in place of /opt/antelope-ha, so that
    ExecStart exists); any warning counts as a failure."""
    names = []
    for path in UNITS.glob("*.service"):
        text = path.read_text().replace(INSTALLED, str(PROJECT))
        if path.name.endswith("@.service"):
            for site in ("bus", "ms"):
                names.append(tmp_path / path.name.replace("@.", f"@{site}."))
                names[-1].write_text(text)
        else:
            names.append(tmp_path / path.name)
            names[-1].write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", *map(str, names)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStart=/bin/true\nKillMode=sometimes\n")
    assert "kill mode" in subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                                         text=True).stderr  # the check above can fail


# --- stopping a worker as systemd does ---------------------------------------------------
@dataclass
class ControlGroup:
    """A cgroup v1 `pids` group: every process started in it, and its
    descendants, stay in it, as in a systemd unit's control group."""

    path: Path

    @classmethod
    def create(cls) -> ControlGroup:
        path = CGROUPS / f"antelope-ha-test-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir()
        except OSError as exc:
            pytest.fail(f"cannot make a control group under {CGROUPS} ({exc}): this test needs root and cgroup v1 pids")
        return cls(path)

    def enter(self) -> None:
        """For preexec_fn: the child joins the group before it runs anything."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> list[int]:
        return [p for p in map(int, (self.path / "cgroup.procs").read_text().split()) if is_running(p)]

    def stop(self, kill_signal: int, timeout_s: float) -> bool:
        """KillMode=control-group: ``kill_signal`` to all, SIGKILL to the rest after
        ``timeout_s``. True when nothing needed the SIGKILL."""
        for pid in self.pids():
            os.kill(pid, kill_signal)
        deadline = time.monotonic() + timeout_s
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        graceful = not self.pids()
        for pid in self.pids():
            os.kill(pid, signal.SIGKILL)
        wait_for("every process of the control group gone", lambda: not self.pids(), 10, 0.1)
        return graceful

    def remove(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGKILL)
        wait_for("the control group empty", lambda: not self.pids(), 10, 0.1)
        self.path.rmdir()


SLEEPER = '''\
import os
import time
from pathlib import Path

from prefect import flow


@flow
def sleeper(pid_file: str) -> None:
    """A long flow run: it notes its pid, then waits."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(900)
'''


@pytest.fixture
def cgroup() -> Iterator[ControlGroup]:
    group = ControlGroup.create()
    try:
        yield group
    finally:
        group.remove()


def start_worker_as_the_unit_does(group: ControlGroup, tmp_path: Path, instance: str) -> subprocess.Popen:
    """ExecStart, WorkingDirectory and Environment of the unit, with the project's
    path for /opt/antelope-ha and this test's server for worker.env."""
    s = unit("antelope-ha-worker@.service")
    here = lambda text: text.replace(INSTALLED, str(PROJECT)).replace("%i", instance)  # noqa: E731
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(dict(here(e).split("=", 1) for e in s["Environment"]))
    env.update(PREFECT_HOME=str(tmp_path / "worker-home"), PREFECT_API_URL=os.environ["PREFECT_API_URL"],
               PREFECT_WORKER_QUERY_SECONDS="1")  # the test's only change: poll every second
    log = (tmp_path / "worker.log").open("ab")
    return subprocess.Popen(shlex.split(here(s["ExecStart"][0])), cwd=here(s["WorkingDirectory"][0]), env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=group.enter)


def deploy_sleeper(tmp_path: Path, pool: str) -> str:
    """A deployment of the sleeper flow in ``pool``; returns the id of a run of it."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:  # as setup creates the data centres' pools
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    source = tmp_path / "flows"
    source.mkdir()
    (source / "sleeper.py").write_text(SLEEPER)
    flow.from_source(source=str(source), entrypoint="sleeper.py:sleeper").deploy(
        name="sleeper", work_pool_name=pool, print_next_steps=False, ignore_warnings=True)
    run = run_deployment("sleeper/sleeper", parameters={"pid_file": str(tmp_path / "flow-run.pid")}, timeout=0)
    return str(run.id)


def flow_run_state(run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.type.value


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_stopping_a_worker_as_its_unit_does_leaves_no_flow_run_process(cgroup: ControlGroup,
                                                                        tmp_path: Path) -> None:
    s = unit("antelope-ha-worker@.service")
    assert s["KillMode"] == ["control-group"] and s["ExecStop"]
    worker = start_worker_as_the_unit_does(cgroup, tmp_path, "systemdtest")
    run_id = deploy_sleeper(tmp_path, "antelope-ha-systemdtest")
    pid_file = tmp_path / "flow-run.pid"
    wait_for("the flow run started by the worker", lambda: pid_file.exists() and pid_file.read_text(), 120, 0.2)
    flow_pid = int(pid_file.read_text())
    assert flow_pid in cgroup.pids() and flow_pid != worker.pid
    assert os.getsid(flow_pid) != os.getsid(worker.pid)  # out of the worker's session: signalling it misses the run
    stop = subprocess.run(shlex.split(s["ExecStop"][0].replace("$$", "$")), timeout=seconds(s["TimeoutStopSec"][0]),
                          env={**os.environ, "MAINPID": str(worker.pid)})
    assert stop.returncode == 0 and not is_running(flow_pid) and worker.poll() is None  # the runs first, alone
    assert flow_run_state(run_id) == "CRASHED"  # and each recorded it: the UI shows no run that is not there
    graceful = cgroup.stop(getattr(signal, s["KillSignal"][0]), seconds(s["TimeoutStopSec"][0]))
    worker.wait(10)
    assert cgroup.pids() == [], "a process outlived the worker's unit"
    print(f"stop: {'every process ended on SIGTERM' if graceful else 'SIGKILL was needed after TimeoutStopSec'}")
