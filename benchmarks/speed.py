"""The solver's speed targets, old against new on the same machine in one run.

Each command runs as a fresh process from an empty temporary directory (process start and imports
included), `--runs` times after one untimed warm-up, alternating between this work tree's `planner` and,
with `--baseline EXE`, another installation's (e.g. the previous release in its own virtual
environment). Reported: the median wall time of each command, and the median of the time the command
prints for its own search ("solver: ... in X s" of `solve`, "N searches in X s" of `frontier`).

    python benchmarks/speed.py                                     # this tree only
    python benchmarks/speed.py --baseline /path/to/old/venv/bin/planner --runs 5

The markdown table goes to benchmarks/results/speed.md (``--out`` to change) and is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import ROOT, SUBPROCESS_ENV, machine, publish, revision  # benchmarks/ is on sys.path when run as a script

DSR1 = ["--model", "deepseek-r1", "--cluster", "gb200-nvl72", "--isl", "4000", "--osl", "1000", "--sla", "20tok/s"]
COMMANDS: list[tuple[str, list[str], str, float]] = [
    # (what, arguments, which time the target bounds: "wall" or "search", target [s])
    ("default solve, process start included", ["solve", "--sla", "20tok/s"], "wall", 1.0),
    ("default solve, search time", ["solve", "--sla", "20tok/s"], "search", 0.3),
    ("DeepSeek-R1 on 72 GB200, search time", ["solve", *DSR1, "--gpus", "72"], "search", 0.5),
    ("DeepSeek-R1 on 4,608 GB200, search time", ["solve", *DSR1, "--gpus", "4608"], "search", 2.0),
    ("40-level frontier, process start included", ["frontier", "--quiet"], "wall", 3.0),
    ("40-level frontier, TTFT <= 5 s, process start included", ["frontier", "--quiet", "--ttft", "5s"], "wall", 6.0),
]
PRINTED = re.compile(r"(?:^solver: \S+ \S+ in|searches in) ([0-9.]+) s", re.MULTILINE)


@dataclass
class Timing:
    """Wall times and printed search times of one command of one installation [s]."""

    wall: list[float] = field(default_factory=list)
    search: list[float] = field(default_factory=list)

    def median(self, kind: str) -> float | None:
        xs = self.wall if kind == "wall" else self.search
        return statistics.median(xs) if xs else None


def run(exe: str, args: list[str], cwd: str, t: Timing) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False, env=SUBPROCESS_ENV)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"speed.py: `{exe} {shlex.join(args)}` exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    t.wall.append(wall)
    found = PRINTED.search(proc.stdout)
    if found:
        t.search.append(float(found.group(1)))


def fmt(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline", default=None, help="another installation's planner executable")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.md")
    args = ap.parse_args(argv)
    new = shutil.which("planner")
    if new is None:
        print("speed.py: error: no `planner` on PATH: pip install -e . first", file=sys.stderr)
        return 2
    exes = {"new": new} | ({"old": args.baseline} if args.baseline else {})
    started, load = dt.datetime.now(dt.timezone.utc), os.getloadavg()
    times: dict[tuple[str, str], Timing] = {}
    with tempfile.TemporaryDirectory() as cwd:
        for what, cmd, _, _ in COMMANDS:
            key = shlex.join(cmd)
            if any(k[0] == key for k in times):
                continue
            for name, exe in exes.items():
                times[(key, name)] = Timing()
                run(exe, cmd, cwd, Timing())  # warm-up
            for i in range(args.runs):
                for name, exe in exes.items():
                    run(exe, cmd, cwd, times[(key, name)])
                print(f"{what}: run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
    head = "| target | command | new s | target s | met |" + (" old s | old / new |" if args.baseline else "")
    rows = [head, "|---|---|---:|---:|---|" + ("---:|---:|" if args.baseline else "")]
    for what, cmd, kind, target in COMMANDS:
        key = shlex.join(cmd)
        n = times[(key, "new")].median(kind)
        met = "yes" if n is not None and n <= target else "**no**"
        row = f"| {what} | `planner {key}` | {fmt(n)} | {target:g} | {met} |"
        if args.baseline:
            o = times[(key, "old")].median(kind)
            row += f" {fmt(o)} | {fmt(o / n) if o and n else '-'} |"
        rows.append(row)
    base = f"; baseline `{args.baseline}`" if args.baseline else ""
    text = "\n".join([
        "# Solver speed targets", "", f"Reproduce: `{shlex.join(['python', 'benchmarks/speed.py', *sys.argv[1:]])}`",
        "", f"Machine: {machine()}. {revision()}. Date: {started:%Y-%m-%d %H:%M} UTC. Load average at start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.", "",
        f"Medians of {args.runs} runs of each command as a fresh process, installations alternating run by run "
        f"(new `{new}`{base}), bytecode caching on. 'search' is the time the command prints for its own search; "
        "'wall' includes process start and imports.", "", *rows, ""])
    publish(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
