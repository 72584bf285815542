"""Measured serving runs: read engine benchmark rows and predict what was measured.

A row is one engine launch (layout, precision, backend) measured at one client concurrency with
fixed input/output lengths (the columns of the repository's data/calibration.csv). Prediction uses
the planner's own cost model (planner.cost) for every step time and memory figure; this module
adds only the closed loop the benchmark ran:

- the client keeps B requests in flight per replica, spread over attention_dp * pp ranks and
  micro-batches: n = B / (attention_dp * pp) per rank;
- by Little's law only part of them decode at a time: m decoding requests per rank satisfy
  ``m * (1 + TTFT(m) / ((osl - 1) * TPOT(m))) = n`` (the others wait for or are in prefill);
- the engine holds at most as many requests as its KV cache fits: beyond that, requests wait for
  a slot, and the wait joins TTFT.

TPOT(m), TTFT(m) are the planner's metrics for m decoding requests with the engine's chunk
budget (Calibration.engine_chunk_tokens). Predicted tokens/s/GPU is the measured definition,
``B * osl / (TTFT + (osl - 1) * TPOT) / GPUs``.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import TextIO

import numpy as np
from pydantic import ValidationError

from planner import cost, percentiles
from planner.catalog import load_cluster, load_model, validation_message
from planner.errors import PlannerError, SpecError
from planner.rules import explain, layout_violations
from planner.specs import Calibration, Parallel, Precision, Problem, SpecMethod, Speculation, Workload

INPUT_COLUMNS = (
    "model_path", "system", "backend", "backend_version", "precision", "gemm_quant_mode", "moe_quant_mode",
    "isl", "osl", "batch_size", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size",
)
"""Columns a measured-run CSV must have (id and the measured columns are optional)."""
PERCENTILE_COLUMNS = ("pred_median_ttft_ms", "pred_p99_ttft_ms", "pred_median_tpot_ms", "pred_p99_tpot_ms")
"""Predicted percentiles over a run's requests (planner.percentiles), beside the means."""

PREDICTED_COLUMNS = ("pred_ttft_ms", "pred_tpot_ms", "pred_tokens_per_s_per_gpu", *PERCENTILE_COLUMNS,
                     "pred_ttft_lo_ms", "pred_ttft_hi_ms", "pred_tpot_lo_ms", "pred_tpot_hi_ms",
                     "pred_tokens_per_s_per_gpu_lo", "pred_tokens_per_s_per_gpu_hi", "pred_interval_level", "error")
"""Columns `predict_rows` adds: the predictions (means and percentiles), their interval ends (empty when the
calibration has no interval table) and level, and why a row could not be predicted."""

_PREDICTIONS = ("ttft_ms", "tpot_ms", "tokens_per_s_per_gpu", "decoding_per_rank", "ttft_p50_ms", "ttft_p99_ms",
                "tpot_p50_ms", "tpot_p99_ms")
"""Keys of a group prediction (predict_runs, _predict_disagg_group) [ms, tokens/s/GPU, requests]."""

