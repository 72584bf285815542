"""What-if studies over the planner: the throughput/interactivity frontier, comparisons, sizing.

- `frontier`: the best tokens/s/GPU at each tokens/s/user SLA from the lowest to the highest
  reachable, with the plan at each point (the study's chart, optimal at every point);
- `compare`: frontiers of several cases (clusters, models, precisions, GPU counts) and their ratio
  at one SLA;
- `size`: the dual problem, the fewest GPUs (whole nodes) serving a demand at an SLA.

Each takes `serving`: 'agg' (the default), 'disagg' (a prefill and a decode pool, planner.disagg) or 'auto'
(both, the better one chosen at each level or case, the other kept alongside).

All return pydantic objects (JSON via ``model_dump``); `planner.plots` draws them. Every point is
a search of the CP-SAT model (or the exhaustive oracle) on the same cost model as `solve`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from planner import cost, disagg, rules
from planner.errors import InfeasibleError, SpecError, TimeLimitError
from planner.oracle import layouts
from planner.search import (
    DEFAULT_TIME_LIMIT_S,
    SERVING_MODES,
    TIME_SLACK_S,
    Method,
    Searcher,
    diagnose,
    min_gpus_to_fit,
    plan_of,
    speculation_variants,
    with_sla,
)
from planner.space import Candidate, Space
from planner.specs import MAX_TOKENS_PER_S_PER_USER, MIN_TOKENS_PER_S_PER_USER, Parallel, Plan, Problem, Serving

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


ServingChoice = Literal["agg", "disagg", "auto"]
"""Serving modes a study takes: aggregated, disaggregated, or the better of the two."""


class ModePoint(BaseModel):
    """One SLA level of one serving mode's own curve."""

    target_tokens_per_s_per_user: float = Field(description="The SLA of this point [tokens/s/user]")
    label: str
    tokens_per_s_per_user: float = Field(description="The plan's interactivity [tokens/s/user]")
    tokens_per_s_per_gpu: float = Field(description="The plan's throughput [tokens/s/GPU]")
    new_layout: bool = Field(description="The layout differs from this mode's point below")


class ModeCurve(BaseModel):
    """One serving mode's best plan at each level it reaches (under auto, the frontier holds one per mode)."""

    serving: Serving
    lowest_tokens_per_s_per_user: float | None = Field(
        None, description="Interactivity of this mode's throughput-optimal plan with no SLA [tokens/s/user]")
    highest_tokens_per_s_per_user: float | None = Field(
        None, description="Highest interactivity this mode reaches [tokens/s/user]")
    error: str | None = Field(None, description="Why this mode has no plan at all")
    points: list[ModePoint] = Field(default_factory=list, description="By increasing SLA")


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
    serving: ServingChoice = Field("agg", description="The serving modes swept: agg, disagg, or auto (both: each "
                                   "point is the better one's plan, the other's best in its alternative)")
    lowest_tokens_per_s_per_user: float = Field(
        description="Interactivity of the throughput-optimal plan with no SLA (auto: the lower of the two modes') "
        "[tokens/s/user]")
    highest_tokens_per_s_per_user: float = Field(description="Highest interactivity any plan reaches [tokens/s/user]")
    points: list[FrontierPoint]
    modes: list[ModeCurve] = Field(default_factory=list, description="Each serving mode's own curve")
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
    serving: Serving | None = Field(None, description="The serving mode of that best plan")
    other_tokens_per_s_per_gpu: float | None = Field(
        None, description="serving auto: the other mode's best tokens/s/GPU at the SLA (None: it has none)")
    ratio: float | None = Field(description="tokens/s/GPU over the first case's")
    plan: FrontierPoint | None


class Comparison(BaseModel):
    """Frontiers of several cases, and each one's best plan at one SLA."""

    at_tokens_per_s_per_user: float
    serving: ServingChoice = Field("agg", description="The serving modes compared (auto: the better per level)")
    rows: list[CompareRow] = Field(description="One per case, in the order given")
    levels: list[float] = Field(description="SLA levels of `grid` [tokens/s/user]")
    grid: list[list[float | None]] = Field(
        description="Best tokens/s/GPU of each case (row) at each level (column); None when unreachable")
    grid_serving: list[list[Serving | None]] = Field(
        default_factory=list, description="The serving mode of each entry of `grid`")
    frontiers: list[Frontier] = Field(description="The frontier of each case that has one, in order")


