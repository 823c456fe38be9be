"""``make bench``: every benchmark of the project, one table.

  scan      css30.scan_ids on 1 GB and 4 GB databases, in four row orders, vs cat (read
            limit) and awk|sort|uniq
  inventory a recovery's completeness check on the site (inventory and bounds of one outage)
            on a 1 GB database, vs the id scan of the same tables and cat
  probe     a 4-probe health cycle over one reused SSH connection vs a new connection per probe
  failover  MS ID server crash -> BUS hands out ids, Prefect flows vs the bare Site steps (in-process)
  production  the deployed path (server on PostgreSQL, workers, setup): MS power-off -> ids,
            flow runs, database growth and CPU a day; also `python -m bench production [--json]`

Prefect runs embedded, with a Prefect home of its own (a temporary directory,
removed at exit), set here before Prefect is imported. A missed target shows as
NO in the table and in the last lines, not as a failed command: the figures
depend on the machine and on what else runs on it (the load average is printed).

    python -m bench [--only scan|inventory|probe|failover|production ...] [--size-mb N ...] [--repetitions N]
    python -m bench production [--json] [--repetitions N] [--steady-s S]
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_PREFECT_HOME = tempfile.mkdtemp(prefix="antelope-ha-bench-prefect-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)  # runs after Prefect's own exit handlers
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.pop("PREFECT_API_URL", None)  # embedded Prefect, never a server configured elsewhere

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

Row = dict[str, object]
SCAN_SIZES_MB = (1024, 4096)
DISK_HEADROOM = 1.3  # the scan bench's database (each order is written over the last) plus its merge step


def scan_rows(size_mb: int) -> list[Row]:
    from bench import scan

    label = f"scan {size_mb // 1024} GB" if size_mb % 1024 == 0 else f"scan {size_mb} MB"
    if skipped := _no_room(label, size_mb):
        return skipped
    rows = scan.run(size_mb)
    out = _table_rows(label, rows)
    answers = [r for r in rows if r["answer"] is not None]
    for awk, ours in zip(answers[0::2], answers[1::2]):
        same = awk["answer"] == ours["answer"]
        out.append({"figure": f"{label}: {awk['figure'].split(':')[0]}: scan answer equals awk's",
                    "measured": "yes" if same else "NO", "target": "equal", "met": same})
    return out


def _no_room(label: str, size_mb: int) -> list[Row]:
    """A row saying the benchmark is skipped, if the temporary directory cannot hold its database."""
    free_mb = shutil.disk_usage(tempfile.gettempdir()).free / 2**20
    if free_mb >= size_mb * DISK_HEADROOM:
        return []
    return [{"figure": f"{label}: skipped, {free_mb:.0f} MB free in {tempfile.gettempdir()}, "
                       f"needs {size_mb * DISK_HEADROOM:.0f} MB (set TMPDIR)", "met": False}]


def _table_rows(label: str, rows: list[dict]) -> list[Row]:
    """The rows of a benchmark that measures figures against a baseline (bench.scan's form)."""
    return [{"figure": f"{label}: {r['figure']}",
             "measured": _num(r["value"], f" {r['unit']}"),
             "baseline": _num(r["baseline"], f" {r['unit']}") + (" idle" if r["unit"] == "MB" else ""),
             "ratio": _num(r["ratio"], "x"),
             "target": r["target"] or "",
             "met": r["met"]} for r in rows]


def inventory_rows(size_mb: int) -> list[Row]:
    from bench import inventory

    label = f"recovery check {size_mb} MB"
    return _no_room(label, size_mb) or _table_rows(label, inventory.run(size_mb))


def probe_rows() -> list[Row]:
    from bench import probe

    return [{"figure": f"probe: {r['figure']}", "measured": f"{r['ms']} ms",
             "baseline": f"{r['baseline_ms']} ms new conn", "ratio": f"{r['ratio']}x faster",
             "target": r["target"], "met": r["met"]} for r in probe.run()]


def failover_rows(repetitions: int) -> tuple[list[Row], list[str]]:
    from bench import failover

    result = failover.run(repetitions)
    return result.rows(), result.notes()


def production_rows(repetitions: int) -> tuple[list[Row], list[str]]:
    from bench import production

    result = production.run(repetitions, defaults_repetitions=repetitions)
    return result.rows(), result.notes()


def _num(x: object, unit: str = "") -> str:
    if x is None:
        return ""
    return f"{x:.3f}{unit}" if isinstance(x, float) else f"{x}{unit}"


def format_table(rows: list[Row]) -> str:
    header = ("figure", "measured", "baseline", "ratio", "target", "met?")
    cells = [header] + [(str(r.get("figure", "")), str(r.get("measured", "")), str(r.get("baseline", "")),
                         str(r.get("ratio", "")), str(r.get("target", "")),
                         {None: "", True: "yes", False: "NO"}[r.get("met")]) for r in rows]  # type: ignore[index]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([lines[0], "-" * max(map(len, lines)), *lines[1:]])


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or "unknown CPU")
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    return (f"{os.cpu_count()} CPUs ({model}), {mem_kb / 2**20:.1f} GiB memory, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def _load() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    return f"{os.getloadavg()[0]:.2f}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["production"]:
        from bench import production

        sys.exit(production.main(argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append",
                        choices=("scan", "inventory", "probe", "failover", "production"),
                        help="run only this benchmark (repeatable); default all")
    parser.add_argument("--size-mb", type=int, action="append",
                        help=f"scan database size (repeatable); default {' and '.join(map(str, SCAN_SIZES_MB))}")
    parser.add_argument("--repetitions", type=int, default=3, help="failover repetitions (median reported)")
    args = parser.parse_args(argv)
    only = set(args.only or ("scan", "inventory", "probe", "failover", "production"))

    started, load_at_start = time.time(), _load()
    rows: list[Row] = []
    notes: list[str] = []
    sections: list[tuple[str, Callable[[], None]]] = []
    if "scan" in only:
        for size in args.size_mb or SCAN_SIZES_MB:
            sections.append((f"scan {size} MB", lambda size=size: rows.extend(scan_rows(size))))
    if "inventory" in only:
        sections.append(("inventory 1024 MB", lambda: rows.extend(inventory_rows(1024))))
    if "probe" in only:
        sections.append(("probe", lambda: rows.extend(probe_rows())))
    if "failover" in only:
        def failover_section() -> None:
            more, text = failover_rows(args.repetitions)
            rows.extend(more)
            notes.extend(text)
        sections.append((f"failover x{args.repetitions}", failover_section))
    if "production" in only:
        def production_section() -> None:
            more, text = production_rows(args.repetitions)
            rows[:0] = more  # the deployed path's figures lead the table
            notes[:0] = text
        sections.append((f"production x{args.repetitions}", production_section))
    for name, section in sections:
        t = time.time()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        section()
        print(f"  {name}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)

    print(f"\nmachine: {machine()}; load average {load_at_start} at the start, {_load()} at the end\n")
    print(format_table(rows))
    for note in notes:
        print(f"- {note}")
    judged = [r for r in rows if r.get("met") is not None]
    missed = [str(r["figure"]).strip() for r in judged if not r["met"]]
    print(f"\ntargets met: {len(judged) - len(missed)} of {len(judged)}"
          + (f"; missed: {'; '.join(missed)}" if missed else ""))
    print(f"all benchmarks: {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
