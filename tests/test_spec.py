"""Speculative decoding: the expected tokens per step, the cost model's draft-and-verify step and its memory, the
search over draft lengths (against the exhaustive oracle), measured MTP runs and the acceptance fit, the CLI."""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from clirun import error_line, run, run_json
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import Parallel, cost, estimate, make_problem, solve, studies
from planner.audit import check, random_cases, random_disagg_cases
from planner.calibrate import SPEC_APART, Dataset, DisaggSet, SpecSet, fit_spec, predict_spec_set
from planner.errors import SpecError
from planner.runs import ASSUMED_DRAFT_TOKENS, parse_disagg_run, parse_run, predict_rows
from planner.search import SEARCHED_DRAFT_TOKENS, speculation_variants
from planner.specs import Calibration, Factors, Speculation

ROOT = Path(__file__).resolve().parents[1]
IMAX = ROOT / "data" / "inferencemax.csv"


def _spec(p, k=None, a=None, method="mtp", model=None):
    """p with this speculation."""
    return p.model_copy(update={"speculation": Speculation(method=method, draft_tokens=k, acceptance=a,
                                                           draft_model=model)})


@functools.cache
def _problem(model: str = "deepseek-r1", cluster: str = "b200", gpus: int = 8, isl: int = 1024, osl: int = 256):
    return make_problem(model=model, cluster=cluster, gpus=gpus, isl=isl, osl=osl, calibration=Calibration())


# --- tokens per step ---------------------------------------------------------------------------------------


@given(a=st.floats(1e-6, 0.999), k=st.integers(0, 8))
def test_expected_tokens_are_the_accepted_run_plus_one_between_1_and_k_plus_1(a, k):
    e = float(cost.expected_tokens(a, k))
    assert 1.0 - 1e-12 <= e <= k + 1 + 1e-9
    assert e == pytest.approx(sum(a ** i for i in range(k + 1)), rel=1e-9)


@given(a=st.floats(1e-3, 0.99), b=st.floats(1e-3, 0.99), k=st.integers(1, 7))
def test_expected_tokens_grow_with_the_acceptance_and_the_draft_length(a, b, k):
    lo, hi = sorted((a, b))
    assert float(cost.expected_tokens(lo, k)) <= float(cost.expected_tokens(hi, k)) + 1e-12
    assert float(cost.expected_tokens(a, k + 1)) >= float(cost.expected_tokens(a, k))
    if a >= 0.05:
        assert float(cost.expected_tokens(a, k + 1)) > float(cost.expected_tokens(a, k))


def test_tokens_per_step_use_the_given_acceptance_else_the_calibrations():
    p = _problem()
    assert cost.tokens_per_step(p) == 1.0 and cost.draft_tokens(p) == 0
    assert cost.tokens_per_step(_spec(p, 3, 0.5)) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    cal = Calibration(base=Factors(mtp_acceptance=0.6, eagle_acceptance=0.4))
    q = p.model_copy(update={"calibration": cal})
    assert cost.acceptance(_spec(q, 2)) == 0.6 and cost.acceptance(_spec(q, 2, method="eagle")) == 0.4
    with pytest.raises(SpecError, match="searched"):
        cost.tokens_per_step(_spec(p))  # draft_tokens None: the search fixes it first


# --- the step -----------------------------------------------------------------------------------------------

MODELS = ("deepseek-r1", "llama-3.1-70b", "qwen3-235b-a22b", "gpt-oss-120b", "llama-3.1-8b")


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), tp=st.sampled_from([1, 2, 4, 8]), pp=st.sampled_from([1, 2]),
       m=st.integers(1, 256), c=st.sampled_from([0, 256, 4096]), k=st.integers(1, 4))
def test_drafts_never_accepted_cost_at_least_the_plain_step(model, tp, pp, m, c, k):
    """With a -> 0 a request gains one token per step, and the step (verify of m(k+1) tokens plus the drafts) is at
    least the plain pass: TPOT is never better than without speculation."""
    p = _problem(model, gpus=64)
    method = "mtp" if p.model.mtp_layers else "eagle"
    q = _spec(p, k, 1e-9, method)
    par = Parallel(tp=tp, pp=pp)
    step, e = cost.spec_decode_step(q, par, m, c)
    assert e == pytest.approx(1.0, abs=1e-8)
    assert float(step) / e >= float(cost.pass_time(p, par, m, c))
    chunk = max(c, 8192)
    assert float(cost.metrics_grid(q, par, m, chunk)["tpot_s"]) >= float(cost.metrics_grid(p, par, m, chunk)["tpot_s"])


