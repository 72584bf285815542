"""The exhaustive oracle: plain-Python enumeration of the same space, same cost model.

It shares nothing with the CP-SAT model but the cost functions and the candidate lists: rules
are checked by planner.rules and by numpy masks, and every (micro-batch, chunk) pair of every
valid layout is evaluated in float. Tests require both searches to find the same optimum.
"""

from __future__ import annotations

import time

import numpy as np

from planner import cost
from planner.rules import layout_violations
from planner.solver import Candidate, Objective
from planner.space import Space
from planner.specs import Parallel, Problem


def layouts(p: Problem, s: Space, budget: int):
    """Every layout of the candidate lists that obeys the layout rules, with the most replicas."""
    pb = p.model_copy(update={"gpus": budget})
    for tp in s.tp:
        for adp in s.attention_dp:
            for pp in s.pp:
                for ep in s.ep:
                    for moe_tp in s.moe_tp:
                        replica = tp * adp * pp
                        if replica > budget:
                            continue
                        par = Parallel(tp=tp, attention_dp=adp, pp=pp, ep=ep, moe_tp=moe_tp,
                                       dp=min(budget // replica, s.max_dp))
                        if not layout_violations(pb, par):
                            yield par


def valid(p: Problem, g: dict[str, np.ndarray], use_sla: bool = True, use_ttft: bool = True) -> np.ndarray:
    """Which entries of a cost.metrics_grid obey the batch rules: memory fits, the chunk keeps up,
    and (when asked and set) the SLA and the TTFT limit of p.sla hold."""
    ok = (g["per_gpu_bytes"] <= cost.usable_bytes(p)) & (g["prefill_load"] < 1)
    floor = p.sla.min_tokens_per_s_per_user if (use_sla and p.sla) else None
    if floor:
        ok &= 1 / g["tpot_s"] >= floor
    limit = p.sla.max_ttft_s if (use_ttft and p.sla) else None
    if limit is not None:
        ok &= g["ttft_s"] <= limit
    return ok


def exhaustive(
    p: Problem,
    s: Space,
    objective: Objective = "throughput",
    use_sla: bool = True,
    use_ttft: bool = True,
    top: int = 1,
    budget: int | None = None,
) -> tuple[list[Candidate], float]:
    """Best `top` distinct layouts by `objective`, best first, and the wall time [s].

    Objectives: highest tokens/s/GPU, lowest TPOT, lowest TTFT, or fewest replica GPUs (with
    `budget` GPUs allowed). A plan is valid when memory fits, the chunk keeps up and, when asked,
    the SLA and TTFT limit hold.
    """
    t0 = time.perf_counter()
    m, c = np.meshgrid(np.asarray(s.micro_batches), np.asarray(s.chunks), indexing="ij")
    best: list[tuple[float, Candidate]] = []
    for par in layouts(p, s, budget or p.gpus):
        g = cost.metrics_grid(p, par, m, c)
        ok = valid(p, g, use_sla, use_ttft)
        if not ok.any():
            continue
        score = {
            "throughput": g["tokens_per_s_per_gpu"],
            "min_tpot": -g["tpot_s"],
            "min_ttft": -g["ttft_s"],
            "min_gpus": np.full(m.shape, -float(par.replica_gpus)),
        }[objective]
        score = np.where(ok, score, -np.inf)
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        best.append((float(score[i, j]), Candidate(par, int(m[i, j]), int(c[i, j]), "OPTIMAL")))
    best.sort(key=lambda x: -x[0])
    return [cand for _, cand in best[:top]], time.perf_counter() - t0
