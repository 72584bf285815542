"""The cost model: hand-checked figures, units, and properties that hold for all inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from planner import Parallel, cost, rules
from planner.search import make_problem
from planner.space import Space
from planner.specs import GB, PRECISION_ALIASES, Calibration, Factors, Precision, Workload


def _p(model="llama-3.1-70b", cluster="h100-sxm", precision="fp8", kv="fp8", isl=4000, osl=1000, gpus=8):
    # the unfitted starting factors: these tests check the physics, not the fitted numbers
    return make_problem(model=model, cluster=cluster, gpus=gpus, isl=isl, osl=osl, precision=precision,
                        kv_precision=kv, calibration=Calibration())


def test_gqa_kv_bytes_per_token_and_replication():
    p = _p()  # llama-3.1-70b: 80 layers, 8 KV heads of 128, FP8 KV
    per_token_all_layers = 80 * 2 * 8 * 128 * 1
    assert cost.kv_bytes_per_token_layer(p, 1) * 80 == per_token_all_layers
    assert cost.kv_bytes_per_token_layer(p, 8) * 80 == per_token_all_layers / 8
    # beyond the KV head count heads replicate: tp=16 keeps one head per GPU, like tp=8
    assert cost.kv_bytes_per_token_layer(p, 16) == cost.kv_bytes_per_token_layer(p, 8)
    # full context, one request, tp=1
    assert cost.kv_cache_bytes_per_gpu(p, 1, 1) == pytest.approx(per_token_all_layers * 5000)


def test_kv_bytes_follow_kv_precision_not_weights():
    fp8 = _p(kv="fp8", precision="bf16")
    bf16 = _p(kv="bf16", precision="fp8")
    assert cost.kv_bytes_per_token_layer(bf16, 1) == 2 * cost.kv_bytes_per_token_layer(fp8, 1)


def test_mla_latent_kv_is_576_values_and_not_split_by_tp():
    p = _p(model="deepseek-r1", cluster="b200", precision="fp4")
    assert cost.kv_bytes_per_token_layer(p, 1) == 576
    assert cost.kv_bytes_per_token_layer(p, 8) == 576


def test_sliding_window_layers_cap_the_kv_cache():
    p = _p(model="gpt-oss-120b", cluster="b200", precision="fp4", isl=32000, osl=1000)
    md = p.model
    full = md.num_layers - md.sliding_window_layers
    expected = (full * 33000 + md.sliding_window_layers * md.sliding_window) * cost.kv_bytes_per_token_layer(p, 1)
    assert cost.kv_cache_bytes_per_gpu(p, 1, 1) == pytest.approx(expected)


def test_weights_on_one_gpu_are_the_whole_model():
    p = _p(precision="bf16")
    md = p.model
    body = md.total_params - md.embedding_params
    expected = body * 2 + md.embedding_params * 2
    assert cost.weight_bytes_per_gpu(p, 1, 1, 1) == pytest.approx(expected, rel=1e-9)


def test_weights_split_over_tp_pp_and_experts_over_the_stage():
    p = _p(model="deepseek-r1", cluster="b200", precision="fp4")
    one = cost.weight_bytes_per_gpu(p, 1, 1, 1)
    # 8 GPUs of attention-DP + EP: experts split 8 ways, attention replicated per rank
    dep8 = cost.weight_bytes_per_gpu(p, 1, 8, 1)
    assert one / 8 < dep8 < one / 4
    # tp=8 splits everything 8 ways
    assert cost.weight_bytes_per_gpu(p, 8, 1, 1) == pytest.approx(one / 8, rel=1e-9)


def test_decode_step_of_a_dense_model_by_hand():
    """llama-3.1-8b, BF16, one request on one H100: weight reads dominate; check the sum by hand."""
    p = _p(model="llama-3.1-8b", precision="bf16", kv="bf16", isl=1000, osl=1)
    md, k = p.model, p.factors
    hbm = 3.35e12 * k.hbm_efficiency
    dense = (md.total_params - md.embedding_params) * 2 / hbm
    lm_head = md.vocab_size * md.hidden_size * 2 / hbm
    kv = md.num_layers * 2 * 8 * 128 * 2 * 1000 / hbm  # context isl + osl/2 = 1000.5
    overhead = md.num_layers * k.layer_overhead_us * 1e-6 + k.iteration_overhead_ms * 1e-3
    overhead += 1 * k.request_step_overhead_us * 1e-6  # one decoding request
    got = cost.attention_block_time(p, 1, 1, 0)
    assert float(got) == pytest.approx(dense + lm_head + kv + overhead, rel=2e-3)


def test_tokens_per_user_is_inverse_tpot_and_throughput_counts_all_gpus():
    p = _p(gpus=16)
    ev = cost.evaluate(p, Parallel(tp=4, dp=2), 32, 512)
    assert ev.metrics.tokens_per_s_per_user == pytest.approx(1000 / ev.metrics.tpot_ms)
    # 2 replicas of 32 requests on 16 GPUs given (8 used): idle GPUs count
    assert ev.metrics.tokens_per_s_per_gpu == pytest.approx(2 * 32 / (ev.metrics.tpot_ms / 1000) / 16)


def test_expert_exchange_crosses_domain_is_slower():
    p = _p(model="deepseek-r1", cluster="h100-sxm", precision="fp8", gpus=16)
    inside = cost.moe_exchange_time(p, 8, 8, False, 64)
    outside = cost.moe_exchange_time(p, 8, 8, True, 64)
    assert outside > 5 * inside
    assert cost.moe_exchange_time(p, 1, 8, False, 64) == 0  # pure TP attention: tokens already local


def test_tp_allreduce_is_the_ring_inside_a_domain_and_hierarchical_across(monkeypatch):
    """Inside one 8-GPU domain the all-reduce is the ring over NVLink; TP16 over two domains adds a scale-out
    all-reduce of each GPU's 1/8 shard: slower, and the formula by hand."""
    p = _p(model="deepseek-r1", cluster="h200-sxm", precision="fp8", gpus=16)
    r, n = cost.Rates.of(p), 64
    nbytes = n * p.model.hidden_size * 2  # 7168 BF16 values per token
    for tp in (2, 4, 8):
        ring = r.scaleup_latency + 2 * (tp - 1) / tp * nbytes / r.scaleup
        assert cost.tp_allreduce_time(p, tp, n) == pytest.approx(ring, rel=1e-12)
    assert cost.tp_allreduce_time(p, 1, n) == 0
    g, k = 8, 2
    by_hand = (r.scaleup_latency + 2 * (g - 1) / g * nbytes / r.scaleup  # reduce-scatter + all-gather on NVLink
               + 2 * (k - 1) * r.scaleout_latency + 2 * (k - 1) / k * nbytes / g / r.scaleout)  # shards over NICs
    assert cost.tp_allreduce_time(p, 16, n) == pytest.approx(by_hand, rel=1e-12)
    assert cost.tp_allreduce_time(p, 16, n) > 2 * cost.tp_allreduce_time(p, 8, n)
    assert cost.tp_allreduce_time(p, 64, n) > cost.tp_allreduce_time(p, 16, n)  # 8 domains: more steps
    # a pass carries two of them per layer (after attention, after the FFN)
    with_ar = cost.attention_block_time(p, 16, n, 0)
    monkeypatch.setattr(cost, "tp_allreduce_time", lambda *a: 0.0)
    assert with_ar - cost.attention_block_time(p, 16, n, 0) == pytest.approx(2 * 61 * by_hand, rel=1e-9)


