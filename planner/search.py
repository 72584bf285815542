"""The library API: build a problem, search it, estimate one plan.

`Searcher` is the one search entry point: it picks the backend (CP-SAT over the options the cost model
tabulates, or the exhaustive oracle), holds a problem's table of options across searches (solve,
diagnosis, every level of a frontier), certifies every result, and keeps to the time limit. `solve`,
`estimate` and `min_gpus_to_fit` are built on it; everything returns the pydantic objects of
planner.specs, and the CLI only renders them.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from planner import cost, percentiles, rules, uncertainty
from planner.catalog import load_cluster, load_model
from planner.errors import InfeasibleError, InvalidLayoutError, SearchTooLargeError, SpecError, TimeLimitError
from planner.options import BATCH_LIFT, MAX_OPTIONS, SpaceTooLarge, Table, tabulate
from planner.space import Candidate, Objective, OutOfTime, Space, short_list
from planner.specs import (
    SLA,
    Calibration,
    ClusterSpec,
    ConfidenceInfo,
    DraftOption,
    ModelSpec,
    Parallel,
    Plan,
    Precision,
    Problem,
    SolverInfo,
    Speculation,
    Workload,
)

Method = Literal["cpsat", "exhaustive"]

DEFAULT_MODEL = "gpt-moe-1.8t"
DEFAULT_CLUSTER = "gb200-nvl72"
DEFAULT_GPUS = 64
DEFAULT_ISL = 32768
DEFAULT_OSL = 1024
DEFAULT_PRECISION = Precision.fp4
"""Defaults: the case of NVIDIA's trillion-parameter study."""
DEFAULT_TIME_LIMIT_S = 60.0
"""Time limit of a search [s]."""
TIME_SLACK_S = 1.0
"""How far past its time limit a search may run to finish what it started: a time limit bounds the wall
time within about this much [s]."""
CERTIFY_REL_TOL = 1e-9
"""Relative slack of the certificate: a plan within it of the best evaluated option counts as optimal."""


SEARCHED_DRAFT_TOKENS: tuple[int, ...] = (1, 2, 3, 4)
"""Draft lengths k a search tries when Speculation.draft_tokens is None [tokens per step]."""

CHECKPOINT = "checkpoint"
"""The precision that asks for the model's published checkpoint formats (ModelSpec.checkpoint_precision)."""


def _kv_default(cluster: ClusterSpec, precision: Precision, experts: Precision | None = None) -> Precision:
    """FP8 KV cache where the GPU has FP8 math and some weights (dense or routed experts) are quantised,
    else BF16."""
    quantised = precision != Precision.bf16 or experts not in (None, Precision.bf16)
    return Precision.fp8 if quantised and cluster.supports("fp8") else Precision.bf16


def _format(name: Precision | str, what: str) -> Precision:
    """A Precision from a member or any of its names (Precision.names()); SpecError listing them."""
    try:
        return Precision(name)
    except ValueError:
        known = ", ".join(Precision.names() + ([CHECKPOINT] if what == "precision" else []))
        raise SpecError(f"unknown {what} {str(name)!r}; known: {known}") from None


def resolve_precisions(model: ModelSpec, precision: Precision | str,
                       expert_precision: Precision | str | None = None) -> tuple[Precision, Precision | None]:
    """(weight format, routed-expert format or None when the same) for a model.

    `precision` 'checkpoint' takes the formats of the model's published checkpoint
    (ModelSpec.checkpoint_precision); an `expert_precision` given overrides the experts' format.
    """
    if isinstance(precision, str) and precision.strip().lower() == CHECKPOINT:
        ckpt = model.checkpoint_precision
        if ckpt is None:
            raise SpecError(f"{model.name} states no checkpoint formats (checkpoint_precision in its model file): "
                            f"give a precision ({', '.join(x.value for x in Precision)})")
        prec, experts = ckpt.dense, ckpt.experts
    else:
        prec, experts = _format(precision, "precision"), None
    if expert_precision is not None:
        experts = _format(expert_precision, "expert precision")
    return prec, (experts if experts != prec else None)