class SizingAlternative(BaseModel):
    """serving auto: what the other mode needs, or why it has no sizing."""

    serving: Serving
    gpus: int | None = Field(None, description="GPUs it needs: whole nodes [GPUs]")
    gpus_used: int | None = Field(None, description="GPUs its plan occupies [GPUs]")
    label: str | None = None
    reason: str | None = Field(None, description="Why it has no sizing, or that it needs more GPUs than the chosen "
                               "one (None: it has one)")


class Sizing(BaseModel):
    """The fewest GPUs that serve a demand at an SLA."""

    demand_requests_per_s: float = Field(description="Requests per second to serve [requests/s]")
    demand_tokens_per_s: float = Field(description="Output tokens per second to serve [tokens/s]")
    gpus: int = Field(description="GPUs to allocate: whole nodes [GPUs]")
    nodes: int = Field(description="Nodes (or trays) to allocate")
    node_unit: str = Field(description="What one node is on this cluster: 'node' or 'tray'")
    gpus_per_node: int
    gpus_used: int = Field(description="GPUs the replicas occupy (the rest of the last node idles) [GPUs]")
    replicas: int = Field(description="Replicas (disagg: prefill and decode workers together)")
    capacity_tokens_per_s: float = Field(description="Output tokens/s the plan serves at most [tokens/s]")
    capacity_requests_per_s: float = Field(description="Requests/s the plan serves at most [requests/s]")
    utilization: float = Field(description="Demand over capacity")
    max_replica_gpus: int = Field(description="Largest replica (disagg: worker) the search considered [GPUs]")
    plan: Plan
    wall_s: float
    serving: Serving = Field("agg", description="The serving mode of the plan")
    alternative: SizingAlternative | None = Field(None, description="serving auto: the other mode's sizing")


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


def _check_serving(serving: str) -> None:
    if serving not in SERVING_MODES:
        raise SpecError(f"unknown serving mode {serving!r}: agg, disagg or auto")


class _AggSweep:
    """The aggregated searches of a frontier: one Searcher for every level."""

    serving = "agg"

    def __init__(self, p: Problem, space: Space, method: Method, params, deadline: float) -> None:
        self.p, self.search = p, Searcher(p, space, method, params, deadline=deadline)

    @property
    def searches(self) -> int:
        return self.search.searches

    def ends(self) -> tuple[Candidate, Candidate]:
        """(the best plan with no SLA, the plan of the highest tokens/s/user); InfeasibleError when none."""
        fastest = self.search.best("min_tpot", use_sla=False)
        if not fastest:
            raise diagnose(self.search)
        return self.search.best()[0], fastest[0]  # the fastest plan is feasible without an SLA, so some plan is

    def best(self, sla: float) -> Candidate | None:
        found = self.search.best(sla=sla)
        return found[0] if found else None

    def rates(self, c: Candidate) -> tuple[float, float]:
        return _user_rate(self.p, c)

    def key(self, c: Candidate) -> tuple:
        return _key(c)

    def plan(self, sla: float, c: Candidate, wall_s: float) -> Plan:
        return plan_of(with_sla(self.p, sla), c, self.search, wall_s)


