"""Fit the efficiency factors to measured runs, and report prediction errors.

The fit is a bounded robust least-squares (scipy) on log(predicted / measured) TPOT and TTFT:
first the base factors on all runs, pulled towards physical priors (PRIORS), then profiles, each on
its own runs and pulled towards the factors below it so that a profile moves only as far as its data
supports: per serving engine and GPU vendor (the engine's overheads and kernels, ENGINE_FACTORS),
per GPU generation (memory, math and interconnect efficiency, GENERATION_FACTORS: one for H100 and
H200, which share a die) and per generation and math format (GEMM efficiency of BF16/FP8/FP4 tensor
cores). A group with too few runs (MIN_PROFILE_ROWS, MIN_GENERATION_ROWS) keeps the factors below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from planner.catalog import parse_yaml
from planner.errors import SpecError
from planner.runs import (
    DisaggRun,
    Run,
    _group_key,
    measured_times,
    parse_all,
    parse_disagg_run,
    predict_all,
    predict_disagg_all,
    row_mode,
    row_spec,
    run_throughput,
)
from planner.specs import FACTOR_NAMES, Calibration, Factors, Problem, Profile

ENGINE_FACTORS = ("iteration_overhead_ms", "layer_overhead_us", "queue_burstiness", "prefill_attention_efficiency",
                  "decode_attention_efficiency", "mla_decode_efficiency", "moe_gemm_efficiency",
                  "collective_overhead_us", "ttft_overhead_ms", "request_step_overhead_us", "admission_iterations")
"""Factors a serving engine's build for a GPU vendor sets: its scheduler and launch overheads, admission, its
attention, grouped-GEMM and collective kernels, and the fixed per-request time of its front end. The same
engine on AMD runs other kernels (ROCm: aiter, RCCL), so profiles are per (engine, vendor)."""
GENERATION_FACTORS = ("hbm_efficiency", "compute_efficiency", "scaleup_efficiency")
"""Factors a GPU generation sets (one die family: H100 and H200 share Hopper's): achieved memory, math and
interconnect fractions."""
DISAGG_FACTORS = ("disagg_handoff_ms",)
"""Factors only disaggregated serving reads: fitted per engine and GPU vendor on disaggregated runs
(`fit_disagg`), never by the aggregated fit."""
SPEC_FACTORS = ("mtp_acceptance", "eagle_acceptance", "draft_acceptance")
"""Factors only speculative decoding reads, one per method: fitted per engine and GPU vendor on speculative runs
(`fit_spec`), never by the aggregated or the disaggregated fit."""
FORMAT_FACTORS = ("compute_efficiency",)
"""Factors a math format sets within a generation: the GEMM efficiency of BF16, FP8 or FP4 tensor cores."""
PRIORS: dict[str, tuple[float, str]] = {
    "hbm_efficiency": (0.1, "streaming reads reach 0.8-0.9 of peak HBM bandwidth on H100/B200/MI300X "
                       "(shared/reference/hardware.md notes: ~0.8 for large streaming reads)"),
    "compute_efficiency": (0.25, "cuBLAS/CUTLASS/hipBLASLt large GEMMs reach 0.6-0.8 of dense peak"),
    "prefill_attention_efficiency": (0.3, "FlashAttention-3 forward reaches ~0.75 of H100 BF16 peak at long "
                                     "sequences, FlashAttention-2 0.35-0.5 (Shah et al. 2024)"),
    "decode_attention_efficiency": (0.25, "paged-decode kernels (FlashInfer, TensorRT-LLM XQA) read the KV "
                                    "cache at 0.6-0.8 of peak HBM bandwidth at long contexts"),
    "mla_decode_efficiency": (0.3, "FlashMLA: 660 TFLOP/s compute-bound on H800 of 989 BF16 peak = 0.67 "
                              "(deepseek-ai/FlashMLA README)"),
    "moe_gemm_efficiency": (0.3, "grouped expert GEMMs lose to dense ones on small per-expert batches and "
                            "routing kernels"),
    "scaleup_efficiency": (0.2, "NCCL all-reduce bus bandwidth 360-480 GB/s on 8x H100 NVLink (450 GB/s "
                           "per direction)"),
    "scaleout_efficiency": (0.2, "NCCL over 400 Gb/s InfiniBand reaches ~0.7-0.9 of the NIC"),
    "layer_overhead_us": (1.0, "~10 small kernels per layer at 1-3 us launch gap and ramp each under "
                          "CUDA graphs"),
    "collective_overhead_us": (1.0, "one-shot custom all-reduce 5-10 us, NCCL launch ~10 us"),
    "iteration_overhead_ms": (1.5, "scheduler and sampling per iteration, 0.1-3 ms across engines"),
    "request_step_overhead_us": (1.5, "host time per decoding request: 5-30 us"),
    "ttft_overhead_ms": (1.5, "HTTP, tokenisation, admission and streaming: 5-50 ms"),
    "admission_iterations": (1.0, "half an iteration in flight plus one streamed behind, 1-3"),
    "queue_burstiness": (1.5, "between steady traffic (0) and synchronised waves (1)"),
    "disagg_handoff_ms": (1.5, "router hand-off, KV transfer set-up (NIXL/UCX) and the decode engine's admission "
                          "and first step: tens of ms in disaggregated engines"),
    "mtp_acceptance": (0.3, "DeepSeek-V3 technical report (arXiv 2412.19437, section 5.4.3): the second token "
                       "predicted by the MTP module is accepted 85-90% of the time (on DeepSeek's evaluation text; "
                       "acceptance varies with the text generated)"),
    "eagle_acceptance": (0.3, "EAGLE (Li et al. 2024, arXiv 2401.15077) reports per-position acceptance of about "
                         "0.7-0.8 for chain drafts on MT-bench"),
    "draft_acceptance": (0.3, "small draft models: per-token acceptance 0.5-0.9 across tasks (Leviathan et al. "
                         "2023, arXiv 2211.17192, table 3)"),
}
"""Prior of each factor beside its centre (the Factors default): (spread in log units, why). The base fit is
pulled towards the centres with weight PRIOR_SCALE / spread per factor, so that factors the runs cannot tell
apart settle on physics, not on trade-offs against each other."""


def prior_centre(name: str) -> float:
    """The centre of a factor's prior: its Factors default (one place for the value)."""
    return float(Factors.model_fields[name].default)


BASE_SAMPLE = 400
"""Runs the base fit is made on (`base_sample`): every factor's Jacobian costs a prediction of each run, and
the profiles refit their factors on all of their runs."""
PRIOR_SCALE = 0.3
"""Strength of PRIORS in the base fit: a run's log error counts 1 and is soft-limited at 0.3 (the robust loss's scale),
so a factor's prior weighs like a run measured to within its spread [log residual units per spread]."""
MIN_PROFILE_ROWS = 30
"""Fewest runs an engine profile is fitted on."""
MIN_GENERATION_ROWS = 15
"""Fewest runs a generation or format profile is fitted on (three or one factor, pulled towards the base)."""
AGG_FACTORS: tuple[str, ...] = tuple(n for n in FACTOR_NAMES if n not in DISAGG_FACTORS + SPEC_FACTORS)
"""Factors the aggregated fit (`fit`) moves: every factor an aggregated run reads."""
ANCHOR_FACTORS = AGG_FACTORS
"""Factors a deployment's own profile (`fit_anchors`) moves: all of them, each held near the starting
calibration's value by ANCHOR_PRIOR_WEIGHT (a deployment is one engine on one GPU with one model: any
factor can differ there)."""
MIN_ANCHOR_ROWS = 2
"""Fewest measured runs a deployment profile is fitted on."""
ANCHOR_PRIOR_WEIGHT = 0.2
"""Pull of a deployment profile's factors towards the starting calibration's [log units]; weak, so that
a few runs can move them (benchmarks/accuracy.py section 7 measures 0.1, 0.2 and 0.5)."""
TTFT_WEIGHT = 0.5
"""Weight of log TTFT errors against log TPOT errors in the fit (TTFT is noisier)."""
MAX_EVALUATIONS = 60
"""Residual evaluations each least-squares fit may spend (each costs one prediction of its runs)."""
PRIOR_WEIGHT = 2.0
"""Pull of a profile's factors towards the base, per factor [log units]."""
SHIPPED = Path(__file__).resolve().parent / "calibration.yaml"
"""The calibration shipped with the package, fitted to the repository's data/calibration.csv."""


def load_calibration(path: str | Path | None = None) -> Calibration:
    """A calibration from a YAML file; None gives the shipped one (or the unfitted defaults)."""
    if path is None:
        return parse_yaml(SHIPPED, Calibration, shipped=True) if SHIPPED.is_file() else Calibration()
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such calibration file")
    return parse_yaml(path, Calibration)


def save_calibration(cal: Calibration, path: str | Path) -> None:
    """Write a calibration as YAML."""
    try:
        Path(path).write_text(yaml.safe_dump(cal.model_dump(mode="json"), sort_keys=False))
    except OSError as e:
        raise SpecError(f"{path}: cannot write ({e.strerror or e})") from None


def row_source(row: dict[str, str]) -> str:
    """Where a measured-run row was published: 'inferencemax' (InferenceMAX's rows carry a `source` column naming
    it) or 'aiconfigurator' (calibration.csv's rows)."""
    return "inferencemax" if (row.get("source") or "").startswith("InferenceMAX") else "aiconfigurator"


def _columns(keep: list[tuple]) -> tuple[list[int], list, np.ndarray, np.ndarray]:
    """(row index, run, measured TTFT [ms], measured TPOT [ms]) tuples as the columns of a Dataset or DisaggSet."""
    return ([k[0] for k in keep], [k[1] for k in keep], np.array([k[2] for k in keep], dtype=float),
            np.array([k[3] for k in keep], dtype=float))


SPEC_APART = ("spec_decoding '{}': a run with speculative decoding; it fits only the draft acceptance "
              "(planner calibrate --spec-only)")
"""Why the aggregated and disaggregated fits leave a speculative run out."""


@dataclass
class Dataset:
    """Parsed runs with their measurements, grouped by problem for vectorised prediction."""

    rows: list[dict[str, str]]
    index: list[int]  # row index of each parsed run
    runs: list[Run]
    ttft_ms: np.ndarray
    tpot_ms: np.ndarray
    errors: dict[int, str]  # row index -> why it cannot be predicted

    @classmethod
    def of(cls, rows: Iterable[dict[str, str]], calibration: Calibration | None = None,
           speculative: bool = False) -> Dataset:
        """Runs with positive measured TTFT and TPOT; the rest are listed in `errors`. Runs with speculative decoding
        (spec_decoding other than none) are in `errors` too (they fit only the acceptance, fit_spec), or with
        `speculative` the only ones kept (the rows without it are then skipped, in neither)."""
        rows = list(rows)
        parsed, errors = parse_all(rows, calibration or Calibration())
        if speculative:
            parsed = [(i, run) for i, run in parsed if run.problem.speculation is not None]
            errors = {i: e for i, e in errors.items() if row_spec(rows[i]) != "none"}
        else:
            for i, run in parsed:
                if run.problem.speculation is not None:
                    errors[i] = SPEC_APART.format(row_spec(rows[i]))
            parsed = [(i, run) for i, run in parsed if run.problem.speculation is None]
        keep = []
        for i, run in parsed:
            try:
                keep.append((i, run, *measured_times(rows[i])))
            except SpecError as e:
                errors[i] = str(e)
        return cls(rows, *_columns(keep), errors)

    def subset(self, mask: np.ndarray) -> Dataset:
        """The runs where `mask` holds."""
        idx = np.flatnonzero(mask)
        return Dataset(self.rows, [self.index[i] for i in idx], [self.runs[i] for i in idx],
                       self.ttft_ms[idx], self.tpot_ms[idx], self.errors)

    @property
    def systems(self) -> np.ndarray:
        return np.array([r.problem.cluster.name for r in self.runs])

    @property
    def sources(self) -> np.ndarray:
        """Where each run was published: 'inferencemax' (a row with InferenceMAX's `source` column) or
        'aiconfigurator' (calibration.csv's rows)."""
        return np.array([row_source(self.rows[i]) for i in self.index])

    @property
    def generations(self) -> np.ndarray:
        return np.array([r.problem.cluster.generation for r in self.runs])

    @property
    def vendors(self) -> np.ndarray:
        return np.array([r.problem.cluster.vendor for r in self.runs])

    @property
    def maths(self) -> np.ndarray:
        return np.array([r.problem.gemm_math for r in self.runs])

    @property
    def backends(self) -> np.ndarray:
        return np.array([r.problem.backend for r in self.runs])

    @property
    def models(self) -> np.ndarray:
        return np.array([r.problem.model.name for r in self.runs])

    @property
    def measured_throughput(self) -> np.ndarray:
        """Output tokens/s/GPU as the data's README derives it [tokens/s/GPU]."""
        return self.throughput(self.ttft_ms, self.tpot_ms)

    def throughput(self, ttft_ms: np.ndarray, tpot_ms: np.ndarray) -> np.ndarray:
        """Output tokens/s/GPU of these runs had they measured this TTFT and TPOT [ms] (runs.run_throughput)."""
        return run_throughput(self.runs, np.asarray(ttft_ms) / 1000, np.asarray(tpot_ms) / 1000)


def predict(ds: Dataset, calibration: Calibration) -> dict[str, np.ndarray]:
    """Predicted ttft_ms, tpot_ms, tokens_per_s_per_gpu of every run under `calibration` (means only: the
    quantile keys are NaN)."""
    rebound: dict[tuple, Problem] = {}  # one copy per group of runs sharing a problem

    def under(run: Run) -> Run:
        key = _group_key(run)
        if key not in rebound:
            rebound[key] = run.problem.model_copy(update={"calibration": calibration})
        return Run(rebound[key], run.parallel, run.concurrency, run.chunk)

    return predict_all([under(run) for run in ds.runs], quantiles=False)


def _residuals(ds: Dataset, pred: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.log(pred["tpot_ms"] / ds.tpot_ms),
                           TTFT_WEIGHT * np.log(pred["ttft_ms"] / ds.ttft_ms)])


