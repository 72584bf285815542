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


def _disagg_pools(dp, sp: Space, sd: Space, floor: float | None) -> tuple[list, list]:
    """The disaggregated oracle's workers: every prefill layout (layout rules by planner.rules) with every chunk
    that fits in memory, every decode layout (dp = 1) with every micro-batch that fits and meets the SLA."""
    from planner.rules import sla_broken

    pre_p, dec_p = dp.prefill, dp.decode
    budget_d = pre_p.gpus if dp.shared else dec_p.gpus
    prefill = [(par, c) for par in layouts(pre_p, sp, pre_p.gpus) for c in sp.chunks
               if float(cost.prefill_memory_breakdown(pre_p, par.model_copy(update={"dp": 1}), c)["per_gpu_bytes"])
               <= cost.usable_bytes(pre_p)]
    decode = []
    for par in layouts(dec_p, sd, budget_d):
        one = par.model_copy(update={"dp": 1})
        for m in sd.micro_batches:
            if float(cost.decode_memory_breakdown(dec_p, one, m)["per_gpu_bytes"]) > cost.usable_bytes(dec_p):
                continue
            if floor and bool(sla_broken(cost.decode_pass_time(dec_p, one, m), floor)):
                continue
            decode.append((one, m))
    return prefill, decode


def _disagg_blocks(dp, prefill: list, decode: list, limit_s: float | None, deadline: float | None):
    """Every (prefill worker, its count, decode worker, its count) within the GPU budget, in numpy blocks: yields
    (prefill layout, chunk, prefill workers [X,1,1], decode block, decode workers [1,1,Y], GPUs used, valid,
    output tokens/s), each evaluated by cost.disagg_metrics with the TTFT checked at the load directly."""
    from planner.rules import rate_matching_broken, ttft_broken

    pre_p, dec_p = dp.prefill, dp.decode
    budget_p = pre_p.gpus
    budget_d = pre_p.gpus if dp.shared else dec_p.gpus
    ys = np.arange(1, budget_d // min(d.replica_gpus for d, _ in decode) + 1)[None, None, :]
    for n, (par, c) in enumerate(prefill):
        one = par.model_copy(update={"dp": 1})
        xs = np.arange(1, budget_p // par.replica_gpus + 1)[:, None, None]
        gp = xs * par.replica_gpus
        step = max(1, ORACLE_BLOCK // (xs.size * ys.size))  # decode options per block: bounded temporaries
        for a in range(0, len(decode), step):
            if deadline is not None and time.perf_counter() > deadline:
                raise OutOfTime(n, len(prefill))
            block = decode[a:a + step]
            lay = cost.Layouts(*(np.array([getattr(d, f) for d, _ in block])[None, :, None]
                                 for f in ("tp", "attention_dp", "pp", "ep", "dp")))
            m = np.array([mb for _, mb in block])[None, :, None]
            used = gp + ys * lay.replica_gpus
            fits = (used <= budget_p) if dp.shared else ((gp <= budget_p) & (ys * lay.replica_gpus <= budget_d))
            g = cost.disagg_metrics(pre_p, one, c, xs, dec_p, lay, m, ys, dp.same_domain(used))
            ok = fits & ~rate_matching_broken(g["prefill_load"]) & ~ttft_broken(g["ttft_checked_s"], limit_s)
            tokens = np.where(ok, np.broadcast_to(g["tokens_per_s"], ok.shape), -np.inf)
            yield one, c, xs, block, ys, np.broadcast_to(used, ok.shape), ok, tokens


def _candidate(one: Parallel, c: int, xs, block: list, ys, i: tuple):
    from planner.disagg import DisaggCandidate

    d, mb = block[i[1]]
    return DisaggCandidate(one.model_copy(update={"dp": int(xs.ravel()[i[0]])}), int(c),
                           d.model_copy(update={"dp": int(ys.ravel()[i[2]])}), int(mb), "OPTIMAL")


def exhaustive_disagg(dp, sp: Space, sd: Space, floor: float | None, limit_s: float | None,
                      deadline: float | None = None):
    """The disaggregated deployment with the most output tokens/s, by plain enumeration: every prefill layout
    of the candidate lists (layout rules by planner.rules) with every chunk that fits in memory, every decode
    layout with every micro-batch that fits and meets the SLA, and every pair of worker counts within the GPU
    budget, each evaluated by cost.disagg_metrics (TTFT from the load directly). None when none is valid;
    raises OutOfTime when `deadline` passes first. Shares with planner.disagg only the cost model and the
    rule checker.
    """
    prefill, decode = _disagg_pools(dp, sp, sd, floor)
    if not prefill or not decode:
        return None
    best, found = 0.0, None
    for one, c, xs, block, ys, _, _, tokens in _disagg_blocks(dp, prefill, decode, limit_s, deadline):
        i = np.unravel_index(int(np.argmax(tokens)), tokens.shape)
        if tokens[i] > best:
            best = float(tokens[i])
            found = _candidate(one, c, xs, block, ys, i)
    return found


def exhaustive_disagg_front(dp, sp: Space, floor: float | None, limit_s: float | None,
                            deadline: float | None = None) -> dict[int, tuple[float, object]]:
    """For every GPU count a deployment of one shared cluster can use (both pools), the disaggregated deployment
    of the most output tokens/s using exactly that many GPUs: {GPUs: (tokens/s, DisaggCandidate)}, by the same
    enumeration as exhaustive_disagg (the fleet's oracle of disaggregated units)."""
    prefill, decode = _disagg_pools(dp, sp, sp, floor)
    out: dict[int, tuple[float, object]] = {}
    if not prefill or not decode:
        return out
    for one, c, xs, block, ys, used, ok, tokens in _disagg_blocks(dp, prefill, decode, limit_s, deadline):
        flat = np.flatnonzero(ok.ravel())
        if not len(flat):
            continue
        u, t = used.ravel()[flat], tokens.ravel()[flat]
        order = np.lexsort((-t, u))
        first = order[np.r_[True, u[order][1:] != u[order][:-1]]]
        for k in first:
            g = int(u[k])
            if g not in out or t[k] > out[g][0]:
                i = np.unravel_index(int(flat[k]), tokens.shape)
                out[g] = (float(t[k]), _candidate(one, c, xs, block, ys, i))
    return out


ORACLE_BLOCK = 1 << 18
"""(prefill workers, decode option, decode workers) combinations the disaggregated oracle evaluates per numpy
call: bounds its temporaries to tens of MB [combinations]."""
