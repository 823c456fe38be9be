"""Read and edit ``rtexec.pf``: which tasks exist and which are set to run.

Per rtexec(1) (Antelope 5.10 man page, see docs/antelope-facts.md), rtexec
rereads rtexec.pf when it changes and starts, restarts or kills tasks to match;
a task that dies is restarted automatically. So the way to start or stop one
task is to set its line in ``Run &Arr{ task yes|no }``. The layout of
``Processes &Tbl{ name command-line }`` and ``Run &Arr{ name yes }`` is taken
from a production rtexec.pf (giseislab/TreMoR, rtexec.pf).

Edits change only the one ``Run`` line; every other byte is kept.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_BLOCK_START = re.compile(r"^\s*(\w+)\s+&(Tbl|Arr)\{\s*(#.*)?$")
_YES = {"yes", "y", "1", "true", "on"}
_NO = {"no", "n", "0", "false", "off"}


class RtexecPfError(ValueError):
    """rtexec.pf is missing a block or a task, or a line cannot be read."""


@dataclass(frozen=True)
class RtexecTask:
    name: str
    command: tuple[str, ...]
    run: bool


@dataclass(frozen=True)
class _Block:
    start: int  # index of the "Name &Tbl{" line
    end: int  # index of the closing "}" line


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _find_block(lines: list[str], name: str, source: str) -> _Block:
    for i, line in enumerate(lines):
        m = _BLOCK_START.match(line)
        if m and m.group(1) == name:
            depth = 1
            for j in range(i + 1, len(lines)):
                stripped = lines[j].split("#", 1)[0].strip()
                depth += stripped.count("{") - stripped.count("}")
                if depth <= 0:
                    return _Block(i, j)
            raise RtexecPfError(f"{source}: block {name} opened on line {i + 1} is never closed")
    raise RtexecPfError(f"{source}: no {name} block; rtexec.pf must define {name} &Tbl/&Arr{{ ... }}")


def _entries(lines: list[str], block: _Block) -> list[tuple[int, str, str]]:
    """(line index, first word, rest) of each non-comment line inside a block."""
    out = []
    for i in range(block.start + 1, block.end):
        content = lines[i].strip()
        if not content or content.startswith("#"):
            continue
        name, *rest = content.split(None, 1)
        out.append((i, name, rest[0].strip() if rest else ""))
    return out


def parse_rtexec_pf(text: str, source: str = "rtexec.pf") -> list[RtexecTask]:
    """The tasks of ``Processes`` with their ``Run`` setting (absent means no)."""
    lines = _lines(text)
    procs = _entries(lines, _find_block(lines, "Processes", source))
    run: dict[str, bool] = {}
    for i, name, value in _entries(lines, _find_block(lines, "Run", source)):
        word = value.split("#", 1)[0].strip().lower()
        if word in _YES:
            run[name] = True
        elif word in _NO:
            run[name] = False
        else:
            raise RtexecPfError(f"{source} line {i + 1}: Run value for {name} must be yes or no, got {value!r}")
    tasks = []
    for i, name, command in procs:
        try:
            argv = tuple(shlex.split(command, comments=True))
        except ValueError as exc:
            raise RtexecPfError(f"{source} line {i + 1}: cannot read the command of {name}: {exc}") from None
        if not argv:
            raise RtexecPfError(f"{source} line {i + 1}: task {name} has no command line")
        tasks.append(RtexecTask(name, argv, run.get(name, False)))
    return tasks


def set_task_run(text: str, task: str, run: bool, source: str = "rtexec.pf") -> str:
    """Return ``text`` with ``task`` set to run (yes) or not (no) in ``Run &Arr``.

    The task must be listed in ``Processes``. An existing Run line is rewritten
    in place, keeping its indentation and comment; a missing one is added just
    before the closing brace of ``Run``.
    """
    if task not in {t.name for t in parse_rtexec_pf(text, source)}:
        raise RtexecPfError(f"{source}: task {task!r} is not in Processes; add it there first")
    lines = _lines(text)
    block = _find_block(lines, "Run", source)
    value = "yes" if run else "no"
    for i, name, old in _entries(lines, block):
        if name == task:
            m = re.match(r"^(\s*\S+\s+)(\S+)(.*?)(\r?\n)?$", lines[i], re.S)
            assert m is not None
            lines[i] = f"{m.group(1)}{value}{m.group(3)}{m.group(4) or ''}"
            return "".join(lines)
    newline = "\r\n" if lines[block.start].endswith("\r\n") else "\n"
    lines.insert(block.end, f"{task}\t{value}{newline}")
    return "".join(lines)
