import pytest

from antelope_ha import commands as C


def test_ps_parsing_and_task_matching_tells_sites_apart():
    out = """\
  101 /usr/bin/python3 /tmp/p/ms/bin/orb2dbt -S /tmp/p/ms/state/orb2dbt 127.0.0.2:6510 /tmp/p/ms/db/db
  102 /usr/bin/python3 /tmp/p/bus/bin/orb2dbt -S /tmp/p/bus/state/orb2dbt 127.0.0.3:6510 /tmp/p/bus/db/db
  103 orb2dbt -S /tmp/p/ms/state/orb2dbt 127.0.0.2:6510 /tmp/p/ms/db/db
  104 vi /tmp/p/ms/bin/orb2dbt
garbage line
"""
    procs = C.parse_ps(out)
    assert [p.pid for p in procs] == [101, 102, 103, 104]
    ms = ("orb2dbt", "-S", "/tmp/p/ms/state/orb2dbt", "127.0.0.2:6510", "/tmp/p/ms/db/db")
    assert C.task_pids(procs, ms) == [101, 103]


def test_orbstat_latencies_in_seconds():
    out = """orbserver at 127.0.0.2:6510
srcname                  npkts   latency
XX_STA1/MGENC/M40          120   1.50 seconds
XX_STA2/MGENC/M40           12   2.0 minutes
not a source line 5 seconds
"""
    assert C.parse_orb_latencies(out) == {"XX_STA1/MGENC/M40": 1.5, "XX_STA2/MGENC/M40": 120.0}


def test_trexcerpt_command_lines():
    assert str(C.extract_window("db/db", "/mnt/ext/out", 10.0, 20.5)) == "trexcerpt -v -e db/db /mnt/ext/out 10.000 20.500"
    merge = C.merge_window("/mnt/ext/out", "db/db", 10.0, 20.5)
    assert merge.argv == ("trexcerpt", "-v", "-a", "-e", "/mnt/ext/out", "db/db", "10.000", "20.500")
    assert merge.changes


def test_values_stay_single_arguments():
    c = C.probe_idserver("ms; rm -rf /:2498")
    assert c.argv == ("idserver_connect", "ms; rm -rf /:2498")
    assert str(c) == "idserver_connect 'ms; rm -rf /:2498'"


def test_process_start_is_read_to_the_hundredth_of_a_second():
    out = "1000.25 3999.50\n4242 (orb2dbt (x) y) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 95010 0 0\n"
    assert C.parse_process_start(5000.0, out, 100) == 5000.0 - 1000.25 + 950.10
    with pytest.raises(ValueError, match="cannot read a start time"):
        C.parse_process_start(5000.0, "1000.25 3999.50\n4242 (orb2dbt) S 1\n", 100)
