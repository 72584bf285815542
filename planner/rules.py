"""The rules a plan must obey: the one plain-Python rule checker.

Every check takes numpy-broadcastable arrays, so the same function checks one plan (`violations`,
for `estimate`, the certificate of every search result, tests and benchmarks), a layout's grid of
batches (the exhaustive oracle) or a whole table of options (planner.options, whose masks the CP-SAT
model states as constraints). A rule is *broken* where its mask is True.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from planner.specs import Parallel, Problem

RULES: dict[str, str] = {
    "gpu_budget": "dp * tp * attention_dp * pp must not exceed the GPUs given",
    "heads_divisible": "tp must divide the attention heads",
    "layers_divisible": "pp must divide the layers",
    "experts_divisible": "ep must divide the routed experts (ep = 1 for dense models)",
    "moe_resplit": "ep must divide tp * attention_dp, which MoE layers re-split as moe_tp * ep",
    "dense_no_attention_dp": "a dense model has attention_dp = 1 (replicas are dp)",
    "tp_spans_whole_domains": "a tp group larger than one scale-up domain must span whole domains (tp a multiple "
                              "of the domain's GPUs)",
    "memory": "memory per GPU must fit the usable HBM",
    "chunk_keeps_up": "the prefill chunk must admit new requests as fast as they finish (load rho < 1)",
    "sla": "tokens/s/user must reach the SLA",
    "ttft": "time to first token must stay within the limit",
}
"""Every rule by name, with the sentence an error message uses."""

LAYOUT_RULES: tuple[str, ...] = (
    "gpu_budget", "heads_divisible", "layers_divisible", "experts_divisible", "moe_resplit",
    "dense_no_attention_dp", "tp_spans_whole_domains",
)
"""Rules on the layout alone.

A group may span scale-up domains: that is an option the cost model charges at scale-out cost
(cost.tp_allreduce_time, moe_exchange_time, pipeline_time), not a rule. tp_spans_whole_domains only asks a tp
group that spans domains to fill each one: the hierarchical all-reduce assumes the same g ranks in each of its
k domains (tp = k * domain), which is how engines run multi-node TP (SGLang and TensorRT-LLM: tp = nodes x
GPUs per node), and a group of 1.5 domains (tp 12 on 8-GPU domains) would leave half a domain that the next
replica could only use by straddling two domains as well. Groups inside one domain (any tp <= domain) and
stages or replicas spanning domains (charged wholly at scale-out, whatever their size) need no such rule."""
BATCH_RULES: tuple[str, ...] = ("memory", "chunk_keeps_up", "sla", "ttft")
"""Rules on a layout with its batch (micro-batch and chunk)."""


def layout_masks(p: Problem, tp, attention_dp, pp, ep, dp=1, moe_tp=None) -> dict[str, np.ndarray]:
    """Where each layout rule is broken, for broadcastable arrays of degrees [GPUs]. moe_tp None: derived
    (tp * attention_dp / ep), so only the divisibility of the stage by ep is checked."""
    md, domain = p.model, p.cluster.scaleup_domain_gpus
    tp, adp, pp, ep, dp = (np.asarray(x) for x in (tp, attention_dp, pp, ep, dp))
    stage = tp * adp
    resplit = stage % ep != 0
    if moe_tp is not None:
        resplit = resplit | (np.asarray(moe_tp) * ep != stage)
    return {
        "gpu_budget": dp * stage * pp > p.gpus,
        "heads_divisible": md.num_attention_heads % tp != 0,
        "layers_divisible": md.num_layers % pp != 0,
        "experts_divisible": (md.num_experts % ep != 0) if md.is_moe else ep != 1,
        "moe_resplit": resplit,
        "dense_no_attention_dp": np.zeros(np.shape(adp), bool) if md.is_moe else adp != 1,
        "tp_spans_whole_domains": (tp > domain) & (tp % domain != 0),
    }


def batch_masks(p: Problem, metrics: Mapping[str, np.ndarray], use_sla: bool = True,
                use_ttft: bool = True) -> dict[str, np.ndarray]:
    """Where each batch rule is broken, for arrays of cost.metrics_grid figures: memory per GPU above the
    usable HBM, prefill load rho >= 1, tokens/s/user below the SLA, TTFT above the limit (the last two
    only when asked and set on p.sla, at the figures `checked_times` gives)."""
    from planner.cost import usable_bytes

    out = {
        "memory": np.asarray(metrics["per_gpu_bytes"]) > usable_bytes(p),
        "chunk_keeps_up": np.asarray(metrics["prefill_load"]) >= 1,
    }
    floor = p.sla.min_tokens_per_s_per_user if (use_sla and p.sla) else None
    limit = p.sla.max_ttft_s if (use_ttft and p.sla) else None
    if floor or limit is not None:
        tpot, ttft = checked_times(p, metrics)
        if floor:
            out["sla"] = sla_broken(tpot, floor)
        if limit is not None:
            out["ttft"] = ttft > limit
    return out


def percentile_sla(p: Problem) -> bool:
    """True when the SLA names a percentile of TPOT or TTFT (SLA.tpot_percentile / ttft_percentile)."""
    return p.sla is not None and (p.sla.tpot_percentile is not None or p.sla.ttft_percentile is not None)


def checked_times(p: Problem, metrics: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The TPOT [s] and TTFT [s] the SLA and the TTFT limit are checked at (cost.metrics_grid figures): the
    cost model's means or, where the SLA names one, that percentile over requests (planner.percentiles);
    with p.confidence, moved to the pessimistic quantile of the held-out errors of their regime
    (planner.uncertainty) by the same factor as the mean."""
    tpot, ttft = np.asarray(metrics["tpot_s"]), np.asarray(metrics["ttft_s"])
    if percentile_sla(p):
        from planner.percentiles import checked_agg

        tpot, ttft = checked_agg(p, metrics)
    if p.confidence is None:
        return tpot, ttft
    from planner.uncertainty import pessimistic

    hi_tpot, hi_ttft = pessimistic(p, metrics)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tpot * (hi_tpot / metrics["tpot_s"]), ttft * np.where(np.isfinite(hi_ttft), hi_ttft / metrics["ttft_s"],
                                                                      1.0)


