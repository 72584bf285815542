"""`planner explain` of a disaggregated plan: each pool's rules, the rate matching, the TTFT limit and the GPU
budget at the optimum, binding proved by re-solving (planner.explanations), and the runner-up deployments.

One CP-SAT model holds both pools (as planner.disagg's search builds it) over options tabulated with the layout
rules lifted, with every pool's rules under literals of their own (SearchModel(pool_rules=True): released one at
a time, e.g. `decode.memory`). Its options are the union of those the search needs with each rule released
(disagg.prefill_rows and decode_rows on the tables with that rule's bit cleared), so every re-solve is exact.
The rate matching is stated three times: the prefill pool keeps up at all (load rho <= 1, never released),
`rate_matching` (rho <= cost.MAX_PREFILL_LOAD) and `ttft` (the load at which TTFT stays within the limit).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from planner import cost, disagg, rules, search
from planner.explanations import (
    RELEASE_TIME_S,
    Ask,
    Explanation,
    RuleStatus,
    RunnerUp,
    agg_runner_ups,
    budget_status,
    floor_of,
    gpu_budget_release,
    largest_excess,
    layout_status,
    load_status,
    loss_reason,
    mark_binding,
    memory_status,
    release_each,
    sla_status,
    ttft_status,
)
from planner.options import BIT, LIFTABLE, candidate_layouts
from planner.solver import SearchModel, SolverParams
from planner.specs import Parallel, Plan, Problem

POOL_RULES: tuple[str, ...] = (*(r for r in rules.LAYOUT_RULES if r != "gpu_budget"), "memory")
"""The rules of each pool that an explanation releases one at a time."""
KEEPS_UP = "prefill_keeps_up"
"""The literal of the rate matching at load 1 (the prefill pool keeps up at all): never released."""


class Model:
    """The explanation's CP-SAT model of a disaggregated problem and what reading its solutions needs."""

    def __init__(self, dp: disagg.DisaggProblem, searcher: disagg.DisaggSearcher, floor: float | None,
                 limit: float | None, params: SolverParams) -> None:
        self.dp, self.searcher, self.floor, self.limit = dp, searcher, floor, limit
        pre, dec = searcher.tables
        self.klass, self.receive = disagg.receive_classes(dec)
        self.prows, self.drows = self.union_rows()
        self.search = self.build(params)

    def rows(self, pre: disagg.PoolOptions, dec: disagg.PoolOptions, floor: float | None, limit: float | None
             ) -> tuple[np.ndarray, np.ndarray]:
        """The prefill and decode options disagg's search needs on these tables at this floor and limit (the
        prefill rows of a table computed once per limit)."""
        key = (id(pre), limit)
        if key not in self._prefill:
            self._prefill[key] = disagg.prefill_rows(self.dp, pre, self.receive, limit)
        prows = self._prefill[key]
        return prows, disagg.decode_rows(self.dp, dec, self.klass, floor, pre, prows, self.receive, limit)

    def union_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The options a search needs with every rule enforced, or any one of them released."""
        pre, dec = self.searcher.tables
        self._prefill: dict = {}
        masked = []  # kept alive while their rows are cached by id
        found = [self.rows(pre, dec, self.floor, self.limit)]
        for rule in POOL_RULES:
            bit = np.uint16(BIT[rule])
            if (pre.broken & bit).any():
                masked.append(replace(pre, broken=pre.broken & ~bit))
                found.append(self.rows(masked[-1], dec, self.floor, self.limit))
            if (dec.broken & bit).any():
                found.append(self.rows(pre, replace(dec, broken=dec.broken & ~bit), self.floor, self.limit))
        if self.floor:
            found.append(self.rows(pre, dec, None, self.limit))
        if self.limit is not None:
            found.append(self.rows(pre, dec, self.floor, None))
        return tuple(np.unique(np.concatenate([f[i] for f in found])).astype(np.int64) for i in (0, 1))

    def build(self, params: SolverParams) -> SearchModel:
        """Both pools, each one's rules under its own literals, the SLA, the GPU budget, the KV link and the rate
        matching (at load 1, at MAX_PREFILL_LOAD, within the TTFT limit); the most output tokens/s."""
        dp, (pre, dec), prows, drows = self.dp, self.searcher.tables, self.prows, self.drows
        level = disagg.LINEARIZATION_LEVEL if len(prows) + len(drows) <= disagg.LINEARIZATION_OPTIONS else None
        model = SearchModel(replace(params, linearization_level=level,
                                    time_limit_s=min(params.time_limit_s, RELEASE_TIME_S)), pool_rules=True)
        pp, dd, z = disagg.add_pools(model, dp, pre, prows, dec, drows, self.floor)
        self.pre_pool, self.dec_pool = pp, dd
        full = disagg.effective_capacity(dp, pre, prows, self.receive, None, cap=1.0)
        demand = dec.rate[drows] / dp.decode.workload.osl
        unit = max(float(full.max()), float(demand.max())) / 2.0**disagg.RATE_BITS
        asked, klass = np.ceil(demand / unit), self.klass[drows]
        model.add_rate_matching(pp, dd, asked, klass, np.floor(full / unit), z, rule=KEEPS_UP)
        capped = disagg.effective_capacity(dp, pre, prows, self.receive, None)
        model.add_rate_matching(pp, dd, asked, klass, np.floor(capped / unit), z, rule="rate_matching")
        if self.limit is not None:
            within = disagg.effective_capacity(dp, pre, prows, self.receive, self.limit, cap=1.0)
            model.add_rate_matching(pp, dd, asked, klass, np.floor(within / unit), z, rule="ttft")
        scale = 2.0**disagg.RATE_BITS / float(dec.rate[drows].max())
        model.maximize_total([(dd, np.floor(dec.rate[drows] * scale))])
        return model

    def tokens_per_s_per_gpu(self, sol) -> float:
        """A solution's output tokens/s over the GPUs given, on the float model [tokens/s/GPU]."""
        dec = self.searcher.tables[1]
        return float(dec.rate[sol.options["decode"]]) * sol.replicas["decode"] / self.dp.gpus

    def deployment(self, sol, lean: bool = False) -> tuple[Parallel, int, Parallel, int]:
        """(prefill layout with its workers as dp, chunk, decode layout with its workers, micro-batch) of a
        solution; with `lean`, the prefill pool as the search would plan it (DisaggSearcher.leanest_prefill)."""
        pre, dec = self.searcher.tables
        kp, kd = sol.options["prefill"], sol.options["decode"]
        x, y = sol.replicas["prefill"], sol.replicas["decode"]
        if lean:
            kp, x = self.searcher.leanest_prefill(self.prows, kp, kd, y, self.limit, x)
        return pre.parallel(kp, int(x)), int(pre.batch[kp]), dec.parallel(kd, int(y)), int(dec.batch[kd])

    def plan(self, sol, lean: bool = False) -> Plan:
        """The Plan of a solution (disagg.build_plan)."""
        from planner.specs import SolverInfo

        pre_par, chunk, dec_par, m = self.deployment(sol, lean)
        return disagg.build_plan(self.dp, pre_par, chunk, dec_par, m,
                                 SolverInfo(method="cpsat", status=sol.status, wall_s=sol.wall_s))

    def forbid_decode_layout(self, sol) -> None:
        """No later solve may choose the decode layout of this solution (for the next distinct deployment)."""
        dec = self.searcher.tables[1]
        lay = dec.lay[sol.options["decode"]]
        pool = self.dec_pool
        lits = [lit for lit, k in zip(pool.chosen, pool.rows) if dec.lay[k] == lay]
        self.search.model.add_linear(lits, [1] * len(lits), 0, 0)

    def label(self, sol) -> str:
        """A solution's deployment in words (disagg.deployment_label)."""
        pre_par, _, dec_par, _ = self.deployment(sol)
        return disagg.deployment_label(pre_par, dec_par)


