"""Read and edit ``rtexec.pf``: which tasks exist and which are set to run.

Per rtexec(1) (Antelope 5.10 man page, see docs/antelope-facts.md), rtexec
rereads rtexec.pf when it changes and starts, restarts or kills tasks to match;
a task that dies is restarted automatically. So the way to start or stop one
task is to set its line in ``Run &Arr{ task yes|no }``. The layout of
``Processes &Tbl{ name command-line }`` and ``Run &Arr{ name yes }`` is taken
from a production rtexec.pf (giseislab/TreMoR, rtexec.pf).

``Run`` values are booleans as rtexec reads them (pfget_boolean): yes, y, on,
true, t, ok and 1 are true; no, n, off, false, f and 0 are false, in any case.
rtkill(1) (antelope_contrib nobuild/bin/rt/rtkill/rtkill.xpl) rewrites a Run line
whose value matches ``([01tfyn]|yes|no|on|off|ok|true|false)`` (ignoring case) to
0 or 1, so a site's file may hold either style.

Edits change only the one ``Run`` line; every other byte is kept. A value is
written in the style the line already has (``0``/``1`` stays ``0``/``1``, ``On``
stays capitalised), a new line in the style of the other Run lines, else yes/no.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_BLOCK_START = re.compile(r"^\s*(\w+)\s+&(Tbl|Arr)\{\s*(#.*)?$")
_YES = {"yes", "y", "1", "true", "t", "on", "ok"}
_NO = {"no", "n", "0", "false", "f", "off"}
# each value's style: the words for (True, False) it is written with
_STYLES = {"yes": ("yes", "no"), "no": ("yes", "no"), "y": ("y", "n"), "n": ("y", "n"), "1": ("1", "0"),
           "0": ("1", "0"), "true": ("true", "false"), "false": ("true", "false"), "t": ("t", "f"),
           "f": ("t", "f"), "on": ("on", "off"), "off": ("on", "off"), "ok": ("ok", "no")}


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
            raise RtexecPfError(f"{source} line {i + 1}: Run value for {name} must be a boolean (yes or no; "
                                f"also y/n, on/off, true/false, t/f, 1/0, ok), got {value!r}")
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


def _in_style_of(word: str, run: bool) -> str:
    """The value for ``run`` written as ``word`` is (its style and its case)."""
    value = _STYLES[word.lower()][0 if run else 1]
    if word.isupper() and len(word) > 1:
        return value.upper()
    return value.capitalize() if word[:1].isupper() else value


def set_task_run(text: str, task: str, run: bool, source: str = "rtexec.pf") -> str:
    """Return ``text`` with ``task`` set to run (true) or not (false) in ``Run &Arr``.

    The task must be listed in ``Processes``. An existing Run line is rewritten
    in place, keeping its indentation, comment and the style of its value; a
    missing one is added just before the closing brace of ``Run``, in the style
    of the block's first line (yes/no when there is none).
    """
    if task not in {t.name for t in parse_rtexec_pf(text, source)}:
        raise RtexecPfError(f"{source}: task {task!r} is not in Processes; add it there first")
    lines = _lines(text)
    block = _find_block(lines, "Run", source)
    entries = _entries(lines, block)
    for i, name, old in entries:
        if name == task:
            m = re.match(r"^(\s*\S+\s+)(\S+)(.*?)(\r?\n)?$", lines[i], re.S)
            assert m is not None
            lines[i] = f"{m.group(1)}{_in_style_of(m.group(2), run)}{m.group(3)}{m.group(4) or ''}"
            return "".join(lines)
    words = [rest.split("#", 1)[0].split()[0] for _, _, rest in entries if rest.split("#", 1)[0].strip()]
    value = _in_style_of(words[0] if words else "yes", run)
    newline = "\r\n" if lines[block.start].endswith("\r\n") else "\n"
    lines.insert(block.end, f"{task}\t{value}{newline}")
    return "".join(lines)
