"""Bad input: each gives an error naming the input (and the fix, where there
is one), and changes nothing on either site or on the pair's record.

The pair here has rows in its database but no process running, so every
byte of both site trees stays still unless a flow changes it: the tests
compare the whole trees (rtexec.pf, db/db, dbids.lastid, ha/, the tables)
and the state record before and after.
"""
from __future__ import annotations

import shlex
import time
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from antelope_ha import commands as C
from antelope_ha.config import PairConfig, SiteConfig, UnknownSite
from antelope_ha.descriptor import DescriptorError
from antelope_ha.runner import CommandFailed
from antelope_ha.site import Site
from antelope_ha.state import HAState, Replica
from blocks.pair import AntelopePair
from flows.calling import call_flow
from flows.failover import failover
from flows.fallback import fallback
from flows.health import health
from flows.recovery import WindowError, recovery
from flows.replicate import replicate_lastid
from simsite.pair import SimError, SimPair
from tasks.sites import close_all, runner_for
from tasks.state import load_state, save_state
from tests.simpair import sim_pair

PAIR = "badinput"
SITES = ("ms", "bus")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, prefect_server) -> Iterator[SimPair]:
    """A pair that ran long enough to hold rows, then stopped: nothing moves by itself."""
    sim = SimPair.create(tmp_path_factory.mktemp("badinput") / "pair")
    sim.start()
    try:
        SimPair.wait_for(lambda: all((sim.paths(s).dir / "db" / "db.origin").exists() for s in SITES), 30,
                         "rows at both sites")
    finally:
        sim.stop()
    cfg = sim.pair_config()
    AntelopePair(main=cfg.main.model_dump(), backup=cfg.backup.model_dump(), witness=cfg.witness,
                 policy=cfg.policy).save(PAIR, overwrite=True)
    yield sim
    close_all()


@pytest.fixture
def record(pair: SimPair) -> HAState:
    """A fresh record, and a fresh replica of MS's lastid on BUS (``ha/replica``,
    as the watcher writes it), so a failover gets as far as reading its inputs."""
    replica = pair.paths("bus").dir / pair.pair_config().backup.ha_dir / "replica"
    replica.parent.mkdir(parents=True, exist_ok=True)
    replica.write_text(Replica(taken_at=time.time(), values={"orid": 1}).model_dump_json())
    state = HAState.initial("ms")
    save_state(PAIR, state)
    return state


def tree(pair: SimPair) -> dict[str, bytes]:
    """Every file of both sites, by path, with its bytes (logs included)."""
    return {str(p.relative_to(pair.root)): p.read_bytes()
            for site in SITES for p in sorted(pair.paths(site).dir.rglob("*")) if p.is_file()}


@contextmanager
def unchanged(pair: SimPair) -> Iterator[None]:
    """Assert that both site trees and the pair's record are byte for byte the same after the block."""
    before, state = tree(pair), load_state(PAIR).model_dump_json()
    yield
    after = tree(pair)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"changed on the sites: {changed}"
    assert load_state(PAIR).model_dump_json() == state, "the pair's record changed"


@contextmanager
def replaced(path: Path, text: str) -> Iterator[None]:
    """The file holds ``text`` for the block, then its own bytes again."""
    original = path.read_bytes()
    path.write_text(text)
    try:
        yield
    finally:
        path.write_bytes(original)


@contextmanager
def removed(path: Path) -> Iterator[None]:
    """The file is gone for the block, then holds its own bytes again."""
    original = path.read_bytes()
    path.unlink()
    try:
        yield
    finally:
        path.write_bytes(original)


def lastid_path(pair: SimPair, site: str) -> Path:
    return pair.paths(site).dir / "dbids" / "dbids.lastid"


BAD_LASTID: dict[str, tuple[Callable[[str], str], str]] = {
    "truncated": (lambda text: text[:-7], "ends without a newline"),
    "keyvalue not a number": (lambda text: text.replace(text.split()[1].rjust(8), "   12x45", 1),
                              "line 1"),
    "keyname twice": (lambda text: text + text.splitlines(keepends=True)[0], "one row per key"),
    "empty line": (lambda text: "\n" + text, "line 1"),
}


@pytest.mark.parametrize("damage", BAD_LASTID)
def test_failover_refuses_a_bad_lastid_on_bus_and_changes_nothing(pair, record, damage):
    path = lastid_path(pair, "bus")
    edit, says = BAD_LASTID[damage]
    with replaced(path, edit(path.read_text())), unchanged(pair):
        with pytest.raises(ValueError) as info:
            failover(pair_name=PAIR, reason="bad input test")
    assert f"bus:{path}" in str(info.value) and says in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "keyvalue not a number"])