def test_allreduce_on_one_gpu_domains_is_the_scale_out_ring():
    """A cluster without NVLink (L40S: domains of 1 GPU) all-reduces over scale-out only."""
    p = _p(model="llama-3.1-70b", cluster="l40s", precision="fp8", gpus=8)
    r, n, tp = cost.Rates.of(p), 32, 4
    nbytes = n * p.model.hidden_size * 2
    ring = 2 * (tp - 1) * r.scaleout_latency + 2 * (tp - 1) / tp * nbytes / r.scaleout
    assert cost.tp_allreduce_time(p, tp, n) == pytest.approx(ring, rel=1e-12)


def test_groups_spanning_domains_are_charged_scale_out_consistently():
    """A stage or replica spans domains whenever its tp group does: MoE exchange and pipeline hand-offs then
    run over scale-out too, and the plan names each group that crosses."""
    p = _p(model="qwen3-235b-a22b", cluster="h200-sxm", precision="fp8", gpus=64)
    par = Parallel(tp=16, attention_dp=2, ep=32, pp=2)
    assert not rules.layout_violations(p, par)
    assert cost.crosses_domain(p, par.tp) and cost.crosses_domain(p, par.stage_gpus)
    assert cost.crosses_domain(p, par.replica_gpus)
    spans = {s.group: s.domains for s in cost.domain_spans(p, par)}
    assert spans == {"tp": 2, "moe_stage": 4, "pipeline": 8}
    exchange = cost.moe_block_time(p, 16, 2, 32, 64) - cost.moe_gemm_work(p, 2, 64) / 16
    assert exchange == pytest.approx(cost.moe_exchange_time(p, 2, 32, True, 64))
    assert cost.domain_spans(p, Parallel(tp=8, ep=8)) == []  # one node: nothing crosses
    # pure TP of a MoE model: the stage is the tp group, its combine is the TP all-reduce (no exchange)
    assert [s.group for s in cost.domain_spans(p, Parallel(tp=16, ep=16))] == ["tp"]
    assert cost.moe_exchange_time(p, 1, 16, True, 64) == 0


