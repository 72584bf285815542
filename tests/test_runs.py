"""Measured runs: CSV prediction, the closed loop, calibration fitting and --calibration."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import cost, solve
from planner.calibrate import (
    ANCHOR_FACTORS,
    MIN_ANCHOR_ROWS,
    Dataset,
    anchor_holdout,
    error_table,
    fit,
    fit_anchors,
    holdout_folds,
    load_calibration,
    predict,
    save_calibration,
)
from planner.cli import main
from planner.errors import SpecError
from planner.runs import INPUT_COLUMNS, PREDICTED_COLUMNS, parse_run, predict_rows, predict_runs, read_rows
from planner.search import make_problem
from planner.specs import Calibration, Factors, Profile

DATA = Path(__file__).resolve().parents[1] / "data" / "calibration.csv"


def _row(**over) -> dict[str, str]:
    row = dict(model_path="meta-llama/Llama-3.1-70B", system="h200_sxm", backend="trtllm", backend_version="1.0",
               precision="fp8", gemm_quant_mode="fp8", moe_quant_mode="fp8", isl="1024", osl="1024",
               batch_size="16", tp_size="4", pp_size="1", attention_dp_size="", moe_tp_size="", moe_ep_size="",
               silicon_ttft_ms="300", silicon_tpot_ms="10")
    row.update(over)
    return row


def _write(tmp_path: Path, rows: list[dict[str, str]], name: str = "in.csv") -> Path:
    path = tmp_path / name
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_every_row_kept_in_order_with_reasons():
    rows = [_row(), _row(model_path="no-such-model"), _row(tp_size="3"), _row(batch_size="64"),
            _row(system="gb200", model_path="deepseek-ai/DeepSeek-R1", tp_size="52", moe_tp_size="52",
                 precision="fp4", gemm_quant_mode="nvfp4", moe_quant_mode="nvfp4")]
    out = predict_rows(rows, Calibration())
    assert len(out) == len(rows)
    assert [r["batch_size"] for r in out] == [r["batch_size"] for r in rows]
    assert out[0]["error"] == "" and float(out[0]["pred_tpot_ms"]) > 0 and float(out[0]["pred_ttft_ms"]) > 0
    assert "unknown model 'no-such-model'" in out[1]["error"] and out[1]["pred_tpot_ms"] == ""
    assert "tp must divide the attention heads" in out[2]["error"]
    assert "does not divide 128 heads" in out[4]["error"]  # the data's odd wide-EP records are flagged
    # more requests in flight: slower per token, more tokens per GPU
    assert float(out[3]["pred_tpot_ms"]) > float(out[0]["pred_tpot_ms"])
    assert float(out[3]["pred_tokens_per_s_per_gpu"]) > float(out[0]["pred_tokens_per_s_per_gpu"])


def test_missing_columns_are_named(tmp_path):
    path = _write(tmp_path, [{k: v for k, v in _row().items() if k != "tp_size"}])
    with pytest.raises(SpecError, match="missing columns tp_size"):
        read_rows(path)


def test_tp16_over_two_h200_nodes_predicts():
    """SGLang's two-node DeepSeek-R1 deployment, TP16 over two 8-GPU H200 nodes, is a layout like any other: it
    parses and predicts, slower per token than TP8 in one node at the same batch (its all-reduces cross the
    NICs). A tp group of one and a half nodes is refused with the rule named."""
    r1 = dict(model_path="deepseek-ai/DeepSeek-R1", backend="sglang", precision="fp8", gemm_quant_mode="fp8",
              moe_quant_mode="fp8", batch_size="32")
    out = predict_rows([_row(**r1, tp_size="16", moe_tp_size="16", moe_ep_size="1"),
                        _row(**r1, tp_size="8", moe_tp_size="8", moe_ep_size="1"),
                        _row(model_path="mistralai/Mixtral-8x22B-v0.1", tp_size="12", moe_tp_size="12",
                             moe_ep_size="1")], Calibration())
    assert out[0]["error"] == "" and out[1]["error"] == ""
    assert float(out[0]["pred_tpot_ms"]) > 0 and float(out[0]["pred_ttft_ms"]) > 0
    run = parse_run(_row(**r1, tp_size="16", moe_tp_size="16", moe_ep_size="1"), Calibration())
    assert run.parallel.tp == 16 and run.problem.cluster.scaleup_domain_gpus == 8
    one_domain = run.problem.model_copy(update={"cluster": run.problem.cluster.model_copy(
        update={"scaleup_domain_gpus": 16})})  # the same GPUs, were all 16 on one NVLink switch
    m = run.concurrency
    assert (cost.evaluate(run.problem, run.parallel, m, run.chunk).metrics.tpot_ms
            > cost.evaluate(one_domain, run.parallel, m, run.chunk).metrics.tpot_ms + 1)  # the NICs cost > 1 ms
    assert "must span whole domains" in out[2]["error"] and "tp=12 spans 1.5 8-GPU" in out[2]["error"]


def test_closed_loop_little_law():
    """Few requests: all decode; the KV cache caps how many run, the rest wait (TTFT grows)."""
    cal = Calibration()
    small = parse_run(_row(batch_size="4"), cal)
    pred = predict_runs([small])
    assert pred["decoding_per_rank"][0] == pytest.approx(4, rel=0.05)
    # one H200 holds ~60 GB of KV for llama-3.1-70b fp8 at tp=1: 512 requests of 9k tokens cannot run at once
    big = parse_run(_row(batch_size="512", tp_size="1", isl="8192", osl="1024"), cal)
    fewer = parse_run(_row(batch_size="256", tp_size="1", isl="8192", osl="1024"), cal)
    pb, pf = predict_runs([big]), predict_runs([fewer])
    assert pb["decoding_per_rank"][0] < 128
    assert pb["ttft_ms"][0] > 1.5 * pf["ttft_ms"][0]
    assert pb["tpot_ms"][0] == pytest.approx(pf["tpot_ms"][0], rel=1e-6)  # same running batch


def test_moe_rows_use_expert_precision_and_layout():
    cal = Calibration()
    run = parse_run(_row(model_path="openai/gpt-oss-120b", precision="fp4", gemm_quant_mode="bf16",
                         moe_quant_mode="mxfp4", tp_size="1", attention_dp_size="4", moe_ep_size="4",
                         moe_tp_size="1", system="b200_sxm"), cal)
    assert run.problem.precision.value == "bf16" and run.problem.experts.value == "mxfp4"
    assert run.parallel.attention_dp == 4 and run.parallel.ep == 4
    assert run.problem.kv_precision.value == "fp8"  # trtllm: FP8 KV with a quantised checkpoint (MXFP4 experts)
    bf16 = parse_run(_row(model_path="openai/gpt-oss-120b", precision="bf16", gemm_quant_mode="bf16",
                          moe_quant_mode="bf16", tp_size="4", system="b200_sxm"), cal)
    assert bf16.problem.experts.value == "bf16" and bf16.problem.kv_precision.value == "bf16"  # nothing quantised


@pytest.mark.parametrize("mode, precision, math", [("w4a8_mxfp4_fp8", "w4a8", "fp8"), ("W4A8_AWQ", "w4a8", "fp8"),
                                                   ("mxfp4", "mxfp4", "bf16"), ("int4_awq", "int4", "bf16"),
                                                   ("int4_wo", "int4", "bf16"), ("AWQ", "int4", "bf16"),
                                                   ("gptq", "int4", "bf16"), ("w4a16", "int4", "bf16"),
                                                   ("nvfp4", "fp4", "bf16")])
def test_quant_modes_name_their_math(mode, precision, math):
    """An explicit W4A8 mode multiplies in FP8 on Hopper; plain 4-bit modes run weight-only (W4A16). Every
    alias reads as its canonical precision."""
    run = parse_run(_row(precision="fp4", gemm_quant_mode=mode, system="h100_sxm"), Calibration())
    assert run.problem.precision.value == precision and run.problem.gemm_math == math


@pytest.mark.parametrize("recorded", [dict(precision="fp4", gemm_quant_mode="nvfp4", moe_quant_mode="nvfp4"),
                                      dict(precision="fp4", gemm_quant_mode="", moe_quant_mode=""),
                                      dict(precision="mxfp4", gemm_quant_mode="mxfp4", moe_quant_mode="mxfp4")])
def test_gpt_oss_fp4_rows_are_its_checkpoint(recorded):
    """aiconfigurator's data records openai/gpt-oss-120b as fp4/nvfp4, InferenceMAX as fp4: both ran the only
    published checkpoint, BF16 attention with MXFP4 experts (models/gpt-oss-120b.yaml checkpoint_precision)."""
    for system, expert_math in (("b200_sxm", "fp4"), ("h100_sxm", "bf16")):
        run = parse_run(_row(model_path="openai/gpt-oss-120b", system=system, tp_size="2", **recorded),
                        Calibration())
        p = run.problem
        assert (p.precision.value, p.experts.value) == ("bf16", "mxfp4")
        assert p.gemm_math == "bf16" and p.math_for(p.experts) == expert_math


def test_other_records_stand_as_written():
    """Only a 4-bit float record of an MXFP4 checkpoint is reinterpreted: gpt-oss recorded as fp8, and
    DeepSeek-R1 recorded as NVFP4 (nvidia/DeepSeek-R1-NVFP4 exists), keep their formats."""
    fp8 = parse_run(_row(model_path="openai/gpt-oss-120b", system="h100_sxm", tp_size="4"), Calibration())
    assert (fp8.problem.precision.value, fp8.problem.experts.value) == ("fp8", "fp8")
    r1 = parse_run(_row(model_path="deepseek-ai/DeepSeek-R1", system="b200_sxm", tp_size="8", precision="fp4",
                        gemm_quant_mode="nvfp4", moe_quant_mode="nvfp4"), Calibration())
    assert (r1.problem.precision.value, r1.problem.experts.value) == ("fp4", "fp4")


@pytest.mark.parametrize("model_path", ["moonshotai/Kimi-K2-Instruct", "deepseek-ai/DeepSeek-R1"])
def test_int4_weight_only_rows_parse(model_path):
    """Held-out Kimi rows record moe_quant_mode int4_wo (INT4 weight-only experts beside BF16 GEMMs)."""
    run = parse_run(_row(model_path=model_path, system="h200_sxm", tp_size="8", precision="int4",
                         gemm_quant_mode="bf16", moe_quant_mode="int4_wo"), Calibration())
    p = run.problem
    assert (p.precision.value, p.experts.value, p.math_for(p.experts)) == ("bf16", "int4", "bf16")
    pred = predict_runs([run])
    assert np.isfinite(pred["tpot_ms"][0]) and pred["tpot_ms"][0] > 0


def test_unknown_quant_mode_lists_the_known_ones():
    with pytest.raises(SpecError, match=r"unknown quantisation 'int3'.*awq.*int4_wo.*mxfp4.*nvfp4"):
        parse_run(_row(gemm_quant_mode="int3"), Calibration())


def test_profiles_override_base_by_specificity():
    cal = Calibration(base=Factors(hbm_efficiency=0.5), profiles=[
        Profile(backend="vllm", factors={"hbm_efficiency": 0.6}),
        Profile(system="h100-sxm", factors={"hbm_efficiency": 0.7}),
        Profile(system="h100-sxm", backend="vllm", factors={"hbm_efficiency": 0.8})])
    assert cal.factors_for("b200", "trtllm").hbm_efficiency == 0.5
    assert cal.factors_for("b200", "vllm").hbm_efficiency == 0.6
    assert cal.factors_for("h100-sxm", "sglang").hbm_efficiency == 0.7
    assert cal.factors_for("h100-sxm", "vllm").hbm_efficiency == 0.8
    with pytest.raises(ValueError, match="unknown factors"):
        Profile(factors={"magic": 1.0})
    with pytest.raises(ValueError):
        Profile(factors={"hbm_efficiency": 3.0})  # out of bounds


def test_generation_vendor_and_format_profiles_match_their_clusters():
    """A generation's profile applies to every GPU of the generation (H100 and H200 share Hopper's), a format's
    within it only to GEMMs of that format, an engine's vendor build only on that vendor's GPUs."""
    cal = Calibration(base=Factors(compute_efficiency=0.5), profiles=[
        Profile(generation="hopper", factors={"compute_efficiency": 0.6, "hbm_efficiency": 0.9}),
        Profile(generation="hopper", math="fp8", factors={"compute_efficiency": 0.45}),
        Profile(backend="sglang", vendor="amd", factors={"layer_overhead_us": 30.0})])
    kw = dict(gpus=8, isl=1000, osl=100, model="llama-3.1-70b")
    h100 = make_problem(cluster="h100-sxm", precision="bf16", calibration=cal, backend="sglang", **kw).factors
    h200 = make_problem(cluster="h200-sxm", precision="fp8", calibration=cal, backend="sglang", **kw).factors
    b200 = make_problem(cluster="b200", precision="fp8", calibration=cal, backend="sglang", **kw).factors
    mi = make_problem(cluster="mi300x", precision="fp8", calibration=cal, backend="sglang", **kw).factors
    assert (h100.compute_efficiency, h100.hbm_efficiency) == (0.6, 0.9)
    assert (h200.compute_efficiency, h200.hbm_efficiency) == (0.45, 0.9)
    assert b200.compute_efficiency == 0.5 and b200.layer_overhead_us == Factors().layer_overhead_us
    assert mi.layer_overhead_us == 30.0 and h100.layer_overhead_us == Factors().layer_overhead_us
    assert [p.label for p in cal.profiles] == ["hopper", "hopper/fp8", "sglang@amd"]


def test_a_model_profile_is_the_most_specific_and_only_its_model_s():
    cal = Calibration(base=Factors(compute_efficiency=0.5), profiles=[
        Profile(system="h100-sxm", backend="vllm", factors={"compute_efficiency": 0.8}),
        Profile(model="llama-3.1-8b", system="h100-sxm", backend="vllm", factors={"compute_efficiency": 0.35})])
    assert cal.factors_for("h100-sxm", "vllm", "llama-3.1-8b").compute_efficiency == 0.35
    assert cal.factors_for("h100-sxm", "vllm", "llama-3.1-70b").compute_efficiency == 0.8
    assert cal.factors_for("h100-sxm", "vllm").compute_efficiency == 0.8  # no model: model profiles do not apply
    # the planner's problems pick it up by their model's catalog name
    kw = dict(cluster="h100-sxm", gpus=8, isl=4000, osl=200, precision="fp8", backend="vllm")
    assert make_problem(model="llama-3.1-8b", calibration=cal, **kw).factors.compute_efficiency == 0.35
    assert make_problem(model="llama-3.1-70b", calibration=cal, **kw).factors.compute_efficiency == 0.8


@settings(max_examples=60, deadline=None)
@given(st.sets(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=8),
       st.tuples(st.booleans(), st.booleans(), st.booleans()))
def test_the_most_specific_matching_profile_wins(patterns, query_matches):
    """Profiles keyed on any mix of model/system/backend ('*' or a name): the factors for a deployment
    come from the matching profile with the most specific key (model over system over backend)."""
    names = ("llama-3.1-8b", "h100-sxm", "vllm")
    query = tuple(n if hit else "other" for n, hit in zip(names, query_matches))
    profiles = [Profile(model=names[0] if m else "*", system=names[1] if s else "*", backend=names[2] if b else "*",
                        factors={"compute_efficiency": 0.3 + 0.08 * (4 * m + 2 * s + b)}) for m, s, b in patterns]
    cal = Calibration(base=Factors(compute_efficiency=0.95), profiles=profiles)
    got = cal.factors_for(query[1], query[2], query[0]).compute_efficiency
    matching = [4 * m + 2 * s + b for m, s, b in patterns
                if all(not key or hit for key, hit in zip((m, s, b), query_matches))]
    assert got == pytest.approx(0.3 + 0.08 * max(matching) if matching else 0.95)


def _measured_under(cal: Calibration, rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows with silicon_ttft_ms / silicon_tpot_ms set to what `cal` predicts (a synthetic engine)."""
    out = predict_rows(rows, cal)
    assert not any(r["error"] for r in out)
    return [{**r, "silicon_ttft_ms": r["pred_ttft_ms"], "silicon_tpot_ms": r["pred_tpot_ms"]} for r in out]


