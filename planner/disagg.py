"""Disaggregated serving: a prefill pool and a decode pool, their layouts and worker counts chosen jointly.

A disaggregated plan runs x prefill workers of one layout and y decode workers of another (each a replica
obeying every layout rule of an aggregated one), on one cluster sharing its GPU budget, or on two clusters
(prefill on one GPU type, decode on another, each with its own GPUs). The cost model's disaggregated part
(planner.cost, `disagg_metrics`) gives every figure; this module tabulates each pool's options, keeps those a
search can need, and states the problem as one CP-SAT model (planner.solver: two pools with free replicas,
their memory, SLA and GPU-budget rules, the rate matching with the TTFT limit folded in, and the link the KV
cache takes). Every result is re-checked on the float model and against a closed-form enumeration of the same
options (the certificate); planner.oracle.exhaustive_disagg enumerates every (layout, batch, workers) of both
pools independently, for the tests.

Objective: the most output tokens/s of the deployment within the GPU budget, reported per GPU given (as for
an aggregated plan, all pools' GPUs count).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from planner import cost, percentiles, rules
from planner.errors import InfeasibleError, SpecError, TimeLimitError
from planner.options import BIT, Table, candidate_layouts
from planner.space import Space
from planner.specs import (
    Alternative,
    KVTransfer,
    Memory,
    Metrics,
    Parallel,
    Plan,
    PoolBatch,
    PoolMetrics,
    PoolPlan,
    Problem,
    SolverInfo,
)

DISAGG_RULES: dict[str, str] = {
    "rate_matching": "the prefill pool must prefill prompts as fast as the decode pool finishes requests, at a "
                     "load rho of at most 0.8 (cost.MAX_PREFILL_LOAD) and low enough for TTFT to stay within the "
                     "limit",
    "kv_domain": "the KV cache moves over the scale-up fabric only when both pools fit in one scale-up domain",
}
"""Rules of a disaggregated plan besides those of each pool (rules.RULES), by name."""

RATE_BITS = 31
"""Rates enter the CP-SAT model as integers with 2**31 units for the largest one (relative resolution 5e-10)."""
LINEARIZATION_LEVEL = 2
"""CP-SAT's linearization level for the disaggregated model (its enforced rate-matching rows in the LP) up to
LINEARIZATION_OPTIONS options: 0.08 s against 0.26 s at the default level on the default case (248 options),
but 27 s against 14 s on its 1,024-GPU version (2,907 options), where the larger LP costs more than it saves."""
LINEARIZATION_OPTIONS = 1000
"""Most options a disaggregated model is solved with LINEARIZATION_LEVEL."""
CERTIFY_REL_TOL = 1e-9
"""A plan within this share of the best enumerated deployment counts as optimal."""


@dataclass(frozen=True)
class DisaggProblem:
    """The two pools' problems: `prefill` (its cluster and GPUs) and `decode` (the same Problem when both pools
    share one cluster and its GPU budget, `shared`)."""

    prefill: Problem
    decode: Problem

    @property
    def shared(self) -> bool:
        """Both pools on one cluster, drawing on one GPU budget (prefill.gpus)."""
        return self.decode is self.prefill

    @property
    def gpus(self) -> int:
        """GPUs given to the deployment, both pools [GPUs]."""
        return self.prefill.gpus if self.shared else self.prefill.gpus + self.decode.gpus

    @property
    def domain_gpus(self) -> int | None:
        """GPUs of the shared cluster's scale-up domain (None: two clusters, the KV always crosses scale-out)."""
        return self.prefill.cluster.scaleup_domain_gpus if self.shared else None

    def same_domain(self, gpus_used) -> np.ndarray:
        """Where both pools, `gpus_used` GPUs together, sit in one scale-up domain."""
        if not self.shared:
            return np.zeros(np.shape(gpus_used), bool)
        return np.asarray(gpus_used) <= self.prefill.cluster.scaleup_domain_gpus


def make_disagg(p: Problem, decode_cluster=None, decode_gpus: int | None = None) -> DisaggProblem:
    """The DisaggProblem of problem p: both pools on p's cluster and GPUs, or with `decode_cluster` (a name,
    path or ClusterSpec) the decode pool on `decode_gpus` GPUs of that cluster (default: as many as p's)."""
    if decode_cluster is None:
        if decode_gpus is not None:
            raise SpecError("--decode-gpus needs --decode-cluster (one cluster shares its --gpus between the pools)")
        return DisaggProblem(p, p)
    from planner.catalog import load_cluster
    from planner.specs import ClusterSpec

    c = decode_cluster if isinstance(decode_cluster, ClusterSpec) else load_cluster(decode_cluster)
    gpus = decode_gpus if decode_gpus is not None else p.gpus
    if gpus < 1:
        raise SpecError(f"decode GPUs must be at least 1, got {gpus}")
    return DisaggProblem(p, p.model_copy(update={"cluster": c, "gpus": gpus}))


# --- the options of each pool ------------------------------------------------------------------------


@dataclass
class PoolOptions:
    """Every (layout, batch) option of one pool: a prefill pool's batch is its chunk [tokens], a decode
    pool's its micro-batch m [requests]. Option k is layout `lay[k]` with batch `batch[k]`."""

    role: str
    p: Problem
    layouts: cost.Layouts
    lay: np.ndarray
    batch: np.ndarray
    gpus: np.ndarray  # [GPUs] of one worker
    broken: np.ndarray  # uint16 bits (options.BIT) of the pool rules each option breaks
    pass_s: np.ndarray  # [s] one pass (decode: its TPOT, the speculative step over E)
    rate: np.ndarray  # [requests/s] prefill capacity, or decode output [tokens/s] per worker
    service_s: np.ndarray  # [s] prefill: one prompt's passes; decode: TPOT
    link_s: np.ndarray  # [s] (options, 2): KV send (prefill) or receive (decode) time, scale-out / scale-up
    per_gpu_bytes: np.ndarray  # [bytes]
    wall_s: float = 0.0

    @property
    def size(self) -> int:
        return len(self.batch)

    @property
    def tpot_hi_s(self) -> np.ndarray:
        """The TPOT the SLA is checked at (decode options) [s]."""
        return self.service_s

    def replica_gpus_of(self, k) -> np.ndarray:
        """GPUs of one worker of options k [GPUs]."""
        return self.gpus[np.asarray(k)]

    def parallel(self, k: int, workers: int = 1) -> Parallel:
        """The layout of option k, dp = workers."""
        i, q = int(self.lay[k]), self.layouts
        return Parallel(tp=int(q.tp[i]), attention_dp=int(q.attention_dp[i]), pp=int(q.pp[i]), ep=int(q.ep[i]),
                        dp=workers)


