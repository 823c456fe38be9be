"""A dry run plans the commands the real run then takes: on one simulated
pair, for each procedure in its main states, the plan of a dry run is
compared with the commands and file writes the real run made right after it
(recorded as they reach the site: the same Site code, nothing stubbed).

Some steps run concurrently (both sites' markers): the lists are compared
as multisets. Every change the run made must be in its plan; a planned
change the run did not make can only be a writer restart that rtexec had
already done by then."""
from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from antelope_ha.site import Planned, Site
from flows.calling import call_flow
from flows.failover import failover
from flows.fallback import fallback
from flows.recovery import recovery
from flows.replicate import replicate_lastid
from tasks.sites import plans
from rehearsal.drill import answering
from tests.simpair import approve, sim_pair

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture
def made(monkeypatch) -> list[Planned]:
    """Every change a real (not dry) run makes on a site, as the dry run would list it."""
    made: list[Planned] = []
    run, write_bytes = Site.run, Site.write_bytes

    def running(self: Site, command, **kw):
        if not self.dry_run and command.changes:
            made.append(Planned(self.name, str(command), command.purpose))
        return run(self, command, **kw)

    def writing(self: Site, relative: str, data: bytes, purpose: str) -> None:
        if not self.dry_run:
            made.append(Planned(self.name, f"write {self.path(relative)}", purpose))
        return write_bytes(self, relative, data, purpose)

    monkeypatch.setattr(Site, "run", running)
    monkeypatch.setattr(Site, "write_bytes", writing)
    return made


# A file (or a sub-directory) the real run copies into an excerpt directory; the
# plan has one line for them all ("write <dir>/*"), as it runs before the
# extraction wrote them.
EXCERPT_PART = re.compile(r"^(?:write|mkdir -p --) (?P<dir>\S*/recovery/[^/\s]+)/\S+$")


# A writer restart: the plan stops the process it sees; the run stops whichever
# it finds (a writer that cannot reach its ID server exits and rtexec starts
# another): compared by writer, once.
RESTART = re.compile(r"^stop (\S+) \(pid [^)]*\) so rtexec restarts it$")


def commands(steps: list[Planned]) -> list[tuple[str, str, str]]:
    """Each change as (site, command, purpose), numbers masked: the pid a
    restart signals (rtexec may have restarted a writer between the plan and
    the run; the purpose still names the writer), a backup's time stamp, a
    lastid that grew meanwhile. The files of an excerpt copy count as the
    plan's one line for them; the restarts of a writer as one."""
    found = set()
    listed = []
    for p in steps:
        action, purpose = p.action, p.purpose
        if (part := EXCERPT_PART.match(action)) and purpose.startswith(("copy ", "create ")):
            action, purpose = f"write {part['dir']}/*", "copy of the excerpt's files"
        elif restart := RESTART.match(purpose):
            action, purpose = f"restart {restart[1]}", "signal whichever process runs it"
        else:
            listed.append((p.site, re.sub(r"[0-9]+", "N", action), re.sub(r"[0-9]+", "N", purpose)))
            continue
        if (p.site, action) not in found:  # one line for all the files, or all the restarts, of one
            found.add((p.site, action))
            listed.append((p.site, re.sub(r"[0-9]+", "N", action), purpose))
    return sorted(listed)


def plan_then_run(flow, made: list[Planned], **params) -> tuple[list, list]:
    """The dry run's plan, then the real run's changes, of ``flow`` with ``params``."""
    dry = call_flow(flow, dry_run=True, return_state=True, **params)
    assert dry.is_completed(), dry
    planned = plans(str(dry.state_details.flow_run_id))
    made.clear()
    real = call_flow(flow, return_state=True, **params)
    assert real.is_completed(), real
    return commands(planned), commands(made)


def test_each_procedure_runs_the_commands_its_plan_listed(tmp_path, made):
    with sim_pair(tmp_path, "plans") as sim:
        checked: list[str] = []

        def same(what: str, flow, **params) -> list[tuple[str, str, str]]:
            planned, ran = plan_then_run(flow, made, pair_name=sim.name, **params)
            # A writer restart is the one change that depends on timing, both ways. The plan may list
            # one the run skips: rtexec restarted the writer before the run got there (it exits while
            # no ID server answers). The run may make one the plan skipped: a writer's start is judged
            # from the site's clock and its age read by two commands, so the estimate errs early by the
            # time between them (antelope_ha/commands.parse_process_start: a needless restart is safe,
            # a missed one is not), and on a loaded machine a writer started just after the change
            # can be judged older by the run than by its plan.
            unplanned = Counter(ran) - Counter(planned)
            assert all(action.startswith("restart ") for _, action, _ in unplanned), \
                f"{what}: the run made changes its plan did not list: {unplanned}"
            skipped = Counter(planned) - Counter(ran)
            assert all(action.startswith("restart ") for _, action, _ in skipped), \
                f"{what}: planned, not done: {skipped}"
            checked.append(f"{what}: {len(planned)} changes planned, {len(ran)} made")
            return planned

        same("replicate, MS authoritative", replicate_lastid)
        same("replicate again, nothing new", replicate_lastid)
        planned = same("failover by hand, MS up", failover, reason="plan test: switchover")
        restarts = [action for site, action, _ in planned if site == "bus" and action.startswith("restart ")]
        assert len(restarts) == len(sim.cfg.backup.writer_tasks), planned  # the BUS writer restarts are planned
        same("failover again, already done", failover, reason="plan test: rerun")
        with answering("fallback", lambda n: approve()):
            same("fallback, MS up", fallback)
        end = time.time() - 1
        same("recovery of a window with rows", recovery, start=end - 2, end=end)
        same("replicate, MS authoritative again", replicate_lastid)
        sim.pair.power_off("ms")
        same("failover, MS powered off", failover, reason="plan test: MS down")
        print("\n".join(checked))