def test_anchoring_to_a_few_runs_corrects_that_deployment_only():
    # a deployment whose engine is slower than the starting calibration says: slower GEMMs, larger
    # fixed times; measured on 3 runs, checked on 6 others of the same deployment
    start = Calibration()
    truth = start.model_copy(update={"base": Factors(compute_efficiency=0.35, layer_overhead_us=40.0,
                                                     ttft_overhead_ms=60.0)})
    grid = [dict(batch_size=str(b), tp_size=str(t), isl=str(i)) for b, t, i in
            [(4, 2, "1024"), (64, 4, "4096"), (16, 8, "2048"), (8, 4, "1024"), (32, 2, "2048"), (128, 8, "1024"),
             (2, 2, "4096"), (16, 4, "1024"), (64, 8, "2048")]]
    runs = _measured_under(truth, [_row(**g) for g in grid])
    anchors, checks = Dataset.of(runs[:3], start), Dataset.of(runs[3:], start)
    cal = fit_anchors(anchors, start)
    (prof,) = [p for p in cal.profiles if p.model != "*"]
    assert (prof.model, prof.system, prof.backend, prof.rows) == ("llama-3.1-70b", "h200-sxm", "trtllm", 3)
    assert set(prof.factors) == set(ANCHOR_FACTORS)
    before, after = error_table(checks, predict(checks, start))[0], error_table(checks, predict(checks, cal))[0]
    assert after[3] < 0.5 * before[3] and after[4] < 0.5 * before[4]  # TPOT and TTFT on runs it never saw
    # other deployments keep the starting factors; the base is untouched
    assert cal.base == start.base
    assert cal.factors_for("h200-sxm", "vllm", "llama-3.1-70b") == start.factors_for("h200-sxm", "vllm")
    # anchoring again replaces the deployment's profile rather than stacking a second one
    again = fit_anchors(anchors, cal)
    assert sum(p.model != "*" for p in again.profiles) == 1


