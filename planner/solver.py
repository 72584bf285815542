"""The CP-SAT model: pools of tabulated options, the rules on them as constraints, one objective.

A model is built in steps on one CP-SAT model (planner.cpsat.Model, OR-Tools' CpModelProto):

- `add_pool` adds a pool: one Boolean per option it may choose (planner.options, reduced by dominance),
  exactly one of them true, named with a prefix of its own; a pool runs the chosen layout either with
  the most replicas the GPUs given allow (`replicas="most"`: the single-deployment plan) or with a
  replica count the model chooses (`replicas="free"`: sizing, and pools sharing GPUs);
- one method per rule family adds its constraints on a pool (`add_layout_rules`, `add_memory`,
  `add_chunk_keeps_up`, `add_ttft`, `add_sla`) or on several pools (`add_gpu_budget`, `add_demand`,
  `require_replicas`); each per-option rule forbids, under that rule's enforcement literal, exactly the
  options the one rule checker (planner.rules) finds breaking it, so the model agrees with the float
  cost model bit for bit;
- an objective method (`maximize_throughput`, `minimize`, `maximize_total`, `minimize_nodes_for_demand`),
  then `solve`.

Several pools may share one model: a prefill and a decode pool, or many deployments sharing GPUs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from planner.cpsat import INT_MAX, Model, not_
from planner.options import BIT, Table
from planner.rules import sla_broken

OBJECTIVE_SCALE = float(2**40)
"""Integer objective coefficient of the best option every rule admits: values are scaled to it (relative
resolution 1e-12 at the optimum), which keeps CP-SAT's arithmetic exact."""
MAX_COEFFICIENT = float(2**50)
"""Cap of an objective coefficient (options far from the optimum, or breaking a rule): no overflow."""

Terms = tuple[list[int], list[int]]
"""A linear expression: (variables, integer coefficients)."""


@dataclass(frozen=True)
class SolverParams:
    """CP-SAT parameters in one place."""

    time_limit_s: float = 60.0
    workers: int = 1  # one worker keeps the search deterministic: the same problem, the same plan
    seed: int = 0
    linearization_level: int | None = None  # CP-SAT's (None: its default); the disaggregated model uses 2


@dataclass
class Pool:
    """One pool of a model: the options it may choose (rows of `table`), a Boolean per option, and its
    replicas (fixed per option, or free integers per option summing to `replicas`)."""

    name: str
    table: Table
    rows: np.ndarray  # option indices into table
    chosen: list[int]  # a Boolean variable per row
    per_option_replicas: list[int] | None = None  # free replicas: one count per option
    replicas: int | None = None  # free replicas: their sum

    def expr(self, values: np.ndarray) -> Terms:
        """Sum of integer values [per option] over the chosen option: the chosen option's value."""
        return list(self.chosen), [int(v) for v in values]

    def total(self, per_replica: np.ndarray) -> Terms:
        """A per-replica quantity [per option, integer] of the chosen option times its replicas."""
        if self.per_option_replicas is None:
            dp = self.table.layouts.dp[self.table.layout_of(self.rows)]
            return self.expr(np.asarray(per_replica) * dp)
        return list(self.per_option_replicas), [int(v) for v in per_replica]


@dataclass
class Solution:
    """What a solve found: the status, the chosen option of each pool (index into its table), its replicas,
    and the objective and its proven bound (in the objective's own unit)."""

    status: str
    options: dict[str, int] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    objective: float | None = None
    bound: float | None = None
    wall_s: float = 0.0
    core: list[str] = field(default_factory=list)  # INFEASIBLE under assumed rules: rules that conflict


def _sum(*terms: Terms) -> Terms:
    return [v for t in terms for v in t[0]], [c for t in terms for c in t[1]]