class _DisaggSweep:
    """The disaggregated searches of a frontier: one DisaggSearcher (its pools' options tabulated once) for every
    level; the SLA of a level is the decode pool's tokens/s/user floor."""

    serving = "disagg"

    def __init__(self, p: Problem, space: Space, method: Method, params, deadline: float) -> None:
        self.p, self.dp = p, disagg.make_disagg(p)
        self.search = disagg.DisaggSearcher(self.dp, space, space, method, params, deadline)
        self.candidates = space.layouts * (len(space.chunks) + len(space.micro_batches))
        self.searches = 0

    def best(self, sla: float | None) -> disagg.DisaggCandidate | None:
        self.searches += 1
        return self.search.best(sla)

    def ends(self) -> tuple[disagg.DisaggCandidate, disagg.DisaggCandidate]:
        """(the best deployment with no SLA, the deployment of the highest tokens/s/user); InfeasibleError when
        none exists."""
        base = self.best(None)
        if base is None:
            raise disagg.diagnose(self.search, None)
        rates = self._reachable_rates()
        for u in rates[::-1]:  # the first one has a plan but for the model's integer rounding
            fast = self.best(float(u))
            if fast is not None:
                return base, fast
        return base, base

    def _reachable_rates(self) -> np.ndarray:
        """The decode options' tokens/s/user (ascending) up to the highest some deployment reaches, found by
        bisection on the closed-form enumeration (disagg.enumerate_best): a higher floor only removes
        deployments."""
        pre, dec = self.search.tables
        klass, receive = disagg.receive_classes(dec)
        limit = self.search.ttft_limit()
        prows = disagg.prefill_rows(self.dp, pre, receive, limit)
        drows = np.flatnonzero(dec.broken == 0)
        rates = np.unique(1 / dec.tpot_hi_s[drows])

        def reached(i: int) -> bool:
            floor = float(rates[i])
            return disagg.enumerate_best(self.dp, pre, dec, prows, drows, klass, receive, floor, limit) > 0

        lo, hi = 0, len(rates)  # rates[lo] is reached (the base plan meets the lowest), rates[hi] is not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if reached(mid) else (lo, mid)
        return rates[:lo + 1]

    def rates(self, c: disagg.DisaggCandidate) -> tuple[float, float]:
        tpot = cost.decode_pass_time(self.dp.decode, c.decode.model_copy(update={"dp": 1}), c.micro_batch)
        return 1 / float(tpot), disagg.deployment_tokens(self.dp, c) / self.dp.gpus

    def key(self, c: disagg.DisaggCandidate) -> tuple:
        return (c.prefill.key(), c.prefill.dp, c.chunk, c.decode.key(), c.decode.dp, c.micro_batch)

    def plan(self, sla: float, c: disagg.DisaggCandidate, wall_s: float) -> Plan:
        plan = disagg.plan_of(self.search, c, wall_s, self.candidates)
        return plan.model_copy(update={"sla": with_sla(self.p, sla).sla})


class _DraftSweep:
    """The sweeps of one mode, one per draft length k, when speculative decoding searches k: each level's plan is
    the best of them (ties: the shorter draft). Its candidates are (k, the sweep's candidate) pairs."""

    def __init__(self, sweeps: list[tuple[int, _AggSweep | _DisaggSweep]]) -> None:
        self.subs = dict(sweeps)
        self.serving = sweeps[0][1].serving

    @property
    def searches(self) -> int:
        return sum(s.searches for s in self.subs.values())

    def ends(self) -> tuple[tuple, tuple]:
        """(the best plan with no SLA, the plan of the highest tokens/s/user) over the draft lengths with a plan;
        the error of the first when none has one."""
        ends, errors = [], []
        for k, s in self.subs.items():
            try:
                base, fast = s.ends()
                ends.append(((k, base), (k, fast)))
            except InfeasibleError as e:
                errors.append(e)
        if not ends:
            raise errors[0]
        self.subs = {k: self.subs[k] for k in sorted({b[0] for b, _ in ends})}  # those with a plan
        base = max((b for b, _ in ends), key=lambda c: (self.rates(c)[1], -c[0]))
        fast = max((f for _, f in ends), key=lambda c: (self.rates(c)[0], -c[0]))
        return base, fast

    def best(self, sla: float | None) -> tuple | None:
        found = [(k, c) for k, s in self.subs.items() if (c := s.best(sla)) is not None]
        return max(found, key=lambda c: (self.rates(c)[1], -c[0])) if found else None

    def rates(self, c: tuple) -> tuple[float, float]:
        return self.subs[c[0]].rates(c[1])

    def key(self, c: tuple) -> tuple:
        return (c[0], self.subs[c[0]].key(c[1]))

    def plan(self, sla: float, c: tuple, wall_s: float) -> Plan:
        return self.subs[c[0]].plan(sla, c[1], wall_s)


_Sweep = _AggSweep | _DisaggSweep | _DraftSweep


@dataclass
class _Reach:
    """One mode's two ends: its plan with no SLA and its fastest, and their tokens/s/user."""

    base: object
    fast: object
    lowest: float
    highest: float
    wall_s: float


def _reach(s: _Sweep, t0: float) -> _Reach:
    base, fast = s.ends()
    return _Reach(base, fast, s.rates(base)[0], s.rates(fast)[0], time.perf_counter() - t0)


