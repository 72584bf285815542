"""What-if studies over the planner: the throughput/interactivity frontier, comparisons, sizing.

- `frontier`: the best tokens/s/GPU at each tokens/s/user SLA from the lowest to the highest
  reachable, with the plan at each point (the study's chart, optimal at every point);
- `compare`: frontiers of several cases (clusters, models, precisions, GPU counts) and their ratio
  at one SLA;
- `size`: the dual problem, the fewest GPUs (whole nodes) serving a demand at an SLA.

All return pydantic objects (JSON via ``model_dump``); `planner.plots` draws them. Every point is
a search of the CP-SAT model (or the exhaustive oracle) on the same cost model as `solve`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from pydantic import BaseModel, Field

from planner import cost, rules
from planner.errors import InfeasibleError, SpecError, TimeLimitError
from planner.oracle import layouts
from planner.search import (
    DEFAULT_TIME_LIMIT_S,
    TIME_SLACK_S,
    Method,
    Searcher,
    diagnose,
    min_gpus_to_fit,
    plan_of,
    with_sla,
)
from planner.space import Candidate, Space
from planner.specs import MAX_TOKENS_PER_S_PER_USER, MIN_TOKENS_PER_S_PER_USER, Parallel, Plan, Problem

Progress = Callable[[int, int, str], None]
"""Progress callback: (steps done, steps in all, what is being done)."""

DEFAULT_POINTS = 40
"""SLA levels a frontier sweeps by default."""


def _quiet(done: int, total: int, what: str) -> None:
    """The default progress callback: silent."""


# --- schema ----------------------------------------------------------------------------------------


class FrontierPoint(Plan):
    """One SLA level of a frontier: the best plan that reaches it (every field of `solve --json`)."""

    target_tokens_per_s_per_user: float = Field(description="The SLA of this point [tokens/s/user]")
    new_layout: bool = Field(description="The layout differs from the point below (a lower SLA)")


class CurvePoint(BaseModel):
    """One (batch, chunk) of a layout on its own Pareto curve."""

    tokens_per_s_per_user: float
    tokens_per_s_per_gpu: float
    micro_batch: int = Field(description="Requests per attention-DP rank per micro-batch [requests]")
    chunk_tokens: int = Field(description="Prefill chunk per iteration and rank [tokens]")


class LayoutCurve(BaseModel):
    """A layout's best tokens/s/GPU at each interactivity it reaches, over all batches and chunks."""

    label: str
    parallel: Parallel
    points: list[CurvePoint] = Field(description="Pareto-optimal points, by increasing tokens/s/user")


class Frontier(BaseModel):
    """The throughput/interactivity frontier of one case."""

    case: str = Field(description="Short name of the case (model, cluster, precision, GPUs)")
    model: str
    cluster: str
    gpus: int
    isl: int
    osl: int
    precision: str
    expert_precision: str | None = Field(None, description="Routed experts' format where it differs from precision")
    max_ttft_s: float | None = Field(None, description="TTFT limit of every point [s]")
    confidence: float | None = Field(
        None, description="SLA levels and the TTFT limit hold at this one-sided quantile of the held-out errors; "
        "the reachable range is at it too (None: the central estimate)")
    method: str
    lowest_tokens_per_s_per_user: float = Field(
        description="Interactivity of the throughput-optimal plan with no SLA [tokens/s/user]")
    highest_tokens_per_s_per_user: float = Field(description="Highest interactivity any plan reaches [tokens/s/user]")
    points: list[FrontierPoint]
    unreachable: list[float] = Field(default_factory=list, description="SLA levels asked for above the highest")
    valid_layouts: int | None = Field(None, description="Layouts with at least one valid batch (--all-layouts)")
    layouts: list[LayoutCurve] = Field(default_factory=list, description="Each layout's own curve (--all-layouts)")
    solves: int = Field(description="Searches run (SLA levels an earlier plan already met need none)")
    wall_s: float = Field(description="Wall time of the sweep [s]")

    def at(self, sla: float) -> FrontierPoint | None:
        """The point whose target is `sla` (within 1e-9 relative), or None."""
        for pt in self.points:
            if math.isclose(pt.target_tokens_per_s_per_user, sla, rel_tol=1e-9):
                return pt
        return None