def _fit(ds: Dataset, names: tuple[str, ...], make: Callable[[dict[str, float]], Calibration],
         start: dict[str, float], prior: dict[str, float] | None,
         prior_weight: float | dict[str, float] = PRIOR_WEIGHT) -> dict[str, float]:
    """Bounded robust least squares over the factors `names`, starting at `start`, pulled towards `prior`
    with `prior_weight` per factor (one weight for all, or one per factor) [log units]."""
    from scipy.optimize import least_squares

    fields = Factors.model_fields
    lo = np.array([max(_bound(fields[n], "ge"), 1e-3) for n in names])
    hi = np.array([_bound(fields[n], "le") for n in names])
    # optimise log(factor) so that every factor moves on a relative scale
    x0 = np.clip(np.log(np.maximum([start[n] for n in names], 1e-3)), np.log(lo), np.log(hi))

    def residuals(x: np.ndarray) -> np.ndarray:
        values = dict(zip(names, np.exp(x)))
        res = _residuals(ds, predict(ds, make(values)))
        if prior is not None:
            w = np.array([prior_weight[n] if isinstance(prior_weight, dict) else prior_weight for n in names])
            res = np.concatenate([res, w * (x - np.log([max(prior[n], 1e-3) for n in names]))])
        return res

    sol = least_squares(residuals, x0, bounds=(np.log(lo), np.log(hi)), loss="soft_l1", f_scale=0.3,
                        diff_step=1e-2, max_nfev=MAX_EVALUATIONS, x_scale=1.0)
    return dict(zip(names, (float(v) for v in np.exp(sol.x))))


