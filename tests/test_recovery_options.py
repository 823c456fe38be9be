"""Recovery's options on the simulated pair: an excerpt on a disk both sites
reach (``excerpt_path``), a window given by hand (BUS's events of it merged
whole, though MS recorded its own), and a window given by half."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from antelope_ha.css30 import TABLES, read_table
from antelope_ha.site import StepFailed
from deployments.cli import take_baselines
from flows.recovery import WindowError, recovery
from tests.simpair import Sim, sim_pair

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with sim_pair(tmp_path_factory.mktemp("recovery-options"), "recovery-options") as sim:
        yield sim


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A directory both simulated sites reach at the same path, as an external disk."""
    path = tmp_path / "disk"
    path.mkdir()
    return path


def origins(sim: Sim, site: str, start: float, end: float) -> set[int]:
    """The orids of the site's origins in start <= time < end."""
    path = sim.pair.paths(site).dir / "db" / "db.origin"
    return {int(r["orid"]) for r in read_table(path, TABLES["origin"]) if start <= float(r["time"]) < end}


def excerpts_on_sites(sim: Sim) -> list[Path]:
    """The excerpt directories in both sites' rtexec_dirs."""
    return sorted(p for site in ("ms", "bus") for p in (sim.pair.paths(site).dir / "recovery").glob("*"))


def test_recovery_through_a_shared_disk_merges_the_window_once(sim, disk):
    start = time.time()
    sim.wait_rows("bus", start + 2)
    end = time.time()
    sim.wait_rows("bus", end + 1)
    sim.wait_rows("ms", end + 1)
    on_bus, on_ms = origins(sim, "bus", start, end), origins(sim, "ms", start, end)
    assert on_bus and not on_bus & on_ms  # each site's writers took their own ids
    excerpts = excerpts_on_sites(sim)

    first = recovery(pair_name=sim.name, start=start, end=end, excerpt_path=str(disk))
    assert first.startswith("merged ")
    [excerpt] = (disk / "recovery").iterdir()  # the window's events, to their last arrival
    assert (excerpt / "db").is_file() and (excerpt / "db.origin").is_file() and (excerpt / "keep.json").is_file()
    assert excerpts_on_sites(sim) == excerpts, "nothing is copied to the sites"
    merged = origins(sim, "ms", start, end)
    assert merged == on_ms | on_bus

    second = recovery(pair_name=sim.name, start=start, end=end, excerpt_path=str(disk))
    assert second.startswith("nothing to merge")
    assert origins(sim, "ms", start, end) == merged


def files_under(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_recovery_over_sftp_copies_every_file_of_the_excerpt(sim):
    start = time.time()
    sim.wait_rows("bus", start + 2)
    end = time.time()
    sim.wait_rows("bus", end + 1)
    sim.wait_rows("ms", end + 1)
    before = set((sim.pair.paths("bus").dir / "recovery").glob("*"))
    assert recovery(pair_name=sim.name, start=start, end=end).startswith("merged ")
    [window] = set((sim.pair.paths("bus").dir / "recovery").glob("*")) - before
    window = window.relative_to(sim.pair.paths("bus").dir)
    on_bus = files_under(sim.pair.paths("bus").dir / window)
    assert "db" in on_bus and "db.origin" in on_bus
    assert files_under(sim.pair.paths("ms").dir / window) == on_bus


@pytest.mark.parametrize("given,missing", [("start", "end"), ("end", "start")])
def test_half_a_window_is_refused_naming_the_missing_bound(sim, disk, given, missing):
    state = sim.state().model_dump_json()
    with pytest.raises(WindowError) as info:
        recovery(pair_name=sim.name, **{given: time.time() - 60}, excerpt_path=str(disk))
    text = str(info.value)
    assert f"{given} is given but {missing} is not" in text and "give both start and end" in text
    assert sim.state().model_dump_json() == state and not any(disk.iterdir())


def test_a_relative_excerpt_path_is_refused(sim):
    state = sim.state().model_dump_json()
    excerpts = excerpts_on_sites(sim)
    with pytest.raises(ValueError, match="excerpt_path 'disk' is relative"):
        recovery(pair_name=sim.name, start=1000.0, end=2000.0, excerpt_path="disk")
    assert sim.state().model_dump_json() == state and excerpts_on_sites(sim) == excerpts


def test_an_id_used_twice_fails_the_verification_until_it_is_in_the_baseline(sim, disk):
    """A wfid on two rows of MS's wfdisc (a row before the window, repeated):
    the rule over the window holds, but the whole-database id scan blocks the
    verification (a recovery that ignored duplicates would pass it). Recorded
    as an old problem by ``antelope-ha baseline``, it is listed, no longer blocks."""
    wfdisc = sim.pair.paths("ms").dir / "db" / "db.wfdisc"
    start = time.time()
    sim.wait_rows("bus", start + 2)
    end = time.time()
    sim.wait_rows("bus", end + 1)
    sim.wait_rows("ms", end + 1)
    with wfdisc.open("ab") as f:
        f.write(wfdisc.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(StepFailed, match=r"verification failed on ms.*MS ids: wfid: .*\[(new since the "
                                         r"baseline|no baseline of old problems)"):
        recovery(pair_name=sim.name, start=start, end=end, excerpt_path=str(disk))
    take_baselines(sim.name, "the repeated wfdisc row is old")
    assert recovery(pair_name=sim.name, start=start, end=end, excerpt_path=str(disk)).startswith("nothing")
