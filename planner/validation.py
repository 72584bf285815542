"""Validation statistics: how far the cost model's predictions are from measured serving runs.

The figures of the accuracy report (benchmarks/accuracy.py) are computed here, from a parsed
``planner.calibrate.Dataset`` of measured runs and a prediction of those runs (``Pred``: the
``ttft_ms``, ``tpot_ms`` and ``tokens_per_s_per_gpu`` arrays ``planner.calibrate.predict`` returns,
aligned with ``ds.runs``). The benchmark only chooses what to predict with (folds, anchors) and
renders the numbers as markdown.

- errors: |pred / measured - 1| per run, and their median / 90th percentile over slices of runs;
- ranking: Spearman rank correlation of predicted vs measured tokens/s/GPU within groups of runs
  sharing (model, system, backend, isl, osl);
- decision regret: within those groups, what picking the fastest run predicted to meet a
  tokens/s/user SLA costs against the best run measured to meet it;
- repeatability: configurations measured more than once, the regret a model exact up to that
  measurement noise would score, and the closest fit that never gets faster with concurrency;
- memory: the planner's per-GPU memory need at each run's concurrency against usable HBM.

Errors are fractions (0.1 = 10%); gaps between measurements are in natural-log units.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from planner import cost
from planner.calibrate import Dataset, error_table, regimes
from planner.specs import Calibration

Pred = dict[str, np.ndarray]
"""Predictions aligned with a Dataset's runs: ttft_ms [ms], tpot_ms [ms], tokens_per_s_per_gpu."""
GroupKey = tuple[str, str, str, int, int]
"""(model, system, backend, isl, osl) of a group of runs."""