def test_without_speculation_the_step_is_the_pass():
    p, par = _problem(), Parallel(attention_dp=8, ep=8)
    step, e = cost.spec_decode_step(p, par, 32, 512)
    assert e == 1.0 and float(step) == float(cost.pass_time(p, par, 32, 512))
    assert "draft_bytes" not in cost.memory_breakdown(p, par, 32, 512)


def test_the_verify_pass_reads_each_requests_kv_once_for_its_k_plus_1_queries():
    """m requests verifying k drafts against m(k+1) plain requests: the same GEMMs, LM head and all-reduces (m(k+1)
    tokens), but the KV cache of m requests read instead of m(k+1), and the host time of m requests."""
    p = _problem("llama-3.1-8b", cluster="h100-sxm", isl=2048, osl=512)
    m, k = 8, 3
    r, w = cost.Rates.of(p), p.workload
    kv_read = cost.attended_layer_tokens(p, w.isl + w.osl / 2) * float(cost.kv_bytes_per_token_layer(p, 1)) / r.kv_read
    wide = float(cost.attention_block_time(p, 1, m * (k + 1), 0))
    verify = float(cost.attention_block_time(p, 1, m, 0, q=k + 1))
    host = p.factors.request_step_overhead_us * 1e-6
    assert wide - verify == pytest.approx(m * k * (kv_read + host), rel=1e-9)  # GQA decode is bandwidth-bound


def test_the_step_is_verify_plus_pp_times_the_drafts():
    p = _spec(_problem(), 3, 0.7)
    par = Parallel(tp=4, pp=2)
    step, e = cost.spec_decode_step(p, par, 16, 1024)
    verify = cost.target_pass_time(p, par, 16, 1024, 4)
    drafts = 3 * cost.draft_pass_time(p, par, 16) + cost.draft_prefill_time(p, par, 1024)
    assert float(step) == pytest.approx(float(verify + 2 * drafts), rel=1e-12)
    assert e == pytest.approx(1 + 0.7 + 0.49 + 0.343)
    assert float(cost.draft_pass_time(p, par, 0)) == 0 and float(cost.draft_prefill_time(p, par, 0)) == 0
    # TPOT of a decode-only worker is the step over E
    assert float(cost.decode_pass_time(p, par, 16)) == pytest.approx(float(cost.spec_decode_step(p, par, 16, 0)[0]) / e)


def test_layouts_broadcast_through_the_step():
    p = _spec(_problem(gpus=64), 2, 0.8)
    lay = cost.Layouts(tp=np.array([1, 8]), attention_dp=np.array([8, 1]), pp=np.array([1, 1]), ep=np.array([8, 8]),
                       dp=np.array([1, 1]))
    step, _ = cost.spec_decode_step(p, lay, np.array([[4], [64]]), 0)
    assert step.shape == (2, 2)
    one = Parallel(tp=8, ep=8)
    assert float(step[1, 1]) == pytest.approx(float(cost.spec_decode_step(p, one, 64, 0)[0]), rel=1e-12)


def test_the_mtp_module_is_one_moe_layer_of_deepseek_and_its_kv_one_layer_of_latent():
    p = _spec(_problem(), 2, 0.8)
    md, wb = p.model, p.precision.bytes_per_value
    tp, adp, m, pp = 1, 8, 32, 1
    by_hand = (md.attention_params_per_layer + md.shared_expert_params) * wb / tp + (
        md.num_experts * md.expert_params * p.experts.bytes_per_value / (tp * adp))
    assert float(cost.draft_weight_bytes_per_gpu(p, tp, adp)) == pytest.approx(by_hand, rel=1e-12)
    w = p.workload
    kv = m * pp * (w.isl + w.osl) * (md.mla.kv_lora_rank + md.mla.qk_rope_head_dim) * p.kv_precision.bytes_per_value
    terms = cost.memory_breakdown(p, Parallel(attention_dp=adp, ep=8), m, 512)
    assert float(terms["draft_bytes"]) == pytest.approx(by_hand + kv, rel=1e-12)
    plain = cost.memory_breakdown(_problem(), Parallel(attention_dp=adp, ep=8), m, 512)
    assert float(terms["weights_bytes"]) == float(plain["weights_bytes"])
    assert float(terms["activation_bytes"]) > float(plain["activation_bytes"])  # m * 3 decode tokens
    assert float(terms["per_gpu_bytes"]) == pytest.approx(sum(float(v) for k, v in terms.items()
                                                              if k != "per_gpu_bytes"))


