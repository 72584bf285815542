"""Percentiles over requests of TTFT and TPOT, from the terms of the cost model's means.

The cost model (planner.cost) predicts mean TTFT and TPOT; its terms are random per request, and their
distributions give the percentiles a percentile SLA (`--sla 40ms@p99`, `--ttft 450ms@p99`) is checked at.

Aggregated replica. TTFT = fixed + service + wait + backlog:
- fixed: the request overhead and the admission iterations (deterministic);
- service: the request's own prefill passes, ceil(prefill tokens / chunk) of them, at its prompt length
  (the workload's length distribution, by quadrature);
- wait: the queueing wait for the chunk budget at load rho: zero with probability 1 - rho, else exponential
  (the M/G/1 waiting time's standard approximation), its mean the cost model's (stretch - 1) x service;
- backlog: the prompts that arrived with it and go first. In a closed loop with burstiness b a request is in
  a wave with probability b and then waits a uniform share of the wave's prefill (mean: the cost model's
  backlog / b); in open traffic every request's group is steady, uniform over [0, 2 x mean].
TPOT of a request = its mean iteration time over n = osl - 1 iterations: decode-only passes and, with
probability f each (the cost model's prefill share), chunk-carrying ones: d + (c - d) K / n with
K ~ Binomial(n, f), taken as normal, mixed over the output-length distribution.

Disaggregated deployment: TTFT = fixed (overhead, hand-off, KV transfer) + service + wait (as above, at the
prefill pool's load); TPOT is the decode pass, the same for every request (no prefill interleaves), so its
percentiles are its mean.

The means of these distributions are the cost model's means (up to E[ceil(L / chunk)] against
ceil(E[L] / chunk) for varying lengths). Checked against `planner simulate` (tests/test_percentiles.py) and
the measured p99s of data/inferencemax.csv (benchmarks/percentile_accuracy.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from planner import cost
from planner.specs import PERCENTILES, LatencyPercentiles, Problem
from planner.traffic import length_quantiles, normal_cdf

_BISECTION_STEPS = 48
"""Bisection steps of a quantile: a relative precision of 2^-48 of the bracket."""

_EDGES = np.array([0, .1, .2, .3, .4, .5, .6, .7, .8, .9, .95, .98, .99, .995, .999, 1.0])
"""Probability bins of the length quadrature: finer in the tail a p99 reads."""


def length_points(p: Problem, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature of the prompt ('isl') or output ('osl') length: points [tokens] and weights (summing to 1);
    one point for fixed lengths."""
    w = p.workload
    if not w.varies or (which == "isl" and w.isl_cv == 0 and w.shape.value != "trace") or (
            which == "osl" and w.osl_cv == 0 and w.shape.value != "trace"):
        return np.array([float(w.isl if which == "isl" else w.osl)]), np.ones(1)
    mids = 0.5 * (_EDGES[1:] + _EDGES[:-1])
    return length_quantiles(w, which, mids), np.diff(_EDGES)


