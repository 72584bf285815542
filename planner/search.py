"""The library API: build a problem, solve it (CP-SAT or the oracle), estimate one plan.

Everything returns the pydantic objects of planner.specs; the CLI only renders them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from planner import cost
from planner.catalog import load_cluster, load_model
from planner.errors import InfeasibleError, InvalidLayoutError, SpecError
from planner.oracle import exhaustive
from planner.rules import RULES, explain, layout_violations
from planner.solver import Candidate, CpSatPlanner, Objective, SolverParams
from planner.space import Space
from planner.specs import (
    SLA,
    Calibration,
    ClusterSpec,
    ModelSpec,
    Parallel,
    Plan,
    Precision,
    Problem,
    SolverInfo,
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


def _kv_default(cluster: ClusterSpec, precision: Precision) -> Precision:
    """FP8 KV cache where the GPU has FP8 math and the weights are not BF16, else BF16."""
    return Precision.fp8 if precision != Precision.bf16 and cluster.supports("fp8") else Precision.bf16


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
) -> Problem:
    """A validated Problem from names or specs; raises SpecError/UnknownNameError on bad input.

    calibration: a Calibration, a path to a calibration YAML, or None for the shipped one.
    backend: the serving engine whose calibration profile applies ('trtllm', 'vllm', 'sglang', '*').
    memory_utilization: the engine's HBM fraction, overriding the calibration's (e.g. 0.85).
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
    prec = Precision(precision)
    kv = Precision(kv_precision) if kv_precision is not None else _kv_default(c, prec)
    try:
        sla = (
            SLA(min_tokens_per_s_per_user=min_tokens_per_s_per_user, max_ttft_s=max_ttft_s)
            if min_tokens_per_s_per_user is not None or max_ttft_s is not None
            else None
        )
        return Problem(
            model=m, cluster=c, gpus=gpus, workload=Workload(isl=isl, osl=osl), precision=prec,
            kv_precision=kv, sla=sla, calibration=cal, backend=backend.lower(),
        )
    except ValidationError as e:
        raise SpecError(validation_message(e)) from None


def build_plan(p: Problem, cand: Candidate, info: SolverInfo) -> Plan:
    """The Plan of a candidate, with figures recomputed by the float cost model."""
    ev = cost.evaluate(p, cand.parallel, cand.micro_batch, cand.chunk)
    return Plan(
        model=p.model.name, cluster=p.cluster.name, gpus=p.gpus, gpus_used=cand.parallel.gpus_used,
        isl=p.workload.isl, osl=p.workload.osl, precision=p.precision, kv_precision=p.kv_precision,
        gemm_math=p.gemm_math, label=cand.parallel.label, parallel=cand.parallel, batch=ev.batch, metrics=ev.metrics,
        memory=ev.memory, solver=info, sla=p.sla, notes=list(p.model.approximations),
    )


def limits(p: Problem, cand: Candidate, space: Space) -> list[str]:
    """The rules that stop this layout from batching more: those the next larger micro-batch breaks.

    Every chunk of the space is tried for the larger batch; a rule is named when no chunk avoids it.
    """
    larger = [m for m in space.micro_batches if m > cand.micro_batch]
    if not larger:
        return ["batch_grid"]
    broken: list[set[str]] = []
    for chunk in space.chunks:
        ev = cost.evaluate(p, cand.parallel, larger[0], chunk)
        rules = set()
        if ev.memory.per_gpu_bytes > ev.memory.usable_bytes:
            rules.add("memory")
        if ev.metrics.prefill_load >= 1:
            rules.add("chunk_keeps_up")
        floor = p.sla.min_tokens_per_s_per_user if p.sla else None
        if floor and ev.metrics.tokens_per_s_per_user < floor:
            rules.add("sla")
        if p.sla and p.sla.max_ttft_s and ev.metrics.ttft_ms > p.sla.max_ttft_s * 1000:
            rules.add("ttft")
        if not rules:
            return []  # a larger batch is feasible here; the objective preferred this one
        broken.append(rules)
    return sorted(set.intersection(*broken)) or sorted(set.union(*broken))