def test_candidate_lists_contain_values_that_break_rules():
    """The space is not pre-filtered: the rules in the solver have work to do."""
    p = _p(model="mixtral-8x22b", gpus=64)  # 48 heads, 56 layers, 8 experts
    s = Space.of(p)
    assert any(48 % t for t in s.tp)
    assert any(56 % q for q in s.pp)
    assert any(8 % e for e in s.ep)
    assert max(s.tp) * max(s.attention_dp) * max(s.pp) > p.gpus


@settings(max_examples=60, deadline=None)
@given(tokens=st.integers(0, 100_000), ep=st.sampled_from([1, 2, 4, 8, 16, 32]),
       model=st.sampled_from(["deepseek-r1", "mixtral-8x7b", "qwen3-235b-a22b", "gpt-moe-1.8t"]))
def test_active_experts_bounded_by_experts_and_tokens(tokens, ep, model):
    p = _p(model=model, cluster="b200", precision="fp8")
    md = p.model
    active = float(cost.expected_active_experts(p, tokens, ep))
    assert 0 <= active <= md.num_experts / ep + 1e-9
    assert active <= tokens * md.experts_per_token / ep + 1e-9


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 256), extra=st.integers(1, 256), chunk=st.sampled_from([256, 1024, 4096]),
       tp=st.sampled_from([1, 2, 4, 8]), isl=st.integers(16, 8000), osl=st.integers(16, 4000))
def test_more_requests_never_cost_less_time_or_memory(m, extra, chunk, tp, isl, osl):
    p = _p(isl=isl, osl=osl, gpus=8)
    par = Parallel(tp=tp, dp=8 // tp)
    a = cost.metrics_grid(p, par, np.array(m), np.array(chunk))
    b = cost.metrics_grid(p, par, np.array(m + extra), np.array(chunk))
    if a["prefill_load"] < 1 and b["prefill_load"] < 1:
        assert b["tpot_s"] >= a["tpot_s"]
    assert b["kv_cache_bytes"] > a["kv_cache_bytes"]
    assert b["per_gpu_bytes"] > a["per_gpu_bytes"]


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 64), chunk=st.sampled_from([128, 512, 2048, 8192]), isl=st.integers(16, 32000),
       osl=st.integers(16, 4000))
def test_prefill_load_share_and_ttft_passes(m, chunk, isl, osl):
    p = _p(isl=isl, osl=osl)
    rho = float(cost.prefill_load(p, m, chunk))
    assert rho == pytest.approx(m * isl / (osl * chunk))
    carried = float(cost.carried_chunk(p, m, chunk))
    assert carried <= chunk and (carried >= min(isl, chunk) - 1e-9)
    f = float(cost.prefill_share(p, m, chunk))
    assert f == pytest.approx(m * isl / osl / carried)
    assert f * carried == pytest.approx(rho * chunk)  # the demand is carried either way
    own, backlog = (float(x) for x in cost.ttft_passes(p, m, chunk))
    if rho < 1:
        assert backlog == 0  # steady traffic (planning) the budget keeps up with: no group to queue behind
        assert f <= 1 + 1e-9
        assert own >= np.ceil(isl / chunk - 1e-9)
    else:
        assert own == float("inf")