def make_problem(
    model: str | Path | ModelSpec = DEFAULT_MODEL,
    cluster: str | Path | ClusterSpec = DEFAULT_CLUSTER,
    gpus: int = DEFAULT_GPUS,
    isl: int = DEFAULT_ISL,
    osl: int = DEFAULT_OSL,
    precision: Precision | str = DEFAULT_PRECISION,
    kv_precision: Precision | str | None = None,
    min_tokens_per_s_per_user: float | None = None,
    max_ttft_s: float | None = None,
    calibration: Calibration | str | Path | None = None,
    backend: str = "*",
    memory_utilization: float | None = None,
    expert_precision: Precision | str | None = None,
    workload: Workload | None = None,
    tpot_percentile: int | None = None,
    ttft_percentile: int | None = None,
    speculation: Speculation | None = None,
) -> Problem:
    """A validated Problem from names or specs; raises SpecError/UnknownNameError on bad input.

    precision: the weight format (a Precision or any of Precision.names(), e.g. 'awq' = int4), or
    'checkpoint' for the formats of the model's published checkpoint (gpt-oss: BF16 attention, MXFP4
    experts). expert_precision: the routed experts' format where it differs (MoE models only).
    calibration: a Calibration, a path to a calibration YAML, or None for the shipped one.
    backend: the serving engine whose calibration profile applies ('trtllm', 'vllm', 'sglang', '*').
    memory_utilization: the engine's HBM fraction, overriding the calibration's (e.g. 0.85).
    workload: the traffic (length spread, trace, prefix cache: planner.traffic), replacing isl/osl.
    tpot_percentile / ttft_percentile: the SLA floor / TTFT limit hold at this percentile of requests
    (50, 90, 95, 99) instead of the mean.
    speculation: speculative decoding (planner.specs.Speculation: mtp, eagle or a draft model; draft_tokens None
    = searched over SEARCHED_DRAFT_TOKENS; acceptance None = the calibration's).
    """
    from pydantic import ValidationError

    from planner.calibrate import load_calibration
    from planner.catalog import validation_message

    cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
    if memory_utilization is not None:
        if not 0.3 < memory_utilization <= 1.0:
            raise SpecError(f"memory utilization must be in (0.3, 1], got {memory_utilization:g}")
        cal = cal.model_copy(update={"memory_utilization": memory_utilization})
    m = model if isinstance(model, ModelSpec) else load_model(model)
    c = cluster if isinstance(cluster, ClusterSpec) else load_cluster(cluster)
    prec, experts = resolve_precisions(m, precision, expert_precision)
    try:
        kv = Precision(kv_precision) if kv_precision is not None else _kv_default(c, prec, experts)
    except ValueError:
        raise SpecError(f"unknown KV-cache precision {str(kv_precision)!r}; known: fp8, bf16") from None
    try:
        sla = (
            SLA(min_tokens_per_s_per_user=min_tokens_per_s_per_user, max_ttft_s=max_ttft_s,
                tpot_percentile=tpot_percentile if min_tokens_per_s_per_user is not None else None,
                ttft_percentile=ttft_percentile if max_ttft_s is not None else None)
            if min_tokens_per_s_per_user is not None or max_ttft_s is not None
            else None
        )
        if not isinstance(backend, str):
            raise SpecError(f"backend must be an engine name (trtllm, vllm, sglang or *), got {backend!r}")
        p = Problem(
            model=m, cluster=c, gpus=gpus, workload=workload or Workload(isl=isl, osl=osl), precision=prec,
            expert_precision=experts, kv_precision=kv, sla=sla, calibration=cal, backend=backend.lower(),
        )
    except ValidationError as e:
        raise SpecError(validation_message(e)) from None
    return with_speculation(p, speculation)


def with_speculation(p: Problem, speculation: Speculation | None) -> Problem:
    """p with this speculative decoding (None: none), checked: an MTP module in the model, a draft model of the
    target's vocabulary; SpecError otherwise."""
    from pydantic import ValidationError

    from planner.catalog import validation_message

    if speculation is not None and not isinstance(speculation, Speculation):
        raise SpecError(f"speculation must be a planner.specs.Speculation, got {type(speculation).__name__}")
    try:
        q = Problem(**{**{name: getattr(p, name) for name in Problem.model_fields}, "speculation": speculation})
    except ValidationError as e:
        raise SpecError(validation_message(e)) from None
    if speculation is not None:
        cost.draft_problem(q)  # loads and checks a draft model
    return q


def speculation_variants(p: Problem) -> list[Problem]:
    """The problems a search of p solves: p itself without speculative decoding or with a given draft length,
    else one per draft length k of SEARCHED_DRAFT_TOKENS (the plan keeps the best)."""
    s = p.speculation
    if s is None or s.draft_tokens is not None:
        return [p]
    return [p.model_copy(update={"speculation": s.model_copy(update={"draft_tokens": k})})
            for k in SEARCHED_DRAFT_TOKENS]


def with_sla(p: Problem, min_tokens_per_s_per_user: float | None) -> Problem:
    """p with this tokens/s/user floor (None: none), keeping its TTFT limit."""
    ttft = p.sla.max_ttft_s if p.sla else None
    if min_tokens_per_s_per_user is None and ttft is None:
        return p.model_copy(update={"sla": None})
    kept = p.sla.model_dump() if p.sla else {}
    return p.model_copy(update={"sla": SLA(**{**kept, "min_tokens_per_s_per_user": min_tokens_per_s_per_user})})


def objective_value(p: Problem, cand: Candidate, objective: Objective) -> float:
    """A candidate's value of `objective` by the float cost model: tokens/s/GPU, TPOT [s], TTFT [s] (those
    the rules check, rules.checked_times) or replica GPUs."""
    if objective == "min_gpus":
        return float(cand.parallel.replica_gpus)
    g = cost.metrics_grid(p, cand.parallel, cand.micro_batch, cand.chunk)
    if objective == "throughput":
        return float(g["tokens_per_s_per_gpu"])
    tpot, ttft = rules.checked_times(p, g)
    return float(tpot if objective == "min_tpot" else ttft)