def test_a_draft_model_holds_its_own_weights_and_must_share_the_vocabulary():
    p = _problem("llama-3.1-70b", cluster="h100-sxm", gpus=8)
    d = _spec(p, 2, 0.7, "draft", "llama-3.1-8b")
    small = _problem("llama-3.1-8b", cluster="h100-sxm", gpus=8)
    assert float(cost.draft_weight_bytes_per_gpu(d, 2, 1)) == pytest.approx(
        float(cost.weight_bytes_per_gpu(small, 2, 1, 1)), rel=1e-12)
    with pytest.raises(SpecError, match="vocabulary"):
        make_problem(model="qwen3-32b", cluster="h100-sxm", speculation=Speculation(method="draft",
                                                                                   draft_model="llama-3.1-8b"))
    with pytest.raises(SpecError, match="no multi-token-prediction module"):
        make_problem(model="llama-3.1-70b", speculation=Speculation(method="mtp"))


def test_prefill_passes_run_the_draft_and_the_kv_transfer_carries_its_cache():
    p = _problem()
    q = _spec(p, 3, 0.8)
    par = Parallel(attention_dp=4, ep=4)
    assert float(cost.prefill_pass_time(q, par, 4096)) > float(cost.prefill_pass_time(p, par, 4096))
    latent = (p.model.mla.kv_lora_rank + p.model.mla.qk_rope_head_dim) * p.kv_precision.bytes_per_value * 1024
    assert cost.kv_request_bytes(q) - cost.kv_request_bytes(p) == pytest.approx(latent)
    assert float(cost.prefill_memory_breakdown(q, par, 4096)["draft_bytes"]) > 0


# --- the search -------------------------------------------------------------------------------------------------


def test_a_searched_draft_length_is_the_best_of_1_to_4_and_reports_no_speculation_beside_it():
    p = make_problem(model="deepseek-r1", cluster="b200", gpus=8, isl=1024, osl=1024, min_tokens_per_s_per_user=40,
                     speculation=Speculation(method="mtp"))
    assert [cost.draft_tokens(q) for q in speculation_variants(p)] == list(SEARCHED_DRAFT_TOKENS)
    plan = solve(p)[0]
    s = plan.speculation
    assert s.method.value == "mtp" and s.draft_tokens in SEARCHED_DRAFT_TOKENS
    assert s.acceptance == cost.acceptance(_spec(p, 1))  # the calibration's, recorded
    assert plan.metrics.tokens_per_step == pytest.approx(float(cost.expected_tokens(s.acceptance, s.draft_tokens)))
    opts = {o.draft_tokens: o for o in plan.speculation_options}
    assert set(opts) == {0, *SEARCHED_DRAFT_TOKENS}
    assert opts[0].tokens_per_step == 1.0
    best = max(o.tokens_per_s_per_gpu for k, o in opts.items() if k and o.tokens_per_s_per_gpu)
    assert plan.metrics.tokens_per_s_per_gpu == pytest.approx(best)
    assert opts[s.draft_tokens].tokens_per_s_per_gpu == pytest.approx(best)
    fixed = solve(p, speculation=Speculation(method="mtp", draft_tokens=s.draft_tokens))[0]
    assert fixed.metrics.tokens_per_s_per_gpu == pytest.approx(best)
    assert [o.draft_tokens for o in fixed.speculation_options] == [0, s.draft_tokens]


def test_speculation_and_confidence_are_refused_together():
    p = make_problem(model="deepseek-r1", cluster="b200", gpus=8, min_tokens_per_s_per_user=20,
                     speculation=Speculation(method="mtp", draft_tokens=2))
    with pytest.raises(SpecError, match="speculative"):
        solve(p, confidence=0.9)


