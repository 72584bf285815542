"""Wall time of a 40-point frontier: the `planner frontier` command and the library sweep.

Runs, `--runs` times each (default 5):

- ``planner frontier --quiet`` as a fresh subprocess: the default case (GPT-MoE-1.8T on 64 GB200
  NVL72 GPUs, FP4, 32768/1024 tokens), 40 SLA levels, process start and imports included;
- ``planner.studies.frontier`` in this process for the default case with no TTFT limit and with
  the study's 5 s TTFT, and for a small dense case (Llama-3.1-8B on 8 H100, 1000/200 tokens);

and reports median, min and max, with the searches each sweep ran (levels an earlier plan already
meets need none) against the 40 separate solves a naive sweep would run.

    python benchmarks/frontier_speed.py            # 5 runs each
    python benchmarks/frontier_speed.py --runs 9

The markdown table goes to benchmarks/results/frontier_speed.md (``--out`` to change) and is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import SUBPROCESS_ENV, machine, publish, revision  # noqa: E402

from planner import make_problem, studies  # noqa: E402

CASES = [
    ("default (gpt-moe-1.8t, 64 x gb200-nvl72, fp4, 32768/1024)", {}),
    ("default, TTFT <= 5 s", {"max_ttft_s": 5.0}),
    ("llama-3.1-8b, 8 x h100-sxm, fp8, 1000/200",
     {"model": "llama-3.1-8b", "cluster": "h100-sxm", "gpus": 8, "isl": 1000, "osl": 200, "precision": "fp8"}),
]


def stats(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "frontier_speed.md")
    args = ap.parse_args(argv)
    exe = shutil.which("planner")
    cmd = [exe, "frontier", "--quiet"] if exe else [sys.executable, "-m", "planner", "frontier", "--quiet"]
    load = os.getloadavg()
    rows = ["| what | runs | median s | min s | max s | searches (of 40 levels) |", "|---|---:|---:|---:|---:|---:|"]
    walls = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd="/", env=SUBPROCESS_ENV)
        walls.append(time.perf_counter() - t0)
    rows.append(f"| `planner frontier` (default case, subprocess) | {args.runs} | {stats(walls)} | - |")
    for name, kw in CASES:
        p = make_problem(min_tokens_per_s_per_user=1.0, **kw)
        walls, solves = [], 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            f = studies.frontier(p, points=40)
            walls.append(time.perf_counter() - t0)
            solves = f.solves
        rows.append(f"| library frontier: {name} | {args.runs} | {stats(walls)} | {solves} |")
    text = "\n".join([
        "# Frontier speed", "", "Reproduce: `python benchmarks/frontier_speed.py`", "",
        f"Machine: {machine()}. {revision()}. Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. "
        f"Load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.", "",
        "40 SLA levels, log-spaced from the lowest to the highest reachable tokens/s/user, each proven optimal "
        "by CP-SAT and certified (the options evaluated once per sweep; each level a CP-SAT search over the same "
        "dominance-reduced options with that level's SLA; levels an earlier plan meets need no search). Searches "
        "include the two that find the reachable range (the fastest plan, the best plan with no SLA).", "", *rows,
        ""])
    publish(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