def _bound(field, kind: str) -> float:
    for meta in field.metadata:
        if hasattr(meta, kind):
            return float(getattr(meta, kind))
    raise ValueError(f"factor without a {kind} bound")


def fit(ds: Dataset, start: Calibration | None = None, name: str = "fitted", source: str = "",
        log: Callable[[str], None] | None = None) -> Calibration:
    """Base factors on all runs, then engine and system profiles where the data allows."""
    start = start or Calibration()
    say = log or (lambda _msg: None)
    keep = {k: v for k, v in start.model_dump().items() if k not in ("base", "profiles", "name", "source")}

    def calibration(base: dict[str, float], profiles: list[Profile]) -> Calibration:
        return Calibration(name=name, source=source, base=Factors(**base), profiles=profiles, **keep)

    base = start.base.model_dump()
    dropped = sum(p.model != "*" for p in start.profiles)
    if dropped:
        say(f"{dropped} deployment profile(s) of the starting calibration not carried over (they were fitted "
            "against its base); anchor those deployments again (fit_anchors)")
    sample = ds.subset(base_sample(ds))
    say(f"fitting the base factors on {len(sample.runs)} of the {len(ds.runs)} runs (every deployment's)")
    centres = {n: prior_centre(n) for n in AGG_FACTORS}
    weights = {n: PRIOR_SCALE / PRIORS[n][0] for n in AGG_FACTORS}
    base.update(_fit(sample, AGG_FACTORS, lambda v: calibration({**base, **v}, []), base, centres, weights))
    profiles: list[Profile] = []

    def fit_profile(keys: dict[str, str], names: tuple[str, ...], mask: np.ndarray, least: int) -> None:
        label = Profile(**keys).label
        if mask.sum() < least:
            say(f"{label}: {int(mask.sum())} runs, keeps the factors below it")
            return
        say(f"fitting the profile {label} on {int(mask.sum())} runs")
        under = calibration(base, profiles).factors_for  # what the runs see without this profile
        sub = ds.subset(mask)
        r0 = sub.runs[0].problem
        at = under(r0.cluster.name, r0.backend, "*", r0.cluster.generation, r0.cluster.vendor, r0.gemm_math)
        at = {n: getattr(at, n) for n in names}

        def make(v: dict[str, float]) -> Calibration:
            return calibration(base, [*profiles, Profile(**keys, factors=v)])

        values = _fit(sub, names, make, at, at)
        profiles.append(Profile(**keys, factors={k: round(v, 4) for k, v in values.items()}, rows=int(mask.sum())))

    for gen in sorted(set(ds.generations) - {""}):
        fit_profile({"generation": gen}, GENERATION_FACTORS, ds.generations == gen, MIN_GENERATION_ROWS)
    for gen in sorted(set(ds.generations) - {""}):
        maths = sorted(set(ds.maths[ds.generations == gen]))
        if len(maths) > 1:
            for math_ in maths:
                fit_profile({"generation": gen, "math": math_}, FORMAT_FACTORS,
                            (ds.generations == gen) & (ds.maths == math_), MIN_GENERATION_ROWS)
    for backend, vendor in sorted(set(zip(ds.backends, ds.vendors))):
        fit_profile({"backend": backend, "vendor": vendor}, ENGINE_FACTORS,
                    (ds.backends == backend) & (ds.vendors == vendor), MIN_PROFILE_ROWS)
    return calibration({k: round(v, 4) for k, v in base.items()}, profiles)