def _wait_terms(p: Problem, rho, services: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probability the wait is positive, decay rate of its tail) of the prefill queue [1, 1/s].

    The queue is busy a share rho of the time, so an arrival waits with probability rho; given that, its wait
    is taken as exponential with the queue's asymptotic decay rate theta (Cramer-Lundberg): for Poisson
    arrivals rho (E[exp(theta S)] - 1) / (theta E[S]) = 1 over the services S (stacked on axis 0 with
    `weights`), exact in the tail of M/G/1 and lighter than the M/M/1 tail for fixed lengths; burstier
    arrivals (cost.arrival_scv ca^2 > 1) divide theta by (1 + ca^2) / 2, as Kingman's approximation scales
    the wait."""
    rho = np.clip(np.asarray(rho, dtype=float), 0.0, 1.0)
    services = np.asarray(services, dtype=float)
    mean = sum(w * s for w, s in zip(weights, services))
    busy = (rho > 0) & (mean > 0)
    ratio = services / np.where(mean > 0, mean, 1.0)
    lo, hi = np.zeros(np.broadcast(rho, mean).shape), np.full(np.broadcast(rho, mean).shape, 60.0)
    for _ in range(40):  # x = theta E[S]: the left side grows with x from rho < 1
        x = 0.5 * (lo + hi)
        with np.errstate(over="ignore"):
            mgf = sum(w * np.exp(np.minimum(x * r, 700.0)) for w, r in zip(weights, ratio))
        grows = rho * (mgf - 1) / x < 1
        lo, hi = np.where(grows, x, lo), np.where(grows, hi, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = hi / np.where(mean > 0, mean, 1.0) / ((1 + cost.arrival_scv(p)) / 2)
    return np.where(busy, rho, 0.0), np.where(busy, theta, np.inf)


def _sum_cdf(t, pw, lam, pb, span) -> np.ndarray:
    """P(W + B <= t) for W = 0 w.p. 1 - pw else Exp(lam), B = 0 w.p. 1 - pb else U[0, span]; 0 for t < 0 [1]."""
    negative = np.asarray(t) < 0
    t = np.maximum(t, 0.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e_t = np.where(np.isfinite(lam), -np.expm1(-lam * t), 1.0)  # P(Exp <= t)
        u_t = np.where(span > 0, np.minimum(t / np.where(span > 0, span, 1.0), 1.0), 1.0)
        low = np.minimum(t, span)
        # P(Exp + U <= t) = (1/L) int_0^min(t, L) (1 - e^{-lam (t - u)}) du
        #                 = (low / L) (1 + e^{-lam (t - low)} expm1(-x) / x), x = lam low (no cancellation)
        x = np.where(np.isfinite(lam), lam * low, 0.0)
        r = np.where(x > 1e-12, np.expm1(-x) / np.where(x > 1e-12, x, 1.0), -1.0 + x / 2)
        decay = np.where(np.isfinite(lam), np.exp(-np.where(np.isfinite(lam), lam, 0.0) * (t - low)), 0.0)
        eu = np.where(span > 0, low / np.where(span > 0, span, 1.0) * (1 + decay * r), e_t)
        eu = np.where(np.isfinite(lam), np.clip(eu, 0.0, 1.0), u_t)
    cdf = (1 - pw) * (1 - pb) + pw * (1 - pb) * e_t + (1 - pw) * pb * u_t + pw * pb * eu
    return np.where(negative, 0.0, cdf)


def _ttft_quantile(q: float, branches, weights, pw, lam) -> np.ndarray:
    """Quantile q of a mixture of branches (probability, fixed, services, pb, span): each fixed + S + W + B,
    S taking the values `services` (stacked on axis 0) with the length `weights`, W = 0 w.p. 1 - pw else
    Exp(lam), B = 0 w.p. 1 - pb else U[0, span] [s]."""
    lo = hi = None
    for _, fixed, services, pb, span in branches:
        with np.errstate(divide="ignore", invalid="ignore"):
            w_hi = np.where(pw > 0, np.log(np.maximum(pw, 1e-300) / (1 - q) + 1.0) / lam, 0.0)
        a = np.asarray(fixed, dtype=float) + services.min(axis=0)
        b = (np.asarray(fixed, dtype=float) + services.max(axis=0) + np.where(np.isfinite(w_hi), w_hi, 0.0)
             + np.where(pb > 0, span, 0.0))
        lo, hi = (a, b) if lo is None else (np.minimum(lo, a), np.maximum(hi, b))
    finite = np.isfinite(lo)
    lo, hi = (np.array(np.broadcast_arrays(lo, hi)[k], dtype=float) for k in (0, 1))
    lo, hi = np.where(finite, lo, 0.0), np.where(finite, hi, 1.0)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        cdf = sum(bw * sum(wt * _sum_cdf(mid - fixed - s, pw, lam, pb, span) for s, wt in zip(services, weights))
                  for bw, fixed, services, pb, span in branches)
        below = cdf < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.where(finite, hi, np.inf)


def _passes(p: Problem, chunk, lengths: np.ndarray) -> np.ndarray:
    """Prefill passes of prompts of these lengths (stacked on axis 0), after the prefix cache [passes]."""
    chunk = np.asarray(chunk, dtype=float)
    tokens = lengths.reshape((-1,) + (1,) * chunk.ndim) * (1.0 - p.workload.prefix_hit)
    return np.ceil(tokens / chunk - 1e-9)


def agg_ttft_quantile(p: Problem, g: Mapping[str, np.ndarray], chunk, q: float) -> np.ndarray:
    """Quantile q (0..1) of an aggregated replica's TTFT from cost.metrics_grid's terms `g` [s].

    Open traffic: one branch, the request's own passes at the mean group's first pass, its backlog uniform
    over [0, 2 x the mean backlog]. A closed loop with burstiness b (g holds the wave terms,
    cost.wave_terms): with probability 1 - b the request's group is the steady one, with probability b it came
    in a wave of its rank's requests, its first pass carrying the wave and its backlog uniform over the whole
    wave's prefill beyond its own passes."""
    first = np.asarray(g["ttft_first_pass_s"], dtype=float)
    stretch = cost.queue_stretch(g["prefill_load"], cost.queue_variability(p))
    passes = np.asarray(g["ttft_passes"], dtype=float) / np.where(np.isfinite(stretch), stretch, 1.0)
    backlog = np.asarray(g["backlog_s"], dtype=float)
    with np.errstate(invalid="ignore"):
        fixed = np.asarray(g["ttft_s"], dtype=float) - passes * stretch * first - backlog
    points, weights = length_points(p, "isl")
    own = _passes(p, chunk, points)
    # the queue for the chunk budget is busy while chunk-carrying passes run: that share of the time (a step
    # is E tokens' time: tpot * tokens_per_step)
    step = np.asarray(g["tpot_s"]) * cost.tokens_per_step(p)
    busy = np.clip(np.asarray(g["prefill_share"]), 0, 1) * np.asarray(g["carried_pass_s"]) / step
    pw, lam = _wait_terms(p, busy, own * first, weights)
    b = p.burstiness if p.workload.closed_loop else 0.0
    if b > 0 and "wave_first_pass_s" in g:
        steady_span, wave_span = 2 * np.asarray(g["steady_backlog_s"]), np.asarray(g["wave_span_s"])
        branches = [(1 - b, fixed, own * g["steady_first_pass_s"], (steady_span > 0) * 1.0, steady_span),
                    (b, fixed, own * g["wave_first_pass_s"], (wave_span > 0) * 1.0, wave_span)]
    else:
        span = 2 * backlog
        branches = [(1.0, fixed, own * first, (span > 0) * 1.0, span)]
    out = _ttft_quantile(q, branches, weights, pw, lam)
    return np.where(np.isfinite(stretch) & np.isfinite(g["ttft_s"]), out, np.inf)