def sla_broken(tpot_s, min_tokens_per_s_per_user: float) -> np.ndarray:
    """Where a TPOT [s] misses a tokens/s/user floor: 1 / TPOT < floor."""
    with np.errstate(divide="ignore"):
        return 1 / np.asarray(tpot_s, dtype=float) < min_tokens_per_s_per_user


def replicas_needed(tokens_per_s: float, rate, most: int) -> np.ndarray:
    """The demand rule: the fewest replicas, each serving `rate` output tokens/s, that together serve
    `tokens_per_s`: the smallest n with n * rate >= demand, capped at `most` [replicas]."""
    rate = np.asarray(rate, dtype=float)
    with np.errstate(divide="ignore", over="ignore"):
        n = np.minimum(np.ceil(tokens_per_s / rate), most)
    n = np.where((n < most) & (n * rate < tokens_per_s), n + 1, n)  # float rounding of the division
    n = np.where((n > 1) & ((n - 1) * rate >= tokens_per_s), n - 1, n)
    return np.maximum(n, 1).astype(np.int64)


FLOAT_REL_TOL = 1e-12
"""Relative slack of the disaggregated rules' float checks: the oracle evaluates a grid at once, the plan one
deployment, and numpy's order of operations may differ between the two in the last bits."""


def rate_matching_broken(rho) -> np.ndarray:
    """Where a prefill pool's load rho exceeds the highest the rules allow (cost.MAX_PREFILL_LOAD)."""
    from planner.cost import MAX_PREFILL_LOAD

    return np.asarray(rho) > MAX_PREFILL_LOAD * (1 + FLOAT_REL_TOL)


def ttft_broken(ttft_s, limit_s: float | None) -> np.ndarray:
    """Where a TTFT [s] exceeds the limit [s] (never without one)."""
    if limit_s is None:
        return np.zeros(np.shape(ttft_s), bool)
    return np.asarray(ttft_s) > limit_s * (1 + FLOAT_REL_TOL)


def batch_ok(p: Problem, metrics: Mapping[str, np.ndarray], use_sla: bool = True, use_ttft: bool = True
             ) -> np.ndarray:
    """Where every batch rule holds."""
    broken = batch_masks(p, metrics, use_sla, use_ttft).values()
    return ~np.logical_or.reduce(list(broken))


def layout_violations(p: Problem, par: Parallel) -> list[str]:
    """Names of the layout rules `par` breaks on problem `p` (empty when valid)."""
    masks = layout_masks(p, par.tp, par.attention_dp, par.pp, par.ep, par.dp, par.moe_tp)
    return [rule for rule in LAYOUT_RULES if bool(masks[rule])]


def violations(p: Problem, par: Parallel, micro_batch: int, chunk: int, use_sla: bool = True,
               use_ttft: bool = True) -> list[str]:
    """Every rule one plan breaks, checked on the float cost model (empty when valid)."""
    from planner.cost import metrics_grid

    out = layout_violations(p, par)
    masks = batch_masks(p, metrics_grid(p, par, micro_batch, chunk), use_sla, use_ttft)
    return out + [rule for rule in BATCH_RULES if rule in masks and bool(masks[rule])]


def explain(p: Problem, par: Parallel, rule: str) -> str:
    """One sentence naming the rule and the numbers that break it."""
    md = p.model
    detail = {
        "gpu_budget": f"the layout uses {par.gpus_used} GPUs, {p.gpus} given",
        "heads_divisible": f"tp={par.tp} does not divide {md.num_attention_heads} heads",
        "layers_divisible": f"pp={par.pp} does not divide {md.num_layers} layers",
        "experts_divisible": (
            f"ep={par.ep} does not divide {md.num_experts} experts" if md.is_moe
            else f"ep={par.ep} on a dense model"
        ),
        "moe_resplit": (
            f"ep={par.ep} does not divide tp*attention_dp = {par.stage_gpus}"
            if par.stage_gpus % par.ep else
            f"moe_tp*ep = {par.moe_tp * par.ep} but tp*attention_dp = {par.stage_gpus}"
        ),
        "dense_no_attention_dp": f"attention_dp={par.attention_dp} on a dense model",
        "tp_spans_whole_domains": (f"tp={par.tp} spans {par.tp / p.cluster.scaleup_domain_gpus:.3g} "
                                   f"{p.cluster.scaleup_domain_gpus}-GPU scale-up domains"),
    }.get(rule, "")
    return f"{RULES[rule]} ({detail})" if detail else RULES[rule]
