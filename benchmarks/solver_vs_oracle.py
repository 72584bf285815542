"""CP-SAT against the exhaustive oracle: agreement, false optima, bound violations, and both methods' times.

Two sets of problems:

- ``--random N --seed S``: N problems drawn like the solver audit's (planner.audit.random_cases: every
  catalog model and cluster, 1-128 GPUs, isl 128-32768, osl 64-4096 tokens, SLA 5-200 tokens/s/user,
  every precision, a TTFT limit of 0.2-20 s on a third);
- the fixed grid (default): four models x three clusters x 8..1024 GPUs at the model's workload, plus
  DeepSeek-R1 on 72 and 4,608 GB200 GPUs.

Each problem is solved by both methods through ``planner.search.solve`` (what ``planner solve --method
...`` runs: tabulation or enumeration, search, certificate, the plan, and the diagnosis when there is
no plan), timed with ``time.perf_counter`` around the whole call, in this process (imports excluded).
They agree when both find a plan of the same tokens/s/GPU (relative 1e-9), or both find none for the same
reason with the same reachable figure. A *false optimum* is a CP-SAT plan reported OPTIMAL below the
oracle's optimum; a *bound violation* is a CP-SAT bound below a plan the float model accepts. The script
exits with status 1 on any disagreement, false optimum or bound violation.

    python benchmarks/solver_vs_oracle.py --random 1000 --seed 1   # -> results/solver_vs_oracle_random.md
    python benchmarks/solver_vs_oracle.py                          # the grid -> results/solver_vs_oracle.md
    python benchmarks/solver_vs_oracle.py --quick                  # 4 grid rows, a smoke run
    python benchmarks/solver_vs_oracle.py --disagg 200 --seed 1    # disaggregated -> results/solver_vs_oracle_disagg.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmark the work tree's planner, installed or not

from _common import machine, publish, revision  # noqa: E402  (benchmarks/ is on sys.path)

from planner.audit import (  # noqa: E402
    Case,
    Outcome,
    check,
    random_cases,
    random_disagg_cases,
    spanning_tp_possible,
)

GRID_MODELS = (("llama-3.1-70b", 4000, 1000), ("qwen3-235b-a22b", 4000, 1000), ("deepseek-r1", 4000, 1000),
               ("gpt-moe-1.8t", 32768, 1024))
"""(model, isl, osl) of the grid, each at 20 tokens/s/user."""
GRID_CLUSTERS = (("h100-sxm", "fp8"), ("gb200-nvl72", "fp4"), ("b200", "fp4"))
GRID_GPUS = (8, 16, 64, 256, 1024)
EXTRA = (Case("deepseek-r1", "gb200-nvl72", 72, 4000, 1000, "fp4", 20.0, None),
         Case("deepseek-r1", "gb200-nvl72", 4608, 4000, 1000, "fp4", 20.0, None))
"""The issue's large cases: DeepSeek-R1 on one GB200 NVL72 rack and on 64 of them."""
QUICK = (Case("gpt-moe-1.8t", "gb200-nvl72", 64, 32768, 1024, "fp4", 20.0, None),
         Case("gpt-moe-1.8t", "h100-sxm", 8, 32768, 1024, "fp8", 20.0, None),
         Case("llama-3.1-70b", "h100-sxm", 16, 4000, 1000, "fp8", 20.0, None),
         Case("deepseek-r1", "b200", 256, 4000, 1000, "fp4", 20.0, None))


def grid() -> list[Case]:
    """The fixed grid, then the extra large cases."""
    cases = [Case(m, c, g, isl, osl, prec, 20.0, None)
             for m, isl, osl in GRID_MODELS for c, prec in GRID_CLUSTERS for g in GRID_GPUS]
    return cases + list(EXTRA)