def test_memory_breakdown_adds_up():
    p = _p(model="qwen3-235b-a22b", cluster="h200-sxm", gpus=8)
    ev = cost.evaluate(p, Parallel(tp=1, attention_dp=8, ep=8, moe_tp=1), 16, 1024)
    m = ev.memory
    parts = m.weights_bytes + m.kv_cache_bytes + m.activation_bytes + m.comm_buffer_bytes + m.reserved_bytes
    assert m.per_gpu_bytes == pytest.approx(parts)
    assert m.capacity_bytes == pytest.approx(p.cluster.hbm_capacity_gb * GB)
    assert m.usable_bytes == pytest.approx(m.capacity_bytes * p.calibration.memory_utilization)


def test_request_overhead_moves_ttft_by_itself_and_not_tpot():
    """Factors.ttft_overhead_ms is a fixed per-request time: it adds to TTFT one for one [ms]."""
    par = Parallel(tp=4, dp=2)
    base = _p()
    slow = base.model_copy(update={"calibration": Calibration(base=Factors(ttft_overhead_ms=150.0))})
    fast = base.model_copy(update={"calibration": Calibration(base=Factors(ttft_overhead_ms=0.0))})
    a, b = (cost.evaluate(p, par, 16, 2048).metrics for p in (fast, slow))
    assert b.ttft_ms - a.ttft_ms == pytest.approx(150.0)
    assert b.tpot_ms == pytest.approx(a.tpot_ms)
    assert cost.request_overhead(slow) == pytest.approx(0.150)


@settings(max_examples=25, deadline=None)
@given(k=st.floats(0, 12), m=st.integers(1, 128), chunk=st.sampled_from([512, 2048, 8192]))
def test_admission_adds_whole_mean_iterations_to_ttft_only(k, m, chunk):
    """Factors.admission_iterations adds k mean iterations (k * TPOT) to TTFT and leaves TPOT alone [ms]."""
    par = Parallel(tp=4, dp=2)
    base = _p()
    none = base.model_copy(update={"calibration": Calibration(base=Factors(admission_iterations=0.0))})
    some = base.model_copy(update={"calibration": Calibration(base=Factors(admission_iterations=k))})
    a, b = (cost.evaluate(p, par, m, chunk).metrics for p in (none, some))
    assert b.tpot_ms == pytest.approx(a.tpot_ms)
    if not math.isfinite(a.ttft_ms):  # the chunk cannot keep up with arrivals: no first token either way
        assert b.ttft_ms == math.inf
        return
    assert b.ttft_ms - a.ttft_ms == pytest.approx(k * a.tpot_ms, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("field,value", [("ttft_overhead_ms", -1.0), ("ttft_overhead_ms", 301.0),
                                         ("admission_iterations", -0.5), ("admission_iterations", 12.5),
                                         ("queue_burstiness", 1.01), ("queue_burstiness", -0.1),
                                         ("request_step_overhead_us", -1.0), ("request_step_overhead_us", 201.0)])
def test_new_factors_are_bounded(field, value):
    with pytest.raises(ValidationError):
        Factors(**{field: value})


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 64), chunk=st.sampled_from([512, 2048, 8192]), isl=st.integers(64, 16000),
       osl=st.integers(16, 4000))