def _spec_cases():
    """Random cases of the audit's distribution with speculative decoding: MTP on models with an MTP module, an
    EAGLE head elsewhere; fixed and searched draft lengths, given and calibrated acceptances."""
    out = []
    for i, c in enumerate([*random_cases(24, seed=7, max_gpus=16),
                           *random_cases(6, seed=8, max_gpus=16)]):
        model = "deepseek-r1" if i >= 24 else c.model
        method = "mtp" if model == "deepseek-r1" else "eagle"
        k = None if i % 4 == 3 else 1 + i % 4
        out.append(replace(c, model=model, speculation=Speculation(method=method, draft_tokens=k,
                                                                   acceptance=0.6 if i % 2 else None)))
    return out


SPEC_CASES = _spec_cases()
DISAGG_SPEC_CASES = [replace(c, speculation=Speculation(method="eagle", draft_tokens=1 + i % 3))
                     for i, c in enumerate(random_disagg_cases(8, seed=9, max_gpus=8))]


def _agree(outcome) -> None:
    assert outcome.cpsat.status != "error" and outcome.oracle.status != "error", outcome
    assert outcome.agree, (outcome.case.command(), outcome.cpsat, outcome.oracle)
    assert not outcome.false_optimum and not outcome.bound_violated
    if outcome.cpsat.value is not None:
        assert outcome.cpsat.status == "OPTIMAL" and outcome.cpsat.certified is True


@functools.cache
def _outcome(cases: str, i: int):
    return check((SPEC_CASES if cases == "agg" else DISAGG_SPEC_CASES)[i])


@pytest.mark.parametrize("i", range(len(SPEC_CASES)), ids=lambda i: "{0.model}-{0.cluster}-{0.gpus}-k{1}".format(
    SPEC_CASES[i], SPEC_CASES[i].speculation.draft_tokens))
def test_cpsat_matches_the_oracle_with_speculation(i):
    """The same optimum as the exhaustive oracle (or no plan for the same reason), certified, never a false
    OPTIMAL, over fixed and searched draft lengths."""
    _agree(_outcome("agg", i))


@pytest.mark.parametrize("i", range(len(DISAGG_SPEC_CASES)), ids=lambda i: "{0.model}-{0.cluster}-{0.gpus}".format(
    DISAGG_SPEC_CASES[i]))
def test_disaggregated_cpsat_matches_the_oracle_with_speculation(i):
    _agree(_outcome("disagg", i))


def test_the_random_speculative_cases_are_not_all_one_answer():
    found = [_outcome("agg", i).oracle.value is not None for i in range(len(SPEC_CASES))]
    assert sum(found[24:]) >= 3 and 5 <= sum(found) < len(found)
    assert sum(_outcome("disagg", i).oracle.value is not None for i in range(len(DISAGG_SPEC_CASES))) >= 2


def test_a_frontier_over_draft_lengths_is_at_each_level_the_best_fixed_length():
    p = make_problem(model="deepseek-r1", cluster="b200", gpus=8, isl=1024, osl=256,
                     speculation=Speculation(method="mtp", acceptance=0.7))
    kw = dict(sla_range=(30.0, 300.0), points=5, serving="agg")
    searched = studies.frontier(p, **kw)
    fixed = [studies.frontier(q, **kw) for q in speculation_variants(p)]
    for pt in searched.points:
        x = pt.target_tokens_per_s_per_user
        best = max((f.at(x).metrics.tokens_per_s_per_gpu for f in fixed if f.at(x)), default=None)
        assert pt.metrics.tokens_per_s_per_gpu == pytest.approx(best, rel=1e-9)
        assert pt.speculation.draft_tokens in SEARCHED_DRAFT_TOKENS
    thr = [pt.metrics.tokens_per_s_per_gpu for pt in searched.points]
    assert all(a >= b for a, b in zip(thr, thr[1:]))  # monotone
    assert "draft_tokens" in studies.frontier_rows(searched)[0]


def test_estimate_with_a_searched_draft_length_keeps_the_best():
    p = make_problem(model="llama-3.1-70b", cluster="h100-sxm", gpus=8, isl=2000, osl=500, precision="fp8",
                     speculation=Speculation(method="eagle", acceptance=0.8))
    plan = estimate(p, parallel=Parallel(tp=8), concurrency=8, chunk=2048)
    opts = {o.draft_tokens: o.tokens_per_s_per_gpu for o in plan.speculation_options}
    assert plan.metrics.tokens_per_s_per_gpu == pytest.approx(max(v for k, v in opts.items() if k))
    assert opts[plan.speculation.draft_tokens] == pytest.approx(plan.metrics.tokens_per_s_per_gpu)
    assert plan.memory.draft_bytes > 0 and any("EAGLE" in n for n in plan.notes)


