"""Percentiles over requests (planner.percentiles), percentile SLAs in the search, traffic inputs
(planner.traffic: spread lengths, traces, prefix cache) and the percentile columns of `estimate --csv`."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner import cost, percentiles, traffic
from planner.oracle import exhaustive
from planner.search import Searcher, make_problem, solve
from planner.space import Space
from planner.specs import LengthShape, Parallel, Workload
from tests.clirun import error_line, run, run_json


def _problem(model="llama-3.1-70b", cluster="h200-sxm", gpus=8, isl=700, osl=300, sla=None, ttft=None,
             tpot_q=None, ttft_q=None, workload=None):
    return make_problem(model=model, cluster=cluster, gpus=gpus, isl=isl, osl=osl, precision="fp8",
                        min_tokens_per_s_per_user=sla, max_ttft_s=ttft, tpot_percentile=tpot_q,
                        ttft_percentile=ttft_q, workload=workload)


TP1 = Parallel(tp=1, dp=8)


# --- the distributions behind the percentiles -----------------------------------------------------------


def _sampled_ttft(rng, n, fixed, services, weights, pw, lam, pb, span):
    """Monte Carlo of fixed + S + W + B (the analytic model's own components)."""
    s = rng.choice(services, size=n, p=weights)
    w = np.where(rng.random(n) < pw, rng.exponential(1 / lam, n), 0.0)
    b = np.where(rng.random(n) < pb, rng.uniform(0, span, n), 0.0)
    return fixed + s + w + b


@settings(max_examples=30, deadline=None)
@given(pw=st.floats(0.0, 0.95), mean_wait=st.floats(0.001, 2.0), pb=st.floats(0.0, 1.0),
       span=st.floats(0.0, 3.0), q=st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_the_ttft_quantile_is_the_quantile_of_its_components(pw, mean_wait, pb, span, q):
    """The closed-form CDF of fixed + S + W + B and its bisection give the quantile a Monte Carlo of the
    same components gives (within its sampling error)."""
    rng = np.random.default_rng(1)
    services, weights = np.array([0.1, 0.2, 0.5]), np.array([0.5, 0.3, 0.2])
    lam = pw / mean_wait if pw > 0 else np.inf
    got = float(percentiles._ttft_quantile(q, [(1.0, np.array(0.05), services[:, None] * np.ones((3, 1)),
                                                 np.array(pb if span > 0 else 0.0), np.array(span))],
                                           weights, np.array(pw), np.array(lam))[0])
    sample = _sampled_ttft(rng, 400_000, 0.05, services, weights, pw, lam if pw > 0 else 1.0, pb if span > 0 else 0,
                           span)
    lo, hi = np.quantile(sample, [max(q - 0.004, 0), min(q + 0.004, 1)])
    assert lo - 1e-6 <= got <= hi + 1e-6


def test_the_tpot_quantile_matches_a_binomial_monte_carlo():
    """A request's TPOT is d + (c - d) K / n, K ~ Binomial(n, f): the normal approximation's p90/p99 are within
    1% of the sampled ones for the batch sizes plans use."""
    p = _problem()
    rng = np.random.default_rng(2)
    d, c, f = 0.030, 0.090, 0.12
    g = {"decode_pass_s": np.array(d), "carried_pass_s": np.array(c), "prefill_share": np.array(f),
         "tpot_s": np.array((1 - f) * d + f * c)}
    n = p.workload.osl - 1
    sample = d + (c - d) * rng.binomial(n, f, 200_000) / n
    for q in (0.5, 0.9, 0.99):
        assert float(percentiles.agg_tpot_quantile(p, g, q)) == pytest.approx(np.quantile(sample, q), rel=0.01)


def test_without_queueing_or_spread_every_percentile_is_the_mean():
    """Fixed lengths, open traffic, a light load: no wait to speak of, no backlog, so p50 = p99 = the mean."""
    p = _problem(isl=200, osl=1000)
    q = percentiles.agg_percentiles(p, TP1, 1, 8192)
    mean = cost.evaluate(p, TP1, 1, 8192).metrics
    assert q.ttft_ms["p99"] == pytest.approx(mean.ttft_ms, rel=0.01)
    assert q.tpot_ms["p50"] == pytest.approx(mean.tpot_ms, rel=0.01)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 128), chunk=st.sampled_from([512, 2048, 8192]), isl_cv=st.floats(0, 1.5),
       osl_cv=st.floats(0, 1.5), closed=st.booleans(), hit=st.floats(0, 0.9))