def base_sample(ds: Dataset, size: int = BASE_SAMPLE) -> np.ndarray:
    """Mask of at most about `size` runs spread over every (model, system, backend) deployment: the same share
    of each deployment's runs (at least one), evenly spaced in its order, so that the base fit sees every
    deployment as the full data do."""
    if len(ds.runs) <= size:
        return np.ones(len(ds.runs), bool)
    keep = np.zeros(len(ds.runs), bool)
    share = size / len(ds.runs)
    for mask in deployments(ds).values():
        idx = np.flatnonzero(mask)
        k = max(1, round(share * len(idx)))
        keep[idx[np.linspace(0, len(idx) - 1, k).round().astype(int)]] = True
    return keep


def deployments(ds: Dataset) -> dict[tuple[str, str, str], np.ndarray]:
    """Masks of the runs of each (model, system, backend) deployment."""
    keys = list(zip(ds.models, ds.systems, ds.backends))
    return {k: np.array([x == k for x in keys]) for k in sorted(set(keys))}


def fit_anchors(ds: Dataset, start: Calibration, name: str = "anchored", source: str = "",
                log: Callable[[str], None] | None = None, prior_weight: float = ANCHOR_PRIOR_WEIGHT) -> Calibration:
    """`start` plus a profile per (model, system, backend) deployment of `ds` with at least
    MIN_ANCHOR_ROWS runs: the ANCHOR_FACTORS fitted to that deployment's runs, pulled towards the
    factors `start` gives it with `prior_weight` [log units]. Everything else of `start` is kept; a
    deployment's earlier profile is replaced. For a few runs of one's own deployment (anchor runs),
    not for a broad data set (`fit`)."""
    say = log or (lambda _msg: None)
    profiles = list(start.profiles)
    for (model, system, backend), mask in deployments(ds).items():
        rows = int(mask.sum())
        if rows < MIN_ANCHOR_ROWS:
            say(f"{model} on {system} with {backend}: {rows} run, needs {MIN_ANCHOR_ROWS} to anchor")
            continue
        profiles = [p for p in profiles if (p.model, p.system, p.backend) != (model, system, backend)]
        p0 = ds.subset(mask).runs[0].problem
        prior = start.model_copy(update={"profiles": profiles}).factors_for(
            system, backend, model, p0.cluster.generation, p0.cluster.vendor, p0.gemm_math).model_dump()
        at = {n: prior[n] for n in ANCHOR_FACTORS}
        say(f"anchoring {model} on {system} with {backend} to {rows} runs")

        def make(v: dict[str, float], key=(model, system, backend), kept=profiles) -> Calibration:
            prof = Profile(model=key[0], system=key[1], backend=key[2], factors=v)
            return start.model_copy(update={"profiles": [*kept, prof]})

        values = _fit(ds.subset(mask), ANCHOR_FACTORS, make, at, at, prior_weight)
        profiles.append(Profile(model=model, system=system, backend=backend,
                                factors={k: round(v, 4) for k, v in values.items()}, rows=rows))
    return start.model_copy(update={"profiles": profiles, "name": name, "source": source or start.source})