@pytest.fixture(scope="module")
def slowed() -> tuple[Calibration, Dataset, dict[str, np.ndarray]]:
    """A starting calibration; 3 runs of a deployment measured slower than it says (slower GEMMs, larger
    fixed times), then MIN_ANCHOR_ROWS runs on another engine; the held-out predictions of all of them."""
    start = Calibration()
    truth = start.model_copy(update={"base": Factors(compute_efficiency=0.35, layer_overhead_us=40.0,
                                                     ttft_overhead_ms=60.0)})
    grid = [dict(batch_size=str(b), tp_size=str(t), isl=i) for b, t, i in [(4, 2, "1024"), (64, 4, "4096"),
                                                                            (8, 4, "1024")]]
    grid += [dict(backend="vllm", batch_size=str(b), tp_size="4") for b in (4, 32, 128)[:MIN_ANCHOR_ROWS]]
    ds = Dataset.of(_measured_under(truth, [_row(**g) for g in grid]), start)
    return start, ds, anchor_holdout(ds, start)


def test_anchor_holdout_predicts_each_run_from_the_other_runs(slowed):
    start, ds, held = slowed
    # run 1 by hand: anchored to runs 0 and 2 of its deployment
    at = np.arange(len(ds.runs))
    by_hand = predict(ds.subset(at == 1), fit_anchors(ds.subset(np.isin(at, [0, 2])), start))
    in_sample = predict(ds, fit_anchors(ds.subset(ds.backends == "trtllm"), start))
    for k in ("ttft_ms", "tpot_ms", "tokens_per_s_per_gpu"):
        assert held[k][1] == pytest.approx(by_hand[k][0], rel=1e-9)
        assert np.all(np.abs(held[k][:3] / in_sample[k][:3] - 1) > 1e-3)  # not the anchoring to all 3 runs
        assert np.isnan(held[k][3:]).all()  # the engine with MIN_ANCHOR_ROWS runs: none can be left out
    # folds: one run each up to max_folds runs, then run k in fold k % max_folds
    assert list(holdout_folds(3)) == [0, 1, 2] and list(holdout_folds(7, 3)) == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="max_folds"):
        anchor_holdout(ds, start, max_folds=MIN_ANCHOR_ROWS)


