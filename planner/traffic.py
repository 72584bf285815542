"""Traffic: request-length distributions, traces of measured requests, and arrivals.

A Workload's isl/osl are the means of its lengths; isl_cv/osl_cv and shape spread them (lognormal by
default), or isl_samples/osl_samples carry a trace's lengths. The analytic percentiles
(planner.percentiles) read length quantiles from here, the simulator (planner.simulate) draws lengths and
arrival times from here: one description of the traffic for both.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from planner.errors import SpecError
from planner.specs import MAX_TOKENS, LengthShape, Workload

TRACE_COLUMNS = ("input_tokens", "output_tokens")
"""Columns (CSV) or keys (JSONL) every trace row holds; `arrival_s` is optional [tokens, tokens, s]."""

MAX_TRACE_ROWS = 10_000_000
"""Rows a trace may hold."""


@dataclass(frozen=True)
class Trace:
    """Measured requests: prompt and output lengths [tokens] and, where recorded, arrival times [s] from the
    trace's start (sorted)."""

    isl: np.ndarray
    osl: np.ndarray
    arrival_s: np.ndarray | None

    def __len__(self) -> int:
        return len(self.isl)

    @property
    def rate_per_s(self) -> float | None:
        """Mean arrival rate over the trace [requests/s]; None without arrival times or with one request."""
        if self.arrival_s is None or len(self) < 2 or self.arrival_s[-1] <= self.arrival_s[0]:
            return None
        return (len(self) - 1) / float(self.arrival_s[-1] - self.arrival_s[0])


