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
    (PF.replace("orb2dbt     no", "orb2dbt     maybe"), "must be a boolean .*got 'maybe'"),
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


@pytest.mark.parametrize("word, run", [
    *((w, True) for w in ("yes", "y", "on", "true", "t", "ok", "1", "YES", "On", "True", "T", "OK")),
    *((w, False) for w in ("no", "n", "off", "false", "f", "0", "NO", "Off", "False", "F")),
])
def test_run_values_are_read_as_rtexec_reads_booleans(word, run):
    (task,) = parse_rtexec_pf(f"Processes &Tbl{{\ndbids dbids -p 2498 dbids\n}}\nRun &Arr{{\ndbids {word}\n}}\n")
    assert task.run is run


# What rtkill(1) leaves: it rewrites a Run value to 1 or 0 (antelope_contrib nobuild/bin/rt/rtkill/rtkill.xpl).
RTKILLED = PF.replace("orbserver   yes", "orbserver   1").replace("dbids       yes", "dbids       0") \
    .replace("orb2dbt     no", "orb2dbt     0")


def test_a_file_edited_by_rtkill_keeps_its_style():
    assert {t.name: t.run for t in parse_rtexec_pf(RTKILLED)} == {
        "orbserver": True, "dbids": False, "orb2dbt": False, "pub2web": False}
    out = set_task_run(RTKILLED, "dbids", True)
    assert out == RTKILLED.replace("dbids       0     # the ID server", "dbids       1     # the ID server")
    added = set_task_run(RTKILLED, "pub2web", True)
    assert "pub2web\t1\n}" in added  # a new line in the style of the block


@pytest.mark.parametrize("old, run, new", [
    ("On", False, "Off"), ("TRUE", False, "FALSE"), ("t", False, "f"), ("y", False, "n"), ("ok", False, "no"),
    ("no", True, "yes"), ("0", True, "1"), ("off", True, "on"),
])
def test_a_run_line_is_rewritten_in_its_own_style(old, run, new):
    pf = PF.replace("orb2dbt     no", f"orb2dbt     {old}")
    assert set_task_run(pf, "orb2dbt", run) == PF.replace("orb2dbt     no", f"orb2dbt     {new}")