# --- measured runs and the fit ------------------------------------------------------------------------------


def _imax_rows() -> list[dict[str, str]]:
    with open(IMAX, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_mtp_rows_are_read_with_the_engines_assumed_draft_length():
    rows = [r for r in _imax_rows() if r["spec_decoding"] == "mtp"]
    trt = next(r for r in rows if r["backend"] == "trtllm")
    run_ = parse_disagg_run(trt, Calibration())
    assert run_.problem.speculation.method.value == "mtp"
    assert run_.problem.speculation.draft_tokens == ASSUMED_DRAFT_TOKENS["trtllm"]
    assert parse_disagg_run({**trt, "draft_tokens": "2"}, Calibration()).problem.speculation.draft_tokens == 2
    with pytest.raises(SpecError, match="medusa"):
        parse_disagg_run({**trt, "spec_decoding": "medusa"}, Calibration())


AGG_MTP_ROW = dict(model_path="deepseek-ai/DeepSeek-R1", system="b200_sxm", backend="sglang", backend_version="0.5",
                   precision="fp8", gemm_quant_mode="", moe_quant_mode="", isl="1024", osl="1024", batch_size="16",
                   tp_size="8", pp_size="1", attention_dp_size="", moe_tp_size="1", moe_ep_size="8",
                   spec_decoding="mtp", mode="agg")


def test_an_aggregated_mtp_row_is_predicted_faster_per_token_than_without():
    spec, plain = predict_rows([AGG_MTP_ROW, {**AGG_MTP_ROW, "spec_decoding": "none"}], Calibration())
    assert spec["error"] == "" and plain["error"] == ""
    assert float(spec["pred_tpot_ms"]) < float(plain["pred_tpot_ms"])
    assert parse_run(AGG_MTP_ROW, Calibration()).problem.speculation.draft_tokens == ASSUMED_DRAFT_TOKENS["sglang"]


def test_the_other_fits_leave_speculative_rows_out_with_the_reason():
    rows = _imax_rows()
    dis = DisaggSet.of(rows)
    mtp = {i for i, r in enumerate(rows) if r["spec_decoding"] == "mtp"}
    assert mtp <= set(dis.errors) and all(dis.errors[i] == SPEC_APART.format("mtp") for i in mtp)
    agg = Dataset.of([AGG_MTP_ROW, {**AGG_MTP_ROW, "spec_decoding": "none"}], Calibration())
    assert len(agg.runs) == 0 and set(agg.errors) == {0, 1}  # the plain row has no measurement
    assert agg.errors[0] == SPEC_APART.format("mtp")
    assert SpecSet.of(rows).size == len(mtp) - len(SpecSet.of(rows).errors)


def test_the_acceptance_fit_recovers_the_acceptance_that_made_the_runs():
    truth = Calibration(base=Factors(mtp_acceptance=0.6))
    grid = [dict(batch_size=str(b), isl=str(i), draft_tokens="3") for b in (4, 16, 64, 128)
            for i in ("1024", "4096", "8192")]
    made = predict_rows([{**AGG_MTP_ROW, **g} for g in grid], truth)
    assert not any(r["error"] for r in made)
    rows = [{**r, "silicon_ttft_ms": r["pred_ttft_ms"], "silicon_tpot_ms": r["pred_tpot_ms"]} for r in made]
    ds = SpecSet.of(rows, Calibration())
    assert ds.size == len(grid)
    fitted = fit_spec(ds, Calibration())
    (prof,) = [p for p in fitted.profiles if "mtp_acceptance" in p.factors]
    assert (prof.backend, prof.vendor) == ("sglang", "nvidia")
    assert prof.factors["mtp_acceptance"] == pytest.approx(0.6, abs=0.05)  # pulled a little towards its prior
    err = np.abs(predict_spec_set(ds, fitted)["tpot_ms"] / ds.tpot_ms - 1)
    assert np.median(err) < 0.05
    assert fitted.base == Calibration().base  # only the engine's profile moves


# --- the command line ---------------------------------------------------------------------------------------

SMALL = ["--model", "deepseek-r1", "--cluster", "b200", "--gpus", "8", "--isl", "1024", "--osl", "1024"]


def test_solve_prints_the_speculation_and_the_draft_lengths_compared():
    r = run("solve", *SMALL, "--sla", "40tok/s", "--serving", "agg", "--spec", "mtp")
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("speculation:"))
    assert "MTP modules" in line and "best of 1..4" in line and "calibration, mtp_acceptance" in line
    assert any(x.startswith("tok/s/GPU by draft length") and "none " in x for x in r.stdout.splitlines())
    assert "+ draft " in r.stdout
    plan = run_json("solve", *SMALL, "--sla", "40tok/s", "--serving", "disagg", "--spec", "mtp", "--draft-tokens", "2",
                    "--acceptance", "0.7")
    assert plan["speculation"] == {"method": "mtp", "draft_tokens": 2, "acceptance": 0.7, "draft_model": None}
    assert plan["metrics"]["tokens_per_step"] == pytest.approx(1 + 0.7 + 0.49)
    assert plan["decode"]["memory"]["draft_bytes"] > 0