class CompareRow(BaseModel):
    """One case of a comparison at the chosen SLA."""

    case: str
    error: str | None = Field(None, description="Why the case has no frontier (e.g. its TTFT limit is out of reach)")
    tokens_per_s_per_gpu: float | None = Field(description="Best tokens/s/GPU at the SLA; None when unreachable")
    ratio: float | None = Field(description="tokens/s/GPU over the first case's")
    plan: FrontierPoint | None


class Comparison(BaseModel):
    """Frontiers of several cases, and each one's best plan at one SLA."""

    at_tokens_per_s_per_user: float
    rows: list[CompareRow] = Field(description="One per case, in the order given")
    levels: list[float] = Field(description="SLA levels of `grid` [tokens/s/user]")
    grid: list[list[float | None]] = Field(
        description="Best tokens/s/GPU of each case (row) at each level (column); None when unreachable")
    frontiers: list[Frontier] = Field(description="The frontier of each case that has one, in order")


class Sizing(BaseModel):
    """The fewest GPUs that serve a demand at an SLA."""

    demand_requests_per_s: float = Field(description="Requests per second to serve [requests/s]")
    demand_tokens_per_s: float = Field(description="Output tokens per second to serve [tokens/s]")
    gpus: int = Field(description="GPUs to allocate: whole nodes [GPUs]")
    nodes: int = Field(description="Nodes (or trays) to allocate")
    node_unit: str = Field(description="What one node is on this cluster: 'node' or 'tray'")
    gpus_per_node: int
    gpus_used: int = Field(description="GPUs the replicas occupy (the rest of the last node idles) [GPUs]")
    replicas: int
    capacity_tokens_per_s: float = Field(description="Output tokens/s the plan serves at most [tokens/s]")
    capacity_requests_per_s: float = Field(description="Requests/s the plan serves at most [requests/s]")
    utilization: float = Field(description="Demand over capacity")
    max_replica_gpus: int = Field(description="Largest replica the search considered [GPUs]")
    plan: Plan
    wall_s: float


# --- frontier --------------------------------------------------------------------------------------


def case_name(p: Problem) -> str:
    """'gpt-moe-1.8t on 64 x gb200-nvl72 fp4' ('... bf16 + mxfp4 experts' when the experts differ)."""
    return f"{p.model.name} on {p.gpus} x {p.cluster.name} {p.precision_label}"


def _key(c: Candidate) -> tuple:
    return (c.parallel.key(), c.micro_batch, c.chunk)


def _check_level(sla: float) -> None:
    """An SLA level asked for is within the bounds of an SLA (checked before any search)."""
    if not (math.isfinite(sla) and MIN_TOKENS_PER_S_PER_USER <= sla <= MAX_TOKENS_PER_S_PER_USER):
        raise SpecError(f"SLA level {sla:g} tokens/s/user is out of range: an SLA must be from "
                        f"{MIN_TOKENS_PER_S_PER_USER:g} to {MAX_TOKENS_PER_S_PER_USER:,.0f} tokens/s/user")


def sla_levels(lo: float, hi: float, points: int) -> list[float]:
    """`points` SLA levels from lo to hi, evenly spaced on a log scale [tokens/s/user]."""
    if points < 1:
        raise SpecError(f"points must be at least 1, got {points}")
    if points == 1 or hi <= lo:
        return [hi]
    return [float(x) for x in np.geomspace(lo, hi, points)]


def _user_rate(p: Problem, c: Candidate) -> tuple[float, float]:
    """(tokens/s/user the SLA is checked at, tokens/s/GPU) of a candidate by the float cost model: with
    p.confidence, the tokens/s/user at the pessimistic TPOT (rules.checked_times)."""
    g = cost.metrics_grid(p, c.parallel, c.micro_batch, c.chunk)
    tpot, _ = rules.checked_times(p, g)
    return 1 / float(tpot), float(g["tokens_per_s_per_gpu"])