class SearchModel:
    """A CP-SAT model built in steps: pools, rules, one objective, then `solve`."""

    def __init__(self, params: SolverParams | None = None, model: Model | None = None, pool_rules: bool = False
                 ) -> None:
        """`model`: a planner.cpsat.Model to build on (e.g. one holding a caller's other variables). With
        `pool_rules`, each pool's per-option rules get literals of their own, named `pool.rule` (e.g.
        `decode.memory`), so that a caller may release one pool's rule alone."""
        self.params = params or SolverParams()
        self.model = model if model is not None else Model()
        self.pools: list[Pool] = []
        self.enforce: dict[str, int] = {}
        self.pool_rules = pool_rules
        self._scale = 1.0
        self._sense: Literal["max", "min"] = "max"

    # --- pools ----------------------------------------------------------------------------------
    def add_pool(self, table: Table, rows: np.ndarray, name: str = "pool",
                 replicas: Literal["most", "free"] = "most", max_replicas: int | np.ndarray = 0) -> Pool:
        """A pool choosing exactly one of the options `rows` of `table`. replicas "most": the chosen
        layout's dp (GPUs given // replica GPUs); "free": an integer 0..max_replicas (one bound for all, or one
        per option) chosen by the model."""
        if any(p.name == name for p in self.pools):
            raise ValueError(f"a pool named {name!r} is already in the model")
        rows = np.asarray(rows, dtype=np.int64)
        chosen = self.model.new_bools([f"{name}.option[{int(k)}]" for k in rows])
        self.model.add_exactly_one(chosen)
        pool = Pool(name=name, table=table, rows=rows, chosen=chosen)
        if replicas == "free":
            most = np.broadcast_to(np.asarray(max_replicas, dtype=np.int64), rows.shape)
            pool.per_option_replicas = [self.model.new_int(0, int(hi), f"{name}.replicas[{int(k)}]")
                                        for k, hi in zip(rows, most)]
            for lit, n, hi in zip(chosen, pool.per_option_replicas, most):
                self.model.add_linear([n, lit], [1, -int(hi)], -INT_MAX, 0)  # none of an option not chosen
            pool.replicas = self.model.new_int(0, int(most.max()) if len(most) else 0, f"{name}.replicas")
            self.model.add_linear([pool.replicas, *pool.per_option_replicas], [1] + [-1] * len(rows), 0, 0)
        self.pools.append(pool)
        return pool

    def rule_literal(self, rule: str) -> int:
        """The literal that enforces a rule (true: fixed until a caller makes it an assumption)."""
        if rule not in self.enforce:
            lit = self.model.new_bool(f"enforce.{rule}")
            self.model.fix(lit, 1)
            self.enforce[rule] = lit
        return self.enforce[rule]

    def release(self, *rules: str) -> None:
        """Stop enforcing these rules (their literals free: the solver may break them); `enforce_all` undoes it."""
        for rule in rules:
            self.model.free(self.enforce[rule])

    def enforce_all(self) -> None:
        """Enforce every rule again, with no assumption."""
        for lit in self.enforce.values():
            self.model.fix(lit, 1)
        self.model.assume([])

    def assume_rules(self, rules: list[str]) -> None:
        """Enforce these rules as CP-SAT assumptions and no other: an INFEASIBLE solve then names a subset of them
        that conflicts (Solution.core)."""
        for lit in self.enforce.values():
            self.model.free(lit)
        self.model.assume([self.enforce[r] for r in rules])

    def _forbid(self, pool: Pool, rule: str, broken: np.ndarray) -> None:
        """The rule as a constraint: none of the pool's options where `broken` holds may be chosen."""
        lits = [lit for lit, b in zip(pool.chosen, broken) if b]
        if lits:
            name = f"{pool.name}.{rule}" if self.pool_rules else rule
            self.model.add_linear(lits, [1] * len(lits), 0, 0, enforce=[self.rule_literal(name)])

    def _recorded(self, pool: Pool, rule: str) -> np.ndarray:
        return (pool.table.broken[pool.rows] & np.uint16(BIT[rule])) != 0

    # --- rules on one pool ------------------------------------------------------------------------
    def add_layout_rules(self, pool: Pool) -> None:
        """tp divides the heads, pp the layers, ep the experts and the stage; no attention-DP on a dense
        model; a tp group spanning scale-up domains spans whole ones."""
        self._add_heads_divisible(pool)
        self._add_layers_divisible(pool)
        self._add_experts_divisible(pool)
        self._add_moe_resplit(pool)
        self._add_dense_no_attention_dp(pool)
        self._add_tp_spans_whole_domains(pool)

    def _add_heads_divisible(self, pool: Pool) -> None:
        """tp divides the attention heads."""
        self._forbid(pool, "heads_divisible", self._recorded(pool, "heads_divisible"))

    def _add_layers_divisible(self, pool: Pool) -> None:
        """pp divides the layers."""
        self._forbid(pool, "layers_divisible", self._recorded(pool, "layers_divisible"))

    def _add_experts_divisible(self, pool: Pool) -> None:
        """ep divides the routed experts (ep = 1 for a dense model)."""
        self._forbid(pool, "experts_divisible", self._recorded(pool, "experts_divisible"))

    def _add_moe_resplit(self, pool: Pool) -> None:
        """ep divides tp * attention_dp: MoE layers re-split the stage as moe_tp * ep."""
        self._forbid(pool, "moe_resplit", self._recorded(pool, "moe_resplit"))

    def _add_dense_no_attention_dp(self, pool: Pool) -> None:
        """A dense model has attention_dp = 1."""
        self._forbid(pool, "dense_no_attention_dp", self._recorded(pool, "dense_no_attention_dp"))

    def _add_tp_spans_whole_domains(self, pool: Pool) -> None:
        """A tp group larger than one scale-up domain is a multiple of the domain's GPUs."""
        self._forbid(pool, "tp_spans_whole_domains", self._recorded(pool, "tp_spans_whole_domains"))

    def add_memory(self, pool: Pool) -> None:
        """Weights, KV cache, activations, buffers and reserved memory fit the usable HBM of every GPU."""
        self._forbid(pool, "memory", self._recorded(pool, "memory"))

    def add_chunk_keeps_up(self, pool: Pool) -> None:
        """The prefill chunk admits new requests as fast as they finish: load rho < 1."""
        self._forbid(pool, "chunk_keeps_up", self._recorded(pool, "chunk_keeps_up"))

    def add_ttft(self, pool: Pool) -> None:
        """TTFT within the problem's limit (the options record it; none when the problem has no limit)."""
        self._forbid(pool, "ttft", self._recorded(pool, "ttft"))

    def add_sla(self, pool: Pool, min_tokens_per_s_per_user: float | None) -> None:
        """tokens/s/user >= the SLA: 1 / TPOT >= floor, at the TPOT the rules check (Table.tpot_hi_s; None: no
        floor)."""
        if min_tokens_per_s_per_user:
            self._forbid(pool, "sla", sla_broken(pool.table.tpot_hi_s[pool.rows], min_tokens_per_s_per_user))

    def add_batch_rules(self, pool: Pool, min_tokens_per_s_per_user: float | None, use_ttft: bool = True) -> None:
        """Memory, chunk keeps up, SLA and (with use_ttft) the TTFT limit."""
        self.add_memory(pool)
        self.add_chunk_keeps_up(pool)
        self.add_sla(pool, min_tokens_per_s_per_user)
        if use_ttft:
            self.add_ttft(pool)

    # --- rules on several pools -------------------------------------------------------------------
    def add_gpu_budget(self, pools: list[Pool], gpus: int) -> None:
        """The pools' replicas together use at most `gpus` GPUs."""
        self.model.add_linear(*_sum(*(p.total(p.table.replica_gpus_of(p.rows)) for p in pools)), 0, gpus)

    def add_demand(self, pool: Pool, needed: np.ndarray) -> None:
        """The pool's replicas serve the demand: at least `needed` [replicas, per option] of the chosen
        option (the float model's count, so that the model agrees with it exactly)."""
        assert pool.per_option_replicas is not None, "demand needs a pool with free replicas"
        for lit, n, need in zip(pool.chosen, pool.per_option_replicas, needed):
            self.model.add_linear([n], [1], int(need), INT_MAX, enforce=[lit])

    def require_replicas(self, pool: Pool, at_least: int) -> None:
        """A pool with free replicas runs at least `at_least` of them."""
        assert pool.replicas is not None, "a pool with free replicas"
        self.model.add_linear([pool.replicas], [1], at_least, INT_MAX)

    def add_replica_budget(self, pool: Pool, gpus: int) -> None:
        """One replica of the chosen option fits in `gpus` GPUs, enforced by the literal 'gpu_budget': for a
        table tabulated on more GPUs than given, so that the budget may be released or assumed."""
        self._forbid(pool, "gpu_budget", pool.table.replica_gpus_of(pool.rows) > gpus)

    def add_pool_budget(self, pool: Pool, gpus: int) -> None:
        """A pool's replicas alone use at most `gpus` GPUs (a pool on a cluster of its own)."""
        self.add_gpu_budget([pool], gpus)

    def add_kv_domain(self, pools: list[Pool], domain_gpus: int) -> int:
        """A Boolean `same_domain`: true only when the pools' replicas together fit one scale-up domain
        (`domain_gpus`), where the KV cache moves over the scale-up fabric; its literal."""
        z = self.model.new_bool("kv.same_domain")
        used = _sum(*(p.total(p.table.replica_gpus_of(p.rows)) for p in pools))
        self.model.add_linear(*used, 0, domain_gpus, enforce=[z])
        return z

    def add_rate_matching(self, prefill: Pool, decode: Pool, demand: np.ndarray, klass: np.ndarray,
                          effective: np.ndarray, same_domain: int | None, rule: str = "rate_matching") -> None:
        """The prefill pool keeps up with the decode pool, within the TTFT limit.

        The decode options of receive class j (`klass` [per decode option]) ask for sum(demand_d * y_d) prompts
        per second (`demand` [per decode option, integer rate units, rounded up]); the prefill pool serves
        sum(E[p, j, link] * x_p), where `effective` [prefill option, receive class, link] holds each prefill
        worker's capacity times the highest load at which TTFT stays within the limit for that class and link
        (cost.max_prefill_load; rounded down). One constraint per class: only the chosen decode option's class
        asks for any. Over scale-out (link 0) unless `same_domain` (a literal, None: never) holds, where the
        scale-up figures (link 1, never lower) apply. Enforced by the literal of `rule`."""
        assert prefill.per_option_replicas is not None and decode.per_option_replicas is not None
        lit = self.rule_literal(rule)
        for j in sorted(set(int(c) for c in klass)):
            mine = [i for i, c in enumerate(klass) if int(c) == j]
            asked = [decode.per_option_replicas[i] for i in mine]
            coeffs = [-int(demand[i]) for i in mine]
            links = ((0, [lit]),) if same_domain is None else ((1, [lit]), (0, [lit, not_(same_domain)]))
            for z, enforce in links:
                served = [int(e) for e in effective[:, j, z]]
                self.model.add_linear([*prefill.per_option_replicas, *asked], served + coeffs, 0, INT_MAX,
                                      enforce=enforce)

    def hint_options(self, chosen: dict[str, tuple[int, int]]) -> None:
        """A solution hint: per pool name, (option index into its table, replicas); the other options of those
        pools hinted off. CP-SAT starts its search there (a hint is never trusted as a solution)."""
        for pool in self.pools:
            if pool.name not in chosen:
                continue
            k, n = chosen[pool.name]
            for lit, row in zip(pool.chosen, pool.rows):
                self.model.hint(lit, int(row == k))
            if pool.per_option_replicas is not None:
                for var, row in zip(pool.per_option_replicas, pool.rows):
                    self.model.hint(var, n if row == k else 0)
                self.model.hint(pool.replicas, n)

    # --- objectives -------------------------------------------------------------------------------
    def maximize_throughput(self, pool: Pool, reference: float | None = None) -> None:
        """The highest tokens/s/GPU of a pool with the most replicas (values from the float cost model)."""
        self.maximize(pool, pool.table.thr[pool.rows], reference)

    def _scaled(self, values: np.ndarray, reference: float | None, sense: Literal["max", "min"]) -> list[int]:
        """Values scaled to integers so that `reference` is OBJECTIVE_SCALE; capped at MAX_COEFFICIENT
        (infinite values too)."""
        values = np.asarray(values, dtype=float)
        finite = values[np.isfinite(values) & (values > 0)]
        ref = reference or (float(finite.max() if sense == "max" else finite.min()) if len(finite) else 0.0)
        self._scale = OBJECTIVE_SCALE / ref if ref > 0 else 1.0
        self._sense = sense
        rounded = np.floor(values * self._scale) if sense == "max" else np.ceil(values * self._scale)
        return [int(x) for x in np.where(np.isfinite(rounded), np.minimum(rounded, MAX_COEFFICIENT), MAX_COEFFICIENT)]

    def maximize(self, pool: Pool, values: np.ndarray, reference: float | None = None) -> None:
        """Maximise a non-negative float quantity of the chosen option [its unit], scaled so that `reference`
        (the best value among the options every rule admits; default: the largest) is OBJECTIVE_SCALE."""
        self.model.maximize(pool.chosen, self._scaled(values, reference, "max"))

    def minimize(self, pool: Pool, values: np.ndarray, reference: float | None = None) -> None:
        """Minimise a non-negative float quantity of the chosen option [its unit], scaled so that `reference`
        (the best value among the options every rule admits; default: the smallest positive) is
        OBJECTIVE_SCALE; values beyond MAX_COEFFICIENT (far from any optimum, or infinite) are capped."""
        self.model.minimize(pool.chosen, self._scaled(values, reference, "min"))

    def maximize_total(self, per_replica: list[tuple[Pool, np.ndarray]]) -> None:
        """Maximise the sum over pools of an integer per-replica quantity [per option] times the replicas,
        e.g. output tokens/s of deployments sharing GPUs."""
        self._scale, self._sense = 1.0, "max"
        self.model.maximize(*_sum(*(pool.total(values) for pool, values in per_replica)))

    def minimize_nodes_for_demand(self, pool: Pool, gpus_per_node: int, max_gpus: int) -> None:
        """Fewest whole nodes holding the replicas; then the fewest GPUs in use; then the lowest TPOT."""
        gpus = self.model.new_int(0, max_gpus, f"{pool.name}.gpus")
        used, per = pool.total(pool.table.replica_gpus_of(pool.rows))
        self.model.add_linear([gpus, *used], [1] + [-c for c in per], 0, 0)
        nodes = self.model.new_int(0, -(-max_gpus // gpus_per_node), f"{pool.name}.nodes")
        self.model.add_linear([nodes, gpus], [gpus_per_node, -1], 0, INT_MAX)
        tpot = pool.table.tpot_s[pool.rows]
        rank = np.argsort(np.argsort(tpot, kind="stable"), kind="stable")  # 0 = the lowest TPOT
        most_rank = len(tpot) + 1
        self._scale, self._sense = 1.0, "min"
        self.model.minimize([nodes, gpus, *pool.chosen],
                            [(max_gpus + 1) * most_rank, most_rank, *(int(r) for r in rank)])

    # --- solving ----------------------------------------------------------------------------------
    def solve(self, deadline: float | None = None) -> Solution:
        """Solve within the time left until `deadline` (time.perf_counter; default: the time limit from now)."""
        t0 = time.perf_counter()
        left = self.params.time_limit_s if deadline is None else deadline - t0
        r = self.model.solve(left, self.params.workers, self.params.seed, self.params.linearization_level)
        names = {lit: rule for rule, lit in self.enforce.items()}
        out = Solution(status=r.status, wall_s=time.perf_counter() - t0, core=[names[x] for x in r.core if x in names])
        if r.status in ("OPTIMAL", "FEASIBLE"):
            for pool in self.pools:
                out.options[pool.name] = next(int(k) for k, lit in zip(pool.rows, pool.chosen) if r.value(lit))
                if pool.replicas is not None:
                    out.replicas[pool.name] = r.value(pool.replicas)
            if r.objective is not None:
                out.objective = r.objective / self._scale
                # each coefficient is within one unit of value * scale, so the bound widens by one unit
                widen = 1.0 if self._sense == "max" else -1.0
                out.bound = (r.bound + widen) / self._scale
        return out
