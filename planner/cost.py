"""The cost model: memory and time equations, the single source of truth for every command.

Every function takes numpy-broadcastable integer arrays for the choices, so the same code
evaluates one plan (``evaluate``), a grid for the exhaustive oracle, or the coefficient tables of
the CP-SAT model. Choices and their names:

- ``tp``: attention tensor-parallel size; ``adp``: attention data-parallel size; ``pp``: pipeline
  stages; ``ep``: expert-parallel size; ``moe_tp``: tensor split inside an expert, always
  ``tp * adp / ep``; ``m``: decode requests per attention-DP rank per pipeline micro-batch;
  ``c``: prefill tokens an iteration carries per attention-DP rank (0 or the chunk budget).

Engine model (in-flight batching with chunked prefill, closed loop of requests):
a replica keeps ``B = m * adp * pp`` requests in flight. Each pipeline micro-batch holds ``m``
decoding requests per attention-DP rank. To replace finishing requests the replica must prefill
``m * isl / osl`` tokens per iteration and rank on average, within a budget of ``C`` tokens per
iteration: its load ``rho = m * isl / (osl * C)`` must stay below 1 (a rule). A chunk-carrying
iteration holds ``c = min(C, max(isl, m * isl / osl))`` prefill tokens, and a share
``f = m * isl / (osl * c)`` of iterations carries one. The mean time per output token is the mean
time of a pass through all stages, ``(1 - f) * pass(0) + f * pass(c)``; TTFT counts chunk passes
(see ``ttft_passes``). Closed-loop benchmarks of fixed-length requests send them back in groups
(burstiness: how synchronised the loop stays, fitted to them); planning assumes steady traffic.
Within a pass, each group of kernels takes the larger of its memory time and its compute time
(roofline), and communication adds to it. With speculative decoding (Problem.speculation) an iteration is a
draft-and-verify step yielding E tokens per request (spec_decode_step, the section "speculative decoding").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.errors import SpecError
from planner.specs import (
    GB,
    Batch,
    DomainSpan,
    Memory,
    Metrics,
    ModelSpec,
    Parallel,
    Precision,
    Problem,
    SpecMethod,
    Speculation,
)

ACT_BYTES = 2.0
"""Bytes of one activation value moved between GPUs or kept as workspace (BF16) [bytes]."""
EMBED_BYTES = Precision.bf16.bytes_per_value
"""Embeddings and LM head stay in BF16 in every serving engine we model [bytes/parameter]."""
US = 1e-6
"""Seconds per microsecond [s]."""
STACK_LIMIT = 200_000
"""Largest grid (options) `metrics_grid` evaluates the four pass loads of in one stacked call; larger grids
(search tables) take one call per load, so as not to hold four copies in memory [options]."""


@dataclass(frozen=True)
class Rates:
    """Achievable per-GPU rates after efficiency factors, derived once per problem."""

    hbm: float  # [bytes/s]
    gemm: float  # [FLOP/s]
    moe_gemm: float  # [FLOP/s] routed-expert GEMMs, after moe_gemm_efficiency
    moe_hbm: float  # [bytes/s] routed-expert weight reads, after moe_gemm_efficiency
    attention: float  # [FLOP/s] FlashAttention-family kernels (prefill, GQA decode math)
    mla_decode: float  # [FLOP/s] FlashMLA-family kernels (absorbed MLA decode)
    kv_read: float  # [bytes/s] paged-decode kernels reading the KV cache
    scaleup: float  # [bytes/s]
    scaleout: float  # [bytes/s]
    scaleup_latency: float  # [s]
    scaleout_latency: float  # [s]

    @classmethod
    def of(cls, p: Problem) -> Rates:
        """Effective rates of the problem's cluster for its precisions (computed once per problem)."""
        cached = p.__dict__.get("_rates")
        if cached is not None:
            return cached
        rates = cls._compute(p)
        p.__dict__["_rates"] = rates
        return rates

    @classmethod
    def _compute(cls, p: Problem) -> Rates:
        c, k = p.cluster, p.factors
        return cls(
            hbm=c.hbm_bandwidth_tbps * 1e12 * k.hbm_efficiency,
            gemm=c.tflops[p.gemm_math] * 1e12 * k.compute_efficiency,
            moe_gemm=c.tflops[p.math_for(p.experts)] * 1e12 * k.compute_efficiency * k.moe_gemm_efficiency,
            moe_hbm=c.hbm_bandwidth_tbps * 1e12 * k.hbm_efficiency * k.moe_gemm_efficiency,
            attention=c.tflops[p.attention_math] * 1e12 * k.prefill_attention_efficiency,
            mla_decode=c.tflops[p.attention_math] * 1e12 * k.mla_decode_efficiency,
            kv_read=c.hbm_bandwidth_tbps * 1e12 * k.decode_attention_efficiency,
            scaleup=c.scaleup_bandwidth_gbps * GB * k.scaleup_efficiency,
            scaleout=c.scaleout_bandwidth_gbps * GB * k.scaleout_efficiency,
            scaleup_latency=(c.scaleup_latency_us + k.collective_overhead_us) * US,
            scaleout_latency=(c.scaleout_latency_us + k.collective_overhead_us) * US,
        )


def crosses_domain(p: Problem, gpus) -> np.ndarray:
    """True where a group of `gpus` GPUs cannot sit inside one scale-up domain."""
    return np.asarray(gpus) > p.cluster.scaleup_domain_gpus