def test_closed_loop_burstiness_spans_steady_traffic_to_whole_waves(m, chunk, isl, osl):
    """b = 0: the loop has drifted into steady traffic; b = 1: the rank's m prompts arrive as one
    wave and on average half of the rest is prefilled first; TTFT never falls as b grows."""
    def closed(b):
        return _p(isl=isl, osl=osl).model_copy(
            update={"workload": Workload(isl=isl, osl=osl, burstiness=b, closed_loop=True)})

    steady = _p(isl=isl, osl=osl)
    assert float(cost.arrival_group(closed(0.0), m)) == pytest.approx(float(cost.arrival_group(steady, m)))
    assert float(cost.arrival_group(closed(1.0), m)) == pytest.approx(isl * m)
    own, backlog = (float(x) for x in cost.ttft_passes(closed(1.0), m, chunk))
    assert backlog == pytest.approx(max(isl * m - max(chunk, isl), 0) / (2 * chunk))
    if float(cost.prefill_load(steady, m, chunk)) < 1:
        assert float(cost.ttft_passes(closed(0.0), m, chunk)[1]) == 0
    par = Parallel(tp=4, dp=2)
    ttft = [float(cost.metrics_grid(closed(b), par, m, chunk)["ttft_s"]) for b in (0.0, 0.5, 1.0)]
    assert ttft[0] <= ttft[1] * (1 + 1e-12) and ttft[1] <= ttft[2] * (1 + 1e-12)


def test_request_step_overhead_grows_with_decoding_requests():
    """Factors.request_step_overhead_us: host time per decoding request per iteration [us]; a pass of
    m requests is m * that slower, prefill tokens alone add none."""
    par = Parallel(tp=4, dp=2)
    base = _p()
    busy = base.model_copy(update={"calibration": Calibration(base=Factors(request_step_overhead_us=50.0))})
    idle = base.model_copy(update={"calibration": Calibration(base=Factors(request_step_overhead_us=0.0))})
    for m in (1, 16, 128):
        extra = cost.pass_time(busy, par, m, 0) - cost.pass_time(idle, par, m, 0)
        assert float(extra) == pytest.approx(m * 50e-6)
    assert float(cost.pass_time(busy, par, 0, 2048)) == pytest.approx(float(cost.pass_time(idle, par, 0, 2048)))
    a, b = (cost.evaluate(p, par, 64, 2048).metrics for p in (idle, busy))
    assert b.tpot_ms > a.tpot_ms and b.tokens_per_s_per_gpu < a.tokens_per_s_per_gpu


def _with_moe_efficiency(p, value):
    return p.model_copy(update={"calibration": Calibration(base=Factors(moe_gemm_efficiency=value))})


@pytest.mark.parametrize("m,chunk", [(64, 0), (1, 4096), (16, 2048)])
def test_moe_gemm_efficiency_slows_routed_experts_only(m, chunk):
    """Factors.moe_gemm_efficiency scales the FLOP/s and the weight-read bandwidth of the routed-expert
    GEMMs: the expert GEMM time is 1/x as long in decode (bandwidth-bound) and prefill (compute-bound);
    attention, dense GEMMs and dense models are unchanged."""
    moe = _p(model="deepseek-r1", cluster="b200", precision="fp4")
    fast, slow = _with_moe_efficiency(moe, 1.0), _with_moe_efficiency(moe, 0.5)
    n, adp = m + chunk, 8
    assert float(cost.moe_gemm_work(slow, adp, n)) == pytest.approx(2 * float(cost.moe_gemm_work(fast, adp, n)))
    assert float(cost.moe_gemm_work(fast, adp, n)) > 0
    assert float(cost.attention_block_time(slow, 1, m, chunk)) == pytest.approx(
        float(cost.attention_block_time(fast, 1, m, chunk)))
    par = Parallel(tp=1, attention_dp=8, ep=8, moe_tp=1)
    assert float(cost.pass_time(slow, par, m, chunk)) > float(cost.pass_time(fast, par, m, chunk))
    dense = _p()
    dpar = Parallel(tp=4, dp=2)
    a, b = (cost.evaluate(q, dpar, m, max(chunk, 512)).metrics
            for q in (_with_moe_efficiency(dense, 1.0), _with_moe_efficiency(dense, 0.2)))
    assert (a.ttft_ms, a.tpot_ms) == (b.ttft_ms, b.tpot_ms)


@pytest.mark.parametrize("value", [0.19, 1.01, -0.5])
def test_moe_gemm_efficiency_is_bounded(value):
    with pytest.raises(ValidationError):
        Factors(moe_gemm_efficiency=value)
    assert Factors(moe_gemm_efficiency=0.2).moe_gemm_efficiency == 0.2