def test_percentiles_are_ordered_and_bracket_the_mean(m, chunk, isl_cv, osl_cv, closed, hit):
    w = Workload(isl=2000, osl=400, isl_cv=isl_cv, osl_cv=osl_cv, closed_loop=closed, burstiness=0.2,
                 prefix_hit=hit)
    p = _problem(workload=w)
    g = cost.metrics_grid(p, TP1, m, chunk, tails=True)
    if not np.isfinite(g["ttft_s"]):
        return
    q = percentiles.agg_percentiles(p, TP1, m, chunk)
    for d in (q.ttft_ms, q.tpot_ms):
        values = [d[k] for k in ("p50", "p90", "p95", "p99")]
        assert all(b >= a * (1 - 1e-9) for a, b in zip(values, values[1:]))  # atoms: equal up to the bisection
    assert q.tpot_ms["p99"] >= float(g["tpot_s"]) * 1e3 * (1 - 1e-9)


def test_a_closed_loop_wave_lengthens_the_tail_not_the_median():
    """With burstiness b a request is in a wave with probability b: the p99 TTFT grows with the wave, the
    median stays near the steady one."""
    steady = _problem(workload=Workload(isl=4000, osl=400))
    wavy = _problem(workload=Workload(isl=4000, osl=400, closed_loop=True, burstiness=0.2))
    a, b = (percentiles.agg_percentiles(p, TP1, 64, 4096) for p in (steady, wavy))
    assert b.ttft_ms["p99"] > 3 * a.ttft_ms["p99"]
    assert b.ttft_ms["p50"] < 1.5 * a.ttft_ms["p50"]


def test_length_spread_widens_the_ttft_tail():
    fixed = _problem(workload=Workload(isl=4000, osl=400))
    spread = _problem(workload=Workload(isl=4000, osl=400, isl_cv=1.0))
    a, b = (percentiles.agg_percentiles(p, TP1, 16, 1024) for p in (fixed, spread))
    assert b.ttft_ms["p99"] > 1.5 * a.ttft_ms["p99"]


# --- percentile SLAs in the search -------------------------------------------------------------------------


def test_a_percentile_sla_holds_at_its_percentile_and_costs_throughput():
    """--sla 30ms@p99: the plan's predicted p99 TPOT is within 30 ms; the mean-SLA plan at 30 ms breaks it, so
    the percentile plan serves less per GPU."""
    mean = solve(_problem(isl=4000, osl=200, sla=1000 / 30), serving="agg")[0]
    p99 = solve(_problem(isl=4000, osl=200, sla=1000 / 30, tpot_q=99), serving="agg")[0]
    assert p99.metrics.percentiles.tpot_ms["p99"] <= 30 * (1 + 1e-9)
    assert mean.metrics.percentiles.tpot_ms["p99"] > 30
    assert p99.metrics.tokens_per_s_per_gpu < mean.metrics.tokens_per_s_per_gpu


@pytest.mark.parametrize("case", [
    dict(sla=25, tpot_q=99, ttft=0.45, ttft_q=99),
    dict(sla=40, tpot_q=90, ttft=2.0, ttft_q=95, workload=Workload(isl=2000, osl=300, isl_cv=0.8, osl_cv=0.5)),
    dict(sla=15, tpot_q=99, ttft=1.0, ttft_q=99, workload=Workload(isl=6000, osl=500, closed_loop=True,
                                                                   burstiness=0.3)),
    dict(sla=30, tpot_q=50, ttft=0.3, ttft_q=50, workload=Workload(isl=3000, osl=300, prefix_hit=0.6)),
], ids=["mlperf", "spread", "closed-loop", "prefix-cache"])
def test_cpsat_matches_the_oracle_with_percentile_slas(case):
    p = _problem(gpus=4, **case)
    fast = Searcher(p, Space.of(p)).best()
    slow, _ = exhaustive(p, Space.of(p))
    assert bool(fast) == bool(slow)
    if fast:
        thr = [cost.evaluate(p, c.parallel, c.micro_batch, c.chunk).metrics.tokens_per_s_per_gpu
               for c in (fast[0], slow[0])]
        assert thr[0] == pytest.approx(thr[1], rel=1e-9)