def pool_layouts(p: Problem, s: Space) -> tuple[cost.Layouts, np.ndarray]:
    """The worker layouts a pool of problem p tabulates, with the layout rules each breaks (bits)."""
    return candidate_layouts(p, s, lift=("memory",))


def _grid(p: Problem, s: Space, batches: tuple[int, ...], layouts=None):
    lay, bits = layouts if layouts is not None else pool_layouts(p, s)
    col = cost.Layouts(*(np.asarray(getattr(lay, f))[:, None] for f in ("tp", "attention_dp", "pp", "ep", "dp")))
    b = np.asarray(batches, dtype=np.int64)[None, :]
    shape = (len(lay.tp), len(batches))
    idx = np.broadcast_to(np.arange(len(lay.tp))[:, None], shape).ravel()
    return lay, bits, col, b, shape, idx


def tabulate_prefill(p: Problem, s: Space, layouts=None) -> PoolOptions:
    """Every chunk of every layout (of p's candidate lists, within p.gpus; `layouts`: pool_layouts already
    computed) as a prefill worker: pass time, capacity, service time, KV send time per link, memory; the rules
    each breaks (layout rules and memory)."""
    t0 = time.perf_counter()
    lay, bits, col, c, shape, idx = _grid(p, s, s.chunks, layouts)
    t_pass = np.broadcast_to(cost.prefill_pass_time(p, col, c), shape)
    capacity = np.broadcast_to(cost.prefill_capacity(p, col, c, t_pass), shape)
    service = np.broadcast_to(cost.prefill_service_time(p, c, t_pass), shape)
    mem = np.broadcast_to(cost.prefill_memory_breakdown(p, col, c)["per_gpu_bytes"], shape)
    send = np.stack([np.broadcast_to(cost.kv_send_time(p, col.tp, col.pp, z), shape).ravel() for z in (False, True)],
                    axis=1)
    broken = np.broadcast_to(bits[:, None], shape).ravel() | np.where(
        mem.ravel() > cost.usable_bytes(p), BIT["memory"], 0).astype(np.uint16)
    return PoolOptions("prefill", p, lay, idx, np.broadcast_to(c, shape).ravel(), lay.replica_gpus[idx], broken,
                       t_pass.ravel(), capacity.ravel(), service.ravel(), send, mem.ravel(),
                       time.perf_counter() - t0)


def tabulate_decode(p: Problem, s: Space, layouts=None) -> PoolOptions:
    """Every micro-batch of every layout (within p.gpus) as a decode worker: TPOT, output rate, KV receive
    time per link, memory; the rules each breaks (layout rules and memory; the SLA is checked per search)."""
    t0 = time.perf_counter()
    lay, bits, col, m, shape, idx = _grid(p, s, s.micro_batches, layouts)
    tpot = np.broadcast_to(cost.decode_pass_time(p, col, m), shape)
    rate = np.broadcast_to(cost.decode_rate(p, col, m, tpot), shape)
    mem = np.broadcast_to(cost.decode_memory_breakdown(p, col, m)["per_gpu_bytes"], shape)
    recv = np.stack([np.broadcast_to(cost.kv_receive_time(p, col.tp, col.pp, z), shape).ravel()
                     for z in (False, True)], axis=1)
    broken = np.broadcast_to(bits[:, None], shape).ravel() | np.where(
        mem.ravel() > cost.usable_bytes(p), BIT["memory"], 0).astype(np.uint16)
    return PoolOptions("decode", p, lay, idx, np.broadcast_to(m, shape).ravel(), lay.replica_gpus[idx], broken,
                       tpot.ravel(), rate.ravel(), tpot.ravel(), recv, mem.ravel(), time.perf_counter() - t0)


def receive_classes(dec: PoolOptions) -> tuple[np.ndarray, np.ndarray]:
    """(class index per decode option, receive times [class, link] [s]): decode options that receive the KV
    cache equally fast share a class (their tp and pp set it)."""
    uniq, klass = np.unique(dec.link_s, axis=0, return_inverse=True)
    return klass.ravel(), uniq


def effective_capacity(dp: DisaggProblem, pre: PoolOptions, rows: np.ndarray, receive: np.ndarray,
                       limit_s: float | None, cap: float = cost.MAX_PREFILL_LOAD) -> np.ndarray:
    """E [prefill option, receive class, link]: a prefill worker's capacity times the highest load at which TTFT
    stays within `limit_s` for a decode worker of that class over that link, at most `cap` (cost.max_prefill_load)
    [requests/s]."""
    rows = np.asarray(rows)
    transfer = cost.kv_transfer_time(pre.link_s[rows][:, None, :], receive[None, :, :])
    rho = cost.max_prefill_load(dp.prefill, pre.service_s[rows][:, None, None], transfer, limit_s, cap)
    return pre.rate[rows][:, None, None] * rho


# --- which options a search needs -----------------------------------------------------------------------


