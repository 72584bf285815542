"""Time the CP-SAT planner against the exhaustive oracle, and check that they agree.

For every (model, cluster, GPU count) of a grid, this builds the problem with the model's SLA and
workload, then runs ``planner.search._search(problem, Space.of(problem), method)`` for method
``cpsat`` and ``exhaustive``, ``--repeat`` times each, and reports the median wall time of the
whole call (CP-SAT model construction included), measured here with ``time.perf_counter``.

The two agree when both find no plan, or both find one and the tokens/s/GPU of their best
candidates, each recomputed with ``planner.cost.evaluate``, are equal within a relative 1e-3.
A CP-SAT candidate that breaks a layout rule, the memory limit, the chunk rule or the SLA in the
float cost model also counts as a disagreement. The script exits with status 1 if any row
disagrees.

Run from the repository root:

    python benchmarks/solver_vs_oracle.py               # full grid, 3 repeats
    python benchmarks/solver_vs_oracle.py --quick       # a few rows, for a smoke run

The markdown table goes to benchmarks/results/solver_vs_oracle.md (``--out`` to change) and is
printed too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmark the work tree's planner, installed or not

from _common import machine, revision  # noqa: E402  (benchmarks/ is on sys.path)

from planner import cost  # noqa: E402
from planner.rules import layout_violations  # noqa: E402
from planner.search import Method, _search, make_problem  # noqa: E402
from planner.solver import Candidate, SolverParams  # noqa: E402
from planner.space import Space  # noqa: E402
from planner.specs import Problem  # noqa: E402

REL_TOL = 1e-3
"""Largest relative difference of the two best tokens/s/GPU still counted as equal."""


@dataclass(frozen=True)
class Case:
    """The workload and service level a model is benchmarked at."""

    model: str
    isl: int  # [tokens]
    osl: int  # [tokens]
    sla: float  # [tokens/s/user]


MODELS: tuple[Case, ...] = (
    Case("llama-3.1-70b", 4000, 1000, 20.0),
    Case("qwen3-235b-a22b", 4000, 1000, 20.0),
    Case("deepseek-r1", 4000, 1000, 20.0),
    Case("gpt-moe-1.8t", 32768, 1024, 20.0),
)
CLUSTERS: tuple[tuple[str, str], ...] = (("h100-sxm", "fp8"), ("gb200-nvl72", "fp4"), ("b200", "fp4"))
"""Cluster and the weight precision it is benchmarked at."""
GPUS: tuple[int, ...] = (8, 16, 64, 256, 1024)

QUICK: tuple[tuple[str, str, int], ...] = (
    ("gpt-moe-1.8t", "gb200-nvl72", 64),  # the default case of `planner solve`
    ("gpt-moe-1.8t", "h100-sxm", 8),  # does not fit: both must find nothing
    ("llama-3.1-70b", "h100-sxm", 16),
    ("deepseek-r1", "b200", 256),
)
"""(model, cluster, GPUs) rows of --quick."""

SKIP: dict[tuple[str, str, int], str] = {}
"""(model, cluster, GPUs) rows left out of the grid, with the reason printed in the output.

Empty: every row of the grid runs within the per-row budget on a 2-core machine. A row goes here
only when a single run of either method takes minutes.
"""


@dataclass
class Row:
    """One benchmarked combination and its outcome."""

    model: str
    cluster: str
    precision: str
    gpus: int
    combinations: int = 0
    cpsat_s: list[float] = field(default_factory=list)
    exhaustive_s: list[float] = field(default_factory=list)
    cpsat_status: str = ""
    cpsat_value: float | None = None  # best tokens/s/GPU [tokens/s/GPU]
    exhaustive_value: float | None = None
    agree: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """cpsat median / exhaustive median: above 1 when the oracle is faster."""
        ex = statistics.median(self.exhaustive_s)
        return statistics.median(self.cpsat_s) / ex if ex > 0 else float("inf")


def case_of(model: str) -> Case:
    """The benchmark workload and SLA of a model of the grid."""
    return next(c for c in MODELS if c.model == model)


def problem_of(model: str, cluster: str, precision: str, gpus: int) -> Problem:
    """The problem of one row: the model's workload and SLA on `gpus` GPUs of `cluster`."""
    c = case_of(model)
    return make_problem(model=model, cluster=cluster, gpus=gpus, isl=c.isl, osl=c.osl, precision=precision,
                        min_tokens_per_s_per_user=c.sla)


def timed(p: Problem, space: Space, method: Method, params: SolverParams) -> tuple[list[Candidate], float]:
    """Best candidate of one search and the wall time of the whole call [s]."""
    t0 = time.perf_counter()
    found, _ = _search(p, space, method, params=params)
    return found, time.perf_counter() - t0