def domains_spanned(p: Problem, gpus) -> np.ndarray:
    """Scale-up domains a group of `gpus` GPUs placed on whole domains occupies: ceil(gpus / domain) [domains]."""
    return -(-np.asarray(gpus) // p.cluster.scaleup_domain_gpus)


def domain_spans(p: Problem, par: Parallel) -> list[DomainSpan]:
    """The groups of one replica that cross scale-up domains and so communicate over scale-out: the tp group
    (its all-reduce runs hierarchically, `tp_allreduce_time`), the MoE stage when its attention-DP ranks
    exchange tokens (`moe_exchange_time`), the pipeline replica when it hands activations between stages
    (`pipeline_time`)."""
    d = p.cluster.scaleup_domain_gpus
    groups = (
        ("tp", par.tp, True),
        ("moe_stage", par.stage_gpus, p.model.is_moe and par.attention_dp > 1),
        ("pipeline", par.replica_gpus, par.pp > 1),
    )
    return [DomainSpan(group=name, gpus=gpus, domains=int(domains_spanned(p, gpus)), domain_gpus=d)
            for name, gpus, communicates in groups if communicates and bool(crosses_domain(p, gpus))]


# --- architecture quantities -------------------------------------------------------------------


def attended_layer_tokens(p: Problem, context: float) -> float:
    """Sum over layers of the tokens one query attends at this context length: full layers attend
    `context`, sliding-window layers at most their window [layer-tokens]."""
    m = p.model
    windowed = m.sliding_window_layers
    return (m.num_layers - windowed) * context + windowed * min(context, m.sliding_window or context)


def kv_bytes_per_token_layer(p: Problem, tp: np.ndarray | int) -> np.ndarray:
    """KV cache of one token in one layer held by one GPU [bytes].

    GQA: K and V for ceil(kv_heads / tp) heads (heads replicate once tp exceeds them).
    MLA: the compressed latent (kv_lora_rank + rope dims), replicated on every TP rank.
    """
    m, b = p.model, p.kv_precision.bytes_per_value
    tp = np.asarray(tp)
    if m.mla:
        return np.full(tp.shape, (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) * b)
    heads = np.ceil(m.num_kv_heads / tp)
    return 2 * m.head_dim * heads * b


def attention_flops_per_token_context(p: Problem, tp: np.ndarray | int, prefill: bool) -> np.ndarray:
    """FLOPs of one query token against one attended token in one layer, on one GPU [FLOP].

    GQA: QK^T and PV, 2 * 2 * head_dim per head. MLA decode runs in the absorbed form over the
    latent (2 * (2 * kv_lora_rank + rope) per head); MLA prefill in the expanded form.
    """
    m = p.model
    heads = m.num_attention_heads / np.asarray(tp)
    if m.mla:
        a = m.mla
        per_head = (
            2 * (a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim)
            if prefill
            else 2 * (2 * a.kv_lora_rank + a.qk_rope_head_dim)
        )
        return heads * per_head
    return heads * 4 * m.head_dim


# --- memory [bytes] -----------------------------------------------------------------------------


def weight_bytes_per_gpu(p: Problem, tp, adp, pp, embeddings: bool = True) -> np.ndarray:
    """Weights held by one GPU of the busiest stage [bytes].

    Attention, dense FFNs, shared experts and routers (in p.precision) are split over tp; routed
    experts (in p.experts: MXFP4 beside BF16 attention for gpt-oss) over the stage's tp * adp GPUs
    (= ep * moe_tp). A stage holds num_layers / pp layers, with
    ceil(moe_layers / pp) of them MoE. Embedding and LM head (BF16) are split over tp and sit on
    the first and last stage (both on one GPU when pp = 1); `embeddings` False leaves them out (an MTP module
    or EAGLE head shares the target's).
    """
    m, wb = p.model, p.precision.bytes_per_value
    tp, adp, pp = np.asarray(tp), np.asarray(adp), np.asarray(pp)
    layers = m.num_layers / pp
    moe_layers = np.ceil(m.num_moe_layers / pp)
    dense_layers = np.maximum(layers - moe_layers, 0)
    tp_params = (
        layers * m.attention_params_per_layer
        + dense_layers * m.dense_ffn_params
        + moe_layers * m.shared_expert_params
    )
    expert_params = moe_layers * m.num_experts * m.expert_params
    layer_bytes = tp_params * wb / tp + expert_params * p.experts.bytes_per_value / (tp * adp)
    if not embeddings:
        return layer_bytes
    embed_copies = np.where((pp == 1) & (not m.tie_word_embeddings), 2, 1)
    embed = embed_copies * m.vocab_size * m.hidden_size * EMBED_BYTES / tp
    return layer_bytes + embed


def kv_cache_bytes_per_gpu(p: Problem, tp, m) -> np.ndarray:
    """KV cache of one GPU for its requests at full context (isl + osl) [bytes].

    A GPU of an attention-DP rank serves m * pp requests (pp micro-batches) for num_layers / pp
    layers, i.e. m requests over all layers; windowed layers keep at most the window. With a prefix
    cache (Workload.prefix_hit) a request's own KV is its uncached prompt and its output,
    isl * (1 - hit) + osl tokens, and the rank keeps the cached prefixes (Workload.cached_prefix_tokens)
    once, beside them (prefix_cache_bytes_per_gpu).
    """
    w = p.workload
    own = np.asarray(m) * attended_layer_tokens(p, w.prefill_tokens + w.osl) * kv_bytes_per_token_layer(p, tp)
    return own + prefix_cache_bytes_per_gpu(p, tp) if w.prefix_hit or w.prefix_cache_tokens else own


def prefix_cache_bytes_per_gpu(p: Problem, tp) -> np.ndarray:
    """KV of the cached prompt prefixes one GPU keeps resident for its rank: cached_prefix_tokens over all
    layers, heads split over tp as the requests' KV [bytes]."""
    return attended_layer_tokens(p, p.workload.cached_prefix_tokens) * kv_bytes_per_token_layer(p, tp)


def activation_bytes_per_gpu(p: Problem, tp, m, c, q=1) -> np.ndarray:
    """Workspace for the largest iteration's tokens (m decode requests of q tokens each + c prefill) [bytes].

    Per token: residual, attention and FFN intermediates (BF16), routed-expert intermediates for
    its top-k experts, and FP32 logits for decode tokens (q = k + 1 per request when a speculative step
    verifies k draft tokens).
    """
    md = p.model
    tp = np.asarray(tp)
    tokens = np.asarray(m) * q + np.asarray(c)
    q_width = md.num_attention_heads * md.head_dim
    ffn = max(md.intermediate_size, md.experts_per_token * md.moe_intermediate_size)
    per_token = ACT_BYTES * (4 * md.hidden_size + (2 * q_width + 2 * ffn) / tp)
    logits = np.asarray(m) * q * md.vocab_size / tp * 4
    return tokens * per_token + logits


def comm_buffer_bytes(p: Problem, replica_gpus) -> np.ndarray:
    """Collective buffers (NCCL and all-to-all), once a replica spans more than one GPU [bytes]."""
    return np.where(np.asarray(replica_gpus) > 1, p.calibration.comm_buffer_gb * GB, 0.0)


def reserved_bytes(p: Problem) -> float:
    """Runtime context memory that is never usable [bytes]."""
    return p.cluster.reserved_memory_gb * GB


def usable_bytes(p: Problem) -> float:
    """HBM the engine may fill: capacity * memory_utilization [bytes]."""
    return p.cluster.capacity_bytes * p.calibration.memory_utilization


# --- time of one pass through all stages [s] ---------------------------------------------------


def _gemm(bytes_, flops, r: Rates) -> np.ndarray:
    """Roofline of a GEMM group: the larger of its weight-read and its math time [s]."""
    return np.maximum(bytes_ / r.hbm, flops / r.gemm)


def attention_block_terms(p: Problem, tp, m, c, q=1, host: bool = True) -> dict[str, np.ndarray]:
    """The terms of attention_block_time, in the order it sums them [s]: dense GEMMs (attention projections,
    dense and shared-expert FFNs), decode attention (KV reads against math), the prefill chunk's attention, the
    LM head, the TP all-reduces, the fixed launch (and iteration) overhead and, with `host`, the host time per
    decoding request.

    Decode requests attend isl + osl/2 tokens on average, each a roofline of its KV reads (paged-decode
    kernels, Rates.kv_read) and its math (FlashMLA-family kernels for MLA, FlashAttention-family for
    GQA); a chunk attends isl/2 tokens on average (FlashAttention-family) and reads its prefix KV once.
    Each decode request carries q query tokens (q = k + 1 when a speculative step verifies k draft tokens):
    GEMMs, LM head and all-reduces see m * q tokens, attention reads each request's KV once for its q queries.
    `host` False leaves out the iteration overhead and the host time per request (a draft pass runs inside
    the iteration that schedules it).
    """
    md, w, r, k = p.model, p.workload, Rates.of(p), p.factors
    tp, m, c = np.asarray(tp), np.asarray(m), np.asarray(c)
    n = m * q + c
    wb = p.precision.bytes_per_value
    dense_params = (
        md.num_layers * md.attention_params_per_layer
        + md.num_dense_layers * md.dense_ffn_params
        + md.num_moe_layers * md.shared_expert_params
    ) / tp
    terms = {"dense_gemm": _gemm(dense_params * wb, 2 * n * dense_params, r)}
    # decode attention: KV reads against attention math
    kv_tok = kv_bytes_per_token_layer(p, tp)
    dec_ctx = attended_layer_tokens(p, w.isl + w.osl / 2)
    decode_math = r.mla_decode if md.mla else r.attention
    terms["decode_attention"] = m * np.maximum(
        dec_ctx * kv_tok / r.kv_read, q * (dec_ctx * attention_flops_per_token_context(p, tp, False) / decode_math)
    )
    # prefill chunk attention
    pre_ctx = attended_layer_tokens(p, w.isl * (1 + w.prefix_hit) / 2)  # prompt tokens computed past the prefix
    terms["prefill_attention"] = np.where(
        c > 0,
        c * pre_ctx * attention_flops_per_token_context(p, tp, True) / r.attention
        + pre_ctx * kv_tok / r.kv_read,
        0.0,
    )
    # LM head (BF16) for the decode tokens
    lm = md.vocab_size * md.hidden_size / tp
    terms["lm_head"] = _gemm(lm * EMBED_BYTES, 2 * (m * q) * lm, r)
    # TP all-reduce after attention and after the FFN of every layer
    terms["tp_allreduce"] = 2 * md.num_layers * tp_allreduce_time(p, tp, n)
    # fixed launch and scheduler time, and the host's work per decoding request
    if not host:
        terms["overhead"] = np.asarray(md.num_layers * k.layer_overhead_us * US)
        return terms
    terms["overhead"] = np.asarray(md.num_layers * k.layer_overhead_us * US + k.iteration_overhead_ms * 1e-3)
    terms["host"] = m * k.request_step_overhead_us * US
    return terms


def _total(terms: dict[str, np.ndarray]) -> np.ndarray:
    """The sum of terms, left to right [their unit]."""
    values = iter(terms.values())
    t = next(values)
    for v in values:
        t = t + v
    return t


def attention_block_time(p: Problem, tp, m, c, q=1, host: bool = True) -> np.ndarray:
    """Time of the tensor-parallel part of a pass: every layer's attention and dense GEMMs, KV
    reads, TP all-reduces, per-layer launch latency, LM head, the iteration overhead and the host
    time per decoding request [s]: the sum of attention_block_terms."""
    return _total(attention_block_terms(p, tp, m, c, q, host))


def tp_allreduce_time(p: Problem, tp, n) -> np.ndarray:
    """One all-reduce of n tokens' hidden states (BF16) over a tp group, n tokens per rank [s]; 0 at tp = 1.

    An alpha-beta model (a latency per step plus bytes over bandwidth) of the algorithms NCCL runs. Inside one
    scale-up domain (tp <= domain) a ring over scale-up, as NCCL's ring all-reduce moves it:
    lat_up + 2 (tp - 1) / tp * B / bw_up, with B = n * hidden * 2 bytes and lat_up charged once per
    collective (the NVSwitch domain's per-collective latency). A group spanning k = tp / g domains, g = its GPUs
    per domain = min(tp, domain) (whole domains: rules.tp_spans_whole_domains), runs hierarchically, as NCCL's
    multi-node algorithms do (tree and NVLS-tree: reduce inside the node over NVLink, across nodes over the NICs,
    one NIC per GPU) and Horovod's hierarchical all-reduce does literally: a reduce-scatter inside each domain
    over scale-up, an all-reduce of each GPU's B / g shard with its peers in the other k - 1 domains over its own
    NIC (a ring of 2 (k - 1) steps), then an all-gather inside the domain. The two in-domain phases move
    what the in-domain ring moves, so
    t = lat_up + 2 (g - 1) / g * B / bw_up + 2 (k - 1) * lat_out + 2 (k - 1) / k * B / (g * bw_out),
    which is the ring exactly at k = 1; on 1-GPU domains (no scale-up link, g = 1) only the scale-out ring is
    left. Rates.scaleup and Rates.scaleout are per-GPU, one-direction rates.
    """
    r, d = Rates.of(p), p.cluster.scaleup_domain_gpus
    tp = np.asarray(tp)
    nbytes = np.asarray(n, dtype=float) * p.model.hidden_size * ACT_BYTES
    g = np.minimum(tp, d)
    k = tp / g
    inside = np.where(g > 1, r.scaleup_latency + 2 * (g - 1) / g * nbytes / r.scaleup, 0.0)  # none on 1-GPU domains
    across = 2 * (k - 1) * r.scaleout_latency + 2 * (k - 1) / k * nbytes / (g * r.scaleout)
    return np.where(tp > 1, inside + across, 0.0)


def expected_active_experts(p: Problem, tokens, ep) -> np.ndarray:
    """Distinct experts of one EP rank hit by `tokens` tokens routing top-k uniformly [experts]."""
    md = p.model
    miss = (1 - md.experts_per_token / md.num_experts) ** np.asarray(tokens, dtype=float)
    return md.num_experts / np.asarray(ep) * (1 - miss)


def moe_gemm_work(p: Problem, adp, n) -> np.ndarray:
    """Routed-expert GEMM time of a pass times tp, for n tokens per attention-DP rank [s * GPUs].

    A stage's micro-batch holds N = adp * n tokens. An EP rank holds num_experts / ep experts,
    each split moe_tp ways, and reads only the experts its tokens activate; it computes
    N * k / ep token-expert products. Because ep * moe_tp = tp * adp, per GPU this is
    read = E * P * phi(N) / (tp * adp) bytes and math = 2 * n * k * P / tp FLOPs, where
    phi(N) = 1 - (1 - k/E)^N is the share of experts hit. The roofline of the two, times tp,
    depends on (adp, n) only; divide by tp for the time.

    Both rates are the dense GEMM rates scaled by Factors.moe_gemm_efficiency: grouped expert
    GEMMs (many small per-expert GEMMs, routing/permute kernels, load imbalance across experts)
    reach that fraction of the dense FLOP/s when compute-bound (prefill) and of the dense weight
    read bandwidth when bandwidth-bound (decode).
    """
    md = p.model
    if not md.is_moe:
        return np.zeros(np.broadcast(adp, n).shape)
    r, wb = Rates.of(p), p.experts.bytes_per_value
    adp, n = np.asarray(adp), np.asarray(n, dtype=float)
    active = expected_active_experts(p, adp * n, 1)
    read = active * md.expert_params * wb / adp
    flops = 2 * n * md.experts_per_token * md.expert_params
    return md.num_moe_layers * np.maximum(read / r.moe_hbm, flops / r.moe_gemm)


def moe_exchange_time(p: Problem, adp, ep, stage_crosses_domain, n) -> np.ndarray:
    """Token dispatch and combine of all MoE layers of a pass, n tokens per attention-DP rank [s].

    The stage holds N = adp * n tokens; every GPU of an attention-DP rank already has its rank's
    n tokens (attention outputs are all-reduced over tp). A GPU holds shards of num_experts / ep
    experts, so it needs each remote token that routes to at least one of them: a share
    1 - (1 - 1/ep)^k of the tokens, of which (1 - 1/adp) are remote. That many hidden states
    (BF16) arrive for dispatch and the same leave as partial outputs for combine, over scale-out
    bandwidth when the stage spans domains. ep = 1 (experts split moe_tp = tp * adp ways) is the
    all-gather / reduce-scatter case; adp = 1 needs no exchange beyond the TP all-reduce.
    """
    md = p.model
    adp, ep, n = np.asarray(adp), np.asarray(ep), np.asarray(n, dtype=float)
    if not md.is_moe:
        return np.zeros(np.broadcast(adp, ep, n).shape)
    r = Rates.of(p)
    cross = np.asarray(stage_crosses_domain, dtype=bool)
    bw = np.where(cross, r.scaleout, r.scaleup)
    lat = np.where(cross, r.scaleout_latency, r.scaleup_latency)
    hit = 1 - (1 - 1 / ep) ** md.experts_per_token
    tokens = adp * n * hit * (1 - 1 / adp)
    one_way = lat + tokens * md.hidden_size * ACT_BYTES / bw
    return np.where(adp > 1, md.num_moe_layers * 2 * one_way, 0.0)


def moe_block_terms(p: Problem, tp, adp, ep, n) -> dict[str, np.ndarray]:
    """The terms of moe_block_time [s]: the routed-expert GEMMs and the token exchange."""
    tp, adp = np.asarray(tp), np.asarray(adp)
    cross = crosses_domain(p, tp * adp)
    return {"moe_gemm": moe_gemm_work(p, adp, n) / tp, "moe_exchange": moe_exchange_time(p, adp, ep, cross, n)}


def moe_block_time(p: Problem, tp, adp, ep, n) -> np.ndarray:
    """All routed-expert layers of a pass for n tokens per attention-DP rank [s]."""
    return _total(moe_block_terms(p, tp, adp, ep, n))


def pipeline_time(p: Problem, pp, replica_crosses_domain, n) -> np.ndarray:
    """Activation hand-offs between the pp stages of a pass, n tokens per rank [s].

    One transfer of n tokens' hidden states (BF16) per stage boundary, over scale-out bandwidth
    when the replica spans more than one scale-up domain.
    """
    r = Rates.of(p)
    pp, cross = np.asarray(pp), np.asarray(replica_crosses_domain, dtype=bool)
    nbytes = np.asarray(n, dtype=float) * p.model.hidden_size * ACT_BYTES
    hop = np.where(cross, r.scaleout_latency + nbytes / r.scaleout, r.scaleup_latency + nbytes / r.scaleup)
    return (pp - 1) * hop


def prefill_load(p: Problem, m, chunk) -> np.ndarray:
    """Share rho of the chunk budget the steady state needs: m * E * isl / (osl * chunk), E the output tokens a
    request gains per step (1 without speculative decoding, tokens_per_step); < 1 to be valid."""
    w = p.workload
    return np.asarray(m) * tokens_per_step(p) * w.prefill_tokens / (w.osl * np.asarray(chunk, dtype=float))


def carried_chunk(p: Problem, m, chunk) -> np.ndarray:
    """Prefill tokens a chunk-carrying iteration holds: the budget, or less when the prompt is shorter
    and the demand m * E * isl / osl does not fill it: min(chunk, max(isl, m * E * isl / osl)) [tokens] (isl: the
    prompt tokens a request prefills, Workload.prefill_tokens; E: tokens_per_step)."""
    w = p.workload
    demand = np.asarray(m, dtype=float) * tokens_per_step(p) * w.prefill_tokens / w.osl
    return np.minimum(np.asarray(chunk, dtype=float), np.maximum(w.prefill_tokens, demand))


def prefill_share(p: Problem, m, chunk) -> np.ndarray:
    """Fraction f of iterations that carry prefill tokens: demand m * E * isl / osl / carried chunk."""
    w = p.workload
    demand = np.asarray(m, dtype=float) * tokens_per_step(p) * w.prefill_tokens / w.osl
    return demand / carried_chunk(p, m, chunk)


def arrival_group(p: Problem, m) -> np.ndarray:
    """Prompt tokens of a rank that arrive together with a request, its own included [tokens].

    Steady traffic brings m * E * isl / osl prompt tokens per iteration (E output tokens per request and
    step, tokens_per_step): a group of isl * max(1, m * E / osl). A closed loop of fixed-length requests (a
    benchmark) can send back together all m requests of a rank that finished together, a wave of
    isl * max(1, m); how synchronised the loop stays is the burstiness b (0: requests have drifted apart and arrive as
    steady traffic; 1: every wave stays whole), so the group is steady + b * (wave - steady).
    Open traffic has no waves.
    """
    w = p.workload
    m = np.asarray(m, dtype=float)
    steady = w.prefill_tokens * np.maximum(1.0, m * tokens_per_step(p) / w.osl)
    if not w.closed_loop:
        return steady
    wave = w.prefill_tokens * np.maximum(1.0, m)
    return steady + p.burstiness * np.maximum(wave - steady, 0.0)


def ttft_passes(p: Problem, m, chunk) -> tuple[np.ndarray, np.ndarray]:
    """TTFT as (passes carrying `ttft_chunk`, further passes carrying a full `chunk`) [passes].

    A request is prefilled with the prompts that arrived with it (`arrival_group`):
    ceil(isl / chunk) passes of min(chunk, group) tokens, stretched by the M/D/1 wait for the budget
    at load rho, 1 + rho / (2 (1 - rho)) (infinite when rho >= 1: the budget cannot keep up). When
    the group exceeds what those passes carry, max(chunk, isl), the others' prompts are prefilled
    in arrival order and on average half of them go first: (group - max(chunk, isl)) / (2 chunk)
    full passes. Steady traffic that the chunk keeps up with (rho < 1) never queues so.
    """
    chunk = np.asarray(chunk, dtype=float)
    stretch = queue_stretch(prefill_load(p, m, chunk), queue_variability(p))
    isl = p.workload.prefill_tokens
    own = np.ceil(isl / chunk - 1e-9) * stretch
    backlog = np.maximum(arrival_group(p, m) - np.maximum(chunk, isl), 0) / (2 * chunk)
    return own, backlog


def request_overhead(p: Problem) -> float:
    """Fixed time a request spends before its first token outside the prefill passes: front end
    (HTTP, tokenisation), scheduler admission, first-token detokenisation and streaming
    (Factors.ttft_overhead_ms); the same for every plan of a problem [s]."""
    return p.factors.ttft_overhead_ms * 1e-3


def admission_passes(p: Problem) -> float:
    """Mean iterations (each of the mean TPOT) a request waits for its first token besides its prefill
    passes: admission into the batch and streaming (Factors.admission_iterations) [iterations]."""
    return p.factors.admission_iterations


def ttft_chunk(p: Problem, m, chunk) -> np.ndarray:
    """Prefill tokens of the passes that carry a request's own prompt [tokens]."""
    return np.minimum(np.asarray(chunk, dtype=float), arrival_group(p, m))


# --- many layouts at once ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layouts:
    """Many replica layouts as broadcastable integer arrays, with the field names of specs.Parallel, so that
    every function here that takes a Parallel evaluates them all at once [GPUs, replicas]."""

    tp: np.ndarray
    attention_dp: np.ndarray
    pp: np.ndarray
    ep: np.ndarray
    dp: np.ndarray

    @property
    def stage_gpus(self) -> np.ndarray:
        """GPUs of one pipeline stage = tp * attention_dp [GPUs]."""
        return self.tp * self.attention_dp

    @property
    def replica_gpus(self) -> np.ndarray:
        """GPUs of one replica = tp * attention_dp * pp [GPUs]."""
        return self.stage_gpus * self.pp


# --- one plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """A plan's predicted figures and its memory breakdown."""

    metrics: Metrics
    memory: Memory
    batch: Batch


def target_pass_time(p: Problem, par: Parallel | Layouts, m, c, q=1) -> np.ndarray:
    """Time of one micro-batch pass of the model through all stages: m decode requests per rank of q tokens
    each (1, or k + 1 when it verifies k draft tokens) and c prefill tokens per rank [s]."""
    n = np.asarray(m) * q + np.asarray(c)
    return (
        attention_block_time(p, par.tp, m, c, q)
        + moe_block_time(p, par.tp, par.attention_dp, par.ep, n)
        + pipeline_time(p, par.pp, crosses_domain(p, par.replica_gpus), n)
    )


TIME_TERMS: dict[str, str] = {
    "dense_gemm": "dense GEMMs (attention projections, dense FFNs)",
    "decode_attention": "decode attention (KV-cache reads)",
    "prefill_attention": "prefill chunk attention",
    "lm_head": "LM head",
    "tp_allreduce": "TP all-reduces",
    "overhead": "launch and iteration overhead",
    "host": "host time per request",
    "moe_gemm": "routed-expert GEMMs",
    "moe_exchange": "MoE token dispatch and combine",
    "pipeline": "pipeline hand-offs",
    "draft": "speculative draft passes",
    "prefill_pool": "the prefill pool's GPUs",
    "idle_gpus": "GPUs no replica uses",
}
"""The terms of pass_terms and gpu_time_terms by name, with the words a message uses."""


def pass_terms(p: Problem, par: Parallel | Layouts, m, c) -> dict[str, np.ndarray]:
    """The terms of pass_time [s] (TIME_TERMS), which sum to it up to rounding: the target pass's attention
    block, routed-expert block and pipeline hand-offs and, with speculative decoding, the pp draft passes."""
    q = 1 if p.speculation is None else draft_tokens(p) + 1
    n = np.asarray(m) * q + np.asarray(c)
    terms = {**attention_block_terms(p, par.tp, m, c, q), **moe_block_terms(p, par.tp, par.attention_dp, par.ep, n),
             "pipeline": pipeline_time(p, par.pp, crosses_domain(p, par.replica_gpus), n)}
    if p.speculation is not None:
        terms["draft"] = np.asarray(par.pp) * draft_time(p, par, m, c)
    return terms


def pass_time(p: Problem, par: Parallel | Layouts, m, c) -> np.ndarray:
    """Time of one engine iteration of a micro-batch through all stages carrying m decode requests and c prefill
    tokens per rank [s]: one pass of the model, or with speculative decoding its draft and verify step
    (spec_decode_step)."""
    if p.speculation is None:
        return target_pass_time(p, par, m, c)
    return spec_decode_step(p, par, m, c)[0]


# --- speculative decoding ------------------------------------------------------------------------------
#
# A decode step with k draft tokens: the draft proposes k tokens per request in k sequential passes of m tokens
# (an MTP module or EAGLE head: one transformer layer of the model's kind and the LM head; a draft model: its
# whole forward pass), then one pass of the target model verifies them, m * (k + 1) tokens per rank (GEMMs read
# their weights once for all of them; attention reads each request's KV cache once for its k + 1 queries). With
# a per-token acceptance a, a request gains E = (1 - a^(k + 1)) / (1 - a) tokens per step (the accepted drafts
# and the target's own next token), so TPOT = step time / E. Prefill passes also run the draft over their chunk
# (its KV cache of the prompt). The draft sits on the last pipeline stage: with pp balanced stages it makes that
# stage the bottleneck, so each micro-batch's round takes pp times the draft's time more.


def draft_tokens(p: Problem) -> int:
    """Draft tokens k per step of problem p: 0 without speculative decoding. A Speculation whose draft_tokens is
    None (searched) has no step time until the search fixes it (search.speculation_variants): SpecError."""
    s = p.speculation
    if s is None:
        return 0
    if s.draft_tokens is None:
        raise SpecError("speculative decoding with draft_tokens None is searched (1 to 4): the cost model "
                        "evaluates one draft length; give draft_tokens")
    return s.draft_tokens


def acceptance(p: Problem) -> float:
    """Per-token acceptance of problem p's drafts: the Speculation's own, else the calibration's factor of its
    method (Factors.mtp_acceptance, eagle_acceptance, draft_acceptance); 0 without speculation."""
    s = p.speculation
    if s is None:
        return 0.0
    if s.acceptance is not None:
        return s.acceptance
    return float(getattr(p.factors, f"{s.method.value}_acceptance"))


def expected_tokens(a, k) -> np.ndarray:
    """Expected output tokens a request gains per speculative step with k draft tokens and per-token acceptance
    a (0 <= a < 1): the accepted run of drafts plus the target's own token, sum_{i=0..k} a^i =
    (1 - a^(k + 1)) / (1 - a); 1 at k = 0 [tokens]."""
    a, k = np.asarray(a, dtype=float), np.asarray(k, dtype=float)
    return np.where(a > 0, (1 - a ** (k + 1)) / np.maximum(1 - a, 1e-300), 1.0)


def tokens_per_step(p: Problem) -> float:
    """E: output tokens a request gains per decode step, 1.0 without speculative decoding [tokens]."""
    if p.speculation is None:
        return 1.0
    return float(expected_tokens(acceptance(p), draft_tokens(p)))


def resolved_speculation(p: Problem) -> Speculation | None:
    """p's Speculation with its draft length and acceptance filled in (what a plan records); None without."""
    s = p.speculation
    if s is None:
        return None
    return s.model_copy(update={"draft_tokens": draft_tokens(p), "acceptance": acceptance(p)})


def one_layer(model: ModelSpec) -> ModelSpec:
    """One transformer layer of `model`'s kind (MoE when the model has routed experts) with its embedding and LM
    head: an MTP module or an EAGLE head, timed and sized by the cost functions as a 1-layer model."""
    return model.model_copy(update={"num_layers": 1, "first_dense_layers": 0, "moe_layer_step": 1,
                                    "sliding_window_layers": 0, "mtp_layers": 0, "approximations": []})


def draft_layers(p: Problem) -> int:
    """Copies of draft_problem(p)'s model the draft holds: the MTP modules of the checkpoint (mtp_layers; a
    draft length beyond them reuses them in turn, as TensorRT-LLM and SGLang do), one EAGLE head, or the draft
    model once [models]."""
    s = p.speculation
    return p.model.mtp_layers if s is not None and s.method == SpecMethod.mtp else 1


def draft_problem(p: Problem) -> Problem:
    """The problem of one draft pass: p with the draft's model (one_layer of the target for mtp and eagle, the
    catalog's draft model for draft), no speculation, and the target's efficiency factors and rates (the same
    engine runs it on the same GPUs). Cached on p. SpecError for a draft model of another vocabulary."""
    cached = p.__dict__.get("_draft")
    if cached is not None:
        return cached
    s = p.speculation
    if s is None:
        raise SpecError("no speculative decoding: no draft")
    if s.method == SpecMethod.draft:
        from planner.catalog import load_model

        model = load_model(s.draft_model)
        if model.vocab_size != p.model.vocab_size:
            raise SpecError(f"draft model {model.name} has a vocabulary of {model.vocab_size:,} tokens, "
                            f"{p.model.name} {p.model.vocab_size:,}: a draft proposes tokens of the target's "
                            "vocabulary")
    else:
        model = one_layer(p.model)
    d = p.model_copy(update={"model": model, "speculation": None})
    d.__dict__["factors"] = p.factors
    d.__dict__["_rates"] = Rates.of(p)
    p.__dict__["_draft"] = d
    return d


def draft_pass_time(p: Problem, par: Parallel | Layouts, m) -> np.ndarray:
    """One draft pass proposing one token for each of m decode requests per rank: the draft's layers (split as
    the target's over tp, experts over tp * attention_dp) and LM head, no pipeline hand-off, no iteration or
    per-request host overhead; 0 where m = 0 [s]."""
    d, m = draft_problem(p), np.asarray(m)
    t = attention_block_time(d, par.tp, m, 0, host=False) + moe_block_time(d, par.tp, par.attention_dp, par.ep, m)
    return np.where(m > 0, t, 0.0)


def draft_prefill_time(p: Problem, par: Parallel | Layouts, c) -> np.ndarray:
    """The draft's pass over c prefill tokens per rank (its KV cache of the prompt and the first draft token);
    0 where c = 0 [s]."""
    d, c = draft_problem(p), np.asarray(c)
    t = attention_block_time(d, par.tp, 0, c, host=False) + moe_block_time(d, par.tp, par.attention_dp, par.ep, c)
    return np.where(c > 0, t, 0.0)


def spec_decode_step(p: Problem, par: Parallel | Layouts, m, c) -> tuple[np.ndarray, float]:
    """(step time [s], tokens per step E [tokens]) of one engine iteration of a micro-batch: m decode requests
    and c prefill tokens per attention-DP rank, through all stages.

    Without speculative decoding: one pass of the model (target_pass_time) and E = 1. With k draft tokens: the
    verify pass of the target over m * (k + 1) decode tokens and the c prefill tokens, plus pp * (k draft
    passes of m tokens + the draft's pass over the c prefill tokens): the draft sits on the last of pp balanced
    stages, which it makes the bottleneck of the pipeline's round. E = expected_tokens(acceptance, k). The
    iteration time of a discrete-event simulation of the engine; broadcastable arrays (par may be Layouts).
    """
    if p.speculation is None:
        return target_pass_time(p, par, m, c), 1.0
    step = target_pass_time(p, par, m, c, draft_tokens(p) + 1) + np.asarray(par.pp) * draft_time(p, par, m, c)
    return step, tokens_per_step(p)


def draft_time(p: Problem, par: Parallel | Layouts, m, c) -> np.ndarray:
    """The draft's part of one speculative step on its stage: k draft passes of m tokens per rank and its pass
    over the c prefill tokens [s]."""
    return draft_tokens(p) * draft_pass_time(p, par, m) + draft_prefill_time(p, par, c)


MTP_NOT_COUNTED = "multi-token-prediction (MTP)"
"""Words of the model note saying its MTP modules are left out (models/*.yaml, planner.hfconfig): a plan that
speculates with them counts them, and drops that note."""


def approximation_notes(p: Problem) -> list[str]:
    """What a plan of problem p approximates: the model's notes (without the one on its MTP modules when it
    speculates with them) and those of its speculative decoding."""
    s = p.speculation
    notes = [n for n in p.model.approximations
             if not (s is not None and s.method == SpecMethod.mtp and MTP_NOT_COUNTED in n)]
    if s is None:
        return notes
    notes.append("speculative decoding: one acceptance for every draft position; drafts verified as one chain "
                 "(no token tree)")
    if s.method == SpecMethod.mtp:
        notes.append("MTP module timed and sized as one layer of the model; its input projection (2 x hidden x "
                     "hidden) and norms not counted")
    elif s.method == SpecMethod.eagle:
        notes.append("EAGLE head timed and sized as one layer of the model's own kind sharing its embedding and "
                     "LM head")
    return notes


def draft_weight_bytes_per_gpu(p: Problem, tp, adp) -> np.ndarray:
    """The draft's weights on one GPU of the last stage (0 without speculation) [bytes]: draft_layers copies of
    its model split as the target's layers (over tp, experts over tp * attention_dp); an MTP module or EAGLE
    head shares the target's embedding and LM head, a draft model holds its own."""
    if p.speculation is None:
        return np.zeros(np.shape(tp))
    d = draft_problem(p)
    own = p.speculation.method == SpecMethod.draft
    return draft_layers(p) * weight_bytes_per_gpu(d, tp, adp, 1, embeddings=own)


def draft_kv_bytes_per_request(p: Problem, tp, context: float) -> np.ndarray:
    """The draft's KV cache of one request at `context` tokens on one GPU of its rank (0 without speculation):
    its draft_layers copies at the target's KV format [bytes]."""
    if p.speculation is None:
        return np.zeros(np.shape(tp))
    d = draft_problem(p)
    return draft_layers(p) * attended_layer_tokens(d, context) * kv_bytes_per_token_layer(d, tp)


def memory_breakdown(p: Problem, par: Parallel | Layouts, m, chunk) -> dict[str, np.ndarray]:
    """Per-GPU memory terms of the busiest stage [bytes]. With speculative decoding, `draft_bytes`: the draft's
    weights and its KV cache of the m * pp requests of the last stage at full context (isl + osl), and
    activations for m * (k + 1) decode tokens."""
    if p.speculation is None:
        terms = {
            "weights_bytes": weight_bytes_per_gpu(p, par.tp, par.attention_dp, par.pp),
            "kv_cache_bytes": kv_cache_bytes_per_gpu(p, par.tp, m),
            "activation_bytes": activation_bytes_per_gpu(p, par.tp, m, chunk),
            "comm_buffer_bytes": comm_buffer_bytes(p, par.replica_gpus),
            "reserved_bytes": np.asarray(reserved_bytes(p)),
        }
        terms["per_gpu_bytes"] = sum(terms.values())
        return terms
    w = p.workload
    draft = (draft_weight_bytes_per_gpu(p, par.tp, par.attention_dp)
             + np.asarray(m) * np.asarray(par.pp) * draft_kv_bytes_per_request(p, par.tp, w.isl + w.osl))
    terms = {
        "weights_bytes": weight_bytes_per_gpu(p, par.tp, par.attention_dp, par.pp),
        "kv_cache_bytes": kv_cache_bytes_per_gpu(p, par.tp, m),
        "activation_bytes": activation_bytes_per_gpu(p, par.tp, m, chunk, draft_tokens(p) + 1),
        "comm_buffer_bytes": comm_buffer_bytes(p, par.replica_gpus),
        "reserved_bytes": np.asarray(reserved_bytes(p)),
        "draft_bytes": draft,
    }
    terms["per_gpu_bytes"] = sum(terms.values())
    return terms


def wave_terms(p: Problem, par: Parallel | Layouts, m, chunk) -> dict[str, np.ndarray]:
    """A closed loop's two kinds of arrival (planner.percentiles): a request among steady traffic, whose group
    is isl * max(1, m / osl), or one in a wave of its rank's m requests, group isl * max(1, m): each one's
    first-pass time (the pass carrying min(chunk, group) tokens) and the prefill of the others beyond the
    request's own passes, max(group - max(chunk, isl), 0) / chunk full passes (the steady one halved: its
    mean) [s]."""
    w = p.workload
    m, chunk = np.asarray(m, dtype=float), np.asarray(chunk, dtype=float)
    steady = w.prefill_tokens * np.maximum(1.0, m / w.osl)
    wave = w.prefill_tokens * np.maximum(1.0, m)
    own = np.maximum(chunk, w.prefill_tokens)
    full = pass_time(p, par, m, chunk)
    return {
        "steady_first_pass_s": pass_time(p, par, m, np.minimum(chunk, steady)),
        "wave_first_pass_s": pass_time(p, par, m, np.minimum(chunk, wave)),
        "steady_backlog_s": np.maximum(steady - own, 0) / (2 * chunk) * full,
        "wave_span_s": np.maximum(wave - own, 0) / chunk * full,
    }


def metrics_grid(p: Problem, par: Parallel | Layouts, m, chunk, tails: bool = False) -> dict[str, np.ndarray]:
    """TPOT [s], TTFT [s], throughput [tokens/s/GPU over p.gpus], memory [bytes], f, rho, concurrency
    [requests per replica], for one layout or many (Layouts) over broadcastable m and chunk. With speculative
    decoding an iteration is a draft-and-verify step (pass_time) yielding E tokens per request
    (tokens_per_step): TPOT = mean step / E, and the prefill demand grows E-fold. With `tails` (or a percentile
    SLA) in a closed loop, also the wave terms its TTFT percentiles read (wave_terms)."""
    m, chunk = np.asarray(m), np.asarray(chunk)
    f = np.minimum(prefill_share(p, m, chunk), 1.0)
    loads = (np.zeros(()), carried_chunk(p, m, chunk), ttft_chunk(p, m, chunk), chunk)
    if np.broadcast(m, chunk, par.tp).size <= STACK_LIMIT:  # one call for the four loads: 4x fewer numpy calls
        decode, carried, first, full = pass_time(p, par, m, np.stack(np.broadcast_arrays(*loads)))
    else:
        decode, carried, first, full = (pass_time(p, par, m, c) for c in loads)
    step = (1 - f) * decode + f * carried  # the mean iteration over decode-only and chunk-carrying ones
    tpot = step / tokens_per_step(p)  # E tokens per request per step (1 without speculative decoding)
    own, backlog = ttft_passes(p, m, chunk)
    ttft = own * first + backlog * full + admission_passes(p) * step + request_overhead(p)
    concurrency = m * par.attention_dp * par.pp
    thr = par.dp * concurrency / tpot / p.gpus
    out = {"tpot_s": tpot, "ttft_s": ttft, "tokens_per_s_per_gpu": thr, "concurrency": concurrency,
           "prefill_share": prefill_share(p, m, chunk), "prefill_load": prefill_load(p, m, chunk),
           # the terms of TTFT and TPOT, for their percentiles (planner.percentiles)
           "decode_pass_s": decode, "carried_pass_s": carried, "ttft_first_pass_s": first,
           "ttft_passes": own, "backlog_s": backlog * full, "chunk_tokens": chunk}
    if (tails or (p.sla is not None and p.sla.ttft_percentile is not None)) and p.workload.closed_loop:
        out.update(wave_terms(p, par, m, chunk))
    out.update(memory_breakdown(p, par, m, chunk))
    return out


def gpu_time_terms(p: Problem, par: Parallel | Layouts, m, chunk) -> dict[str, np.ndarray]:
    """Where the GPU time of one output token goes, by term [GPU s per output token]: each term of the pass
    (pass_terms) in metrics_grid's mean step (decode-only passes and chunk-carrying ones, weighted by the
    prefill share f) times the replica's GPUs over the tokens its step yields, and `idle_gpus`, the GPUs given
    that no replica uses. The terms sum to 1 / tokens_per_s_per_gpu up to rounding."""
    f = np.minimum(prefill_share(p, m, chunk), 1.0)
    decode, carried = pass_terms(p, par, m, 0), pass_terms(p, par, m, carried_chunk(p, m, chunk))
    per_step = par.replica_gpus / (np.asarray(m) * par.attention_dp * par.pp * tokens_per_step(p))
    terms = {k: ((1 - f) * decode[k] + f * carried[k]) * per_step for k in decode}
    used = par.dp * par.replica_gpus
    terms["idle_gpus"] = (p.gpus - used) / used * _total(terms)
    return terms


def disagg_gpu_time_terms(pre: Problem, pre_par: Parallel, chunk: int, workers_p: int, dec: Problem,
                          dec_par: Parallel, m: int, workers_d: int, gpus: int) -> dict[str, float]:
    """gpu_time_terms of a disaggregated deployment (pools as for disagg_metrics, `gpus` given to both) [GPU s
    per output token]: the decode pool's pass terms (pass_terms, no chunk) over the tokens its pass yields,
    `prefill_pool` (the prefill workers' GPUs over the output rate) and `idle_gpus`."""
    rate = decode_rate(dec, dec_par, m)
    tokens = workers_d * rate
    per_step = dec_par.replica_gpus / (m * dec_par.attention_dp * dec_par.pp * tokens_per_step(dec))
    terms = {k: float(v * per_step) for k, v in pass_terms(dec, dec_par, m, 0).items()}
    terms["prefill_pool"] = float(workers_p * pre_par.replica_gpus / tokens)
    used = workers_p * pre_par.replica_gpus + workers_d * dec_par.replica_gpus
    terms["idle_gpus"] = float((gpus - used) / tokens)
    return terms


def evaluate(p: Problem, par: Parallel, m: int, chunk: int) -> Evaluation:
    """Predicted metrics and memory of one plan (m decode requests per rank per micro-batch)."""
    g = {k: float(v) for k, v in metrics_grid(p, par, m, chunk).items()}
    tpot_ms = g["tpot_s"] * 1e3
    concurrency = int(g["concurrency"])
    metrics = Metrics(
        tokens_per_s_per_user=1000 / tpot_ms,
        tokens_per_s_per_gpu=g["tokens_per_s_per_gpu"],
        tpot_ms=tpot_ms,
        ttft_ms=g["ttft_s"] * 1e3,
        requests_per_s=g["tokens_per_s_per_gpu"] * p.gpus / p.workload.osl,
        prefill_share=g["prefill_share"],
        prefill_load=g["prefill_load"],
        tokens_per_step=tokens_per_step(p),
    )
    memory = Memory(
        per_gpu_bytes=g["per_gpu_bytes"],
        capacity_bytes=p.cluster.capacity_bytes,
        usable_bytes=usable_bytes(p),
        weights_bytes=g["weights_bytes"],
        kv_cache_bytes=g["kv_cache_bytes"],
        activation_bytes=g["activation_bytes"],
        comm_buffer_bytes=g["comm_buffer_bytes"],
        reserved_bytes=g["reserved_bytes"],
        draft_bytes=g.get("draft_bytes", 0.0),
    )
    return Evaluation(metrics, memory, Batch(concurrency=concurrency, chunk_tokens=chunk, micro_batch=m))


# --- disaggregated serving: a prefill pool and a decode pool -------------------------------------
#
# A disaggregated deployment runs x prefill workers and y decode workers, each worker a replica layout of its
# own (specs.Parallel with dp = 1) obeying every layout rule of an aggregated replica. Prefill workers only
# prefill: a pass carries `chunk` prompt tokens per attention-DP rank and no decode token. Decode workers only
# decode: every pass carries m decode requests per rank and micro-batch and no chunk. Each request's KV cache
# moves once from its prefill worker to its decode worker. In the closed loop a decode pool of y workers
# finishes y * decode_rate / osl requests per second, and as many new ones must be prefilled: the prefill
# pool's load rho = that demand / (x * prefill_capacity) must stay within MAX_PREFILL_LOAD, and its queueing
# stretches TTFT.


def prefill_pass_time(p: Problem, par: Parallel | Layouts, chunk) -> np.ndarray:
    """One pass of a prefill worker carrying `chunk` prompt tokens per attention-DP rank, no decode [s]."""
    return pass_time(p, par, 0, chunk)


def prefill_capacity(p: Problem, par: Parallel | Layouts, chunk, t_pass=None) -> np.ndarray:
    """Prompts one prefill worker completes per second at full load: its adp ranks each carry `chunk` prompt
    tokens per pass and its pp stages hold pp passes in flight, so adp * pp * chunk / (isl * pass) [requests/s]."""
    t = prefill_pass_time(p, par, chunk) if t_pass is None else t_pass
    return par.attention_dp * par.pp * np.asarray(chunk, dtype=float) / (p.workload.prefill_tokens * t)


def prefill_service_time(p: Problem, chunk, t_pass) -> np.ndarray:
    """Time one prompt spends in passes: ceil(isl / chunk) passes carrying `chunk` tokens each, as the
    aggregated model counts them (ttft_passes) [s]."""
    return np.ceil(p.workload.prefill_tokens / np.asarray(chunk, dtype=float) - 1e-9) * t_pass


def prefill_held_prompts(p: Problem, par: Parallel | Layouts, chunk) -> np.ndarray:
    """Prompts whose KV cache one GPU of a prefill worker holds, over all layers: pp passes in flight plus one
    pass of finished prompts waiting for their transfer, each pass max(1, chunk / isl) prompts per rank,
    on a GPU holding num_layers / pp layers: (pp + 1) * max(1, chunk / isl) / pp [prompts]."""
    per_pass = np.maximum(1.0, np.asarray(chunk, dtype=float) / p.workload.prefill_tokens)
    pp = np.asarray(par.pp)
    return (pp + 1) * per_pass / pp


def prefill_memory_breakdown(p: Problem, par: Parallel | Layouts, chunk) -> dict[str, np.ndarray]:
    """Per-GPU memory of a prefill worker's busiest stage [bytes]: weights, the KV cache of the prompts it holds
    (prefill_held_prompts, at isl tokens), activations of one pass of `chunk` tokens, buffers, reserved; with
    speculative decoding the draft's weights and its KV cache of those prompts (`draft_bytes`)."""
    kv = prefill_held_prompts(p, par, chunk) * attended_layer_tokens(p, p.workload.isl) * kv_bytes_per_token_layer(
        p, par.tp)
    terms = {
        "weights_bytes": weight_bytes_per_gpu(p, par.tp, par.attention_dp, par.pp),
        "kv_cache_bytes": kv,
        "activation_bytes": activation_bytes_per_gpu(p, par.tp, 0, chunk),
        "comm_buffer_bytes": comm_buffer_bytes(p, par.replica_gpus),
        "reserved_bytes": np.asarray(reserved_bytes(p)),
    }
    if p.speculation is not None:
        held = prefill_held_prompts(p, par, chunk) * np.asarray(par.pp)  # the last stage holds every layer's
        terms["draft_bytes"] = (draft_weight_bytes_per_gpu(p, par.tp, par.attention_dp)
                                + held * draft_kv_bytes_per_request(p, par.tp, p.workload.isl))
    terms["per_gpu_bytes"] = sum(terms.values())
    return terms


def decode_pass_time(p: Problem, par: Parallel | Layouts, m) -> np.ndarray:
    """A decode worker's time per output token (TPOT) [s]: one pass of m decode requests per attention-DP rank
    per micro-batch, no chunk; with speculative decoding its step (spec_decode_step) over the E tokens it
    yields per request."""
    step, tokens = spec_decode_step(p, par, m, 0)
    return step / tokens


def decode_rate(p: Problem, par: Parallel | Layouts, m, tpot=None) -> np.ndarray:
    """Output tokens one decode worker produces per second: m * adp * pp requests, each one token per TPOT (E per
    speculative step) [tokens/s]."""
    t = decode_pass_time(p, par, m) if tpot is None else tpot
    return np.asarray(m) * par.attention_dp * par.pp / t


def decode_memory_breakdown(p: Problem, par: Parallel | Layouts, m) -> dict[str, np.ndarray]:
    """Per-GPU memory of a decode worker's busiest stage: as an aggregated replica with no chunk [bytes]."""
    return memory_breakdown(p, par, m, 0)


def kv_request_bytes(p: Problem) -> float:
    """KV cache of one request's prompt, every layer, one copy (heads unsplit; the MLA latent once), with the
    draft's when it speculates [bytes]."""
    own = attended_layer_tokens(p, p.workload.isl) * kv_bytes_per_token_layer(p, 1)
    if p.speculation is None:
        return float(own)
    return float(own + draft_kv_bytes_per_request(p, 1, p.workload.isl))


def kv_send_bytes_per_gpu(p: Problem, tp, pp) -> np.ndarray:
    """Bytes of one request's KV cache each GPU of a prefill worker sends: its share of one copy, split over the
    tp * pp GPUs of the attention-DP rank that prefilled it [bytes]."""
    return kv_request_bytes(p) / (np.asarray(tp) * np.asarray(pp))


def kv_receive_bytes_per_gpu(p: Problem, tp, pp) -> np.ndarray:
    """Bytes of one request's KV cache each GPU of a decode worker's rank receives: what it stores of the
    request, its layers (num_layers / pp) and heads (the MLA latent whole, GQA heads split over tp), and on the
    last stage the draft's when it speculates [bytes]."""
    own = attended_layer_tokens(p, p.workload.isl) * kv_bytes_per_token_layer(p, tp) / np.asarray(pp)
    if p.speculation is None:
        return own
    return own + draft_kv_bytes_per_request(p, tp, p.workload.isl)


def kv_link(p: Problem, same_domain) -> tuple[np.ndarray, np.ndarray]:
    """(bandwidth [bytes/s], latency [s]) one GPU of problem p's cluster moves KV cache over: the scale-up
    fabric when both pools sit in one scale-up domain, else its scale-out NIC."""
    r = Rates.of(p)
    same = np.asarray(same_domain, dtype=bool)
    return np.where(same, r.scaleup, r.scaleout), np.where(same, r.scaleup_latency, r.scaleout_latency)


def kv_send_time(p: Problem, tp, pp, same_domain) -> np.ndarray:
    """Time a prefill worker's GPUs take to send one request's KV cache, latency included [s]."""
    bw, lat = kv_link(p, same_domain)
    return lat + kv_send_bytes_per_gpu(p, tp, pp) / bw


def kv_receive_time(p: Problem, tp, pp, same_domain) -> np.ndarray:
    """Time a decode worker's GPUs take to receive one request's KV cache (their link only) [s]."""
    bw, _ = kv_link(p, same_domain)
    return kv_receive_bytes_per_gpu(p, tp, pp) / bw


def kv_transfer_time(send_s, receive_s) -> np.ndarray:
    """One request's KV transfer: both sides move their bytes at once, so the slower side sets it:
    max(send, receive), the send side carrying the link latency [s]."""
    return np.maximum(np.asarray(send_s), np.asarray(receive_s))


def service_scv(p: Problem) -> float:
    """Squared coefficient of variation of a prompt's prefill time: its length's, isl_cv^2 (prefill time grows
    about in proportion to the prompt); 0 for fixed lengths [1]."""
    return float(p.workload.isl_cv) ** 2


def arrival_scv(p: Problem) -> float:
    """Squared coefficient of variation of the gaps between arrivals: 1 for Poisson traffic, 1 + 4 b for open
    traffic of burstiness b (planner.traffic.poisson_arrivals' gamma gaps); 1 in a closed loop, whose
    burstiness is its waves instead (arrival_group) [1]."""
    w = p.workload
    return 1.0 if w.closed_loop else 1.0 + 4.0 * float(w.burstiness or 0.0)


def queue_variability(p: Problem) -> float:
    """ca^2 + cs^2 of the prefill queue (arrival_scv + service_scv): 1 for Poisson arrivals of fixed-length
    prompts (M/D/1), 2 for exponential service (M/M/1) [1]."""
    return arrival_scv(p) + service_scv(p)


def queue_stretch(rho, variability: float = 1.0) -> np.ndarray:
    """Mean prefill time stretched by the queueing wait at load rho (Kingman's G/G/1 approximation, exact for
    M/G/1 as Pollaczek-Khinchine): 1 + rho v / (2 (1 - rho)), v = ca^2 + cs^2 (queue_variability; 1: M/D/1,
    fixed lengths and Poisson arrivals); infinite at rho >= 1 (ttft_passes, disagg_ttft) [x]."""
    rho = np.asarray(rho, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rho < 1, 1 + rho * variability / (2 * np.maximum(1 - rho, 1e-300)), np.inf)


def disagg_overhead(p: Problem) -> float:
    """Fixed time of a disaggregated request before its first token outside its prefill passes and KV bytes: the
    request overhead and the hand-off between the pools (Factors.disagg_handoff_ms) [s]."""
    return request_overhead(p) + p.factors.disagg_handoff_ms * 1e-3


def disagg_ttft(p: Problem, service_s, rho, transfer_s) -> np.ndarray:
    """TTFT of a disaggregated deployment: the fixed overhead (disagg_overhead), the prefill passes stretched by
    the queueing wait at the prefill pool's load rho (each worker an M/D/1 queue of its share of the demand),
    and the KV transfer to the decode worker, which streams the first token [s]."""
    stretch = queue_stretch(rho, queue_variability(p))
    return disagg_overhead(p) + np.asarray(service_s) * stretch + np.asarray(transfer_s)


def disagg_checked_ttft(p: Problem, service_s, rho, transfer_s) -> np.ndarray:
    """The disaggregated TTFT a limit is checked at: the mean (disagg_ttft) or, with SLA.ttft_percentile, that
    percentile (planner.percentiles.disagg_ttft_quantile) [s]."""
    if p.sla is None or p.sla.ttft_percentile is None:
        return disagg_ttft(p, service_s, rho, transfer_s)
    from planner.percentiles import disagg_ttft_quantile

    return disagg_ttft_quantile(p, service_s, rho, transfer_s, p.sla.ttft_percentile / 100)


MAX_PREFILL_LOAD = 0.8
"""Highest load rho a prefill pool is planned at (the rule rate_matching): at 0.8 the M/D/1 wait is twice the
prefill time; beyond it TTFT grows without bound (x5.5 the prefill time at 0.9, x50 at 0.99), and a pool
sized closer to its capacity leaves no headroom for a burst [share]."""


def max_prefill_load(p: Problem, service_s, transfer_s, limit_s: float | None, cap: float = MAX_PREFILL_LOAD
                     ) -> np.ndarray:
    """The highest prefill load rho the rules allow: `cap` (MAX_PREFILL_LOAD), or lower where disagg_ttft would
    pass `limit_s` (None: no limit): with B = limit - disagg_overhead - transfer, s = service and v = queue_variability,
    s (1 + rho v / (2 (1 - rho))) <= B gives rho <= 2 q / (v + 2 q), q = (B - s) / s; 0 where even an
    idle pool misses the limit (B < s). A percentile TTFT limit (SLA.ttft_percentile) is inverted by bisection
    on planner.percentiles.disagg_ttft_quantile instead [share]."""
    s = np.asarray(service_s, dtype=float)
    most = np.full(np.broadcast(s, transfer_s).shape, cap)
    if limit_s is None:
        return most
    budget = limit_s - disagg_overhead(p) - np.asarray(transfer_s, dtype=float)
    q = (budget - s) / s
    if p.sla is not None and p.sla.ttft_percentile is not None:
        from planner.percentiles import max_load_at_percentile

        return np.minimum(most, max_load_at_percentile(p, s, transfer_s, limit_s, p.sla.ttft_percentile))
    return np.minimum(most, np.where(q >= 0, 2 * q / (queue_variability(p) + 2 * np.maximum(q, 0)), 0.0))


def disagg_metrics(pre: Problem, pre_par: Parallel | Layouts, chunk, workers_p, dec: Problem,
                   dec_par: Parallel | Layouts, m, workers_d, same_domain) -> dict[str, np.ndarray]:
    """Every figure of a disaggregated deployment: `workers_p` prefill workers of layout pre_par (chunk tokens
    per pass per rank) on problem `pre`'s cluster, `workers_d` decode workers of dec_par (m requests per rank
    per micro-batch) on `dec`'s (the same problem when both pools share one cluster), the KV moving over the
    scale-up fabric where `same_domain`. Broadcastable arrays; the one float evaluation that the oracle, the
    certificate and the plan use [s, requests/s, tokens/s, bytes].
    """
    t_pre = prefill_pass_time(pre, pre_par, chunk)
    capacity = prefill_capacity(pre, pre_par, chunk, t_pre)
    service = prefill_service_time(pre, chunk, t_pre)
    tpot = decode_pass_time(dec, dec_par, m)
    rate = decode_rate(dec, dec_par, m, tpot)
    tokens = np.asarray(workers_d) * rate
    demand = tokens / dec.workload.osl
    rho = demand / (np.asarray(workers_p) * capacity)
    send = kv_send_time(pre, pre_par.tp, pre_par.pp, same_domain)
    receive = kv_receive_time(dec, dec_par.tp, dec_par.pp, same_domain)
    transfer = kv_transfer_time(send, receive)
    return {
        "prefill_pass_s": t_pre, "prefill_capacity": capacity, "prefill_service_s": service,
        "tpot_s": tpot, "decode_rate": rate, "tokens_per_s": tokens, "requests_per_s": demand, "prefill_load": rho,
        "kv_send_s": send, "kv_receive_s": receive, "kv_transfer_s": transfer,
        "ttft_s": disagg_ttft(pre, service, rho, transfer),
        "ttft_checked_s": disagg_checked_ttft(pre, service, rho, transfer),
        "prefill_gpus": np.asarray(workers_p) * pre_par.replica_gpus,
        "decode_gpus": np.asarray(workers_d) * dec_par.replica_gpus,
    }
