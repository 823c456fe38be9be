"""The site tool: the id checks as one standard-library-only Python zipapp.

The Antelope hosts need nothing of this project installed: the checks run as
``<python> antelope-ha-site.pyz ids db/db --lastid dbids/dbids.lastid`` with
the host's own python3 (3.8 or later). ``antelope-ha site-tool build`` writes
the file; ``antelope-ha setup`` copies it to each site over SFTP.

The archive holds the entry module and every ``antelope_ha`` module it
imports, found by reading their imports; any other import must be a module of
the standard library, or the build fails naming it. The build is
reproducible: the same sources give the same bytes, so setup can tell whether
a site already has this version.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import os
import posixpath
import shutil
import sys
import tempfile
import threading
import zipapp
from pathlib import Path

from antelope_ha.commands import cmd, make_dirs, site_tool
from antelope_ha.runner import Runner

ENTRY = "antelope_ha.idscan"
PACKAGE = "antelope_ha"
MIN_PYTHON = (3, 8)
FILE_NAME = "antelope-ha-site.pyz"
_EPOCH = 315532800  # 1980-01-01, the earliest time a zip entry can carry
# CPython 3.11.7's parser is not safe in two threads at once ("SystemError: AST
# constructor recursion depth mismatch", seen when simulated pairs were built
# in parallel): one build at a time per process, and the last one kept.
_BUILD_LOCK = threading.Lock()
_built: dict[str, bytes] = {}

MAIN = f'''\
"""antelope-ha site tool: the id checks ({ENTRY}), standard library only."""
import sys

if sys.version_info < {MIN_PYTHON!r}:
    sys.exit("antelope-ha site tool: needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or later, this is "
             + sys.version.split()[0] + " (" + sys.executable + "); set python: of the site to a newer python3")

from {ENTRY} import main

sys.exit(main())
'''


class SiteToolError(RuntimeError):
    """The site tool cannot be built from these sources, or a site cannot run it."""


class PythonTooOld(SiteToolError):
    """The site's python is missing or older than MIN_PYTHON."""


def _source(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise SiteToolError(f"cannot find the source of {module}")
    return Path(spec.origin)


def _imports(module: str, tree: ast.Module) -> set[str]:
    """Absolute names of the modules ``tree`` imports (at any depth: also inside functions)."""
    package = module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            # `from antelope_ha import css30` imports the module antelope_ha.css30
            if name == PACKAGE:
                found |= {f"{PACKAGE}.{alias.name}" for alias in node.names}
    return found


def modules(entry: str = ENTRY) -> dict[str, Path]:
    """The project's modules the tool needs: ``entry`` and all it imports from
    the package, with their source files. Anything else imported must be in
    the standard library."""
    todo, found = [entry], {}
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = _source(name)
        found[name] = path
        tree = ast.parse(path.read_text(), str(path))
        for imported in sorted(_imports(name, tree)):
            top = imported.partition(".")[0]
            if top == PACKAGE:
                if imported != PACKAGE:
                    todo.append(imported)
            elif top not in sys.stdlib_module_names and top != "__future__":
                raise SiteToolError(
                    f"{path} imports {imported}, which is not in the standard library: the site tool "
                    f"runs on the Antelope hosts with nothing installed; keep {name} standard-library only")
    return found


def check_syntax(sources: dict[str, Path], version: tuple[int, int] = MIN_PYTHON) -> None:
    """Every bundled module parses as Python ``version`` (the oldest the hosts may have)."""
    for name, path in sources.items():
        try:
            ast.parse(path.read_text(), str(path), feature_version=version)
        except SyntaxError as exc:
            raise SiteToolError(
                f"{name} ({path}, line {exc.lineno}) is not Python {version[0]}.{version[1]} syntax: {exc.msg}; "
                f"the site tool must run on the hosts' own python3") from None


def build(target: Path, entry: str = ENTRY) -> Path:
    """Write the zipapp to ``target`` (a file, or a directory to put ``FILE_NAME`` in)."""
    target = Path(target)
    if target.is_dir():
        target = target / FILE_NAME
    data = archive(entry)
    tmp_target = target.with_name(f".{target.name}.tmp{threading.get_ident()}")
    tmp_target.write_bytes(data)
    tmp_target.chmod(0o755)
    tmp_target.replace(target)
    return target


def archive(entry: str = ENTRY) -> bytes:
    """The zipapp's bytes, built again whenever a source changed."""
    with _BUILD_LOCK:
        sources = modules(entry)
        key = entry + "".join(f"\0{p}\0{p.stat().st_mtime_ns}" for p in sources.values())
        if key not in _built:
            check_syntax(sources)
            _built.clear()
            _built[key] = _zip(sources)
        return _built[key]


def _zip(sources: dict[str, Path]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="antelope-ha-site-tool-") as tmp:
        stage = Path(tmp) / "app"
        package = stage / PACKAGE
        package.mkdir(parents=True)
        # The package's own __init__ is not needed and may import more: an empty one.
        (package / "__init__.py").write_text("")
        for name, path in sources.items():
            shutil.copyfile(path, stage / (name.replace(".", "/") + ".py"))
        (stage / "__main__.py").write_text(MAIN)
        for path in [stage, *stage.rglob("*")]:  # the same bytes whenever and wherever it is built
            path.chmod(0o755 if path.is_dir() else 0o644)
            os.utime(path, (_EPOCH, _EPOCH))
        buffer = io.BytesIO()
        zipapp.create_archive(stage, buffer, interpreter="/usr/bin/env python3", compressed=True)
    return buffer.getvalue()


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- putting it on a site ---------------------------------------------------------------
_VERSION_CHECK = "import sys; print('%d.%d' % sys.version_info[:2])"


def check_python(runner: Runner, python: str) -> str:
    """The site's python version, e.g. ``3.9``; PythonTooOld when it cannot run the tool."""
    result = runner.run(cmd("the site's python version", python, "-I", "-S", "-c", _VERSION_CHECK).argv)
    version = result.stdout.strip()
    if not result.ok:
        raise PythonTooOld(f"{python} does not run on {runner.host} (exit {result.exit_status}): "
                           f"{(result.stderr or result.stdout).strip()[-300:]}")
    major, _, minor = version.partition(".")
    if not (major.isdigit() and minor.isdigit()) or (int(major), int(minor)) < MIN_PYTHON:
        raise PythonTooOld(f"{python} on {runner.host} is Python {version or '?'}: the site tool needs "
                           f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or later")
    return version


def install(runner: Runner, python: str, path: str, data: bytes) -> str:
    """Put the tool at ``path`` on the site unless it is already there (same bytes),
    then check that the site's python runs it. Returns what was done."""
    if runner.exists(path) and runner.read_file(path) == data:
        done = f"{path} already current"
    else:
        runner.run(make_dirs(posixpath.dirname(path) or ".").argv).check()
        runner.write_file(path, data)
        if runner.read_file(path) != data:
            raise SiteToolError(f"{path} on {runner.host} does not hold what was written")
        done = f"copied to {path}"
    result = runner.run(cmd("run the site tool", *site_tool(python, path), "--help").argv)
    if not result.ok or "usage:" not in result.stdout:
        raise SiteToolError(f"{python} on {runner.host} cannot run {path} (exit {result.exit_status}): "
                            f"{(result.stderr or result.stdout).strip()[-500:]}")
    return done
