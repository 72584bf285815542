"""Error bars: intervals on every prediction from the held-out errors of its regime, and the pessimistic
figures `solve --confidence` checks the SLA at.

An interval table (specs.IntervalTable, stored as Calibration.intervals) keeps, per regime and figure
(TPOT, TTFT, tokens/s/GPU), empirical quantiles of r = log(measured / predicted) over runs predicted by a
calibration that did not see them (cross-validation: leave one model out, LOMO, or one system, LOSO).
A prediction x then has the two-sided interval [x * exp(q((1 - L) / 2)), x * exp(q((1 + L) / 2))] at
level L, and the pessimistic one-sided figure x * exp(q(C)) at confidence C (TPOT and TTFT: what
`solve --confidence C` checks the SLA and the TTFT limit at).

Regimes (REGIMES) split predictions by batch: at most or more than BATCH_SPLIT requests in flight per
replica, known for one plan, a measured run and (vectorised) every option of a search table. Held out
(LOMO), large batches miss by more (80% of TPOT errors within -31%..+42% against -26%..+33% for small
batches; TTFT -61%..+149% against -51%..+93%). Other splits the errors also differ by (dense / MoE,
decode-dominated / prefill-heavy) were measured and left out: with a model held out of the table too
(`unseen_coverage`), their per-regime quantiles covered that model's runs less often than the pooled
ones (README, 'Error bars').

A regime with fewer than MIN_REGIME_RUNS held-out runs gets no row of its own: its predictions take the
pooled 'all' row. No table, no intervals: nothing is invented.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from planner.errors import SpecError
from planner.specs import INTERVAL_METRICS, INTERVAL_PROBS, IntervalTable, Problem, RegimeResiduals

DEFAULT_LEVEL = 0.8
"""Probability of the two-sided interval every prediction carries."""
MIN_REGIME_RUNS = 30
"""Fewest held-out runs a regime needs for its own quantiles; fewer, and it takes the 'all' row [runs]."""
BATCH_SPLIT = 16
"""Requests in flight per replica up to which a batch is small [requests]."""
REGIMES: tuple[str, ...] = (f"batch <= {BATCH_SPLIT}", f"batch > {BATCH_SPLIT}")
"""Every regime, in the order of `regime_index`."""
POOLED = "all"
"""The regime of every run: the fallback row."""
HOLDOUT_SCHEMES = {"lomo": "model", "loso": "system"}
"""Cross-validation schemes and what each holds out."""


# --- regimes ---------------------------------------------------------------------------------------


def regime_index(concurrency) -> np.ndarray:
    """Index into REGIMES of predictions for broadcastable requests in flight per replica [requests]."""
    return (np.asarray(concurrency) > BATCH_SPLIT).astype(np.int64)


def _rows(table: IntervalTable, metric: str) -> np.ndarray:
    """Quantiles of `metric` per regime of REGIMES (the 'all' row where a regime has none) [len(REGIMES), probs]."""
    by = {r.regime: r.quantiles for r in table.rows if r.metric == metric}
    return np.array([by.get(name, by[POOLED]) for name in REGIMES], dtype=float)


def quantile(table: IntervalTable, metric: str, prob: float, regime: np.ndarray) -> np.ndarray:
    """q(prob) of log(measured / predicted) of `metric` for regimes (indices into REGIMES), interpolated
    linearly between the table's probabilities [natural log units]."""
    per = np.array([np.interp(prob, table.probs, row) for row in _rows(table, metric)])
    return per[np.asarray(regime)]


def regime_used(table: IntervalTable, regime: int, metric: str = "tpot") -> tuple[str, int]:
    """The row a regime's intervals come from: (its name or 'all', held-out runs)."""
    rows = {r.regime: r for r in table.rows if r.metric == metric}
    row = rows.get(REGIMES[regime], rows[POOLED])
    return row.regime, row.runs


# --- checks ----------------------------------------------------------------------------------------


def check_level(level: object, what: str = "confidence", lowest: float = 0.5) -> float:
    """`level` as a float when lowest <= level < 1, else SpecError naming `what`."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level) \
            or not lowest <= level < 1:
        raise SpecError(f"{what} must be a probability from {lowest:g} up to (not including) 1, e.g. 0.9; "
                        f"got {level!r}")
    return float(level)


def with_confidence(p: Problem, level: float | None) -> Problem:
    """p checking its SLA and TTFT limit at confidence `level` (None: at the central estimate). SpecError
    for a level outside [0.5, 1) or a calibration without an interval table."""
    if level is None:
        return p.model_copy(update={"confidence": None})
    level = check_level(level)
    if p.calibration.intervals is None:
        raise SpecError(f"confidence {level:g} needs error bars, and calibration '{p.calibration.name}' has no "
                        "interval table (make one: planner calibrate DATA -o FILE --intervals lomo)")
    return p.model_copy(update={"confidence": level})


# --- predictions ---------------------------------------------------------------------------------------


def pessimistic(p: Problem, metrics: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """TPOT [s] and TTFT [s] of cost.metrics_grid figures at the one-sided quantile p.confidence of their
    regime's held-out errors: x * exp(q_confidence(log measured / predicted))."""
    table, level = p.calibration.intervals, p.confidence
    tpot, ttft = np.asarray(metrics["tpot_s"], dtype=float), np.asarray(metrics["ttft_s"], dtype=float)
    if table is None or level is None:
        return tpot, ttft
    regime = regime_index(metrics["concurrency"])
    return (tpot * np.exp(quantile(table, "tpot", level, regime)),
            ttft * np.exp(quantile(table, "ttft", level, regime)))