def step_token_variance(p: Problem) -> float:
    """Variance of the output tokens one speculative step yields a request: 1 + A tokens, A the accepted drafts
    (A = j < k with probability a^j (1 - a), A = k with probability a^k); 0 without speculation [tokens^2]."""
    if p.speculation is None:
        return 0.0
    a, k = cost.acceptance(p), cost.draft_tokens(p)
    j = np.arange(k + 1, dtype=float)
    prob = np.where(j < k, a ** j * (1 - a), a ** k)
    tokens = 1 + j
    return float((prob * tokens ** 2).sum() - (prob * tokens).sum() ** 2)


def _tpot_quantile(p: Problem, tpot, spread, f, q: float) -> np.ndarray:
    """Quantile q of a request's TPOT: its mean over n steps (n = (osl - 1) / E, by quadrature over the output
    lengths) of iterations taking d, or d + spread with probability f (binomial), each yielding E tokens on
    average (speculation: the accepted drafts vary per step, step_token_variance); normal per length [s]."""
    tpot, spread, f = (np.asarray(x, dtype=float) for x in (tpot, spread, f))
    e, var_tokens = cost.tokens_per_step(p), step_token_variance(p)
    points, weights = length_points(p, "osl")
    n = np.maximum((points - 1.0) / e, 1.0).reshape((-1,) + (1,) * np.broadcast(tpot, f).ndim)
    var = (spread ** 2 * f * (1 - f) / e ** 2 + tpot ** 2 * var_tokens / e ** 2) / n
    sd = np.sqrt(var)
    if not np.any(sd > 0):
        return np.broadcast_to(tpot, np.broadcast(tpot, spread, f).shape).copy()
    top = sd.max(axis=0)
    lo, hi = (np.broadcast_to(x, np.broadcast(tpot, spread, f).shape).copy() for x in (tpot - 7 * top, tpot + 7 * top))
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, (mid - tpot) / np.where(sd > 0, sd, 1.0), np.where(mid >= tpot, np.inf, -np.inf))
        phi = normal_cdf(z)
        cdf = sum(wt * phi[k] for k, wt in enumerate(weights))  # elementwise, in one order: any shape, same bits
        below = cdf < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.where(top > 0, hi, tpot)


def agg_tpot_quantile(p: Problem, g: Mapping[str, np.ndarray], q: float) -> np.ndarray:
    """Quantile q (0..1) of an aggregated request's TPOT (its mean iteration time over its tokens) from
    metrics_grid's `g` [s]: decode-only steps of decode_pass_s and, with the prefill share's probability,
    chunk-carrying ones of carried_pass_s."""
    d, c = np.asarray(g["decode_pass_s"], dtype=float), np.asarray(g["carried_pass_s"], dtype=float)
    f = np.clip(np.asarray(g["prefill_share"], dtype=float), 0.0, 1.0)
    return _tpot_quantile(p, g["tpot_s"], np.maximum(c - d, 0.0), f, q)


def _disagg_services(p: Problem, service_s) -> tuple[np.ndarray, np.ndarray]:
    """Prefill times of prompts at the length quadrature's points: service_s (a prompt of the mean length,
    cost.prefill_service_time) scaled by length / isl, and their weights [s, 1]."""
    service_s = np.asarray(service_s, dtype=float)
    points, weights = length_points(p, "isl")
    return (points / float(p.workload.isl)).reshape((-1,) + (1,) * service_s.ndim) * service_s, weights


