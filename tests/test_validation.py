"""Validation statistics of the accuracy report (planner.validation) on small synthetic runs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import lsq_linear
from scipy.stats import spearmanr

from planner import cost
from planner.calibrate import Dataset, error_table
from planner.specs import Calibration
from planner.validation import (
    CONFIG_COLUMNS,
    SLA_LEVELS,
    Stat,
    abs_errors,
    check_medians,
    config_key,
    groups_of,
    implied_noise,
    isotonic,
    mean_regret,
    median_throughput_ratio,
    memory_need,
    memory_slice,
    monotone_floor,
    monotone_floor_check,
    noisy_regret,
    odd_concurrency,
    osl_check,
    osl_pairs,
    rank_correlations,
    ranks,
    regret_summaries,
    regrets,
    repeat_pairs,
    restrict,
    rho_summary,
    slices,
    spearman,
    stats,
    weak_spots,
    within_group_errors,
    worst_groups,
)


def _row(**over: str) -> dict[str, str]:
    """A calibration.csv row: Llama-3.1-70B FP8 with TensorRT-LLM on 4 H200 (osl 101: (osl - 1) * TPOT = 100 TPOT)."""
    row = dict(model_path="meta-llama/Llama-3.1-70B", system="h200_sxm", backend="trtllm", backend_version="1.0",
               precision="fp8", gemm_quant_mode="fp8", moe_quant_mode="fp8", isl="1024", osl="101",
               batch_size="8", tp_size="4", pp_size="1", attention_dp_size="", moe_tp_size="", moe_ep_size="",
               silicon_ttft_ms="1000", silicon_tpot_ms="10")
    row.update(over)
    return row


def _exact(ds: Dataset) -> dict[str, np.ndarray]:
    """Predictions equal to the measurements."""
    return {"ttft_ms": ds.ttft_ms.copy(), "tpot_ms": ds.tpot_ms.copy(), "tokens_per_s_per_gpu": ds.measured_throughput}


@pytest.fixture(scope="module")
def group() -> Dataset:
    """One group of 3 runs on 4 GPUs, TTFT 1000 ms, osl 101, so tokens/s/GPU = batch * 101 / (1 + TPOT / 10) / 4:
    A: batch 8, TPOT 10 ms (100 tok/s/user), 101 tok/s/GPU; B: batch 16, TPOT 20 ms (50), 134.67;
    C: batch 32, TPOT 40 ms (25), 161.6. Plus a group of 3 runs (isl 2048) no SLA level is met by (TPOT 200 ms)."""
    rows = [_row(batch_size="8", silicon_tpot_ms="10"), _row(batch_size="16", silicon_tpot_ms="20"),
            _row(batch_size="32", silicon_tpot_ms="40")]
    rows += [_row(isl="2048", batch_size=b, silicon_tpot_ms="200") for b in ("8", "16", "32")]
    ds = Dataset.of(rows, Calibration())
    assert not ds.errors and len(ds.runs) == 6
    return ds


# --- errors ---------------------------------------------------------------------------------------------


def test_measured_throughput_of_the_fixture(group: Dataset):
    assert np.allclose(group.measured_throughput[:3], [101, 16 * 101 / 3 / 4, 161.6])


def test_abs_errors_and_stats(group: Dataset):
    pred = _exact(group)
    pred["tpot_ms"] = group.tpot_ms * np.array([1.1, 0.8, 1.0, 1.0, 1.0, 1.3])
    pred["ttft_ms"] = group.ttft_ms * 2
    err = abs_errors(group, pred)
    assert np.allclose(err["tpot"], [0.1, 0.2, 0, 0, 0, 0.3])
    assert np.allclose(err["ttft"], 1.0)
    assert np.allclose(err["thr"], 0)
    s = stats(group, pred, np.ones(6, bool))
    assert set(s) == {"tpot", "ttft", "thr"}
    assert s["tpot"].median == pytest.approx(0.05)  # of 0, 0, 0, 0.1, 0.2, 0.3
    assert s["tpot"].p90 == pytest.approx(0.25)  # linear interpolation between 0.2 and 0.3
    first = stats(group, pred, np.arange(6) < 3)
    assert first["tpot"].median == pytest.approx(0.1)


def test_stat_of_log_gaps():
    s = Stat.of_log_gaps(np.log([2.0, 0.5, 1.0]))  # |gaps| ln 2, ln 2, 0
    assert s.median == pytest.approx(1.0)
    assert s.p90 == pytest.approx(1.0)


def test_slices_and_medians_agree_with_error_table(group: Dataset):
    pred = _exact(group)
    pred["tpot_ms"] = group.tpot_ms * np.array([1.1, 0.8, 1.0, 1.0, 1.0, 1.3])
    names = [(by, g) for by, g, _ in slices(group)]
    assert names[0] == ("all", "all")
    assert ("system", "h200-sxm") in names and ("backend", "trtllm") in names and ("model", "llama-3.1-70b") in names
    assert ("regime", "batch > 16") in names and ("regime", "isl <= 2048") in names
    assert ("regime", "isl > 2048") not in names  # empty slices left out
    assert len(names) == len(error_table(group, pred))
    check_medians(group, pred)


def test_restrict_and_throughput_ratio(group: Dataset):
    pred = _exact(group)
    pred["tokens_per_s_per_gpu"] = group.measured_throughput * np.array([1, 2, 3, 4, 5, 6])
    assert median_throughput_ratio(group, pred) == pytest.approx(3.5)
    sub, sp = restrict(group, pred, np.arange(6) >= 4)
    assert len(sub.runs) == 2 and np.allclose(sp["tokens_per_s_per_gpu"] / sub.measured_throughput, [5, 6])


def test_weak_spots_rank_by_throughput_error(group: Dataset):
    pred = _exact(group)
    pred["tokens_per_s_per_gpu"] = group.measured_throughput * np.array([1, 1, 1.5, 1, 1, 1.5])
    spots = weak_spots(group, pred, min_runs=2, top=10)
    assert spots[0].thr >= spots[-1].thr
    top = {(w.by, w.group): w for w in spots}
    assert top[("regime", "batch > 16")].thr == pytest.approx(0.5) and top[("regime", "batch > 16")].runs == 2
    assert weak_spots(group, pred, min_runs=7) == []


# --- ranking --------------------------------------------------------------------------------------------


def test_groups_of(group: Dataset):
    keys = [k for k, _ in groups_of(group)]
    assert keys == [("llama-3.1-70b", "h200-sxm", "trtllm", 1024, 101),
                    ("llama-3.1-70b", "h200-sxm", "trtllm", 2048, 101)]
    assert [list(idx) for _, idx in groups_of(group)] == [[0, 1, 2], [3, 4, 5]]
    assert groups_of(group.subset(np.arange(6) != 0))[0][0][3] == 2048  # 2 runs left: too small a group


def test_ranks_average_ties():
    assert list(ranks(np.array([10.0, 20.0, 20.0, 30.0]))) == [1, 2.5, 2.5, 4]
    assert list(ranks(np.array([3.0, 1.0, 3.0, 3.0]))) == [3, 1, 3, 3]


def test_spearman_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x) == pytest.approx(1)
    assert spearman(x, x[::-1]) == pytest.approx(-1)
    assert np.isnan(spearman(x, np.ones(5)))
    # with ties: centred ranks (-1.5, 0, 0, 1.5) and (-1.5, -0.5, 0.5, 1.5): 4.5 / sqrt(4.5 * 5)
    rho = spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert rho == pytest.approx(4.5 / np.sqrt(22.5))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(-5, 5)), min_size=3, max_size=12))
def test_spearman_matches_scipy_and_is_invariant(pairs):
    a = np.array([p[0] for p in pairs], float)
    b = np.array([p[1] for p in pairs], float)
    rho = spearman(a, b)
    if len(set(a)) < 2 or len(set(b)) < 2:
        assert np.isnan(rho)
        return
    assert -1 - 1e-12 <= rho <= 1 + 1e-12
    assert rho == pytest.approx(spearmanr(a, b).statistic, abs=1e-9)
    assert spearman(np.exp(a) + 3, b ** 3) == pytest.approx(rho, abs=1e-9)  # strictly increasing transforms
    assert spearman(-a, b) == pytest.approx(-rho, abs=1e-9)


def test_rank_correlations_and_summary(group: Dataset):
    pred = _exact(group)
    rc = rank_correlations(group, pred)
    assert [(n, round(r, 9)) for _, n, r in rc] == [(3, 1.0), (3, 1.0)]
    pred["tokens_per_s_per_gpu"][3:] = pred["tokens_per_s_per_gpu"][3:][::-1].copy()  # second group backwards
    rho = [r for _, _, r in rank_correlations(group, pred)]
    assert rho == pytest.approx([1, -1])
    s = rho_summary(group, pred)
    assert (s.groups, s.runs, s.undefined) == (2, 6, 0)
    assert s.median == pytest.approx(0) and s.share_good == 0.5 and s.share_negative == 0.5
    assert [r for _, _, r in worst_groups(group, pred, top=1)] == pytest.approx([-1])
    pred["tokens_per_s_per_gpu"] = np.ones(6)
    s = rho_summary(group, pred)
    assert (s.groups, s.undefined) == (2, 2) and np.isnan(s.median)
    assert worst_groups(group, pred) == []


def test_within_group_errors_remove_a_groups_bias(group: Dataset):
    pred = _exact(group)
    pred["tpot_ms"] = group.tpot_ms * np.array([1.5, 1.5, 1.5, 0.8, 0.8, 0.8])  # a bias per group only
    runs, errors = within_group_errors(group, pred)
    assert runs == 6
    as_is, within = errors["tpot"]
    assert as_is == pytest.approx(0.35)  # median of 0.2, 0.2, 0.2, 0.5, 0.5, 0.5
    assert within == pytest.approx(0, abs=1e-12)
    assert errors["ttft"] == pytest.approx((0, 0), abs=1e-12)
    runs, errors = within_group_errors(group.subset(np.arange(6) < 2), pred)
    assert runs == 0 and np.isnan(errors["tpot"][0])


# --- decision regret ------------------------------------------------------------------------------------


def _by_sla(rs) -> dict[float, object]:
    out = {r.sla: r for r in rs}
    assert len(out) == len(rs)
    return out


def test_regret_zero_for_exact_predictions_and_skips(group: Dataset):
    rs, skipped = regrets(group, _exact(group))
    assert [r.sla for r in rs] == list(SLA_LEVELS)  # the first group only: the second meets no SLA
    assert all(r.regret == 0 and r.outcome == "ok" for r in rs)
    assert skipped == Counter({sla: 1 for sla in SLA_LEVELS})
    by = _by_sla(rs)
    # SLA 10: every run meets it, best C: a random pick loses 1 - 101/161.6 = 0.375 (A), 1/6 (B), 0 (C)
    assert by[10.0].random_pick == pytest.approx((0.375 + 1 / 6) / 3)
    # SLA 100: only A (1000 / 10 ms = 100 tok/s/user) meets it; picking B or C misses (regret 1)
    assert by[100.0].random_pick == pytest.approx(2 / 3)
    assert mean_regret(group, _exact(group)) == 0


def test_regret_of_a_wrong_pick(group: Dataset):
    pred = _exact(group)
    # B predicted fastest in tokens/s/GPU and at 111 tok/s/user (9 ms): measured it is 134.67 and 50 tok/s/user
    pred["tpot_ms"] = group.tpot_ms * np.array([1, 9 / 20, 1, 1, 1, 1])
    pred["tokens_per_s_per_gpu"] = np.array([101, 200, 161.6, 1, 1, 1])
    by = _by_sla(regrets(group, pred)[0])
    assert by[10.0].regret == pytest.approx(1 / 6) and by[20.0].regret == pytest.approx(1 / 6)  # B, not C
    assert by[35.0].regret == 0 and by[50.0].regret == 0  # B is the best that meets 35 and 50
    assert by[100.0].outcome == "pick misses SLA" and by[100.0].regret == 1
    assert by[100.0].shortfall == pytest.approx(1)  # 100 / 50 - 1
    summary = {s.sla: s for s in regret_summaries(group, pred)}
    assert summary[None].pairs == 5 and summary[None].skipped == 5 and summary[None].misses == 1
    assert summary[None].mean == pytest.approx((2 / 6 + 1) / 5)
    assert summary[None].share_zero == pytest.approx(2 / 5) and summary[None].shortfall == pytest.approx(1)
    assert summary[35.0].pairs == 1 and np.isnan(summary[35.0].shortfall)


def test_regret_none_predicted(group: Dataset):
    pred = _exact(group)
    pred["tpot_ms"] = np.full(6, 1000.0)  # 1 tok/s/user predicted everywhere
    rs, _ = regrets(group, pred)
    assert all(r.outcome == "none predicted" and r.regret == 1 for r in rs)
    assert {s.sla: s.none_predicted for s in regret_summaries(group, pred)}[None] == 5
    empty = regret_summaries(group.subset(np.arange(6) >= 3), pred)
    assert all(s.pairs == 0 and s.skipped == (5 if s.sla is None else 1) and np.isnan(s.mean) for s in empty)


# --- repeatability --------------------------------------------------------------------------------------


def test_config_key():
    row = _row()
    assert len(config_key(row)) == len(CONFIG_COLUMNS)
    assert config_key(row) == config_key({**row, "batch_size": " 8 ", "backend_version": "2.0", "id": "x"})
    assert config_key(row) != config_key({**row, "batch_size": "16"})
    assert config_key(row, ("batch_size",)) == config_key({**row, "batch_size": "16"}, ("batch_size",))


def test_repeat_pairs_find_duplicated_configurations():
    rows = [_row(), _row(), _row(silicon_tpot_ms="20", silicon_ttft_ms="500"),  # the copy counts once
            _row(silicon_tpot_ms="40", backend_version="2.0"), _row(batch_size="16")]
    tpot, ttft, same = repeat_pairs(Dataset.of(rows, Calibration()))
    # three distinct measurements of batch 8: TPOT 10, 20, 40 ms -> three pairs; batch 16 alone
    assert sorted(np.round(tpot / np.log(2), 9)) == [1, 1, 2]
    assert sorted(np.round(ttft / np.log(2), 9)) == [0, 1, 1]
    assert sorted(same) == [False, False, True]
    assert implied_noise(tpot) == pytest.approx(np.log(2) / (0.6745 * np.sqrt(2)))
    assert len(repeat_pairs(Dataset.of([_row(), _row()], Calibration()))[0]) == 0


def test_noisy_regret_without_noise_is_zero(group: Dataset):
    assert noisy_regret(group, 0.0, 0.0, seeds=3) == 0
    assert 0 <= noisy_regret(group, 0.5, 0.5, seeds=3) <= 1


def test_isotonic_by_hand():
    assert np.allclose(isotonic(np.array([1.0, 3.0, 2.0, 4.0])), [1, 2.5, 2.5, 4])
    assert np.allclose(isotonic(np.array([3.0, 1.0, 2.0])), [2, 2, 2])
    assert np.allclose(isotonic(np.array([4.0, 3.0, 2.0, 1.0])), [2.5] * 4)
    assert np.allclose(isotonic(np.array([1.0, 2.0, 2.0, 5.0])), [1, 2, 2, 5])
    assert len(isotonic(np.array([]))) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=15))
def test_isotonic_is_the_least_squares_monotone_fit(values):
    y = np.array(values)
    fit = isotonic(y)
    assert len(fit) == len(y)
    assert np.all(np.diff(fit) >= -1e-9)
    assert fit.mean() == pytest.approx(y.mean(), abs=1e-9)
    assert np.allclose(isotonic(fit), fit)
    # independently: z = c + cumulative sums of non-negative steps, least squares by scipy
    n = len(y)
    basis = np.tril(np.ones((n, n)))
    lower = np.r_[-np.inf, np.zeros(n - 1)]
    sol = lsq_linear(basis, y, bounds=(lower, np.full(n, np.inf)), tol=1e-12)
    best = basis @ sol.x
    assert ((fit - y) ** 2).sum() <= ((best - y) ** 2).sum() + 1e-6


def test_monotone_floor_pools_a_series_that_speeds_up():
    # one series at batch 8, 16, 32 where TPOT falls from 8 to 16; a run of another isl is alone in its series
    rows = [_row(batch_size="8", silicon_tpot_ms="10"), _row(batch_size="16", silicon_tpot_ms="2.5"),
            _row(batch_size="32", silicon_tpot_ms="40"), _row(isl="2048", silicon_tpot_ms="7")]
    ds = Dataset.of(rows, Calibration())
    tpot, ttft, shared = monotone_floor(ds)
    assert list(shared) == [True, True, True, False]
    assert np.allclose(tpot, [5, 5, 40, 7])  # geometric mean of 10 and 2.5 (isotonic in log)
    assert np.allclose(ttft, ds.ttft_ms)
    check = monotone_floor_check(ds)
    assert (check.series_runs, check.moved_tpot, check.moved_ttft) == (3, 2, 0)
    assert check.tpot.median == pytest.approx(0.5)  # errors 0.5 (5 vs 10), 1.0 (5 vs 2.5), 0
    assert check.ttft.p90 == pytest.approx(0, abs=1e-12)
    assert 0 <= check.mean_regret <= 1


def test_osl_pairs_compare_measured_with_predicted_ratios():
    rows = [_row(osl="101"), _row(osl="201", silicon_ttft_ms="2000", silicon_tpot_ms="12")]
    ds = Dataset.of(rows, Calibration())
    pred = _exact(ds)
    pairs = osl_pairs(ds, pred)
    assert np.allclose(pairs["ttft"], 0) and np.allclose(pairs["tpot"], 0)
    pred["ttft_ms"] = ds.ttft_ms * np.array([2, 1])  # predicted ratio 2000 / 2000 against measured 1000 / 2000
    pairs = osl_pairs(ds, pred)
    assert pairs["ttft"] == pytest.approx([np.log(0.5)]) and pairs["tpot"] == pytest.approx([0])
    check = osl_check(ds, pred)
    assert check is not None and check.pairs == 1 and check.ttft_off == 1
    assert check.ttft.median == pytest.approx(1.0) and check.least_miss.median == pytest.approx(np.sqrt(2) - 1)
    assert osl_check(Dataset.of([_row()], Calibration()), _exact(Dataset.of([_row()], Calibration()))) is None


# --- memory ---------------------------------------------------------------------------------------------


def test_memory_need_grows_with_concurrency():
    rows = [_row(batch_size="1"), _row(batch_size="64"), _row(batch_size="4096")]
    ds = Dataset.of(rows, Calibration())
    need, fixed, usable = memory_need(ds, Calibration())
    assert need[0] == pytest.approx(fixed[0])
    assert need[0] < need[1] < need[2] and np.allclose(fixed, fixed[0])
    assert np.allclose(usable, cost.usable_bytes(ds.runs[0].problem))
    assert need[2] > usable[2] > need[0]  # 4096 requests of 1125 tokens do not fit on 4 H200
    m = memory_slice(ds, _exact(ds), need, usable, need > usable)
    assert m is not None and m.runs == 1 and m.ttft_error == 0
    assert m.need_over_usable == pytest.approx(need[2] / usable[2]) and m.measured_tokens_per_s_per_user == 100
    assert memory_slice(ds, _exact(ds), need, usable, np.zeros(3, bool)) is None


def test_memory_need_counts_requests_per_pipeline_rank():
    ds = Dataset.of([_row(pp_size="2", batch_size="16")], Calibration())
    r = ds.runs[0]
    need, fixed, _ = memory_need(ds, Calibration())
    per_rank = cost.memory_breakdown(r.problem, r.parallel, 8.0, r.chunk)["per_gpu_bytes"]  # 16 requests over 2 stages
    assert need[0] == pytest.approx(float(per_rank)) and need[0] > fixed[0]


def test_odd_concurrency():
    # silicon_concurrency = batch * tp is taken as the concurrency; with pp 2 the replica has 8 GPUs, not 4
    odd = _row(pp_size="2", batch_size="8", silicon_data_source="x; silicon_concurrency=32")
    per_gpu = _row(batch_size="8", silicon_data_source="x; silicon_concurrency=32")  # batch * 4 GPUs: explained
    ds = Dataset.of([_row(), odd, per_gpu], Calibration())
    assert not ds.errors and [r.concurrency for r in ds.runs] == [8, 32, 32]
    assert odd_concurrency(ds) == [1]