def test_anchoring_lowers_the_held_out_error_of_a_slowed_deployment(slowed):
    start, ds, held = slowed
    mine = ds.subset(ds.backends == "trtllm")
    before = error_table(mine, predict(mine, start))[0]
    after = error_table(mine, {k: v[ds.backends == "trtllm"] for k, v in held.items()})[0]
    assert min(before[3:]) > 0.2  # the deployment is well off the starting calibration
    assert all(a < 0.6 * b for a, b in zip(after[3:], before[3:]))  # TPOT, TTFT, tokens/s/GPU on unseen runs


def test_calibration_round_trip_and_effect(tmp_path):
    slow = Calibration(base=Factors(hbm_efficiency=0.5, compute_efficiency=0.3))
    path = tmp_path / "slow.yaml"
    save_calibration(slow, path)
    assert load_calibration(path) == slow
    kw = dict(model="llama-3.1-8b", cluster="h100-sxm", gpus=8, isl=1000, osl=200, precision="fp8",
              min_tokens_per_s_per_user=20)
    fast_plan = solve(make_problem(**kw, calibration=Calibration()))[0]
    slow_plan = solve(make_problem(**kw, calibration=path))[0]
    assert slow_plan.metrics.tokens_per_s_per_gpu < fast_plan.metrics.tokens_per_s_per_gpu