def test_a_disaggregated_ttft_percentile_binds_at_its_load():
    """max_load_at_percentile returns the load whose TTFT percentile meets the limit: at it the percentile is
    within the limit, a little above it is not."""
    p = _problem(ttft=0.5, ttft_q=99)
    service, transfer = np.array([0.05, 0.10, 0.2]), np.array([0.001, 0.001, 0.001])
    rho = percentiles.max_load_at_percentile(p, service, transfer, 0.5, 99)
    at = percentiles.disagg_ttft_quantile(p, service, rho, transfer, 0.99)
    assert np.all(at <= 0.5 + 1e-9)
    inner = rho < cost.MAX_PREFILL_LOAD
    above = percentiles.disagg_ttft_quantile(p, service, rho + 0.01, transfer, 0.99)
    assert np.all(above[inner & (rho > 0)] > 0.5)
    mean_rho = cost.max_prefill_load(p.model_copy(update={"sla": None}), service, transfer, 0.5)
    assert np.all(rho <= mean_rho + 1e-12)  # a p99 limit allows no more load than a mean one


def test_the_mlperf_ask_answers_with_its_predicted_p99s():
    """The issue's MLPerf-style ask: a plan, its predicted p99 TPOT and TTFT within the SLA."""
    out = run_json("solve", "--model", "llama-3.1-70b", "--cluster", "h200-sxm", "--gpus", "8", "--precision",
                   "fp8", "--isl", "700", "--osl", "300", "--sla", "40ms@p99", "--ttft", "450ms@p99")
    q = out["metrics"]["percentiles"]
    assert q["tpot_ms"]["p99"] <= 40 and q["ttft_ms"]["p99"] <= 450
    assert out["sla"]["tpot_percentile"] == 99 and out["sla"]["ttft_percentile"] == 99


# --- traffic inputs ---------------------------------------------------------------------------------------------


def test_length_draws_follow_their_distribution():
    rng = np.random.default_rng(0)
    for shape in (LengthShape.lognormal, LengthShape.normal, LengthShape.uniform):
        w = Workload(isl=1000, osl=200, isl_cv=0.4, osl_cv=0.3, shape=shape)
        isl, osl = traffic.sample_lengths(w, 200_000, rng)
        assert isl.mean() == pytest.approx(1000, rel=0.02) and osl.mean() == pytest.approx(200, rel=0.02)
        assert isl.std() / isl.mean() == pytest.approx(0.4, rel=0.05)
        assert np.quantile(isl, 0.99) == pytest.approx(float(traffic.length_quantiles(w, "isl", 0.99)), rel=0.03)


def test_poisson_arrivals_have_the_rate_and_burstiness_raises_their_spread():
    rng = np.random.default_rng(0)
    for b in (0.0, 0.5):
        gaps = np.diff(traffic.poisson_arrivals(20.0, 100_000, rng, b))
        assert 1 / gaps.mean() == pytest.approx(20.0, rel=0.02)
        assert gaps.var() / gaps.mean() ** 2 == pytest.approx(1 + 4 * b, rel=0.05)


def test_a_trace_sets_the_lengths(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"input_tokens": 100, "output_tokens": 10, "arrival_s": 0.5}\n'
                    '{"input_tokens": 300, "output_tokens": 30, "arrival_s": 0.1}\n')
    t = traffic.load_trace(path)
    assert list(t.isl) == [300, 100] and list(t.arrival_s) == [0.1, 0.5]  # sorted by arrival
    w = traffic.workload_of_trace(t)
    assert (w.isl, w.osl, w.shape) == (200, 20, LengthShape.trace)
    assert float(traffic.length_quantiles(w, "isl", 1.0)) == 300


@pytest.mark.parametrize("text, needle", [
    ("input_tokens,output_tokens\n100,abc\n", "not a number"),
    ("input,output\n100,10\n", "no column input_tokens"),
    ("input_tokens,output_tokens\n0,10\n", "whole numbers from 1"),
])
def test_a_bad_trace_is_one_line(tmp_path, text, needle):
    path = tmp_path / "t.csv"
    path.write_text(text)
    assert needle in error_line("solve", "--trace", str(path))


def test_trace_and_lengths_conflict_is_one_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("input_tokens,output_tokens\n100,10\n")
    assert "--trace sets the lengths" in error_line("solve", "--trace", str(path), "--isl", "500")


@pytest.mark.parametrize("value, needle", [("40ms@p98", "one of p50"), ("40ms@99", "written @p50"),
                                           ("fast@p99", "not a speed")])
def test_bad_percentiles_are_one_line(value, needle):
    assert needle in error_line("solve", "--sla", value)


