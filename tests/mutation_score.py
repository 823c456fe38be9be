"""The score of the last mutation run (``make mutate``), per module, read from
mutmut's records under ``mutants/``, and the mutants no test killed.

    python -m tests.mutation_score

A mutant counts as killed when a test failed, timed out or the mutant did not
even import; the score is killed / all mutants of the module. ``mutmut show
NAME`` prints a surviving mutant's change.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def main(root: Path = Path("mutants")) -> int:
    metas = sorted(root.glob("**/*.py.meta"))
    if not metas:
        print(f"no mutation results under {root}/: run `make mutate` first", file=sys.stderr)
        return 1
    survivors: list[tuple[str, str]] = []
    total = Counter()
    print(f"{'module':<28} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'score':>7}")
    for meta in metas:
        module = meta.relative_to(root).as_posix().removesuffix(".meta")
        statuses = {name: status_by_exit_code[code]
                    for name, code in json.loads(meta.read_text())["exit_code_by_key"].items()}
        n = Counter("killed" if s in KILLED else s for s in statuses.values())
        count = len(statuses)
        total.update(n | Counter(mutants=count))
        print(f"{module:<28} {count:>7} {n['killed']:>7} {n['survived']:>8} {n['no tests']:>8} "
              f"{100 * n['killed'] / count:>6.1f}%")
        survivors += sorted((name, s) for name, s in statuses.items() if s not in KILLED)
    print(f"{'all':<28} {total['mutants']:>7} {total['killed']:>7} {total['survived']:>8} {total['no tests']:>8} "
          f"{100 * total['killed'] / total['mutants']:>6.1f}%")
    if survivors:
        print(f"\nnot killed ({len(survivors)}): each equivalent, or a test to write (README, Reliability)")
        for name, status in survivors:
            print(f"  {name}: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