def holdout_folds(runs: int, max_folds: int = 10) -> np.ndarray:
    """Fold of each of a deployment's `runs` runs for `anchor_holdout`: run k in fold k % min(runs, max_folds)
    (one run per fold, leave-one-out, up to `max_folds` runs)."""
    if max_folds < MIN_ANCHOR_ROWS + 1:
        # fewer folds could leave a fold's complement under MIN_ANCHOR_ROWS runs
        raise ValueError(f"max_folds must be at least {MIN_ANCHOR_ROWS + 1}")
    return np.arange(runs) % min(runs, max_folds)


def anchor_holdout(ds: Dataset, start: Calibration, prior_weight: float = ANCHOR_PRIOR_WEIGHT,
                   max_folds: int = 10) -> dict[str, np.ndarray]:
    """Held-out ttft_ms [ms], tpot_ms [ms], tokens_per_s_per_gpu [tokens/s/GPU] of every run of `ds`: each
    run predicted by `fit_anchors` on `start` fitted to the other runs of its deployment, not to its own
    (leave-one-out; a deployment of more than `max_folds` runs in `max_folds` folds, `holdout_folds`).
    NaN for the runs of deployments with fewer than MIN_ANCHOR_ROWS + 1 runs, too few to leave one out.
    Compare with `predict(ds, start)` for what anchoring gains on runs it was not fitted to."""
    holdout_folds(0, max_folds)  # raises on too few folds, before any fit
    out = {k: np.full(len(ds.runs), np.nan) for k in ("ttft_ms", "tpot_ms", "tokens_per_s_per_gpu")}
    for mask in deployments(ds).values():
        idx = np.flatnonzero(mask)
        if len(idx) < MIN_ANCHOR_ROWS + 1:
            continue
        folds = holdout_folds(len(idx), max_folds)
        for fold in range(folds.max() + 1):
            held, fitted = np.zeros(len(ds.runs), bool), np.zeros(len(ds.runs), bool)
            held[idx[folds == fold]], fitted[idx[folds != fold]] = True, True
            pred = predict(ds.subset(held), fit_anchors(ds.subset(fitted), start, prior_weight=prior_weight))
            for k in out:
                out[k][held] = pred[k]
    return out


# --- error reports ---------------------------------------------------------------------------------


def regimes(ds: Dataset) -> dict[str, np.ndarray]:
    """Masks of the regimes errors are reported by: small/large batch, short/long input."""
    conc = np.array([r.concurrency for r in ds.runs])
    isl = np.array([r.problem.workload.isl for r in ds.runs])
    return {"batch <= 16": conc <= 16, "batch > 16": conc > 16, "isl <= 2048": isl <= 2048,
            "isl > 2048": isl > 2048}


def error_table(ds: Dataset, pred: dict[str, np.ndarray]) -> list[tuple[str, str, int, float, float, float]]:
    """(by, group, runs, median |err| TPOT, TTFT, tokens/s/GPU) overall and per system, model, regime."""
    err = {
        "tpot": np.abs(pred["tpot_ms"] / ds.tpot_ms - 1),
        "ttft": np.abs(pred["ttft_ms"] / ds.ttft_ms - 1),
        "thr": np.abs(pred["tokens_per_s_per_gpu"] / ds.measured_throughput - 1),
    }
    out = []
    slices: list[tuple[str, str, np.ndarray]] = [("all", "all", np.ones(len(ds.runs), bool))]
    slices += [("system", s, ds.systems == s) for s in sorted(set(ds.systems))]
    slices += [("backend", b, ds.backends == b) for b in sorted(set(ds.backends))]
    slices += [("model", m, ds.models == m) for m in sorted(set(ds.models))]
    slices += [("regime", k, v) for k, v in regimes(ds).items()]
    for by, group, mask in slices:
        if mask.any():
            out.append((by, group, int(mask.sum()), *(float(np.median(err[k][mask])) for k in ("tpot", "ttft", "thr"))))
    return out


# --- the calibration workflow ----------------------------------------------------------------------

MIN_FIT_RUNS = 10
"""Fewest usable runs a full fit (`fit`) is run on; fewer call for anchoring (`fit_anchors`)."""


class TooFewRunsError(SpecError):
    """The data has too few usable runs for the fit asked (`anchor`: whether anchoring was asked)."""

    def __init__(self, message: str, anchor: bool) -> None:
        super().__init__(message)
        self.anchor = anchor


