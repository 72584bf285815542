"""The exhaustive oracle: plain-Python enumeration of the same space, same cost model.

It shares nothing with the CP-SAT search (planner.options, planner.solver) but the cost model, the rule
checker and the candidate lists: every layout of the candidate lists is built one by one and checked by
planner.rules, and every (micro-batch, chunk) pair of every valid layout is evaluated in float by
planner.cost. Tests require both searches to find the same optimum; it never imports ortools.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import product

import numpy as np

from planner import cost
from planner.rules import batch_ok, checked_times, layout_violations
from planner.space import Candidate, Objective, OutOfTime, Space
from planner.specs import Parallel, Problem


def layouts(p: Problem, s: Space, budget: int) -> Iterator[Parallel]:
    """Every layout of the candidate lists that obeys the layout rules, with the most replicas."""
    pb = p.model_copy(update={"gpus": budget})
    for tp, adp, pp, ep in product(s.tp, s.attention_dp, s.pp, s.ep):
        replica = tp * adp * pp
        if replica > budget:
            continue
        par = Parallel(tp=tp, attention_dp=adp, pp=pp, ep=ep, dp=min(budget // replica, s.max_dp))
        if not layout_violations(pb, par):
            yield par


def exhaustive(
    p: Problem,
    s: Space,
    objective: Objective = "throughput",
    use_sla: bool = True,
    use_ttft: bool = True,
    top: int = 1,
    budget: int | None = None,
    deadline: float | None = None,
) -> tuple[list[Candidate], float]:
    """Best `top` distinct layouts by `objective`, best first, and the wall time [s].

    Objectives: highest tokens/s/GPU, lowest TPOT, lowest TTFT (those the rules check), or fewest replica GPUs (with
    `budget` GPUs allowed). A plan is valid when memory fits, the chunk keeps up and, when asked,
    the SLA and TTFT limit hold. Raises OutOfTime when `deadline` (time.perf_counter) passes first.
    """
    t0 = time.perf_counter()
    m, c = np.meshgrid(np.asarray(s.micro_batches), np.asarray(s.chunks), indexing="ij")
    best: list[tuple[float, Candidate]] = []
    for n, par in enumerate(layouts(p, s, budget or p.gpus)):
        if deadline is not None and time.perf_counter() > deadline:
            raise OutOfTime(n * s.batches, s.size)
        g = cost.metrics_grid(p, par, m, c)
        ok = batch_ok(p, g, use_sla, use_ttft)
        if not ok.any():
            continue
        tpot, ttft = checked_times(p, g)
        score = {
            "throughput": g["tokens_per_s_per_gpu"],
            "min_tpot": -tpot,
            "min_ttft": -ttft,
            "min_gpus": np.full(m.shape, -float(par.replica_gpus)),
        }[objective]
        score = np.where(ok, score, -np.inf)
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        best.append((float(score[i, j]), Candidate(par, int(m[i, j]), int(c[i, j]), "OPTIMAL")))
    best.sort(key=lambda x: -x[0])
    return [cand for _, cand in best[:top]], time.perf_counter() - t0
