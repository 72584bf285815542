"""The rules a layout must obey, as plain-Python checks.

The CP-SAT model (planner.solver) states the same rules as constraints; these checks serve the
exhaustive oracle and `estimate`, and the tests compare the two.
"""

from __future__ import annotations

from planner.specs import Parallel, Problem

RULES: dict[str, str] = {
    "gpu_budget": "dp * tp * attention_dp * pp must not exceed the GPUs given",
    "heads_divisible": "tp must divide the attention heads",
    "layers_divisible": "pp must divide the layers",
    "experts_divisible": "ep must divide the routed experts (ep = 1 for dense models)",
    "moe_resplit": "moe_tp * ep must equal tp * attention_dp",
    "dense_no_attention_dp": "a dense model has attention_dp = 1 (use dp for replicas)",
    "tp_in_scaleup_domain": "the tp group must sit inside one scale-up (NVLink) domain",
    "memory": "memory per GPU must fit the usable HBM",
    "chunk_keeps_up": "the prefill chunk must admit new requests as fast as they finish (load rho < 1)",
    "sla": "tokens/s/user must reach the SLA",
    "ttft": "time to first token must stay within the limit",
}
"""Every rule by name, with the sentence an error message uses."""


def layout_violations(p: Problem, par: Parallel) -> list[str]:
    """Names of the layout rules `par` breaks on problem `p` (empty when valid)."""
    md, out = p.model, []
    if par.gpus_used > p.gpus:
        out.append("gpu_budget")
    if md.num_attention_heads % par.tp:
        out.append("heads_divisible")
    if md.num_layers % par.pp:
        out.append("layers_divisible")
    if (md.is_moe and md.num_experts % par.ep) or (not md.is_moe and par.ep != 1):
        out.append("experts_divisible")
    if par.moe_tp * par.ep != par.tp * par.attention_dp:
        out.append("moe_resplit")
    if not md.is_moe and par.attention_dp != 1:
        out.append("dense_no_attention_dp")
    if par.tp > p.cluster.scaleup_domain_gpus:
        out.append("tp_in_scaleup_domain")
    return out


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
        "moe_resplit": f"moe_tp*ep = {par.moe_tp * par.ep} but tp*attention_dp = {par.tp * par.attention_dp}",
        "dense_no_attention_dp": f"attention_dp={par.attention_dp} on a dense model",
        "tp_in_scaleup_domain": f"tp={par.tp} exceeds the {p.cluster.scaleup_domain_gpus}-GPU scale-up domain",
    }.get(rule, "")
    return f"{RULES[rule]} ({detail})" if detail else RULES[rule]