def _sweep(s: _Sweep, reach: _Reach, levels: Sequence[float], progress: Progress) -> dict[float, tuple]:
    """{level: (candidate, wall of its search [s])} of one mode at each of the levels it reaches. Levels are
    visited from low to high; a plan found at one level is optimal at every higher one it still meets (the
    constraint only tightens), so those need no search."""
    walls = {s.key(reach.fast): reach.wall_s, s.key(reach.base): reach.wall_s}
    chosen: list[tuple[float, object, float]] = []
    current = reach.base
    reachable = [x for x in levels if x <= reach.highest]
    for i, sla in enumerate(reachable):
        progress(i, len(reachable), f"{s.serving} SLA {sla:.1f} tokens/s/user")
        if s.rates(current)[0] < sla:  # the current plan misses this level: search it
            t = time.perf_counter()
            current = s.best(sla) or reach.fast  # none only by rounding at the very top: the fastest plan
            walls.setdefault(s.key(current), time.perf_counter() - t)
        chosen.append((sla, current, walls[s.key(current)]))
    return {sla: (c, w) for sla, c, w in _monotone(s, chosen)}


def _monotone(s: _Sweep, chosen: list[tuple[float, object, float]]) -> list[tuple[float, object, float]]:
    """Guard for searches stopped by the time limit: a plan meeting a higher SLA also meets a lower
    one, so a lower level never keeps a worse plan than the level above it."""
    out = list(chosen)
    for k in range(len(out) - 2, -1, -1):
        if s.rates(out[k][1])[1] < s.rates(out[k + 1][1])[1]:
            out[k] = (out[k][0], out[k + 1][1], out[k + 1][2])
    return out


def _layout_of(plan: Plan) -> tuple:
    """What 'the layout changes' compares: the serving mode and the layout of a replica or of each worker."""
    if plan.serving == "disagg" and plan.prefill and plan.decode:
        return ("disagg", plan.prefill.parallel.key(), plan.decode.parallel.key())
    return ("agg", plan.parallel.key())


def _sweeps(p: Problem, space: Space, serving: str, method: Method, params, deadline: float,
            all_layouts: bool) -> tuple[list[_Sweep], dict[str, str]]:
    """The modes a frontier sweeps, and why a mode of `auto` is left out (by mode); with speculative decoding of
    searched draft length, each mode's sweeps of every k (_DraftSweep)."""
    variants = speculation_variants(p)
    if len(variants) > 1:
        if all_layouts:
            raise SpecError("--all-layouts draws each layout's own curve at one draft length: give --draft-tokens")
        per_k = [_sweeps(q, space, serving, method, params, deadline, False) for q in variants]
        modes = [[(q.speculation.draft_tokens, sweeps[i]) for q, (sweeps, _) in zip(variants, per_k)]
                 for i in range(len(per_k[0][0]))]
        return [_DraftSweep(m) for m in modes], per_k[0][1]
    if p.speculation is not None and p.confidence is not None:
        raise SpecError("--confidence checks the SLA at the error bars of runs without speculative decoding: give "
                        "one or the other")
    if serving == "agg":
        return [_AggSweep(p, space, method, params, deadline)], {}
    if p.confidence is not None:
        if serving == "disagg":
            raise SpecError("--confidence applies to aggregated plans only (the error bars are fitted on agg runs)")
        return [_AggSweep(p, space, method, params, deadline)], {"disagg": CONFIDENCE_AGG_ONLY}
    if serving == "disagg":
        if all_layouts:
            raise SpecError("--all-layouts draws aggregated layouts' own curves: give --serving agg or auto")
        return [_DisaggSweep(p, space, method, params, deadline)], {}
    return [_AggSweep(p, space, method, params, deadline), _DisaggSweep(p, space, method, params, deadline)], {}