def test_a_prefix_cache_removes_prefill_work_and_is_charged_in_kv_memory():
    plain = _problem(workload=Workload(isl=4000, osl=400))
    cached = _problem(workload=Workload(isl=4000, osl=400, prefix_hit=0.75))
    big = _problem(workload=Workload(isl=4000, osl=400, prefix_hit=0.75, prefix_cache_tokens=2_000_000))
    a, b, c = (cost.evaluate(p, TP1, 32, 2048) for p in (plain, cached, big))
    assert b.metrics.ttft_ms < 0.5 * a.metrics.ttft_ms
    assert b.metrics.prefill_load == pytest.approx(0.25 * a.metrics.prefill_load)
    def per_request(p):
        return cost.kv_cache_bytes_per_gpu(p, 1, 2) - cost.kv_cache_bytes_per_gpu(p, 1, 1)

    assert per_request(cached) < 0.5 * per_request(plain)  # a shared prefix is stored once, not per request
    assert c.memory.kv_cache_bytes > b.memory.kv_cache_bytes + 100e9  # 2M cached tokens of a 70B model


def test_estimate_csv_writes_percentile_columns(tmp_path):
    rows = [r for r in csv.DictReader(open("data/inferencemax.csv")) if r["mode"] == "agg"][:5]
    path = tmp_path / "in.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    result = run("estimate", "--csv", str(path))
    assert result.exit_code == 0, result.stderr
    got = list(csv.DictReader(io.StringIO(result.stdout)))
    for r in got:
        if r["pred_tpot_ms"]:
            assert float(r["pred_median_ttft_ms"]) <= float(r["pred_p99_ttft_ms"])
            assert float(r["pred_median_tpot_ms"]) <= float(r["pred_p99_tpot_ms"])
    assert any(r["pred_p99_ttft_ms"] for r in got)


# --- against the simulation ---------------------------------------------------------------------------------------

SIM_TOL = 0.15
"""Analytic percentiles against `planner simulate`'s, open Poisson traffic at half the plan's rate (the issue's
bound; measured: within 11%)."""


def _sim_cases():
    from tests.test_simulate import CASES, agg_case

    return {**CASES, "agg-spread": lambda: agg_case(1, Parallel(tp=1), 64, 512, workload=Workload(
        isl=1024, osl=256, isl_cv=0.6, osl_cv=0.5))}


@pytest.mark.parametrize("name", ["agg-tp1", "agg-pp2", "agg-moe-adp8", "agg-70b-tp4-dp2", "agg-spread",
                                  "disagg-chunk-isl", "disagg-pp2"])
def test_the_analytic_percentiles_agree_with_the_simulation(name):
    """p50/p90/p99 of TTFT and TPOT, the cost model evaluated at the simulation's mean decoding batch (the
    aggregated prefill load follows from it) or arrival rate (the prefill pool's load): aggregated within 15%.
    Disaggregated TTFT percentiles are conservative, each prefill worker queueing its share alone where the
    simulated pool shares one queue: the median within 15%, the tail above the simulation's, by at most 2x."""
    from planner import simulate as sim

    p, plan = _sim_cases()[name]()
    rate = 0.5 * plan.metrics.requests_per_s
    r = sim.simulate(p, plan, rate_per_s=rate, requests=4000)
    if plan.serving == "agg":
        g = cost.metrics_grid(p, plan.parallel, r.mean_decode_batch, plan.batch.chunk_tokens, tails=True)
        ttft = {q: float(percentiles.agg_ttft_quantile(p, g, plan.batch.chunk_tokens, q / 100)) * 1e3
                for q in (50, 90, 99)}
        tpot = {q: float(percentiles.agg_tpot_quantile(p, g, q / 100)) * 1e3 for q in (50, 90, 99)}
        for q in (50, 90, 99):
            assert ttft[q] == pytest.approx(r.ttft.at(q), rel=SIM_TOL), (q, ttft, r.ttft)
    else:
        pre = plan.prefill
        rho = rate / (pre.workers * pre.metrics.prefill_capacity_requests_per_s)
        ttft = {q: float(percentiles.disagg_ttft_quantile(p, pre.metrics.prefill_service_ms / 1e3, rho,
                                                           plan.kv_transfer.transfer_ms / 1e3, q / 100)) * 1e3
                for q in (50, 90, 99)}
        tpot = {q: float(cost.decode_pass_time(p, plan.decode.parallel, r.mean_decode_batch)) * 1e3
                for q in (50, 90, 99)}
        assert ttft[50] == pytest.approx(r.ttft.at(50), rel=SIM_TOL)
        for q in (90, 99):
            assert r.ttft.at(q) * (1 - 1e-9) <= ttft[q] <= 2 * r.ttft.at(q)
    for q in (50, 90, 99):
        assert tpot[q] == pytest.approx(r.tpot.at(q), rel=SIM_TOL), (q, tpot, r.tpot)