def frontier(
    problem: Problem,
    *,
    points: int = DEFAULT_POINTS,
    sla_range: tuple[float, float] | None = None,
    extra: Sequence[float] = (),
    chunks: tuple[int, ...] | None = None,
    micro_batches: tuple[int, ...] | None = None,
    method: Method = "cpsat",
    params=None,
    all_layouts: bool = False,
    progress: Progress = _quiet,
) -> Frontier:
    """The best tokens/s/GPU at `points` SLA levels (log-spaced) from the lowest to the highest
    reachable tokens/s/user, or over `sla_range` (lo, hi), plus the `extra` levels.

    The problem's TTFT limit (problem.sla.max_ttft_s) holds at every point; its SLA is ignored. With
    problem.confidence, every level and the TTFT limit hold at that pessimistic quantile (rules.checked_times).
    One Searcher serves every level: the options are tabulated once, and each level is a CP-SAT search
    over the same dominance-reduced options with that level's SLA. Levels are visited from low to
    high; a plan found at one level is optimal at every higher level it still meets (the constraint only
    tightens), so those need no search. The result is monotone: tokens/s/GPU never rises with
    tokens/s/user. Raises InfeasibleError when no plan exists at all.
    """
    t0 = time.perf_counter()
    for sla in (*(sla_range or ()), *extra):
        _check_level(sla)
    if sla_range and not sla_range[0] <= sla_range[1]:
        raise SpecError(f"SLA range {sla_range[0]:g}:{sla_range[1]:g} must be increasing")
    p = with_sla(problem, None)
    search = Searcher(p, Space.of(p, chunks, micro_batches), method, params)
    progress(0, 1, "fastest plan")
    fastest = search.best("min_tpot", use_sla=False)
    if not fastest:
        raise diagnose(search)
    fast = fastest[0]
    base = search.best()[0]  # the fastest plan is feasible without an SLA, so some plan is
    u_max, _ = _user_rate(p, fast)
    u_min, _ = _user_rate(p, base)
    lo, hi = sla_range or (max(u_min, MIN_TOKENS_PER_S_PER_USER), min(u_max * (1 - 1e-9), MAX_TOKENS_PER_S_PER_USER))
    levels = sorted(set(sla_levels(lo, hi, points)) | {float(x) for x in extra})
    known: dict[tuple, tuple[Candidate, float, float, float]] = {}  # key -> (cand, u, thr, wall)
    for cand in (fast, base):
        known[_key(cand)] = (cand, *_user_rate(p, cand), time.perf_counter() - t0)
    chosen: list[tuple[float, Candidate, float]] = []
    current = base
    reachable = [s for s in levels if s <= u_max]
    for i, sla in enumerate(reachable):
        progress(i, len(reachable), f"SLA {sla:.1f} tokens/s/user")
        if known[_key(current)][1] < sla:  # the current plan misses this level: search it
            t = time.perf_counter()
            found = search.best(sla=sla)
            current = found[0] if found else fast  # none only by rounding at the very top: the fastest plan
            known.setdefault(_key(current), (current, *_user_rate(p, current), time.perf_counter() - t))
        chosen.append((sla, current, known[_key(current)][3]))
    unreachable = [s for s in levels if s > u_max]
    progress(len(reachable), len(reachable), "done")
    chosen = _monotone(p, chosen)
    out_points: list[FrontierPoint] = []
    for sla, cand, w in chosen:
        plan = plan_of(with_sla(p, sla), cand, search, w)
        new = not out_points or out_points[-1].parallel.key() != cand.parallel.key()
        out_points.append(FrontierPoint(**plan.model_dump(), target_tokens_per_s_per_user=sla, new_layout=new))
    curves = layout_curves(search) if all_layouts else []
    return Frontier(
        case=case_name(p), model=p.model.name, cluster=p.cluster.name, gpus=p.gpus, isl=p.workload.isl,
        osl=p.workload.osl, precision=p.precision.value,
        expert_precision=p.experts.value if p.mixed_formats else None, max_ttft_s=p.sla.max_ttft_s if p.sla else None,
        confidence=p.confidence, method=method, lowest_tokens_per_s_per_user=u_min,
        highest_tokens_per_s_per_user=u_max, points=out_points,
        unreachable=unreachable, valid_layouts=len(curves) if all_layouts else None, layouts=curves,
        solves=search.searches, wall_s=time.perf_counter() - t0,
    )


def _monotone(p: Problem, chosen: list[tuple[float, Candidate, float]]) -> list[tuple[float, Candidate, float]]:
    """Guard for searches stopped by the time limit: a plan meeting a higher SLA also meets a lower
    one, so a lower level never keeps a worse plan than the level above it."""
    out = list(chosen)
    for k in range(len(out) - 2, -1, -1):
        if _user_rate(p, out[k][1])[1] < _user_rate(p, out[k + 1][1])[1]:
            out[k] = (out[k][0], out[k + 1][1], out[k + 1][2])
    return out