def test_replication_refuses_a_bad_lastid_on_ms_and_changes_nothing(pair, record, damage):
    path = lastid_path(pair, "ms")
    edit, says = BAD_LASTID[damage]
    with replaced(path, edit(path.read_text())), unchanged(pair):
        with pytest.raises(ValueError) as info:
            replicate_lastid(pair_name=PAIR)
    assert f"ms:{path}" in str(info.value) and says in str(info.value)


def test_failover_names_a_missing_descriptor_on_bus_and_changes_nothing(pair, record):
    path = pair.paths("bus").dir / "db" / "db"
    with removed(path), unchanged(pair):
        with pytest.raises(DescriptorError) as info:
            failover(pair_name=PAIR, reason="bad input test")
    text = str(info.value)
    assert f"bus:{path}" in text and "correct the site's db setting" in text and "create the descriptor" in text


def test_a_descriptor_byte_that_is_not_utf8_is_kept_byte_for_byte(pair):
    cfg = pair.site_config("bus")
    path = Path(cfg.path(cfg.db))
    original = path.read_bytes()
    before = b"# Datascope descriptor of Br\xfcck (latin-1)\n" + original
    site = Site(cfg, runner_for(cfg))
    try:
        path.write_bytes(before)
        current = site.dbidserver()
        assert current and before.count(current.encode()) == 1
        assert site.ensure_dbidserver("127.0.0.9:2498").changed
        assert path.read_bytes() == before.replace(current.encode(), b"127.0.0.9:2498")
        backups = sorted(path.parent.glob("db-*.bak"))
        assert len(backups) == 1 and backups[0].read_bytes() == before
    finally:
        path.write_bytes(original)
        for backup in path.parent.glob("db-*.bak"):
            backup.unlink()


BAD_ROWS: dict[str, Callable[[str], str]] = {
    "truncated last row": lambda text: text[:-20],
    "row too short": lambda text: text + text.splitlines()[0][:100] + "\n",
    "orid not a number": lambda text: text + text.splitlines()[0][:50] + "x" + text.splitlines()[0][51:] + "\n",
}


@pytest.mark.parametrize("damage", BAD_ROWS)
def test_failover_refuses_bad_css30_rows_on_bus_and_changes_nothing(pair, record, damage):
    path = pair.paths("bus").dir / "db" / "db.origin"
    with replaced(path, BAD_ROWS[damage](path.read_text())), unchanged(pair):
        with pytest.raises(CommandFailed) as info:
            failover(pair_name=PAIR, reason="bad input test")
    text = str(info.value)
    assert f"on {pair.settings.sites['bus'].address}: `" in text and "antelope-ha-site.pyz ids" in text
    assert "db/db.origin, line " in text  # the scan's own output names the table and the line


@pytest.mark.parametrize("start,end", [(2000.0, 1000.0), (1500.0, 1500.0)])
def test_recovery_refuses_a_reversed_or_empty_window_and_changes_nothing(pair, record, start, end):
    with unchanged(pair), pytest.raises(WindowError, match="empty or reversed") as info:
        recovery(pair_name=PAIR, start=start, end=end)
    assert C.fmt_time(start) in str(info.value) and C.fmt_time(end) in str(info.value)


def test_recovery_without_a_failover_on_record_asks_for_a_window(pair, record):
    with unchanged(pair), pytest.raises(WindowError, match="no failover to bus on record: give start and end"):
        recovery(pair_name=PAIR)


@pytest.mark.parametrize("flow", [failover, fallback, recovery, health, replicate_lastid])
def test_unknown_pair_is_named_and_nothing_changes(pair, record, flow):
    with unchanged(pair), pytest.raises(ValueError, match="no Antelope Pair block named 'no-such-pair'"):
        call_flow(flow, pair_name="no-such-pair")


def test_unknown_site_names(pair):
    with pytest.raises(UnknownSite, match="unknown site 'xyz': this pair has ms, bus"):
        pair.pair_config().site("xyz")
    with pytest.raises(SimError, match="unknown site 'xyz'"):
        pair.site_config("xyz")
    with pytest.raises(SimError, match="unknown host 'xyz'"):
        pair.power_off("xyz")


def site_fields(pair: SimPair, **changes: object) -> dict:
    return {**pair.site_config("bus").model_dump(), **changes}