CONFIDENCE_AGG_ONLY = "--confidence checks aggregated plans only (its error bars come from aggregated runs)"


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
    serving: str = "agg",
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

    serving: 'agg', 'disagg' (planner.disagg: a prefill and a decode pool, the level the decode pool's floor) or
    'auto': both swept over the same levels, from the lowest either reaches to the highest; each point is the
    better mode's plan (ties: agg) with the other's best in its `alternative`, and `modes` holds both curves.
    """
    t0 = time.perf_counter()
    _check_serving(serving)
    for sla in (*(sla_range or ()), *extra):
        _check_level(sla)
    if sla_range and not sla_range[0] <= sla_range[1]:
        raise SpecError(f"SLA range {sla_range[0]:g}:{sla_range[1]:g} must be increasing")
    p = with_sla(problem, None)
    space = Space.of(p, chunks, micro_batches)
    deadline = t0 + (params.time_limit_s if params else DEFAULT_TIME_LIMIT_S)
    sweeps, errors = _sweeps(p, space, serving, method, params, deadline, all_layouts)
    reach: dict[str, _Reach] = {}
    failures: list[InfeasibleError] = []
    for s in sweeps:
        progress(0, 1, f"fastest {s.serving} plan")
        try:
            reach[s.serving] = _reach(s, t0)
        except InfeasibleError as e:
            if len(sweeps) == 1:
                raise
            errors[s.serving] = str(e)
            failures.append(e)
    if not reach:
        raise _no_plan_either(*failures)
    u_min = min(r.lowest for r in reach.values())
    u_max = max(r.highest for r in reach.values())
    lo, hi = sla_range or (max(u_min, MIN_TOKENS_PER_S_PER_USER), min(u_max * (1 - 1e-9), MAX_TOKENS_PER_S_PER_USER))
    levels = sorted(set(sla_levels(lo, hi, points)) | {float(x) for x in extra})
    plans = {s.serving: {sla: s.plan(sla, c, w) for sla, (c, w) in _sweep(s, reach[s.serving], levels,
                                                                          progress).items()}
             for s in sweeps if s.serving in reach}
    progress(1, 1, "done")
    reasons = {**errors, **{m: f"above its highest, {r.highest:.1f} tokens/s/user" for m, r in reach.items()}}
    out_points = _winners(levels, plans, reasons, serving == "auto")
    agg = next((s for s in sweeps if isinstance(s, _AggSweep)), None)  # a _DraftSweep draws no layouts
    curves = layout_curves(agg.search) if (all_layouts and agg is not None) else []
    return Frontier(
        case=case_name(p), model=p.model.name, cluster=p.cluster.name, gpus=p.gpus, isl=p.workload.isl,
        osl=p.workload.osl, precision=p.precision.value,
        expert_precision=p.experts.value if p.mixed_formats else None, max_ttft_s=p.sla.max_ttft_s if p.sla else None,
        confidence=p.confidence, method=method, serving=serving, lowest_tokens_per_s_per_user=u_min,
        highest_tokens_per_s_per_user=u_max, points=out_points,
        unreachable=[x for x in levels if x > u_max], valid_layouts=len(curves) if all_layouts else None,
        layouts=curves, modes=[_mode_curve(m, reach.get(m), plans.get(m, {}), errors.get(m))
                               for m in ("agg", "disagg") if m in reach or m in errors],
        solves=sum(s.searches for s in sweeps), wall_s=time.perf_counter() - t0,
    )


def _no_plan_either(agg: InfeasibleError, dis: InfeasibleError, what: str = "plan") -> InfeasibleError:
    """Neither mode has a plan (or sizing): both reasons in one message; the agg reason's hint."""
    return InfeasibleError(f"no {what}, aggregated or disaggregated: agg: {agg}; disagg: {dis}", agg.reason,
                           agg.reachable)


def _winners(levels: Sequence[float], plans: dict[str, dict[float, Plan]], reasons: dict[str, str], auto: bool
             ) -> list[FrontierPoint]:
    """The frontier's points: at each level some mode reaches, the plan of most tokens/s/GPU (ties: agg); under
    auto with the other mode's best (or why it has none) as its alternative."""
    out: list[FrontierPoint] = []
    for sla in levels:
        here = {m: by[sla] for m, by in plans.items() if sla in by}
        if not here:
            continue
        mode = max(here, key=lambda m: (here[m].metrics.tokens_per_s_per_gpu, m == "agg"))
        plan = here[mode]
        if auto:
            other = "disagg" if mode == "agg" else "agg"
            alt = disagg.alternative_of(here.get(other), other, None if other in here else reasons[other])
            plan = plan.model_copy(update={"alternative": alt})
        new = not out or _layout_of(out[-1]) != _layout_of(plan)
        out.append(FrontierPoint(**plan.model_dump(), target_tokens_per_s_per_user=sla, new_layout=new))
    return out


def _mode_curve(serving: str, reach: _Reach | None, plans: dict[float, Plan], error: str | None) -> ModeCurve:
    """One mode's own curve: its best at each level it reaches."""
    pts: list[ModePoint] = []
    last = None
    for sla, plan in sorted(plans.items()):
        m = plan.metrics
        pts.append(ModePoint(target_tokens_per_s_per_user=sla, label=plan.label,
                             tokens_per_s_per_user=m.tokens_per_s_per_user, tokens_per_s_per_gpu=m.tokens_per_s_per_gpu,
                             new_layout=_layout_of(plan) != last))
        last = _layout_of(plan)
    return ModeCurve(serving=serving, lowest_tokens_per_s_per_user=reach.lowest if reach else None,
                     highest_tokens_per_s_per_user=reach.highest if reach else None, error=error, points=pts)


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
            "serving": pt.serving, "other_tokens_per_s_per_gpu": _other_throughput(pt), "layout": pt.label,
            "new_layout": pt.new_layout, "tp": q.tp, "attention_dp": q.attention_dp, "pp": q.pp, "ep": q.ep,
            "moe_tp": q.moe_tp, "dp": q.dp, "micro_batch": pt.batch.micro_batch,
            "concurrency": pt.batch.concurrency, "chunk_tokens": pt.batch.chunk_tokens,
            "tokens_per_s_per_user": round(m.tokens_per_s_per_user, 4),
            "tokens_per_s_per_gpu": round(m.tokens_per_s_per_gpu, 4), "ttft_ms": round(m.ttft_ms, 2),
            "tpot_ms": round(m.tpot_ms, 4), "memory_per_gpu_gb": round(pt.memory.per_gpu_bytes / 1e9, 3),
            "status": pt.solver.status, **_interval_columns(m),
            **({"draft_tokens": pt.speculation.draft_tokens, "tokens_per_step": round(m.tokens_per_step, 4)}
               if pt.speculation is not None else {}),
        })
    return rows