ERRORS = ("tpot", "ttft", "thr")
"""Keys of the per-run errors: TPOT, TTFT and tokens/s/GPU."""
SLA_LEVELS = (10.0, 20.0, 35.0, 50.0, 100.0)
"""Service levels of the decision-regret check [tokens/s/user]."""
MIN_GROUP = 3
"""Fewest runs a (model, system, backend, isl, osl) group needs for ranking and regret."""
GOOD_RHO = 0.8
"""Spearman rho counted as a good ranking."""
CONFIG_COLUMNS = ("model_path", "system", "backend", "precision", "gemm_quant_mode", "moe_quant_mode", "isl", "osl",
                  "batch_size", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size")
"""Row fields that fix what was measured: rows equal in all of them measured the same configuration."""
FLOOR_SEEDS = 50
"""Random draws averaged for the regret floor (`noisy_regret`)."""
FLOOR_MOVED = 0.05
"""Relative change beyond which the monotone fit counts as moving a run (`monotone_floor_check`)."""
OSL_OFF = 1.5
"""Factor by which a TTFT ratio of an output-length pair counts as off from the predicted one (`osl_check`)."""


# --- errors ---------------------------------------------------------------------------------------------


def abs_errors(ds: Dataset, pred: Pred) -> dict[str, np.ndarray]:
    """|pred / measured - 1| of TPOT ('tpot'), TTFT ('ttft') and tokens/s/GPU ('thr') per run [fraction]."""
    return {
        "tpot": np.abs(pred["tpot_ms"] / ds.tpot_ms - 1),
        "ttft": np.abs(pred["ttft_ms"] / ds.ttft_ms - 1),
        "thr": np.abs(pred["tokens_per_s_per_gpu"] / ds.measured_throughput - 1),
    }


def slices(ds: Dataset, bys: tuple[str, ...] = ("all", "system", "backend", "model", "regime")
           ) -> list[tuple[str, str, np.ndarray]]:
    """(by, group, mask) of the runs errors are reported over: 'all', each system, backend and model
    (sorted), and the regimes of ``planner.calibrate.regimes``, in the order of `bys`; empty slices left out."""
    out: list[tuple[str, str, np.ndarray]] = []
    columns = {"system": ds.systems, "backend": ds.backends, "model": ds.models, "source": ds.sources,
               "generation": ds.generations}
    for by in bys:
        if by == "all":
            out.append(("all", "all", np.ones(len(ds.runs), bool)))
        elif by == "regime":
            out += [("regime", k, v) for k, v in regimes(ds).items()]
        else:
            col = columns[by]
            out += [(by, str(v), col == v) for v in sorted(set(col))]
    return [s for s in out if s[2].any()]


@dataclass(frozen=True)
class Stat:
    """Median and 90th percentile (numpy's linear interpolation) of one quantity over some runs."""

    median: float
    p90: float

    @classmethod
    def of(cls, x: np.ndarray) -> Stat:
        """Median and 90th percentile of `x` (in the units of `x`)."""
        return cls(float(np.median(x)), float(np.percentile(x, 90)))

    @classmethod
    def of_log_gaps(cls, x: np.ndarray) -> Stat:
        """Median and 90th percentile of gaps given in log units, as fractions: exp(quantile(|x|)) - 1."""
        a = np.abs(x)
        return cls(float(np.exp(np.median(a)) - 1), float(np.exp(np.percentile(a, 90)) - 1))


def stats(ds: Dataset, pred: Pred, mask: np.ndarray) -> dict[str, Stat]:
    """Median / p90 of each of `abs_errors` (keys ERRORS) over the runs where `mask` holds [fraction]."""
    return {k: Stat.of(v[mask]) for k, v in abs_errors(ds, pred).items()}


def restrict(ds: Dataset, pred: Pred, mask: np.ndarray) -> tuple[Dataset, Pred]:
    """The runs (and their predictions) where `mask` holds."""
    return ds.subset(mask), {k: v[mask] for k, v in pred.items()}


def check_medians(ds: Dataset, pred: Pred) -> None:
    """Raise AssertionError unless the medians of `stats` over `slices` equal those of
    ``planner.calibrate.error_table`` (same definition, independent code)."""
    mine = {(by, g): stats(ds, pred, m) for by, g, m in slices(ds)}
    for by, group, _n, tpot, ttft, thr in error_table(ds, pred):
        s = mine[(by, str(group))]
        if not np.allclose([s["tpot"].median, s["ttft"].median, s["thr"].median], [tpot, ttft, thr]):
            raise AssertionError(f"median errors disagree with planner.calibrate.error_table on {by} {group}")


def median_ratios(ds: Dataset, pred: Pred, mask: np.ndarray) -> dict[str, float]:
    """Median predicted / measured TPOT ('tpot'), TTFT ('ttft') and tokens/s/GPU ('thr') over the runs where
    `mask` holds (1 = unbiased; TPOT below 1 = optimistic) [ratio]."""
    return {"tpot": float(np.median(pred["tpot_ms"][mask] / ds.tpot_ms[mask])),
            "ttft": float(np.median(pred["ttft_ms"][mask] / ds.ttft_ms[mask])),
            "thr": float(np.median(pred["tokens_per_s_per_gpu"][mask] / ds.measured_throughput[mask]))}


def median_throughput_ratio(ds: Dataset, pred: Pred) -> float:
    """Median of predicted / measured tokens/s/GPU over all runs (1 = unbiased; > 1 = optimistic)."""
    return float(np.median(pred["tokens_per_s_per_gpu"] / ds.measured_throughput))


@dataclass(frozen=True)
class WeakSpot:
    """Median errors [fraction] over one slice of runs."""

    by: str
    group: str
    runs: int
    thr: float
    tpot: float
    ttft: float


def weak_spots(ds: Dataset, pred: Pred, min_runs: int = 10, top: int = 4) -> list[WeakSpot]:
    """The `top` system/backend/model/regime slices of at least `min_runs` runs with the largest median
    tokens/s/GPU error (ties broken by TPOT, then TTFT error), largest first."""
    err = abs_errors(ds, pred)
    found = []
    for by, group, mask in slices(ds, ("system", "backend", "model", "regime")):
        if mask.sum() >= min_runs:
            found.append((float(np.median(err["thr"][mask])), float(np.median(err["tpot"][mask])),
                          float(np.median(err["ttft"][mask])), by, group, int(mask.sum())))
    found.sort(reverse=True)
    return [WeakSpot(by, g, n, a, b, c) for a, b, c, by, g, n in found[:top]]


# --- ranking within groups ------------------------------------------------------------------------------


def groups_of(ds: Dataset) -> list[tuple[GroupKey, np.ndarray]]:
    """(key, run indices) of the runs sharing (model, system, backend, isl, osl), sorted by key, for groups
    of MIN_GROUP runs or more."""
    keys: dict[GroupKey, list[int]] = {}
    for i, r in enumerate(ds.runs):
        p = r.problem
        keys.setdefault((p.model.name, p.cluster.name, p.backend, p.workload.isl, p.workload.osl), []).append(i)
    return [(k, np.array(v)) for k, v in sorted(keys.items()) if len(v) >= MIN_GROUP]


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `x` in ascending order, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    _, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, weights=r) / np.bincount(inverse))[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of `a` and `b` (average ranks for ties), in [-1, 1]; NaN when either
    side is constant."""
    ra, rb = ranks(a) - (len(a) + 1) / 2, ranks(b) - (len(b) + 1) / 2
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def rank_correlations(ds: Dataset, pred: Pred) -> list[tuple[GroupKey, int, float]]:
    """(group key, runs, Spearman rho of predicted vs measured tokens/s/GPU) of every group of `groups_of`."""
    measured = ds.measured_throughput
    return [(k, len(idx), spearman(pred["tokens_per_s_per_gpu"][idx], measured[idx])) for k, idx in groups_of(ds)]


def worst_groups(ds: Dataset, pred: Pred, top: int = 5) -> list[tuple[GroupKey, int, float]]:
    """The `top` groups with the lowest (defined) rho of `rank_correlations`, lowest first."""
    rc = [x for x in rank_correlations(ds, pred) if np.isfinite(x[2])]
    rc.sort(key=lambda x: x[2])
    return rc[:top]


@dataclass(frozen=True)
class RhoSummary:
    """Distribution of the groups' Spearman rho. Quantiles and shares are over the groups with a
    defined rho, NaN when there is none."""

    groups: int
    runs: int  # runs in the groups
    undefined: int  # groups with a NaN rho (constant predictions or measurements)
    median: float
    p10: float
    p25: float
    p75: float
    share_good: float  # share of defined rho >= GOOD_RHO [fraction]
    share_negative: float  # share of defined rho < 0 [fraction]


def rho_summary(ds: Dataset, pred: Pred) -> RhoSummary:
    """Summary of `rank_correlations` over all groups."""
    rc = rank_correlations(ds, pred)
    rho = np.array([r for _, _, r in rc])
    ok = rho[np.isfinite(rho)]
    runs = sum(n for _, n, _ in rc)
    if not len(ok):
        nan = float("nan")
        return RhoSummary(len(rc), runs, len(rho), nan, nan, nan, nan, nan, nan)
    q = np.percentile(ok, [10, 25, 50, 75])
    return RhoSummary(len(rc), runs, len(rho) - len(ok), float(q[2]), float(q[0]), float(q[1]), float(q[3]),
                      float(np.mean(ok >= GOOD_RHO)), float(np.mean(ok < 0)))


def within_group_errors(ds: Dataset, pred: Pred) -> tuple[int, dict[str, tuple[float, float]]]:
    """Runs in the groups of `groups_of`, and per error key (ERRORS): the median |error| over them as
    predicted, and with each group's median log error removed (what a correction per group could not fix)
    [fraction]. NaN when there is no group."""
    measured = {"tpot": ds.tpot_ms, "ttft": ds.ttft_ms, "thr": ds.measured_throughput}
    predicted = {"tpot": pred["tpot_ms"], "ttft": pred["ttft_ms"], "thr": pred["tokens_per_s_per_gpu"]}
    groups = groups_of(ds)
    if not groups:
        return 0, {key: (float("nan"), float("nan")) for key in ERRORS}
    idx = np.concatenate([g for _, g in groups])
    out = {}
    for key in ERRORS:
        log_err = np.log(predicted[key] / measured[key])
        within = np.concatenate([log_err[g] - np.median(log_err[g]) for _, g in groups])
        out[key] = (float(np.median(np.abs(np.exp(log_err[idx]) - 1))), float(np.median(np.abs(np.exp(within) - 1))))
    return len(idx), out


# --- decision regret ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regret:
    """Regret of one (group, SLA) decision."""

    sla: float  # [tokens/s/user]
    regret: float  # 1 - measured tokens/s/GPU of the pick / the best measured among runs meeting the SLA
    outcome: str  # 'ok', 'pick misses SLA', 'none predicted'
    random_pick: float  # expected regret of picking any run of the group uniformly (misses count 1)
    shortfall: float = 0.0  # a missing pick: how far its measured tokens/s/user is below the SLA, SLA / measured - 1


def regrets(ds: Dataset, pred: Pred) -> tuple[list[Regret], Counter[float]]:
    """Decisions over every group of `groups_of` and SLA level of SLA_LEVELS; and the (group, SLA) pairs
    skipped (no run measured to meet the SLA) per SLA level.

    A run meets an SLA when 1000 / TPOT [ms] >= SLA [tokens/s/user]. The pick is the run with the highest
    predicted tokens/s/GPU among those predicted to meet it; its regret is 1 - its measured tokens/s/GPU /
    the best measured among runs measured to meet it, or 1 when it measurably misses the SLA
    ('pick misses SLA') or no run is predicted to meet it ('none predicted')."""
    meas_thr, pred_thr = ds.measured_throughput, pred["tokens_per_s_per_gpu"]
    meas_user, pred_user = 1000 / ds.tpot_ms, 1000 / pred["tpot_ms"]
    out: list[Regret] = []
    skipped: Counter[float] = Counter()
    for _, idx in groups_of(ds):
        for sla in SLA_LEVELS:
            meets = meas_user[idx] >= sla
            if not meets.any():
                skipped[sla] += 1
                continue
            best = meas_thr[idx][meets].max()
            random_pick = float(np.mean(np.where(meets, 1 - meas_thr[idx] / best, 1.0)))
            promised = pred_user[idx] >= sla
            if not promised.any():
                out.append(Regret(sla, 1.0, "none predicted", random_pick))
                continue
            cand = idx[promised]
            pick = cand[np.argmax(pred_thr[cand])]
            if meas_user[pick] < sla:
                out.append(Regret(sla, 1.0, "pick misses SLA", random_pick, float(sla / meas_user[pick] - 1)))
            else:
                out.append(Regret(sla, float(1 - meas_thr[pick] / best), "ok", random_pick))
    return out, skipped


def mean_regret(ds: Dataset, pred: Pred) -> float:
    """Mean regret over every (group, SLA) decision of `regrets` [fraction]; NaN when there is none."""
    rs, _ = regrets(ds, pred)
    return float(np.mean([r.regret for r in rs])) if rs else float("nan")


@dataclass(frozen=True)
class RegretSummary:
    """The decisions at one SLA level (None: all levels). Means and medians are NaN without decisions;
    `shortfall` is NaN when no pick misses the SLA."""

    sla: float | None  # [tokens/s/user]
    pairs: int  # (group, SLA) decisions
    skipped: int  # (group, SLA) pairs where no run measurably meets the SLA
    mean: float  # mean regret [fraction]
    median: float  # median regret [fraction]
    share_zero: float  # share of decisions with regret 0 [fraction]
    misses: int  # picks that measurably miss the SLA
    shortfall: float  # median shortfall of those picks, SLA / measured tokens/s/user - 1 [fraction]
    none_predicted: int  # decisions with no run predicted to meet the SLA
    random_pick: float  # mean expected regret of a uniformly random pick [fraction]


def regret_summaries(ds: Dataset, pred: Pred) -> list[RegretSummary]:
    """A `RegretSummary` per SLA level of SLA_LEVELS, then one over all levels (sla None)."""
    rs, skipped = regrets(ds, pred)
    out = []
    for sla in (*SLA_LEVELS, None):
        sel = [r for r in rs if sla is None or r.sla == sla]
        skip = sum(skipped.values()) if sla is None else skipped[sla]
        if not sel:
            nan = float("nan")
            out.append(RegretSummary(sla, 0, skip, nan, nan, nan, 0, nan, 0, nan))
            continue
        reg = np.array([r.regret for r in sel])
        outcome = Counter(r.outcome for r in sel)
        short = [r.shortfall for r in sel if r.outcome == "pick misses SLA"]
        out.append(RegretSummary(
            sla, len(sel), skip, float(reg.mean()), float(np.median(reg)), float(np.mean(reg == 0)),
            outcome["pick misses SLA"], float(np.median(short)) if short else float("nan"),
            outcome["none predicted"], float(np.mean([r.random_pick for r in sel]))))
    return out


# --- measurement repeatability --------------------------------------------------------------------------


def config_key(row: dict[str, str], leave_out: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The CONFIG_COLUMNS of a row (but `leave_out`), stripped: equal keys measured the same thing."""
    return tuple((row.get(c) or "").strip() for c in CONFIG_COLUMNS if c not in leave_out)


def repeat_pairs(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|log(a / b)| of TPOT and of TTFT [log units] over pairs of distinct measurements of one configuration
    (rows equal in CONFIG_COLUMNS; exact copies of a measurement count once), and whether each pair shares a
    backend_version."""
    seen: dict[tuple[str, ...], set[tuple[float, float, str]]] = {}
    for k, i in enumerate(ds.index):
        row = ds.rows[i]
        key = config_key(row)
        seen.setdefault(key, set()).add((ds.tpot_ms[k], ds.ttft_ms[k], (row.get("backend_version") or "").strip()))
    tpot, ttft, same = [], [], []
    for values in seen.values():
        v = sorted(values)
        for a in range(len(v)):
            for b in range(a + 1, len(v)):
                tpot.append(abs(np.log(v[a][0] / v[b][0])))
                ttft.append(abs(np.log(v[a][1] / v[b][1])))
                same.append(v[a][2] == v[b][2])
    return np.array(tpot), np.array(ttft), np.array(same, bool)


def implied_noise(gaps: np.ndarray) -> float:
    """Log standard deviation of lognormal measurement noise implied by the median of pair differences
    |log a - log b| [log units]: such a difference has median 0.6745 * sqrt(2) * sigma."""
    return float(np.median(gaps)) / (0.6745 * np.sqrt(2))


def noisy_regret(ds: Dataset, sigma_tpot: float, sigma_ttft: float, seeds: int = FLOOR_SEEDS) -> float:
    """Mean regret [fraction] of predictions equal to the measurements times lognormal noise of these log
    standard deviations, averaged over `seeds` draws (fixed random seed): what a model exact up to
    measurement noise would score against one measurement."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(seeds):
        tpot = ds.tpot_ms * np.exp(rng.normal(0, sigma_tpot, len(ds.runs)))
        ttft = ds.ttft_ms * np.exp(rng.normal(0, sigma_ttft, len(ds.runs)))
        out.append(mean_regret(ds, {"tpot_ms": tpot, "ttft_ms": ttft,
                                    "tokens_per_s_per_gpu": ds.throughput(ttft, tpot)}))
    return float(np.mean(out))


def isotonic(y: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit of `y` (pool adjacent violators), same length and units."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in y:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    if not blocks:
        return np.zeros(0)
    return np.concatenate([np.full(int(c), s / c) for s, c in blocks])


def monotone_floor(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The closest TPOT and TTFT to the measurements that never fall as concurrency grows within a
    series (runs equal in CONFIG_COLUMNS but batch_size): a least-squares isotonic fit of the log
    measurements. Any model in which more concurrent requests cannot make a request faster (ours)
    misses each run at least about this far. Returns fitted TPOT [ms], fitted TTFT [ms], and which
    runs share a series with another concurrency (the others keep their measurements)."""
    series: dict[tuple[str, ...], list[int]] = {}
    for k, i in enumerate(ds.index):
        row = ds.rows[i]
        key = config_key(row, leave_out=("batch_size",))
        series.setdefault(key, []).append(k)
    tpot, ttft, shared = ds.tpot_ms.copy(), ds.ttft_ms.copy(), np.zeros(len(ds.runs), bool)
    for members in series.values():
        idx = np.array(sorted(members, key=lambda k: (ds.runs[k].concurrency, ds.tpot_ms[k])))
        if len({ds.runs[k].concurrency for k in idx}) < 2:
            continue
        shared[idx] = True
        tpot[idx] = np.exp(isotonic(np.log(ds.tpot_ms[idx])))
        ttft[idx] = np.exp(isotonic(np.log(ds.ttft_ms[idx])))
    return tpot, ttft, shared


@dataclass(frozen=True)
class FloorCheck:
    """How far the `monotone_floor` fit is from the measurements."""

    series_runs: int  # runs in series of >= 2 concurrencies
    moved_tpot: int  # series runs whose TPOT the fit moves by more than FLOOR_MOVED
    moved_ttft: int  # likewise TTFT
    tpot: Stat  # |fit / measured - 1| of TPOT over the series runs [fraction]
    ttft: Stat  # likewise TTFT
    mean_regret: float  # mean regret of the fit as predictions, all runs [fraction]


def monotone_floor_check(ds: Dataset) -> FloorCheck:
    """The errors and the decision regret of the `monotone_floor` fit taken as predictions (runs alone in
    their series predicted exactly). Needs at least one series of >= 2 concurrencies."""
    tpot_fit, ttft_fit, shared = monotone_floor(ds)
    err_tpot, err_ttft = np.abs(tpot_fit / ds.tpot_ms - 1), np.abs(ttft_fit / ds.ttft_ms - 1)
    regret = mean_regret(ds, {"tpot_ms": tpot_fit, "ttft_ms": ttft_fit,
                              "tokens_per_s_per_gpu": ds.throughput(ttft_fit, tpot_fit)})
    return FloorCheck(int(shared.sum()), int((err_tpot[shared] > FLOOR_MOVED).sum()),
                      int((err_ttft[shared] > FLOOR_MOVED).sum()), Stat.of(err_tpot[shared]),
                      Stat.of(err_ttft[shared]), regret)


def osl_pairs(ds: Dataset, pred: Pred) -> dict[str, np.ndarray]:
    """Pairs of configurations equal in CONFIG_COLUMNS but osl: log(measured ratio / predicted ratio) of
    TTFT ('ttft') and of TPOT ('tpot') [log units], the shorter osl over the longer (repeated measurements
    of one side: their medians, of measurements and of predictions).

    The output length moves TTFT only through how often new prompts arrive and how long the decode steps
    are (the cost model's ratio), so the measured ratio of TTFT should follow the predicted one as the
    TPOT ratio does; where it does not, the two runs differ in something the row does not record."""
    series: dict[tuple[str, ...], dict[int, list[int]]] = {}
    for k, i in enumerate(ds.index):
        key = config_key(ds.rows[i], leave_out=("osl",))
        series.setdefault(key, {}).setdefault(ds.runs[k].problem.workload.osl, []).append(k)
    out: dict[str, list[float]] = {"ttft": [], "tpot": []}
    for by_osl in series.values():
        if len(by_osl) < 2:
            continue
        med = {o: {m: (float(np.median(ds.ttft_ms[ks] if m == "ttft" else ds.tpot_ms[ks])),
                       float(np.median(pred[f"{m}_ms"][ks]))) for m in out} for o, ks in by_osl.items()}
        lengths = sorted(med)
        for a in range(len(lengths)):
            for b in range(a + 1, len(lengths)):
                for m in out:
                    (ma, pa), (mb, pb) = med[lengths[a]][m], med[lengths[b]][m]
                    out[m].append(float(np.log((ma / mb) / (pa / pb))))
    return {m: np.array(v) for m, v in out.items()}


@dataclass(frozen=True)
class OslCheck:
    """Summary of `osl_pairs`: how far measured ratios between output lengths follow the predicted ones."""

    pairs: int  # pairs of output lengths of one configuration
    tpot: Stat  # gap between measured and predicted TPOT ratio, exp(|log gap|) - 1 [fraction]
    ttft: Stat  # likewise TTFT
    ttft_off: int  # pairs whose TTFT gap exceeds a factor OSL_OFF
    least_miss: Stat  # per run of a pair, the least TTFT miss of a model with the predicted ratio: half the gap


def osl_check(ds: Dataset, pred: Pred) -> OslCheck | None:
    """Summary of `osl_pairs` (`Stat.of_log_gaps` of the gaps); None when no configuration has two osl."""
    pairs = osl_pairs(ds, pred)
    if not len(pairs["ttft"]):
        return None
    tt = np.abs(pairs["ttft"])
    return OslCheck(len(tt), Stat.of_log_gaps(pairs["tpot"]), Stat.of_log_gaps(pairs["ttft"]),
                    int((tt > np.log(OSL_OFF)).sum()), Stat.of_log_gaps(pairs["ttft"] / 2))


# --- memory ---------------------------------------------------------------------------------------------


def memory_need(ds: Dataset, cal: Calibration) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run, under `cal`: the planner's per-GPU memory (``cost.memory_breakdown``) with the run's
    concurrency / (attention_dp * pp) requests per rank at full context and the run's chunk budget; the
    same with 1 request per rank; and usable HBM (``cost.usable_bytes``) [bytes per GPU each]."""
    need, usable, fixed = (np.empty(len(ds.runs)) for _ in range(3))
    for i, r in enumerate(ds.runs):
        p = r.problem.model_copy(update={"calibration": cal})
        m = r.concurrency / (r.parallel.attention_dp * r.parallel.pp)
        mem = cost.memory_breakdown(p, r.parallel, m, r.chunk)
        need[i] = float(mem["per_gpu_bytes"])
        fixed[i] = float(cost.memory_breakdown(p, r.parallel, 1.0, r.chunk)["per_gpu_bytes"])
        usable[i] = cost.usable_bytes(p)
    return need, fixed, usable


@dataclass(frozen=True)
class MemorySlice:
    """Medians over some runs, for comparing runs that fit in memory with runs that do not."""

    runs: int
    measured_ttft_ms: float  # [ms]
    predicted_ttft_ms: float  # [ms]
    ttft_error: float  # |pred / measured - 1| of TTFT [fraction]
    need_over_usable: float  # memory need / usable HBM [ratio]
    measured_tokens_per_s_per_user: float  # 1000 / measured TPOT [tokens/s/user]


def memory_slice(ds: Dataset, pred: Pred, need: np.ndarray, usable: np.ndarray, mask: np.ndarray
                 ) -> MemorySlice | None:
    """Medians over the runs where `mask` holds (`need`, `usable` as `memory_need` gives them); None for
    no run."""
    if not mask.any():
        return None
    ttft_err = np.abs(pred["ttft_ms"] / ds.ttft_ms - 1)
    tpu = 1000 / ds.tpot_ms
    return MemorySlice(int(mask.sum()), float(np.median(ds.ttft_ms[mask])), float(np.median(pred["ttft_ms"][mask])),
                       float(np.median(ttft_err[mask])), float(np.median(need[mask] / usable[mask])),
                       float(np.median(tpu[mask])))


def odd_concurrency(ds: Dataset) -> list[int]:
    """Indices of the runs whose concurrency differs from the row's batch_size by a factor other than 1,
    attention_dp or the replica's GPUs."""
    out = []
    for i, r in enumerate(ds.runs):
        try:
            batch = int(float(ds.rows[ds.index[i]].get("batch_size") or 0))
        except ValueError:
            batch = 0
        ok = {batch, batch * r.parallel.attention_dp, batch * r.parallel.replica_gpus}
        if r.concurrency not in ok:
            out.append(i)
    return out