def lifted_searcher(dp: disagg.DisaggProblem, ask: Ask) -> disagg.DisaggSearcher:
    """A DisaggSearcher of dp whose pool tables hold the layouts breaking one layout rule too."""
    sp = ask.space(dp.prefill)
    sd = sp if dp.shared else ask.space(dp.decode)
    lay_p = candidate_layouts(dp.prefill, sp, lift=LIFTABLE)
    lay_d = lay_p if dp.shared else candidate_layouts(dp.decode, sd, lift=LIFTABLE)
    tables = (disagg.tabulate_prefill(dp.prefill, sp, lay_p), disagg.tabulate_decode(dp.decode, sd, lay_d))
    return disagg.DisaggSearcher(dp, sp, sd, "cpsat", ask.params, _tables=tables)


def pool_statuses(tag: str, p: Problem, par: Parallel, memory) -> list[RuleStatus]:
    """A pool's layout rules and memory at the plan, named `tag.rule`."""
    one = par.model_copy(update={"dp": 1})
    out = [layout_status(p, one, r, f"{tag}.{r}") for r in POOL_RULES if r != "memory"]
    return out + [memory_status(f"{tag}.memory", memory.per_gpu_bytes, memory.usable_bytes)]


def disagg_statuses(dp: disagg.DisaggProblem, plan: Plan, floor: float | None, limit: float | None
                    ) -> list[RuleStatus]:
    """Every rule's slack at a disaggregated plan (binding not yet decided)."""
    pre, dec = plan.prefill, plan.decode
    out = [budget_status(plan.gpus_used, dp.gpus)]
    out += pool_statuses("prefill", dp.prefill, pre.parallel, pre.memory)
    out += pool_statuses("decode", dp.decode, dec.parallel, dec.memory)
    out.append(load_status("rate_matching", plan.metrics.prefill_load, cost.MAX_PREFILL_LOAD))
    if floor:
        out.append(sla_status("decode.sla", plan.metrics.tokens_per_s_per_user, floor))
    if limit is not None:
        g = cost.disagg_metrics(dp.prefill, pre.parallel.model_copy(update={"dp": 1}), pre.batch.chunk_tokens,
                                pre.workers, dp.decode, dec.parallel.model_copy(update={"dp": 1}),
                                dec.batch.micro_batch, dec.workers, dp.same_domain(plan.gpus_used))
        out.append(ttft_status("ttft", float(g["ttft_checked_s"]), limit))
    return out