def _search(
    p: Problem, space: Space, method: Method, objective: Objective = "throughput", use_sla: bool = True,
    use_ttft: bool = True, top: int = 1, params: SolverParams | None = None,
) -> tuple[list[Candidate], float]:
    """Candidates of either method and the wall time of the whole search, model building included [s]."""
    t0 = time.perf_counter()
    if method == "exhaustive":
        found, _ = exhaustive(p, space, objective, use_sla, use_ttft, top)
    else:
        found, _ = CpSatPlanner(p, space, objective, use_sla, use_ttft, params).solve(top)
    return found, time.perf_counter() - t0


def _diagnose(p: Problem, space: Space, method: Method, params: SolverParams | None) -> InfeasibleError:
    """Why no plan exists: the model does not fit, or the SLA/TTFT is out of reach."""
    free, _ = _search(p, space, method, use_sla=False, use_ttft=False, params=params)
    if not free:
        w = p.workload
        need = w.isl // w.osl + 1  # the smallest batch, one request per rank, needs chunk > isl/osl
        if max(space.chunks) < need:
            return InfeasibleError(
                f"no chunk in {list(space.chunks)} keeps the batch full: with isl {w.isl} / osl {w.osl} even one "
                f"request per rank needs a prefill chunk of at least {need} tokens (give larger --chunks)"
            )
        fewest = min_gpus_to_fit(p, method, params, chunks=space.chunks)
        if fewest is None:
            return InfeasibleError(
                f"{p.model.name} fits on no layout of up to {_FIT_SEARCH_LIMIT} {p.cluster.name} GPUs at "
                f"{p.precision.value} (try a smaller --precision, a shorter --isl/--osl or a larger GPU)"
            )
        if fewest <= p.gpus:
            return InfeasibleError(
                f"no plan satisfies the rules on {p.gpus} {p.cluster.name} GPUs, although the weights fit on "
                f"{fewest}: {RULES['layers_divisible']}, {RULES['heads_divisible']} and the GPU budget leave no "
                f"layout (try another --gpus)"
            )
        return InfeasibleError(
            f"{p.model.name} does not fit on {p.gpus} {p.cluster.name} GPUs at {p.precision.value}: it fits on "
            f"{fewest} {p.cluster.name} GPUs (try --gpus {fewest} or a smaller --precision)"
        )
    assert p.sla is not None
    fast, _ = _search(p, space, method, objective="min_tpot", use_sla=False, use_ttft=True, params=params)
    sla = p.sla.min_tokens_per_s_per_user
    if not fast:
        quick, _ = _search(p, space, method, objective="min_ttft", use_sla=False, use_ttft=False, params=params)
        best = cost.evaluate(p, quick[0].parallel, quick[0].micro_batch, quick[0].chunk).metrics.ttft_ms
        return InfeasibleError(
            f"TTFT limit {p.sla.max_ttft_s * 1e3:.0f} ms is unreachable: the lowest TTFT any plan reaches "
            f"here is {best:.0f} ms (raise --ttft or add GPUs)"
        )
    best = cost.evaluate(p, fast[0].parallel, fast[0].micro_batch, fast[0].chunk).metrics
    ttft_note = f" within TTFT {p.sla.max_ttft_s * 1e3:.0f} ms" if p.sla.max_ttft_s else ""
    return InfeasibleError(
        f"SLA {sla:g} tokens/s/user is unreachable: the highest any plan reaches here{ttft_note} is "
        f"{best.tokens_per_s_per_user:.1f} tokens/s/user ({fast[0].parallel.label}); lower --sla or change "
        f"the cluster"
    )


_FIT_SEARCH_LIMIT = 4096
"""Largest GPU count the 'fewest GPUs it fits on' search considers [GPUs]."""