BAD_SITE_VALUES = {
    "idserver_address without a port": ({"idserver_address": "127.0.0.3"}, "idserver_address must be host:port"),
    "idserver_address port 0": ({"idserver_address": "127.0.0.3:0"}, "port in 1..65535, got '127.0.0.3:0'"),
    "idserver_address port too big": ({"idserver_address": "h:70000"}, "got 'h:70000'"),
    "site name with a capital": ({"name": "BUS"}, "site name must match"),
    "task name with a space": ({"writer_tasks": ["orb2dbt; rm"]}, "rtexec task name must match"),
    "ssh without settings": ({"transport": "ssh", "ssh": None}, "transport is ssh but no ssh settings"),
}


@pytest.mark.parametrize("case", BAD_SITE_VALUES)
def test_invalid_block_values_are_refused_naming_the_field(pair, case):
    changes, says = BAD_SITE_VALUES[case]
    cfg = pair.pair_config()
    with pytest.raises(ValidationError) as info:
        AntelopePair(main=cfg.main.model_dump(), backup=site_fields(pair, **changes), witness=cfg.witness,
                     policy=cfg.policy)
    assert says in str(info.value)


def test_unknown_field_of_a_site_is_refused(pair):
    with pytest.raises(ValidationError, match="hostname"):
        SiteConfig(**site_fields(pair, hostname="x"))


def test_unknown_field_of_a_site_block_is_refused(pair):
    cfg = pair.pair_config()
    with pytest.raises(ValidationError, match="writer_task"):
        AntelopePair(main=cfg.main.model_dump(), backup=site_fields(pair, writer_task=["orb2dbt"]),
                     witness=cfg.witness, policy=cfg.policy)


def test_the_same_site_twice_is_refused(pair):
    cfg = pair.pair_config()
    with pytest.raises(ValidationError, match="main.name and backup.name are both 'ms'"):
        PairConfig(main=cfg.main, backup=cfg.main, witness=cfg.witness)


@pytest.mark.slow
def test_failover_refuses_an_old_two_line_descriptor_before_acting(tmp_path, prefect_server):
    with sim_pair(tmp_path, "twolinedesc") as sim:
        replicate_lastid(pair_name=sim.name)
        db = sim.pair.paths("bus").dir / "db" / "db"
        db.write_text("css3.0\n./{db}\n")
        watched = ("rtexec.pf", "ha/authority", "ha/armed", "db/db")
        before = sim.snapshot(*watched)
        with pytest.raises(ValueError, match=f"bus:{db}: an old two-line descriptor .* rewrite it in the keyword form"):
            failover(pair_name=sim.name, reason="bad input test")
        assert sim.snapshot(*watched) == before and sim.state().authority.site == "ms"


# Every builder that takes a value from configuration or an operator: whatever
# the value, the shlex-joined line run by sh -c gives the program exactly
# these arguments (printf stands in for the program and prints each one).
ARG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
BUILDERS: dict[str, Callable[[str], C.Command]] = {
    "extract_window": lambda v: C.extract_window(v, v + "/out", 1.0, 2.0),
    "merge_window": lambda v: C.merge_window(v, "db/db", 1.0, 2.0),
    "scan_ids": lambda v: C.scan_ids(C.site_tool(v, v), v, v),
    "recovery_bounds": lambda v: C.recovery_bounds(C.site_tool("python3", "ha/antelope-ha-site.pyz"), v, 1.0, 2.0),
    "inventory": lambda v: C.inventory(C.site_tool("python3", "ha/antelope-ha-site.pyz"), v, 1.0, 2.0,
                                       {"orid": (1, 2)}),
    "narrow_excerpt": lambda v: C.narrow_excerpt(C.site_tool("python3", "ha/antelope-ha-site.pyz"), v,
                                                 v + "/keep.json"),
    "remove_tree": C.remove_tree,
    "make_dirs": C.make_dirs,
    "probe_idserver": C.probe_idserver,
    "ping": lambda v: C.ping(v, 1.0),
    "orb_sources": C.orb_sources,
    "cmd": lambda v: C.cmd("any purpose", "true", v, changes=True),
}


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(BUILDERS)), value=ARG)
def test_command_builders_cannot_inject_shell(name, value):
    argv = BUILDERS[name](value).argv
    line = shlex.join(["printf", r"%s\0", *argv])
    out = subprocess.run(["sh", "-c", line], capture_output=True, check=True).stdout
    assert out.decode("utf-8", "surrogateescape").split("\0")[:-1] == list(argv)