class Searcher:
    """Searches of one problem over one space, by one method: CP-SAT over the tabulated options
    (planner.options, planner.solver) or the exhaustive oracle (planner.oracle).

    The table of options is built once, on the first CP-SAT search, and serves every later search of the
    problem (other objectives, SLA levels). Every result is certified: re-checked by the plain rule
    checker on the float cost model and, for CP-SAT, compared with the best option of the whole table.
    The time limit (params.time_limit_s, from construction) bounds all searches together.
    """

    def __init__(self, p: Problem, space: Space, method: Method = "cpsat", params=None,
                 lift: tuple[str, ...] = BATCH_LIFT, deadline: float | None = None) -> None:
        """`deadline` (time.perf_counter): shared with an enclosing search, instead of the time limit from now."""
        from planner.solver import SolverParams

        if method not in ("cpsat", "exhaustive"):
            raise SpecError(f"unknown search method {method!r}: cpsat or exhaustive")
        self.p, self.space, self.method, self.lift = p, space, method, lift
        self.params = params or SolverParams(time_limit_s=DEFAULT_TIME_LIMIT_S)
        limit = self.params.time_limit_s
        if not (isinstance(limit, (int, float)) and math.isfinite(limit) and limit > 0):
            raise SpecError(f"time limit must be a positive number of seconds, got {limit!r}")
        self.started = time.perf_counter()
        self.deadline = self.started + limit if deadline is None else deadline
        self._table: Table | None = None
        self._rows: dict[tuple, np.ndarray] = {}
        self.searches = 0

    @property
    def table(self) -> Table:
        """The problem's options, tabulated on first use; a space the time limit (with TIME_SLACK_S) cannot
        cover, or that does not fit in memory, is refused before any work."""
        if self._table is None:
            limit = self.params.time_limit_s
            try:
                self._table = tabulate(self.p, self.space, self.lift, deadline=self.deadline + TIME_SLACK_S)
            except SpaceTooLarge as e:
                if e.memory:
                    why, left = f"more than the {MAX_OPTIONS:,} one search holds in memory", None
                else:
                    why, left = (f"about {e.seconds:.2g} s to evaluate, more than the {limit:g} s time limit "
                                 "allows"), limit
                raise SearchTooLargeError(
                    f"the search space holds {e.options:,} (layout, micro-batch, chunk) options: {why}",
                    options=e.options, seconds=e.seconds, limit_s=left) from None
            except OutOfTime as e:
                raise TimeLimitError(
                    f"no plan found within the time limit of {limit:g} s ({e.done:,} of {e.total:,} options "
                    "evaluated)", limit_s=limit) from None
        return self._table

    @property
    def evaluated(self) -> int | None:
        """Options the cost model evaluated (None before the first CP-SAT search) [options]."""
        return self._table.size if self._table is not None else None

    def _floor(self, use_sla: bool, sla: float | None) -> float | None:
        if sla is not None:
            return sla
        return self.p.sla.min_tokens_per_s_per_user if (use_sla and self.p.sla) else None

    def best(self, objective: Objective = "throughput", *, use_sla: bool = True, use_ttft: bool = True,
             top: int = 1, sla: float | None = None) -> list[Candidate]:
        """Up to `top` best distinct layouts (best first) by `objective`, under every rule; the SLA floor is
        `sla` when given, else the problem's (when use_sla), and the TTFT limit the problem's (when
        use_ttft). Empty when no plan exists. Raises TimeLimitError when the time limit passes first."""
        self.searches += 1
        floor = self._floor(use_sla, sla)
        if self.method == "exhaustive":
            return self._exhaustive(objective, floor, use_ttft, top)
        return self._cpsat(objective, floor, use_ttft, top)

    def _exhaustive(self, objective: Objective, floor: float | None, use_ttft: bool, top: int) -> list[Candidate]:
        from planner.oracle import exhaustive

        p = with_sla(self.p, floor)
        try:
            found, _ = exhaustive(p, self.space, objective, use_sla=floor is not None, use_ttft=use_ttft, top=top,
                                  deadline=self.deadline + TIME_SLACK_S)
        except OutOfTime:
            limit = self.params.time_limit_s
            raise TimeLimitError(f"the enumeration did not finish within the time limit of {limit:g} s",
                                 limit_s=limit) from None
        return [self._certify(c, objective, floor, use_ttft, None) for c in found]

    def rows(self, objective: Objective, use_ttft: bool, with_tpot: bool, exclude_layouts: tuple[int, ...] = ()
             ) -> np.ndarray:
        """The options a CP-SAT search of `objective` needs (Table.reduce), computed once per kind."""
        key = (objective, use_ttft, with_tpot, exclude_layouts)
        if key not in self._rows:
            self._rows[key] = self.table.reduce(objective, use_ttft, with_tpot=with_tpot,
                                                exclude_layouts=exclude_layouts)
        return self._rows[key]

    def _cpsat(self, objective: Objective, floor: float | None, use_ttft: bool, top: int) -> list[Candidate]:
        """The best layout; for `top` > 1, again without the layouts found (dominance is recomputed without
        them, since their options dominated others)."""
        from planner.solver import SearchModel

        table = self.table
        with_tpot = objective == "throughput" or floor is not None
        out: list[Candidate] = []
        found: tuple[int, ...] = ()
        for _ in range(top):
            rows = self.rows(objective, use_ttft, with_tpot, found)
            model = SearchModel(self.params)
            pool = model.add_pool(table, rows, name="plan")
            model.add_layout_rules(pool)
            model.add_batch_rules(pool, floor, use_ttft)
            model.add_gpu_budget([pool], self.p.gpus)
            admitted = table.obeys(use_ttft, floor, rows)  # the scale is set at the best of these
            values = table.thr[rows] if objective == "throughput" else table.key(objective)[rows]
            if objective == "throughput":
                model.maximize_throughput(pool, float(values[admitted].max()) if admitted.any() else None)
            else:
                model.minimize(pool, values, float(values[admitted].min()) if admitted.any() else None)
            sol = model.solve(self.deadline + TIME_SLACK_S)
            if sol.status == "MODEL_INVALID":
                raise RuntimeError(f"CP-SAT refused the model of {self.p.model.name} on {self.p.gpus} GPUs")  # a bug
            if sol.status not in ("OPTIMAL", "FEASIBLE"):
                if sol.status != "INFEASIBLE" and not out:
                    raise TimeLimitError(f"no plan found within the time limit of {self.params.time_limit_s:g} s",
                                         limit_s=self.params.time_limit_s)
                break
            k = sol.options["plan"]
            cand = replace(table.candidate(k, sol.status, sol.bound if objective == "throughput" else None),
                           model_options=len(rows))
            out.append(self._certify(cand, objective, floor, use_ttft, table, found))
            found += (int(table.layout_of(k)),)
        return out

    def _certify(self, cand: Candidate, objective: Objective, floor: float | None, use_ttft: bool,
                 table: Table | None, exclude_layouts: tuple[int, ...] = ()) -> Candidate:
        """Re-check a result: every rule on the float cost model (plain checker); with a table, no option of
        it obeying every rule (outside the layouts already found) beats the plan, and the bound is at least
        the best one. A failed check never leaves the status OPTIMAL: the bound becomes the table's best."""
        p = with_sla(self.p, floor)
        broken = rules.violations(p, cand.parallel, cand.micro_batch, cand.chunk, use_sla=floor is not None,
                                  use_ttft=use_ttft)
        if broken:
            raise RuntimeError(f"search result {cand.parallel.label} m={cand.micro_batch} chunk={cand.chunk} "
                               f"breaks {broken} in the float cost model")  # a bug, never a plan
        if table is None:
            return replace(cand, certified=True if self.method == "exhaustive" else None)
        best = table.best_value(objective, floor, use_ttft, exclude_layouts)
        if best is None:  # the table finds no valid option where the plain checker passed one: a bug
            raise RuntimeError(f"the table of options and the rule checker disagree on {cand.parallel.label}")
        value = objective_value(p, cand, objective)
        maximise = objective == "throughput"
        beaten = best is not None and (best > value * (1 + CERTIFY_REL_TOL) if maximise
                                       else best < value * (1 - CERTIFY_REL_TOL))
        bound = cand.objective_bound
        if maximise and best is not None and (bound is None or bound < best):
            bound = best  # the table's best bounds every evaluated option, so the optimum
        status = "FEASIBLE" if beaten else cand.status
        return replace(cand, status=status, objective_bound=bound, certified=not beaten)