@pytest.mark.parametrize(
    "cluster, precision, math",
    [("h100-sxm", "fp4", "bf16"), ("h100-sxm", "int4", "bf16"), ("b200", "int4", "bf16"), ("b200", "fp4", "fp4"),
     ("h100-sxm", "mxfp4", "bf16"), ("b200", "mxfp4", "fp4"), ("mi355x", "mxfp4", "fp4"), ("mi300x", "mxfp4", "bf16"),
     ("h100-sxm", "fp8", "fp8"), ("a100-sxm", "fp8", "bf16"), ("h100-sxm", "w4a8", "fp8"), ("b200", "w4a8", "fp8"),
     ("a100-sxm", "w4a8", "bf16")],
)
def test_weights_the_gpu_cannot_multiply_in_run_weight_only_in_bf16(cluster, precision, math):
    """W4A16/W8A16: stored in their format (memory), multiplied at the BF16 rate (prefill GEMMs)."""
    p = make_problem("llama-3.1-8b", cluster, gpus=1, isl=4096, osl=128, precision=precision, kv_precision="bf16")
    assert p.gemm_math == math
    rates = cost.Rates.of(p)
    assert rates.gemm == pytest.approx(p.cluster.tflops[math] * 1e12 * p.factors.compute_efficiency)
    bf16 = make_problem("llama-3.1-8b", cluster, gpus=1, isl=4096, osl=128, precision="bf16", kv_precision="bf16")
    assert cost.weight_bytes_per_gpu(p, 1, 1, 1) < cost.weight_bytes_per_gpu(bf16, 1, 1, 1)


def test_w4a8_keeps_4_bit_traffic_and_multiplies_at_the_fp8_rate():
    """W4A8 on Hopper: weights (memory, decode) as small as FP4's, prefill GEMMs as fast as FP8's."""
    def problem(precision):
        return make_problem("llama-3.1-70b", "h100-sxm", gpus=2, isl=8192, osl=256, precision=precision,
                            kv_precision="fp8")

    w4a8, fp4, fp8 = problem("w4a8"), problem("fp4"), problem("fp8")
    par = Parallel(tp=2)
    weights = {k: float(cost.weight_bytes_per_gpu(q, 2, 1, 1)) for k, q in (("w4a8", w4a8), ("fp4", fp4), ("fp8", fp8))}
    assert weights["w4a8"] < 0.6 * weights["fp8"]
    assert weights["w4a8"] == pytest.approx(weights["fp4"], rel=0.08)  # MXFP4 scales: 1 byte per 32, not 16
    prefill = {k: float(cost.pass_time(q, par, 1, 8192)) for k, q in (("w4a8", w4a8), ("fp4", fp4), ("fp8", fp8))}
    assert prefill["w4a8"] < 0.8 * prefill["fp4"]  # fp4 on Hopper runs W4A16
    assert prefill["w4a8"] == pytest.approx(prefill["fp8"], rel=0.15)
    decode = {k: float(cost.pass_time(q, par, 8, 0)) for k, q in (("w4a8", w4a8), ("fp8", fp8))}
    assert decode["w4a8"] < 0.8 * decode["fp8"]  # decode reads half the weight bytes


@pytest.mark.parametrize("precision, bytes_", [
    ("fp4", 0.5 + 1 / 16),  # NVFP4: one E4M3 scale per 16 values
    ("mxfp4", 0.5 + 1 / 32),  # OCP MX v1.0: one E8M0 scale per 32 values
    ("int4", 0.5 + (2 + 0.5) / 128),  # AWQ/GPTQ group 128: FP16 scale + 4-bit zero point per group
    ("w4a8", 0.5 + 1 / 32), ("fp8", 1.0), ("bf16", 2.0)])
def test_bytes_per_value_of_each_format(precision, bytes_):
    assert Precision(precision).bytes_per_value == pytest.approx(bytes_, rel=1e-12)


def test_aliases_resolve_to_one_canonical_precision():
    assert {Precision(a) for a in ("int4_wo", "awq", "gptq", "w4a16", "int4_awq", "AWQ", " GPTQ ")} == {Precision.int4}
    assert Precision("nvfp4") is Precision.fp4 and Precision("MXFP4") is Precision.mxfp4
    assert set(PRECISION_ALIASES.values()) <= {p.value for p in Precision}
    assert Precision.names()[:len(Precision)] == [p.value for p in Precision]
    with pytest.raises(ValueError):
        Precision("int3")
    p = make_problem("llama-3.1-8b", "h100-sxm", gpus=1, precision="awq")
    assert p.precision is Precision.int4 and p.model_dump(mode="json")["precision"] == "int4"