def layout_curves(search: Searcher) -> list[LayoutCurve]:
    """Every valid layout's own Pareto curve over (micro-batch, chunk): memory fits, the chunk keeps
    up and the TTFT limit holds; layouts with no valid batch are left out. From the search's table of
    options (for pictures and counts; the frontier itself comes from the searches)."""
    return [LayoutCurve(label=par.label, parallel=par, points=[
        CurvePoint(tokens_per_s_per_user=u, tokens_per_s_per_gpu=thr, micro_batch=m, chunk_tokens=c)
        for u, thr, m, c in pts]) for par, pts in search.table.layout_curves()]


def frontier_rows(f: Frontier) -> list[dict[str, object]]:
    """One flat row per frontier point (for CSV files and data frames); units in the column names."""
    rows = []
    for pt in f.points:
        q, m = pt.parallel, pt.metrics
        rows.append({
            "case": f.case, "target_tokens_per_s_per_user": round(pt.target_tokens_per_s_per_user, 4),
            "layout": pt.label, "new_layout": pt.new_layout, "tp": q.tp, "attention_dp": q.attention_dp, "pp": q.pp,
            "ep": q.ep, "moe_tp": q.moe_tp, "dp": q.dp, "micro_batch": pt.batch.micro_batch,
            "concurrency": pt.batch.concurrency, "chunk_tokens": pt.batch.chunk_tokens,
            "tokens_per_s_per_user": round(m.tokens_per_s_per_user, 4),
            "tokens_per_s_per_gpu": round(m.tokens_per_s_per_gpu, 4), "ttft_ms": round(m.ttft_ms, 2),
            "tpot_ms": round(m.tpot_ms, 4), "memory_per_gpu_gb": round(pt.memory.per_gpu_bytes / 1e9, 3),
            "status": pt.solver.status, **_interval_columns(m),
        })
    return rows


def _interval_columns(m) -> dict[str, object]:
    """The interval ends of a point's figures as CSV columns (empty without an interval table)."""
    out: dict[str, object] = {"interval_level": m.interval_level}
    for name, pair, digits in (("tokens_per_s_per_gpu", m.tokens_per_s_per_gpu_interval, 4),
                               ("ttft_ms", m.ttft_interval_ms, 2), ("tpot_ms", m.tpot_interval_ms, 4)):
        lo, hi = pair if pair is not None else (None, None)
        stem, unit = (name, "") if not name.endswith("_ms") else (name[:-3], "_ms")
        out[f"{stem}_lo{unit}"] = None if lo is None else round(lo, digits)
        out[f"{stem}_hi{unit}"] = None if hi is None else round(hi, digits)
    return out


# --- compare ---------------------------------------------------------------------------------------


COMPARE_LEVELS = (5.0, 10.0, 20.0, 35.0, 50.0, 100.0, 200.0)
"""SLA levels every comparison is also searched at, for its table [tokens/s/user]."""