def _pareto(gpus: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Indices of options no other beats: fewer or equal GPUs and at least as large in every column of
    `vectors` (ties keep the first in the order below)."""
    order = np.lexsort((-vectors.sum(axis=1), gpus))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    # first drop what one of a sample (per GPU count, the 8 largest) beats, in numpy; then the exact sweep
    alive = np.ones(len(order), bool)
    for g in np.unique(gpus):
        for s in order[gpus[order] == g][:8]:
            alive &= ~((gpus[s] <= gpus) & np.all(vectors[s] >= vectors, axis=1) & (rank[s] < rank))
    kept: list[int] = []
    for i in order[alive[order]]:
        if kept and np.any(np.all(vectors[kept] >= vectors[i], axis=1)):
            continue
        kept.append(int(i))
    return np.sort(np.asarray(kept, dtype=np.int64))


def prefill_rows(dp: DisaggProblem, pre: PoolOptions, receive: np.ndarray, limit_s: float | None) -> np.ndarray:
    """The prefill options a search needs: among those obeying the pool's rules, and among those breaking only
    memory (so the model states that rule), each one that no option of as few GPUs beats in effective capacity
    for every receive class and link (effective_capacity)."""
    out = []
    for bits in (0, BIT["memory"]):
        cand = np.flatnonzero(pre.broken == bits)
        if len(cand):
            e = effective_capacity(dp, pre, cand, receive, limit_s).reshape(len(cand), -1)
            out.append(cand[_pareto(pre.gpus[cand], e)])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def _positions(rates: np.ndarray, threshold, ymax: int) -> set[int]:
    """The indices of the fastest rate (sorted `rates`) at or below threshold(y), for every y in 1..ymax, where
    threshold is non-increasing in y: every y at once up to 4096, beyond by bisecting y wherever the index may
    change (O(indices * log ymax) evaluations instead of ymax)."""
    if ymax <= 4096:  # few enough to evaluate every y at once
        pos = np.searchsorted(rates, threshold(np.arange(1, ymax + 1)), side="right") - 1
        return {int(q) for q in np.unique(pos[pos >= 0])}

    def pos(y: int) -> int:
        return int(np.searchsorted(rates, float(threshold(np.asarray(y))), side="right")) - 1

    out: set[int] = set()
    stack = [(1, ymax, pos(1), pos(ymax))]
    while stack:
        lo, hi, plo, phi = stack.pop()
        out.update(q for q in (plo, phi) if q >= 0)
        if plo == phi or hi - lo <= 1:
            continue
        mid = (lo + hi) // 2
        pm = pos(mid)
        stack += [(lo, mid, plo, pm), (mid, hi, pm, phi)]
    return out


def decode_rows(dp: DisaggProblem, dec: PoolOptions, klass: np.ndarray, floor: float | None, pre: PoolOptions,
                prows: np.ndarray, receive: np.ndarray, limit_s: float | None) -> np.ndarray:
    """The decode options a search needs.

    Among the options obeying every pool rule (SLA included), those of one group (worker GPUs, receive class)
    differ only in their output rate R: with the prefill option p, x prefill and y decode workers and the link
    fixed, every option of the group fits the same GPU budget, and the one to take is the fastest whose demand
    R * y / osl the prefill pool serves (effective_capacity * x), and more prefill workers only loosen that. So
    an option is needed only when it is the fastest of its group below one of the thresholds osl * E * x / y,
    x the most prefill workers the budget leaves beside y decode workers, for some (p, y, link) (taken on both
    sides of each threshold by a relative 1e-9, for the model's integer rounding), or the fastest of its
    group. Besides them, per rule excluding options alone (memory, SLA), the fastest one per
    group, so that the model states those rules.
    """
    sla_bad = rules.sla_broken(dec.tpot_hi_s, floor) if floor else np.zeros(dec.size, bool)
    valid = np.flatnonzero((dec.broken == 0) & ~sla_bad)
    out = []
    ok_p = prows[pre.broken[prows] == 0]
    eff = effective_capacity(dp, pre, ok_p, receive, limit_s) if len(ok_p) else np.zeros((0,) + receive.shape)
    budget_p = dp.prefill.gpus
    budget_d = dp.prefill.gpus if dp.shared else dp.decode.gpus
    osl = dp.decode.workload.osl
    links = (0, 1) if dp.shared else (0,)
    groups = np.stack([dec.gpus[valid], klass[valid]], axis=1) if len(valid) else np.zeros((0, 2), np.int64)
    for gd, j in np.unique(groups, axis=0):
        mine = valid[(dec.gpus[valid] == gd) & (klass[valid] == j)]
        order = mine[np.argsort(dec.rate[mine], kind="stable")]
        rates = dec.rate[order]
        keep = {int(order[-1])}
        ymax = budget_d // int(gd)
        if ymax <= 4096 and len(ok_p):  # every (prefill option, link, y) at once
            gp = pre.gpus[ok_p].astype(float)[:, None, None]
            e = eff[:, j, :][:, list(links)][:, :, None]
            y = np.arange(1, ymax + 1, dtype=float)[None, None, :]
            room = np.array([budget_p, min(budget_p, dp.domain_gpus or budget_p)], dtype=float)[list(links)]
            x = (room[None, :, None] - gd * y) // gp if dp.shared else budget_p // gp
            with np.errstate(divide="ignore", invalid="ignore"):
                thr = np.where(x >= 1, osl * e * np.maximum(x, 0) / y, -np.inf).ravel()
            for side in (1 - 1e-9, 1 + 1e-9):
                pos = np.searchsorted(rates, thr * side, side="right") - 1
                keep.update(int(order[q]) for q in np.unique(pos[pos >= 0]))
            out.append(np.fromiter(keep, np.int64))
            continue
        for i, k in enumerate(ok_p):
            gp = int(pre.gpus[k])
            for z in links:
                room = min(budget_p, dp.domain_gpus) if z else budget_p

                def threshold(y: np.ndarray, e=eff[i, j, z], gp=gp, room=room, gd=gd) -> np.ndarray:
                    """osl * E * x / y at the most prefill workers the budget leaves beside y decode workers."""
                    x = (room - gd * y) // gp if dp.shared else np.full(np.shape(y), budget_p // gp)
                    return np.where(x >= 1, osl * e * np.maximum(x, 0) / y, -np.inf)

                for side in (1 - 1e-9, 1 + 1e-9):
                    keep.update(int(order[q]) for q in _positions(rates, lambda y, t=threshold, f=side: t(y) * f, ymax))
        out.append(np.fromiter(keep, np.int64))
    for excluded in ((dec.broken == BIT["memory"]) & ~sla_bad, (dec.broken == 0) & sla_bad):
        cand = np.flatnonzero(excluded)
        if len(cand):
            order = cand[np.lexsort((-dec.rate[cand], klass[cand], dec.gpus[cand]))]
            g, j = dec.gpus[order], klass[order]
            head = np.r_[True, (g[1:] != g[:-1]) | (j[1:] != j[:-1])]
            out.append(order[head])
    return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)


# --- a found deployment ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DisaggCandidate:
    """A disaggregated deployment a search returns: each pool's worker layout (dp = its workers) and batch, the
    search's status, and the proven upper bound of tokens/s/GPU."""

    prefill: Parallel
    chunk: int
    decode: Parallel
    micro_batch: int
    status: str
    objective_bound: float | None = None
    certified: bool | None = None
    model_options: int | None = None


def evaluate(dp: DisaggProblem, pre: PoolOptions, dec: PoolOptions, k_pre, x, k_dec, y) -> dict[str, np.ndarray]:
    """cost.disagg_metrics of options (broadcastable indices) with x prefill and y decode workers; the link is
    scale-up where both pools fit one domain."""
    k_pre, k_dec = np.asarray(k_pre), np.asarray(k_dec)
    lp = cost.Layouts(*(np.asarray(getattr(pre.layouts, f))[pre.lay[k_pre]] for f in
                        ("tp", "attention_dp", "pp", "ep", "dp")))
    ld = cost.Layouts(*(np.asarray(getattr(dec.layouts, f))[dec.lay[k_dec]] for f in
                        ("tp", "attention_dp", "pp", "ep", "dp")))
    used = np.asarray(x) * pre.gpus[k_pre] + np.asarray(y) * dec.gpus[k_dec]
    return cost.disagg_metrics(dp.prefill, lp, pre.batch[k_pre], x, dp.decode, ld, dec.batch[k_dec], y,
                               dp.same_domain(used))


def deployment_tokens(dp: DisaggProblem, cand: DisaggCandidate) -> float:
    """Output tokens/s of a found deployment on the float model [tokens/s]."""
    one_p, one_d = cand.prefill.model_copy(update={"dp": 1}), cand.decode.model_copy(update={"dp": 1})
    used = cand.prefill.gpus_used + cand.decode.gpus_used
    g = cost.disagg_metrics(dp.prefill, one_p, cand.chunk, cand.prefill.dp, dp.decode, one_d, cand.micro_batch,
                            cand.decode.dp, dp.same_domain(used))
    return float(g["tokens_per_s"])


def deployment_violations(dp: DisaggProblem, pre_par: Parallel, chunk: int, dec_par: Parallel, m: int,
                          floor: float | None, limit_s: float | None) -> list[str]:
    """Every rule a disaggregated deployment breaks on the float cost model (pre_par.dp / dec_par.dp are the
    worker counts; empty when valid): each pool's layout rules and memory, the SLA on the decode pool, the GPU
    budget, the rate matching and the TTFT limit."""
    out: list[str] = []
    x, y = pre_par.dp, dec_par.dp
    one = pre_par.model_copy(update={"dp": 1})
    for tag, p, par in (("prefill", dp.prefill, one), ("decode", dp.decode, dec_par.model_copy(update={"dp": 1}))):
        out += [f"{tag}.{r}" for r in rules.layout_violations(p, par) if r != "gpu_budget"]
    mp = float(cost.prefill_memory_breakdown(dp.prefill, one, chunk)["per_gpu_bytes"])
    md = float(cost.decode_memory_breakdown(dp.decode, dec_par, m)["per_gpu_bytes"])
    if mp > cost.usable_bytes(dp.prefill):
        out.append("prefill.memory")
    if md > cost.usable_bytes(dp.decode):
        out.append("decode.memory")
    gp, gd = x * pre_par.replica_gpus, y * dec_par.replica_gpus
    if (dp.shared and gp + gd > dp.prefill.gpus) or (not dp.shared and (gp > dp.prefill.gpus or gd > dp.decode.gpus)):
        out.append("gpu_budget")
    g = cost.disagg_metrics(dp.prefill, one, chunk, x, dp.decode, dec_par, m, y, dp.same_domain(gp + gd))
    if floor and bool(rules.sla_broken(g["tpot_s"], floor)):
        out.append("sla")
    if bool(rules.rate_matching_broken(g["prefill_load"])):
        out.append("rate_matching")
    if bool(rules.ttft_broken(g["ttft_checked_s"], limit_s)):
        out.append("ttft")
    return out


# --- the search ----------------------------------------------------------------------------------------------


def add_pools(model, dp: DisaggProblem, pre: Table, prows: np.ndarray, dec: Table, drows: np.ndarray,
              floor: float | None) -> tuple:
    """The prefill and decode pools of a disaggregated deployment in a SearchModel, at least one worker each, with
    their layout and memory rules, the decode pool's SLA (`floor` tokens/s/user) and the GPU budget (shared: both
    pools within the cluster's GPUs and the KV link's domain variable; else each pool within its own);
    (prefill pool, decode pool, the domain variable or None)."""
    budget_p = dp.prefill.gpus
    budget_d = dp.prefill.gpus if dp.shared else dp.decode.gpus
    pp = model.add_pool(pre, prows, name="prefill", replicas="free", max_replicas=budget_p // pre.gpus[prows])
    dd = model.add_pool(dec, drows, name="decode", replicas="free", max_replicas=budget_d // dec.gpus[drows])
    model.require_replicas(pp, 1)
    model.require_replicas(dd, 1)
    for pool in (pp, dd):
        model.add_layout_rules(pool)
        model.add_memory(pool)
    model.add_sla(dd, floor)
    if dp.shared:
        model.add_gpu_budget([pp, dd], dp.prefill.gpus)
        return pp, dd, model.add_kv_domain([pp, dd], dp.domain_gpus)
    model.add_pool_budget(pp, dp.prefill.gpus)
    model.add_pool_budget(dd, dp.decode.gpus)
    return pp, dd, None


@dataclass
class DisaggSearcher:
    """Searches of one disaggregated problem by CP-SAT or the exhaustive oracle; every result certified."""

    dp: DisaggProblem
    space_p: Space
    space_d: Space
    method: str = "cpsat"
    params: object = None
    deadline: float | None = None
    started: float = field(default_factory=time.perf_counter)
    _tables: tuple[PoolOptions, PoolOptions] | None = None
    _classes: tuple[np.ndarray, np.ndarray] | None = None
    _prefill_rows: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from planner.solver import SolverParams

        self.params = self.params or SolverParams()
        if self.deadline is None:
            self.deadline = self.started + self.params.time_limit_s

    @property
    def tables(self) -> tuple[PoolOptions, PoolOptions]:
        if self._tables is None:
            dp = self.dp
            shared = pool_layouts(dp.prefill, self.space_p) if dp.shared and self.space_d is self.space_p else None
            self._tables = (tabulate_prefill(dp.prefill, self.space_p, shared),  # one layout grid for both pools
                            tabulate_decode(dp.decode, self.space_d, shared))
        return self._tables

    @property
    def evaluated(self) -> int:
        pre, dec = self.tables
        return pre.size + dec.size

    def ttft_limit(self, use_ttft: bool = True) -> float | None:
        """The problem's TTFT limit [s] (None: none, or not asked for)."""
        sla = self.dp.prefill.sla
        return sla.max_ttft_s if (use_ttft and sla) else None

    def best(self, floor: float | None, use_ttft: bool = True) -> DisaggCandidate | None:
        """The deployment with the most output tokens/s under every rule (SLA floor `floor` tokens/s/user, the
        problem's TTFT limit when use_ttft), or None when none exists."""
        limit = self.ttft_limit(use_ttft)
        if self.method == "exhaustive":
            from planner.oracle import exhaustive_disagg
            from planner.space import OutOfTime

            try:
                found = exhaustive_disagg(self.dp, self.space_p, self.space_d, floor, limit, self.deadline + 1.0)
            except OutOfTime as e:
                raise TimeLimitError(f"the disaggregated enumeration did not finish within the time limit of "
                                     f"{self.params.time_limit_s:g} s ({e.done:,} of {e.total:,} prefill options)",
                                     limit_s=self.params.time_limit_s) from None
            return self._certify(found, floor, limit, None) if found else None
        return self._cpsat(floor, limit)

    def _cpsat(self, floor: float | None, limit: float | None) -> DisaggCandidate | None:
        from planner.solver import SearchModel

        pre, dec = self.tables
        if self._classes is None:
            self._classes = receive_classes(dec)
        klass, receive = self._classes
        if limit not in self._prefill_rows:  # the same for every SLA level of a frontier
            self._prefill_rows[limit] = prefill_rows(self.dp, pre, receive, limit)
        prows = self._prefill_rows[limit]
        drows = decode_rows(self.dp, dec, klass, floor, pre, prows, receive, limit)
        if not len(prows) or not len(drows):
            return None
        dp = self.dp
        # the rate-matching constraints are enforced linear ones: in CP-SAT's LP relaxation only at level 2
        level = LINEARIZATION_LEVEL if len(prows) + len(drows) <= LINEARIZATION_OPTIONS else None
        model = SearchModel(replace(self.params, linearization_level=level))
        pp, dd, z = add_pools(model, dp, pre, prows, dec, drows, floor)
        eff = effective_capacity(dp, pre, prows, receive, limit)
        demand = dec.rate[drows] / dp.decode.workload.osl
        unit = max(float(eff.max()), float(demand.max())) / 2.0**RATE_BITS
        if unit <= 0:
            return None
        model.add_rate_matching(pp, dd, np.ceil(demand / unit), klass[drows], np.floor(eff / unit), z)
        scale = 2.0**RATE_BITS / float(dec.rate[drows].max())
        model.maximize_total([(dd, np.floor(dec.rate[drows] * scale))])
        best_tokens, start = enumerate_argbest(dp, pre, dec, prows, drows, klass, receive, floor, limit)
        if start is not None:  # a first solution for CP-SAT to improve on: it still proves the optimum itself
            model.hint_options({"prefill": (start[0], start[1]), "decode": (start[2], start[3])})
        sol = model.solve(self.deadline + 1.0)
        if sol.status == "MODEL_INVALID":
            raise RuntimeError("CP-SAT refused the disaggregated model")  # a bug
        if sol.status not in ("OPTIMAL", "FEASIBLE"):
            if sol.status == "INFEASIBLE":
                return None
            raise TimeLimitError(f"no plan found within the time limit of {self.params.time_limit_s:g} s",
                                 limit_s=self.params.time_limit_s)
        kp, kd = sol.options["prefill"], sol.options["decode"]
        x, y = sol.replicas["prefill"], sol.replicas["decode"]
        kp, x = self.leanest_prefill(prows, kp, kd, y, limit, x)
        ymax = int((dp.prefill.gpus if dp.shared else dp.decode.gpus) // dec.gpus[drows].min())
        bound = None if sol.bound is None else (sol.bound + ymax) / scale / dp.gpus  # each y loses < 1 unit
        cand = DisaggCandidate(pre.parallel(kp, int(x)), int(pre.batch[kp]), dec.parallel(kd, int(y)),
                               int(dec.batch[kd]), sol.status, bound, model_options=len(prows) + len(drows))
        return self._certify(cand, floor, limit, best_tokens)

    def leanest_prefill(self, prows: np.ndarray, kp: int, kd: int, y: int, limit: float | None, x: int
                         ) -> tuple[int, int]:
        """Among the prefill options of the model that serve the chosen decode pool (option kd, y workers) within
        every rule, the one needing the fewest GPUs at its fewest workers, then the lowest TTFT: the same output
        tokens/s (the decode pool sets them), so a plan as good, with no idle prefill GPU. (kp, x) stand when
        nothing does better."""
        pre, dec = self.tables
        dp = self.dp
        rows = prows[pre.broken[prows] == 0]
        most = int((dp.prefill.gpus // pre.gpus[rows]).max()) if len(rows) else x
        xs = np.arange(1, most + 1)[None, :]
        g = evaluate(dp, pre, dec, rows[:, None], xs, kd, y)
        used_p = xs * pre.gpus[rows][:, None]
        fits = (used_p + y * dec.gpus[kd] <= dp.prefill.gpus) if dp.shared else (used_p <= dp.prefill.gpus)
        ok = fits & ~rules.rate_matching_broken(g["prefill_load"]) & ~rules.ttft_broken(g["ttft_checked_s"], limit)
        if not ok.any():
            return kp, x
        cost_ = np.where(ok, used_p + np.minimum(g["ttft_s"], 1e6) / 1e7, np.inf)  # GPUs first, then TTFT
        i, k = np.unravel_index(int(np.argmin(cost_)), cost_.shape)
        return int(rows[i]), int(xs[0, k])

    def _certify(self, cand: DisaggCandidate, floor: float | None, limit: float | None,
                 best_tokens: float | None) -> DisaggCandidate:
        """Re-check a result: every rule on the float model (a broken one is a bug), and for CP-SAT no deployment
        of the options it saw, with any worker counts, beats it (`best_tokens`: the closed-form enumeration's
        best, enumerate_argbest, None for the oracle); a beaten result is FEASIBLE, never OPTIMAL, with the
        enumeration's best as its bound."""
        broken = deployment_violations(self.dp, cand.prefill, cand.chunk, cand.decode, cand.micro_batch, floor, limit)
        if broken:
            raise RuntimeError(f"disaggregated search result breaks {broken} in the float cost model")  # a bug
        if best_tokens is None:
            return DisaggCandidate(**{**cand.__dict__, "certified": True})
        value = deployment_tokens(self.dp, cand) / self.dp.gpus
        best = best_tokens / self.dp.gpus
        beaten = best > value * (1 + CERTIFY_REL_TOL)
        bound = cand.objective_bound
        if bound is None or bound < best:
            bound = best
        return DisaggCandidate(**{**cand.__dict__, "status": "FEASIBLE" if beaten else cand.status,
                                  "objective_bound": bound, "certified": not beaten})


def enumerate_best(dp: DisaggProblem, pre: PoolOptions, dec: PoolOptions, prows, drows, klass, receive,
                   floor: float | None, limit: float | None) -> float:
    """The most output tokens/s [tokens/s] any deployment of these options reaches (enumerate_argbest); 0 when
    none is valid."""
    return enumerate_argbest(dp, pre, dec, prows, drows, klass, receive, floor, limit)[0]


def enumerate_argbest(dp: DisaggProblem, pre: PoolOptions, dec: PoolOptions, prows, drows, klass, receive,
                      floor: float | None, limit: float | None) -> tuple[float, tuple[int, int, int, int] | None]:
    """The most output tokens/s [tokens/s] any deployment of these options reaches, and one that reaches it
    (prefill option, its workers, decode option, its workers), by closed form: for each prefill option, decode
    option and link, the most decode workers y for which the fewest prefill workers whose effective capacity
    covers the demand, ceil(R * y / osl / E), fit the GPU budget beside them (a feasibility monotone in y, so
    found by bisection); (0, None) when none is valid."""
    ok_p = prows[pre.broken[prows] == 0]
    sla_ok = ~rules.sla_broken(dec.tpot_hi_s[drows], floor) if floor else np.ones(len(drows), bool)
    ok_d = drows[(dec.broken[drows] == 0) & sla_ok]
    if not len(ok_p) or not len(ok_d):
        return 0.0, None
    eff = effective_capacity(dp, pre, ok_p, receive, limit)  # [P, J, 2]
    budget_p = dp.prefill.gpus
    budget_d = dp.prefill.gpus if dp.shared else dp.decode.gpus
    gd = dec.gpus[ok_d].astype(np.int64)
    per_worker = dec.rate[ok_d] / dp.decode.workload.osl  # demand of one decode worker [requests/s]
    best, arg = 0.0, None
    for i, k in enumerate(ok_p):
        gp = int(pre.gpus[k])
        for z in ((0, 1) if dp.shared else (0,)):
            e = eff[i, klass[ok_d], z]
            room = min(budget_p, dp.domain_gpus) if z else budget_p

            def fits(y: np.ndarray, e=e, gp=gp, room=room) -> np.ndarray:
                with np.errstate(divide="ignore", invalid="ignore"):
                    x = np.where(e > 0, np.ceil(per_worker * y / e), np.inf)
                if dp.shared:
                    return (y >= 1) & (x * gp + y * gd <= room)
                return (y >= 1) & (x * gp <= budget_p) & (y * gd <= budget_d)

            lo = np.zeros(len(ok_d), np.int64)  # the largest y known to fit (0: none)
            hi = budget_d // gd + 1  # the smallest y known not to
            while np.any(hi - lo > 1):
                mid = (lo + hi) // 2
                ok = fits(mid)
                lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
            if lo.any():
                tokens = dec.rate[ok_d] * lo
                d = int(np.argmax(tokens))
                if float(tokens[d]) > best:
                    x = int(np.ceil(per_worker[d] * lo[d] / e[d]))
                    best, arg = float(tokens[d]), (int(k), x, int(ok_d[d]), int(lo[d]))
    return best, arg


# --- plans ------------------------------------------------------------------------------------------------------


def _memory(p: Problem, terms: dict) -> Memory:
    g = {k: float(v) for k, v in terms.items()}
    return Memory(per_gpu_bytes=g["per_gpu_bytes"], capacity_bytes=p.cluster.capacity_bytes,
                  usable_bytes=cost.usable_bytes(p), weights_bytes=g["weights_bytes"],
                  kv_cache_bytes=g["kv_cache_bytes"], activation_bytes=g["activation_bytes"],
                  comm_buffer_bytes=g["comm_buffer_bytes"], reserved_bytes=g["reserved_bytes"],
                  draft_bytes=g.get("draft_bytes", 0.0))


def _short(par: Parallel) -> str:
    return par.model_copy(update={"dp": 1}).label.removesuffix(" DP1")


def deployment_label(pre_par: Parallel, dec_par: Parallel) -> str:
    """'prefill 4x TP1 PP8 + decode 1x TP8 ADP4 PP1': each pool's workers (its dp) and worker layout."""
    return f"prefill {pre_par.dp}x {_short(pre_par)} + decode {dec_par.dp}x {_short(dec_par)}"


def build_plan(dp: DisaggProblem, pre_par: Parallel, chunk: int, dec_par: Parallel, m: int, info: SolverInfo
               ) -> Plan:
    """The Plan of a disaggregated deployment (pre_par.dp prefill workers, dec_par.dp decode workers), every
    figure from cost.disagg_metrics. Top-level parallel, batch and memory are the decode pool's."""
    from planner.specs import Batch

    p, pd = dp.prefill, dp.decode
    x, y = pre_par.dp, dec_par.dp
    one_p, one_d = pre_par.model_copy(update={"dp": 1}), dec_par.model_copy(update={"dp": 1})
    used = x * pre_par.replica_gpus + y * dec_par.replica_gpus
    same = bool(dp.same_domain(used))
    g = {k: float(v) for k, v in cost.disagg_metrics(p, one_p, chunk, x, pd, one_d, m, y, same).items()}
    conc = m * dec_par.attention_dp * dec_par.pp
    tpot_ms = g["tpot_s"] * 1e3
    prefill = PoolPlan(
        role="prefill", cluster=p.cluster.name, label=_short(pre_par), parallel=pre_par, workers=x,
        gpus_per_worker=pre_par.replica_gpus, gpus=x * pre_par.replica_gpus, batch=PoolBatch(chunk_tokens=chunk),
        memory=_memory(p, cost.prefill_memory_breakdown(p, one_p, chunk)),
        metrics=PoolMetrics(pass_ms=g["prefill_pass_s"] * 1e3, prefill_capacity_requests_per_s=g["prefill_capacity"],
                            prefill_service_ms=g["prefill_service_s"] * 1e3, load=g["prefill_load"],
                            requests_per_s=g["requests_per_s"] / x))
    dec_mem = _memory(pd, cost.decode_memory_breakdown(pd, one_d, m))
    decode = PoolPlan(
        role="decode", cluster=pd.cluster.name, label=_short(dec_par), parallel=dec_par, workers=y,
        gpus_per_worker=dec_par.replica_gpus, gpus=y * dec_par.replica_gpus,
        batch=PoolBatch(micro_batch=m, concurrency=conc), memory=dec_mem,
        metrics=PoolMetrics(pass_ms=tpot_ms * cost.tokens_per_step(pd), tpot_ms=tpot_ms, tokens_per_s=g["decode_rate"],
                            requests_per_s=g["requests_per_s"] / y))
    kv = KVTransfer(bytes_per_request=cost.kv_request_bytes(p), link="scale-up" if same else "scale-out",
                    send_ms=g["kv_send_s"] * 1e3, receive_ms=g["kv_receive_s"] * 1e3,
                    transfer_ms=g["kv_transfer_s"] * 1e3)
    metrics = Metrics(tokens_per_s_per_user=1000 / tpot_ms, tokens_per_s_per_gpu=g["tokens_per_s"] / dp.gpus,
                      tpot_ms=tpot_ms, ttft_ms=g["ttft_s"] * 1e3, requests_per_s=g["requests_per_s"],
                      prefill_share=0.0, prefill_load=g["prefill_load"], tokens_per_step=cost.tokens_per_step(pd),
                      percentiles=percentiles.disagg_percentiles(p, g, pd))
    cluster = p.cluster.name if dp.shared else f"{p.cluster.name} (prefill) + {pd.cluster.name} (decode)"
    return Plan(
        model=p.model.name, cluster=cluster, gpus=dp.gpus, gpus_used=used, isl=p.workload.isl, osl=p.workload.osl,
        precision=p.precision, kv_precision=p.kv_precision, gemm_math=p.gemm_math,
        expert_precision=p.experts if p.mixed_formats else None,
        expert_gemm_math=p.math_for(p.experts) if p.mixed_formats else None,
        label=deployment_label(pre_par, dec_par), parallel=dec_par,
        batch=Batch(concurrency=conc, chunk_tokens=chunk, micro_batch=m), metrics=metrics, memory=dec_mem,
        solver=info, sla=p.sla, workload=p.workload, backend=p.backend, speculation=cost.resolved_speculation(p),
        notes=cost.approximation_notes(p),
        spans_domains=cost.domain_spans(pd, one_d), serving="disagg", prefill=prefill, decode=decode, kv_transfer=kv)


def plan_of(s: DisaggSearcher, cand: DisaggCandidate, wall_s: float, candidates: int | None = None) -> Plan:
    """The Plan of a search result, with its status, bound, gap and certificate."""
    info = SolverInfo(method=s.method, status=cand.status, wall_s=wall_s, evaluated=s.evaluated, candidates=candidates,
                      model_options=cand.model_options, certified=cand.certified,
                      objective_bound=cand.objective_bound)
    plan = build_plan(s.dp, cand.prefill, cand.chunk, cand.decode, cand.micro_batch, info)
    bound = cand.objective_bound
    gap = max(0.0, (bound - plan.metrics.tokens_per_s_per_gpu) / bound) if bound else None
    return plan.model_copy(update={"solver": info.model_copy(update={"gap": gap})})


def diagnose(s: DisaggSearcher, floor: float | None) -> InfeasibleError:
    """Why no disaggregated plan exists: a pool fits on no layout, the SLA is beyond every decode worker, or the
    TTFT limit is beyond every prefill worker even idle (each saying what is reachable)."""
    dp = s.dp
    if dp.shared and dp.prefill.gpus < 2:
        return InfeasibleError("a disaggregated plan needs at least 2 GPUs, one per pool; 1 given", "layout",
                               {"gpus": 2})
    pre, dec = s.tables
    fit_p = np.flatnonzero(pre.broken == 0)
    fit_d = np.flatnonzero(dec.broken == 0)
    if not len(fit_p) or not len(fit_d):
        pool, prob = ("prefill", dp.prefill) if not len(fit_p) else ("decode", dp.decode)
        return InfeasibleError(f"no {pool} worker of {prob.model.name} fits in memory on up to {prob.gpus} "
                               f"{prob.cluster.name} GPUs at {prob.precision_label}", "fit")
    if floor and not (~rules.sla_broken(dec.tpot_hi_s[fit_d], floor)).any():
        best = 1 / float(dec.tpot_hi_s[fit_d].min())
        return InfeasibleError(f"SLA {floor:g} tokens/s/user is unreachable disaggregated: the fastest decode worker "
                               f"reaches {best:.1f} tokens/s/user", "sla", {"tokens_per_s_per_user": best})
    sla = dp.prefill.sla
    limit = sla.max_ttft_s if sla else None
    if limit is not None:
        klass, receive = receive_classes(dec)
        sla_ok = fit_d if not floor else fit_d[~rules.sla_broken(dec.tpot_hi_s[fit_d], floor)]
        fastest_recv = receive[np.unique(klass[sla_ok])].min(axis=0)
        idle = cost.disagg_ttft(dp.prefill, pre.service_s[fit_p][:, None], 0.0,
                                cost.kv_transfer_time(pre.link_s[fit_p], fastest_recv[None, :]))
        lowest = float(idle.min()) * 1e3
        if lowest > limit * 1e3:
            return InfeasibleError(f"TTFT limit {limit * 1e3:.0f} ms is unreachable disaggregated: the lowest TTFT a "
                                   f"prefill worker reaches, idle, is {lowest:.0f} ms", "ttft", {"ttft_ms": lowest})
    return InfeasibleError(
        f"no disaggregated plan fits the {dp.gpus} GPUs given: the prefill and decode workers that meet the SLA"
        f"{' and TTFT' if limit is not None else ''} need more GPUs together", "layout")


def solve_disagg(dp: DisaggProblem, *, method: str = "cpsat", chunks: tuple[int, ...] | None = None,
                 micro_batches: tuple[int, ...] | None = None, params=None, deadline: float | None = None) -> Plan:
    """The best disaggregated plan (most output tokens/s within the GPUs given) under the problem's SLA and TTFT
    limit. Raises InfeasibleError saying what is reachable when none exists."""
    if dp.prefill.confidence is not None:
        raise SpecError("--confidence applies to aggregated plans only (the error bars are fitted on agg runs)")
    sp = Space.of(dp.prefill, chunks, micro_batches)
    sd = sp if dp.shared else Space.of(dp.decode, chunks, micro_batches)
    s = DisaggSearcher(dp, sp, sd, method, params, deadline)
    candidates = sp.layouts * len(sp.chunks) + sd.layouts * len(sd.micro_batches)
    floor = dp.prefill.sla.min_tokens_per_s_per_user if dp.prefill.sla else None
    found = s.best(floor)
    wall = time.perf_counter() - s.started
    if found is None:
        raise diagnose(s, floor)
    return plan_of(s, found, wall, candidates)


def estimate(dp: DisaggProblem, prefill: Parallel, chunk: int, decode: Parallel, micro_batch: int) -> Plan:
    """Evaluate one given disaggregated deployment: prefill.dp prefill workers of that layout carrying `chunk`
    prompt tokens per pass and rank, decode.dp decode workers with `micro_batch` requests per rank and
    micro-batch. Raises InvalidLayoutError naming a broken layout rule, a pool that does not fit in memory or
    the GPUs given, or a prefill pool that cannot keep up at all (load >= 1; a load above MAX_PREFILL_LOAD is
    evaluated, the search would not plan it)."""
    from planner.errors import InvalidLayoutError

    if chunk < 1 or micro_batch < 1:
        raise InvalidLayoutError("the prefill chunk and the decode micro-batch must be positive")
    broken = deployment_violations(dp, prefill, chunk, decode, micro_batch, None, None)
    for rule in broken:
        pool, _, name = rule.rpartition(".")
        if name in ("gpu_budget", "rate_matching"):
            continue
        p, par = (dp.prefill, prefill) if pool == "prefill" else (dp.decode, decode)
        raise InvalidLayoutError(f"invalid {pool} layout {_short(par)}: {rules.explain(p, par, name)}", name)
    info = SolverInfo(method="estimate", status="EVALUATED", wall_s=0.0)
    plan = build_plan(dp, prefill, chunk, decode, micro_batch, info)
    if "gpu_budget" in broken:
        raise InvalidLayoutError(f"the pools use {plan.prefill.gpus} + {plan.decode.gpus} GPUs, more than the "
                                 f"{dp.prefill.gpus if dp.shared else f'{dp.prefill.gpus} + {dp.decode.gpus}'} "
                                 "given", "gpu_budget")
    if plan.metrics.prefill_load >= 1:
        need = math.ceil(plan.metrics.requests_per_s / plan.prefill.metrics.prefill_capacity_requests_per_s)
        raise InvalidLayoutError(
            f"the prefill pool cannot keep up: the decode pool asks {plan.metrics.requests_per_s:.3g} prompts/s, "
            f"{prefill.dp} prefill workers serve "
            f"{plan.prefill.metrics.prefill_capacity_requests_per_s * prefill.dp:.3g} (load "
            f"{plan.metrics.prefill_load:.2f}); use at least {need} prefill workers or fewer decode requests",
            "rate_matching")
    return plan


def alternative_of(plan: Plan | None, serving: str, reason: str | None = None) -> Alternative:
    """The summary line of the mode `auto` did not choose."""
    if plan is None:
        return Alternative(serving=serving, reason=reason)
    m = plan.metrics
    return Alternative(serving=serving, label=plan.label, tokens_per_s_per_gpu=m.tokens_per_s_per_gpu,
                       tokens_per_s_per_user=m.tokens_per_s_per_user, ttft_ms=m.ttft_ms)


