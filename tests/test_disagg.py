"""Disaggregated serving: the cost model's pools, CP-SAT against the exhaustive oracle (one cluster and two),
the plans' validity, serving auto, and the command line."""

from __future__ import annotations

import json

import pytest
from clirun import error_line, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner import cost, disagg
from planner.audit import DISAGG_CHUNKS, DISAGG_MICRO_BATCHES, Case, check, random_disagg_cases
from planner.errors import InfeasibleError, SpecError
from planner.search import make_problem, solve
from planner.specs import Parallel, Plan

SMALL = dict(model="llama-3.1-8b", cluster="h100-sxm", gpus=8, isl=1024, osl=256, precision="fp8",
             min_tokens_per_s_per_user=50)
CASES = random_disagg_cases(80, seed=21)
"""Random disaggregated cases: a third with the decode pool on another GPU type."""


# --- the cost model's pools ------------------------------------------------------------------------------


def test_prefill_capacity_and_service_follow_the_pass():
    p = make_problem(**SMALL)
    par = Parallel(tp=2, pp=2)
    t = float(cost.prefill_pass_time(p, par, 2048))
    assert float(cost.prefill_capacity(p, par, 2048)) == pytest.approx(1 * 2 * 2048 / (1024 * t))
    assert float(cost.prefill_service_time(p, 512, t)) == pytest.approx(2 * t)  # 1024 tokens in two chunks
    assert float(cost.prefill_service_time(p, 2048, t)) == pytest.approx(t)


def test_decode_rate_is_batch_over_tpot_and_memory_has_no_chunk():
    p = make_problem(**SMALL)
    par = Parallel(tp=1)
    tpot = float(cost.decode_pass_time(p, par, 32))
    assert float(cost.decode_rate(p, par, 32)) == pytest.approx(32 / tpot)
    assert tpot == pytest.approx(float(cost.pass_time(p, par, 32, 0)))
    agg = cost.memory_breakdown(p, par, 32, 0)
    assert float(cost.decode_memory_breakdown(p, par, 32)["per_gpu_bytes"]) == float(agg["per_gpu_bytes"])


def test_kv_bytes_mla_latent_once_gqa_heads_split():
    ds = make_problem(model="deepseek-r1", cluster="b200", gpus=8, isl=4000, osl=1000, precision="fp4")
    m = ds.model
    per_token_layer = (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) * ds.kv_precision.bytes_per_value
    assert cost.kv_request_bytes(ds) == pytest.approx(4000 * m.num_layers * per_token_layer)
    # an MLA decode rank stores the whole latent on each of its tp GPUs; a prefill rank splits the sending
    assert float(cost.kv_receive_bytes_per_gpu(ds, 8, 1)) == pytest.approx(cost.kv_request_bytes(ds))
    assert float(cost.kv_send_bytes_per_gpu(ds, 8, 1)) == pytest.approx(cost.kv_request_bytes(ds) / 8)
    ll = make_problem(**SMALL)
    assert float(cost.kv_receive_bytes_per_gpu(ll, 8, 1)) == pytest.approx(cost.kv_request_bytes(ll) / 8)


