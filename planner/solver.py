"""The CP-SAT model: every rule a constraint, the cost model linearised over one-hot choices.

Each choice (tp, attention_dp, pp, ep, moe_tp) is an integer with one Boolean per candidate
value; the batch is one Boolean per (micro-batch m, chunk C) pair. Every term of planner.cost
depends on few choices, so it enters as linear lower bounds enforced by those Booleans:

- terms non-linear in (m, C) (attention block, expert GEMMs): for each value of the degree they
  depend on, ``t >= sum_k table[k] * z_k`` over the (m, C) Booleans z;
- terms linear in tokens (all-to-all, gathers, pipeline hops, KV cache, activations):
  ``t >= a + b * tokens`` for each value of the few degrees they depend on.

All times are lower bounds the objective or the SLA pushes down, so at an optimum they equal the
cost model (integers rounded up: ns for time, MiB for memory, so accepted plans pass the float
model). Tokens/s/GPU is a ratio; it is maximised exactly by Dinkelbach's method: each round solves
``max tpot_0 * in_flight - in_flight_0 * tpot`` to optimality until no plan beats the incumbent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import product
from typing import Literal

import numpy as np
from ortools.sat.python import cp_model

from planner import cost
from planner.space import Space
from planner.specs import Parallel, Problem

NS = 1e9
"""Integer time unit: nanoseconds per second."""
PS_PER_NS = 1000
"""Finer unit for per-token slopes: picoseconds per nanosecond."""
US_PER_NS = 1e-3
"""The objective reads TPOT in microseconds to keep its coefficients small."""
MIB = 2**20
"""Integer memory unit: bytes per MiB (terms rounded up)."""
BIG = 10**11
"""Stand-in for an unreachable time [ns] (100 s); kept small: huge coefficients make CP-SAT unsound."""

Objective = Literal["throughput", "min_tpot", "min_ttft", "min_gpus", "min_gpus_for_demand"]


@dataclass(frozen=True)
class SolverParams:
    """CP-SAT parameters in one place."""

    time_limit_s: float = 60.0
    workers: int = 1  # one worker keeps the search deterministic: the same problem, the same plan
    seed: int = 0


@dataclass(frozen=True)
class Candidate:
    """A solution: layout and batching, with the solver's status and proven bound."""

    parallel: Parallel
    micro_batch: int
    chunk: int
    status: str
    objective_bound: float | None = None


def to_int(a, scale: float) -> list[int]:
    """Scale, round up and cap at BIG: the one float -> integer conversion of the model."""
    v = np.ceil(np.asarray(a, dtype=float) * scale - 1e-9)
    v = np.where(np.isfinite(v), np.minimum(v, BIG), BIG)
    return [int(x) for x in np.ravel(v)]


