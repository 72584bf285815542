"""Error bars (planner.uncertainty): the interval table from held-out residuals, intervals on every prediction,
and `solve --confidence`, whose pessimistic rule CP-SAT, the oracle and the certificate all apply.

Tests use a synthetic interval table (not the shipped one, which is refitted with the factors), so that
they state what holds for any table.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import calibrate, cost, rules, uncertainty
from planner.audit import random_cases
from planner.calibrate import Dataset, load_calibration, save_calibration
from planner.cli import main
from planner.errors import InfeasibleError, SpecError
from planner.options import tabulate
from planner.runs import PREDICTED_COLUMNS, read_rows
from planner.search import estimate, make_problem, solve
from planner.space import Space
from planner.specs import INTERVAL_METRICS, INTERVAL_PROBS, Calibration, IntervalTable, Parallel

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(model="llama-3.1-8b", cluster="h100-sxm", gpus=8, isl=1000, osl=200, precision="fp8")
SMALL_ARGS = ["--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", "8", "--isl", "1000", "--osl", "200",
              "--precision", "fp8"]


def synthetic_table(seed: int = 0, runs: int = 2000) -> IntervalTable:
    """Skewed residuals whose spread grows with the regime index, each regime's median 0 (so that every
    interval holds the prediction)."""
    rng = np.random.default_rng(seed)
    regime = rng.integers(0, len(uncertainty.REGIMES), runs)
    res = {}
    for m in INTERVAL_METRICS:
        r = rng.gamma(2.0, 0.05 + 0.02 * regime)
        for i in range(len(uncertainty.REGIMES)):
            r[regime == i] -= np.median(r[regime == i])
        res[m] = r
    return uncertainty.table_of(regime, res, "synthetic")


@pytest.fixture(scope="module")
def bars() -> Calibration:
    """The shipped factors with the synthetic table."""
    return load_calibration(None).model_copy(update={"intervals": synthetic_table()})


@pytest.fixture(scope="module")
def bars_file(bars, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bars") / "bars.yaml"
    save_calibration(bars, path)
    return path


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="planner")


# --- the table ---------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(uncertainty.REGIMES) - 1),
                          st.floats(-3, 3, allow_nan=False)), min_size=1, max_size=200),
       st.integers(1, 40), st.floats(0, 1))
def test_the_table_holds_the_quantiles_of_each_regime_or_the_pooled_ones(pairs, min_runs, prob):
    regime = np.array([r for r, _ in pairs])
    r = np.array([x for _, x in pairs])
    t = uncertainty.table_of(regime, {m: r for m in INTERVAL_METRICS}, "test", min_runs=min_runs)
    for i in range(len(uncertainty.REGIMES)):
        own = regime == i
        sample = r[own] if own.sum() >= min_runs else r
        expect = np.interp(prob, INTERVAL_PROBS, np.quantile(sample, INTERVAL_PROBS))
        got = uncertainty.quantile(t, "tpot", prob, np.array([i]))[0]
        assert got == pytest.approx(expect, abs=1e-4 + 1e-9)
        name, n = uncertainty.regime_used(t, i)
        assert (name, n) == ((uncertainty.REGIMES[i], int(own.sum())) if own.sum() >= min_runs else ("all", len(r)))


def test_the_table_of_known_residuals_gives_their_quantiles():
    # 101 runs of one regime with residuals -0.5 .. 0.5: the quantile at p is p - 0.5
    regime = np.full(101, 1)
    r = np.linspace(-0.5, 0.5, 101)
    t = uncertainty.table_of(regime, {m: r for m in INTERVAL_METRICS}, "known", min_runs=50)
    for p in (0.0, 0.1, 0.5, 0.9, 0.97, 1.0):
        assert uncertainty.quantile(t, "ttft", p, np.array([1]))[0] == pytest.approx(p - 0.5, abs=1e-4)
    assert {row.regime for row in t.rows} == {"all", uncertainty.REGIMES[1]}
    assert all(row.runs == 101 for row in t.rows)


def test_runs_not_predicted_are_left_out_and_a_table_needs_some():
    ds = Dataset.of(read_rows(REPO / "tests" / "data" / "qwen3-32b-h100-vllm.csv"), Calibration())
    pred = calibrate.predict(ds, Calibration())
    pred = {k: np.where(np.arange(len(v)) == 0, np.nan, v) for k, v in pred.items()}
    t = uncertainty.interval_table(ds, pred, "two of three", min_runs=1)
    assert {row.runs for row in t.rows if row.regime == "all"} == {2}
    with pytest.raises(SpecError):
        uncertainty.interval_table(ds, {k: np.full(3, np.nan) for k in pred}, "none")


@pytest.mark.parametrize("bad", [
    {"probs": [0.0, 0.5]},  # does not reach 1
    {"rows": []},  # no 'all' rows
])
def test_a_malformed_table_is_refused(bad):
    good = synthetic_table().model_dump()
    with pytest.raises(ValueError):
        IntervalTable(**{**good, **bad})


# --- intervals on predictions ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.floats(0.05, 0.95), st.floats(0.01, 0.04))
def test_intervals_contain_the_prediction_and_widen_with_the_level(level, step):
    t = synthetic_table()
    regime = np.arange(len(uncertainty.REGIMES))
    x = {m: np.full(len(regime), 10.0) for m in INTERVAL_METRICS}
    narrow, wide = uncertainty.intervals(t, regime, x, level), uncertainty.intervals(t, regime, x, level + step)
    for m in INTERVAL_METRICS:
        lo, hi = narrow[m]
        assert np.all(lo <= 10.0) and np.all(hi >= 10.0)  # each regime's median residual is 0
        assert np.all(wide[m][0] <= lo) and np.all(wide[m][1] >= hi)


def test_every_prediction_carries_intervals_and_none_without_a_table(bars):
    par = Parallel(tp=2, dp=4)
    plan = estimate(make_problem(**SMALL, calibration=bars), parallel=par, concurrency=32)
    m = plan.metrics
    assert m.interval_level == uncertainty.DEFAULT_LEVEL and m.interval_regime in ("all", *uncertainty.REGIMES)
    for x, (lo, hi) in ((m.tpot_ms, m.tpot_interval_ms), (m.ttft_ms, m.ttft_interval_ms),
                        (m.tokens_per_s_per_gpu, m.tokens_per_s_per_gpu_interval)):
        assert lo < x < hi
    bare = estimate(make_problem(**SMALL, calibration=bars.model_copy(update={"intervals": None})), parallel=par,
                    concurrency=32).metrics
    assert bare.interval_level is None and bare.tpot_interval_ms is None and bare.ttft_interval_ms is None
    assert (bare.tpot_ms, bare.ttft_ms) == (m.tpot_ms, m.ttft_ms)


def test_estimate_prints_intervals_and_csv_adds_their_columns(bars_file, tmp_path):
    r = run("estimate", *SMALL_ARGS, "--tp", 2, "--dp", 4, "--concurrency", 32, "--calibration", bars_file)
    assert r.exit_code == 0, r.stderr
    assert "TPOT" in r.stdout and "(80% interval " in r.stdout and "intervals from held-out errors" in r.stdout
    out = tmp_path / "pred.csv"
    r = run("estimate", "--csv", REPO / "tests" / "data" / "qwen3-32b-h100-vllm.csv", "--out", out,
            "--calibration", bars_file)
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0])[-len(PREDICTED_COLUMNS):] == list(PREDICTED_COLUMNS)
    for row in rows:
        for m in ("ttft_ms", "tpot_ms", "tokens_per_s_per_gpu"):
            stem, unit = (m[:-3], "_ms") if m.endswith("_ms") else (m, "")
            lo, x, hi = (float(row[f"pred_{stem}{k}{unit}"]) for k in ("_lo", "", "_hi"))
            assert lo < x < hi
        assert row["pred_interval_level"] == "0.8"


def test_no_table_no_interval_text(tmp_path):
    cal = tmp_path / "bare.yaml"
    save_calibration(load_calibration(None).model_copy(update={"intervals": None}), cal)
    r = run("estimate", *SMALL_ARGS, "--tp", 2, "--dp", 4, "--calibration", cal)
    assert r.exit_code == 0 and "interval" not in r.stdout


def test_frontier_points_and_csv_carry_intervals(bars_file, tmp_path):
    out = tmp_path / "f.csv"
    r = run("frontier", *SMALL_ARGS, "--points", 3, "--calibration", bars_file, "--csv", out, "-q")
    assert r.exit_code == 0, r.stderr
    assert "80% interval" in r.stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    for row in rows:
        assert float(row["tokens_per_s_per_gpu_lo"]) < float(row["tokens_per_s_per_gpu"]) < float(
            row["tokens_per_s_per_gpu_hi"])
        assert float(row["tpot_lo_ms"]) < float(row["tpot_ms"]) < float(row["tpot_hi_ms"])


# --- solve --confidence ------------------------------------------------------------------------------------


def test_confidence_plans_for_the_pessimistic_end_and_says_what_it_costs(bars):
    p = make_problem(**SMALL, min_tokens_per_s_per_user=60, max_ttft_s=1.0, calibration=bars)
    central = solve(p)[0]
    plan = solve(p, confidence=0.9)[0]
    c = plan.confidence
    assert c is not None and c.level == 0.9 and central.confidence is None
    assert 1000 / c.tpot_ms >= 60 and c.ttft_ms <= 1000.0
    assert c.tpot_ms > plan.metrics.tpot_ms  # the synthetic q90 is positive in every regime
    assert plan.metrics.tokens_per_s_per_gpu <= central.metrics.tokens_per_s_per_gpu
    assert c.central_tokens_per_s_per_gpu == pytest.approx(central.metrics.tokens_per_s_per_gpu)
    assert c.cost == pytest.approx(1 - plan.metrics.tokens_per_s_per_gpu / central.metrics.tokens_per_s_per_gpu)
    # the rule checker, on the plan as found, agrees
    q = uncertainty.with_confidence(p, 0.9)
    assert not rules.violations(q, plan.parallel, plan.batch.micro_batch, plan.batch.chunk_tokens)
    assert plan.solver.certified is True


def test_a_higher_confidence_never_plans_more_throughput(bars):
    p = make_problem(**SMALL, min_tokens_per_s_per_user=40, calibration=bars)
    values = [solve(p, confidence=c)[0].metrics.tokens_per_s_per_gpu for c in (0.5, 0.8, 0.95)]
    assert values == sorted(values, reverse=True)


def test_the_table_holds_the_pessimistic_figures_the_rule_checker_computes(bars):
    p = uncertainty.with_confidence(make_problem(**SMALL, min_tokens_per_s_per_user=30, calibration=bars), 0.9)
    t = tabulate(p, Space.of(p))
    ks = np.random.default_rng(1).choice(t.size, 40, replace=False)
    for k in ks:
        g = cost.metrics_grid(p, t.parallel(int(k)), int(t.micro_batch_of(k)), int(t.chunk_of(k)))
        tpot, ttft = rules.checked_times(p, g)
        assert t.tpot_hi_s[k] == pytest.approx(float(tpot), rel=1e-12)
        assert t.ttft_hi_s[k] == pytest.approx(float(ttft), rel=1e-12) or math.isinf(t.ttft_hi_s[k])
    plain = tabulate(make_problem(**SMALL, calibration=bars), Space.of(p))
    assert plain.tpot_hi_s is plain.tpot_s  # no confidence: no second column


CONFIDENCE_CASES = [c for c in random_cases(40, seed=31, max_gpus=16) if not c.model.startswith("gpt-moe")][:10]
CONFIDENCE_SPACE = dict(chunks=(256, 1024, 4096, 8192), micro_batches=(1, 2, 4, 8, 16, 32, 64, 128, 256))
"""A coarser batch grid than the default: the oracle stays quick on a loaded machine."""


@pytest.mark.parametrize("case", CONFIDENCE_CASES, ids=lambda c: f"{c.model}-{c.cluster}-{c.gpus}")
def test_cpsat_matches_the_oracle_with_confidence(case, bars):
    p = make_problem(model=case.model, cluster=case.cluster, gpus=case.gpus, isl=case.isl, osl=case.osl,
                     precision=case.precision, min_tokens_per_s_per_user=case.sla, max_ttft_s=case.ttft,
                     calibration=bars)
    out = {}
    for method in ("cpsat", "exhaustive"):
        try:
            plan = solve(p, method=method, confidence=0.9, **CONFIDENCE_SPACE)[0]
            out[method] = ("plan", plan.metrics.tokens_per_s_per_gpu)
            assert plan.solver.certified is not False
        except InfeasibleError as e:
            out[method] = (e.reason, *sorted(e.reachable.values()))
    a, b = out["cpsat"], out["exhaustive"]
    assert a[0] == b[0] and np.allclose(a[1:], b[1:], rtol=1e-9), (case.command(), a, b)


@pytest.mark.parametrize("bad", [0, 0.49, 1, 1.5, float("nan"), float("inf"), -0.9, "0.9", True])
def test_a_bad_confidence_is_one_clear_error(bad, bars):
    p = make_problem(**SMALL, min_tokens_per_s_per_user=20, calibration=bars)
    with pytest.raises(SpecError) as e:
        solve(p, confidence=bad)
    assert "\n" not in str(e.value) and "confidence" in str(e.value)


def test_confidence_without_an_interval_table_is_one_clear_error(bars):
    p = make_problem(**SMALL, calibration=bars.model_copy(update={"intervals": None}))
    with pytest.raises(SpecError, match="no interval table"):
        solve(p, confidence=0.9)


def _one_line_error(*args: object) -> str:
    r = run(*args)
    assert isinstance(r.exception, SystemExit) and r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("bad", ["0", "1", "1.5", "nan", "inf", "0.4", "100%", "ninety", ""])
def test_cli_refuses_a_bad_confidence_in_one_line(bad, bars_file):
    line = _one_line_error("solve", *SMALL_ARGS, "--calibration", bars_file, "--confidence", bad)
    assert "--confidence" in line


def test_cli_confidence_without_a_table_is_one_line(tmp_path):
    cal = tmp_path / "bare.yaml"
    save_calibration(load_calibration(None).model_copy(update={"intervals": None}), cal)
    line = _one_line_error("solve", *SMALL_ARGS, "--calibration", cal, "--confidence", "0.9")
    assert "interval table" in line


def test_cli_solve_with_confidence_says_what_it_costs(bars_file):
    r = run("solve", *SMALL_ARGS, "--sla", "60", "--calibration", bars_file, "--confidence", "90%")
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("confidence 90%"))
    assert "SLA checked at TPOT <= 16.7 ms" in line and "at the 90th percentile" in line
    assert "tokens/s/GPU against the plan at the central estimate" in line
    r = run("solve", *SMALL_ARGS, "--sla", "60", "--calibration", bars_file, "--confidence", "0.9", "--json")
    plan = yaml.safe_load(r.stdout)
    assert plan["confidence"]["level"] == 0.9 and plan["confidence"]["central_tokens_per_s_per_gpu"] > 0
    assert plan["metrics"]["tpot_interval_ms"][0] < plan["metrics"]["tpot_ms"]


def test_unreachable_at_confidence_names_the_pessimistic_figure(bars):
    p = make_problem(**SMALL, min_tokens_per_s_per_user=100_000, calibration=bars)
    reach = {}
    for level in (None, 0.9):
        with pytest.raises(InfeasibleError) as e:
            solve(p, confidence=level)
        assert e.value.reason == "sla" and ("pessimistic end" in str(e.value)) == (level is not None)
        reach[level] = e.value.reachable["tokens_per_s_per_user"]
    assert reach[0.9] < reach[None]  # the synthetic q90 of TPOT is positive


def test_frontier_with_confidence_keeps_every_level_at_the_pessimistic_end(bars_file):
    r = run("frontier", *SMALL_ARGS, "--points", 4, "--calibration", bars_file, "--confidence", "0.9", "--json")
    assert r.exit_code == 0, r.stderr
    f = yaml.safe_load(r.stdout)
    assert f["confidence"] == 0.9
    for pt in f["points"]:
        assert 1000 / pt["confidence"]["tpot_ms"] >= pt["target_tokens_per_s_per_user"] * (1 - 1e-9)


# --- making the table: calibrate --intervals ------------------------------------------------------------------


def test_calibrate_with_lomo_intervals_stores_a_table(tmp_path, monkeypatch):
    """Two models' runs, a fit budget of a few evaluations: each fold is one fit."""
    monkeypatch.setattr(calibrate, "MAX_EVALUATIONS", 2)
    rows = read_rows(REPO / "data" / "calibration.csv")
    pick = {"Qwen/Qwen3-32B": 8, "meta-llama/Llama-3.1-8B-Instruct": 8}
    keep = []
    for row in rows:
        if pick.get(row["model_path"], 0) > 0 and row["system"] == "h100_sxm" and row["backend"] == "trtllm":
            keep.append(row)
            pick[row["model_path"]] -= 1
    assert not any(pick.values()), pick
    data = tmp_path / "two.csv"
    with open(data, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(keep[0]))
        w.writeheader()
        w.writerows(keep)
    out = tmp_path / "cal.yaml"
    r = run("calibrate", data, "-o", out, "--intervals", "lomo", "--calibration", tmp_path / "none.yaml")
    assert r.exit_code == 2  # a missing starting calibration is one line
    r = run("calibrate", data, "-o", out, "--intervals", "lomo")
    assert r.exit_code == 0, r.stderr
    assert "error bars (LOMO: 2 folds" in r.stdout
    cal = load_calibration(out)
    assert cal.intervals is not None and cal.intervals.source.startswith("LOMO: 2 folds")
    pooled = [row for row in cal.intervals.rows if row.regime == "all"]
    assert {row.metric for row in pooled} == set(INTERVAL_METRICS) and {row.runs for row in pooled} == {16}
    # a plain fit of the same data carries no table it did not make
    plain = tmp_path / "plain.yaml"
    assert run("calibrate", data, "-o", plain, "--calibration", out).exit_code == 0
    assert load_calibration(plain).intervals is None


def test_holdout_needs_two_groups():
    ds = Dataset.of(read_rows(REPO / "tests" / "data" / "qwen3-32b-h100-vllm.csv"), Calibration())
    with pytest.raises(SpecError, match="at least 2 models"):
        uncertainty.holdout_predictions(ds, "lomo")
    with pytest.raises(SpecError, match="unknown cross-validation"):
        uncertainty.holdout_predictions(ds, "kfold")


def test_coverage_on_unseen_models_grows_with_the_level():
    ds = Dataset.of(read_rows(REPO / "data" / "calibration.csv"), Calibration())
    pred = calibrate.predict(ds, load_calibration(None))
    low, high = (uncertainty.unseen_coverage(ds, pred, level) for level in (0.5, 0.95))
    for k in INTERVAL_METRICS:
        assert 0.2 < low[k] < high[k] <= 1.0
    pooled = uncertainty.unseen_coverage(ds, pred, 0.8, regime=np.zeros(len(ds.runs), int))
    assert all(0.5 < v < 1 for v in pooled.values())