def _number(value: object, where: str, column: str) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SpecError(f"{where}: {column} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise SpecError(f"{where}: {column} {value!r} is not a finite number")
    return x


def _records(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"trace {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"trace {path}: cannot read it ({e.__class__.__name__})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        out = []
        for k, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SpecError(f"trace {path}, line {k}: not JSON ({e.msg}); a JSONL trace holds one object per "
                                "line with input_tokens, output_tokens[, arrival_s]") from None
            if not isinstance(rec, dict):
                raise SpecError(f"trace {path}, line {k}: a JSON object is needed, got {type(rec).__name__}")
            out.append(rec)
        return out
    rows = list(csv.DictReader(text.splitlines()))
    if rows and any(c not in rows[0] for c in TRACE_COLUMNS):
        missing = [c for c in TRACE_COLUMNS if c not in rows[0]]
        raise SpecError(f"trace {path}: no column {', '.join(missing)}; a CSV trace has the header "
                        "input_tokens,output_tokens[,arrival_s]")
    return rows


def load_trace(path: str | Path) -> Trace:
    """A trace from a CSV (header input_tokens,output_tokens[,arrival_s]) or JSONL file (one object per line
    with those keys); SpecError naming the file and row on bad input."""
    path = Path(path)
    recs = _records(path)
    if not recs:
        raise SpecError(f"trace {path}: no requests in it")
    if len(recs) > MAX_TRACE_ROWS:
        raise SpecError(f"trace {path}: {len(recs):,} requests, more than {MAX_TRACE_ROWS:,}")
    isl, osl, arr = np.empty(len(recs)), np.empty(len(recs)), np.empty(len(recs))
    timed = all(r.get("arrival_s") not in (None, "") for r in recs)
    for k, r in enumerate(recs):
        where = f"trace {path}, request {k + 1}"
        for col in TRACE_COLUMNS:
            if r.get(col) in (None, ""):
                raise SpecError(f"{where}: no {col}")
        i, o = _number(r["input_tokens"], where, "input_tokens"), _number(r["output_tokens"], where, "output_tokens")
        if not (1 <= i <= MAX_TOKENS and 1 <= o <= MAX_TOKENS) or i != int(i) or o != int(o):
            raise SpecError(f"{where}: input_tokens and output_tokens must be whole numbers from 1 to "
                            f"{MAX_TOKENS:,}, got {r['input_tokens']!r}, {r['output_tokens']!r}")
        isl[k], osl[k] = i, o
        if timed:
            arr[k] = _number(r["arrival_s"], where, "arrival_s")
            if arr[k] < 0:
                raise SpecError(f"{where}: arrival_s must be 0 or more, got {r['arrival_s']!r}")
    arrival = None
    if timed:
        order = np.argsort(arr, kind="stable")
        isl, osl, arrival = isl[order], osl[order], arr[order]
    return Trace(isl=isl.astype(np.int64), osl=osl.astype(np.int64), arrival_s=arrival)


def workload_of_trace(trace: Trace, **fields) -> Workload:
    """The Workload of a trace: isl/osl its (rounded) means, shape 'trace' with its lengths; `fields` set the
    other Workload fields (prefix_hit, closed_loop, ...)."""
    try:
        return Workload(
            isl=max(1, round(float(trace.isl.mean()))), osl=max(1, round(float(trace.osl.mean()))),
            isl_cv=min(4.0, float(trace.isl.std() / trace.isl.mean())),
            osl_cv=min(4.0, float(trace.osl.std() / trace.osl.mean())),
            shape=LengthShape.trace, isl_samples=tuple(int(x) for x in trace.isl),
            osl_samples=tuple(int(x) for x in trace.osl), **fields,
        )
    except ValidationError as e:
        from planner.catalog import validation_message

        raise SpecError(validation_message(e)) from None


def _lognormal(mean: float, cv: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal with this mean and coefficient of variation."""
    sigma2 = math.log1p(cv * cv)
    return math.log(mean) - sigma2 / 2, math.sqrt(sigma2)


def _normal_quantile(q: np.ndarray) -> np.ndarray:
    """Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9)."""
    q = np.clip(np.asarray(q, dtype=float), 1e-15, 1 - 1e-15)
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    out = np.empty_like(q)
    lo, hi = q < 0.02425, q > 1 - 0.02425
    mid = ~(lo | hi)
    r = q[mid] - 0.5
    s = r * r
    out[mid] = ((((((a[0] * s + a[1]) * s + a[2]) * s + a[3]) * s + a[4]) * s + a[5]) * r
                / (((((b[0] * s + b[1]) * s + b[2]) * s + b[3]) * s + b[4]) * s + 1))
    for mask, sign in ((lo, 1.0), (hi, -1.0)):
        t = np.sqrt(-2 * np.log(q[mask] if sign > 0 else 1 - q[mask]))
        out[mask] = sign * ((((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5])
                            / ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1))
    return out


def normal_cdf(z) -> np.ndarray:
    """Standard normal P(Z <= z) (Abramowitz & Stegun 7.1.26 erf, |error| < 1.5e-7); +-inf allowed."""
    z = np.asarray(z, dtype=float)
    x = np.abs(z) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    with np.errstate(over="ignore", invalid="ignore"):
        erf = 1.0 - poly * np.exp(-x * x)
    erf = np.where(np.isinf(x), 1.0, erf)
    return 0.5 * (1.0 + np.sign(z) * erf)


def normal_quantile(q) -> np.ndarray:
    """Standard normal quantile z with P(Z <= z) = q."""
    return _normal_quantile(np.atleast_1d(q)).reshape(np.shape(q))


def length_quantiles(w: Workload, which: str, q) -> np.ndarray:
    """Quantiles q (0..1) of the prompt ('isl') or output ('osl') length distribution [tokens], at least 1."""
    mean, cv = (w.isl, w.isl_cv) if which == "isl" else (w.osl, w.osl_cv)
    q = np.asarray(q, dtype=float)
    if w.shape == LengthShape.trace:
        samples = np.asarray(w.isl_samples if which == "isl" else w.osl_samples, dtype=float)
        return np.quantile(samples, q)
    if cv == 0:
        return np.full(q.shape, float(mean))
    if w.shape == LengthShape.lognormal:
        mu, sigma = _lognormal(mean, cv)
        x = np.exp(mu + sigma * normal_quantile(q))
    elif w.shape == LengthShape.normal:
        x = mean * (1 + cv * normal_quantile(q))
    elif w.shape == LengthShape.uniform:
        half = min(math.sqrt(3) * cv, 1.0) * mean
        x = mean - half + 2 * half * q
    else:  # exponential
        x = -mean * np.log1p(-np.minimum(q, 1 - 1e-15))
    return np.clip(x, 1.0, MAX_TOKENS)


def sample_lengths(w: Workload, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n requests' (prompt, output) lengths drawn from the workload [tokens]: a trace's pairs resampled,
    else independent draws of each distribution (inverse transform of length_quantiles), rounded, >= 1."""
    if w.shape == LengthShape.trace:
        pick = rng.integers(0, len(w.isl_samples), n)
        return (np.asarray(w.isl_samples, dtype=np.int64)[pick], np.asarray(w.osl_samples, dtype=np.int64)[pick])
    u = rng.random((2, n))
    isl = np.maximum(np.rint(length_quantiles(w, "isl", u[0])), 1).astype(np.int64)
    osl = np.maximum(np.rint(length_quantiles(w, "osl", u[1])), 1).astype(np.int64)
    return isl, osl


def poisson_arrivals(rate_per_s: float, n: int, rng: np.random.Generator, burstiness: float = 0.0) -> np.ndarray:
    """n arrival times [s] of open traffic at `rate_per_s` requests/s: Poisson (exponential gaps) when
    burstiness is 0; with burstiness b in (0, 1], gamma gaps of the same mean and squared coefficient of
    variation 1 + 4b (b = 1: gaps five times as variable as Poisson's, bursts of requests)."""
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise SpecError(f"an arrival rate must be a positive number of requests/s, got {rate_per_s!r}")
    scv = 1.0 + 4.0 * burstiness
    gaps = rng.gamma(1.0 / scv, scv / rate_per_s, n)
    return np.cumsum(gaps) - gaps[0]