def test_shipped_calibration_is_fitted():
    cal = load_calibration(None)
    assert cal.profiles, "the shipped calibration has per-engine/system profiles"
    assert cal.base != Factors()


def test_fit_lowers_the_error_on_a_subset():
    rows = [r for r in read_rows(DATA) if r["system"] == "h100_sxm" and r["backend"] == "vllm"][::4]
    ds = Dataset.of(rows, Calibration())
    assert len(ds.runs) > 20 and len({r.problem.model.name for r in ds.runs}) == 3
    before = error_table(ds, predict(ds, Calibration()))[0]
    cal = fit(ds, Calibration())
    after = error_table(ds, predict(ds, cal))[0]
    assert after[3] < before[3]  # median |TPOT error| drops
    assert after[3] < 0.2


def test_cli_estimate_csv_and_calibrate(tmp_path):
    rows = [_row(batch_size=str(b), tp_size=str(t), silicon_tpot_ms=str(30 / t + b / 8),
                 silicon_ttft_ms=str(100 + 10 * b)) for b in (1, 4, 16, 64) for t in (2, 4, 8)]
    rows.append(_row(model_path="nope"))
    src = _write(tmp_path, rows)
    out = tmp_path / "out.csv"
    r = CliRunner().invoke(main, ["estimate", "--csv", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    got = list(csv.DictReader(open(out)))
    assert len(got) == len(rows) and set(PREDICTED_COLUMNS) <= set(got[0]) and set(INPUT_COLUMNS) <= set(got[0])
    assert got[-1]["error"].startswith("unknown model")
    assert "predicted 12 of 13 rows" in r.stderr
    # to stdout without --out
    r = CliRunner().invoke(main, ["estimate", "--csv", str(src)])
    assert r.exit_code == 0 and len(list(csv.DictReader(io.StringIO(r.stdout)))) == len(rows)
    # calibrate writes a loadable calibration and prints before/after errors
    cal_path = tmp_path / "cal.yaml"
    r = CliRunner().invoke(main, ["calibrate", str(src), "-o", str(cal_path)])
    assert r.exit_code == 0, r.output
    assert "->" in r.stdout and "TPOT" in r.stdout
    cal = yaml.safe_load(cal_path.read_text())
    assert set(cal["base"]) == set(Factors.model_fields)
    r = CliRunner().invoke(main, ["solve", "--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", "8",
                                  "--isl", "1000", "--osl", "200", "--precision", "fp8", "--calibration",
                                  str(cal_path), "--json"])
    assert r.exit_code == 0, r.output


def test_cli_calibrate_anchor(tmp_path):
    rows = _measured_under(Calibration(base=Factors(compute_efficiency=0.3)),
                           [_row(batch_size=str(b), tp_size="4") for b in (4, 16, 64)])
    src = _write(tmp_path, rows)
    out = tmp_path / "mine.yaml"
    r = CliRunner().invoke(main, ["calibrate", str(src), "-o", str(out)])
    assert r.exit_code == 2 and "need 10" in r.stderr and "--anchor" in r.stderr
    r = CliRunner().invoke(main, ["calibrate", str(src), "-o", str(out), "--anchor"])
    assert r.exit_code == 0, r.output
    assert "anchoring llama-3.1-70b on h200-sxm with trtllm to 3 runs" in r.stderr
    assert ("held-out check, llama-3.1-70b on h200-sxm with trtllm (3 runs, each predicted from the other 2): "
            "median |err| TPOT ") in r.stdout and "(start -> anchored)" in r.stdout
    # 2 runs (here as the shipped calibration predicts them, a quick fit): anchored, but none can be left out
    pair = _write(tmp_path, _measured_under(load_calibration(None), [_row(batch_size=b, tp_size="4") for b in "48"]),
                  "pair.csv")
    r = CliRunner().invoke(main, ["calibrate", str(pair), "-o", str(tmp_path / "pair.yaml"), "--anchor"])
    assert r.exit_code == 0, r.output
    assert ("held-out check, llama-3.1-70b on h200-sxm with trtllm: 2 runs, too few to predict one from an "
            f"anchoring to the others (needs {MIN_ANCHOR_ROWS + 1})") in r.stdout and "each predicted" not in r.stdout
    two = _write(tmp_path, [rows[0], {**rows[1], "backend": "vllm"}], "two.csv")  # two deployments, one run each
    r = CliRunner().invoke(main, ["calibrate", str(two), "-o", str(tmp_path / "x.yaml"), "--anchor"])
    assert r.exit_code == 2 and "no (model, system, backend) deployment has 2 usable runs" in r.stderr
    assert "Traceback" not in r.output and not (tmp_path / "x.yaml").exists()
    cal = load_calibration(out)
    assert [p.model for p in cal.profiles].count("llama-3.1-70b") == 1
    assert cal.base == load_calibration(None).base  # on top of the shipped calibration
    r = CliRunner().invoke(main, ["estimate", "--csv", str(src), "--calibration", str(out)])
    assert r.exit_code == 0, r.output
    plan = ["--cluster", "h200-sxm", "--gpus", "8", "--precision", "fp8", "--calibration", str(out)]
    r = CliRunner().invoke(main, ["solve", "--model", "llama-3.1-70b", "--backend", "trtllm", *plan])
    assert r.exit_code == 0 and "anchored to 3 measured runs of llama-3.1-70b on h200-sxm with trtllm" in r.stdout
    r = CliRunner().invoke(main, ["solve", "--model", "llama-3.1-70b", "--backend", "vllm", *plan])
    assert r.exit_code == 0 and "anchored" not in r.stdout  # another engine: not this deployment


def test_readme_anchor_example_runs(tmp_path):
    src = Path(__file__).parent / "data" / "qwen3-32b-h100-vllm.csv"
    r = CliRunner().invoke(main, ["calibrate", str(src), "--anchor", "-o", str(tmp_path / "mine.yaml")])
    assert r.exit_code == 0, r.output
    (prof,) = [p for p in load_calibration(tmp_path / "mine.yaml").profiles if p.model != "*"]
    assert (prof.model, prof.system, prof.backend, prof.rows) == ("qwen3-32b", "h100-sxm", "vllm", 3)
    # the README shows the held-out check as printed
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("held-out check, qwen3-32b on h100-sxm with vllm (3")]
    assert line in (Path(__file__).parents[1] / "README.md").read_text()


def test_cli_csv_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    r = CliRunner().invoke(main, ["estimate", "--csv", str(bad)])
    assert r.exit_code == 2 and "missing columns" in r.stderr and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["solve", "--calibration", str(tmp_path / "none.yaml")])
    assert r.exit_code == 2 and "no such calibration file" in r.stderr
    r = CliRunner().invoke(main, ["calibrate", str(bad), "-o", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "missing columns" in r.stderr


def test_memory_utilization_is_the_headroom():
    kw = dict(model="llama-3.1-70b", cluster="h100-sxm", gpus=8, isl=4000, osl=1000, precision="fp8",
              min_tokens_per_s_per_user=10)
    roomy = solve(make_problem(**kw, memory_utilization=0.95))[0]
    tight = solve(make_problem(**kw, memory_utilization=0.7))[0]
    assert tight.memory.usable_bytes == pytest.approx(0.7 * tight.memory.capacity_bytes)
    assert tight.memory.per_gpu_bytes <= tight.memory.usable_bytes
    assert roomy.metrics.tokens_per_s_per_gpu >= tight.metrics.tokens_per_s_per_gpu
    assert np.isfinite(roomy.metrics.ttft_ms)


def test_fit_recovers_what_runs_determine_and_keeps_what_they_leave_free():
    """The base priors (calibrate.PRIORS) yield to data: a factor the runs pin moves to its true value; scale-out
    efficiency, which no run inside one NVLink domain depends on, stays at its prior."""
    truth = Calibration(base=Factors(compute_efficiency=0.35, scaleout_efficiency=0.35))
    grid = [(b, t, i) for b in (4, 64, 256) for t in (2, 8) for i in ("1024", "8192", "16384")]
    rows = _measured_under(truth, [_row(batch_size=str(b), tp_size=str(t), isl=i) for b, t, i in grid])
    cal = fit(Dataset.of(rows, Calibration()), Calibration())
    # 18 runs against a prior of 0.7: the runs pull it to within 15% of the truth (with 8 runs, ~halfway)
    assert cal.base.compute_efficiency == pytest.approx(0.35, rel=0.15)
    assert cal.base.scaleout_efficiency == pytest.approx(Calibration().base.scaleout_efficiency, rel=1e-3)


def test_a_vllm_expert_parallel_row_without_attention_dp_reads_as_vllm_runs_it():
    """vLLM's MoE group is TP x DP: a row with tp 2, moe_ep 4 (or tp 1, moe_tp 2) and no attention_dp ran attention
    data-parallel over 2 ranks; recorded so by another engine, it breaks the moe_resplit rule."""
    row = _row(model_path="Qwen/Qwen3-235B-A22B-FP8", system="h200_sxm", backend="vllm", tp_size="2",
               attention_dp_size="", moe_tp_size="1", moe_ep_size="4")
    run = parse_run(row, Calibration())
    assert (run.parallel.tp, run.parallel.attention_dp, run.parallel.ep, run.parallel.moe_tp) == (2, 2, 4, 1)
    run = parse_run({**row, "tp_size": "1", "moe_tp_size": "2", "moe_ep_size": "1"}, Calibration())  # no EP
    assert (run.parallel.tp, run.parallel.attention_dp, run.parallel.ep, run.parallel.moe_tp) == (1, 2, 1, 2)
    with pytest.raises(SpecError, match="ep must divide"):
        parse_run({**row, "backend": "sglang"}, Calibration())