def _other_throughput(pt: Plan) -> float | None:
    """serving auto: the other mode's best tokens/s/GPU at the point (None: it has none, or not auto)."""
    a = pt.alternative
    return None if a is None or a.tokens_per_s_per_gpu is None else round(a.tokens_per_s_per_gpu, 4)


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
    serving: str = "agg",
) -> Comparison:
    """Frontiers of several cases, each also searched at `at` and at `levels` tokens/s/user, and the
    ratio of each case's best tokens/s/GPU at `at` to the first case's. A case with no plan at all
    (model does not fit, TTFT out of reach) gets a row with the reason and no frontier. `serving` as for
    `frontier`: under auto each row and grid entry is the better mode's, and says which mode it is."""
    if not problems:
        raise SpecError("compare needs at least one case")
    _check_serving(serving)
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
                                      all_layouts=all_layouts, progress=step, serving=serving))
            errors.append(None)
        except InfeasibleError as e:  # the other cases still compare; this one says why it has no plan
            frontiers.append(None)
            errors.append(str(e))
    first = frontiers[0].at(at) if frontiers[0] else None
    base = first.metrics.tokens_per_s_per_gpu if first else None
    rows, grid, modes = [], [], []
    for p, f, err in zip(problems, frontiers, errors):
        pt = f.at(at) if f else None
        thr = pt.metrics.tokens_per_s_per_gpu if pt else None
        ratio = thr / base if (thr is not None and base) else None
        rows.append(CompareRow(case=case_name(p), error=err, tokens_per_s_per_gpu=thr, ratio=ratio, plan=pt,
                               serving=pt.serving if pt else None,
                               other_tokens_per_s_per_gpu=_other_throughput(pt) if pt else None))
        found = [f.at(lvl) if f else None for lvl in levels]
        grid.append([q.metrics.tokens_per_s_per_gpu if q else None for q in found])
        modes.append([q.serving if q else None for q in found])
    return Comparison(at_tokens_per_s_per_user=at, serving=serving, rows=rows, levels=list(levels), grid=grid,
                      grid_serving=modes, frontiers=[f for f in frontiers if f is not None])


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
    serving: str = "agg",
) -> Sizing:
    """The fewest GPUs, in whole nodes (cluster.gpus_per_node), whose replicas together serve the
    demand at the problem's SLA (tokens/s/user, and TTFT if set); the plan says replicas, layout,
    batch and chunk. Demand in requests/s, or in output tokens/s (= requests/s * osl).

    Replicas of up to `replica_limit` GPUs (default `max_replica_gpus`) are considered; ties in
    nodes go to fewer GPUs in use, then to the lower TPOT. CP-SAT chooses one replica option (the
    tabulated options of one replica, reduced per replica size to those no other beats on tokens/s and
    TPOT) and the replica count, under the demand, the GPU budget and every rule.

    serving: 'agg' (replicas as above), 'disagg' (the fewest whole nodes whose best disaggregated plan, workers
    of up to `replica_limit` GPUs, serves the demand: size_disagg) or 'auto' (both; the fewer GPUs win, ties in
    GPUs go to fewer in use, then to agg; the other mode's count in `alternative`). One time limit for all.
    """
    t0 = time.perf_counter()
    _check_serving(serving)
    p = problem
    variants = speculation_variants(p)
    if len(variants) > 1:  # speculative decoding of searched draft length: the fewest GPUs of any k
        found, errors = [], []
        for q in variants:
            try:
                found.append(size(q, demand_requests_per_s=demand_requests_per_s,
                                  demand_tokens_per_s=demand_tokens_per_s, chunks=chunks, micro_batches=micro_batches,
                                  method=method, params=params, max_gpus=max_gpus, replica_limit=replica_limit,
                                  serving=serving))
            except InfeasibleError as e:
                errors.append(e)
        if not found:
            raise errors[0]
        return min(found, key=lambda z: (z.gpus, z.gpus_used, z.plan.metrics.tpot_ms))
    tokens = _demand_tokens(p, demand_requests_per_s, demand_tokens_per_s)
    if max_gpus < 1:
        raise SpecError(f"max GPUs must be at least 1, got {max_gpus}")
    node = p.cluster.gpus_per_node
    max_gpus = max(node, max_gpus // node * node)
    deadline = t0 + (params.time_limit_s if params else DEFAULT_TIME_LIMIT_S)  # one time limit for the whole sizing
    limit = replica_limit or max_replica_gpus(p, method, params, deadline)
    args = (p, tokens, chunks, micro_batches, method, params, max_gpus, limit, deadline, t0)
    if serving == "agg":
        return _size_agg(*args)
    if p.confidence is not None:
        if serving == "disagg":
            raise SpecError("--confidence applies to aggregated plans only (the error bars are fitted on agg runs)")
        return _size_agg(*args).model_copy(update={"alternative": SizingAlternative(serving="disagg",
                                                                                   reason=CONFIDENCE_AGG_ONLY)})
    if serving == "disagg":
        return size_disagg(*args)
    return _size_auto(args)


def _demand_tokens(p: Problem, requests_per_s: float | None, tokens_per_s: float | None) -> float:
    """The demand in output tokens/s, checked (and the SLA a sizing needs) [tokens/s]."""
    if p.sla is None or p.sla.min_tokens_per_s_per_user is None:
        raise SpecError("sizing needs an SLA: min_tokens_per_s_per_user (e.g. 20)")
    if (requests_per_s is None) == (tokens_per_s is None):
        raise SpecError("give the demand in requests/s or in tokens/s (one of them)")
    tokens = tokens_per_s if tokens_per_s is not None else requests_per_s * p.workload.osl
    if not (tokens > 0 and math.isfinite(tokens)):
        raise SpecError(f"demand must be a positive number, got {tokens:g} tokens/s")
    return tokens


def _size_auto(args: tuple) -> Sizing:
    """Both sizings; the one of fewer GPUs (then fewer in use, then agg), the other summarised. The disaggregated
    sizing looks no further than the aggregated count (beyond it agg wins anyway), and where it runs out of time
    the aggregated sizing stands, saying so."""
    p, tokens, chunks, micro_batches, method, params, max_gpus, limit, deadline, t0 = args
    try:
        agg = _size_agg(*args)
    except InfeasibleError as agg_error:
        try:
            dis = size_disagg(*args)
        except InfeasibleError as e:
            raise _no_plan_either(agg_error, e, "sizing") from None
        alt = SizingAlternative(serving="agg", reason=f"no sizing ({agg_error})")
        return dis.model_copy(update={"alternative": alt})
    try:
        dis = size_disagg(p, tokens, chunks, micro_batches, method, params, agg.gpus, limit, deadline, t0)
    except (InfeasibleError, TimeLimitError) as e:
        why = (f"needs more than {agg.gpus} GPUs (searched up to the aggregated count)"
               if isinstance(e, InfeasibleError) and e.reason == "demand" else f"no sizing ({e})")
        return agg.model_copy(update={"alternative": SizingAlternative(serving="disagg", reason=why)})
    best, other = (dis, agg) if (dis.gpus, dis.gpus_used) < (agg.gpus, agg.gpus_used) else (agg, dis)
    alt = SizingAlternative(serving=other.serving, gpus=other.gpus, gpus_used=other.gpus_used, label=other.plan.label)
    return best.model_copy(update={"alternative": alt, "wall_s": time.perf_counter() - t0})


def _demand_error(p: Problem, tokens: float, max_gpus: int) -> InfeasibleError:
    amount = f"{tokens:,.0f}" if tokens < 1e15 else f"{tokens:.3g}"
    return InfeasibleError(
        f"serving {amount} output tokens/s at {p.sla.min_tokens_per_s_per_user:g} tokens/s/user needs more "
        f"than {max_gpus} {p.cluster.name} GPUs", "demand", {"max_gpus": max_gpus})


def _size_agg(p: Problem, tokens: float, chunks: tuple[int, ...] | None, micro_batches: tuple[int, ...] | None,
              method: Method, params, max_gpus: int, limit: int, deadline: float, t0: float) -> Sizing:
    """The aggregated sizing of `size` (max_gpus in whole nodes, replicas of up to `limit` GPUs)."""
    osl, node = p.workload.osl, p.cluster.gpus_per_node
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
        raise _demand_error(p, tokens, max_gpus)
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


def size_disagg(p: Problem, tokens: float, chunks: tuple[int, ...] | None, micro_batches: tuple[int, ...] | None,
                method: Method, params, max_gpus: int, limit: int, deadline: float, t0: float) -> Sizing:
    """The fewest whole nodes whose best disaggregated plan (most output tokens/s on them, one cluster shared by
    both pools, workers of up to `limit` GPUs) serves `tokens` output tokens/s at the problem's SLA and TTFT
    limit; at most max_gpus GPUs (whole nodes).

    More GPUs only add deployments, so serving the demand is monotone in the node count: counts double from one
    node until one serves it, then bisection between the last two. Once the GPUs hold the largest worker, a
    missing plan for want of a worker that fits, meets the SLA or the TTFT limit is final."""
    node, osl = p.cluster.gpus_per_node, p.workload.osl
    space = Space.of(p.model_copy(update={"gpus": limit}), chunks, micro_batches)
    floor = p.sla.min_tokens_per_s_per_user

    def attempt(nodes: int) -> tuple[disagg.DisaggSearcher, disagg.DisaggCandidate | None]:
        s = disagg.DisaggSearcher(disagg.make_disagg(p.model_copy(update={"gpus": nodes * node})), space, space,
                                  method, params, deadline)
        return s, s.best(floor)

    def serves(got: tuple[disagg.DisaggSearcher, disagg.DisaggCandidate | None]) -> bool:
        s, c = got
        return c is not None and disagg.deployment_tokens(s.dp, c) >= tokens

    most = max_gpus // node
    lo, k = 0, 1  # `lo` nodes do not serve the demand (0: none tried)
    while True:
        found = attempt(k)
        if serves(found):
            break
        if found[1] is None and (k * node >= limit or k == most):
            why = disagg.diagnose(found[0], floor)
            if why.reason != "layout" or k == most:
                raise why
        if k == most:
            raise _demand_error(p, tokens, max_gpus)
        lo, k = k, min(2 * k, most)
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = attempt(mid)
        if serves(got):
            found, hi = got, mid
        else:
            lo = mid
    s, c = found
    plan = disagg.plan_of(s, c, time.perf_counter() - t0, space.layouts * (len(space.chunks) +
                                                                          len(space.micro_batches)))
    capacity = plan.metrics.tokens_per_s_per_gpu * plan.gpus
    return Sizing(
        demand_requests_per_s=tokens / osl, demand_tokens_per_s=tokens, gpus=hi * node, nodes=hi,
        node_unit=p.cluster.node_unit, gpus_per_node=node, gpus_used=plan.gpus_used,
        replicas=c.prefill.dp + c.decode.dp, capacity_tokens_per_s=capacity, capacity_requests_per_s=capacity / osl,
        utilization=tokens / capacity, max_replica_gpus=limit, plan=plan, wall_s=time.perf_counter() - t0,
        serving="disagg",
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
