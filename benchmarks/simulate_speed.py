"""Wall time of `planner simulate`: the library call and the command, for the default case's plans.

The plans are the default case's (GPT-MoE-1.8T on 64 GB200 NVL72 GPUs, FP4, 32768/1024 tokens, SLA 20
tokens/s/user): the disaggregated plan `planner solve --sla 20tok/s` gives and the aggregated one of
`--serving agg`. Each is simulated, `--runs` times (default 5), with

- ``planner.simulate.simulate`` in this process: 10,000 and 100,000 measured requests (plus the tenth as many
  warm-up ones), under the default traffic (a closed loop of the plan's concurrency) and open Poisson traffic at
  0.8 of the plan's rate; the iteration-time tables are built inside each call, so each time is a whole simulation;
- ``planner simulate PLAN.json`` as a fresh subprocess (10,000 requests, default traffic): process start,
  imports and the plan's problem included;

and reports median, min and max [s] and the requests per second of wall time.

    python benchmarks/simulate_speed.py            # 5 runs each
    python benchmarks/simulate_speed.py --runs 9

The markdown table goes to benchmarks/results/simulate_speed.md (``--out`` to change) and is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import SUBPROCESS_ENV, machine, publish, revision  # noqa: E402

from planner import make_problem, solve  # noqa: E402
from planner.simulate import simulate  # noqa: E402

SIZES = (10_000, 100_000)
"""Measured requests per simulation [requests]."""
OPEN_LOAD = 0.8
"""Open traffic's rate as a share of the plan's predicted requests/s."""


def stats(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "simulate_speed.md")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    problem = make_problem(min_tokens_per_s_per_user=20.0)
    plans = {"disagg": solve(problem, serving="disagg")[0], "agg": solve(problem, serving="agg")[0]}
    rows = ["| plan | traffic | requests | runs | median s | min s | max s | requests/s of wall time |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for mode, plan in plans.items():
        for n in SIZES:
            for traffic, kw in (("closed loop (default)", {}),
                                (f"open, {OPEN_LOAD:g} x plan rate", {"rate_per_s": OPEN_LOAD *
                                                                      plan.metrics.requests_per_s})):
                walls, simulated = [], 0
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    r = simulate(problem, plan, requests=n, **kw)
                    walls.append(time.perf_counter() - t0)
                    simulated = r.simulated
                rows.append(f"| {mode}: {plan.label} | {traffic} | {n:,} measured, {simulated:,} simulated | "
                            f"{args.runs} | {stats(walls)} | {simulated / statistics.median(walls):,.0f} |")
    with tempfile.TemporaryDirectory() as tmp:
        for mode, plan in plans.items():
            path = Path(tmp) / f"{mode}.json"
            path.write_text(plan.model_dump_json())
            cmd = [sys.executable, "-m", "planner", "simulate", str(path)]
            walls = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=SUBPROCESS_ENV)
                walls.append(time.perf_counter() - t0)
            rows.append(f"| {mode}: {plan.label} | `planner simulate PLAN.json` (subprocess, default traffic) | "
                        f"10,000 measured | {args.runs} | {stats(walls)} | - |")
    text = "\n".join([
        "# Simulation speed", "", "Reproduce: `python benchmarks/simulate_speed.py`", "",
        f"Machine: {machine()}. {revision()}. Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. "
        f"Load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.", "",
        "The default case's plans (GPT-MoE-1.8T on 64 GB200 NVL72, FP4, 32768/1024 tokens, SLA 20 tokens/s/user): "
        "every lane of the deployment simulated (aggregated: 64 lanes; disaggregated: 32 prefill and 4 decode "
        "lanes), a tenth as many warm-up requests as measured ones, and open traffic continuing until the last "
        "measured request finishes. Target: 10,000 requests in at most 2 s.", "", *rows, ""])
    publish(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
