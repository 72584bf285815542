"""Why the best plan is the best, and what would make an infeasible ask feasible: `planner explain`.

For a feasible ask (the plan of `planner.search.solve`, aggregated or disaggregated):

- every rule's slack at the optimum, in the rule's own unit (memory: GB of usable HBM left per GPU; sla:
  tokens/s/user above the floor; ttft: seconds below the limit; chunk_keeps_up and rate_matching: the load rho
  against its bound; gpu_budget: GPUs unused; the divisibility and domain rules: which neighbouring degrees they
  forbid);
- which rules bind, proved by re-solving: one CP-SAT model (planner.solver) over options tabulated with every
  liftable rule lifted (planner.options: the best options each rule alone excludes are kept), solved once with
  every rule enforced and once per rule with that rule's enforcement literal released (SearchModel.release);
  a rule binds when the released optimum is strictly better. The GPU budget, a bound rather than a per-option
  rule, binds when one more node (ClusterSpec.gpus_per_node) lets `solve` serve more tokens/s/GPU. A rule that
  does not bind but has less than TIGHT_SHARE of its bound left is `tight`;
- the runner-up layouts, each with its gap, the rules it breaks at the winner's batch and the term of the GPU
  time per output token it loses most on (cost.gpu_time_terms).

For an infeasible ask: a minimal set of requirements that conflict (CP-SAT assumptions on the rules'
literals, the core CP-SAT names shrunk by deletion, on the aggregated rules), and the nearest relaxations (the
highest SLA reachable, the lowest TTFT, the fewest GPUs, a smaller weight format), each confirmed by `solve`
with the change applied; a change `solve` does not confirm is not offered.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from planner import cost, rules, search
from planner.errors import InfeasibleError, PlannerError
from planner.options import BIT, LIFTABLE, Table
from planner.solver import SearchModel, SolverParams
from planner.space import Space
from planner.specs import SLA, Parallel, Plan, Precision, Problem, Speculation

TIGHT_SHARE = 0.05
"""A rule that does not bind is `tight` when less than this share of its bound is left [share]."""
REL_TOL = search.CERTIFY_REL_TOL
"""A released optimum binds only when it beats the plan by more than this share."""
RUNNER_UPS = 3
"""Runner-up layouts an explanation lists by default."""
RELEASE_TIME_S = 10.0
"""Time limit of one re-solve with a rule released [s] (within the search's own time limit)."""
CONFIRM_TRIES = 4
"""Most `solve` calls one relaxation may take to find a value that solves."""
BISECTIONS = 3
"""Bisection steps between an SLA `solve` confirmed and a higher one it refused."""
GPU_SEARCH_FACTOR = 8
"""The fewest-GPUs relaxation looks up to this many times the GPUs given (and FIT_SEARCH_LIMIT)."""

Status = Literal["binding", "tight", "slack", "holds"]

DEGREE_OF: dict[str, str] = {"heads_divisible": "tp", "layers_divisible": "pp", "experts_divisible": "ep",
                             "moe_resplit": "ep", "dense_no_attention_dp": "attention_dp",
                             "tp_spans_whole_domains": "tp"}
"""The degree of the layout each divisibility or domain rule constrains."""


# --- the explanation ------------------------------------------------------------------------------------------


class RuleStatus(BaseModel):
    """One rule at the optimum: whether it binds, its slack in its own unit, and what releasing it allows."""

    rule: str = Field(description="The rule's name (planner.rules.RULES, disagg.DISAGG_RULES); a pool's rule of a "
                                  "disaggregated plan is prefixed 'prefill.' or 'decode.'")
    status: Status = Field(description="binding: releasing it lets the solver serve strictly more tokens/s/GPU; "
                                       "tight: not binding, less than 5% of its bound left; slack: more left; "
                                       "holds: a divisibility or domain rule that does not bind")
    slack: float | None = Field(None, description="What is left of the bound at the optimum, in `unit`")
    unit: str = Field("", description="GB (memory per GPU), tok/s/user, s, rho (a load) or GPUs")
    detail: str = Field("", description="The figures, or the neighbouring degrees the rule forbids")
    released_tokens_per_s_per_gpu: float | None = Field(
        None, description="The best tokens/s/GPU with the rule released (None: not re-solved)")
    released_label: str | None = Field(None, description="The plan the solver finds with the rule released")


class Headline(BaseModel):
    """A plan in one line: its layout and its figures."""

    serving: str
    label: str
    gpus: int
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    ttft_ms: float


class RunnerUp(BaseModel):
    """A layout after the winner, and what makes it lose."""

    serving: str
    label: str
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    gap: float = Field(description="Share of the winner's tokens/s/GPU it lacks")
    breaks_at_winner_batch: list[str] | None = Field(
        None, description="The rules it breaks at the winner's batch (None: not comparable, another serving mode)")
    cost_term: str | None = Field(None, description="The term of the GPU time per output token it loses most on "
                                                    "(cost.TIME_TERMS)")
    cost_excess_ms: float | None = Field(None, description="How much more GPU time per output token it spends on "
                                                           "that term [ms GPU/token]")
    reason: str = ""


class Relaxation(BaseModel):
    """A change of the ask, as `solve` takes it, and the plan `solve` then finds."""

    change: dict[str, str | int] = Field(description="Option name to value as the command line takes it, e.g. "
                                                     "{'sla': '45tok/s'} or {'gpus': 16}")
    result: Headline


class Explanation(BaseModel):
    """`planner explain`'s answer: the optimum's binding rules and runner-ups, or an infeasible ask's conflict
    and relaxations."""

    feasible: bool
    serving: str | None = Field(None, description="The winning plan's serving mode")
    binding: list[str] = Field(default_factory=list, description="The rules that bind at the optimum")
    conflict: list[str] = Field(default_factory=list,
                                description="A minimal set of requirements that conflict: removing any one of "
                                            "them leaves a plan")
    relaxations: list[Relaxation] = Field(default_factory=list)
    error: str | None = Field(None, description="Why no plan exists (the solve's message)")
    rules: list[RuleStatus] = Field(default_factory=list)
    runner_ups: list[RunnerUp] = Field(default_factory=list)
    plan: Plan | None = None
    notes: list[str] = Field(default_factory=list)
    wall_s: float = 0.0


# --- the entry point ------------------------------------------------------------------------------------------


def explain(problem: Problem | None = None, *, serving: str = "auto", method: search.Method = "cpsat",
            chunks: tuple[int, ...] | None = None, micro_batches: tuple[int, ...] | None = None,
            params: SolverParams | None = None, confidence: float | None = None, decode_cluster=None,
            decode_gpus: int | None = None, speculation: Speculation | None = None, runner_ups: int = RUNNER_UPS,
            **problem_args) -> Explanation:
    """Explain `solve`'s answer to the same ask (the same arguments as planner.search.solve, but `top`):
    the binding rules, every rule's slack and the runner-ups of a plan, or the conflict and the confirmed
    relaxations of an infeasible ask. Raises what `solve` raises but InfeasibleError."""
    t0 = time.perf_counter()
    p = problem or search.make_problem(**problem_args)
    if speculation is not None:
        p = search.with_speculation(p, speculation)
    if confidence is not None:
        from planner.uncertainty import with_confidence

        p = with_confidence(p, confidence)
    params = params or SolverParams(time_limit_s=search.DEFAULT_TIME_LIMIT_S)
    ask = Ask(p, serving, method, chunks, micro_batches, params, decode_cluster, decode_gpus)
    try:
        plan = ask.solve()[0]
    except InfeasibleError as e:
        out = explain_infeasible(ask, e)
    else:
        out = explain_plan(ask, plan, runner_ups)
    return out.model_copy(update={"wall_s": time.perf_counter() - t0})


class Ask:
    """One ask as `solve` takes it: the problem and the search's options; `solve` with a change applied."""

    def __init__(self, p: Problem, serving: str, method: search.Method, chunks, micro_batches, params: SolverParams,
                 decode_cluster, decode_gpus: int | None) -> None:
        self.p, self.serving, self.method = p, serving, method
        self.chunks, self.micro_batches, self.params = chunks, micro_batches, params
        self.decode_cluster, self.decode_gpus = decode_cluster, decode_gpus

    def solve(self, p: Problem | None = None, serving: str | None = None) -> list[Plan]:
        """planner.search.solve of this ask (or of problem p instead, in serving mode `serving`)."""
        return search.solve(p or self.p, method=self.method, chunks=self.chunks, micro_batches=self.micro_batches,
                            params=self.params, serving=serving or self.serving, decode_cluster=self.decode_cluster,
                            decode_gpus=self.decode_gpus)

    def space(self, p: Problem | None = None) -> Space:
        return Space.of(p or self.p, self.chunks, self.micro_batches)


# --- slack of each rule at the optimum ------------------------------------------------------------------------


def status_of(slack: float, bound: float) -> Status:
    """tight when less than TIGHT_SHARE of the bound is left, else slack (binding is decided by re-solving)."""
    return "tight" if slack < TIGHT_SHARE * abs(bound) else "slack"


def memory_status(rule: str, per_gpu_bytes: float, usable_bytes: float) -> RuleStatus:
    """memory: GB of usable HBM left per GPU."""
    left = (usable_bytes - per_gpu_bytes) / 1e9
    return RuleStatus(rule=rule, status=status_of(left, usable_bytes / 1e9), slack=left, unit="GB",
                      detail=f"{per_gpu_bytes / 1e9:.1f} of {usable_bytes / 1e9:.1f} GB usable per GPU")


def sla_status(rule: str, speed: float, floor: float) -> RuleStatus:
    """sla: tokens/s/user above the floor (at the TPOT the rules check)."""
    return RuleStatus(rule=rule, status=status_of(speed - floor, floor), slack=speed - floor, unit="tok/s/user",
                      detail=f"{speed:.2f} tokens/s/user, floor {floor:g}")


def ttft_status(rule: str, ttft_s: float, limit_s: float) -> RuleStatus:
    """ttft: seconds below the limit (at the TTFT the rules check)."""
    return RuleStatus(rule=rule, status=status_of(limit_s - ttft_s, limit_s), slack=limit_s - ttft_s, unit="s",
                      detail=f"TTFT {ttft_s:.3g} s, limit {limit_s:.3g} s")


def load_status(rule: str, rho: float, most: float) -> RuleStatus:
    """chunk_keeps_up (rho < 1) and rate_matching (rho <= MAX_PREFILL_LOAD): the load's distance to its bound."""
    return RuleStatus(rule=rule, status=status_of(most - rho, most), slack=most - rho, unit="rho",
                      detail=f"load {rho:.3f} of {most:g}")


def budget_status(used: int, given: int) -> RuleStatus:
    """gpu_budget: GPUs unused."""
    return RuleStatus(rule="gpu_budget", status="tight" if used == given else "slack", slack=float(given - used),
                      unit="GPUs", detail=f"{used} of {given} GPUs used")


def forbidden_neighbours(p: Problem, par: Parallel, rule: str) -> list[str]:
    """The nearest degrees below and above the plan's that a divisibility or domain rule forbids, e.g.
    ['pp=7', 'pp=9'] (changing that degree alone)."""
    name = DEGREE_OF[rule]
    value = getattr(par, name)
    out = []
    for step in (-1, 1):
        d = value + step
        while 1 <= d <= p.gpus:
            trial = par.model_copy(update={name: d, "moe_tp": None})
            masks = rules.layout_masks(p, trial.tp, trial.attention_dp, trial.pp, trial.ep)
            if bool(masks[rule]):
                out.append(f"{name}={d}")
                break
            d += step
    return out


def layout_status(p: Problem, par: Parallel, rule: str, name: str | None = None) -> RuleStatus:
    """A divisibility or domain rule the plan obeys: which neighbouring degrees it forbids."""
    near = forbidden_neighbours(p, par, rule)
    detail = f"forbids {' and '.join(near)}" if near else "forbids no neighbouring degree"
    return RuleStatus(rule=name or rule, status="holds", detail=detail)


def agg_statuses(p: Problem, plan: Plan) -> list[RuleStatus]:
    """Every rule's slack at an aggregated plan (binding not yet decided)."""
    par, b = plan.parallel, plan.batch
    g = cost.metrics_grid(p, par, b.micro_batch, b.chunk_tokens)
    tpot, ttft = (float(x) for x in rules.checked_times(p, g))
    out = [budget_status(par.gpus_used, p.gpus)]
    out += [layout_status(p, par, r) for r in rules.LAYOUT_RULES if r != "gpu_budget"]
    out.append(memory_status("memory", float(g["per_gpu_bytes"]), cost.usable_bytes(p)))
    out.append(load_status("chunk_keeps_up", float(g["prefill_load"]), 1.0))
    if p.sla and p.sla.min_tokens_per_s_per_user:
        out.append(sla_status("sla", 1 / tpot, p.sla.min_tokens_per_s_per_user))
    if p.sla and p.sla.max_ttft_s is not None:
        out.append(ttft_status("ttft", ttft, p.sla.max_ttft_s))
    return out


# --- binding: re-solving with each rule released -------------------------------------------------------------


def floor_of(p: Problem) -> float | None:
    """The problem's tokens/s/user floor (None: none)."""
    return p.sla.min_tokens_per_s_per_user if p.sla else None


def agg_model(s: search.Searcher) -> tuple[SearchModel, object]:
    """The aggregated search's CP-SAT model over a table with every liftable rule lifted: the options a
    search with any one rule released needs, every rule enforced by its literal."""
    table = s.table
    floor = floor_of(s.p)
    rows = table.reduce("throughput", use_ttft=True, with_tpot=True)
    model = SearchModel(replace(s.params, time_limit_s=min(s.params.time_limit_s, RELEASE_TIME_S)))
    pool = model.add_pool(table, rows, name="plan")
    model.add_layout_rules(pool)
    model.add_batch_rules(pool, floor, use_ttft=True)
    model.add_gpu_budget([pool], s.p.gpus)
    admitted = table.obeys(True, floor, rows)
    model.maximize_throughput(pool, float(table.thr[rows][admitted].max()) if admitted.any() else None)
    return model, pool


def option_label(table: Table, k: int) -> str:
    """An option of a table in words: its layout and batch."""
    c = table.candidate(k, "")
    return f"{c.parallel.label} m={c.micro_batch} chunk={c.chunk}"


def release_each(model: SearchModel, value, label, names: list[str] | None = None) -> dict[str, tuple[float, str]]:
    """Per rule literal of the model (or of `names`): the best objective with that rule released, by `value` of
    the solution, and the `label` of its plan; rules whose re-solve found nothing are left out."""
    out = {}
    for rule in names if names is not None else list(model.enforce):
        model.release(rule)
        sol = model.solve()
        model.enforce_all()
        if sol.status in ("OPTIMAL", "FEASIBLE"):
            out[rule] = (value(sol), label(sol))
    return out


def mark_binding(statuses: list[RuleStatus], released: dict[str, tuple[float, str]], best: float
                 ) -> list[RuleStatus]:
    """Each status with its released optimum; binding where that beats `best` [tokens/s/GPU] strictly."""
    out = []
    for st in statuses:
        if st.rule in released:
            thr, label = released[st.rule]
            upd = {"released_tokens_per_s_per_gpu": thr, "released_label": label}
            if thr > best * (1 + REL_TOL):
                upd["status"] = "binding"
            st = st.model_copy(update=upd)
        out.append(st)
    return out


def gpu_budget_release(ask: Ask, plan: Plan, p: Problem) -> tuple[float, str] | None:
    """The best tokens/s/GPU and plan with one more node of GPUs (ClusterSpec.gpus_per_node), in the plan's
    serving mode; None when that finds no plan."""
    more = p.model_copy(update={"gpus": p.gpus + p.cluster.gpus_per_node})
    try:
        best = ask.solve(more, serving=plan.serving)[0]
    except PlannerError:
        return None
    return best.metrics.tokens_per_s_per_gpu, f"{best.label} on {more.gpus} GPUs"


# --- runner-ups -----------------------------------------------------------------------------------------------


def largest_excess(terms: dict[str, float], winner: dict[str, float]) -> tuple[str, float]:
    """The term of GPU time per output token [s] on which `terms` exceed the winner's most, and by how much."""
    keys = set(terms) | set(winner)
    excess = {k: float(terms.get(k, 0.0)) - float(winner.get(k, 0.0)) for k in keys}
    term = max(sorted(excess), key=lambda k: excess[k])
    return term, excess[term]


def loss_reason(gap: float, broken: list[str] | None, term: str, excess_s: float, winner_batch: str) -> str:
    """A runner-up's loss in words."""
    parts = [f"{gap:.2%} fewer tokens/s/GPU"]
    if broken is not None:
        parts.append(f"at the winner's batch ({winner_batch}) it breaks {', '.join(broken)}" if broken else
                     f"at the winner's batch ({winner_batch}) it breaks no rule")
    if excess_s > 0:
        parts.append(f"it spends {excess_s * 1e3:.3g} ms more GPU time per token on {cost.TIME_TERMS[term]}")
    return "; ".join(parts)


def agg_terms(p: Problem, par: Parallel, m: int, chunk: int) -> dict[str, float]:
    """cost.gpu_time_terms of one aggregated option, as floats [GPU s per output token]."""
    return {k: float(v) for k, v in cost.gpu_time_terms(p, par, m, chunk).items()}


def agg_runner_ups(s: search.Searcher, plan: Plan, winner_terms: dict[str, float], count: int) -> list[RunnerUp]:
    """The best `count` aggregated layouts other than the plan's, each with what makes it lose against the plan
    (an aggregated winner: the rules it breaks at the winner's batch too)."""
    p = s.p
    agg_winner = plan.serving == "agg"
    found = s.best(top=count + (1 if agg_winner else 0))
    out = []
    wb = plan.batch
    for cand in found:
        if agg_winner and cand.parallel.label == plan.parallel.label:
            continue
        g = cost.metrics_grid(p, cand.parallel, cand.micro_batch, cand.chunk)
        thr = float(g["tokens_per_s_per_gpu"])
        gap = 1 - thr / plan.metrics.tokens_per_s_per_gpu
        broken = (rules.violations(p, cand.parallel, wb.micro_batch, wb.chunk_tokens) if agg_winner else None)
        term, excess = largest_excess(agg_terms(p, cand.parallel, cand.micro_batch, cand.chunk), winner_terms)
        out.append(RunnerUp(serving="agg", label=cand.parallel.label, tokens_per_s_per_gpu=thr,
                            tokens_per_s_per_user=1 / float(g["tpot_s"]), gap=gap, breaks_at_winner_batch=broken,
                            cost_term=term, cost_excess_ms=excess * 1e3,
                            reason=loss_reason(gap, broken, term, excess,
                                               f"m={wb.micro_batch} chunk={wb.chunk_tokens}")))
    return out[:count]


# --- an aggregated plan -------------------------------------------------------------------------------------


def explain_agg(ask: Ask, p: Problem, plan: Plan, count: int) -> Explanation:
    """Rules, binding and runner-ups of an aggregated plan."""
    s = search.Searcher(p, ask.space(p), "cpsat", ask.params, lift=LIFTABLE)
    model, _ = agg_model(s)
    table = s.table

    def thr(sol) -> float:
        return float(table.thr[sol.options["plan"]])

    base = model.solve()
    notes = []
    if base.status not in ("OPTIMAL", "FEASIBLE") or abs(thr(base) - plan.metrics.tokens_per_s_per_gpu) > \
            1e-6 * plan.metrics.tokens_per_s_per_gpu:
        notes.append("the explanation's model does not reproduce the plan's optimum; binding rules are unproven")
    released = release_each(model, thr, lambda sol: option_label(table, sol.options["plan"]))
    more = gpu_budget_release(ask, plan, p)
    if more is not None:
        released["gpu_budget"] = more
    statuses = mark_binding(agg_statuses(p, plan), released, plan.metrics.tokens_per_s_per_gpu)
    winner_terms = agg_terms(p, plan.parallel, plan.batch.micro_batch, plan.batch.chunk_tokens)
    ups = agg_runner_ups(s, plan, winner_terms, count)
    if plan.alternative is not None and plan.alternative.tokens_per_s_per_gpu is not None:
        alt = plan.alternative
        gap = 1 - alt.tokens_per_s_per_gpu / plan.metrics.tokens_per_s_per_gpu
        ups.append(RunnerUp(serving=alt.serving, label=alt.label, tokens_per_s_per_gpu=alt.tokens_per_s_per_gpu,
                            tokens_per_s_per_user=alt.tokens_per_s_per_user, gap=gap,
                            reason=f"{gap:.2%} fewer tokens/s/GPU: the best disaggregated plan"))
        ups = sorted(ups, key=lambda u: -u.tokens_per_s_per_gpu)[:count]
    return Explanation(feasible=True, serving="agg", plan=plan, rules=statuses,
                       binding=[st.rule for st in statuses if st.status == "binding"], runner_ups=ups, notes=notes)


def explain_plan(ask: Ask, plan: Plan, count: int) -> Explanation:
    """The explanation of a feasible ask's plan, in its serving mode."""
    p = ask.p
    if plan.speculation is not None and p.speculation is not None and p.speculation.draft_tokens is None:
        p = p.model_copy(update={"speculation": p.speculation.model_copy(
            update={"draft_tokens": plan.speculation.draft_tokens})})  # the winning draft length
    if plan.serving == "disagg":
        from planner.explanations_disagg import explain_disagg

        return explain_disagg(ask, p, plan, count)
    return explain_agg(ask, p, plan, count)


# --- an infeasible ask: the requirements that conflict -----------------------------------------------------------


SLA_BIT = 1 << 14
"""The SLA's bit in a conflict pattern (beside options.BIT, whose rules take the lower bits)."""


def conflict_table(p: Problem, ask: Ask, gpus: int) -> tuple[Table, np.ndarray]:
    """The options of p tabulated on `gpus` GPUs (at least p's) with every liftable rule lifted, at the smallest
    micro-batch of the grid (every rule only tightens as the batch grows, so feasibility is decided there), and
    each option's pattern: the bits of the rules it breaks, the GPU budget (a replica above p's GPUs) and the SLA
    (SLA_BIT)."""
    big = p.model_copy(update={"gpus": max(gpus, p.gpus)})
    space = ask.space(big)
    space = replace(space, micro_batches=(min(space.micro_batches),))
    table = search.Searcher(big, space, "cpsat", ask.params, lift=LIFTABLE).table
    pattern = table.broken.astype(np.int64)
    pattern |= np.where(table.replica_gpus_of(np.arange(table.size)) > p.gpus, BIT["gpu_budget"], 0)
    floor = floor_of(p)
    if floor:
        pattern |= np.where(rules.sla_broken(table.tpot_hi_s, floor), SLA_BIT, 0)
    return table, pattern


def minimal_conflict(p: Problem, table: Table, pattern: np.ndarray, params: SolverParams) -> list[str]:
    """A minimal set of rules that conflict over the table's options: CP-SAT's core under every rule assumed
    (Solution.core), shrunk by deletion (a member stays only when the others alone leave a plan). Empty when
    every rule together leaves a plan."""
    _, first = np.unique(pattern, return_index=True)  # one option per pattern decides feasibility
    rows = np.sort(first)
    model = SearchModel(replace(params, time_limit_s=min(params.time_limit_s, RELEASE_TIME_S)))
    pool = model.add_pool(table, rows, name="plan")
    model.add_layout_rules(pool)
    model.add_batch_rules(pool, floor_of(p), use_ttft=True)
    model.add_replica_budget(pool, p.gpus)
    names = list(model.enforce)

    def conflicts(subset: list[str]) -> tuple[bool, list[str]]:
        model.assume_rules(subset)
        sol = model.solve()
        return sol.status == "INFEASIBLE", sol.core

    bad, core = conflicts(names)
    if not bad:
        return []
    core = [r for r in names if r in core] or names
    for rule in list(core):
        rest = [r for r in core if r != rule]
        if conflicts(rest)[0]:
            core = rest
    # re-check: the set conflicts, and (feasibility only grows as rules are dropped) each member was needed
    return core if conflicts(core)[0] else []


# --- an infeasible ask: the nearest relaxations -------------------------------------------------------------------


def headline(plan: Plan) -> Headline:
    m = plan.metrics
    return Headline(serving=plan.serving, label=plan.label, gpus=plan.gpus, tokens_per_s_per_gpu=m.tokens_per_s_per_gpu,
                    tokens_per_s_per_user=m.tokens_per_s_per_user, ttft_ms=m.ttft_ms)


def confirmed(ask: Ask, change: dict[str, str | int]) -> Relaxation | None:
    """The relaxation when `solve` with the change applied finds a plan, else None."""
    try:
        plan = ask.solve(with_change(ask.p, change))[0]
    except PlannerError:
        return None
    return Relaxation(change=change, result=headline(plan))


def first_confirmed(ask: Ask, changes: list[dict[str, str | int]]) -> Relaxation | None:
    """The first of the changes that `solve` confirms (at most CONFIRM_TRIES are tried)."""
    seen: list[dict] = []
    for change in changes:
        if change in seen:
            continue
        seen.append(change)
        if len(seen) > CONFIRM_TRIES:
            break
        found = confirmed(ask, change)
        if found is not None:
            return found
    return None


def with_change(p: Problem, change: dict[str, str | int]) -> Problem:
    """p with a relaxation's change applied, each value parsed as the command line parses it (sla, ttft: with a
    percentile '@p99'; gpus; precision, with the KV cache's default format following it unless p's differs)."""
    from planner.units import parse_sla_at, parse_ttft_at

    sla = p.sla.model_dump() if p.sla else {}
    update: dict = {}
    for key, value in change.items():
        if key == "sla":
            sla["min_tokens_per_s_per_user"], sla["tpot_percentile"] = parse_sla_at(str(value))
        elif key == "ttft":
            sla["max_ttft_s"], sla["ttft_percentile"] = parse_ttft_at(str(value))
        elif key == "gpus":
            update["gpus"] = int(value)
        elif key == "precision":
            new = Precision(str(value))
            if p.kv_precision == search._kv_default(p.cluster, p.precision, p.expert_precision):
                update["kv_precision"] = search._kv_default(p.cluster, new, None)
            update.update(precision=new, expert_precision=None)
        else:
            raise ValueError(f"unknown change {key!r}")
    if sla:
        update["sla"] = SLA(**sla)
    return p.model_copy(update=update)


def percentile_suffix(q: int | None) -> str:
    return f"@p{q}" if q else ""


def speed_text(v: float) -> str:
    """A tokens/s/user value as --sla takes it, e.g. '45.3tok/s'."""
    return f"{v:.4g}tok/s"


def duration_text(s: float) -> str:
    """A duration as --ttft takes it: '350ms' below a second, else '2.5s'."""
    return f"{s * 1e3:.4g}ms" if s < 1 else f"{s:.4g}s"


def round_down(v: float, digits: int = 3) -> float:
    """v rounded down to `digits` significant digits."""
    if v <= 0:
        return v
    step = 10 ** (math.floor(math.log10(v)) - digits + 1)
    return math.floor(v / step * (1 + 1e-12)) * step


def round_up(v: float, digits: int = 2) -> float:
    """v rounded up to `digits` significant digits."""
    if v <= 0:
        return v
    step = 10 ** (math.floor(math.log10(v)) - digits + 1)
    return math.ceil(v / step * (1 - 1e-12)) * step


def sla_relaxation(ask: Ask, err: InfeasibleError) -> Relaxation | None:
    """The highest SLA reachable under the other requirements, rounded down, confirmed by `solve`: the
    aggregated search's fastest plan within the TTFT limit, or what the failed search found reachable."""
    p = ask.p
    floor = floor_of(p)
    if not floor:
        return None
    reach = []
    if "tokens_per_s_per_user" in err.reachable:
        reach.append(float(err.reachable["tokens_per_s_per_user"]))
    if ask.serving != "disagg":
        s = search.Searcher(p, ask.space(), "cpsat", ask.params)
        fast = s.best("min_tpot", use_sla=False, use_ttft=True)
        if fast:
            reach.append(1 / search.objective_value(p, fast[0], "min_tpot"))
    if ask.serving != "agg":
        reach.append(fastest_decode_worker(ask))
    reach = sorted({v for v in reach if 0 < v < floor}, reverse=True)
    q = percentile_suffix(p.sla.tpot_percentile)

    def change(v: float) -> dict[str, str | int]:
        return {"sla": speed_text(v) + q}

    values = [round_down(v * f) for v in reach for f in (1.0, 0.95)]
    found = first_confirmed(ask, [change(v) for v in values])
    if found is None or found.change == change(values[0]):
        return found
    ok = parse_speed(found.change)
    bad = min(v for v in values if v > ok)
    for _ in range(BISECTIONS):  # between the highest value confirmed and the lowest refused
        mid = round_down((ok + bad) / 2)
        if not ok < mid < bad:
            break
        trial = confirmed(ask, change(mid))
        if trial is None:
            bad = mid
        else:
            ok, found = mid, trial
    return found


def parse_speed(change: dict[str, str | int]) -> float:
    """The tokens/s/user of an SLA change."""
    from planner.units import parse_sla_at

    return parse_sla_at(str(change["sla"]))[0]


def fastest_decode_worker(ask: Ask) -> float:
    """The highest tokens/s/user of a decode worker that fits in memory and, on one cluster, leaves a GPU for the
    prefill pool: a bound of what a disaggregated plan reaches [tokens/s/user] (0: none)."""
    from planner import disagg

    dp = disagg.make_disagg(ask.p, ask.decode_cluster, ask.decode_gpus)
    sp = ask.space(dp.prefill)
    dec = disagg.tabulate_decode(dp.decode, sp if dp.shared else ask.space(dp.decode))
    ok = dec.broken == 0
    if dp.shared:
        ok &= dec.gpus < dp.prefill.gpus
    return 1 / float(dec.tpot_hi_s[ok].min()) if ok.any() else 0.0


def ttft_relaxation(ask: Ask, err: InfeasibleError) -> Relaxation | None:
    """The lowest TTFT limit reachable under the SLA, rounded up, confirmed by `solve`: the aggregated search's
    quickest plan at the SLA, or what the failed search found reachable."""
    p = ask.p
    limit = p.sla.max_ttft_s if p.sla else None
    if limit is None:
        return None
    reach = []
    if "ttft_ms" in err.reachable:
        reach.append(float(err.reachable["ttft_ms"]) / 1e3)
    if ask.serving != "disagg":
        s = search.Searcher(p, ask.space(), "cpsat", ask.params)
        quick = s.best("min_ttft", use_sla=True, use_ttft=False)
        if quick:
            reach.append(search.objective_value(p, quick[0], "min_ttft"))
    reach = [v for v in reach if v > limit]
    if not reach:
        return None
    low = min(reach)
    q = percentile_suffix(p.sla.ttft_percentile)
    return first_confirmed(ask, [{"ttft": duration_text(round_up(low * f)) + q} for f in (1.0, 1.1, 1.5, 2.0)])


def in_units(gpus: int, unit: int) -> int:
    """The smallest GPU count of the cluster's unit holding `gpus`: a power of two up to one node (`unit` GPUs),
    then whole nodes [GPUs]."""
    if gpus <= unit:
        return min(unit, 1 << (gpus - 1).bit_length())
    return -(-gpus // unit) * unit


def fewest_gpus_of(table: Table, pattern: np.ndarray) -> int | None:
    """The fewest GPUs holding one replica of an option that breaks no rule but the GPU budget [GPUs]; None
    when no option does."""
    ok = (pattern & ~np.int64(BIT["gpu_budget"])) == 0
    if not ok.any():
        return None
    return int(table.replica_gpus_of(np.flatnonzero(ok)).min())


def gpus_relaxation(ask: Ask, fewest: int | None) -> Relaxation | None:
    """The fewest GPUs (in the cluster's unit, gpus_per_node) that make the ask feasible, from the conflict
    table's fewest (`fewest`), confirmed by `solve` at that count or the next few."""
    p = ask.p
    if fewest is None:
        return None
    unit = p.cluster.gpus_per_node
    start = in_units(max(fewest, p.gpus + 1), unit)
    counts = [start, in_units(start + 1, unit), in_units(in_units(start + 1, unit) + 1, unit), 2 * start]
    return first_confirmed(ask, [{"gpus": n} for n in counts])


def smaller_precisions(p: Problem) -> list[Precision]:
    """The weight formats smaller than p's that p's GPU runs natively, the nearest first."""
    own = p.precision.bytes_per_value
    found = [f for f in Precision if f.bytes_per_value < own and p.cluster.supports(f.math)]
    return sorted(found, key=lambda f: -f.bytes_per_value)


def precision_relaxation(ask: Ask) -> Relaxation | None:
    """The nearest smaller weight format that makes the ask feasible, confirmed by `solve`."""
    if ask.p.mixed_formats:
        return None
    return first_confirmed(ask, [{"precision": f.value} for f in smaller_precisions(ask.p)[:2]])


def explain_infeasible(ask: Ask, err: InfeasibleError) -> Explanation:
    """A minimal conflicting set of requirements and the confirmed nearest relaxations of an infeasible ask."""
    p, notes = ask.p, []
    cap = min(max(search.FIT_SEARCH_LIMIT, p.gpus), GPU_SEARCH_FACTOR * p.gpus)
    conflict: list[str] = []
    fewest = None
    searched_k = p.speculation is not None and p.speculation.draft_tokens is None
    if searched_k:
        notes.append("no conflict set: the draft length is searched (give --draft-tokens)")
    else:
        try:
            table, pattern = conflict_table(p, ask, cap)
        except PlannerError as e:
            notes.append(f"no conflict set: {e}")
        else:
            fewest = fewest_gpus_of(table, pattern)
            conflict = minimal_conflict(p, table, pattern, ask.params)
            if not conflict:
                notes.append("no conflict among the aggregated rules: the serving mode asked for leaves no plan")
            elif ask.serving != "agg":
                notes.append("the conflict is among the aggregated rules")
    found = [sla_relaxation(ask, err), ttft_relaxation(ask, err), gpus_relaxation(ask, fewest),
             precision_relaxation(ask)]
    return Explanation(feasible=False, error=str(err), conflict=conflict,
                       relaxations=[r for r in found if r is not None], notes=notes)