def intervals(table: IntervalTable, regime: np.ndarray, predicted: Mapping[str, np.ndarray],
              level: float = DEFAULT_LEVEL) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two-sided intervals (low, high) at `level` of predicted figures keyed by INTERVAL_METRICS (any units:
    each end is the prediction times exp(a quantile)), for regimes (indices into REGIMES)."""
    level = check_level(level, "interval level", lowest=0.0)
    lo, hi = (1 - level) / 2, (1 + level) / 2
    out = {}
    for metric, x in predicted.items():
        x = np.asarray(x, dtype=float)
        out[metric] = (x * np.exp(quantile(table, metric, lo, regime)), x * np.exp(quantile(table, metric, hi, regime)))
    return out


def plan_intervals(p: Problem, tpot_ms: float, ttft_ms: float, tokens_per_s_per_gpu: float, concurrency: int,
                   level: float = DEFAULT_LEVEL) -> dict[str, object]:
    """The interval fields of specs.Metrics for one plan (empty without an interval table)."""
    table = p.calibration.intervals
    if table is None:
        return {}
    regime = int(regime_index(concurrency))
    got = intervals(table, np.array(regime), {"tpot": tpot_ms, "ttft": ttft_ms,
                                              "tokens_per_s_per_gpu": tokens_per_s_per_gpu}, level)
    pair = {k: (float(lo), float(hi)) for k, (lo, hi) in got.items()}
    return {"interval_level": level, "interval_regime": regime_used(table, regime)[0],
            "tpot_interval_ms": pair["tpot"], "ttft_interval_ms": pair["ttft"],
            "tokens_per_s_per_gpu_interval": pair["tokens_per_s_per_gpu"]}


def run_regimes(runs: list) -> np.ndarray:
    """Regime (index into REGIMES) of measured runs (planner.runs.Run): their client concurrency."""
    return regime_index(np.array([r.concurrency for r in runs]))


# --- making the table ----------------------------------------------------------------------------------


def table_of(regime: np.ndarray, residuals: Mapping[str, np.ndarray], source: str,
             min_runs: int = MIN_REGIME_RUNS) -> IntervalTable:
    """The interval table of residuals r = log(measured / predicted) [per run, keyed by INTERVAL_METRICS;
    NaN = not predicted] and the runs' regimes (indices into REGIMES): numpy's linear-interpolated
    quantiles at INTERVAL_PROBS, over all runs ('all') and over each regime with at least `min_runs` runs."""
    regime = np.asarray(regime)
    rows = []
    for metric in INTERVAL_METRICS:
        r = np.asarray(residuals[metric], dtype=float)
        finite = np.isfinite(r)
        if not finite.any():
            raise SpecError(f"no held-out {metric} prediction to take error bars from")
        for name in (POOLED, *REGIMES):
            mask = finite if name == POOLED else finite & (regime == REGIMES.index(name))
            n = int(mask.sum())
            if name != POOLED and n < min_runs:
                continue
            q = np.quantile(r[mask], INTERVAL_PROBS)
            rows.append(RegimeResiduals(regime=name, metric=metric, runs=n, quantiles=[round(float(x), 4) for x in q]))
    return IntervalTable(source=source, min_runs=min_runs, probs=list(INTERVAL_PROBS), rows=rows)


def residuals(ds, pred: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """log(measured / predicted) of TPOT, TTFT and tokens/s/GPU of a calibrate.Dataset's runs."""
    return {"tpot": np.log(ds.tpot_ms / np.asarray(pred["tpot_ms"])),
            "ttft": np.log(ds.ttft_ms / np.asarray(pred["ttft_ms"])),
            "tokens_per_s_per_gpu": np.log(ds.measured_throughput / np.asarray(pred["tokens_per_s_per_gpu"]))}