def compare(
    problems: Sequence[Problem],
    *,
    at: float,
    points: int = DEFAULT_POINTS,
    sla_range: tuple[float, float] | None = None,
    chunks: tuple[int, ...] | None = None,
    micro_batches: tuple[int, ...] | None = None,
    method: Method = "cpsat",
    params=None,
    all_layouts: bool = False,
    levels: Sequence[float] = COMPARE_LEVELS,
    progress: Progress = _quiet,
) -> Comparison:
    """Frontiers of several cases, each also searched at `at` and at `levels` tokens/s/user, and the
    ratio of each case's best tokens/s/GPU at `at` to the first case's. A case with no plan at all
    (model does not fit, TTFT out of reach) gets a row with the reason and no frontier."""
    if not problems:
        raise SpecError("compare needs at least one case")
    for sla in (at, *levels):
        _check_level(sla)
    frontiers: list[Frontier | None] = []
    errors: list[str | None] = []
    for i, p in enumerate(problems):
        def step(done: int, total: int, what: str, i: int = i, name: str = case_name(p)) -> None:
            progress(i * 1000 + done * 1000 // max(total, 1), 1000 * len(problems), f"{name}: {what}")

        try:
            frontiers.append(frontier(p, points=points, sla_range=sla_range, extra=(at, *levels), chunks=chunks,
                                      micro_batches=micro_batches, method=method, params=params,
                                      all_layouts=all_layouts, progress=step))
            errors.append(None)
        except InfeasibleError as e:  # the other cases still compare; this one says why it has no plan
            frontiers.append(None)
            errors.append(str(e))
    first = frontiers[0].at(at) if frontiers[0] else None
    base = first.metrics.tokens_per_s_per_gpu if first else None
    rows, grid = [], []
    for p, f, err in zip(problems, frontiers, errors):
        pt = f.at(at) if f else None
        thr = pt.metrics.tokens_per_s_per_gpu if pt else None
        ratio = thr / base if (thr is not None and base) else None
        rows.append(CompareRow(case=case_name(p), error=err, tokens_per_s_per_gpu=thr, ratio=ratio, plan=pt))
        grid.append([(q.metrics.tokens_per_s_per_gpu if (f and (q := f.at(lvl))) else None) for lvl in levels])
    return Comparison(at_tokens_per_s_per_user=at, rows=rows, levels=list(levels), grid=grid,
                      frontiers=[f for f in frontiers if f is not None])


# --- size ------------------------------------------------------------------------------------------


MAX_SIZING_GPUS = 65536
"""Most GPUs a sizing considers [GPUs]."""


def max_replica_gpus(p: Problem, method: Method = "cpsat", params=None, deadline: float | None = None) -> int:
    """Largest replica a sizing considers [GPUs]: the power of two at or above both the scale-up
    domain and 4x the fewest GPUs the model fits on (at least 64). Larger replicas only add
    communication; more replicas serve more demand."""
    fit = min_gpus_to_fit(p, method, params, deadline=deadline)
    if fit is None:
        raise InfeasibleError(f"{p.model.name} fits on no layout of {p.cluster.name} GPUs at {p.precision_label}",
                              "fit")
    need = max(64, p.cluster.scaleup_domain_gpus, 4 * fit)
    return 1 << (need - 1).bit_length()


def size(
    problem: Problem,
    *,
    demand_requests_per_s: float | None = None,
    demand_tokens_per_s: float | None = None,
    chunks: tuple[int, ...] | None = None,
    micro_batches: tuple[int, ...] | None = None,
    method: Method = "cpsat",
    params=None,
    max_gpus: int = MAX_SIZING_GPUS,
    replica_limit: int | None = None,
) -> Sizing:
    """The fewest GPUs, in whole nodes (cluster.gpus_per_node), whose replicas together serve the
    demand at the problem's SLA (tokens/s/user, and TTFT if set); the plan says replicas, layout,
    batch and chunk. Demand in requests/s, or in output tokens/s (= requests/s * osl).

    Replicas of up to `replica_limit` GPUs (default `max_replica_gpus`) are considered; ties in
    nodes go to fewer GPUs in use, then to the lower TPOT. CP-SAT chooses one replica option (the
    tabulated options of one replica, reduced per replica size to those no other beats on tokens/s and
    TPOT) and the replica count, under the demand, the GPU budget and every rule.
    """
    t0 = time.perf_counter()
    p = problem
    if p.sla is None or p.sla.min_tokens_per_s_per_user is None:
        raise SpecError("sizing needs an SLA: min_tokens_per_s_per_user (e.g. 20)")
    osl = p.workload.osl
    if (demand_requests_per_s is None) == (demand_tokens_per_s is None):
        raise SpecError("give the demand in requests/s or in tokens/s (one of them)")
    tokens = demand_tokens_per_s if demand_tokens_per_s is not None else demand_requests_per_s * osl
    if not (tokens > 0 and math.isfinite(tokens)):
        raise SpecError(f"demand must be a positive number, got {tokens:g} tokens/s")
    if max_gpus < 1:
        raise SpecError(f"max GPUs must be at least 1, got {max_gpus}")
    node = p.cluster.gpus_per_node
    max_gpus = max(node, max_gpus // node * node)
    deadline = t0 + (params.time_limit_s if params else DEFAULT_TIME_LIMIT_S)  # one time limit for the whole sizing
    limit = replica_limit or max_replica_gpus(p, method, params, deadline)
    one = p.model_copy(update={"gpus": limit})  # one replica of up to `limit` GPUs
    space = replace(Space.of(one, chunks, micro_batches), max_dp=1)
    search = Searcher(one, space, method, params, deadline=deadline)
    if method == "exhaustive":
        cand = _size_exhaustive(one, space, tokens, max_gpus, deadline + TIME_SLACK_S, search.params.time_limit_s)
    else:
        cand = _size_cpsat(search, tokens, max_gpus)
    if cand is None:
        if not search.best():
            raise diagnose(search)
        amount = f"{tokens:,.0f}" if tokens < 1e15 else f"{tokens:.3g}"
        raise InfeasibleError(
            f"serving {amount} output tokens/s at {p.sla.min_tokens_per_s_per_user:g} tokens/s/user needs more "
            f"than {max_gpus} {p.cluster.name} GPUs", "demand", {"max_gpus": max_gpus})
    used = cand.parallel.gpus_used
    nodes = -(-used // node)
    plan_p = p.model_copy(update={"gpus": nodes * node})
    plan = plan_of(plan_p, cand, search, time.perf_counter() - t0)
    capacity = plan.metrics.tokens_per_s_per_gpu * plan.gpus
    return Sizing(
        demand_requests_per_s=tokens / osl, demand_tokens_per_s=tokens, gpus=nodes * node, nodes=nodes,
        node_unit=p.cluster.node_unit, gpus_per_node=node, gpus_used=used, replicas=cand.parallel.dp,
        capacity_tokens_per_s=capacity, capacity_requests_per_s=capacity / osl, utilization=tokens / capacity,
        max_replica_gpus=limit, plan=plan, wall_s=time.perf_counter() - t0,
    )


def _size_cpsat(search: Searcher, tokens: float, max_gpus: int) -> Candidate | None:
    """The sizing as one CP-SAT model: a pool of replica options with a free replica count."""
    from planner.solver import SearchModel

    p, t = search.p, search.table
    every = np.arange(t.size)
    rate = t.concurrency_of(every) / t.tpot_s  # output tokens/s of one replica
    rows = t.front(-rate, group=t.replica_gpus_of(every))
    if not len(rows):
        return None
    need = rules.replicas_needed(tokens, rate[rows], max_gpus + 1)
    replica_gpus = t.replica_gpus_of(rows)
    model = SearchModel(search.params)
    pool = model.add_pool(t, rows, name="replicas", replicas="free",
                          max_replicas=max(1, max_gpus // int(replica_gpus.min())))
    model.add_layout_rules(pool)
    model.add_batch_rules(pool, p.sla.min_tokens_per_s_per_user if p.sla else None)
    model.add_demand(pool, need)
    model.add_gpu_budget([pool], max_gpus)
    model.minimize_nodes_for_demand(pool, p.cluster.gpus_per_node, max_gpus)
    sol = model.solve(search.deadline + TIME_SLACK_S)
    if sol.status == "INFEASIBLE":
        return None
    if sol.status not in ("OPTIMAL", "FEASIBLE"):
        limit = search.params.time_limit_s
        raise TimeLimitError(f"no sizing found within the time limit of {limit:g} s", limit_s=limit)
    k = sol.options["replicas"]
    cand = t.candidate(k, sol.status)
    return replace(cand, parallel=cand.parallel.model_copy(update={"dp": sol.replicas["replicas"]}),
                   model_options=len(rows))


def _size_exhaustive(p: Problem, space: Space, tokens: float, max_gpus: int, deadline: float, limit_s: float
                     ) -> Candidate | None:
    """The sizing by enumeration (the test oracle): for every replica layout and batch meeting the
    SLA, the fewest replicas serving the demand (rules.replicas_needed); fewest nodes, then GPUs, then TPOT."""
    m, c = np.meshgrid(np.asarray(space.micro_batches), np.asarray(space.chunks), indexing="ij")
    node, best = p.cluster.gpus_per_node, None
    for par in layouts(p, space, p.gpus):
        if time.perf_counter() > deadline:
            raise TimeLimitError(f"the sizing's enumeration did not finish within the time limit of {limit_s:g} s",
                                 limit_s=limit_s)
        g = cost.metrics_grid(p, par, m, c)
        ok = rules.batch_ok(p, g)
        rate = g["concurrency"] / g["tpot_s"]
        for i, j in zip(*np.nonzero(ok)):
            replicas = int(rules.replicas_needed(tokens, rate[i, j], max_gpus + 1))
            used = replicas * par.replica_gpus
            if used > max_gpus:
                continue
            score = (-(-used // node), used, float(g["tpot_s"][i, j]))
            if best is None or score < best[0]:
                best = (score, Candidate(par.model_copy(update={"dp": replicas}), int(m[i, j]), int(c[i, j]),
                                         "OPTIMAL"))
    return best[1] if best else None
