"""A simulated Antelope pair (MS, BUS) and its witness, with fault injection.

    with SimPair.create(tmp_path / "pair") as pair:   # creates, then starts
        pair.power_off("ms")
        ...

See ``simsite.layout`` for the tree, ``simsite.net`` for how network faults
are simulated, ``simsite.programs`` for the stand-in programs.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from antelope_ha import commands
from antelope_ha.config import PairConfig, PairPolicy, SiteConfig, SSHSettings, WitnessConfig
from antelope_ha.lastid import read_lastid
from antelope_ha.rtexec_pf import parse_rtexec_pf
from antelope_ha.runner import LocalRunner
from simsite import procs
from simsite.build import IDSERVER_TASK, INFOSYS_TASKS, WRITER_TASKS, build_pair
from simsite.layout import (
    ORCHESTRATOR, SETTINGS_FILE, SITE_ENV, SITES, WITNESS, PairSettings, SitePaths, SiteSettings,
)
from simsite.net import Network
from simsite.ports import listen_ports
from simsite.runner import SimRunner
from simsite.sshd import SshdHandle, start_sshd

HOSTS = (*SITES, WITNESS)


class SimError(RuntimeError):
    """A simulation request that cannot be carried out."""


class SimPair:
    def __init__(self, root: Path):
        self.root = root
        self.settings = PairSettings.load(root)
        self.net = Network(root / "net")
        # A site served over SSH by any process (``serve_ssh``, ``python -m simsite serve``) is
        # served here too: its sshd is found from its directory.
        self._sshd: dict[str, SshdHandle] = {
            name: SshdHandle.attach(self._sshd_dir(name)) for name in SITES
            if (self._sshd_dir(name) / "handle.json").exists()}
        self._sshd_owned: set[str] = set()  # sites whose sshd ends with this process

    # --- creating and opening ----------------------------------------------------
    @classmethod
    def create(cls, root: Path, *, packet_interval_s: float = 0.2, seed: int = 1,
               base_address: str = "127.0.0.2") -> SimPair:
        """Lay out a new pair under ``root``: ms, bus and the witness on three
        consecutive loopback addresses from ``base_address``, on free ports."""
        root = Path(root).resolve()
        if (root / SETTINGS_FILE).exists():
            raise SimError(f"{root} already holds a simulated pair; use SimPair.open")
        base = ipaddress.IPv4Address(base_address)
        ms, bus, witness = (str(base + i) for i in range(3))
        ports = listen_ports([ms, ms, bus, bus, witness])
        settings = PairSettings(
            packet_interval_s=packet_interval_s,
            seed=seed,
            sites={
                "ms": SiteSettings("ms", ms, idserver_port=ports[0], orb_port=ports[1]),
                "bus": SiteSettings("bus", bus, idserver_port=ports[2], orb_port=ports[3]),
            },
            witness_address=witness,
            witness_port=ports[4],
            orchestrator_address="127.0.0.1",
        )
        build_pair(root, settings)
        return cls(root)

    @classmethod
    @contextmanager
    def running(cls, root: Path, **layout: Any) -> Iterator[SimPair]:
        """A new pair under ``root`` (``layout`` as for ``create``), each site
        behind its own sshd, started; stopped when the block ends, however it ends."""
        pair = cls.create(root, **layout)
        try:
            pair.serve_ssh()
            pair.start()
            yield pair
        finally:
            pair.stop()

    @classmethod
    def open(cls, root: Path) -> SimPair:
        root = Path(root).resolve()
        if not (root / SETTINGS_FILE).exists():
            raise SimError(f"{root} holds no simulated pair (no {SETTINGS_FILE})")
        return cls(root)

    def paths(self, host: str) -> SitePaths:
        if host not in HOSTS:
            raise SimError(f"unknown host {host!r}: this pair has {', '.join(HOSTS)}")
        return SitePaths(self.root / host)

    # --- what the flows see -----------------------------------------------------
    def site_config(self, name: str) -> SiteConfig:
        """How the flows reach the site: over SSH once ``serve_ssh`` has run
        (power and orchestrator links then act on the site's sshd), else local."""
        if name not in SITES:
            raise SimError(f"unknown site {name!r}: this pair has {', '.join(SITES)}")
        site, paths = self.settings.sites[name], self.paths(name)
        sshd = self._sshd.get(name)
        access: dict = {"transport": "local"}
        if sshd is not None:
            access = {"transport": "ssh", "ssh": SSHSettings(
                port=sshd.port, username=sshd.username, known_hosts=str(sshd.known_hosts_path),
                key_filename=str(sshd.client_key_path), connect_timeout_s=2.0, command_timeout_s=60.0)}
        return SiteConfig(
            name=name, host=site.address, antelope=str(paths.dir),
            path_prepend=[str(paths.bin)], rtexec_dir=str(paths.dir),
            idserver_task=IDSERVER_TASK, idserver_address=site.idserver_address,
            writer_tasks=list(WRITER_TASKS), infosys_tasks=list(INFOSYS_TASKS), orb=site.orb,
            python=sys.executable, **access,
        )

    def serve_ssh(self, *, stop_at_exit: bool = True) -> None:
        """A real sshd on each powered-on site's own address: the flows log in as
        on real hosts. Powering a site off stops its sshd; cutting the
        orchestrator's link to it freezes its sshd (connections hang, as over a
        dead link). Without ``stop_at_exit`` the sshds outlive this process."""
        client_key = None
        for name in SITES:
            if name not in self._sshd:
                self._sshd[name] = start_sshd(
                    self._sshd_dir(name), host=self.settings.sites[name].address,
                    home=self.paths(name).dir, client_key_path=client_key, stop_at_exit=stop_at_exit)
                if not self.net.is_on(name):
                    self._sshd[name].stop()
            if self.net.is_on(name):
                self._sshd[name].start(stop_at_exit=stop_at_exit)
            if stop_at_exit:
                self._sshd_owned.add(name)
            client_key = self._sshd[name].client_key_path

    def _sshd_dir(self, name: str) -> Path:
        return self.root / "ssh" / name

    def sshd(self, name: str) -> SshdHandle | None:
        """The site's sshd, if the pair is served over SSH."""
        return self._sshd.get(name)

    def sshd_log(self, site: str) -> str:
        """The site's sshd log (LogLevel VERBOSE: a line per login and per command session)."""
        return self._sshd[site].log_text() if site in self._sshd else ""

    def pair_config(self, policy: PairPolicy | None = None) -> PairConfig:
        return PairConfig(
            main=self.site_config("ms"), backup=self.site_config("bus"),
            witness=WitnessConfig(host=self.settings.witness_address),
            policy=policy or PairPolicy(),
        )

    def env(self, host: str) -> dict[str, str]:
        paths = self.paths(host)
        return {
            "PATH": f"{paths.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANTELOPE": str(paths.dir),
            SITE_ENV: str(paths.dir),
        }

    def runner(self, name: str) -> SimRunner:
        """The flows' access to a site: fails while it is off or cut from the orchestrator."""
        return SimRunner(host=self.settings.addresses()[name], cwd=str(self.paths(name).dir),
                         env=self.env(name), net=self.net, site=name)

    def console(self, host: str) -> LocalRunner:
        """The host's own console (boot scripts, an operator at the machine): no network."""
        return LocalRunner(host=host, cwd=str(self.paths(host).dir), env=self.env(host))

    # --- lifecycle --------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> None:
        """Start rtexec on each powered-on site and the witness responder; wait
        until every task set to run is running."""
        for site in SITES:
            if self.net.is_on(site) and self.rtexec_pid(site) is None:
                self._start_rtexec(site)
        if self.net.is_on(WITNESS):
            self._start_witness()
        self.wait_for(self._all_tasks_up, timeout_s, "every task set to run is running")

    def stop(self, order: tuple[str, ...] = SITES) -> None:
        """Stop everything of the pair (rtexec -k on each site in ``order``, the
        witness) and kill any process left."""
        for site in order:
            if self.rtexec_pid(site) is not None:
                self.console(site).run(commands.stop_rtexec().argv, timeout_s=30)
        for host in HOSTS:
            procs.terminate(procs.site_pids(self.paths(host).dir), grace_s=2.0)
        for sshd in self._sshd.values():
            sshd.stop()

    def __enter__(self) -> SimPair:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _start_rtexec(self, site: str) -> None:
        self.console(site).run(commands.start_rtexec().argv, timeout_s=30).check()

    def _start_witness(self) -> None:
        paths = self.paths(WITNESS)
        pid = procs.read_pid(paths.witnessd_pid)
        if pid is None or not procs.is_running(pid):
            argv = [str(paths.bin / "witnessd"), "-p", str(self.settings.witness_port)]
            self.console(WITNESS).run(argv, timeout_s=30).check()

    # --- looking at a site --------------------------------------------------------
    def rtexec_pid(self, site: str) -> int | None:
        return procs.rtexec_pid(self.paths(site))

    def task_pids(self, site: str, task: str) -> list[int]:
        """Pids of the task's command line of rtexec.pf, found with ps as the flows do."""
        command = self.task_command(site, task)
        ps = LocalRunner().run(commands.list_processes().argv).check()
        return commands.task_pids(commands.parse_ps(ps.stdout), command)

    def task_command(self, site: str, task: str) -> tuple[str, ...]:
        pf = self.paths(site).rtexec_pf
        for t in parse_rtexec_pf(pf.read_text(), str(pf)):
            if t.name == task:
                return t.command
        raise SimError(f"no task {task!r} in {pf}")

    def lastid(self, site: str) -> dict[str, int]:
        return read_lastid(self.paths(site).lastid)

    def _all_tasks_up(self) -> bool:
        ps = commands.parse_ps(LocalRunner().run(commands.list_processes().argv).check().stdout)
        for site in SITES:
            if self.rtexec_pid(site) is None:
                continue
            paths = self.paths(site)
            for t in parse_rtexec_pf(paths.rtexec_pf.read_text()):
                if t.run and not (paths.broken / t.name).exists() and not commands.task_pids(ps, t.command):
                    return False
        return True

    @staticmethod
    def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise SimError(f"timed out after {timeout_s:g} s waiting until {what}")
            time.sleep(0.1)

    # --- faults -----------------------------------------------------------------
    def crash(self, site: str, task: str, *, restart: bool = True) -> list[int]:
        """SIGKILL the task's processes. rtexec restarts it after Start_period,
        unless ``restart`` is False: then the task is also marked broken
        (``state/broken/<task>``), like a program that can no longer start,
        and rtexec leaves it down until ``repair``."""
        pids = self.task_pids(site, task)
        if not pids:
            raise SimError(f"{task} is not running on {site}: nothing to crash")
        if not restart:
            broken = self.paths(site).broken
            broken.mkdir(exist_ok=True)
            (broken / task).write_text(f"crashed for good at {time.time():.3f}\n")
        procs.send(pids, signal.SIGKILL)
        return pids

    def repair(self, site: str, task: str) -> None:
        """Undo ``crash(..., restart=False)``: rtexec starts the task again if set to run."""
        (self.paths(site).broken / task).unlink(missing_ok=True)

    def power_off(self, host: str) -> None:
        """Cut the power: SIGKILL rtexec and every process of the host; it stays
        unreachable (runner, ping, connections) until ``power_on``."""
        paths = self.paths(host)
        if host in self._sshd:  # first: a login that still works would make the host look alive
            self._sshd[host].stop()
        self.net.set_power(host, False)
        first = [pid] if host in SITES and (pid := self.rtexec_pid(host)) else []
        procs.kill_site(paths.dir, first=first)

    def power_on(self, host: str, *, start_rtexec: bool = True) -> None:
        """Power on and boot: the host is reachable again; rtexec starts (it is in
        the boot scripts) unless ``start_rtexec`` is False. The witness always
        starts its responder."""
        self.net.set_power(self.paths(host).name, True)
        if host in self._sshd:
            self._sshd[host].start(stop_at_exit=host in self._sshd_owned)
        if host == WITNESS:
            self._start_witness()
        elif start_rtexec and self.rtexec_pid(host) is None:
            self._start_rtexec(host)

    def cut_link(self, src: str, dst: str) -> None:
        """``src`` can no longer open connections to ``dst`` (one way)."""
        self.net.set_cut(self._host(src), self._host(dst), True)
        if src == ORCHESTRATOR and dst in self._sshd:
            self._sshd[dst].pause()

    def heal_link(self, src: str, dst: str) -> None:
        self.net.set_cut(self._host(src), self._host(dst), False)
        if src == ORCHESTRATOR and dst in self._sshd:
            self._sshd[dst].resume()

    def isolate(self, host: str) -> None:
        """Cut every link to and from ``host`` (the orchestrator and the witness included)."""
        for other in self._others(host):
            self.cut_link(host, other)
            self.cut_link(other, host)

    def rejoin(self, host: str) -> None:
        """Heal every link to and from ``host``."""
        for other in self._others(host):
            self.heal_link(host, other)
            self.heal_link(other, host)

    def tear_packet(self, site: str, prog: str, after_table: str, timeout_s: float = 10.0) -> list[int]:
        """Catch ``prog`` of ``site`` with a packet half written: it stops itself
        (SIGSTOP) once it has appended ``after_table``'s rows of its next packet.
        Returns its pids, stopped, for a crash or a power-off to finish the tear."""
        hold = self.paths(site).hold
        hold.mkdir(parents=True, exist_ok=True)
        (hold / prog).write_text(f"{after_table}\n")
        self.wait_for(lambda: not (hold / prog).exists() and all(
            procs.is_stopped(p) for p in self.task_pids(site, prog)), timeout_s,
            f"{prog} on {site} holds a packet after its {after_table} rows")
        return self.task_pids(site, prog)

    def stall_orb(self, site: str) -> None:
        """SIGSTOP the orbserver: no new packets, latency grows, nothing dies."""
        procs.send(self._orbserver(site), signal.SIGSTOP)

    def unstall_orb(self, site: str) -> None:
        procs.send(self._orbserver(site), signal.SIGCONT)

    def _orbserver(self, site: str) -> list[int]:
        pids = self.task_pids(site, "orbserver")
        if not pids:
            raise SimError(f"orbserver is not running on {site}")
        return pids

    def _host(self, name: str) -> str:
        if name not in (*HOSTS, ORCHESTRATOR):
            raise SimError(f"unknown host {name!r}: use one of {', '.join((*HOSTS, ORCHESTRATOR))}")
        return name

    def _others(self, host: str) -> list[str]:
        return [h for h in (*HOSTS, ORCHESTRATOR) if h != self._host(host)]