def min_gpus_to_fit(
    p: Problem, method: Method = "cpsat", params: SolverParams | None = None, chunks: tuple[int, ...] | None = None
) -> int | None:
    """Fewest GPUs of the problem's cluster on which some layout fits in memory [GPUs], or None.

    One request per attention-DP rank, any of the chunk sizes (default: the default grid).
    """
    big = p.model_copy(update={"gpus": _FIT_SEARCH_LIMIT, "sla": None})
    space = Space.of(big, chunks=chunks, micro_batches=(1,))
    found, _ = _search(big, space, method, objective="min_gpus", use_sla=False, use_ttft=False, params=params)
    return found[0].parallel.replica_gpus if found else None


def solve(
    problem: Problem | None = None,
    *,
    method: Method = "cpsat",
    top: int = 1,
    chunks: tuple[int, ...] | None = None,
    micro_batches: tuple[int, ...] | None = None,
    params: SolverParams | None = None,
    **problem_args,
) -> list[Plan]:
    """The `top` best distinct layouts (best first) maximising tokens/s/GPU under the SLA.

    Give a Problem, or the make_problem keywords (model, cluster, gpus, isl, osl, precision,
    kv_precision, min_tokens_per_s_per_user, max_ttft_s, calibration). Raises InfeasibleError
    saying what is reachable when no plan exists.
    """
    p = problem or make_problem(**problem_args)
    if top < 1:
        raise SpecError(f"top must be at least 1, got {top}")
    space = Space.of(p, chunks, micro_batches)
    found, wall = _search(p, space, method, top=top, params=params)
    if not found:
        raise _diagnose(p, space, method, params)
    return [plan_of(p, cand, space, method, wall) for cand in found]


def plan_of(p: Problem, cand: Candidate, space: Space, method: Method, wall_s: float) -> Plan:
    """The Plan of a search result: figures from the float cost model, the solver's status, proven
    bound and gap, and the rules that stop a larger batch."""
    bound = cand.objective_bound
    plan = build_plan(p, cand, SolverInfo(method=method, status=cand.status, wall_s=wall_s, candidates=space.size,
                                          objective_bound=bound, limited_by=limits(p, cand, space)))
    gap = None
    if bound is not None and bound > 0:
        gap = max(0.0, (bound - plan.metrics.tokens_per_s_per_gpu) / bound)
    return plan.model_copy(update={"solver": plan.solver.model_copy(update={"gap": gap})})


def estimate(
    problem: Problem | None = None,
    *,
    parallel: Parallel,
    concurrency: int | None = None,
    chunk: int = 2048,
    **problem_args,
) -> Plan:
    """Evaluate one given plan with the cost model; raises InvalidLayoutError naming the broken rule.

    concurrency is requests per replica; it must split evenly over attention_dp * pp.
    """
    p = problem or make_problem(**problem_args)
    broken = layout_violations(p, parallel)
    if broken:
        raise InvalidLayoutError(f"invalid layout {parallel.label}: {explain(p, parallel, broken[0])}")
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
    if cost.prefill_load(p, m, chunk) >= 1:
        need = int(m * p.workload.isl // p.workload.osl) + 1
        raise InvalidLayoutError(
            f"{explain(p, parallel, 'chunk_keeps_up')}: {m} requests per rank need a chunk of at least "
            f"{need} tokens for isl {p.workload.isl} / osl {p.workload.osl}"
        )
    plan = build_plan(p, Candidate(parallel, m, chunk, "EVALUATED"),
                      SolverInfo(method="estimate", status="EVALUATED", wall_s=0.0))
    if plan.memory.per_gpu_bytes > plan.memory.usable_bytes:
        raise InvalidLayoutError(
            f"{explain(p, parallel, 'memory')}: needs {plan.memory.per_gpu_bytes / 1e9:.1f} GB per GPU, "
            f"{plan.memory.usable_bytes / 1e9:.1f} GB usable"
        )
    return plan
