"""Where the files of a simulated pair live, and the pair's settings.

A pair is a directory: ``pair.json`` (addresses, ports, packet interval, seed),
``net/`` (the simulated network, see ``simsite.net``) and one directory per
host: ``ms`` and ``bus`` (each a real-time system directory: its
``rtexec_dir``) and ``witness``. A stand-in program finds its site from its
own path, ``<root>/<site>/bin/<program>``.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

SITES = ("ms", "bus")
WITNESS = "witness"
ORCHESTRATOR = "orchestrator"  # the flows' own host: a source of connections, not a site
SETTINGS_FILE = "pair.json"
SITE_ENV = "SIMSITE_SITE"  # marks every process started on a site with the site's directory


@dataclass(frozen=True)
class SiteSettings:
    name: str
    address: str
    idserver_port: int
    orb_port: int

    @property
    def idserver_address(self) -> str:
        return f"{self.address}:{self.idserver_port}"

    @property
    def orb(self) -> str:
        return f"{self.address}:{self.orb_port}"


@dataclass(frozen=True)
class PairSettings:
    packet_interval_s: float
    seed: int
    sites: dict[str, SiteSettings]
    witness_address: str
    witness_port: int
    orchestrator_address: str

    def addresses(self) -> dict[str, str]:
        """Host name -> address, for every host of the simulated network."""
        return {
            ORCHESTRATOR: self.orchestrator_address,
            **{s.name: s.address for s in self.sites.values()},
            WITNESS: self.witness_address,
        }

    def save(self, root: Path) -> None:
        (root / SETTINGS_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> PairSettings:
        raw = json.loads((root / SETTINGS_FILE).read_text())
        raw["sites"] = {name: SiteSettings(**s) for name, s in raw["sites"].items()}
        return cls(**raw)


@dataclass(frozen=True)
class SitePaths:
    """The files of one site; every path is absolute."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def bin(self) -> Path:
        return self.dir / "bin"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def records(self) -> Path:
        """The programs' own append-only records, for an independent checker: outside
        ``logs/``, which ``rtexec -s`` moves aside at each start."""
        return self.dir / "records"

    def written_log(self, prog: str) -> Path:
        """The writer ``prog``'s own record of every row it wrote (JSON lines)."""
        return self.records / f"{prog}.written"

    @property
    def serving_log(self) -> Path:
        """The ID server's own record of when it served: start, heartbeat, stop."""
        return self.records / "dbids.serving"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def ha(self) -> Path:
        return self.dir / "ha"

    @property
    def db(self) -> Path:
        return self.dir / "db" / "db"

    @property
    def dbids(self) -> Path:
        return self.dir / "dbids" / "dbids"

    @property
    def lastid(self) -> Path:
        return self.dir / "dbids" / "dbids.lastid"

    @property
    def rtexec_pf(self) -> Path:
        return self.dir / "rtexec.pf"

    @property
    def rtexec_pid(self) -> Path:
        return self.logs / "rtexec.pid"

    @property
    def orb(self) -> Path:
        return self.dir / "orb"

    @property
    def packets(self) -> Path:
        return self.orb / "packets"

    @property
    def orbserver_pf(self) -> Path:
        return self.orb / "orbserver.pf"

    @property
    def pub(self) -> Path:
        return self.dir / "pub"

    @property
    def broken(self) -> Path:
        """``broken/<task>`` exists: the task's program is broken, rtexec cannot start it."""
        return self.state / "broken"

    @property
    def hold(self) -> Path:
        """``hold/<prog>`` names a table: the writer stops itself (SIGSTOP) once it has
        appended that table's rows of its next packet, before the others: a packet
        caught half written (see ``SimPair.tear_packet``)."""
        return self.state / "hold"

    @property
    def witnessd_pid(self) -> Path:
        return self.logs / "witnessd.pid"


@dataclass(frozen=True)
class ProgramSite:
    """The site a stand-in program runs on."""

    root: Path
    paths: SitePaths
    settings: PairSettings

    @property
    def name(self) -> str:
        return self.paths.name

    @property
    def address(self) -> str:
        return self.settings.addresses()[self.name]


def this_site() -> ProgramSite:
    """The site of the running stand-in, from its path ``<root>/<site>/bin/<program>``."""
    site_dir = Path(sys.argv[0]).absolute().parent.parent
    root = site_dir.parent
    return ProgramSite(root, SitePaths(site_dir), PairSettings.load(root))