def test_estimate_and_frontier_take_the_speculation():
    r = run("estimate", "--model", "llama-3.1-70b", "--cluster", "h100-sxm", "--precision", "fp8", "--tp", "4",
            "--concurrency", "16", "--isl", "2000", "--osl", "500", "--spec", "draft:llama-3.1-8b", "--draft-tokens",
            "3")
    assert r.exit_code == 0, r.stderr
    assert "draft model llama-3.1-8b, 3 draft tokens per step (given)" in r.stdout
    r = run("frontier", *SMALL, "--points", "3", "--serving", "agg", "--spec", "mtp", "--draft-tokens", "2")
    assert r.exit_code == 0, r.stderr
    assert "draft k" in r.stdout


@pytest.mark.parametrize("args, words", [
    (["solve", "--draft-tokens", "2"], "go with --spec"),
    (["solve", "--spec", "medusa"], "not a speculation method"),
    (["solve", "--spec", "draft:"], "not a speculation method"),
    (["solve", "--spec", "mtp", "--acceptance", "1.5"], "below 1"),
    (["solve", "--spec", "mtp", "--draft-tokens", "9"], "draft-tokens"),
    (["solve", "--model", "llama-3.1-70b", "--spec", "mtp"], "no multi-token-prediction module"),
    (["solve", "--model", "qwen3-32b", "--spec", "draft:llama-3.1-8b"], "vocabulary"),
    (["solve", "--model", "llama-3.1-70b", "--spec", "draft:no-such-model"], "no-such-model"),
    (["solve", *SMALL, "--spec", "mtp", "--confidence", "0.9"], "speculative"),
    (["estimate", "--csv", str(IMAX), "--spec", "mtp"], "spec_decoding"),
    (["frontier", *SMALL, "--spec", "mtp", "--all-layouts", "--serving", "agg"], "--draft-tokens"),
])
def test_speculation_errors_are_one_line(args, words):
    assert words in error_line(*args)


def test_calibrate_spec_only_fits_the_acceptance_and_refuses_data_without_speculation(tmp_path):
    made = predict_rows([{**AGG_MTP_ROW, "batch_size": str(b)} for b in (2, 4, 8, 16, 32, 64, 96, 128, 192, 256)],
                        Calibration(base=Factors(mtp_acceptance=0.5)))
    path = tmp_path / "mtp.csv"
    measured = [{**r, "silicon_ttft_ms": r["pred_ttft_ms"], "silicon_tpot_ms": r["pred_tpot_ms"]} for r in made]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(measured[0]))
        w.writeheader()
        w.writerows(measured)
    out = tmp_path / "cal.yaml"
    r = run("calibrate", str(path), "--spec-only", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    assert "fitting mtp_acceptance of sglang@nvidia on 10 speculative runs" in r.stderr
    assert out.is_file()
    plain = tmp_path / "plain.csv"
    plain.write_text(path.read_text().replace(",mtp,", ",none,"))
    assert "no rows with speculative decoding" in error_line("calibrate", str(plain), "--spec-only", "-o", str(out))
    assert "give one" in error_line("calibrate", str(path), "--spec-only", "--disagg-only", "-o", str(out))


def test_the_plan_json_schema_holds_the_speculative_fields():
    props = json.loads(run("schema").stdout)["properties"]
    assert "speculation_options" in props and "speculation" in props
