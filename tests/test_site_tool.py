"""The site tool: one standard-library-only zipapp that the Antelope hosts run
with their own python3. It is run here with the system python3 (outside this
project's virtualenv) and with every other python 3.8+ found, on the real
Antelope databases, and must answer exactly as the project's own code does."""
from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from antelope_ha import commands as C
from antelope_ha import completeness, idscan, sitetool
from antelope_ha.runner import LocalRunner
from deployments.cli import app
from typer.testing import CliRunner

PROJECT = Path(__file__).resolve().parent.parent
SAMPLE_DIRS = (PROJECT / "tests" / "data" / "antelope-samples", PROJECT.parent / "shared" / "antelope-samples")


def system_python() -> str:
    """The machine's own python3, not this virtualenv's."""
    if Path("/usr/bin/python3").exists():
        return "/usr/bin/python3"
    return str(Path(getattr(sys, "_base_executable", sys.executable)).resolve())


def old_pythons() -> list[str]:
    """Pythons 3.8 to 3.10 on this machine (pyenv or PATH): the hosts may have any of them."""
    found = {}
    for minor in (8, 9, 10):
        for candidate in [shutil.which(f"python3.{minor}") or "",
                          *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}")))]:
            if candidate and "shims" not in candidate and os.access(candidate, os.X_OK):
                found.setdefault(minor, candidate)
    return list(found.values())


