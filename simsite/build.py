"""Lay out the directory tree of a simulated pair (see ``simsite.layout``)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from antelope_ha.css30 import atomic_write
from antelope_ha.lastid import format_lastid
from antelope_ha.sitetool import FILE_NAME as SITE_TOOL_FILE
from antelope_ha.sitetool import build as build_site_tool
from simsite.layout import SITES, WITNESS, PairSettings, SitePaths, SiteSettings
from simsite.net import Network

SITE_PROGRAMS = (
    "rtexec", "dbids", "idserver_connect", "ping", "orbserver", "orbstat",
    "orb2dbt", "orb2wf", "trexcerpt", "pub2web",
)
WITNESS_PROGRAMS = ("witnessd",)
WRITER_TASKS = ("orb2dbt", "orb2wf")
INFOSYS_TASKS = ("pub2web",)
IDSERVER_TASK = "dbids"
ID_KEYS = ("arid", "evid", "orid", "wfid")
DB_TABLES = ("event", "origin", "arrival", "assoc", "wfdisc")  # what the writers fill
SRCNAMES = ("XX_STA1/MGENC/M40", "XX_STA2/MGENC/M40", "XX_STA3/MGENC/M40")
SAMPRATE = 40.0
START_PERIOD_S = 1
TIME_TO_DIE_S = 3


def build_pair(root: Path, settings: PairSettings) -> None:
    root.mkdir(parents=True, exist_ok=True)
    settings.save(root)
    Network.create(root / "net", settings.addresses())
    main = settings.sites[SITES[0]]
    for name, site in settings.sites.items():
        build_site(SitePaths(root / name), site, settings.packet_interval_s,
                   dbidserver=main.idserver_address, authoritative=name == main.name)
        # the site tool where setup puts it on real hosts (SiteConfig.site_tool's default)
        build_site_tool(SitePaths(root / name).ha / SITE_TOOL_FILE)
    witness = SitePaths(root / WITNESS)
    for d in (witness.bin, witness.logs):
        d.mkdir(parents=True, exist_ok=True)
    for program in WITNESS_PROGRAMS:
        write_program(witness.bin / program)


def build_site(paths: SitePaths, site: SiteSettings, packet_interval_s: float, *,
               dbidserver: str, authoritative: bool) -> None:
    """One site; ``authoritative``: it runs the ID server and the information systems."""
    for d in (paths.bin, paths.logs, paths.state, paths.ha, paths.db.parent, paths.dbids.parent,
              paths.orb, paths.pub):
        d.mkdir(parents=True, exist_ok=True)
    for program in SITE_PROGRAMS:
        write_program(paths.bin / program)
    paths.db.write_text(descriptor_text(paths.db, dbidserver))
    paths.dbids.write_text(descriptor_text(paths.dbids, None))
    atomic_write(paths.lastid, format_lastid({k: 0 for k in ID_KEYS}, time.time()).encode())
    paths.orbserver_pf.write_text(
        "# simulated orbserver: one packet every packet_interval seconds, srcnames in turn\n"
        f"packet_interval {packet_interval_s:g}\nsamprate {SAMPRATE:g}\nsrcnames {' '.join(SRCNAMES)}\n"
    )
    run = {"orbserver": True, IDSERVER_TASK: authoritative, **{t: True for t in WRITER_TASKS},
           **{t: authoritative for t in INFOSYS_TASKS}}
    paths.rtexec_pf.write_text(rtexec_pf_text(paths, site, run))


def descriptor_text(db: Path, dbidserver: str | None) -> str:
    """A Datascope descriptor as written by antelope_contrib scripts (docs/antelope-facts.md)."""
    return (
        "# Datascope Database Descriptor file\n\n"
        "schema css3.0\n"
        f"dbpath {db.parent}/{{{db.name}}}\n"
        + (f"dbidserver {dbidserver}\n" if dbidserver else "")
    )


def task_commands(paths: SitePaths, site: SiteSettings) -> dict[str, str]:
    """Task name -> command line. Per-site files are absolute, so that ``ps``
    tells the two sites apart when they share a machine."""
    return {
        "orbserver": f"orbserver -p {site.orb_port} {paths.orbserver_pf}",
        IDSERVER_TASK: f"dbids -p {site.idserver_port} -a {site.address} {paths.dbids}",
        **{t: f"{t} -S {paths.state / t} {site.orb} {paths.db}" for t in WRITER_TASKS},
        **{t: f"{t} -o {paths.pub}" for t in INFOSYS_TASKS},
    }


def rtexec_pf_text(paths: SitePaths, site: SiteSettings, run: dict[str, bool]) -> str:
    commands = task_commands(paths, site)
    width = max(map(len, commands)) + 2
    return (
        f"# rtexec.pf of the simulated site {site.name}\n"
        "Processes &Tbl{\n"
        + "".join(f"{name:<{width}}{line}\n" for name, line in commands.items())
        + "}\n\nRun &Arr{\n"
        + "".join(f"{name:<{width}}{'yes' if run[name] else 'no'}\n" for name in commands)
        + "}\n\n"
        f"Start_period    {START_PERIOD_S}\n"
        f"Time_to_die     {TIME_TO_DIE_S}\n"
    )


def write_program(path: Path) -> None:
    """A stand-in executable: runs ``simsite.programs.<name>`` with this interpreter."""
    module = path.name
    path.write_text(
        f"#!{sys.executable}\n"
        f'"""{module} on a simulated Antelope site: see simsite.programs.{module}."""\n'
        "import sys\n\n"
        f"from simsite.programs.{module} import main\n\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    path.chmod(0o755)