class CpSatPlanner:
    """Builds the CP-SAT model of problem `p` over `space`; `solve()` returns candidates."""

    def __init__(
        self,
        p: Problem,
        space: Space,
        objective: Objective = "throughput",
        use_sla: bool = True,
        use_ttft: bool = True,
        params: SolverParams | None = None,
        demand_tokens_per_s: float | None = None,
    ) -> None:
        """`demand_tokens_per_s` (objective "min_gpus_for_demand"): output tokens/s all replicas must
        serve together; p.gpus then caps the GPUs the sizing may use and dp is free."""
        self.p, self.s, self.objective = p, space, objective
        self.params = params or SolverParams()
        if (objective == "min_gpus_for_demand") != (demand_tokens_per_s is not None):
            raise ValueError("objective min_gpus_for_demand goes with demand_tokens_per_s")
        self.demand = demand_tokens_per_s
        self.model = cp_model.CpModel()
        self._variables()
        self._add_gpu_budget()
        self._add_heads_divisible()
        self._add_layers_divisible()
        self._add_experts_divisible()
        self._add_moe_resplit()
        self._add_dense_no_attention_dp()
        self._add_tp_in_scaleup_domain()
        self._add_chunk_keeps_up()
        self._add_memory()
        self._add_tpot()
        if use_sla and p.sla and p.sla.min_tokens_per_s_per_user:
            self._add_sla()
        if self.demand is not None:
            self._add_demand()
        ttft_limit = p.sla.max_ttft_s if (use_ttft and p.sla) else None
        if ttft_limit is not None or objective == "min_ttft":
            self._add_ttft(ttft_limit)

    # --- variables ------------------------------------------------------------------------------
    def _choice(self, name: str, values: tuple[int, ...]) -> tuple[cp_model.IntVar, list[cp_model.IntVar]]:
        """The chosen value and one Boolean per candidate value, exactly one true."""
        val = self.model.NewIntVarFromDomain(cp_model.Domain.FromValues(list(values)), name)
        is_ = [self.model.NewBoolVar(f"{name}=={v}") for v in values]
        self.model.AddExactlyOne(is_)
        self.model.Add(val == sum(v * b for v, b in zip(values, is_)))
        return val, is_

    def _product(self, name: str, factors: list, upper: int) -> cp_model.IntVar:
        v = self.model.NewIntVar(0, upper, name)
        self.model.AddMultiplicationEquality(v, factors)
        return v

    def _variables(self) -> None:
        s, d = self.s, self.p.cluster.scaleup_domain_gpus
        self.tp, self.b_tp = self._choice("tp", s.tp)
        self.adp, self.b_adp = self._choice("attention_dp", s.attention_dp)
        self.pp, self.b_pp = self._choice("pp", s.pp)
        self.ep, self.b_ep = self._choice("ep", s.ep)
        self.moe_tp, _ = self._choice("moe_tp", s.moe_tp)
        self.dp = self.model.NewIntVar(1, s.max_dp, "dp")
        # the batch: one Boolean per (micro-batch, chunk) pair
        self.pairs = [(m, c) for m in s.micro_batches for c in s.chunks]
        self.z = [self.model.NewBoolVar(f"m={m},chunk={c}") for m, c in self.pairs]
        self.model.AddExactlyOne(self.z)
        self.mb = self.model.NewIntVarFromDomain(cp_model.Domain.FromValues(list(s.micro_batches)), "micro_batch")
        self.chunk = self.model.NewIntVarFromDomain(cp_model.Domain.FromValues(list(s.chunks)), "chunk")
        self.model.Add(self.mb == sum(m * z for (m, _), z in zip(self.pairs, self.z)))
        self.model.Add(self.chunk == sum(c * z for (_, c), z in zip(self.pairs, self.z)))
        stage_max = max(s.tp) * max(s.attention_dp)
        self.stage = self.model.NewIntVar(1, stage_max, "stage_gpus")
        for (i, tpv), (j, av) in product(enumerate(s.tp), enumerate(s.attention_dp)):
            self.model.Add(self.stage == tpv * av).OnlyEnforceIf([self.b_tp[i], self.b_adp[j]])
        self.replica = self.model.NewIntVar(1, stage_max * max(s.pp), "replica_gpus")
        for k, ppv in enumerate(s.pp):
            self.model.Add(self.replica == ppv * self.stage).OnlyEnforceIf(self.b_pp[k])
        self.replica_is: dict[int, cp_model.IntVar] = {}
        for size in sorted({t * a * q for t in s.tp for a in s.attention_dp for q in s.pp}):
            is_size = self.model.NewBoolVar(f"replica=={size}")
            self.model.Add(self.replica == size).OnlyEnforceIf(is_size)
            self.model.Add(self.replica != size).OnlyEnforceIf(is_size.Not())
            self.replica_is[size] = is_size
        self.stage_cross = self._reify_above("stage_crosses_domain", self.stage, d)
        self.replica_cross = self._reify_above("replica_crosses_domain", self.replica, d)

    def _reify_above(self, name: str, var, limit: int) -> cp_model.IntVar:
        b = self.model.NewBoolVar(name)
        self.model.Add(var > limit).OnlyEnforceIf(b)
        self.model.Add(var <= limit).OnlyEnforceIf(b.Not())
        return b

    def _pair_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """m and C of every (m, C) pair, in the order of the Booleans z."""
        return np.array([m for m, _ in self.pairs]), np.array([c for _, c in self.pairs])

    def _over_pairs(self, name: str, cases) -> cp_model.IntVar:
        """t >= sum_k values[k] * z_k for the case whose Booleans hold; `cases` yields (lits, values [s])."""
        t = self.model.NewIntVar(0, BIG, name)
        for lits, values in cases:
            ints = to_int(values, NS)
            self.model.Add(t >= sum(v * z for v, z in zip(ints, self.z) if v)).OnlyEnforceIf(lits)
        return t

    def _linear_in_tokens(self, name: str, cases, tokens, per: float) -> cp_model.IntVar:
        """t >= a + b * per * tokens for the case whose Booleans hold; (lits, a [s], b [s/token]).

        Slopes are kept in ps per token.
        """
        t = self.model.NewIntVar(0, BIG, name)
        for lits, a, b in cases:
            a_ns, b_ps = to_int(a, NS)[0], to_int(np.asarray(b) * per, NS * PS_PER_NS)[0]
            self.model.Add(PS_PER_NS * t >= PS_PER_NS * a_ns + b_ps * tokens).OnlyEnforceIf(lits)
        return t

    # --- rules ----------------------------------------------------------------------------------
    def _add_gpu_budget(self) -> None:
        """dp * tp * attention_dp * pp <= GPUs given, i.e. dp <= GPUs // replica for each replica size."""
        g = self.p.gpus
        for size, is_size in self.replica_is.items():
            self.model.Add(self.dp <= g // size).OnlyEnforceIf(is_size)  # 0 when the replica exceeds g

    def _divides(self, values: tuple[int, ...], lits: list, n: int) -> None:
        """Only candidate values that divide n may be chosen."""
        for v, b in zip(values, lits):
            if n % v:
                self.model.Add(b == 0)

    def _add_heads_divisible(self) -> None:
        """tp divides the attention heads."""
        self._divides(self.s.tp, self.b_tp, self.p.model.num_attention_heads)

    def _add_layers_divisible(self) -> None:
        """pp divides the layers."""
        self._divides(self.s.pp, self.b_pp, self.p.model.num_layers)

    def _add_experts_divisible(self) -> None:
        """ep divides the routed experts; ep = 1 for a dense model."""
        if self.p.model.is_moe:
            self._divides(self.s.ep, self.b_ep, self.p.model.num_experts)
        else:
            self.model.Add(self.ep == 1)

    def _add_moe_resplit(self) -> None:
        """MoE layers re-split the stage: moe_tp * ep = tp * attention_dp."""
        for j, epv in enumerate(self.s.ep):
            self.model.Add(epv * self.moe_tp == self.stage).OnlyEnforceIf(self.b_ep[j])

    def _add_dense_no_attention_dp(self) -> None:
        """A dense model has no attention-DP (it would only duplicate dp)."""
        if not self.p.model.is_moe:
            self.model.Add(self.adp == 1)

    def _add_tp_in_scaleup_domain(self) -> None:
        """The tp group sits inside one scale-up domain."""
        self.model.Add(self.tp <= self.p.cluster.scaleup_domain_gpus)

    def _add_chunk_keeps_up(self) -> None:
        """Prefill keeps the batch full: m * isl < osl * chunk (load rho < 1)."""
        w = self.p.workload
        self.model.Add(w.osl * self.chunk - w.isl * self.mb >= 1)

    def _add_memory(self) -> None:
        """Weights + buffers + KV cache + activations + reserved <= usable HBM [MiB, rounded up]."""
        p, s = self.p, self.s
        cap = math.floor(cost.usable_bytes(p) / MIB)
        weights = self.model.NewIntVar(0, 10**9, "weights_mib")
        for (i, tpv), (j, av), (k, ppv) in product(enumerate(s.tp), enumerate(s.attention_dp), enumerate(s.pp)):
            w = cost.weight_bytes_per_gpu(p, tpv, av, ppv) + cost.comm_buffer_bytes(p, tpv * av * ppv)
            self.model.Add(weights >= min(to_int(w, 1 / MIB)[0], cap + 1)).OnlyEnforceIf(
                [self.b_tp[i], self.b_adp[j], self.b_pp[k]])
        kv = self.model.NewIntVar(0, 10**9, "kv_cache_mib")
        act = self.model.NewIntVar(0, 10**9, "activation_mib")
        for i, tpv in enumerate(s.tp):
            # both linear in m and C; slopes in 1/1024 MiB to keep them integer
            kv_m = cost.kv_cache_bytes_per_gpu(p, tpv, 1) / MIB
            a_m = cost.activation_bytes_per_gpu(p, tpv, 1, 0) / MIB
            a_c = cost.activation_bytes_per_gpu(p, tpv, 0, 1) / MIB
            self.model.Add(1024 * kv >= math.ceil(1024 * kv_m) * self.mb).OnlyEnforceIf(self.b_tp[i])
            self.model.Add(1024 * act >= math.ceil(1024 * a_m) * self.mb + math.ceil(1024 * a_c) * self.chunk
                           ).OnlyEnforceIf(self.b_tp[i])
        reserved = math.ceil(cost.reserved_bytes(p) / MIB)
        self.model.Add(weights + kv + act + reserved <= cap)

    def _pass_time(self, kind: Literal["mean", "own", "full"]) -> list:
        """Terms of one pass [ns]: the mean over iterations ("mean"), or an iteration carrying a
        request's own prompt ("own", cost.ttft_chunk tokens) or a full chunk ("full")."""
        p, s = self.p, self.s
        tag = f"{kind}_pass"
        chunk_pass = kind != "mean"
        m, c = self._pair_grid()
        carried = cost.ttft_chunk(p, m, c) if kind == "own" else c.astype(float)

        def shaped(block):
            return block(carried) if chunk_pass else cost.mixed(p, block, m, c)

        terms = [self._over_pairs(f"{tag}_attention", (
            ([self.b_tp[i]], shaped(lambda cc, v=tpv: cost.attention_block_time(p, v, m, cc)))
            for i, tpv in enumerate(s.tp)))]
        # tokens per rank the linear terms see: m + C in a chunk pass, m (1 + isl/osl) on average
        if chunk_pass:  # m + the carried chunk, per (m, C) pair
            tokens, per = sum(math.ceil(t - 1e-9) * z for t, z in zip(m + carried, self.z)), 1.0
        else:
            tokens, per = self.mb, 1 + p.workload.isl / p.workload.osl
        if p.model.is_moe:
            work = self._over_pairs(f"{tag}_moe_work", (
                ([self.b_adp[j]], shaped(lambda cc, v=av: cost.moe_gemm_work(p, v, m + cc)))
                for j, av in enumerate(s.attention_dp)))
            gemm = self.model.NewIntVar(0, BIG, f"{tag}_moe_gemm")
            for i, tpv in enumerate(s.tp):  # gemm >= work / tp
                self.model.Add(tpv * gemm >= work).OnlyEnforceIf(self.b_tp[i])
            terms.append(gemm)
            cross = (self.stage_cross.Not(), self.stage_cross)
            exchange = [
                ([self.b_adp[i], self.b_ep[j], cross[x]], cost.moe_exchange_time(p, av, epv, x, 0),
                 cost.moe_exchange_time(p, av, epv, x, 1) - cost.moe_exchange_time(p, av, epv, x, 0))
                for (i, av), (j, epv), x in product(enumerate(s.attention_dp), enumerate(s.ep), (0, 1)) if av > 1
            ]
            if exchange:
                terms.append(self._linear_in_tokens(f"{tag}_moe_exchange", exchange, tokens, per))
        cross = (self.replica_cross.Not(), self.replica_cross)
        hops = [
            ([self.b_pp[i], cross[x]], cost.pipeline_time(p, ppv, x, 0),
             cost.pipeline_time(p, ppv, x, 1) - cost.pipeline_time(p, ppv, x, 0))
            for (i, ppv), x in product(enumerate(s.pp), (0, 1)) if ppv > 1
        ]
        if hops:
            terms.append(self._linear_in_tokens(f"{tag}_pipeline", hops, tokens, per))
        return terms

    def _add_tpot(self) -> None:
        """Mean time per output token: the mean pass time [ns], and a us copy for the objective."""
        self.tpot = self.model.NewIntVar(1, BIG, "tpot_ns")
        self.model.Add(self.tpot >= sum(self._pass_time("mean")))
        self.tpot_us = self.model.NewIntVar(1, math.ceil(BIG * US_PER_NS), "tpot_us")
        self.model.Add(self.tpot_us * round(1 / US_PER_NS) >= self.tpot)

    def _add_sla(self) -> None:
        """tokens/s/user >= the problem's SLA (see set_sla)."""
        self.set_sla(self.p.sla.min_tokens_per_s_per_user)

    def set_sla(self, min_tokens_per_s_per_user: float | None) -> None:
        """The SLA rule: tokens/s/user >= SLA, i.e. TPOT <= 1 / SLA [ns], as the upper bound of the
        TPOT variable; None lifts it. Changing it keeps the model, so a sweep builds it once."""
        cap = BIG if min_tokens_per_s_per_user is None else math.floor(NS / min_tokens_per_s_per_user)
        self.model.proto.variables[self.tpot.index].domain[1] = max(cap, 1)

    def _add_demand(self) -> None:
        """Sizing: the replicas together serve the demand, dp * concurrency / TPOT >= demand [tokens/s];
        the GPUs allocated are whole nodes (cluster.gpus_per_node) holding every replica."""
        s, g, node = self.s, self.p.gpus, self.p.cluster.gpus_per_node
        per_replica = self._concurrency_per_replica()
        self.in_flight = self.model.NewIntVar(1, s.max_dp * max(s.attention_dp) * max(s.pp) * max(s.micro_batches),
                                              "requests_in_flight")
        self.model.AddMultiplicationEquality(self.in_flight, [self.dp, per_replica])
        # tokens/s = in_flight / TPOT = 1e6 * in_flight / tpot_us >= demand (TPOT rounded up: conservative)
        self.model.Add(10**6 * self.in_flight >= math.ceil(self.demand) * self.tpot_us)
        self.gpus_used = self.model.NewIntVar(1, g, "gpus_used")
        for size, is_size in self.replica_is.items():
            self.model.Add(self.gpus_used == size * self.dp).OnlyEnforceIf(is_size)
        self.nodes = self.model.NewIntVar(1, -(-g // node), "nodes")
        self.model.Add(node * self.nodes >= self.gpus_used)

    def _add_ttft(self, limit_s: float | None) -> None:
        """TTFT = own(m, C) * own-prompt pass + backlog(m, C) * full-chunk pass + admission * TPOT + the
        fixed request overhead <= limit (cost.ttft_passes, cost.admission_passes, cost.request_overhead),
        one linear inequality per (m, C) pair."""
        p = self.p
        m, c = self._pair_grid()
        own, backlog = cost.ttft_passes(p, m, c)
        self.own_pass = self.model.NewIntVar(0, BIG, "own_pass_ns")
        self.model.Add(self.own_pass >= sum(self._pass_time("own")))
        ttft = [(o, self.own_pass) for o in own]
        if np.any(backlog > 0):
            self.full_pass = self.model.NewIntVar(0, BIG, "full_pass_ns")
            self.model.Add(self.full_pass >= sum(self._pass_time("full")))
        fixed = round(cost.request_overhead(p) * NS * 1000)  # front-end time, in the same milli-ns
        admission = math.ceil(cost.admission_passes(p) * 1000)  # mean iterations waited, in milli-passes
        for k, z in enumerate(self.z):
            if not np.isfinite(own[k]):
                continue  # the chunk_keeps_up rule already excludes this pair
            expr = math.ceil(own[k] * 1000) * self.own_pass + admission * self.tpot + fixed  # milli-passes x ns
            if backlog[k] > 0:
                expr = expr + math.ceil(backlog[k] * 1000) * self.full_pass
            ttft[k] = expr
            if limit_s is not None:
                self.model.Add(expr <= math.floor(limit_s * NS * 1000)).OnlyEnforceIf(z)
        if self.objective == "min_ttft":
            # in us, so at most BIG / 1000: with BIG here the rows below reached 1e17 (coefficient times
            # domain) and presolve cut the optimum (the H100 case of tests/test_solver.py)
            self.ttft_us = self.model.NewIntVar(0, math.ceil(BIG * US_PER_NS), "ttft_us")
            for k, z in enumerate(self.z):
                if np.isfinite(own[k]):
                    self.model.Add(self.ttft_us * 1000 * round(1 / US_PER_NS) >= ttft[k]).OnlyEnforceIf(z)

    # --- solving --------------------------------------------------------------------------------
    def _concurrency_per_replica(self) -> cp_model.IntVar:
        """Requests in flight per replica: attention_dp * pp * m, linear per (attention_dp, pp) choice."""
        s, g = self.s, self.p.gpus
        per_replica = self.model.NewIntVar(1, max(s.attention_dp) * max(s.pp) * max(s.micro_batches),
                                           "concurrency_per_replica")
        for (j, av), (k, ppv) in product(enumerate(s.attention_dp), enumerate(s.pp)):
            if av * ppv <= g:
                self.model.Add(per_replica == av * ppv * self.mb).OnlyEnforceIf([self.b_adp[j], self.b_pp[k]])
        return per_replica

    def _in_flight(self) -> cp_model.IntVar:
        """Requests in flight over all replicas: dp * (attention_dp * pp * m).

        Dominance: at a fixed replica layout more replicas never lower tokens/s/GPU, so dp takes
        its largest value, GPUs // replica GPUs; both products are then linear per choice.
        """
        s, g = self.s, self.p.gpus
        most = g * max(s.micro_batches)  # dp * attention_dp * pp <= gpus
        per_replica = self._concurrency_per_replica()
        in_flight = self.model.NewIntVar(1, most, "requests_in_flight")
        for size, is_size in self.replica_is.items():
            if size <= g:
                self.model.Add(self.dp == g // size).OnlyEnforceIf(is_size)
                self.model.Add(in_flight == (g // size) * per_replica).OnlyEnforceIf(is_size)
        return in_flight

    def _solver(self) -> cp_model.CpSolver:
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = self.params.time_limit_s
        solver.parameters.num_workers = self.params.workers
        solver.parameters.random_seed = self.params.seed
        # Presolve probing cut optimal solutions of these models in OR-Tools 9.15 (found by the
        # oracle tests, for the throughput and the min-TPOT objective): off, the presolve is sound.
        solver.parameters.cp_model_probing_level = 0
        # No LP relaxation: these models' rules are tables over Booleans, where the LP bound is weak;
        # plain propagation proves the optimum 15-35% sooner (benchmarks/frontier_speed.py).
        solver.parameters.linearization_level = 0
        return solver

    def _run(self, deadline: float) -> tuple[int, cp_model.CpSolver]:
        solver = self._solver()
        solver.parameters.max_time_in_seconds = max(0.01, deadline - time.perf_counter())
        return solver.Solve(self.model), solver

    def _snapshot(self, solver: cp_model.CpSolver) -> dict:
        v = solver.Value
        return {"par": Parallel(tp=v(self.tp), attention_dp=v(self.adp), pp=v(self.pp), ep=v(self.ep),
                                moe_tp=v(self.moe_tp), dp=v(self.dp)),
                "m": v(self.mb), "c": v(self.chunk)}

    def _hint(self, solver: cp_model.CpSolver) -> None:
        self.model.ClearHints()
        for var in (self.tp, self.adp, self.pp, self.ep, self.moe_tp, self.dp, self.mb, self.chunk):
            self.model.AddHint(var, solver.Value(var))

    def _hint_candidate(self, c: Candidate) -> None:
        """Hint a known plan: the layout, the batch Booleans and the replicas it implies."""
        self.model.ClearHints()
        q = c.parallel
        for var, value in ((self.tp, q.tp), (self.adp, q.attention_dp), (self.pp, q.pp), (self.ep, q.ep),
                           (self.moe_tp, q.moe_tp), (self.mb, c.micro_batch), (self.chunk, c.chunk)):
            self.model.AddHint(var, value)
        for (m, chunk), z in zip(self.pairs, self.z):
            self.model.AddHint(z, int(m == c.micro_batch and chunk == c.chunk))

    def _ratio_of(self, c: Candidate, deadline: float) -> tuple[int, int] | None:
        """(requests in flight, TPOT [us]) of a known plan as this model counts them (rounded up), by a
        solve with every choice fixed to it; None when the plan is not feasible here."""
        self._hint_candidate(c)
        self.model.Minimize(self.tpot_us)
        solver = self._solver()
        solver.parameters.fix_variables_to_their_hinted_value = True
        solver.parameters.max_time_in_seconds = max(0.01, deadline - time.perf_counter())
        status = solver.Solve(self.model)
        if status != cp_model.OPTIMAL:
            return None
        return solver.Value(self.in_flight), solver.Value(self.tpot_us)

    def _best_ratio(self, deadline: float, incumbent: Candidate | None = None
                    ) -> tuple[str, dict, float | None] | None:
        """Dinkelbach: maximise in_flight / tpot_us exactly; returns (status, solution, bound).

        `incumbent`, a plan known to be feasible (a neighbouring point of a sweep), replaces the
        first feasibility round: the rounds start from its ratio and it hints the search.
        """
        if not hasattr(self, "in_flight"):
            self.in_flight = self._in_flight()
            order = {c: i for i, c in enumerate(self.s.chunks)}
            self.chunk_rank = sum(order[c] * z for (_, c), z in zip(self.pairs, self.z))
            self.tie_scale = len(self.s.chunks)
        in_flight = self.in_flight
        start = self._ratio_of(incumbent, deadline) if incumbent is not None else None
        if start is not None:
            q, t = start
            sol = {"par": incumbent.parallel, "m": incumbent.micro_batch, "c": incumbent.chunk}
            self._hint_candidate(incumbent)
        else:
            self.model.ClearObjective()  # round 0: any feasible plan
            status, solver = self._run(deadline)
            if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                return None
            sol, q, t = self._snapshot(solver), solver.Value(in_flight), solver.Value(self.tpot_us)
            self._hint(solver)
        while True:
            # ties (equal throughput) go to the larger chunk: it waits less for the chunk budget (TTFT)
            self.model.Maximize(self.tie_scale * (t * in_flight - q * self.tpot_us) + self.chunk_rank)
            status, solver = self._run(deadline)
            if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                return "FEASIBLE", sol, None
            proven = status == cp_model.OPTIMAL
            if solver.ObjectiveValue() < self.tie_scale:
                # no plan beats q / t (proven when OPTIMAL); this round's plan ties it with the largest chunk
                bound = q / (t * 1e-6) / self.p.gpus if proven else None  # on the us-rounded TPOT
                return ("OPTIMAL" if proven else "FEASIBLE"), self._snapshot(solver), bound
            if time.perf_counter() >= deadline:
                return "FEASIBLE", self._snapshot(solver), None
            sol, q, t = self._snapshot(solver), solver.Value(in_flight), solver.Value(self.tpot_us)
            self._hint(solver)

    def _forbid(self, c: Candidate) -> None:
        """Exclude a layout (tp, attention_dp, pp, ep, moe_tp) so the next solve finds another."""
        self.model.AddForbiddenAssignments([self.tp, self.adp, self.pp, self.ep, self.moe_tp],
                                           [c.parallel.key()])

    def _solve_once(self, deadline: float, incumbent: Candidate | None = None) -> Candidate | None:
        if self.objective == "throughput":
            found = self._best_ratio(deadline, incumbent)
            if found is None:
                return None
            status, sol, bound = found
            return Candidate(sol["par"], sol["m"], sol["c"], status, bound)
        if self.objective == "min_gpus_for_demand":
            # fewest whole nodes; among those, the fewest GPUs in use, then the lowest TPOT
            most_gpus, most_tpot = self.p.gpus + 1, math.ceil(BIG * US_PER_NS) + 1
            self.model.Minimize((self.nodes * most_gpus + self.gpus_used) * most_tpot + self.tpot_us)
        else:
            target = {"min_tpot": self.tpot, "min_ttft": getattr(self, "ttft_us", None), "min_gpus": self.replica}
            self.model.Minimize(target[self.objective])
        if incumbent is not None:
            self._hint_candidate(incumbent)
        status, solver = self._run(deadline)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        sol = self._snapshot(solver)
        return Candidate(sol["par"], sol["m"], sol["c"], "OPTIMAL" if status == cp_model.OPTIMAL else "FEASIBLE")

    def solve(self, top: int = 1, incumbent: Candidate | None = None) -> tuple[list[Candidate], float]:
        """Up to `top` best distinct layouts, best first, and the wall time [s]. With top > 1 the
        layouts found stay forbidden in this model; with top = 1 it can be solved again (set_sla).

        `incumbent`: a plan known to be feasible (e.g. the neighbouring point of a sweep) that warms
        up the first search; the result does not depend on it.
        """
        t0 = time.perf_counter()
        deadline = t0 + self.params.time_limit_s
        out: list[Candidate] = []
        for k in range(top):
            if k:
                self._forbid(out[-1])  # the next best is another layout (this stays in the model)
            cand = self._solve_once(deadline, incumbent if not out else None)
            if cand is None:
                break
            out.append(cand)
        return out, time.perf_counter() - t0