_ENGINE_MODES = {
    "w4a8": Precision.w4a8, "w4a8_awq": Precision.w4a8, "w4a8_mxfp4_fp8": Precision.w4a8,
    "w4a8_mxfp4_mxfp8": Precision.w4a8, "w4a8_nvfp4_fp8": Precision.w4a8,
    "fp8_block": Precision.fp8, "fp8_blockscale": Precision.fp8, "w8a8": Precision.fp8,
    "fp16": Precision.bf16, "float16": Precision.bf16, "bfloat16": Precision.bf16,
}
"""Engine quantisation modes that are no precision name of their own -> the Precision they store and
multiply in (FP16 is sized and timed as BF16)."""
_QUANT = {**{name: Precision(name) for name in Precision.names()}, **_ENGINE_MODES}
"""Every name a row's precision, gemm_quant_mode or moe_quant_mode may hold (lowercase): the precisions
with their aliases (int4_wo, awq, gptq = int4; nvfp4 = fp4; mxfp4) and the engine modes."""
_FP4_RECORDS = (Precision.fp4, Precision.mxfp4)
"""What data sources write for MXFP4 weights as well as NVFP4 ('fp4', and 'nvfp4' in aiconfigurator's
silicon data for openai/gpt-oss-*, whose only checkpoint is MXFP4)."""
ASSUMED_DRAFT_TOKENS: dict[str, int] = {"trtllm": 3, "sglang": 1, "vllm": 1, "*": 3}
"""ASSUMPTION: the draft tokens k per step of a measured speculative run that does not record it (no
`draft_tokens` column; InferenceMAX's rows do not), by engine: the engines' usual setting for DeepSeek's MTP.
TensorRT-LLM 3 (its DeepSeek-R1 MTP examples set num_nextn_predict_layers 3, the one MTP module reused);
SGLang 1 (--speculative-num-steps 1, 2 draft tokens verified); vLLM 1 (num_speculative_tokens 1 in its
deepseek_mtp examples). On the InferenceMAX MTP rows the engines' streamed chunks agree: SGLang's (one per step)
hold at most 2 tokens (median ITL / median TPOT up to 2.0, against 1.0 without MTP: a ceiling of k + 1 = 2),
TensorRT-LLM's (one every 20 iterations without MTP) up to 2.4 tokens per iteration, more than k = 1 allows
(benchmarks/spec_accuracy.py prints these ratios). Not recorded, so not checked row by row."""
SPEC_COLUMN_METHODS = {"mtp": SpecMethod.mtp, "eagle": SpecMethod.eagle}
"""The `spec_decoding` values of a measured run that are predicted, and their method ('none' or empty: none)."""
_FIXED_POINT_STEPS = 12
"""Iterations of the Little's-law fixed point (it contracts fast: TTFT << osl * TPOT mostly)."""


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a measured-run CSV; SpecError naming the file and the missing columns."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read ({e})") from None
    except csv.Error as e:
        raise SpecError(f"{path}: malformed CSV ({e})") from None
    missing = [c for c in INPUT_COLUMNS if c not in header]
    if missing:
        raise SpecError(f"{path}: missing columns {', '.join(missing)} (needs {', '.join(INPUT_COLUMNS)})")
    return rows