def deployment_terms(dp: disagg.DisaggProblem, plan: Plan) -> dict[str, float]:
    """cost.disagg_gpu_time_terms of a disaggregated plan [GPU s per output token]."""
    pre, dec = plan.prefill, plan.decode
    return cost.disagg_gpu_time_terms(dp.prefill, pre.parallel.model_copy(update={"dp": 1}), pre.batch.chunk_tokens,
                                      pre.workers, dp.decode, dec.parallel.model_copy(update={"dp": 1}),
                                      dec.batch.micro_batch, dec.workers, dp.gpus)


def decode_violations(dp: disagg.DisaggProblem, par: Parallel, m: int, floor: float | None) -> list[str]:
    """The rules a decode worker of this layout breaks at micro-batch m: decode.memory, decode.sla."""
    one = par.model_copy(update={"dp": 1})
    out = []
    if float(cost.decode_memory_breakdown(dp.decode, one, m)["per_gpu_bytes"]) > cost.usable_bytes(dp.decode):
        out.append("decode.memory")
    if floor and bool(rules.sla_broken(cost.decode_pass_time(dp.decode, one, m), floor)):
        out.append("decode.sla")
    return out


def disagg_runner_ups(model: Model, base, plan: Plan, winner_terms: dict[str, float], count: int
                      ) -> list[RunnerUp]:
    """The next `count` deployments after the model's optimum `base`, each with another decode layout than those
    before it, and what makes each lose: the rules its decode layout breaks at the winner's micro-batch, the cost
    term."""
    dp, out = model.dp, []
    m_w = plan.decode.batch.micro_batch
    sol = base
    for _ in range(count):
        if sol.status not in ("OPTIMAL", "FEASIBLE"):
            break
        model.forbid_decode_layout(sol)
        sol = model.search.solve()
        if sol.status not in ("OPTIMAL", "FEASIBLE"):
            break
        q = model.plan(sol, lean=True)
        thr = q.metrics.tokens_per_s_per_gpu
        gap = 1 - thr / plan.metrics.tokens_per_s_per_gpu
        broken = decode_violations(dp, q.decode.parallel, m_w, model.floor)
        term, excess = largest_excess(deployment_terms(dp, q), winner_terms)
        out.append(RunnerUp(serving="disagg", label=q.label, tokens_per_s_per_gpu=thr,
                            tokens_per_s_per_user=q.metrics.tokens_per_s_per_user, gap=gap,
                            breaks_at_winner_batch=broken, cost_term=term, cost_excess_ms=excess * 1e3,
                            reason=loss_reason(gap, broken, term, excess, f"decode m={m_w}")))
    return out


def explain_disagg(ask: Ask, p: Problem, plan: Plan, count: int) -> Explanation:
    """Rules, binding and runner-ups of a disaggregated plan (under `auto`, aggregated runner-ups too)."""
    dp = disagg.make_disagg(p, ask.decode_cluster, ask.decode_gpus)
    floor = floor_of(p)
    limit = p.sla.max_ttft_s if p.sla else None
    model = Model(dp, lifted_searcher(dp, ask), floor, limit, ask.params)
    notes = []
    base = model.search.solve()
    best = plan.metrics.tokens_per_s_per_gpu
    if base.status not in ("OPTIMAL", "FEASIBLE") or abs(model.tokens_per_s_per_gpu(base) - best) > 1e-6 * best:
        notes.append("the explanation's model does not reproduce the plan's optimum; binding rules are unproven")
    names = [r for r in model.search.enforce if r != KEEPS_UP]
    released = release_each(model.search, model.tokens_per_s_per_gpu, model.label, names)
    if dp.shared:
        more = gpu_budget_release(ask, plan, p)
        if more is not None:
            released["gpu_budget"] = more
    else:
        notes.append("gpu_budget is not re-solved with two clusters (each pool has its own GPUs)")
    statuses = mark_binding(disagg_statuses(dp, plan, floor, limit), released, best)
    winner_terms = deployment_terms(dp, plan)
    ups = disagg_runner_ups(model, base, plan, winner_terms, count)
    if ask.serving == "auto" and ask.decode_cluster is None:
        s = search.Searcher(p, ask.space(p), "cpsat", ask.params)
        ups += agg_runner_ups(s, plan, winner_terms, count)
        ups = sorted(ups, key=lambda u: -u.tokens_per_s_per_gpu)[:count]
    return Explanation(feasible=True, serving="disagg", plan=plan, rules=statuses,
                       binding=[st.rule for st in statuses if st.status == "binding"], runner_ups=ups, notes=notes)