def quantile(xs: list[float], q: float) -> float:
    """The q-quantile of xs (nearest rank)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def times_row(name: str, xs: list[float]) -> str:
    return (f"| {name} | {statistics.median(xs):.3f} | {quantile(xs, 0.9):.3f} | {quantile(xs, 0.95):.3f} | "
            f"{max(xs):.3f} | {sum(xs):.1f} |")


def value(r) -> str:
    return f"{r.value:.4g}" if r.value is not None else r.reason or r.status


def report(outcomes: list[Outcome], title: str, command: str, wall_s: float, rev: str, per_row: bool) -> str:
    """The markdown report of a run."""
    n = len(outcomes)
    plans = sum(o.oracle.value is not None for o in outcomes)
    disagree = [o for o in outcomes if not o.agree]
    false_opt = [o for o in outcomes if o.false_optimum]
    bound = [o for o in outcomes if o.bound_violated]
    feas = [o for o in outcomes if o.feasibility_disagrees]
    uncertified = [o for o in outcomes if o.cpsat.value is not None and o.cpsat.certified is not True]
    tc, to = [o.cpsat.wall_s for o in outcomes], [o.oracle.wall_s for o in outcomes]
    ratios = sorted(o.cpsat.wall_s / o.oracle.wall_s for o in outcomes if o.oracle.wall_s > 0)
    spanning = sum("tp" in o.oracle.spans for o in outcomes)
    offered = sum(o.oracle.value is not None and spanning_tp_possible(o.case) for o in outcomes)
    kinds: dict[str, int] = {}
    for o in outcomes:
        kinds[o.oracle.reason or "plan"] = kinds.get(o.oracle.reason or "plan", 0) + 1
    load = os.getloadavg()
    lines = [
        f"# {title}", "", f"Reproduce: `{command}`", "",
        f"Machine: {machine('ortools ' + metadata.version('ortools'))}. {rev}. "
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Load average at the end {load[0]:.2f}. "
        f"Whole run {wall_s:.0f} s.", "",
        "Each problem solved by both methods through `planner.search.solve` (tabulation or enumeration, search, "
        "certificate, plan, and the diagnosis when there is no plan), timed around the whole call in one process.",
        "",
        f"- problems: **{n}**; with a plan (oracle): {plans}; without: "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()) if k != "plan"),
        f"- **agreement: {n - len(disagree)} of {n}**; disagreements on feasibility: **{len(feas)}**",
        f"- plans whose tp group spans scale-up domains (oracle): {spanning}, of {offered} problems with a plan "
        "whose candidate lists offer one",
        f"- **false OPTIMAL: {len(false_opt)}**; **bound violations: {len(bound)}**; CP-SAT plans not certified: "
        f"{len(uncertified)}",
        f"- median time CP-SAT / oracle: **{statistics.median(tc) / statistics.median(to):.2f}x** "
        f"({statistics.median(tc):.3f} s against {statistics.median(to):.3f} s); per problem the ratio's median is "
        f"{statistics.median(ratios):.2f}x, CP-SAT faster on {sum(r < 1 for r in ratios)} of {len(ratios)}",
        "", "| method | median s | p90 s | p95 s | max s | total s |", "|---|---:|---:|---:|---:|---:|",
        times_row("cpsat", tc), times_row("exhaustive (oracle)", to), "",
    ]
    for name, group in (("Disagreements", disagree), ("False optima", false_opt), ("Bound violations", bound)):
        if group:
            lines += [f"## {name}", ""] + [f"- `{o.case.command()}`: cpsat {o.cpsat}, oracle {o.oracle}"
                                           for o in group] + [""]
    slow = sorted(outcomes, key=lambda o: -o.cpsat.wall_s)[:5]
    lines += ["## Slowest CP-SAT problems", "", "| problem | cpsat s | oracle s | plan (tok/s/GPU) |",
              "|---|---:|---:|---|"]
    lines += [f"| `{o.case.command()}` | {o.cpsat.wall_s:.3f} | {o.oracle.wall_s:.3f} | {value(o.oracle)} |"
              for o in slow]
    if per_row:
        lines += ["", "## Every problem", "",
                  "| model | cluster | GPUs | cpsat s | oracle s | cpsat | oracle | agree |",
                  "|---|---|---:|---:|---:|---|---|---|"]
        lines += [f"| {o.case.model} | {o.case.cluster} | {o.case.gpus} | {o.cpsat.wall_s:.3f} | "
                  f"{o.oracle.wall_s:.3f} | {value(o.cpsat)} {o.cpsat.status if o.cpsat.value else ''} | "
                  f"{value(o.oracle)} | {'yes' if o.agree else '**NO**'} |" for o in outcomes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--random", type=int, default=0, metavar="N", help="N random problems instead of the grid")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="4 grid rows")
    ap.add_argument("--disagg", type=int, default=0, metavar="N",
                    help="N random disaggregated problems (a third on two clusters; planner.audit.random_disagg_cases)")
    ap.add_argument("--time-limit", type=float, default=60.0, help="per search [s]")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.disagg:
        cases = random_disagg_cases(args.disagg, args.seed)
        title = f"CP-SAT vs the exhaustive oracle: {args.disagg} random disaggregated problems (seed {args.seed})"
        name = "disagg"
    elif args.random:
        cases = random_cases(args.random, args.seed)
        title, name = f"CP-SAT vs the exhaustive oracle: {args.random} random problems (seed {args.seed})", "random"
    else:
        cases = list(QUICK) if args.quick else grid()
        title, name = "CP-SAT vs the exhaustive oracle: the grid", "quick" if args.quick else "grid"
    out = args.out or ROOT / "benchmarks" / "results" / f"solver_vs_oracle_{name}.md"
    check(cases[0], args.time_limit)  # warm up: catalogs, calibration, imports
    rev = revision()  # at the start: the code this process runs
    t0 = time.perf_counter()
    outcomes = []
    for i, case in enumerate(cases, 1):
        outcomes.append(check(case, args.time_limit))
        o = outcomes[-1]
        flag = "" if o.agree and not o.false_optimum and not o.bound_violated else "  <-- DISAGREE"
        print(f"[{i}/{len(cases)}] {o.cpsat.wall_s:6.3f} s / {o.oracle.wall_s:6.3f} s  {case.command()}{flag}",
              file=sys.stderr, flush=True)
    command = "python benchmarks/solver_vs_oracle.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    publish(out, report(outcomes, title, command.strip(), time.perf_counter() - t0, rev,
                        per_row=not (args.random or args.disagg)))
    bad = [o for o in outcomes if not o.agree or o.false_optimum or o.bound_violated]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