def disagg_ttft_quantile(p: Problem, service_s, rho, transfer_s, q: float) -> np.ndarray:
    """Quantile q of a disaggregated TTFT: overhead + KV transfer + the prompt's prefill (service_s at the mean
    length, in proportion to the length) + the queueing wait at the prefill pool's load rho (the terms of
    cost.disagg_ttft) [s]."""
    service_s = np.asarray(service_s, dtype=float)
    services, weights = _disagg_services(p, service_s)
    stretch = cost.queue_stretch(rho, cost.queue_variability(p))
    pw, lam = _wait_terms(p, rho, services, weights)
    fixed = cost.disagg_overhead(p) + np.asarray(transfer_s, dtype=float)
    out = _ttft_quantile(q, [(1.0, fixed, services, np.zeros(()), np.zeros(()))], weights, pw, lam)
    return np.where(np.isfinite(stretch), out, np.inf)


def max_load_at_percentile(p: Problem, service_s, transfer_s, limit_s: float, percentile: int) -> np.ndarray:
    """The highest prefill load rho (up to cost.MAX_PREFILL_LOAD) whose TTFT at `percentile`
    (disagg_ttft_quantile) stays within `limit_s`: bisection on rho, the quantile growing with it; 0 where even
    an idle pool misses [share]."""
    q = percentile / 100.0
    shape = np.broadcast(np.asarray(service_s), np.asarray(transfer_s)).shape
    service_s = np.broadcast_to(np.asarray(service_s, dtype=float), shape)
    transfer_s = np.broadcast_to(np.asarray(transfer_s, dtype=float), shape)

    def fits(rho: np.ndarray) -> np.ndarray:
        return disagg_ttft_quantile(p, service_s, rho, transfer_s, q) <= limit_s

    lo, hi = np.zeros(shape), np.full(shape, cost.MAX_PREFILL_LOAD)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        ok = fits(mid)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return np.where(fits(np.full(shape, cost.MAX_PREFILL_LOAD)), cost.MAX_PREFILL_LOAD,
                    np.where(fits(np.zeros(shape)), lo, 0.0))


def checked_agg(p: Problem, g: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The TPOT [s] and TTFT [s] an aggregated SLA is checked at: each at its SLA percentile, or the mean
    (g: cost.metrics_grid's figures)."""
    sla = p.sla
    tpot, ttft = np.asarray(g["tpot_s"]), np.asarray(g["ttft_s"])
    # whether or not a floor or limit is set yet: a search's table is built once, its floors set per level
    if sla is not None and sla.tpot_percentile is not None:
        tpot = agg_tpot_quantile(p, g, sla.tpot_percentile / 100)
    if sla is not None and sla.ttft_percentile is not None:
        ttft = agg_ttft_quantile(p, g, g["chunk_tokens"], sla.ttft_percentile / 100)
    return tpot, ttft


def agg_percentiles(p: Problem, par, m: int, chunk: int) -> LatencyPercentiles:
    """Percentiles p50/p90/p95/p99 of TTFT and TPOT of one aggregated plan [ms]."""
    g = cost.metrics_grid(p, par, m, chunk, tails=True)
    return LatencyPercentiles(
        ttft_ms={f"p{k}": float(agg_ttft_quantile(p, g, chunk, k / 100)) * 1e3 for k in PERCENTILES},
        tpot_ms={f"p{k}": float(agg_tpot_quantile(p, g, k / 100)) * 1e3 for k in PERCENTILES},
    )


def disagg_percentiles(p: Problem, g: Mapping[str, np.ndarray], dec: Problem | None = None) -> LatencyPercentiles:
    """Percentiles of TTFT and TPOT of one disaggregated deployment from cost.disagg_metrics' `g` [ms] (p: the
    prefill pool's problem, dec the decode pool's, p when None)."""
    return LatencyPercentiles(
        ttft_ms={f"p{k}": float(disagg_ttft_quantile(p, g["prefill_service_s"], g["prefill_load"],
                                                     g["kv_transfer_s"], k / 100)) * 1e3 for k in PERCENTILES},
        tpot_ms={f"p{k}": float(disagg_tpot_quantile(dec or p, g["tpot_s"], k / 100)) * 1e3 for k in PERCENTILES},
    )


def disagg_tpot_quantile(p: Problem, tpot_s, q: float) -> np.ndarray:
    """Quantile q of a disaggregated request's TPOT: every decode pass alike, so the mean, but for speculative
    decoding's accepted drafts varying per step (p: the decode pool's problem) [s]."""
    return _tpot_quantile(p, tpot_s, 0.0, 0.0, q)