@dataclass(frozen=True)
class HoldoutCheck:
    """The held-out check of one anchored deployment: median |err| (TPOT, TTFT, tokens/s/GPU) of its runs
    predicted by the starting calibration and by anchorings that did not see them (`anchor_holdout`)."""

    deployment: tuple[str, str, str]  # (model, system, backend)
    runs: int
    folds: int  # 0: too few runs to leave one out
    before: tuple[float, float, float]
    after: tuple[float, float, float]


@dataclass(frozen=True)
class CalibrationReport:
    """What `calibrate_runs` did: the calibration fitted, the runs used and left out, and the median
    |err| per group before and after, (by, group, runs, (TPOT, TTFT, tokens/s/GPU) before, ... after)."""

    calibration: Calibration
    runs: int
    left_out: int
    errors: list[tuple[str, str, int, tuple[float, float, float], tuple[float, float, float]]]
    holdout: list[HoldoutCheck]


def check_enough_runs(ds: Dataset, anchor: bool) -> None:
    """Raise TooFewRunsError unless the runs support the fit asked: a full fit needs MIN_FIT_RUNS usable runs,
    anchoring a deployment with MIN_ANCHOR_ROWS."""
    if anchor and all(mask.sum() < MIN_ANCHOR_ROWS for mask in deployments(ds).values()):
        found = ", ".join(f"{m} on {s} with {b}" for m, s, b in deployments(ds))
        found = f"at most one run each of: {found}" if found else "no row has a usable measured TTFT/TPOT"
        raise TooFewRunsError(f"no (model, system, backend) deployment has {MIN_ANCHOR_ROWS} usable runs to "
                              f"anchor to ({found})", anchor=True)
    if not anchor and len(ds.runs) < MIN_FIT_RUNS:
        raise TooFewRunsError(f"only {len(ds.runs)} rows with measured TTFT/TPOT can be used; need {MIN_FIT_RUNS} "
                              "for a full fit", anchor=False)


def calibrate_runs(ds: Dataset, start: Calibration, anchor: bool = False, name: str = "fitted", source: str = "",
                   log: Callable[[str], None] | None = None) -> CalibrationReport:
    """Fit a calibration to measured runs (Dataset.of(rows, start)): all factors (`fit`) or, with `anchor`, a
    profile per deployment on top of `start` (`fit_anchors`) and a held-out check of each. Raises
    TooFewRunsError when the runs cannot support the fit asked (check_enough_runs)."""
    check_enough_runs(ds, anchor)
    start_pred = predict(ds, start)
    before = {(a, b): tuple(r[1:]) for a, b, *r in error_table(ds, start_pred)}
    cal = (fit_anchors if anchor else fit)(ds, start, name=name, source=source, log=log)
    errors = [(by, group, int(r[0]), before[(by, group)], tuple(r[1:]))
              for by, group, *r in error_table(ds, predict(ds, cal))]
    return CalibrationReport(calibration=cal, runs=len(ds.runs), left_out=len(ds.errors), errors=errors,
                             holdout=_holdout_checks(ds, start, start_pred) if anchor else [])


def _holdout_checks(ds: Dataset, start: Calibration, start_pred: dict[str, np.ndarray]) -> list[HoldoutCheck]:
    """Per anchored deployment, the median error on runs the anchoring was not fitted to, against the
    starting calibration's on the same runs."""
    held = anchor_holdout(ds, start)
    out = []
    for key, mask in deployments(ds).items():
        runs = int(mask.sum())
        if runs < MIN_ANCHOR_ROWS:
            continue  # not anchored
        if runs < MIN_ANCHOR_ROWS + 1:
            out.append(HoldoutCheck(key, runs, 0, (math.nan,) * 3, (math.nan,) * 3))
            continue
        sub = ds.subset(mask)
        b, a = (error_table(sub, {k: v[mask] for k, v in pred.items()})[0][3:] for pred in (start_pred, held))
        out.append(HoldoutCheck(key, runs, int(holdout_folds(runs).max()) + 1, tuple(b), tuple(a)))
    return out


# --- disaggregated runs ------------------------------------------------------------------------------------

MIN_DISAGG_ROWS = 20
"""Fewest disaggregated runs of one engine and GPU vendor its hand-off is fitted on."""


@dataclass
class DisaggSet:
    """Parsed disaggregated runs (mode disagg, no speculative decoding) with their measurements."""

    rows: list[dict[str, str]]
    index: list[int]
    runs: list[DisaggRun]
    ttft_ms: np.ndarray
    tpot_ms: np.ndarray
    errors: dict[int, str]

    @classmethod
    def of(cls, rows: Iterable[dict[str, str]], calibration: Calibration | None = None,
           speculative: bool = False) -> DisaggSet:
        """The disaggregated rows with positive measured TTFT and TPOT; the others of them in `errors`. Rows with
        speculative decoding are in `errors` (they fit only the acceptance), or with `speculative` the only ones
        considered."""
        rows = list(rows)
        keep, errors = [], {}
        for i, row in enumerate(rows):
            if row_mode(row) != "disagg" or (speculative and row_spec(row) == "none"):
                continue
            if not speculative and row_spec(row) != "none":
                errors[i] = SPEC_APART.format(row_spec(row))
                continue
            try:
                keep.append((i, parse_disagg_run(row, calibration or Calibration()), *measured_times(row)))
            except SpecError as e:
                errors[i] = str(e)
        return cls(rows, *_columns(keep), errors)

    def subset(self, mask: np.ndarray) -> DisaggSet:
        idx = np.flatnonzero(mask)
        return DisaggSet(self.rows, [self.index[i] for i in idx], [self.runs[i] for i in idx], self.ttft_ms[idx],
                         self.tpot_ms[idx], self.errors)

    def column(self, what: str) -> np.ndarray:
        """Per run: 'backend', 'vendor', 'model' or 'system' (the cluster's catalog name)."""
        get = {"backend": lambda p: p.backend, "vendor": lambda p: p.cluster.vendor, "model": lambda p: p.model.name,
               "system": lambda p: p.cluster.name}[what]
        return np.array([get(r.problem) for r in self.runs])