def interval_table(ds, pred: Mapping[str, np.ndarray], source: str, min_runs: int = MIN_REGIME_RUNS
                   ) -> IntervalTable:
    """The interval table of a calibrate.Dataset's runs from their held-out predictions (ttft_ms, tpot_ms,
    tokens_per_s_per_gpu per run; NaN where a run was not predicted), e.g. benchmarks/accuracy.py's LOMO."""
    pred = {k: np.asarray(v, dtype=float) for k, v in pred.items()}
    covered = np.isfinite(pred["tpot_ms"]) & np.isfinite(pred["ttft_ms"])
    if not covered.any():
        raise SpecError("no held-out predictions to take error bars from")
    safe = {k: np.where(covered, v, 1.0) for k, v in pred.items()}
    res = {k: np.where(covered, v, np.nan) for k, v in residuals(ds, safe).items()}
    return table_of(run_regimes(ds.runs), res, source, min_runs)


def holdout_predictions(ds, scheme: str = "lomo", start=None, log: Callable[[str], None] | None = None
                        ) -> dict[str, np.ndarray]:
    """Held-out ttft_ms [ms], tpot_ms [ms], tokens_per_s_per_gpu of every run of a calibrate.Dataset: for
    each model (lomo) or system (loso), `calibrate.fit` from `start`'s settings with the unfitted factors
    (as benchmarks/accuracy.py does) on the runs of the others, predicting its runs. One fit per fold:
    minutes each on the full data."""
    from planner.calibrate import fit, predict
    from planner.specs import Calibration

    if scheme not in HOLDOUT_SCHEMES:
        raise SpecError(f"unknown cross-validation {scheme!r}: {' or '.join(HOLDOUT_SCHEMES)}")
    by = HOLDOUT_SCHEMES[scheme]
    say = log or (lambda _msg: None)
    column = ds.models if by == "model" else ds.systems
    groups = sorted(set(str(g) for g in column))
    if len(groups) < 2:
        raise SpecError(f"{scheme.upper()} needs runs of at least 2 {by}s to hold one out; the data has "
                        f"{len(groups)}")
    settings = (start or Calibration()).model_dump(exclude={"base", "profiles", "intervals", "name", "source"})
    fold_start = Calibration(**settings)
    out = {k: np.full(len(ds.runs), np.nan) for k in ("ttft_ms", "tpot_ms", "tokens_per_s_per_gpu")}
    for i, group in enumerate(groups, 1):
        test = column == group
        say(f"{scheme.upper()} fold {i}/{len(groups)}: fitting without {by} {group} ({int((~test).sum())} runs)")
        cal = fit(ds.subset(~test), start=fold_start, name=f"{scheme}-without-{group}")
        pred = predict(ds.subset(test), cal)
        for k in out:
            out[k][test] = pred[k]
    return out


def holdout_table(ds, scheme: str = "lomo", start=None, log: Callable[[str], None] | None = None,
                  min_runs: int = MIN_REGIME_RUNS) -> IntervalTable:
    """The interval table of a calibrate.Dataset from its held-out predictions (`holdout_predictions`)."""
    pred = holdout_predictions(ds, scheme, start, log)
    by = HOLDOUT_SCHEMES[scheme]
    groups = len(set(str(g) for g in (ds.models if by == "model" else ds.systems)))
    return interval_table(ds, pred, f"{scheme.upper()}: {groups} folds, each {by} predicted by a fit (from the "
                          f"unfitted factors) to the runs of the others; {len(ds.runs)} runs", min_runs)


def unseen_coverage(ds, pred: Mapping[str, np.ndarray], level: float = DEFAULT_LEVEL,
                    regime: np.ndarray | None = None, min_runs: int = MIN_REGIME_RUNS) -> dict[str, float]:
    """How often intervals at `level` hold the measured figure of a model the table did not see: for each model
    of a calibrate.Dataset, the table of the other models' held-out predictions (`pred`, as for
    `interval_table`) applied to its runs. Share of runs per figure; `regime` (per run, default
    `run_regimes`) to try other splits, all zeros for the pooled table alone."""
    pred = {k: np.asarray(v, dtype=float) for k, v in pred.items()}
    covered = np.isfinite(pred["tpot_ms"]) & np.isfinite(pred["ttft_ms"])
    safe = {k: np.where(covered, v, 1.0) for k, v in pred.items()}
    res = residuals(ds, safe)
    regime = run_regimes(ds.runs) if regime is None else np.asarray(regime)
    lo_p, hi_p = (1 - level) / 2, (1 + level) / 2
    hits: dict[str, list[np.ndarray]] = {k: [] for k in INTERVAL_METRICS}
    for model in sorted(set(str(m) for m in ds.models[covered])):
        mine = covered & (ds.models == model)
        other = covered & ~mine
        if not other.any():
            continue
        t = table_of(regime, {k: np.where(other, v, np.nan) for k, v in res.items()}, "unseen", min_runs)
        for k in INTERVAL_METRICS:
            r = res[k][mine]
            hits[k].append((r >= quantile(t, k, lo_p, regime[mine])) & (r <= quantile(t, k, hi_p, regime[mine])))
    return {k: float(np.mean(np.concatenate(v))) if v else math.nan for k, v in hits.items()}
