"""What is installed is what the code imports, at the versions of the lock files.

pyproject.toml declares what a worker imports and what only the tests import;
requirements/runtime.txt and requirements/test.txt pin every package with its
hashes, and `make deps` / `make test` install from them."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text())
LOCAL = {"antelope_ha", "flows", "tasks", "blocks", "simsite", "rehearsal", "deployments", "bench", "tests"}
SHIPPED = sorted(LOCAL - {"tests"})  # what `make deps`, `make drill` and `make bench` run
LOCK, TEST_LOCK = PROJECT / "requirements" / "runtime.txt", PROJECT / "requirements" / "test.txt"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0])


def imports(directories: list[str]) -> dict[str, set[str]]:
    """Third-party top-level module -> the files importing it."""
    found: dict[str, set[str]] = {}
    for directory in directories:
        for path in (PROJECT / directory).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in LOCAL and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(PROJECT)))
    return found


@cache
def modules_of() -> dict[str, set[str]]:
    """Installed distribution (normalized) -> the top-level modules it provides."""
    out: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            out.setdefault(normalize(dist), set()).add(module)
    return out


def declared(kind: str) -> set[str]:
    reqs = PYPROJECT["project"]["dependencies"] if kind == "runtime" \
        else PYPROJECT["project"]["optional-dependencies"][kind]
    return {requirement_name(r) for r in reqs}


def pytest_plugin_dists() -> set[str]:
    return {normalize(ep.dist.name) for ep in metadata.entry_points(group="pytest11") if ep.dist}


def test_a_worker_declares_exactly_what_its_code_imports() -> None:
    used = imports(SHIPPED)
    runtime = declared("runtime")
    provided = {m for d in runtime for m in modules_of().get(d, set())}
    undeclared = {m: sorted(files)[:3] for m, files in used.items() if m not in provided}
    assert not undeclared, f"imported but not in [project.dependencies]: {undeclared}"
    unused = {d for d in runtime if not modules_of().get(d, set()) & set(used)}
    assert not unused, f"declared in [project.dependencies] but imported by no shipped code: {sorted(unused)}"


def test_the_tests_declare_what_only_they_import() -> None:
    used = imports(["tests"])
    runtime, test = declared("runtime"), declared("test")
    provided = {m for d in runtime | test for m in modules_of().get(d, set())}
    undeclared = {m: sorted(files)[:3] for m, files in used.items() if m not in provided}
    assert not undeclared, f"imported by the tests but not declared: {undeclared}"
    plugins = pytest_plugin_dists()
    unused = {d for d in test if not modules_of().get(d, set()) & set(used) and d not in plugins}
    assert not unused, f"in the test extra but imported by no test (nor a pytest plugin): {sorted(unused)}"
    assert not test & runtime, "a package is declared for both; keep it where the code needs it"
    assert "pytest-timeout" in plugins and PYPROJECT["tool"]["pytest"]["ini_options"]["timeout"]


def pins(lock: Path) -> dict[str, tuple[str, int]]:
    """package -> (version, number of hashes) of a pip-compile lock file."""
    out: dict[str, tuple[str, int]] = {}
    current = None
    for line in lock.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", line):
            current = normalize(m.group(1))
            out[current] = (m.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            out[current] = (out[current][0], out[current][1] + 1)
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"{lock.name}: not a pinned requirement: {line!r}")
    return out


def test_the_lock_files_pin_everything_with_hashes() -> None:
    runtime, test = pins(LOCK), pins(TEST_LOCK)
    for lock, entries in ((LOCK, runtime), (TEST_LOCK, test)):
        assert all(count > 0 for _, count in entries.values()), f"{lock.name}: a pin without hashes"
    assert declared("runtime") <= set(runtime), sorted(declared("runtime") - set(runtime))
    assert declared("runtime") | declared("test") <= set(test)
    # jsonschema: imported directly only by the tests, on the worker as Prefect's own dependency
    assert not declared("test") & set(runtime) - {"jsonschema"}, "test-only packages in the worker's lock"
    assert {p: v for p, (v, _) in runtime.items()} == {p: test[p][0] for p in runtime}, \
        "the two locks pin different versions: run make lock"
    assert runtime["prefect"][0] == "3.9.1" and "setuptools" in runtime  # the build backend, for offline installs


def test_this_virtualenv_is_the_test_lock() -> None:
    """`make test` installed exactly the locked versions."""
    wrong = {}
    for package, (version, _) in pins(TEST_LOCK).items():
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[package] = (version, installed)
    assert not wrong, f"locked vs installed: {wrong}"


@pytest.mark.slow
def test_a_fresh_worker_virtualenv_from_the_lock_imports_every_module(tmp_path: Path) -> None:
    """`make deps` into a new virtualenv: the runtime lock and the project, nothing
    of the tests; every module of the project imports there, and the command runs."""
    venv = tmp_path / "worker-venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    # pip without byte-compiling what it installs (44 s -> 37 s here); the modules
    # imported below are compiled as they are imported
    made = subprocess.run(["make", "-C", str(PROJECT), "deps", f"VENV={venv}"], env={**env, "PIP_COMPILE": "0"},
                          capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=900)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    freeze = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, check=True).stdout
    installed = {normalize(n): v for n, _, v in (line.partition("==") for line in freeze.split()) if v}
    locked = {p: v for p, (v, _) in pins(LOCK).items()}
    extra = set(installed) - set(locked) - {"antelope-ha", "pip"}
    assert not extra, f"installed beyond the lock: {sorted(extra)}"
    assert {p: installed.get(p) for p in locked} == locked
    for test_only in declared("test") - set(locked):
        assert test_only not in installed, test_only
    names = sorted(".".join(p.relative_to(PROJECT).with_suffix("").parts).removesuffix(".__init__")
                   for d in SHIPPED for p in (PROJECT / d).rglob("*.py"))
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint(len(sys.argv) - 1)"
    imported = subprocess.run([venv / "bin" / "python", "-c", script, *names], cwd=PROJECT, env=env,
                              capture_output=True, text=True)
    assert imported.returncode == 0 and imported.stdout.split()[-1] == str(len(names)), imported.stderr[-3000:]
    cli = subprocess.run([venv / "bin" / "antelope-ha", "--help"], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert cli.returncode == 0 and "site-tool" in cli.stdout, cli.stderr[-2000:]