def predict_disagg_set(ds: DisaggSet, calibration: Calibration) -> dict[str, np.ndarray]:
    """Predicted ttft_ms, tpot_ms, tokens_per_s_per_gpu of every disaggregated run under `calibration` (means
    only: the quantile keys are NaN)."""
    rebound: dict[tuple, Problem] = {}

    def under(run: DisaggRun) -> DisaggRun:
        key = _group_key(run)
        if key not in rebound:
            rebound[key] = run.problem.model_copy(update={"calibration": calibration})
        return DisaggRun(rebound[key], run.prefill, run.decode, run.concurrency, run.chunk, run.decode_batch)

    return predict_disagg_all([under(run) for run in ds.runs], quantiles=False)


def fit_disagg(ds: DisaggSet, start: Calibration, log: Callable[[str], None] | None = None) -> Calibration:
    """`start` with DISAGG_FACTORS fitted per (engine, GPU vendor) on its disaggregated runs (at least
    MIN_DISAGG_ROWS), each a bounded robust least squares of log TTFT errors pulled towards its prior
    (PRIORS); the fitted values join that engine's profile (a new profile where it has none). Aggregated
    factors are left as they are: a disaggregated run's TPOT and its decode rate are theirs."""
    say = log or (lambda _msg: None)
    cal = start
    backends, vendors = ds.column("backend"), ds.column("vendor")
    for backend, vendor in sorted(set(zip(backends, vendors))):
        mask = (backends == backend) & (vendors == vendor)
        label = Profile(backend=backend, vendor=vendor).label
        if mask.sum() < MIN_DISAGG_ROWS:
            say(f"disaggregated {label}: {int(mask.sum())} runs, keeps {', '.join(DISAGG_FACTORS)} as it is")
            continue
        say(f"fitting {', '.join(DISAGG_FACTORS)} of {label} on {int(mask.sum())} disaggregated runs")
        sub = ds.subset(mask)
        values = _fit_disagg_factors(sub, cal, backend, vendor)
        cal = _with_engine_factors(cal, backend, vendor, values, int(mask.sum()))
    return cal


def _with_engine_factors(cal: Calibration, backend: str, vendor: str, values: dict[str, float],
                         rows: int) -> Calibration:
    """cal with `values` in the (backend, vendor) engine profile."""
    profiles, found = [], False
    for prof in cal.profiles:
        if (prof.backend, prof.vendor, prof.model, prof.system, prof.generation, prof.math) == (
                backend, vendor, "*", "*", "*", "*"):
            prof = prof.model_copy(update={"factors": {**prof.factors, **values}})
            found = True
        profiles.append(prof)
    if not found:
        profiles.append(Profile(backend=backend, vendor=vendor, factors=values, rows=rows))
    return cal.model_copy(update={"profiles": profiles})


def _fit_disagg_factors(ds: DisaggSet, cal: Calibration, backend: str, vendor: str) -> dict[str, float]:
    from scipy.optimize import least_squares

    fields = Factors.model_fields
    names = DISAGG_FACTORS
    lo = np.array([max(_bound(fields[n], "ge"), 1e-3) for n in names])
    hi = np.array([_bound(fields[n], "le") for n in names])
    r0 = ds.runs[0].problem
    now = cal.factors_for(r0.cluster.name, backend, "*", r0.cluster.generation, vendor, r0.gemm_math)
    x0 = np.clip(np.log([max(getattr(now, n), 1e-3) for n in names]), np.log(lo), np.log(hi))
    centre = np.log([max(prior_centre(n), 1e-3) for n in names])
    weight = np.array([PRIOR_SCALE / PRIORS[n][0] for n in names])

    def residuals(x: np.ndarray) -> np.ndarray:
        trial = _with_engine_factors(cal, backend, vendor, dict(zip(names, np.exp(x))), len(ds.runs))
        pred = predict_disagg_set(ds, trial)
        return np.concatenate([np.log(pred["ttft_ms"] / ds.ttft_ms), weight * (x - centre)])

    sol = least_squares(residuals, x0, bounds=(np.log(lo), np.log(hi)), loss="soft_l1", f_scale=0.3,
                        diff_step=1e-2, max_nfev=MAX_EVALUATIONS)
    return {n: round(float(v), 4) for n, v in zip(names, np.exp(sol.x))}


# --- speculative-decoding runs ------------------------------------------------------------------------------

MIN_SPEC_ROWS = 10
"""Fewest speculative runs of one engine, GPU vendor and method its acceptance is fitted on."""