def test_gpt_oss_checkpoint_weighs_what_openai_publishes():
    """gpt-oss-120b as published: 114.7B expert parameters in MXFP4, attention, router, embeddings and LM head
    (2.1B) in BF16. OpenAI's gpt-oss model card (arXiv 2508.10925, table 1) gives checkpoints of 60.8 GiB
    (120b) and 12.8 GiB (20b); ModelSpec leaves out biases, norms and sinks (< 0.1%)."""
    for model, gib in (("gpt-oss-120b", 60.8), ("gpt-oss-20b", 12.8)):
        p = make_problem(model, "b200", gpus=1, precision="checkpoint", calibration=Calibration())
        assert (p.precision, p.experts) == (Precision.bf16, Precision.mxfp4)
        weights = float(cost.weight_bytes_per_gpu(p, 1, 1, 1))
        assert weights / 2**30 == pytest.approx(gib, rel=0.01)
        m = p.model
        experts = m.num_moe_layers * m.num_experts * m.expert_params
        assert weights == pytest.approx(experts * (0.5 + 1 / 32) + (m.total_params - experts) * 2.0)
    # the same model with every weight in NVFP4 is what the planner used to assume: 3% more for 120b
    nv = make_problem("gpt-oss-120b", "b200", gpus=1, precision="fp4", calibration=Calibration())
    assert float(cost.weight_bytes_per_gpu(nv, 1, 1, 1)) / 2**30 == pytest.approx(62.7, rel=0.01)


def test_component_formats_set_each_part_s_bytes_and_math():
    """BF16 attention beside MXFP4 experts: the dense GEMMs read BF16 bytes at the BF16 rate, the experts
    MXFP4 bytes at the FP4 rate (Blackwell) or weight-only in BF16 (Hopper)."""
    def problem(cluster, precision, experts=None):
        return make_problem("gpt-oss-120b", cluster, gpus=8, isl=8000, osl=1000, precision=precision,
                            expert_precision=experts, kv_precision="fp8", calibration=Calibration())

    mixed, all_bf16, all_mx = problem("b200", "bf16", "mxfp4"), problem("b200", "bf16"), problem("b200", "mxfp4")
    r = cost.Rates.of(mixed)
    assert r.gemm == pytest.approx(cost.Rates.of(all_bf16).gemm)  # attention GEMMs: BF16
    assert r.moe_gemm == pytest.approx(cost.Rates.of(all_mx).moe_gemm)  # experts: FP4 tensor cores
    w = {k: float(cost.weight_bytes_per_gpu(q, 1, 1, 1)) for k, q in (("mixed", mixed), ("bf16", all_bf16),
                                                                      ("mx", all_mx))}
    assert w["mx"] < w["mixed"] < 0.3 * w["bf16"]
    # decode at tp=1 reads the dense part in BF16: slower than all-MXFP4, far faster than all-BF16
    dense = {k: float(cost.attention_block_time(q, 1, 1, 0)) for k, q in (("mixed", mixed), ("mx", all_mx))}
    assert dense["mixed"] > dense["mx"]
    hopper = problem("h100-sxm", "bf16", "mxfp4")
    assert hopper.math_for(hopper.experts) == "bf16" and hopper.gemm_math == "bf16"


def test_expert_precision_needs_an_moe_model():
    from planner.errors import SpecError

    with pytest.raises(SpecError, match="dense model"):
        make_problem("llama-3.1-8b", "h100-sxm", gpus=1, precision="bf16", expert_precision="mxfp4")
    with pytest.raises(SpecError, match="states no checkpoint formats"):
        make_problem("gpt-moe-1.8t", "gb200-nvl72", precision="checkpoint")
    with pytest.raises(SpecError, match=r"unknown precision 'fp3'; known: fp4, mxfp4, .*awq.*checkpoint"):
        make_problem("llama-3.1-8b", "h100-sxm", gpus=1, precision="fp3")
