"""`planner explain`: binding rules against an independent enumeration, slacks against `estimate`, conflicts that
are minimal, relaxations that `solve` confirms, the command line."""

from __future__ import annotations

import functools
import random
from itertools import product

import numpy as np
import pytest
from clirun import error_line, run, run_json

from planner import cost, disagg, rules, search
from planner.explanations import Ask, explain, with_change
from planner.explanations_disagg import KEEPS_UP, Model, lifted_searcher
from planner.search import make_problem
from planner.solver import SolverParams
from planner.space import Space

BATCH = ("memory", "chunk_keeps_up", "sla", "ttft")
RELEASABLE = tuple(r for r in rules.LAYOUT_RULES if r != "gpu_budget") + BATCH


def brute_best(p, space: Space, released: frozenset[str] = frozenset(), budget: int | None = None) -> float | None:
    """The most tokens/s/GPU of any (layout, batch) of the candidate lists obeying every rule but `released`, by
    plain enumeration (planner.rules' masks on planner.cost's figures; no table, no dominance, no CP-SAT); None
    when none does. With gpu_budget released, replicas of up to `budget` GPUs count (their throughput does not
    matter then, only whether one exists)."""
    budget = budget or p.gpus
    m, c = np.meshgrid(np.asarray(space.micro_batches), np.asarray(space.chunks), indexing="ij")
    best = None
    for tp, adp, pp, ep in product(space.tp, space.attention_dp, space.pp, space.ep):
        replica = tp * adp * pp
        if replica > budget:
            continue
        dp = max(p.gpus // replica, 1)
        masks = rules.layout_masks(p, tp, adp, pp, ep, dp)
        if any(bool(broken) for r, broken in masks.items() if r not in released):
            continue
        lay = cost.Layouts(*(np.asarray(x) for x in (tp, adp, pp, ep, dp)))
        g = cost.metrics_grid(p, lay, m, c)
        ok = np.ones(m.shape, bool)
        for r, broken in rules.batch_masks(p, g).items():
            if r not in released:
                ok &= ~np.broadcast_to(broken, m.shape)
        if ok.any():
            value = float(np.broadcast_to(g["tokens_per_s_per_gpu"], m.shape)[ok].max())
            best = value if best is None else max(best, value)
    return best


def brute_binding(p, space: Space) -> set[str]:
    """The rules (but the GPU budget) whose release lets the enumeration serve strictly more tokens/s/GPU."""
    base = brute_best(p, space)
    assert base is not None
    return {r for r in RELEASABLE if (brute_best(p, space, frozenset({r})) or 0) > base * (1 + 1e-9)}


@functools.cache
def default_case():
    return explain(make_problem(min_tokens_per_s_per_user=20))


# --- a feasible ask -------------------------------------------------------------------------------------------


def test_the_default_case_names_its_binding_rules():
    e = default_case()
    assert e.feasible and e.serving == "disagg" and e.plan.serving == "disagg"
    assert e.binding, "the default case has binding rules"
    assert e.binding == [st.rule for st in e.rules if st.status == "binding"]
    assert not e.notes
    best = e.plan.metrics.tokens_per_s_per_gpu
    for st in e.rules:
        if st.status == "binding":
            assert st.released_tokens_per_s_per_gpu > best
        elif st.released_tokens_per_s_per_gpu is not None:
            assert st.released_tokens_per_s_per_gpu <= best * (1 + 1e-9)
    names = {st.rule for st in e.rules}
    assert {"prefill.memory", "decode.memory", "decode.sla", "rate_matching", "gpu_budget"} <= names
    assert len(e.runner_ups) == 3
    for u in e.runner_ups:
        assert u.tokens_per_s_per_gpu <= best * (1 + 1e-9) and u.gap >= -1e-9 and u.reason
        assert u.label != e.plan.label


def test_each_binding_rule_of_the_default_case_yields_a_real_better_deployment():
    """Released one at a time, each pool rule the explanation names binding gives a deployment that the float
    model's own checker (disagg.deployment_violations) finds breaking that rule alone, serving more."""
    e = default_case()
    p = make_problem(min_tokens_per_s_per_user=20)
    dp = disagg.make_disagg(p)
    ask = Ask(p, "auto", "cpsat", None, None, SolverParams(), None, None)
    model = Model(dp, lifted_searcher(dp, ask), 20.0, None, SolverParams())
    best = e.plan.metrics.tokens_per_s_per_gpu
    checked = 0
    for rule in e.binding:
        if rule not in model.search.enforce:
            continue  # gpu_budget: re-solved on more GPUs by solve itself
        model.search.release(rule)
        sol = model.search.solve()
        model.search.enforce_all()
        pre, chunk, dec, m = model.deployment(sol)
        broken = disagg.deployment_violations(dp, pre, chunk, dec, m, 20.0, None)
        assert broken == ["sla" if rule == "decode.sla" else rule], (rule, broken)
        assert model.tokens_per_s_per_gpu(sol) > best
        checked += 1
    assert checked >= 2
    assert KEEPS_UP in model.search.enforce


def test_slacks_agree_with_estimate_of_the_plan():
    e = default_case()
    plan = e.plan
    p = make_problem(min_tokens_per_s_per_user=20)
    again = search.estimate_disagg(p, plan.prefill.parallel, plan.prefill.batch.chunk_tokens, plan.decode.parallel,
                                   plan.decode.batch.micro_batch)
    by = {st.rule: st for st in e.rules}
    for pool in ("prefill", "decode"):
        mem = getattr(again, pool).memory
        assert by[f"{pool}.memory"].slack == pytest.approx((mem.usable_bytes - mem.per_gpu_bytes) / 1e9)
    assert by["decode.sla"].slack == pytest.approx(again.metrics.tokens_per_s_per_user - 20)
    assert by["rate_matching"].slack == pytest.approx(cost.MAX_PREFILL_LOAD - again.metrics.prefill_load)
    assert by["gpu_budget"].slack == p.gpus - again.gpus_used


AGG_CASES = [  # (model, cluster, gpus, isl, osl, precision, SLA, TTFT)
    ("llama-3.1-8b", "h100-sxm", 8, 1000, 1000, "bf16", 50, None),
    ("llama-3.1-8b", "l40s", 4, 2000, 200, "fp8", 30, 2.0),
    ("mixtral-8x7b", "a100-sxm", 8, 2000, 500, "bf16", 40, None),
    ("qwen3-30b-a3b", "h100-sxm", 4, 4000, 500, "fp8", 60, 1.0),
]


def agg_problem(model, cluster, gpus, isl, osl, precision, sla, ttft):
    return make_problem(model=model, cluster=cluster, gpus=gpus, isl=isl, osl=osl, precision=precision,
                        min_tokens_per_s_per_user=sla, max_ttft_s=ttft)


@pytest.mark.parametrize("case", AGG_CASES)
def test_binding_rules_are_those_the_enumeration_finds(case):
    p = agg_problem(*case)
    e = explain(p, serving="agg", runner_ups=2)
    assert e.feasible and e.serving == "agg"
    assert set(e.binding) - {"gpu_budget"} == brute_binding(p, Space.of(p))
    assert e.plan.metrics.tokens_per_s_per_gpu == pytest.approx(brute_best(p, Space.of(p)), rel=1e-9)
    # slacks against estimate of the plan
    plan = e.plan
    again = search.estimate(p, parallel=plan.parallel, concurrency=plan.batch.concurrency,
                            chunk=plan.batch.chunk_tokens)
    by = {st.rule: st for st in e.rules}
    assert by["memory"].slack == pytest.approx((again.memory.usable_bytes - again.memory.per_gpu_bytes) / 1e9)
    assert by["sla"].slack == pytest.approx(again.metrics.tokens_per_s_per_user - p.sla.min_tokens_per_s_per_user)
    assert by["chunk_keeps_up"].slack == pytest.approx(1 - again.metrics.prefill_load)
    if p.sla.max_ttft_s is not None:
        assert by["ttft"].slack == pytest.approx(p.sla.max_ttft_s - again.metrics.ttft_ms / 1e3)
    for u in e.runner_ups:
        assert u.breaks_at_winner_batch is not None and u.cost_term in cost.TIME_TERMS


def random_agg_problems(n: int, seed: int = 17):
    rng = random.Random(seed)
    models = [("llama-3.1-8b", "h100-sxm"), ("qwen3-32b", "h200-sxm"), ("mixtral-8x7b", "h100-sxm"),
              ("qwen3-30b-a3b", "b200")]
    out = []
    while len(out) < n:
        model, cluster = rng.choice(models)
        gpus = rng.choice([1, 2, 4, 8])
        isl, osl = rng.choice([500, 2000, 8000]), rng.choice([100, 500, 1000])
        sla = rng.choice([10, 25, 50, 80])
        ttft = rng.choice([None, None, 0.5, 3.0])
        p = make_problem(model=model, cluster=cluster, gpus=gpus, isl=isl, osl=osl, precision="fp8",
                         min_tokens_per_s_per_user=sla, max_ttft_s=ttft)
        if brute_best(p, Space.of(p)) is not None:
            out.append(p)
    return out


def case_id(p) -> str:
    return f"{p.model.name}-{p.gpus}gpu-{p.sla.min_tokens_per_s_per_user:g}tok-ttft{p.sla.max_ttft_s}"


@pytest.mark.parametrize("p", random_agg_problems(6), ids=case_id)
def test_binding_rules_match_the_enumeration_on_random_instances(p):
    e = explain(p, serving="agg", runner_ups=0)
    assert set(e.binding) - {"gpu_budget"} == brute_binding(p, Space.of(p))


# --- an infeasible ask --------------------------------------------------------------------------------------------


INFEASIBLE = [  # (make_problem keywords, serving, a requirement the conflict must hold)
    (dict(model="llama-3.1-405b", cluster="h100-sxm", gpus=16, isl=4000, osl=1000, precision="fp8",
          min_tokens_per_s_per_user=500), "agg", "sla"),  # SLA too high, dense
    (dict(model="qwen3-30b-a3b", cluster="h100-sxm", gpus=2, isl=4000, osl=1000, precision="fp8",
          min_tokens_per_s_per_user=20, max_ttft_s=0.02), "agg", "ttft"),  # TTFT too low, MoE
    (dict(model="llama-3.1-70b", cluster="h100-sxm", gpus=1, isl=4000, osl=1000, precision="bf16",
          min_tokens_per_s_per_user=20), "auto", "memory"),  # too few GPUs, dense
    (dict(model="gpt-moe-1.8t", cluster="h100-sxm", gpus=16, precision="fp8", min_tokens_per_s_per_user=20),
     "agg", "memory"),  # too few GPUs, MoE
]


@functools.cache
def infeasible_case(i: int):
    kw, serving, _ = INFEASIBLE[i]
    p = make_problem(**kw)
    return p, serving, explain(p, serving=serving)


@pytest.mark.parametrize("i", range(len(INFEASIBLE)))
def test_each_relaxation_of_an_infeasible_ask_solves(i):
    p, serving, e = infeasible_case(i)
    assert not e.feasible and e.error and e.plan is None
    with pytest.raises(search.InfeasibleError):
        search.solve(p, serving=serving)
    assert e.relaxations, "an infeasible ask gets at least one relaxation"
    for r in e.relaxations:
        (key, value), = r.change.items()
        assert key in ("sla", "ttft", "gpus", "precision")
        plan = search.solve(with_change(p, r.change), serving=serving)[0]
        assert plan.label == r.result.label
        if key == "sla":
            assert plan.metrics.tokens_per_s_per_user >= float(str(value).removesuffix("tok/s"))
            assert float(str(value).removesuffix("tok/s")) < p.sla.min_tokens_per_s_per_user


@pytest.mark.parametrize("i", range(len(INFEASIBLE)))
def test_the_conflict_is_minimal(i):
    """The conflict's requirements together leave no plan, and without any one of them the enumeration finds one
    (the GPU budget released: replicas of up to 8x the GPUs given)."""
    p, serving, e = infeasible_case(i)
    must = INFEASIBLE[i][2]
    assert must in e.conflict
    every = frozenset(RELEASABLE) | {"gpu_budget"}
    budget = 8 * p.gpus
    space = Space.of(p.model_copy(update={"gpus": budget}), micro_batches=(1,))
    assert brute_best(p, space, every - set(e.conflict), budget) is None
    for r in e.conflict:
        assert brute_best(p, space, every - (set(e.conflict) - {r}), budget) is not None, r


def test_sla_and_ttft_relaxations_round_towards_feasible():
    p, _, e = infeasible_case(0)
    (sla,) = [r for r in e.relaxations if "sla" in r.change]
    assert sla.change["sla"].endswith("tok/s")
    p, _, e = infeasible_case(1)
    (ttft,) = [r for r in e.relaxations if "ttft" in r.change]
    assert ttft.result.ttft_ms <= with_change(p, ttft.change).sla.max_ttft_s * 1e3


# --- the command line -----------------------------------------------------------------------------------------


SMALL = ("--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", "8", "--isl", "1000", "--osl", "1000",
         "--precision", "bf16", "--sla", "50tok/s", "--serving", "agg")


def test_cli_text_names_the_binding_rules():
    result = run("explain", *SMALL)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "binding:" in out and "runner-ups:" in out and "memory" in out
    d = run_json("explain", *SMALL)
    for rule in d["binding"]:
        assert f"{rule}  " in out and "binding" in out


def test_cli_json_has_the_contract_keys():
    d = run_json("explain", *SMALL)
    assert {"binding", "relaxations", "rules", "runner_ups", "plan", "conflict"} <= set(d)
    assert d["feasible"] and d["relaxations"] == [] and d["conflict"] == []
    assert isinstance(d["binding"], list) and all(isinstance(r, str) for r in d["binding"])


def test_cli_relaxations_apply_to_solve():
    args = ("--model", "llama-3.1-70b", "--cluster", "h100-sxm", "--gpus", "1", "--isl", "4000", "--osl", "1000",
            "--precision", "bf16", "--serving", "agg")
    d = run_json("explain", *args)
    assert not d["feasible"] and d["relaxations"]
    text = run("explain", *args)
    assert text.exit_code == 0 and "relaxations, each confirmed by planner solve:" in text.stdout
    for r in d["relaxations"]:
        change = [x for k, v in r["change"].items() for x in (f"--{k}", str(v))]
        given = dict(zip(args[::2], args[1::2]))
        given.update(dict(zip(change[::2], change[1::2])))
        solved = run_json("solve", *[x for kv in given.items() for x in kv])
        assert solved["label"] == r["result"]["label"]


@pytest.mark.parametrize("args", [("--gpus", "0"), ("--model", "no-such-model"), ("--sla", "fast"),
                                  ("--micro-batches", "0"), ("--runner-ups", "-1")])
def test_cli_errors_are_one_line(args):
    assert "error" in error_line("explain", *args)