@dataclass
class SpecSet:
    """Measured runs with speculative decoding (spec_decoding mtp or eagle): the aggregated ones and the
    disaggregated ones, in that order wherever a column runs over both."""

    agg: Dataset
    disagg: DisaggSet

    @classmethod
    def of(cls, rows: Iterable[dict[str, str]], calibration: Calibration | None = None) -> SpecSet:
        """The speculative rows with positive measured TTFT and TPOT (both modes); the others of them in `errors`."""
        rows = list(rows)
        agg = Dataset.of(rows, calibration, speculative=True)
        agg.errors = {i: e for i, e in agg.errors.items() if row_mode(rows[i]) == "agg"}
        return cls(agg, DisaggSet.of(rows, calibration, speculative=True))

    @property
    def size(self) -> int:
        """Runs of both modes [runs]."""
        return len(self.agg.runs) + len(self.disagg.runs)

    @property
    def errors(self) -> dict[int, str]:
        """Row index -> why a speculative row cannot be predicted."""
        return {**self.agg.errors, **self.disagg.errors}

    @property
    def tpot_ms(self) -> np.ndarray:
        """Measured TPOT of every run [ms]."""
        return np.concatenate([self.agg.tpot_ms, self.disagg.tpot_ms])

    @property
    def ttft_ms(self) -> np.ndarray:
        """Measured TTFT of every run [ms]."""
        return np.concatenate([self.agg.ttft_ms, self.disagg.ttft_ms])

    @property
    def modes(self) -> np.ndarray:
        """'agg' or 'disagg' per run."""
        return np.array(["agg"] * len(self.agg.runs) + ["disagg"] * len(self.disagg.runs))

    def column(self, what: str) -> np.ndarray:
        """Per run: 'backend', 'vendor', 'model', 'system' or 'method' (the speculation's)."""
        get = {"backend": lambda p: p.backend, "vendor": lambda p: p.cluster.vendor, "model": lambda p: p.model.name,
               "system": lambda p: p.cluster.name, "method": lambda p: p.speculation.method.value}[what]
        return np.array([get(r.problem) for r in [*self.agg.runs, *self.disagg.runs]], dtype=object).astype(str)

    def subset(self, mask: np.ndarray) -> SpecSet:
        """The runs where `mask` holds."""
        n = len(self.agg.runs)
        mask = np.asarray(mask, bool)
        return SpecSet(self.agg.subset(mask[:n]), self.disagg.subset(mask[n:]))


def predict_spec_set(ds: SpecSet, calibration: Calibration) -> dict[str, np.ndarray]:
    """Predicted ttft_ms, tpot_ms, tokens_per_s_per_gpu of every speculative run under `calibration`."""
    keys = ("ttft_ms", "tpot_ms", "tokens_per_s_per_gpu")
    parts = []
    if ds.agg.runs:
        parts.append(predict(ds.agg, calibration))
    if ds.disagg.runs:
        parts.append(predict_disagg_set(ds.disagg, calibration))
    return {k: np.concatenate([part[k] for part in parts]) if parts else np.zeros(0) for k in keys}


def fit_spec(ds: SpecSet, start: Calibration, log: Callable[[str], None] | None = None) -> Calibration:
    """`start` with the acceptance of each speculation method fitted per (engine, GPU vendor) on its speculative
    runs (at least MIN_SPEC_ROWS): a bounded robust least squares of log TPOT errors pulled towards the prior
    (PRIORS); the value joins that engine's profile. Nothing else moves: the step's cost is the aggregated
    and disaggregated fits'."""
    say = log or (lambda _msg: None)
    cal = start
    backends, vendors, methods = ds.column("backend"), ds.column("vendor"), ds.column("method")
    for backend, vendor, method in sorted(set(zip(backends, vendors, methods))):
        mask = (backends == backend) & (vendors == vendor) & (methods == method)
        name = f"{method}_acceptance"
        label = Profile(backend=backend, vendor=vendor).label
        if mask.sum() < MIN_SPEC_ROWS:
            say(f"speculative {label}: {int(mask.sum())} runs, keeps {name} as it is")
            continue
        say(f"fitting {name} of {label} on {int(mask.sum())} speculative runs")
        value = _fit_spec_factor(ds.subset(mask), cal, backend, vendor, name)
        cal = _with_engine_factors(cal, backend, vendor, {name: value}, int(mask.sum()))
    return cal


def _fit_spec_factor(ds: SpecSet, cal: Calibration, backend: str, vendor: str, name: str) -> float:
    from scipy.optimize import least_squares

    field = Factors.model_fields[name]
    lo, hi = np.log(_bound(field, "ge")), np.log(_bound(field, "le"))
    r0 = (ds.agg.runs or ds.disagg.runs)[0].problem
    now = getattr(cal.factors_for(r0.cluster.name, backend, "*", r0.cluster.generation, vendor, r0.gemm_math), name)
    x0 = np.clip(np.log([now]), lo, hi)
    centre, weight = np.log(prior_centre(name)), PRIOR_SCALE / PRIORS[name][0]
    measured = ds.tpot_ms

    def residuals(x: np.ndarray) -> np.ndarray:
        trial = _with_engine_factors(cal, backend, vendor, {name: float(np.exp(x[0]))}, ds.size)
        pred = predict_spec_set(ds, trial)
        return np.concatenate([np.log(pred["tpot_ms"] / measured), weight * (x - centre)])

    sol = least_squares(residuals, x0, bounds=([lo], [hi]), loss="soft_l1", f_scale=0.3, diff_step=1e-2,
                        max_nfev=MAX_EVALUATIONS)
    return round(float(np.exp(sol.x[0])), 4)