def write_rows(stream: TextIO, rows: list[dict[str, str]]) -> None:
    """Rows as CSV on a text stream: input columns first, predictions last."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    fields = [f for f in fields if f not in PREDICTED_COLUMNS] + list(PREDICTED_COLUMNS)
    w = csv.DictWriter(stream, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)


def _int(row: dict[str, str], col: str, default: int = 1) -> int:
    """An integer column; empty or 0 reads as `default` (the data's 'not used')."""
    text = (row.get(col) or "").strip()
    if not text:
        return default
    try:
        value = int(float(text))
    except ValueError:
        raise SpecError(f"column {col}: '{text}' is not a number") from None
    if value < 0:
        raise SpecError(f"column {col}: {value} is negative")
    return value or default


def _precision(text: str | None) -> Precision | None:
    t = (text or "").strip().lower()
    if not t:
        return None
    if t not in _QUANT:
        raise SpecError(f"unknown quantisation '{text}' (known: {', '.join(sorted(_QUANT))})")
    return _QUANT[t]


@dataclass(frozen=True)
class Run:
    """One measured launch, parsed: what to predict for."""

    problem: Problem
    parallel: Parallel
    concurrency: int  # client requests in flight for the replica [requests]
    chunk: int  # the engine's prefill budget per iteration and rank [tokens]


def _kv_precision(backend: str, weights: Precision, experts: Precision | None, problem_cluster) -> Precision:
    """Engine defaults: TensorRT-LLM keeps an FP8 KV cache with FP8/FP4 checkpoints (any quantised
    component: gpt-oss's MXFP4 experts count); vLLM and SGLang default to the activation type (BF16)."""
    quantised = weights != Precision.bf16 or experts not in (None, Precision.bf16)
    if backend == "trtllm" and quantised and problem_cluster.supports("fp8"):
        return Precision.fp8
    return Precision.bf16


def _as_served(model, weights: Precision, experts: Precision | None) -> tuple[Precision, Precision | None]:
    """The formats a row's engine ran, from what the row records (experts None: as the weights).

    A 4-bit float record (fp4, nvfp4 or mxfp4, _FP4_RECORDS) of a model whose published checkpoint is
    MXFP4 (ModelSpec.checkpoint_precision) is that checkpoint: for openai/gpt-oss-*, BF16 attention and
    router with MXFP4 routed experts, what the engines serve for it. Any other record stands as written.
    """
    ckpt = model.checkpoint_precision
    if (ckpt is not None and Precision.mxfp4 in (ckpt.dense, ckpt.experts) and weights in _FP4_RECORDS
            and experts in (None, *_FP4_RECORDS)):
        return ckpt.dense, ckpt.experts
    return weights, experts


def _concurrency(row: dict[str, str], tp: int, adp: int) -> int:
    """The client concurrency: batch_size, or the load generator's own record where a row keeps one.

    Some TensorRT-LLM rows record batch_size per attention-DP rank or per GPU; their
    silicon_data_source keeps `silicon_concurrency=N`, the requests the client kept in flight. N is
    used when it is batch_size times attention_dp or times tp (those two conventions); any other N
    is not explained by the row, and batch_size stands.
    """
    b = _int(row, "batch_size", default=0)
    m = re.search(r"silicon_concurrency=(\d+)", row.get("silicon_data_source") or "")
    if m and int(m.group(1)) in (b * adp, b * tp):
        return int(m.group(1))
    return b


@lru_cache(maxsize=256)
def _specs(model_ref: str, system: str):
    return load_model(model_ref), load_cluster(system)


def row_spec(row: dict[str, str]) -> str:
    """A row's speculative decoding as recorded: 'none' (also for an empty or missing column), 'mtp', ..."""
    return (row.get("spec_decoding") or "none").strip().lower() or "none"


def row_speculation(row: dict[str, str], backend: str) -> Speculation | None:
    """The Speculation of a row: None for spec_decoding none; its method (SPEC_COLUMN_METHODS), the draft tokens
    of its `draft_tokens` column or else ASSUMED_DRAFT_TOKENS of its engine, and the calibration's acceptance.
    SpecError for a method that is not predicted."""
    spec = row_spec(row)
    if spec == "none":
        return None
    if spec not in SPEC_COLUMN_METHODS:
        raise SpecError(f"spec_decoding '{spec}': only {', '.join(SPEC_COLUMN_METHODS)} (and none) are predicted")
    k = _int(row, "draft_tokens", default=0) or ASSUMED_DRAFT_TOKENS.get(backend, ASSUMED_DRAFT_TOKENS["*"])
    if not 1 <= k <= 8:
        raise SpecError(f"column draft_tokens: {k} draft tokens, 1 to 8 are modelled")
    return Speculation(method=SPEC_COLUMN_METHODS[spec], draft_tokens=k)


def _row_basics(row: dict[str, str]):
    """(model, cluster, backend, weight format, expert format or None) of a row, as its engine served them;
    SpecError for unknown names or formats."""
    model, cluster = _specs((row.get("model_path") or "").strip(), (row.get("system") or "").strip())
    backend = (row.get("backend") or "*").strip().lower() or "*"
    weights = _precision(row.get("gemm_quant_mode")) or _precision(row.get("precision")) or Precision.bf16
    experts = _precision(row.get("moe_quant_mode")) if model.is_moe else None
    weights, experts = _as_served(model, weights, experts)
    return model, cluster, backend, weights, experts


def measured_times(row: dict[str, str]) -> tuple[float, float]:
    """A row's measured (TTFT, TPOT) [ms]; SpecError saying why when it has none usable."""
    try:
        ttft, tpot = float(row["silicon_ttft_ms"]), float(row["silicon_tpot_ms"])
    except (KeyError, TypeError, ValueError):
        raise SpecError("no measured silicon_ttft_ms / silicon_tpot_ms") from None
    if not (ttft > 0 and tpot > 0 and math.isfinite(ttft) and math.isfinite(tpot)):
        raise SpecError("measured TTFT/TPOT not positive")
    return ttft, tpot


def row_mode(row: dict[str, str]) -> str:
    """A row's serving mode: 'agg' (the default when the column is missing or empty) or what it records."""
    return (row.get("mode") or "agg").strip().lower() or "agg"


def parse_run(row: dict[str, str], calibration: Calibration) -> Run:
    """The problem, layout and batching a row describes; PlannerError with the reason otherwise."""
    mode = row_mode(row)
    if mode != "agg":
        raise SpecError(f"mode '{mode}': a disaggregated run (prefill and decode on separate pools); the fit "
                        "and this prediction take aggregated runs (mode agg); disaggregated ones are predicted by "
                        "parse_disagg_run")
    model, cluster, backend, weights, experts = _row_basics(row)
    speculation = row_speculation(row, backend)
    tp, pp = _int(row, "tp_size"), _int(row, "pp_size")
    adp = _int(row, "attention_dp_size")
    ep = _int(row, "moe_ep_size") if model.is_moe else 1
    moe_tp = _int(row, "moe_tp_size") if model.is_moe else tp * adp
    if model.is_moe and moe_tp * ep != tp * adp and ep == 1 and moe_tp == 1:
        moe_tp = tp * adp  # 'not used' recorded for a plain TP MoE
    if (model.is_moe and backend == "vllm" and not (row.get("attention_dp_size") or "").strip("0 ")
            and moe_tp * ep > tp and moe_tp * ep % tp == 0):
        # vLLM's MoE layers split their experts over tensor_parallel_size x data_parallel_size GPUs (by EP with
        # --enable-expert-parallel, else by TP): a MoE group wider than the TP with no attention-DP recorded is
        # that data-parallel attention
        adp = moe_tp * ep // tp
    par = Parallel(tp=tp, attention_dp=adp, pp=pp, ep=ep, moe_tp=moe_tp)
    try:
        problem = Problem(
            model=model, cluster=cluster, gpus=par.gpus_used,
            workload=Workload(isl=_int(row, "isl", 0) or 1, osl=_int(row, "osl", 0) or 1, burstiness=None,
                              closed_loop=True),
            precision=weights, expert_precision=experts if experts not in (None, weights) else None,
            kv_precision=_kv_precision(backend, weights, experts, cluster), calibration=calibration, backend=backend,
            speculation=speculation,
        )
    except ValidationError as e:
        raise SpecError(validation_message(e)) from None
    for col in ("isl", "osl"):
        if _int(row, col, 0) < 1:
            raise SpecError(f"column {col} must be a positive number")
    broken = layout_violations(problem, par)
    if broken:
        raise SpecError(f"layout {par.label}: {explain(problem, par, broken[0])}")
    concurrency = _concurrency(row, tp, adp)
    if concurrency < 1:
        raise SpecError("batch_size must be a positive number")
    chunks = calibration.engine_chunk_tokens
    return Run(problem, par, concurrency, chunks.get(backend, chunks.get("*", 8192)))


@dataclass(frozen=True)
class DisaggRun:
    """One measured disaggregated deployment, parsed: x prefill workers of one layout, y decode workers of
    another (Parallel.dp = the worker counts), the client concurrency over the whole deployment, the prefill
    chunk per pass and rank, and the decode engines' batch limit per worker (None: not recorded)."""

    problem: Problem
    prefill: Parallel
    decode: Parallel
    concurrency: int  # [requests] in flight over the deployment
    chunk: int  # [tokens] per prefill pass and attention-DP rank
    decode_batch: int | None  # [requests] per decode worker


def _pool_layout(row: dict[str, str], pool: str, model) -> Parallel:
    """The layout of one worker of a pool (columns prefill_* or decode_*), dp = its workers."""
    tp, pp = _int(row, f"{pool}_tp_size"), _int(row, f"{pool}_pp_size")
    adp = _int(row, f"{pool}_attention_dp_size")
    ep = _int(row, f"{pool}_moe_ep_size") if model.is_moe else 1
    moe_tp = _int(row, f"{pool}_moe_tp_size") if model.is_moe else tp * adp
    if model.is_moe and moe_tp * ep != tp * adp and ep == 1 and moe_tp == 1:
        moe_tp = tp * adp
    return Parallel(tp=tp, attention_dp=adp, pp=pp, ep=ep, moe_tp=moe_tp, dp=_int(row, f"{pool}_num_workers"))


def parse_disagg_run(row: dict[str, str], calibration: Calibration) -> DisaggRun:
    """The problem, both pools' layouts and the batching a disaggregated row describes (mode disagg, the
    prefill_* and decode_* columns of ../shared/validation/disagg.csv); PlannerError with the reason otherwise."""
    if row_mode(row) != "disagg":
        raise SpecError(f"mode '{row_mode(row)}': not a disaggregated run")
    model, cluster, backend, weights, experts = _row_basics(row)
    speculation = row_speculation(row, backend)
    pre, dec = _pool_layout(row, "prefill", model), _pool_layout(row, "decode", model)
    for col in ("isl", "osl"):
        if _int(row, col, 0) < 1:
            raise SpecError(f"column {col} must be a positive number")
    try:
        problem = Problem(
            model=model, cluster=cluster, gpus=pre.gpus_used + dec.gpus_used,
            workload=Workload(isl=_int(row, "isl", 0), osl=_int(row, "osl", 0), burstiness=None, closed_loop=True),
            precision=weights, expert_precision=experts if experts not in (None, weights) else None,
            kv_precision=_kv_precision(backend, weights, experts, cluster), calibration=calibration, backend=backend,
            speculation=speculation,
        )
    except ValidationError as e:
        raise SpecError(validation_message(e)) from None
    for name, par in (("prefill", pre), ("decode", dec)):
        broken = [r for r in layout_violations(problem, par) if r != "gpu_budget"]
        if broken:
            raise SpecError(f"{name} layout {par.label}: {explain(problem, par, broken[0])}")
    m = re.search(r"silicon_concurrency=(\d+)", row.get("silicon_data_source") or "")
    concurrency = int(m.group(1)) if m else _int(row, "batch_size", default=0)
    if concurrency < 1:
        raise SpecError("batch_size must be a positive number")
    chunks = calibration.engine_chunk_tokens
    chunk = chunks.get(backend, chunks.get("*", 8192))
    prompts = _int(row, "prefill_batch_size", default=0)
    if prompts:  # the prefill engines' batch limit: that many prompts per pass
        chunk = max(chunk, prompts * problem.workload.isl) if prompts > 1 else max(chunk, problem.workload.isl)
    decode_batch = _int(row, "decode_batch_size", default=0) or None
    for name, par in (("prefill", pre), ("decode", dec)):
        one = par.model_copy(update={"dp": 1})
        weights = float(cost.weight_bytes_per_gpu(problem, one.tp, one.attention_dp, one.pp)
                        + cost.draft_weight_bytes_per_gpu(problem, one.tp, one.attention_dp))
        if weights + cost.reserved_bytes(problem) > cost.usable_bytes(problem):
            raise SpecError(f"{name} worker {_short_label(one)} cannot hold the weights: {weights / 1e9:.0f} GB per "
                            f"GPU at {problem.precision_label}, {cost.usable_bytes(problem) / 1e9:.0f} GB usable on "
                            f"{cluster.name} (the row's layout is not what ran)")
    return DisaggRun(problem, pre, dec, concurrency, chunk, decode_batch)


def _short_label(par: Parallel) -> str:
    return par.label.removesuffix(" DP1")


_BISECTION_STEPS = 50
"""Bisection steps of the disaggregated closed loop (a relative precision of 1e-15 of the batch)."""


def predict_disagg(run: DisaggRun) -> dict[str, float]:
    """Predicted TTFT [ms], TPOT [ms], tokens/s/GPU and decoding requests per rank of one measured disaggregated
    deployment (predict_disagg_all)."""
    return {k: float(v[0]) for k, v in predict_disagg_all([run]).items()}


def predict_disagg_all(runs: list[DisaggRun], quantiles: bool = True) -> dict[str, np.ndarray]:
    """`_predict_disagg_group` for any disaggregated runs: grouped by problem, vectorised within a group, in
    input order (the quantiles NaN unless `quantiles`)."""
    return _grouped(runs, lambda group: _predict_disagg_group(group, quantiles))


def _pool_layouts(pars: list[Parallel]) -> cost.Layouts:
    f = np.array
    return cost.Layouts(tp=f([q.tp for q in pars]), attention_dp=f([q.attention_dp for q in pars]),
                        pp=f([q.pp for q in pars]), ep=f([q.ep for q in pars]), dp=np.ones(len(pars), np.int64))


def _predict_disagg_group(runs: list[DisaggRun], quantiles: bool = True) -> dict[str, np.ndarray]:
    """Predicted TTFT [ms], TPOT [ms] and tokens/s/GPU of measured disaggregated deployments sharing one problem.

    The client keeps B requests in flight. m decode requests per decode rank (y workers of adp * pp ranks)
    decode at TPOT(m) (cost.decode_pass_time) and finish X = y * adp * pp * m / ((osl - 1) * TPOT) requests
    per second, which the prefill pool prefills at load rho = X / (x * capacity) with the TTFT of
    cost.disagg_ttft. Little's law over the loop, B = X * (TTFT + (osl - 1) * TPOT), fixes m (found by
    bisection: the left side grows with m). The decode engines hold at most their batch limit (decode_batch,
    where recorded) and as many requests as their KV cache fits; clients beyond wait for a slot, and the wait
    (Little's law) joins TTFT.
    """
    p = runs[0].problem
    lp, ld = _pool_layouts([r.prefill for r in runs]), _pool_layouts([r.decode for r in runs])
    chunk = np.array([r.chunk for r in runs], dtype=float)
    x = np.array([r.prefill.dp for r in runs], dtype=float)
    y = np.array([r.decode.dp for r in runs], dtype=float)
    b = np.array([r.concurrency for r in runs], dtype=float)
    osl = p.workload.osl
    steps = max(osl - 1, 1)
    ranks = ld.attention_dp * ld.pp
    n = b / (y * ranks)  # clients per decode rank
    mem1 = cost.decode_memory_breakdown(p, ld, 1.0)
    w = p.workload
    per_request = (cost.kv_cache_bytes_per_gpu(p, ld.tp, 1.0) + ld.pp * cost.draft_kv_bytes_per_request(
        p, ld.tp, w.isl + w.osl)) * (w.isl + w.osl / 2) / (w.isl + w.osl)
    room = cost.usable_bytes(p) - (mem1["per_gpu_bytes"] - mem1["kv_cache_bytes"])
    most = np.maximum(np.floor(room / per_request), 1.0)
    limit = np.array([r.decode_batch or np.inf for r in runs], dtype=float)
    most = np.minimum(most, np.maximum(limit / ranks, 1.0))
    gpus = x * lp.replica_gpus + y * ld.replica_gpus
    same = p.cluster.scaleup_domain_gpus >= gpus

    def loop(m: np.ndarray) -> dict[str, np.ndarray]:
        return cost.disagg_metrics(p, lp, chunk, x, p, ld, m, y, same)

    def in_flight(m: np.ndarray) -> np.ndarray:
        g = loop(m)
        return m * (1 + np.minimum(g["ttft_s"], 1e6) / (steps * g["tpot_s"]))

    top = np.minimum(n, most)
    lo, hi = np.full(len(runs), 1e-6), top.copy()
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        ok = in_flight(mid) <= n
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    m = np.where(in_flight(top) <= n, top, lo)
    g = loop(m)
    tpot, ttft = g["tpot_s"], np.minimum(g["ttft_s"], 1e6)
    served = m * (1 + ttft / (steps * tpot))
    wait = np.maximum(n - served, 0.0) / m * steps * tpot  # clients beyond the slots wait for one
    ttft = ttft + wait
    thr = b * osl / (ttft + (osl - 1) * tpot) / gpus
    means = {"ttft_ms": ttft * 1e3, "tpot_ms": tpot * 1e3, "tokens_per_s_per_gpu": thr, "decoding_per_rank": m}
    if not quantiles:
        return {**means, **{k: np.full(len(runs), np.nan) for k in _PREDICTIONS if k not in means}}
    q = {f"ttft_p{k}_ms": (np.minimum(percentiles.disagg_ttft_quantile(
        p, g["prefill_service_s"], g["prefill_load"], g["kv_transfer_s"], k / 100), 1e6) + wait) * 1e3
        for k in (50, 99)}
    q.update({f"tpot_p{k}_ms": percentiles.disagg_tpot_quantile(p, tpot, k / 100) * 1e3 for k in (50, 99)})
    return {**means, **q}


def _layouts(runs: list[Run]) -> SimpleNamespace:
    """Array-valued stand-in for Parallel: the cost functions broadcast over it."""
    f = np.array
    return SimpleNamespace(
        tp=f([r.parallel.tp for r in runs]), attention_dp=f([r.parallel.attention_dp for r in runs]),
        pp=f([r.parallel.pp for r in runs]), ep=f([r.parallel.ep for r in runs]),
        replica_gpus=f([r.parallel.replica_gpus for r in runs]), dp=np.ones(len(runs)),
    )


def predict_runs(runs: list[Run], quantiles: bool = True) -> dict[str, np.ndarray]:
    """Predicted TTFT [ms], TPOT [ms], tokens/s/GPU and decoding requests per rank for runs sharing
    one problem (model, cluster, precisions, workload, backend, calibration), and their p50/p99 [ms] unless
    `quantiles` is False (a fit reads the means only; the quantiles are then NaN, and three quarters of the
    time is saved)."""
    p = runs[0].problem
    par = _layouts(runs)
    ranks = par.attention_dp * par.pp
    n = np.array([r.concurrency for r in runs], dtype=float) / ranks
    chunk = np.array([r.chunk for r in runs], dtype=float)
    osl = p.workload.osl
    # the most requests per rank the KV cache holds: engines page the cache, so a request occupies
    # its mean resident context, isl + osl / 2, not the full isl + osl the planner reserves
    mem1 = cost.memory_breakdown(p, par, 1.0, chunk)
    w = p.workload
    per_request = (cost.kv_cache_bytes_per_gpu(p, par.tp, 1.0) + par.pp * cost.draft_kv_bytes_per_request(
        p, par.tp, w.isl + w.osl)) * (w.isl + w.osl / 2) / (w.isl + w.osl)
    room = cost.usable_bytes(p) - (mem1["per_gpu_bytes"] - mem1["kv_cache_bytes"])
    capacity = np.maximum(np.floor(room / per_request), 1.0)
    m = np.minimum(n, capacity)
    for _ in range(_FIXED_POINT_STEPS):
        g = cost.metrics_grid(p, par, m, chunk)
        decode_time = max(osl - 1, 1) * g["tpot_s"]
        target = np.minimum(n / (1 + np.minimum(g["ttft_s"], 1e6) / decode_time), capacity)
        m = np.maximum(0.5 * (m + target), 1e-3)
    g = cost.metrics_grid(p, par, m, chunk, tails=quantiles)
    tpot, ttft = g["tpot_s"], np.minimum(g["ttft_s"], 1e6)
    # requests beyond what runs at once wait for a slot: Little's law over the whole closed loop
    served = m * (1 + ttft / (max(osl - 1, 1) * tpot))
    wait = np.maximum(n - served, 0) / np.maximum(m, 1e-9) * max(osl - 1, 1) * tpot
    ttft = ttft + wait
    thr = run_throughput(runs, ttft, tpot)
    means = {"ttft_ms": ttft * 1e3, "tpot_ms": tpot * 1e3, "tokens_per_s_per_gpu": thr, "decoding_per_rank": m}
    if not quantiles:
        return {**means, **{k: np.full(len(runs), np.nan) for k in _PREDICTIONS if k not in means}}
    q = {f"ttft_p{k}_ms": (np.minimum(percentiles.agg_ttft_quantile(p, g, chunk, k / 100), 1e6) + wait) * 1e3
         for k in (50, 99)}
    q.update({f"tpot_p{k}_ms": percentiles.agg_tpot_quantile(p, g, k / 100) * 1e3 for k in (50, 99)})
    return {**means, **q}


def run_throughput(runs: list[Run], ttft_s, tpot_s) -> np.ndarray:
    """Output tokens/s/GPU of closed-loop runs with this TTFT and TPOT [s], as the data's README
    derives it: concurrency * osl / (TTFT + (osl - 1) * TPOT) / GPUs [tokens/s/GPU]."""
    b = np.array([r.concurrency for r in runs], dtype=float)
    osl = np.array([r.problem.workload.osl for r in runs], dtype=float)
    gpus = np.array([r.parallel.replica_gpus for r in runs], dtype=float)
    return b * osl / (np.asarray(ttft_s) + (osl - 1) * np.asarray(tpot_s)) / gpus


def _group_key(run: Run) -> tuple:
    p = run.problem
    return (p.model.name, p.cluster.name, p.precision, p.expert_precision, p.kv_precision, p.workload.isl,
            p.workload.osl, p.backend, p.speculation, id(p.calibration))


def predict_all(runs: list[Run], quantiles: bool = True) -> dict[str, np.ndarray]:
    """`predict_runs` for any runs: grouped by problem, vectorised within a group, in input order."""
    return _grouped(runs, lambda group: predict_runs(group, quantiles))


def _grouped(runs: list, predict_group) -> dict[str, np.ndarray]:
    """`predict_group` (runs sharing one problem -> arrays ttft_ms, tpot_ms, tokens_per_s_per_gpu,
    decoding_per_rank) over any runs, one call per problem, the results in input order."""
    out = {k: np.empty(len(runs)) for k in _PREDICTIONS}
    groups: dict[tuple, list[int]] = {}
    for k, run in enumerate(runs):
        groups.setdefault(_group_key(run), []).append(k)
    for members in groups.values():
        pred = predict_group([runs[k] for k in members])
        for key in out:
            out[key][members] = pred[key]
    return out


def _percentile_cells(row: dict[str, str], pred: dict[str, np.ndarray], k: int) -> None:
    for col, key in zip(PERCENTILE_COLUMNS, ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")):
        row[col] = f"{pred[key][k]:.4g}"


def predict_rows(rows: Iterable[dict[str, str]], calibration: Calibration | None = None) -> list[dict[str, str]]:
    """Every input row, in order, with the PREDICTED_COLUMNS: pred_ttft_ms, pred_tpot_ms,
    pred_tokens_per_s_per_gpu, their interval ends at uncertainty.DEFAULT_LEVEL where the calibration has an
    interval table (aggregated rows), and error. Rows of mode disagg are predicted as disaggregated deployments
    (parse_disagg_run, predict_disagg)."""
    rows = [{**r, **dict.fromkeys(PREDICTED_COLUMNS, "")} for r in rows]
    disagg = [i for i, r in enumerate(rows) if row_mode(r) == "disagg"]
    ok, druns = [], []
    for i in disagg:  # disaggregated deployments, a closed loop each; no interval table covers them
        try:
            druns.append(parse_disagg_run(rows[i], calibration or Calibration()))
            ok.append(i)
        except PlannerError as e:
            rows[i]["error"] = str(e)
    dpred = predict_disagg_all(druns)
    for k, i in enumerate(ok):
        rows[i]["pred_ttft_ms"] = f"{dpred['ttft_ms'][k]:.4g}"
        rows[i]["pred_tpot_ms"] = f"{dpred['tpot_ms'][k]:.4g}"
        rows[i]["pred_tokens_per_s_per_gpu"] = f"{dpred['tokens_per_s_per_gpu'][k]:.4g}"
        _percentile_cells(rows[i], dpred, k)
    skip = set(disagg)
    parsed, errors = parse_all([r for i, r in enumerate(rows) if i not in skip], calibration or Calibration())
    index = [i for i in range(len(rows)) if i not in skip]
    parsed = [(index[i], run) for i, run in parsed]
    for i, reason in errors.items():
        rows[index[i]]["error"] = reason
    runs = [run for _, run in parsed]
    pred = predict_all(runs)
    table = (calibration or Calibration()).intervals
    bars = {}
    if table is not None and runs:
        from planner.uncertainty import DEFAULT_LEVEL, intervals, run_regimes

        bars = intervals(table, run_regimes(runs), {"ttft": pred["ttft_ms"], "tpot": pred["tpot_ms"],
                                                          "tokens_per_s_per_gpu": pred["tokens_per_s_per_gpu"]})
    for k, (i, _) in enumerate(parsed):
        rows[i]["pred_ttft_ms"] = f"{pred['ttft_ms'][k]:.4g}"
        rows[i]["pred_tpot_ms"] = f"{pred['tpot_ms'][k]:.4g}"
        rows[i]["pred_tokens_per_s_per_gpu"] = f"{pred['tokens_per_s_per_gpu'][k]:.4g}"
        _percentile_cells(rows[i], pred, k)
        for metric, (lo, hi) in bars.items():
            unit = "_ms" if metric != "tokens_per_s_per_gpu" else ""
            rows[i][f"pred_{metric}_lo{unit}"] = f"{lo[k]:.4g}"
            rows[i][f"pred_{metric}_hi{unit}"] = f"{hi[k]:.4g}"
        if bars:
            rows[i]["pred_interval_level"] = f"{DEFAULT_LEVEL:g}"
    return rows


def parse_all(rows: Iterable[dict[str, str]], calibration: Calibration) -> tuple[list[tuple[int, Run]], dict]:
    """Parsed runs with their row index, and the errors by row index (for fitting and reports)."""
    ok, errors = [], {}
    for i, row in enumerate(rows):
        try:
            ok.append((i, parse_run(row, calibration)))
        except PlannerError as e:
            errors[i] = str(e)
    return ok, errors
