"""Random problems like the solver audit's, and the check of CP-SAT against the exhaustive oracle on them.

Used by benchmarks/solver_vs_oracle.py (--random N --seed S) and by the tests (a fast subset). A case is
drawn over every catalog model and cluster, 1-128 GPUs, isl 128-32768, osl 64-4096 tokens, an SLA of
5-200 tokens/s/user, every weight precision and, on a third of the cases, a TTFT limit of 0.2-20 s.
Both methods solve it through planner.search.solve, the way `planner solve --method ...` does; they
agree when both find a plan of the same tokens/s/GPU, or both find none for the same reason with the
same reachable figure.
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, field

import numpy as np

from planner import catalog
from planner.errors import InfeasibleError, PlannerError
from planner.search import make_problem, solve
from planner.specs import Precision, Problem, Speculation

REL_TOL = 1e-9
"""Largest relative difference of two tokens/s/GPU (or reachable figures) still counted as equal."""


@dataclass(frozen=True)
class Case:
    """One random problem, as `planner solve` options."""

    model: str
    cluster: str
    gpus: int
    isl: int  # [tokens]
    osl: int  # [tokens]
    precision: str
    sla: float  # [tokens/s/user]
    ttft: float | None  # [s]
    serving: str = "agg"  # agg, disagg or auto
    decode_cluster: str | None = None  # disagg: decode pool on another GPU type
    decode_gpus: int | None = None  # its GPUs
    chunks: tuple[int, ...] | None = None  # candidate lists (None: the defaults)
    micro_batches: tuple[int, ...] | None = None
    speculation: Speculation | None = None  # speculative decoding (None: none)

    def problem(self) -> Problem:
        """The Problem of this case (the shipped calibration)."""
        return make_problem(model=self.model, cluster=self.cluster, gpus=self.gpus, isl=self.isl, osl=self.osl,
                            precision=self.precision, min_tokens_per_s_per_user=self.sla, max_ttft_s=self.ttft,
                            speculation=self.speculation)

    def command(self) -> str:
        """The `planner solve` command line of this case."""
        args = ["planner", "solve", "--model", self.model, "--cluster", self.cluster, "--gpus", str(self.gpus),
                "--isl", str(self.isl), "--osl", str(self.osl), "--precision", self.precision,
                "--sla", f"{self.sla:g}tok/s"]
        if self.ttft is not None:
            args += ["--ttft", f"{self.ttft:g}s"]
        if self.serving != "agg":
            args += ["--serving", self.serving]
        if self.decode_cluster is not None:
            args += ["--decode-cluster", self.decode_cluster, "--decode-gpus", str(self.decode_gpus)]
        for flag, values in (("--chunks", self.chunks), ("--micro-batches", self.micro_batches)):
            if values is not None:
                args += [flag, ",".join(str(v) for v in values)]
        s = self.speculation
        if s is not None:
            args += ["--spec", s.method.value + (f":{s.draft_model}" if s.draft_model else "")]
            if s.draft_tokens is not None:
                args += ["--draft-tokens", str(s.draft_tokens)]
            if s.acceptance is not None:
                args += ["--acceptance", f"{s.acceptance:g}"]
        return shlex.join(args)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def random_cases(n: int, seed: int, max_gpus: int = 128) -> list[Case]:
    """`n` random cases from `seed` (the same seed, the same cases)."""
    rng = np.random.default_rng(seed)
    models, clusters = catalog.names("models"), catalog.names("clusters")
    precisions = [p.value for p in Precision]
    out = []
    for _ in range(n):
        out.append(Case(
            model=str(rng.choice(models)), cluster=str(rng.choice(clusters)),
            gpus=int(rng.integers(1, max_gpus + 1)),
            isl=int(round(_log_uniform(rng, 128, 32768))), osl=int(round(_log_uniform(rng, 64, 4096))),
            precision=str(rng.choice(precisions)), sla=round(_log_uniform(rng, 5, 200), 1),
            ttft=round(_log_uniform(rng, 0.2, 20), 2) if rng.random() < 1 / 3 else None,
        ))
    return out


DISAGG_CHUNKS = (512, 2048, 8192)
"""Prefill chunks of the random disaggregated cases: a short list keeps the oracle, which enumerates every
worker count of both pools for every pair of options, quick [tokens]."""
DISAGG_MICRO_BATCHES = (1, 4, 16, 64, 256)
"""Decode micro-batches of the random disaggregated cases [requests]."""


def random_disagg_cases(n: int, seed: int, max_gpus: int = 16, hetero_share: float = 1 / 3) -> list[Case]:
    """`n` random disaggregated cases from `seed`: drawn as random_cases (up to `max_gpus` GPUs), on the short
    candidate lists above; on `hetero_share` of them the decode pool runs on another cluster with 1-max_gpus
    GPUs of its own."""
    rng = np.random.default_rng(seed)
    clusters = catalog.names("clusters")
    out = []
    for base in random_cases(n, seed, max_gpus):
        hetero = rng.random() < hetero_share
        other = str(rng.choice([c for c in clusters if c != base.cluster])) if hetero else None
        out.append(Case(base.model, base.cluster, base.gpus, base.isl, base.osl, base.precision, base.sla,
                        base.ttft, serving="disagg", decode_cluster=other,
                        decode_gpus=int(rng.integers(1, max_gpus + 1)) if hetero else None,
                        chunks=DISAGG_CHUNKS, micro_batches=DISAGG_MICRO_BATCHES))
    return out


@dataclass
class Result:
    """What one method answered: a plan (status, tokens/s/GPU, bound) or why there is none."""

    status: str  # OPTIMAL, FEASIBLE, infeasible, error
    value: float | None = None  # best tokens/s/GPU [tokens/s/GPU]
    bound: float | None = None  # proven upper bound [tokens/s/GPU]
    certified: bool | None = None
    reason: str = ""  # why there is no plan (InfeasibleError.reason) or the error
    reachable: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    label: str = ""  # the plan's layout, e.g. 'TP16 PP1 DP1'
    spans: tuple[str, ...] = ()  # groups of the plan crossing scale-up domains (Plan.spans_domains)


def run(case: Case, method: str, time_limit_s: float = 60.0) -> Result:
    """Solve a case by one method, timing the whole call (tabulation, search, plan, diagnosis) [s]."""
    from planner.solver import SolverParams

    p = case.problem()
    t0 = time.perf_counter()
    try:
        plan = solve(p, method=method, params=SolverParams(time_limit_s=time_limit_s), serving=case.serving,
                     decode_cluster=case.decode_cluster, decode_gpus=case.decode_gpus, chunks=case.chunks,
                     micro_batches=case.micro_batches)[0]
    except InfeasibleError as e:
        return Result("infeasible", reason=e.reason, reachable=dict(e.reachable), wall_s=time.perf_counter() - t0)
    except PlannerError as e:
        return Result("error", reason=f"{type(e).__name__}: {e}", wall_s=time.perf_counter() - t0)
    return Result(plan.solver.status, plan.metrics.tokens_per_s_per_gpu, plan.solver.objective_bound,
                  plan.solver.certified, wall_s=time.perf_counter() - t0, label=plan.label,
                  spans=tuple(s.group for s in plan.spans_domains))


def spanning_tp_possible(case: Case) -> bool:
    """Some layout of the case's candidate lists has a tp group spanning scale-up domains that the layout rules
    admit (whole domains, dividing the heads, within the GPUs): cross-domain TP is an option the search weighs."""
    from planner.rules import layout_masks
    from planner.space import Space

    p = case.problem()
    tp = np.array([t for t in Space.of(p).tp if t > p.cluster.scaleup_domain_gpus])
    if not len(tp):
        return False
    masks = layout_masks(p, tp, 1, 1, 1)
    return bool((~(masks["heads_divisible"] | masks["tp_spans_whole_domains"] | masks["gpu_budget"])).any())


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


@dataclass
class Outcome:
    """CP-SAT against the oracle on one case."""

    case: Case
    cpsat: Result
    oracle: Result

    @property
    def agree(self) -> bool:
        """Same plan value, or no plan for the same reason with the same reachable figures."""
        c, o = self.cpsat, self.oracle
        if c.value is not None and o.value is not None:
            return _close(c.value, o.value)
        if c.status == o.status == "infeasible":
            return c.reason == o.reason and c.reachable.keys() == o.reachable.keys() and all(
                _close(c.reachable[k], o.reachable[k]) for k in c.reachable)
        return False

    @property
    def feasibility_disagrees(self) -> bool:
        """One method found a plan and the other none."""
        return (self.cpsat.value is None) != (self.oracle.value is None)

    @property
    def false_optimum(self) -> bool:
        """CP-SAT said OPTIMAL below the oracle's optimum."""
        c, o = self.cpsat, self.oracle
        return (c.status == "OPTIMAL" and c.value is not None and o.value is not None
                and c.value < o.value * (1 - REL_TOL))

    @property
    def bound_violated(self) -> bool:
        """CP-SAT's proven bound lies below a plan the float model accepts (its own or the oracle's)."""
        c, o = self.cpsat, self.oracle
        if c.bound is None:
            return False
        best = max(v for v in (c.value, o.value) if v is not None)
        return c.bound < best * (1 - REL_TOL)


def check(case: Case, time_limit_s: float = 60.0) -> Outcome:
    """Both methods on one case."""
    return Outcome(case, run(case, "cpsat", time_limit_s), run(case, "exhaustive", time_limit_s))