INTERPRETERS = [system_python(), *old_pythons()]


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sitetool.build(tmp_path_factory.mktemp("tool"))


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the real Antelope databases (the tool only reads, but a copy keeps that true)."""
    source = next((d for d in SAMPLE_DIRS if d.is_dir()), None)
    assert source is not None, f"no real Antelope databases found; looked in {', '.join(map(str, SAMPLE_DIRS))}"
    copy = tmp_path_factory.mktemp("samples") / "antelope-samples"
    shutil.copytree(source, copy)
    return copy


def databases(samples: Path) -> list[Path]:
    """Every database of the samples: the name before the table suffix, once."""
    return sorted({p.with_suffix("") for p in samples.glob("*/*.*") if p.suffix[1:] in ("origin", "wfdisc", "lastid")})


def test_the_tool_holds_only_what_the_id_checks_import(tool: Path) -> None:
    names = sorted(zipfile.ZipFile(tool).namelist())
    bundled = sorted(f"{m.replace('.', '/')}.py" for m in sitetool.modules())
    assert names == sorted(["__main__.py", "antelope_ha/", "antelope_ha/__init__.py", *bundled])
    assert {"antelope_ha/idscan.py", "antelope_ha/css30.py", "antelope_ha/lastid.py"} <= set(names)
    for name in bundled:  # what each bundled module imports is the standard library or another bundled module
        tree = ast.parse(zipfile.ZipFile(tool).read(name))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for top in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]):
                    root = top.partition(".")[0]
                    assert root in sys.stdlib_module_names or root == "__future__" or \
                        f"{top.replace('.', '/')}.py" in names, f"{name} imports {top}"


def test_the_build_is_reproducible(tool: Path, tmp_path: Path) -> None:
    """Built again in another process, elsewhere, later: the same bytes."""
    again = tmp_path / "again.pyz"
    subprocess.run([sys.executable, "-c", f"from antelope_ha.sitetool import build; build({str(again)!r})"],
                   cwd=tmp_path, check=True)
    assert again.read_bytes() == tool.read_bytes()


def test_a_module_importing_a_third_party_package_cannot_be_bundled() -> None:
    with pytest.raises(sitetool.SiteToolError, match="imports pydantic, which is not in the standard library"):
        sitetool.modules("antelope_ha.config")


def test_every_bundled_module_is_python_3_8_syntax(tmp_path: Path) -> None:
    sitetool.check_syntax(sitetool.modules())  # raises on the first module that is not
    newer = tmp_path / "newer.py"
    newer.write_text("def f(x):\n    match x:\n        case 1:\n            return 1\n")
    with pytest.raises(sitetool.SiteToolError, match="is not Python 3.8 syntax"):
        sitetool.check_syntax({"newer": newer})


def same_answer(runner: LocalRunner, command: C.Command, in_process) -> bool:
    """The tool's JSON equals the in-process result; or, where the project's
    code refuses the data, the tool refuses it with the same message."""
    got = runner.run(command.argv)
    try:
        expected = json.loads(json.dumps(in_process()))
    except Exception as exc:  # the checks refuse this database (damaged or untidy beyond repair)
        assert got.exit_status == 1 and str(exc) in got.stderr, (command, got.stderr)
        return False
    assert got.ok, (command, got.stderr)
    assert json.loads(got.stdout) == expected, command
    return True


@pytest.mark.parametrize("python", INTERPRETERS)
def test_the_tool_answers_as_the_project_does_on_real_databases(python: str, tool: Path, samples: Path) -> None:
    """ids, bounds and inventory through the zipapp under ``python`` (isolated,
    no site-packages) give what the project's code gives in this process."""
    runner = LocalRunner(env={"PATH": "/usr/bin:/bin"})
    argv = C.site_tool(python, str(tool))
    version = runner.run([python, "-c", "import sys; print(sys.version_info[:2] >= (3, 8))"]).check()
    assert version.stdout.strip() == "True"
    dbs = databases(samples)
    assert len(dbs) >= 4, dbs
    answered = []
    for db in map(str, dbs):
        answered.append(same_answer(runner, C.scan_ids(argv, db, db), lambda: idscan.ids_report(db, f"{db}.lastid").to_json()))
        origins = Path(f"{db}.origin")
        if origins.exists():
            times = sorted(float(line.split()[2]) for line in origins.read_text().splitlines() if line.strip())
            middle = times[len(times) // 2]
            answered.append(same_answer(runner, C.recovery_bounds(argv, db, middle, middle + 1),
                                        lambda: completeness.coverage_bounds(db, middle, middle + 1).to_json()))
            window, ranges = (times[0], middle), {"orid": (1, 3)}
            answered.append(same_answer(runner, C.inventory(argv, db, *window, ranges),
                                        lambda: completeness.take_inventory(db, *window, ranges).to_json()))
    assert answered.count(True) >= len(answered) // 2, answered  # most of the real data gets an answer


def test_an_old_python_is_refused_with_the_fix(tool: Path, tmp_path: Path) -> None:
    """The hosts' python3 may be too old; the tool and setup's check both say so."""
    old = tmp_path / "python3"
    old.write_text("#!/bin/sh\n"  # stands in for a Python 3.6: answers the version check as it would
                   "case \"$*\" in *version_info*) echo 3.6;; *) echo 'SyntaxError: invalid syntax' >&2; exit 1;; esac\n")
    old.chmod(0o755)
    with pytest.raises(sitetool.PythonTooOld, match=r"is Python 3.6: the site tool needs 3.8 or later"):
        sitetool.check_python(LocalRunner(), str(old))
    with pytest.raises(sitetool.PythonTooOld, match="does not run on"):
        sitetool.check_python(LocalRunner(), str(tmp_path / "no-such-python"))
    assert sitetool.check_python(LocalRunner(), system_python()).startswith("3.")


def test_install_copies_once_and_checks_that_the_site_runs_it(tool: Path, tmp_path: Path) -> None:
    site = tmp_path / "rtsystem"
    site.mkdir()
    runner = LocalRunner(cwd=str(site))
    data = tool.read_bytes()
    assert sitetool.install(runner, system_python(), "ha/antelope-ha-site.pyz", data) == \
        "copied to ha/antelope-ha-site.pyz"
    assert (site / "ha" / "antelope-ha-site.pyz").read_bytes() == data
    assert sitetool.install(runner, system_python(), "ha/antelope-ha-site.pyz", data) == \
        "ha/antelope-ha-site.pyz already current"
    with pytest.raises(sitetool.SiteToolError, match="cannot run"):
        sitetool.install(runner, system_python(), "ha/broken.pyz", b"not a zip file")


def test_the_cli_builds_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["site-tool", "build", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    built = tmp_path / sitetool.FILE_NAME
    assert f"wrote {built} (sha256 {sitetool.digest(built)})" in " ".join(result.output.split())
    out = subprocess.run([system_python(), "-I", "-S", str(built), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "ids" in out.stdout and "inventory" in out.stdout


def test_setup_puts_the_tool_on_both_sites_over_ssh_once_both_can_run_it(tmp_path: Path) -> None:
    from deployments.setup import ConfigError, SetupConfig, install_site_tools
    from simsite.pair import SimPair

    pair = SimPair.create(tmp_path / "pair")
    try:
        pair.serve_ssh()
        cfg = pair.pair_config()
        sites = {"main": cfg.main.model_dump(), "backup": cfg.backup.model_dump()}
        config = SetupConfig.model_validate({"pair": "tool", "witness": cfg.witness.model_dump(), **sites})
        placed = {name: pair.paths(name).ha / sitetool.FILE_NAME for name in ("ms", "bus")}
        for path in placed.values():
            path.unlink()
        assert install_site_tools(config) == [f"{name}: site tool copied to {path}" for name, path in placed.items()]
        built = sitetool.build(tmp_path / "built.pyz").read_bytes()
        assert all(path.read_bytes() == built for path in placed.values())
        assert install_site_tools(config) == [f"{name}: site tool {path} already current"
                                              for name, path in placed.items()]

        placed["bus"].unlink()
        old = SetupConfig.model_validate({**config.model_dump(), "main": {**sites["main"], "python": "/no/python3"}})
        with pytest.raises(ConfigError) as err:
            install_site_tools(old)
        assert "main.python: /no/python3 does not run on" in str(err.value)
        assert "fix: set main.python to the site's python3 (3.8 or later)" in str(err.value)
        assert not placed["bus"].exists()  # checked both sites before copying to either

        gone = SetupConfig.model_validate({**config.model_dump(), "backup": {
            **sites["backup"], "ssh": {**sites["backup"]["ssh"], "known_hosts": str(tmp_path / "empty")}}})
        (tmp_path / "empty").write_text("")
        with pytest.raises(ConfigError, match=r"backup \(bus, 127\.0\.0\.3\): .*\n.*fix: check backup.host and "
                                              r"backup.ssh"):
            install_site_tools(gone)
    finally:
        pair.stop()
