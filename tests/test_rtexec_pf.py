import pytest

from antelope_ha.rtexec_pf import RtexecPfError, parse_rtexec_pf, set_task_run

PF = """\
# real-time system of the main site
Processes &Tbl{
orbserver   orbserver -p 6510 orbserver   # the ORB
dbids       dbids -p 2498 dbids/dbids
orb2dbt     orb2dbt -S state/orb2dbt :6510 db/db
pub2web     pub2web "quoted arg" x
}

Run     &Arr{
orbserver   yes
dbids       yes     # the ID server
orb2dbt     no
}
Start_period 10
"""


def test_parse_tasks_with_run_flags_and_quoting():
    tasks = {t.name: t for t in parse_rtexec_pf(PF)}
    assert tasks["dbids"].command == ("dbids", "-p", "2498", "dbids/dbids")
    assert tasks["dbids"].run and tasks["orbserver"].run
    assert not tasks["orb2dbt"].run
    assert not tasks["pub2web"].run  # absent from Run means not running
    assert tasks["pub2web"].command == ("pub2web", "quoted arg", "x")
    assert tasks["orbserver"].command == ("orbserver", "-p", "6510", "orbserver")


def test_set_run_rewrites_one_line_only():
    out = set_task_run(PF, "dbids", False)
    changed = [(a, b) for a, b in zip(PF.splitlines(), out.splitlines()) if a != b]
    assert changed == [("dbids       yes     # the ID server", "dbids       no     # the ID server")]
    assert set_task_run(out, "dbids", True) == PF.replace("yes     # the ID", "yes     # the ID")


def test_set_run_adds_missing_task_to_run_block():
    out = set_task_run(PF, "pub2web", True)
    assert {t.name: t.run for t in parse_rtexec_pf(out)}["pub2web"] is True
    assert out.index("pub2web\tyes") < out.index("Start_period")


def test_crlf_is_kept():
    crlf = PF.replace("\n", "\r\n")
    out = set_task_run(crlf, "orb2dbt", True)
    assert "\n" not in out.replace("\r\n", "")
    assert {t.name: t.run for t in parse_rtexec_pf(out)}["orb2dbt"] is True


@pytest.mark.parametrize("text, words", [
    ("Run &Arr{\n}\n", "no Processes block"),
    ("Processes &Tbl{\nx y\n", "never closed"),
    (PF.replace("orb2dbt     no", "orb2dbt     maybe"), "must be yes or no"),
])
def test_malformed_pf_is_refused_naming_the_problem(text, words):
    with pytest.raises(RtexecPfError, match=words):
        parse_rtexec_pf(text, "ms:rtexec.pf")


def test_unknown_task_is_refused():
    with pytest.raises(RtexecPfError, match="not in Processes"):
        set_task_run(PF, "orb2wf", True)


def test_tab_separated_process_lines():
    pf = "Processes &Tbl{\nrtrun\tmatlab -display :0 -r x\n}\nRun &Arr{\nrtrun\tyes\n}\n"
    (task,) = parse_rtexec_pf(pf)
    assert task.name == "rtrun" and task.command == ("matlab", "-display", ":0", "-r", "x") and task.run