def test_kv_over_scale_up_is_faster_than_scale_out():
    p = make_problem(**SMALL)
    assert float(cost.kv_send_time(p, 1, 1, True)) < float(cost.kv_send_time(p, 1, 1, False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(service=st.floats(0.01, 5.0), transfer=st.floats(0.0, 0.5), limit=st.floats(0.05, 30.0))
def test_max_prefill_load_is_the_ttft_limit_inverted(service, transfer, limit):
    """At the load max_prefill_load allows, TTFT is at the limit (or the cap binds first); above it, beyond."""
    p = make_problem(**SMALL)
    rho = float(cost.max_prefill_load(p, service, transfer, limit))
    assert 0 <= rho <= cost.MAX_PREFILL_LOAD
    if rho > 0:
        ttft = float(cost.disagg_ttft(p, service, rho, transfer))
        assert ttft <= limit * (1 + 1e-9)
        if rho < cost.MAX_PREFILL_LOAD:
            assert ttft == pytest.approx(limit, rel=1e-6)
    else:
        assert float(cost.disagg_ttft(p, service, 0.0, transfer)) > limit * (1 - 1e-9)


# --- CP-SAT against the oracle ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outcomes():
    return [check(c) for c in CASES]


def test_cpsat_equals_exhaustive_on_random_cases(outcomes):
    bad = [(o.case.command(), o.cpsat, o.oracle) for o in outcomes if not o.agree]
    assert not bad, bad[:3]
    assert not any(o.false_optimum or o.bound_violated for o in outcomes)


def test_random_cases_cover_plans_on_one_and_two_clusters(outcomes):
    """The comparison means something: at least 20 instances with a plan, 6 of them heterogeneous."""
    planned = [o for o in outcomes if o.cpsat.value is not None]
    assert len(planned) >= 20
    assert sum(o.case.decode_cluster is not None for o in planned) >= 6
    assert all(o.cpsat.status == "OPTIMAL" and o.cpsat.certified for o in planned)


@pytest.mark.parametrize("case", [
    Case("gpt-moe-1.8t", "gb200-nvl72", 64, 32768, 1024, "fp4", 20.0, None, serving="disagg",
         chunks=DISAGG_CHUNKS, micro_batches=DISAGG_MICRO_BATCHES),
    Case("gpt-moe-1.8t", "h100-sxm", 64, 32768, 1024, "fp8", 10.0, 8.0, serving="disagg",
         chunks=DISAGG_CHUNKS, micro_batches=DISAGG_MICRO_BATCHES),
    Case("deepseek-r1", "h200-sxm", 16, 4000, 1000, "fp8", 20.0, 2.0, serving="disagg",
         chunks=DISAGG_CHUNKS, micro_batches=DISAGG_MICRO_BATCHES),
    Case("llama-3.1-70b", "h100-sxm", 8, 8000, 500, "fp8", 30.0, None, serving="disagg", decode_cluster="b200",
         decode_gpus=4, chunks=DISAGG_CHUNKS, micro_batches=DISAGG_MICRO_BATCHES),
])
def test_cpsat_equals_exhaustive_on_large_models(case):
    o = check(case)
    assert o.agree, (o.cpsat, o.oracle)
    assert o.cpsat.value is not None


# --- the plans -------------------------------------------------------------------------------------------


def _plans(outcome_cases):
    for c in outcome_cases:
        try:
            yield c, solve(c.problem(), serving="disagg", decode_cluster=c.decode_cluster, decode_gpus=c.decode_gpus,
                           chunks=c.chunks, micro_batches=c.micro_batches)[0]
        except InfeasibleError:
            continue


def test_plans_obey_every_rule_and_the_budget():
    checked = 0
    for c, plan in _plans(CASES[:40]):
        dp = disagg.make_disagg(c.problem(), c.decode_cluster, c.decode_gpus)
        assert disagg.deployment_violations(dp, plan.prefill.parallel, plan.prefill.batch.chunk_tokens,
                                            plan.decode.parallel, plan.decode.batch.micro_batch, c.sla, c.ttft) == []
        pre, dec = plan.prefill, plan.decode
        if c.decode_cluster is None:
            assert pre.gpus + dec.gpus == plan.gpus_used <= c.gpus
        else:
            assert pre.gpus <= c.gpus and dec.gpus <= c.decode_gpus and dec.cluster == c.decode_cluster
        assert plan.metrics.tokens_per_s_per_user >= c.sla * (1 - 1e-12)
        if c.ttft is not None:
            assert plan.metrics.ttft_ms <= c.ttft * 1e3 * (1 + 1e-9)
        # rate matching: the prefill pool serves what the decode pool asks for, at a load within the cap
        capacity = pre.workers * pre.metrics.prefill_capacity_requests_per_s
        assert plan.metrics.requests_per_s <= capacity * cost.MAX_PREFILL_LOAD * (1 + 1e-9)
        assert plan.metrics.requests_per_s == pytest.approx(dec.workers * dec.metrics.tokens_per_s / c.osl)
        assert plan.metrics.tokens_per_s_per_gpu == pytest.approx(
            dec.workers * dec.metrics.tokens_per_s / plan.gpus)
        assert plan.memory.per_gpu_bytes <= plan.memory.usable_bytes
        assert pre.memory.per_gpu_bytes <= pre.memory.usable_bytes
        checked += 1
    assert checked >= 8


def test_fewer_prefill_workers_would_break_a_rule():
    """The plan runs no idle prefill worker: one fewer breaks the rate matching or the TTFT limit."""
    for c, plan in list(_plans(CASES[:40]))[:10]:
        if plan.prefill.workers == 1:
            continue
        dp = disagg.make_disagg(c.problem(), c.decode_cluster, c.decode_gpus)
        fewer = plan.prefill.parallel.model_copy(update={"dp": plan.prefill.workers - 1})
        broken = disagg.deployment_violations(dp, fewer, plan.prefill.batch.chunk_tokens, plan.decode.parallel,
                                              plan.decode.batch.micro_batch, c.sla, c.ttft)
        assert {"rate_matching", "ttft"} & set(broken)


def test_plan_json_has_both_pools_and_the_kv_transfer():
    import jsonschema

    plan = solve(make_problem(**SMALL), serving="disagg")[0]
    data = json.loads(plan.model_dump_json())
    schema = json.loads(run("schema").stdout)
    jsonschema.validate(data, schema)  # the contract `planner schema` publishes covers disaggregated plans
    assert data["serving"] == "disagg"
    for pool in ("prefill", "decode"):
        assert set(data[pool]["parallel"]) >= {"tp", "pp", "ep", "attention_dp", "dp"}
        assert data[pool]["workers"] == data[pool]["parallel"]["dp"] >= 1
    assert data["prefill"]["batch"]["chunk_tokens"] >= 1 and data["decode"]["batch"]["micro_batch"] >= 1
    assert data["kv_transfer"]["link"] == "scale-up"  # 8 GPUs: both pools in one NVLink domain
    assert Plan.model_validate(data) == plan


def test_kv_link_is_scale_out_across_clusters_and_past_the_domain():
    hetero = solve(make_problem(**{**SMALL, "gpus": 4}), serving="disagg", decode_cluster="h200-sxm",
                   decode_gpus=4)[0]
    assert hetero.kv_transfer.link == "scale-out" and hetero.decode.cluster == "h200-sxm"
    big = solve(make_problem(**{**SMALL, "gpus": 32}), serving="disagg")[0]
    assert (big.kv_transfer.link == "scale-up") == (big.gpus_used <= 8)


def test_auto_returns_the_better_mode_and_names_the_other():
    p = make_problem(**SMALL)
    agg = solve(p, serving="agg")[0]
    dis = solve(p, serving="disagg")[0]
    best = solve(p, serving="auto")[0]
    assert best.metrics.tokens_per_s_per_gpu == max(agg.metrics.tokens_per_s_per_gpu, dis.metrics.tokens_per_s_per_gpu)
    other = dis if best.serving == "agg" else agg
    assert best.alternative.serving == other.serving
    assert best.alternative.tokens_per_s_per_gpu == pytest.approx(other.metrics.tokens_per_s_per_gpu)


def test_auto_takes_disagg_where_agg_has_no_plan():
    """Where the aggregated search finds no plan (here: its chunks cannot keep a batch of 8k-token prompts
    full), auto returns the disaggregated plan and says why agg has none."""
    p = make_problem(**{**SMALL, "isl": 8192, "osl": 64})
    with pytest.raises(InfeasibleError) as e:
        solve(p, serving="agg", chunks=(128,))
    plan = solve(p, serving="auto", chunks=(128,))[0]
    assert plan.serving == "disagg" and plan.alternative.serving == "agg"
    assert plan.alternative.reason == str(e.value)


def test_infeasible_disagg_says_what_is_reachable():
    p = make_problem(**{**SMALL, "min_tokens_per_s_per_user": 5000})
    with pytest.raises(InfeasibleError) as e:
        solve(p, serving="disagg")
    assert e.value.reason == "sla" and e.value.reachable["tokens_per_s_per_user"] < 5000
    p = make_problem(**{**SMALL, "max_ttft_s": 0.001})
    with pytest.raises(InfeasibleError) as e:
        solve(p, serving="disagg")
    assert e.value.reason == "ttft" and e.value.reachable["ttft_ms"] > 1


def test_decode_cluster_needs_disagg():
    with pytest.raises(SpecError):
        solve(make_problem(**SMALL), serving="agg", decode_cluster="b200")
    with pytest.raises(SpecError):
        disagg.make_disagg(make_problem(**SMALL), None, 4)


# --- command line ---------------------------------------------------------------------------------------------

CLI_SMALL = ["--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", "8", "--isl", "1024", "--osl", "256",
             "--precision", "fp8", "--sla", "50tok/s"]


def test_cli_disagg_prints_pools_transfer_and_solver():
    r = run("solve", *CLI_SMALL, "--serving", "disagg")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    for text in ("prefill: ", "decode: ", "KV transfer: ", "prefill memory/GPU", "decode memory/GPU", "OPTIMAL",
                 "certified"):
        assert text in out, text


def test_cli_auto_names_the_other_mode():
    r = run("solve", *CLI_SMALL)
    assert r.exit_code == 0, r.stderr
    assert ("agg best: " in r.stdout) or ("disagg best: " in r.stdout)


def test_cli_hetero_json():
    r = run("solve", *CLI_SMALL, "--gpus", "4", "--decode-cluster", "h200-sxm", "--decode-gpus", "4", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["serving"] == "disagg" and data["decode"]["cluster"] == "h200-sxm"
    assert data["prefill"]["cluster"] == "h100-sxm" and data["gpus"] == 8


@pytest.mark.parametrize("args, words", [
    (["--serving", "agg", "--decode-cluster", "b200"], "--serving disagg"),
    (["--serving", "disagg", "--top", "3"], "--top"),
    (["--serving", "disagg", "--decode-cluster", "no-such-gpu"], "no-such-gpu"),
    (["--serving", "sometimes"], "sometimes"),
    (["--decode-gpus", "4"], "--decode-cluster"),
    (["--serving", "disagg", "--confidence", "0.9"], "aggregated plans only"),
    (["--serving", "disagg", "--gpus", "1"], "at least 2 GPUs"),
])
def test_cli_bad_serving_options_end_in_one_line(args, words):
    assert words in error_line("solve", *CLI_SMALL, *args)


# --- estimate ------------------------------------------------------------------------------------------------


def test_estimate_of_a_solved_plan_reproduces_it():
    p = make_problem(**SMALL)
    plan = solve(p, serving="disagg")[0]
    again = disagg.estimate(disagg.make_disagg(p), plan.prefill.parallel, plan.prefill.batch.chunk_tokens,
                            plan.decode.parallel, plan.decode.batch.micro_batch)
    assert again.metrics == plan.metrics and again.label == plan.label


def test_cli_estimate_disagg_errors_name_the_problem():
    base = ["estimate", "--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--isl", "1024", "--osl", "256",
            "--precision", "fp8", "--serving", "disagg"]
    r = run(*base, "--decode-workers", "4", "--decode-micro-batch", "192", "--chunk", "8192")
    assert r.exit_code == 2 and "prefill pool cannot keep up" in r.stderr and "at least 3 prefill workers" in r.stderr
    r = run(*base, "--decode-tp", "3")
    assert r.exit_code == 2 and "decode layout" in r.stderr and "heads" in r.stderr
    r = run(*base, "--decode-cluster", "b200", "--decode-tp", "2", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["decode"]["cluster"] == "b200" and data["kv_transfer"]["link"] == "scale-out"


def test_measured_disagg_rows_are_predicted_in_a_closed_loop():
    """estimate --csv predicts mode-disagg rows: Little's law over the deployment holds for each prediction
    (clients = throughput x (TTFT + (osl - 1) TPOT)), and a row whose layout breaks a rule names it."""
    from planner.runs import predict_rows

    base = {"model_path": "deepseek-ai/DeepSeek-R1", "system": "h200_sxm", "backend": "sglang", "precision": "fp8",
            "mode": "disagg", "isl": "4000", "osl": "1000", "batch_size": "256", "prefill_num_workers": "2",
            "prefill_tp_size": "8", "decode_num_workers": "1", "decode_tp_size": "1", "decode_moe_ep_size": "8",
            "decode_attention_dp_size": "8", "prefill_moe_ep_size": "1", "prefill_moe_tp_size": "8",
            "decode_moe_tp_size": "1", "gemm_quant_mode": "", "moe_quant_mode": "", "backend_version": "",
            "tp_size": "", "pp_size": "", "attention_dp_size": "", "moe_tp_size": "", "moe_ep_size": ""}
    bad = {**base, "prefill_tp_size": "12", "prefill_moe_tp_size": "12"}
    out = predict_rows([base, bad])
    ok, refused = out
    assert ok["error"] == "" and float(ok["pred_tpot_ms"]) > 0
    ttft, tpot = float(ok["pred_ttft_ms"]) / 1e3, float(ok["pred_tpot_ms"]) / 1e3
    gpus = 2 * 8 + 8
    x = float(ok["pred_tokens_per_s_per_gpu"]) * gpus / 1000  # requests/s
    assert x * (ttft + 999 * tpot) == pytest.approx(256, rel=2e-3)  # the CSV keeps 4 significant digits
    assert "prefill layout" in refused["error"] and "heads" in refused["error"]


# --- calibration on disaggregated runs ---------------------------------------------------------------------


def test_fit_disagg_recovers_a_known_handoff():
    """Runs 'measured' by the model itself with a 150 ms hand-off for SGLang: the fit, from the 30 ms prior,
    finds it (within the prior's pull), leaves every aggregated factor as it was, and touches no other engine."""
    import csv as _csv
    from pathlib import Path

    from planner.calibrate import AGG_FACTORS, DisaggSet, fit_disagg, predict_disagg_set
    from planner.specs import Calibration, Profile

    with open(Path(__file__).resolve().parent.parent / "data" / "disagg.csv", newline="") as f:
        rows = [r for r in _csv.DictReader(f) if r["backend"] == "sglang"][:60]
    start = Calibration()
    truth = start.model_copy(update={"profiles": [Profile(backend="sglang", vendor="nvidia",
                                                          factors={"disagg_handoff_ms": 150.0})]})
    ds = DisaggSet.of(rows, start)
    assert len(ds.runs) >= 20
    pred = predict_disagg_set(ds, truth)
    ds.ttft_ms, ds.tpot_ms = pred["ttft_ms"], pred["tpot_ms"]
    fitted = fit_disagg(ds, start)
    prof = next(p for p in fitted.profiles if p.backend == "sglang")
    assert prof.factors["disagg_handoff_ms"] == pytest.approx(150.0, rel=0.15)
    assert fitted.base == start.base and all(n not in prof.factors for n in AGG_FACTORS)


def test_calibrate_disagg_only_needs_disaggregated_rows():
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "data" / "calibration.csv"
    r = run("calibrate", str(data), "--disagg-only", "-o", "x.yaml")
    assert r.exit_code == 2 and "no disaggregated rows" in r.stderr