def _fit_search(p: Problem, method: Method, params, chunks: tuple[int, ...] | None,
                deadline: float | None) -> Searcher:
    big = p.model_copy(update={"gpus": max(FIT_SEARCH_LIMIT, p.gpus), "sla": None})
    return Searcher(big, Space.of(big, chunks=chunks, micro_batches=(1,)), method, params, lift=(), deadline=deadline)


FIT_SEARCH_LIMIT = 4096
"""Largest GPU count the 'fewest GPUs it fits on' search considers, or the GPUs given if more [GPUs]."""


def min_gpus_to_fit(p: Problem, method: Method = "cpsat", params=None, chunks: tuple[int, ...] | None = None,
                    deadline: float | None = None) -> int | None:
    """Fewest GPUs of the problem's cluster on which some layout fits in memory [GPUs], or None.

    One request per attention-DP rank, any of the chunk sizes (default: the default grid); `deadline` as
    for Searcher.
    """
    found = _fit_search(p, method, params, chunks, deadline).best("min_gpus", use_sla=False, use_ttft=False)
    return found[0].parallel.replica_gpus if found else None


def diagnose(s: Searcher) -> InfeasibleError:
    """Why no plan exists: no chunk keeps up, the model does not fit, the rules leave no layout, or the
    TTFT limit or the SLA is out of reach (saying what is reachable)."""
    p, space = s.p, s.space
    if not s.best(use_sla=False, use_ttft=False):
        w = p.workload
        need = int(cost.tokens_per_step(p) * w.prefill_tokens // w.osl) + 1  # one per rank needs chunk > E isl/osl
        if max(space.chunks) < need:
            return InfeasibleError(
                f"no chunk in {short_list(space.chunks)} keeps the batch full: with isl {w.isl} / osl {w.osl} even one "
                f"request per rank needs a prefill chunk of at least {need} tokens", "chunk", {"chunk": need})
        fewest = min_gpus_to_fit(p, s.method, s.params, chunks=space.chunks, deadline=s.deadline)
        if fewest is None:
            return InfeasibleError(
                f"{p.model.name} fits on no layout of up to {max(FIT_SEARCH_LIMIT, p.gpus)} {p.cluster.name} GPUs "
                f"at {p.precision_label}", "fit")
        if fewest <= p.gpus:
            return InfeasibleError(
                f"no plan satisfies the rules on {p.gpus} {p.cluster.name} GPUs, although the weights fit on "
                f"{fewest}: {rules.RULES['layers_divisible']}, {rules.RULES['heads_divisible']} and the GPU budget "
                "leave no layout", "layout", {"gpus": fewest})
        return InfeasibleError(
            f"{p.model.name} does not fit on {p.gpus} {p.cluster.name} GPUs at {p.precision_label}: it fits on "
            f"{fewest} {p.cluster.name} GPUs", "fit", {"gpus": fewest})
    limit = p.sla.max_ttft_s if p.sla else None
    at = f" at the {p.confidence:.0%} pessimistic end" if p.confidence is not None else ""
    ttft_q = f" at p{p.sla.ttft_percentile}" if p.sla and p.sla.ttft_percentile else ""
    tpot_q = f" at p{p.sla.tpot_percentile}" if p.sla and p.sla.tpot_percentile else ""
    fast = s.best("min_tpot", use_sla=False, use_ttft=True)
    if not fast:
        quick = s.best("min_ttft", use_sla=False, use_ttft=False)
        best = objective_value(p, quick[0], "min_ttft") * 1e3
        return InfeasibleError(
            f"TTFT limit {limit * 1e3:.0f} ms{ttft_q} is unreachable: the lowest TTFT{ttft_q} any plan reaches "
            f"here{at} is {best:.0f} ms", "ttft", {"ttft_ms": best})
    speed = 1 / objective_value(p, fast[0], "min_tpot")
    sla = p.sla.min_tokens_per_s_per_user if p.sla else None
    within = f" within TTFT {limit * 1e3:.0f} ms{ttft_q}" if limit else ""
    return InfeasibleError(
        f"SLA {sla:g} tokens/s/user{tpot_q} is unreachable: the highest{tpot_q} any plan reaches here{within}{at} is "
        f"{speed:.1f} tokens/s/user ({fast[0].parallel.label})", "sla", {"tokens_per_s_per_user": speed})


def build_plan(p: Problem, cand: Candidate, info: SolverInfo) -> Plan:
    """The Plan of a candidate, with figures recomputed by the float cost model, their intervals (when the
    calibration has an interval table) and, with p.confidence, the figures the SLA was checked at."""
    ev = cost.evaluate(p, cand.parallel, cand.micro_batch, cand.chunk)
    m = ev.metrics
    if p.speculation is None:  # the interval table holds the errors of runs without speculative decoding
        m = m.model_copy(update=uncertainty.plan_intervals(p, m.tpot_ms, m.ttft_ms, m.tokens_per_s_per_gpu,
                                                           ev.batch.concurrency))
    metrics = m.model_copy(update={
        "percentiles": percentiles.agg_percentiles(p, cand.parallel, cand.micro_batch, cand.chunk)})
    confidence = None
    if p.confidence is not None:
        tpot, ttft = rules.checked_times(p, cost.metrics_grid(p, cand.parallel, cand.micro_batch, cand.chunk))
        confidence = ConfidenceInfo(level=p.confidence, tpot_ms=float(tpot) * 1e3, ttft_ms=float(ttft) * 1e3)
    return Plan(
        model=p.model.name, cluster=p.cluster.name, gpus=p.gpus, gpus_used=cand.parallel.gpus_used,
        isl=p.workload.isl, osl=p.workload.osl, precision=p.precision, kv_precision=p.kv_precision,
        gemm_math=p.gemm_math, expert_precision=p.experts if p.mixed_formats else None,
        expert_gemm_math=p.math_for(p.experts) if p.mixed_formats else None, label=cand.parallel.label,
        parallel=cand.parallel, batch=ev.batch, metrics=metrics, memory=ev.memory, solver=info, sla=p.sla,
        workload=p.workload, backend=p.backend, speculation=cost.resolved_speculation(p), confidence=confidence,
        notes=cost.approximation_notes(p),
        spans_domains=cost.domain_spans(p, cand.parallel),
    )


def limits(p: Problem, cand: Candidate, space: Space) -> list[str]:
    """The rules that stop this layout from batching more: those the next larger micro-batch breaks.

    Every chunk of the space is tried for the larger batch; a rule is named when no chunk avoids it.
    """
    larger = [m for m in space.micro_batches if m > cand.micro_batch]
    if not larger:
        return ["batch_grid"]
    g = cost.metrics_grid(p, cand.parallel, larger[0], np.asarray(space.chunks))
    masks = {r: np.broadcast_to(b, (len(space.chunks),)) for r, b in rules.batch_masks(p, g).items()}
    broken = [{r for r, b in masks.items() if b[i]} for i in range(len(space.chunks))]
    if any(not b for b in broken):
        return []  # a larger batch is feasible here; the objective preferred this one
    return sorted(set.intersection(*broken)) or sorted(set.union(*broken))


def plan_of(p: Problem, cand: Candidate, searcher: Searcher, wall_s: float) -> Plan:
    """The Plan of a search result: figures from the float cost model, the search's status, proven bound,
    gap and certificate, and the rules that stop a larger batch."""
    space, bound = searcher.space, cand.objective_bound
    info = SolverInfo(method=searcher.method, status=cand.status, wall_s=wall_s, candidates=space.size,
                      evaluated=searcher.evaluated, model_options=cand.model_options, certified=cand.certified,
                      objective_bound=bound, limited_by=limits(p, cand, space))
    plan = build_plan(p, cand, info)
    gap = None
    if bound is not None and bound > 0:
        gap = max(0.0, (bound - plan.metrics.tokens_per_s_per_gpu) / bound)
    return plan.model_copy(update={"solver": plan.solver.model_copy(update={"gap": gap})})


SERVING_MODES = ("agg", "disagg", "auto")
"""Serving modes `solve` takes: aggregated, disaggregated, or the better of the two."""


def solve(
    problem: Problem | None = None,
    *,
    method: Method = "cpsat",
    top: int = 1,
    chunks: tuple[int, ...] | None = None,
    micro_batches: tuple[int, ...] | None = None,
    params=None,
    confidence: float | None = None,
    serving: str = "agg",
    decode_cluster: str | Path | ClusterSpec | None = None,
    decode_gpus: int | None = None,
    speculation: Speculation | None = None,
    **problem_args,
) -> list[Plan]:
    """The `top` best distinct layouts (best first) maximising tokens/s/GPU under the SLA.

    Give a Problem, or the make_problem keywords (model, cluster, gpus, isl, osl, precision,
    kv_precision, min_tokens_per_s_per_user, max_ttft_s, calibration). With `confidence` (0.5 <= C < 1,
    or the problem's own), the SLA and the TTFT limit hold at the one-sided quantile C of each option's
    held-out errors (planner.uncertainty); the objective stays the central tokens/s/GPU, and each plan's
    `confidence` compares it with the best plan at the central estimate (a second search). Raises
    InfeasibleError saying what is reachable when no plan exists, TimeLimitError or SearchTooLargeError
    when the time limit does not allow an answer.

    serving: 'agg' (every replica prefills and decodes), 'disagg' (a prefill and a decode pool, planner.disagg:
    one plan) or 'auto' (both searched; the better plan first, the other mode's best in its `alternative`; with
    top > 1 the best disagg plan ranks among the agg layouts). decode_cluster / decode_gpus: a decode pool on
    another GPU type (disagg only), its own GPU count (default: as many as `gpus`).

    speculation (or the problem's own): speculative decoding; with draft_tokens None each k of
    SEARCHED_DRAFT_TOKENS is searched and the best kept (ties: the shorter draft). Each plan records its k and
    acceptance (`speculation`), its tokens per step (`metrics.tokens_per_step`) and, in `speculation_options`,
    the best plan of every k searched and without speculation (k = 0, for comparison only).
    """
    if serving not in SERVING_MODES:
        raise SpecError(f"unknown serving mode {serving!r}: agg, disagg or auto")
    if decode_gpus is not None and decode_cluster is None:
        raise SpecError("--decode-gpus needs --decode-cluster (one cluster shares its --gpus between the pools)")
    if serving == "agg" and (decode_cluster is not None or decode_gpus is not None):
        raise SpecError("--decode-cluster and --decode-gpus plan a disaggregated decode pool: give --serving "
                        "disagg or auto")
    p = problem or make_problem(**problem_args)
    if speculation is not None:
        p = with_speculation(p, speculation)
    if p.speculation is not None and (confidence is not None or p.confidence is not None):
        raise SpecError("--confidence checks the SLA at the error bars of runs without speculative decoding: give "
                        "one or the other")
    if serving == "agg":
        if p.speculation is None:
            return _solve_agg(p, method, top, chunks, micro_batches, params, confidence)
        if top < 1:
            raise SpecError(f"top must be at least 1, got {top}")
        deadline = time.perf_counter() + (params.time_limit_s if params is not None else DEFAULT_TIME_LIMIT_S)
        return _agg_plans(p, method, top, chunks, micro_batches, params, deadline)
    from planner import disagg

    if confidence is not None:
        p = uncertainty.with_confidence(p, confidence)
    if top < 1:
        raise SpecError(f"top must be at least 1, got {top}")
    started = time.perf_counter()
    limit = (params.time_limit_s if params is not None else DEFAULT_TIME_LIMIT_S)
    deadline = started + limit
    hetero = decode_cluster is not None
    if serving == "disagg" or hetero:  # another GPU type decodes (auto too): only a disaggregated plan uses both
        if top > 1:
            raise SpecError("--top lists aggregated layouts; a disaggregated search returns its one best plan")
        return [_disagg_plan(p, decode_cluster, decode_gpus, method, chunks, micro_batches, params, deadline)]
    agg_plans, agg_error = [], None
    try:
        agg_plans = _agg_plans(p, method, top, chunks, micro_batches, params, deadline)
    except InfeasibleError as e:
        agg_error = e
    if p.confidence is not None:  # the error bars are fitted on aggregated runs only
        if agg_error is not None:
            raise agg_error
        why = "--confidence checks aggregated plans only: its error bars come from aggregated runs"
        return [agg_plans[0].model_copy(update={"alternative": disagg.alternative_of(None, "disagg", why)}),
                *agg_plans[1:]]
    try:
        dis = _disagg_plan(p, None, None, method, chunks, micro_batches, params, deadline)
    except TimeLimitError as e:  # the aggregated plan stands, and says the other search did not finish
        if agg_error is not None:
            raise
        best = agg_plans[0].model_copy(update={"alternative": disagg.alternative_of(None, "disagg", str(e))})
        return [best, *agg_plans[1:]]
    except InfeasibleError as e:
        if agg_error is not None:
            raise InfeasibleError(f"no plan, aggregated or disaggregated: agg: {agg_error}; disagg: {e}",
                                  agg_error.reason, agg_error.reachable) from None
        best = agg_plans[0].model_copy(update={"alternative": disagg.alternative_of(None, "disagg", str(e))})
        return [best, *agg_plans[1:]]
    if agg_error is not None:
        return [dis.model_copy(update={"alternative": disagg.alternative_of(None, "agg", str(agg_error))})]
    agg_best = agg_plans[0]
    if dis.metrics.tokens_per_s_per_gpu > agg_best.metrics.tokens_per_s_per_gpu:
        ranked = [dis.model_copy(update={"alternative": disagg.alternative_of(agg_best, "agg")}), *agg_plans]
    else:
        agg_best = agg_best.model_copy(update={"alternative": disagg.alternative_of(dis, "disagg")})
        ranked = sorted([agg_best, *agg_plans[1:], dis], key=lambda q: -q.metrics.tokens_per_s_per_gpu)
    return ranked[:top]


def _agg_plans(p: Problem, method: Method, top: int, chunks: tuple[int, ...] | None,
               micro_batches: tuple[int, ...] | None, params, deadline: float) -> list[Plan]:
    """The aggregated plans of `solve`: one search, or with speculative decoding one per draft length
    (over_draft_lengths), all within `deadline` (time.perf_counter)."""
    if p.speculation is None:
        return _solve_agg(p, method, top, chunks, micro_batches, params, None)
    return over_draft_lengths(p, lambda q: _solve_agg(q, method, top, chunks, micro_batches, params, None,
                                                      deadline=deadline), top)


def _disagg_plan(p: Problem, decode_cluster, decode_gpus: int | None, method: Method, chunks: tuple[int, ...] | None,
                 micro_batches: tuple[int, ...] | None, params, deadline: float) -> Plan:
    """The disaggregated plan of `solve`: one search, or with speculative decoding (both pools run the draft)
    the best over the draft lengths (over_draft_lengths)."""
    from planner import disagg

    def one(q: Problem) -> list[Plan]:
        return [disagg.solve_disagg(disagg.make_disagg(q, decode_cluster, decode_gpus), method=method, chunks=chunks,
                                    micro_batches=micro_batches, params=params, deadline=deadline)]

    return one(p)[0] if p.speculation is None else over_draft_lengths(p, one, 1)[0]


def over_draft_lengths(p: Problem, run, top: int, errors: tuple[type[Exception], ...] = (InfeasibleError,)
                       ) -> list[Plan]:
    """The best `top` distinct layouts of a speculative problem over its draft lengths: `run(q)` (best first,
    raising one of `errors` when q has no plan) for each problem of speculation_variants(p) and, for
    comparison only, for p without speculation (k = 0). Ranked by tokens/s/GPU, ties to the shorter draft;
    each plan carries the best of every k in `speculation_options`. Raises the error of the draft length whose
    reach is best when none has a plan."""
    variants = speculation_variants(p)
    found: dict[int, list[Plan]] = {}
    failed: dict[int, Exception] = {}
    for q in (*variants, p.model_copy(update={"speculation": None})):
        k = cost.draft_tokens(q)
        try:
            found[k] = run(q)
        except errors as e:
            failed[k] = e
    ranked = sorted(((plan, k) for k, plans in found.items() if k > 0 for plan in plans),
                    key=lambda x: (-x[0].metrics.tokens_per_s_per_gpu, x[1]))
    if not ranked:
        raise _best_error([failed[cost.draft_tokens(q)] for q in variants])
    options = []
    for q in (p.model_copy(update={"speculation": None}), *variants):
        k = cost.draft_tokens(q)
        best = found[k][0] if k in found else None
        options.append(DraftOption(
            draft_tokens=k, tokens_per_step=cost.tokens_per_step(q), label=best.label if best else None,
            tokens_per_s_per_gpu=best.metrics.tokens_per_s_per_gpu if best else None,
            tokens_per_s_per_user=best.metrics.tokens_per_s_per_user if best else None,
            reason=None if best else str(failed[k])))
    out, seen = [], set()
    for plan, _ in ranked:
        if plan.label not in seen:
            seen.add(plan.label)
            out.append(plan.model_copy(update={"speculation_options": options}))
    return out[:top]


def _best_error(errors: list[Exception]) -> Exception:
    """Of the errors of several draft lengths, the one saying the most is reachable: the highest tokens/s/user,
    the lowest TTFT, the fewest GPUs (InfeasibleError.reachable), else the first."""
    def reach(e: Exception) -> float:
        got = getattr(e, "reachable", None) or {}
        if "tokens_per_s_per_user" in got:
            return -got["tokens_per_s_per_user"]
        if "ttft_ms" in got:
            return got["ttft_ms"]
        return got.get("gpus", math.inf)

    return min(errors, key=reach)


def _solve_agg(
    problem: Problem | None,
    method: Method,
    top: int,
    chunks: tuple[int, ...] | None,
    micro_batches: tuple[int, ...] | None,
    params,
    confidence: float | None,
    deadline: float | None = None,
    **problem_args,
) -> list[Plan]:
    """The aggregated search of `solve` (`deadline`: shared with other searches, time.perf_counter)."""
    p = problem or make_problem(**problem_args)
    if confidence is not None:
        p = uncertainty.with_confidence(p, confidence)
    if top < 1:
        raise SpecError(f"top must be at least 1, got {top}")
    s = Searcher(p, Space.of(p, chunks, micro_batches), method, params, deadline=deadline)
    found = s.best(top=top)
    wall = time.perf_counter() - s.started
    if not found:
        raise diagnose(s)
    plans = [plan_of(p, cand, s, wall) for cand in found]
    if p.confidence is None:
        return plans
    central = Searcher(uncertainty.with_confidence(p, None), s.space, method, s.params, deadline=s.deadline).best()
    ref = build_plan(p, central[0], SolverInfo(method="estimate", status="EVALUATED", wall_s=0.0)) if central else None
    thr = ref.metrics.tokens_per_s_per_gpu if ref else None
    out = []
    for plan in plans:
        info = plan.confidence.model_copy(update={
            "central_tokens_per_s_per_gpu": thr, "central_label": ref.label if ref else None,
            "cost": 1 - plan.metrics.tokens_per_s_per_gpu / thr if thr else None})
        out.append(plan.model_copy(update={"confidence": info}))
    return out


def estimate(
    problem: Problem | None = None,
    *,
    parallel: Parallel,
    concurrency: int | None = None,
    chunk: int = 2048,
    speculation: Speculation | None = None,
    **problem_args,
) -> Plan:
    """Evaluate one given plan with the cost model; raises InvalidLayoutError naming the broken rule.

    concurrency is requests per replica; it must split evenly over attention_dp * pp. speculation (or the
    problem's own): speculative decoding; with draft_tokens None every k of SEARCHED_DRAFT_TOKENS is evaluated
    and the one of most tokens/s/GPU kept (speculation_options: each k and k = 0).
    """
    p = problem or make_problem(**problem_args)
    if speculation is not None:
        p = with_speculation(p, speculation)
    if p.speculation is not None:
        return over_draft_lengths(p, lambda q: [_estimate(q, parallel, concurrency, chunk)], 1,
                                  errors=(InvalidLayoutError,))[0]
    return _estimate(p, parallel, concurrency, chunk)


def estimate_disagg(p: Problem, prefill: Parallel, chunk: int, decode: Parallel, micro_batch: int,
                    decode_cluster=None, decode_gpus: int | None = None) -> Plan:
    """disagg.estimate of a given deployment (prefill.dp / decode.dp workers), the decode pool on
    `decode_cluster` when given; with speculative decoding of searched draft length, the best k
    (over_draft_lengths)."""
    from planner import disagg

    def one(q: Problem) -> list[Plan]:
        return [disagg.estimate(disagg.make_disagg(q, decode_cluster, decode_gpus), prefill, chunk, decode,
                                micro_batch)]

    if p.speculation is None:
        return one(p)[0]
    return over_draft_lengths(p, one, 1, errors=(InvalidLayoutError,))[0]


def _estimate(p: Problem, parallel: Parallel, concurrency: int | None, chunk: int) -> Plan:
    """`estimate` of one problem (no draft length to choose)."""
    broken = rules.layout_violations(p, parallel)
    if broken:
        raise InvalidLayoutError(f"invalid layout {parallel.label}: {rules.explain(p, parallel, broken[0])}",
                                 broken[0])
    share = parallel.attention_dp * parallel.pp
    concurrency = concurrency if concurrency is not None else share
    if concurrency < 1 or chunk < 1:
        raise InvalidLayoutError("concurrency and chunk must be positive")
    if concurrency % share:
        raise InvalidLayoutError(
            f"concurrency {concurrency} does not split over attention_dp * pp = {share} "
            f"(use a multiple of {share})"
        )
    m = concurrency // share
    broken = rules.violations(p, parallel, m, chunk, use_sla=False, use_ttft=False)
    if "chunk_keeps_up" in broken:
        need = int(m * cost.tokens_per_step(p) * p.workload.prefill_tokens // p.workload.osl) + 1
        raise InvalidLayoutError(
            f"{rules.explain(p, parallel, 'chunk_keeps_up')}: {m} requests per rank need a chunk of at least "
            f"{need} tokens for isl {p.workload.isl} / osl {p.workload.osl}", "chunk_keeps_up")
    plan = build_plan(p, Candidate(parallel, m, chunk, "EVALUATED"),
                      SolverInfo(method="estimate", status="EVALUATED", wall_s=0.0))
    if "memory" in broken:
        raise InvalidLayoutError(
            f"{rules.explain(p, parallel, 'memory')}: needs {plan.memory.per_gpu_bytes / 1e9:.1f} GB per GPU, "
            f"{plan.memory.usable_bytes / 1e9:.1f} GB usable", "memory")
    return plan