def throughput(p: Problem, cand: Candidate) -> float:
    """Tokens/s/GPU of a candidate by the float cost model [tokens/s/GPU]."""
    return cost.evaluate(p, cand.parallel, cand.micro_batch, cand.chunk).metrics.tokens_per_s_per_gpu


def broken_rules(p: Problem, cand: Candidate) -> list[str]:
    """Rules a candidate breaks in the float cost model (empty when it is a valid plan)."""
    ev = cost.evaluate(p, cand.parallel, cand.micro_batch, cand.chunk)
    out = layout_violations(p, cand.parallel)
    if ev.memory.per_gpu_bytes > ev.memory.usable_bytes:
        out.append("memory")
    if ev.metrics.prefill_share >= 1:
        out.append("chunk_keeps_up")
    if p.sla and ev.metrics.tokens_per_s_per_user < p.sla.min_tokens_per_s_per_user * (1 - 1e-9):
        out.append("sla")
    return out


def best_value(p: Problem, found: list[Candidate]) -> float | None:
    """Tokens/s/GPU of the best candidate, None when there is none [tokens/s/GPU]."""
    return throughput(p, found[0]) if found else None


def same_value(a: float | None, b: float | None) -> bool:
    """Both None, or equal within the relative tolerance."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b), 1e-12)


def run_row(row: Row, repeat: int, budget_s: float, params: SolverParams) -> None:
    """Time both methods on one row and compare their best plans."""
    p = problem_of(row.model, row.cluster, row.precision, row.gpus)
    space = Space.of(p)
    row.combinations = space.size
    first: dict[str, list[Candidate]] = {}
    runs: tuple[tuple[Method, list[float]], ...] = (("cpsat", row.cpsat_s), ("exhaustive", row.exhaustive_s))
    for method, times in runs:
        for i in range(repeat):
            found, wall = timed(p, space, method, params)
            times.append(wall)
            if i == 0:
                first[method] = found
            elif not same_value(best_value(p, found), best_value(p, first[method])):
                row.notes.append(f"{method} found a different optimum on run {i + 1} than on run 1")
            if wall > budget_s and i + 1 < repeat:
                row.notes.append(f"{method}: run {i + 1} took {wall:.1f} s, over the {budget_s:g} s row budget; "
                                 f"median of {i + 1} of {repeat} runs")
                break
    cp, ex = first["cpsat"], first["exhaustive"]
    row.cpsat_value, row.exhaustive_value = best_value(p, cp), best_value(p, ex)
    valid = True
    if cp:
        row.cpsat_status = cp[0].status
        broken = broken_rules(p, cp[0])
        if broken:
            valid = False
            row.notes.append(f"cpsat plan {cp[0].parallel.label} m={cp[0].micro_batch} chunk={cp[0].chunk} "
                             f"breaks {', '.join(broken)} in the float cost model")
    else:
        timed_out = max(row.cpsat_s) >= params.time_limit_s
        row.cpsat_status = "UNKNOWN (time limit)" if timed_out else "INFEASIBLE"
        valid = not timed_out
    row.agree = valid and same_value(row.cpsat_value, row.exhaustive_value)
    if not same_value(row.cpsat_value, row.exhaustive_value):
        def say(name: str, found: list[Candidate], v: float | None) -> str:
            if not found or v is None:
                return f"{name} no plan"
            return f"{name} {found[0].parallel.label} m={found[0].micro_batch} chunk={found[0].chunk} {v:.4f}"

        row.notes.append(f"{say('cpsat', cp, row.cpsat_value)} vs {say('exhaustive', ex, row.exhaustive_value)} "
                         f"tok/s/GPU")


def fmt_s(values: list[float]) -> str:
    """Median of the timings [s]."""
    return f"{statistics.median(values):.3f}"


def fmt_value(row: Row) -> str:
    if row.exhaustive_value is None and row.cpsat_value is None:
        return "none"
    v = row.exhaustive_value if row.exhaustive_value is not None else row.cpsat_value
    return f"{v:,.1f}"


def table(rows: list[Row]) -> list[str]:
    """The markdown table of the rows, notes as numbered footnotes."""
    head = ["model", "cluster", "GPUs", "combinations in the space", "cpsat median s", "exhaustive median s",
            "ratio", "cpsat status", "agree", "best tok/s/GPU"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 4 + ["---"] * 2 + ["---:"]) + "|"]
    notes: list[str] = []
    for r in rows:
        mark = ""
        for n in r.notes:
            notes.append(n)
            mark += f" [{len(notes)}]"
        cells = [r.model, f"{r.cluster} ({r.precision})", str(r.gpus), f"{r.combinations:,}", fmt_s(r.cpsat_s),
                 fmt_s(r.exhaustive_s), f"{r.ratio:.2f}", r.cpsat_status, ("yes" if r.agree else "**NO**") + mark,
                 fmt_value(r)]
        out.append("| " + " | ".join(cells) + " |")
    if notes:
        out.append("")
        out += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return out


def machine_line() -> str:
    """The machine and the OR-Tools version."""
    try:
        ortools_version = metadata.version("ortools")
    except metadata.PackageNotFoundError:
        ortools_version = "?"
    return machine(f"OR-Tools {ortools_version}")

def report(rows: list[Row], skipped: list[str], args: argparse.Namespace, params: SolverParams,
           started: dt.datetime, elapsed_s: float, load: tuple[float, float, float] | None,
           rev: str) -> str:
    """The whole markdown report."""
    cmd = shlex.join(["python", "benchmarks/solver_vs_oracle.py", *sys.argv[1:]])
    sla = "; ".join(f"{c.model}: {c.sla:g} tok/s/user, isl/osl {c.isl}/{c.osl}" for c in MODELS)
    bad = [r for r in rows if not r.agree]
    ratios = [r.ratio for r in rows]
    lines = [
        "# CP-SAT planner vs exhaustive oracle",
        "",
        f"Machine: {machine_line()}. Date: {started:%Y-%m-%d %H:%M} UTC.{rev} Total run time {elapsed_s:.0f} s."
        + (f" Load average at start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}." if load else ""),
        "",
        f"Reproduce: `{cmd}`",
        "",
        f"Workloads and SLA: {sla}. Weights at the precision next to the cluster; KV cache at the planner's "
        f"default. CP-SAT: {params.workers} workers, time limit {params.time_limit_s:g} s, seed {params.seed}.",
        "",
        f"Times are the median over {args.repeat} run{'s' if args.repeat > 1 else ''} of the whole "
        "`_search(problem, Space.of(problem), method)` "
        "call (CP-SAT model construction included). Ratio = cpsat median / exhaustive median (above 1: the "
        f"oracle is faster). Agree: both find no plan, or both best plans' tokens/s/GPU by `cost.evaluate` are "
        f"within a relative {REL_TOL:g} (and the CP-SAT plan obeys every rule in the float model). "
        "Best tok/s/GPU is the oracle's; \"none\" when no plan meets the SLA (or fits).",
        "",
        *table(rows),
        "",
        f"Rows: {len(rows)}; disagreements: {len(bad)}; ratio min {min(ratios):.2f}, median "
        f"{statistics.median(ratios):.2f}, max {max(ratios):.2f}." if rows else "No rows.",
    ]
    if skipped:
        lines += ["", "Left out:", *[f"- {s}" for s in skipped]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per method and row (median reported)")
    ap.add_argument("--quick", action="store_true", help=f"only {len(QUICK)} rows, for a smoke run")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown file [default: benchmarks/results/solver_vs_oracle.md, "
                         "solver_vs_oracle.quick.md with --quick]")
    ap.add_argument("--row-budget", type=float, default=60.0,
                    help="stop repeating a method on a row once one run took longer than this [s]")
    ap.add_argument("--time-limit", type=float, default=SolverParams().time_limit_s,
                    help="CP-SAT time limit per search [s]")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    out = args.out or ROOT / "benchmarks" / "results" / (
        "solver_vs_oracle.quick.md" if args.quick else "solver_vs_oracle.md")
    params = SolverParams(time_limit_s=args.time_limit)

    grid = list(QUICK) if args.quick else [
        (c.model, cl, g) for c, (cl, _), g in product(MODELS, CLUSTERS, GPUS)]
    precision = dict(CLUSTERS)
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    rev = f" {revision()}." if revision() else ""  # at the start: the code the runs use
    rows: list[Row] = []
    skipped: list[str] = []
    for n, (model, cluster, gpus) in enumerate(grid, 1):
        if (model, cluster, gpus) in SKIP:
            skipped.append(f"{model} on {gpus} {cluster}: {SKIP[model, cluster, gpus]}")
            continue
        row = Row(model, cluster, precision[cluster], gpus)
        run_row(row, args.repeat, args.row_budget, params)
        rows.append(row)
        print(f"[{n}/{len(grid)}] {model} {cluster} {gpus}: cpsat {fmt_s(row.cpsat_s)} s, exhaustive "
              f"{fmt_s(row.exhaustive_s)} s, {row.cpsat_status}, {'agree' if row.agree else 'DISAGREE'}",
              file=sys.stderr, flush=True)
    text = report(rows, skipped, args, params, started, time.perf_counter() - t0, load, rev)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}", file=sys.stderr)
    return 0 if all(r.agree for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
