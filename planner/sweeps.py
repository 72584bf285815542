"""What-if studies at scale: `planner sweep GRID.yaml` and `planner.sweep(...)`.

A grid (SweepGrid, read from YAML) lists values of the scenario axes (models, clusters, gpus, isl, osl, sla,
ttft, precision, serving); their product is the scenarios, each solved as `planner solve` would (search.solve)
with the grid's fixed options (backend, kv_precision, method, time_limit, ...). Each scenario gives one tidy row
(COLUMNS): its inputs as written, then its best plan's figures or the reason it has none. Rows come in the
product's order whatever ran them: one process, a pool of local processes (concurrent.futures) or Ray tasks
(`ray`, an optional dependency imported only when asked for).

Results are cached, one JSON file per scenario named by the hash of what decides its answer (problem_key: the
normalised Problem with its model, cluster and calibration, the solve options, the planner's version and a
digest of its code), so a rerun, or an interrupted sweep resumed, solves only what is missing. Wall times
(WALL_COLUMNS) are the only figures that differ from run to run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from planner import search
from planner.errors import (
    InfeasibleError,
    PlannerError,
    SearchTooLargeError,
    SpecError,
    TimeLimitError,
)
from planner.specs import FileSolveOptions, LengthShape, Plan, Precision, Problem, Workload

AXES: tuple[str, ...] = ("models", "clusters", "gpus", "isl", "osl", "sla", "ttft", "precision", "serving")
"""The grid's scenario axes, in the order of their product (the last varies fastest)."""
AXIS_WORDS = {"models": "models", "clusters": "clusters", "gpus": "GPU counts", "isl": "isls", "osl": "osls",
              "sla": "SLAs", "ttft": "TTFT limits", "precision": "precisions", "serving": "serving modes"}
"""How the summary names each axis's values."""
MAX_SCENARIOS = 100_000
"""Most scenarios one grid may hold [scenarios]."""
LOCAL_RAY = "local"
"""The `ray` value that starts a local Ray (the CLI's bare --ray)."""
CACHE_FORMAT = 1
"""Version of the cache files' layout and of the row columns: a change makes old entries misses."""
IN_FLIGHT_PER_WORKER = 2
"""Scenarios handed to each worker ahead of its results, so that memory stays flat on large grids."""

INPUT_COLUMNS: tuple[str, ...] = (
    "scenario", "model", "cluster", "gpus", "isl", "osl", "sla", "ttft", "precision", "serving",
    "sla_tokens_per_s_per_user", "sla_percentile", "ttft_limit_ms", "ttft_percentile")
"""A row's scenario: its 1-based index in the product, the axes' values as the grid writes them, and the SLA and
TTFT limit as numbers (the percentile empty for the mean)."""
RESULT_COLUMNS: tuple[str, ...] = (
    "status", "plan_serving", "layout", "tp", "attention_dp", "pp", "ep", "moe_tp", "dp",
    "prefill_layout", "prefill_workers", "prefill_pool_gpus", "prefill_tp", "prefill_attention_dp", "prefill_pp",
    "prefill_ep", "decode_layout", "decode_workers", "decode_pool_gpus", "decode_tp", "decode_attention_dp",
    "decode_pp", "decode_ep", "gpus_used", "concurrency", "micro_batch", "chunk_tokens", "tokens_per_s_per_user",
    "tokens_per_s_per_gpu", "ttft_ms", "tpot_ms", "ttft_p99_ms", "tpot_p99_ms", "memory_per_gpu_gb",
    "memory_usable_gb", "draft_tokens", "other_serving", "other_tokens_per_s_per_gpu", "solver_status",
    "solver_gap", "certified", "reason", "message", "reachable_tokens_per_s_per_user", "reachable_ttft_ms",
    "reachable_gpus", "reachable_chunk")
"""A row's answer. status: 'plan', 'infeasible' (no plan: `reason` is InfeasibleError.reason, the reachable_*
columns what the search found reachable) or 'error' (the scenario cannot be searched: `message`)."""
WALL_COLUMNS: tuple[str, ...] = ("solve_wall_s", "wall_s")
"""The only columns that differ between runs: the search's wall time as the plan reports it, and the scenario's
whole wall time in its worker [s] (a cached row keeps those of the run that solved it)."""
COLUMNS: tuple[str, ...] = INPUT_COLUMNS + RESULT_COLUMNS + WALL_COLUMNS
"""Every row's columns, in order."""


# --- the grid ------------------------------------------------------------------------------------


class SweepGrid(FileSolveOptions):
    """A sweep: lists of values per axis (a single value counts as a list of one; defaults: `planner solve`'s) and
    fixed options applying to every scenario (as `planner solve` takes them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(default=[search.DEFAULT_MODEL], description="Catalog names, HuggingFace ids or files")
    clusters: list[str] = Field(default=[search.DEFAULT_CLUSTER], description="Catalog names, aliases or files")
    gpus: list[int] = Field(default=[search.DEFAULT_GPUS], description="GPUs given [GPUs]")
    isl: list[int] = Field(default=[search.DEFAULT_ISL], description="Input tokens per request [tokens]")
    osl: list[int] = Field(default=[search.DEFAULT_OSL], description="Output tokens per request [tokens]")
    sla: list[str] = Field(default=["20tok/s"], description="Minimum tokens/s/user: 20tok/s, 20, 50ms, 40ms@p99")
    ttft: list[str | None] = Field(default=[None], description="Maximum TTFT: 5s, 500ms, 450ms@p99; null: none")
    precision: list[str] = Field(default=[search.DEFAULT_PRECISION.value],
                                 description="Weight formats (Precision names) or 'checkpoint'")
    serving: list[Literal["agg", "disagg", "auto"]] = Field(default=["auto"], description="Serving modes")

    acceptance: float | None = Field(None, gt=0, lt=1)
    confidence: float | None = Field(None, ge=0.5, lt=1)
    decode_cluster: str | None = None
    decode_gpus: int | None = Field(None, ge=1)
    method: Literal["cpsat", "exhaustive"] = "cpsat"
    time_limit: str | float = Field(60.0, description="Time limit of each scenario's search [s]: 60, 2s")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        """Refuse an unknown field by name, with the closest known one."""
        if isinstance(data, dict):
            known = list(cls.model_fields)
            for key in data:
                if key not in known:
                    import difflib

                    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                    hint = f"did you mean {close[0]}?" if close else f"fields: {', '.join(known)}"
                    raise ValueError(f"unknown field {str(key)!r} ({hint})")
        return data

    @field_validator(*AXES, mode="before")
    @classmethod
    def _as_list(cls, value: Any, info) -> list:
        """A single value is a list of one; numbers written for text axes (sla: 20) become text; no list is empty
        or repeats a value."""
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise ValueError("must list at least one value")
        if info.field_name in ("models", "clusters", "sla", "ttft", "precision"):
            values = [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values]
        seen = [v for i, v in enumerate(values) if v in values[:i]]
        if seen:
            raise ValueError(f"lists {seen[0]!r} twice")
        return values

    @field_validator("gpus", "isl", "osl")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        bad = [v for v in values if v < 1]
        if bad:
            raise ValueError(f"values must be at least 1, got {bad[0]}")
        return values

    def size(self) -> int:
        """Scenarios of the grid: the product of the axes' lengths."""
        return math.prod(len(getattr(self, a)) for a in AXES)


def load_grid(path: str | Path) -> SweepGrid:
    """A SweepGrid from a YAML file; SpecError in one line naming the file, the field and the reason."""
    from planner.catalog import parse_yaml

    return parse_yaml(Path(path), SweepGrid)


# --- scenarios -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolveOptions:
    """What `search.solve` takes besides the problem, the same for every scenario but its serving mode."""

    serving: str
    method: str
    time_limit_s: float
    chunks: tuple[int, ...] | None
    micro_batches: tuple[int, ...] | None
    decode_cluster: Any  # ClusterSpec | None
    decode_gpus: int | None

    def key(self) -> dict[str, Any]:
        """The options as JSON data, for problem_key."""
        dc = self.decode_cluster
        return {"serving": self.serving, "method": self.method, "time_limit_s": self.time_limit_s,
                "chunks": self.chunks, "micro_batches": self.micro_batches,
                "decode_cluster": dc.model_dump(mode="json") if dc is not None else None,
                "decode_gpus": self.decode_gpus}


@dataclass(frozen=True)
class Task:
    """One search a worker runs: picklable, self-contained (no catalog or calibration look-up needed)."""

    key: str
    problem: Problem
    options: SolveOptions


@dataclass
class Scenario:
    """One point of the product: its row's input columns and its task, or the error that stops it early."""

    index: int  # 1-based position in the product
    inputs: dict[str, Any]
    task: Task | None = None
    error: dict[str, Any] | None = None  # result columns of a scenario that cannot be searched


@cache
def code_digest() -> str:
    """A digest of the planner's Python sources: a change of the code makes every cached result a miss."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@cache
def planner_version() -> str:
    """The installed planner's version ('unknown' when it is run from a checkout without installing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("planner")
    except PackageNotFoundError:
        return "unknown"


def problem_key(problem: Problem, options: SolveOptions) -> str:
    """The cache key of a scenario: the hash of its normalised Problem (model, cluster, workload, SLA, calibration
    and the rest, as data), the solve options, the planner's version and code digest, and CACHE_FORMAT."""
    payload = {"problem": problem.model_dump(mode="json"), "options": options.key(), "version": planner_version(),
               "code": code_digest(), "format": CACHE_FORMAT}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _parse(what: str, parse: Callable[[str], Any], text: str) -> Any:
    """A parser of planner.units applied to a grid value; SpecError in one line naming the field."""
    from planner.units import ParseError

    try:
        return parse(text)
    except ParseError as e:
        raise SpecError(f"{what}: {e}") from None


def _ref(value: str, base: Path | None) -> str:
    """A model, cluster or calibration reference: a file path is read relative to the grid's folder when it is
    there, else as given (a catalog name, or a path relative to the current folder)."""
    if base is not None and value.endswith((".yaml", ".yml", ".json")) and (base / value).exists():
        return str(base / value)
    return value


def _int_list(what: str, value: str | list[int] | None) -> tuple[int, ...] | None:
    from planner.units import parse_int_list

    if value is None:
        return None
    return _parse(what, parse_int_list, value if isinstance(value, str) else ",".join(str(v) for v in value))


def scenarios(grid: SweepGrid, base: Path | None = None) -> list[Scenario]:
    """The grid's scenarios in the product's order (AXES, the last varying fastest), each with its task.

    Every value is checked once, up front: an unknown model or cluster, an unreadable SLA or TTFT, an unknown
    precision raises UnknownNameError or SpecError naming the field. A scenario whose combination cannot be
    searched (make_problem refuses it) gets an error row instead of a task."""
    from pydantic import ValidationError

    from planner import units
    from planner.calibrate import load_calibration
    from planner.catalog import load_cluster, load_model, validation_message
    from planner.specs import Speculation

    if grid.size() > MAX_SCENARIOS:
        shape = " x ".join(str(len(getattr(grid, a))) for a in AXES)
        raise SpecError(f"the grid holds {grid.size():,} scenarios ({shape}), more than {MAX_SCENARIOS:,}")

    def named(what: str, load: Callable[[str], Any], value: str) -> Any:
        try:
            return load(_ref(value, base))
        except PlannerError as e:
            raise type(e)(f"{what}: {e}") from None

    models = {m: named("models", load_model, m) for m in grid.models}
    clusters = {c: named("clusters", load_cluster, c) for c in grid.clusters}
    decode_cluster = named("decode_cluster", load_cluster, grid.decode_cluster) if grid.decode_cluster else None
    calibration = named("calibration", load_calibration, grid.calibration) if grid.calibration else None
    if calibration is None:
        calibration = load_calibration(None)
    slas = {s: _parse(f"sla {s!r}", units.parse_sla_at, s) for s in grid.sla}
    ttfts = {t: (None, None) if t is None else _parse(f"ttft {t!r}", units.parse_ttft_at, t) for t in grid.ttft}
    precisions = Precision.names() + [search.CHECKPOINT]
    for name in grid.precision:
        if name.strip().lower() not in [x.lower() for x in precisions]:
            raise SpecError(f"precision: unknown format {name!r}; known: {', '.join(precisions)}")
    if grid.expert_precision is not None and grid.expert_precision.lower() not in Precision.names():
        raise SpecError(f"expert_precision: unknown format {grid.expert_precision!r}; known: "
                        f"{', '.join(Precision.names())}")
    speculation = None
    if grid.spec is not None:
        method, draft = _parse("spec", units.parse_spec, grid.spec)
        speculation = Speculation(method=method, draft_tokens=grid.draft_tokens, acceptance=grid.acceptance,
                                  draft_model=_ref(draft, base) if draft else None)
    elif grid.draft_tokens is not None or grid.acceptance is not None:
        raise SpecError("draft_tokens and acceptance go with spec (mtp, eagle or draft:MODEL)")
    time_limit = _parse("time_limit", units.parse_time_limit, str(grid.time_limit))
    chunks, micro_batches = _int_list("chunks", grid.chunks), _int_list("micro_batches", grid.micro_batches)
    closed = grid.arrivals == "closed"
    burstiness = grid.burstiness if grid.burstiness is not None or closed else 0.0

    out: list[Scenario] = []
    for i, values in enumerate(itertools.product(*(getattr(grid, a) for a in AXES)), 1):
        model, cluster, gpus, isl, osl, sla, ttft, precision, serving = values
        (speed, tpot_q), (limit, ttft_q) = slas[sla], ttfts[ttft]
        inputs = {"scenario": i, "model": model, "cluster": cluster, "gpus": gpus, "isl": isl, "osl": osl,
                  "sla": sla, "ttft": ttft, "precision": precision, "serving": serving,
                  "sla_tokens_per_s_per_user": round(speed, 6), "sla_percentile": tpot_q,
                  "ttft_limit_ms": None if limit is None else round(limit * 1e3, 6), "ttft_percentile": ttft_q}
        options = SolveOptions(serving=serving, method=grid.method, time_limit_s=time_limit, chunks=chunks,
                               micro_batches=micro_batches, decode_cluster=decode_cluster, decode_gpus=grid.decode_gpus)
        try:
            try:
                workload = Workload(isl=isl, osl=osl, isl_cv=grid.isl_cv, osl_cv=grid.osl_cv,
                                    shape=LengthShape(grid.lengths), prefix_hit=grid.prefix_hit,
                                    prefix_cache_tokens=grid.prefix_cache_tokens, closed_loop=closed,
                                    burstiness=burstiness)
            except ValidationError as e:
                raise SpecError(validation_message(e)) from None
            problem = search.make_problem(
                model=models[model], cluster=clusters[cluster], gpus=gpus, isl=isl, osl=osl, precision=precision,
                kv_precision=grid.kv_precision, min_tokens_per_s_per_user=speed, max_ttft_s=limit,
                calibration=calibration, backend=grid.backend, memory_utilization=grid.memory_utilization,
                expert_precision=grid.expert_precision, workload=workload, tpot_percentile=tpot_q,
                ttft_percentile=ttft_q, speculation=speculation)
            if grid.confidence is not None:
                from planner.uncertainty import with_confidence

                problem = with_confidence(problem, grid.confidence)
        except PlannerError as e:
            out.append(Scenario(i, inputs, error=_failure("error", e)))
            continue
        out.append(Scenario(i, inputs, Task(problem_key(problem, options), problem, options)))
    return out


# --- one scenario's answer -----------------------------------------------------------------------


def _r(x: float | None, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)


def plan_columns(plan: Plan) -> dict[str, Any]:
    """The result and wall-time columns of a plan (RESULT_COLUMNS, WALL_COLUMNS; run_task sets wall_s). An
    aggregated plan fills tp..dp, a disaggregated one the prefill_* and decode_* columns; concurrency, micro_batch
    and memory are then the decode pool's (per worker), as in the plan's JSON."""
    m, q = plan.metrics, plan.parallel
    row: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS + WALL_COLUMNS)
    row.update({
        "status": "plan", "plan_serving": plan.serving, "layout": plan.label, "gpus_used": plan.gpus_used,
        "concurrency": plan.batch.concurrency, "micro_batch": plan.batch.micro_batch,
        "chunk_tokens": plan.batch.chunk_tokens, "tokens_per_s_per_user": _r(m.tokens_per_s_per_user, 4),
        "tokens_per_s_per_gpu": _r(m.tokens_per_s_per_gpu, 4), "ttft_ms": _r(m.ttft_ms, 2),
        "tpot_ms": _r(m.tpot_ms, 4), "memory_per_gpu_gb": _r(plan.memory.per_gpu_bytes / 1e9, 3),
        "memory_usable_gb": _r(plan.memory.usable_bytes / 1e9, 3),
        "draft_tokens": plan.speculation.draft_tokens if plan.speculation is not None else None,
        "solver_status": plan.solver.status, "solver_gap": _r(plan.solver.gap, 6), "certified": plan.solver.certified,
    })
    if m.percentiles is not None:
        row["ttft_p99_ms"] = _r(m.percentiles.ttft_ms.get("p99"), 2)
        row["tpot_p99_ms"] = _r(m.percentiles.tpot_ms.get("p99"), 4)
    if plan.serving == "agg":
        row.update({"tp": q.tp, "attention_dp": q.attention_dp, "pp": q.pp, "ep": q.ep, "moe_tp": q.moe_tp,
                    "dp": q.dp})
    for pool in (plan.prefill, plan.decode):
        if pool is not None:
            w = pool.parallel
            row.update({f"{pool.role}_layout": pool.label, f"{pool.role}_workers": pool.workers,
                        f"{pool.role}_pool_gpus": pool.gpus, f"{pool.role}_tp": w.tp,
                        f"{pool.role}_attention_dp": w.attention_dp, f"{pool.role}_pp": w.pp, f"{pool.role}_ep": w.ep})
    alt = plan.alternative
    if alt is not None:
        row["other_serving"] = alt.serving
        row["other_tokens_per_s_per_gpu"] = _r(alt.tokens_per_s_per_gpu, 4)
    row["solve_wall_s"] = round(plan.solver.wall_s, 3)
    return row


def _failure(status: str, e: Exception) -> dict[str, Any]:
    """The result columns of a scenario without a plan: InfeasibleError's reason and reachable figures, or an
    error's one-line message."""
    row: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS + WALL_COLUMNS)
    row["status"] = status
    row["message"] = " ".join(str(e).split())
    if isinstance(e, InfeasibleError):
        row["reason"] = e.reason
        for name in ("tokens_per_s_per_user", "ttft_ms", "gpus", "chunk"):
            if name in e.reachable:
                value = e.reachable[name]
                row[f"reachable_{name}"] = int(value) if name in ("gpus", "chunk") else _r(value, 4)
    else:
        row["reason"] = type(e).__name__
    return row


def run_task(task: Task) -> dict[str, Any]:
    """Solve one scenario (search.solve, as `planner solve` does) in whatever process runs it.

    Returns {'key', 'result' (the result and wall-time columns), 'cache' (whether the answer may be kept: plans,
    InfeasibleError and input errors are; time limits, too-large searches and internal errors are not), 'code'
    (this process's code_digest)}."""
    from planner.solver import SolverParams

    o = task.options
    t0 = time.perf_counter()
    keep = True
    try:
        plans = search.solve(task.problem, method=o.method, chunks=o.chunks, micro_batches=o.micro_batches,
                             params=SolverParams(time_limit_s=o.time_limit_s), serving=o.serving,
                             decode_cluster=o.decode_cluster, decode_gpus=o.decode_gpus)
        result = plan_columns(plans[0])
    except InfeasibleError as e:
        result = _failure("infeasible", e)
    except (TimeLimitError, SearchTooLargeError) as e:
        result, keep = _failure("error", e), False
    except PlannerError as e:
        result = _failure("error", e)
    except Exception as e:  # a bug: the sweep goes on, the row says so, and a rerun tries again
        bug = RuntimeError(f"internal error (please report): {type(e).__name__}: {e}")
        result, keep = _failure("error", bug), False
        result["reason"] = "internal"
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    return {"key": task.key, "result": result, "cache": keep, "code": code_digest()}


# --- the cache -----------------------------------------------------------------------------------


def _cache_path(folder: Path, key: str) -> Path:
    return folder / f"{key}.json"


def cache_read(folder: Path | None, key: str) -> dict[str, Any] | None:
    """The cached result columns of a key, or None (no entry, an unreadable one, or another format's)."""
    if folder is None:
        return None
    try:
        record = json.loads(_cache_path(folder, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT or record.get("key") != key:
        return None
    result = record.get("result")
    return result if isinstance(result, dict) and set(result) == set(RESULT_COLUMNS + WALL_COLUMNS) else None


def cache_write(folder: Path, key: str, result: dict[str, Any]) -> None:
    """Keep one result, atomically (a file written aside, then renamed): an interrupted write leaves no entry."""
    path = _cache_path(folder, key)
    tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
    record = {"format": CACHE_FORMAT, "key": key, "version": planner_version(), "code": code_digest(),
              "result": result}
    try:
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise SpecError(f"{folder}: cannot write the cache ({e.strerror or e})") from None


# --- running them --------------------------------------------------------------------------------


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: `done` of `total` scenarios finished (those are in the cache, `cache`)."""

    def __init__(self, done: int, total: int, cache: Path | None) -> None:
        super().__init__(f"{done} of {total} scenarios finished")
        self.done, self.total, self.cache = done, total, cache


class SweepResult(BaseModel):
    """A sweep's rows (one per scenario, product order, COLUMNS) and what ran them."""

    model_config = ConfigDict(frozen=True)

    rows: list[dict[str, Any]] = Field(description="One row per scenario, product order; COLUMNS")
    shape: dict[str, int] = Field(description="Values per axis (AXES)")
    scenarios: int = Field(description="Scenarios of the grid")
    with_plan: int = Field(description="Scenarios with a plan")
    infeasible: int = Field(description="Scenarios without a plan (an InfeasibleError)")
    errors: int = Field(description="Scenarios that could not be searched")
    reasons: dict[str, int] = Field(description="Scenarios without a plan by reason")
    solved: int = Field(description="Searches run now (scenarios of equal problems share one)")
    cached: int = Field(description="Scenarios answered from the cache")
    runner: str = Field(description="What solved them: '1 process', 'N processes', 'Ray tasks on a local Ray' or "
                                    "'Ray tasks at ADDRESS'")
    cache: str | None = Field(description="The cache folder (None: no cache)")
    wall_s: float = Field(description="Wall time of the whole sweep [s]")


Progress = Callable[[int, int, str], None]


def sweep(grid: SweepGrid | dict[str, Any] | str | Path, *, jobs: int | None = None, ray: str | None = None,
          cache: str | Path | None = None, progress: Progress | None = None, base: str | Path | None = None
          ) -> SweepResult:
    """Solve every scenario of a grid; one row per scenario in the product's order.

    grid: a SweepGrid, its fields as a dict, or a YAML file (file paths in it are read relative to its folder,
    or `base`). jobs: local worker processes (default 1: this process); with `ray`, the CPUs of a local Ray
    (default: every CPU this process may use).
    ray: None (no Ray), 'local' (a local Ray, started here unless one is running in this process) or a Ray
    address ('auto', 'HOST:PORT', 'ray://HOST:PORT'), whose workers get this planner's package
    (runtime_env py_modules; its dependencies must be installed there). cache: a folder of results kept across
    runs (None: none): scenarios found there are not solved again. progress(done, total, what): called after
    each scenario. Ctrl-C raises SweepInterrupted once the running scenarios stop; what finished is cached.
    """
    started = time.perf_counter()
    if isinstance(grid, (str, Path)):
        base = base if base is not None else Path(grid).parent
        grid = load_grid(grid)
    elif isinstance(grid, dict):
        from pydantic import ValidationError

        from planner.catalog import validation_message

        try:
            grid = SweepGrid.model_validate(grid)
        except ValidationError as e:
            raise SpecError(f"grid: {validation_message(e)}") from None
    if not isinstance(grid, SweepGrid):
        raise SpecError(f"a grid is a SweepGrid, a dict of its fields or a YAML file, got {type(grid).__name__}")
    if jobs is None:
        jobs = available_cpus() if ray is not None else 1
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise SpecError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    items = scenarios(grid, Path(base) if base is not None else None)
    folder = Path(cache) if cache is not None else None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SpecError(f"{folder}: cannot create the cache folder ({e.strerror or e})") from None
    results: dict[int, dict[str, Any]] = {}
    todo: dict[str, list[Scenario]] = {}  # key -> the scenarios of that problem (equal problems: one search)
    cached = 0
    for s in items:
        if s.error is not None:
            results[s.index] = s.error
            continue
        hit = cache_read(folder, s.task.key)
        if hit is not None:
            results[s.index], cached = hit, cached + 1
        else:
            todo.setdefault(s.task.key, []).append(s)
    total, done = len(items), len(results)
    if progress is not None:
        progress(done, total, f"{done} from the cache" if done else "starting")

    def finished(outcome: dict[str, Any]) -> None:
        nonlocal done
        group = todo[outcome["key"]]
        if outcome["code"] != code_digest():
            raise SpecError(f"the workers run another planner (code digest {outcome['code']}, here {code_digest()}):"
                            " install this planner where they run")
        if folder is not None and outcome["cache"]:
            cache_write(folder, outcome["key"], outcome["result"])
        for s in group:
            results[s.index] = outcome["result"]
        done += len(group)
        if progress is not None:
            first = group[0].inputs
            progress(done, total, f"{done}/{total} {first['model']} {first['cluster']} x{first['gpus']} "
                                  f"{first['sla']} {first['serving']}")

    tasks = [group[0].task for group in todo.values()]
    runner = _runner_name(jobs, ray, len(tasks))
    try:
        if ray is not None:
            _run_ray(tasks, ray, jobs, finished)
        elif jobs == 1 or len(tasks) <= 1:
            for t in tasks:
                finished(run_task(t))
        else:
            _run_processes(tasks, jobs, finished)
    except KeyboardInterrupt:
        raise SweepInterrupted(done, total, folder) from None
    rows = [{**s.inputs, **results[s.index]} for s in items]
    reasons: dict[str, int] = {}
    for r in rows:
        if r["status"] == "infeasible":
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return SweepResult(
        rows=rows, shape={a: len(getattr(grid, a)) for a in AXES}, scenarios=total,
        with_plan=sum(r["status"] == "plan" for r in rows), infeasible=sum(r["status"] == "infeasible" for r in rows),
        errors=sum(r["status"] == "error" for r in rows), reasons=reasons, solved=len(tasks), cached=cached,
        runner=runner, cache=str(folder) if folder is not None else None, wall_s=time.perf_counter() - started)


def available_cpus() -> int:
    """CPUs this process may use [CPUs]."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def _runner_name(jobs: int, ray: str | None, tasks: int) -> str:
    if ray is not None:
        return "Ray tasks on a local Ray" if ray == LOCAL_RAY else f"Ray tasks at {ray}"
    n = 1 if tasks <= 1 else min(jobs, tasks)
    return f"{n} process" + ("es" if n > 1 else "")


def _bounded(tasks: Iterable[Task], limit: int, submit: Callable[[Task], Any], wait: Callable[[set], tuple]
             ) -> Iterator[Any]:
    """Keep at most `limit` tasks submitted and yield each finished handle: `wait(pending)` returns
    (finished, still pending)."""
    it = iter(tasks)
    pending: set = set()
    for t in itertools.islice(it, limit):
        pending.add(submit(t))
    while pending:
        ready, pending = wait(pending)
        for handle in ready:
            yield handle
            nxt = next(it, None)
            if nxt is not None:
                pending.add(submit(nxt))


def _run_processes(tasks: list[Task], jobs: int, finished: Callable[[dict], None]) -> None:
    """The tasks on `jobs` local processes (concurrent.futures; forkserver where the platform has it, with the
    planner imported once in the server, else spawn)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
    from concurrent.futures import wait as wait_futures
    from concurrent.futures.process import BrokenProcessPool

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["planner.sweeps", "planner.solver", "planner.disagg"])
    else:
        ctx = mp.get_context("spawn")
    n = min(jobs, len(tasks))
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
    try:
        def wait(pending: set) -> tuple:
            ready, rest = wait_futures(pending, return_when=FIRST_COMPLETED)
            return ready, set(rest)

        for future in _bounded(tasks, n * IN_FLIGHT_PER_WORKER, lambda t: pool.submit(run_task, t), wait):
            try:
                outcome = future.result()
            except BrokenProcessPool:
                raise SpecError("a worker process died (out of memory?); what finished is cached: run the sweep "
                                "again to resume") from None
            finished(outcome)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class RayMissingError(PlannerError):
    """Ray is not installed."""


def _ray_module():
    try:
        import ray
    except ImportError:
        raise RayMissingError("Ray is not installed: pip install 'planner[ray]'") from None
    return ray


RAY_CONNECT_TIMEOUT_S = 5.0
"""How long a Ray address's host may take to accept a connection before the sweep gives up [s] (Ray itself
retries for minutes)."""


def _check_reachable(address: str) -> None:
    """SpecError at once when a HOST:PORT (or ray://HOST:PORT) address accepts no connection; other forms
    ('auto') are left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise SpecError(f"cannot reach Ray at {address}: {e.strerror or e}") from None


def _run_ray(tasks: list[Task], address: str, cpus: int, finished: Callable[[dict], None]) -> None:
    """The tasks as Ray tasks of one CPU each: on a local Ray of `cpus` CPUs (started here and stopped after,
    unless this process already runs one) or on the cluster at `address` (its workers get this planner's package
    as runtime_env py_modules)."""
    ray = _ray_module()
    started_here = not ray.is_initialized()
    if started_here and address != LOCAL_RAY:
        _check_reachable(address)
    if started_here:
        quiet = {"logging_level": "ERROR", "log_to_driver": False}
        try:
            if address == LOCAL_RAY:
                ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)  # a new one, always
            else:
                package = str(Path(__file__).resolve().parent)
                ray.init(address=address, runtime_env={"py_modules": [package]}, **quiet)
        except Exception as e:  # Ray's own errors (ConnectionError, RuntimeError, ValueError...): one line
            where = "a local Ray" if address == LOCAL_RAY else f"Ray at {address}"
            raise SpecError(f"cannot start {where}: {' '.join(str(e).split())}") from None
    try:
        remote = ray.remote(num_cpus=1)(run_task)
        width = max(1, int(ray.cluster_resources().get("CPU", cpus)))

        def wait(pending: set) -> tuple:
            ready, rest = ray.wait(list(pending), num_returns=1)
            return ready, set(rest)

        for ref in _bounded(tasks, width * IN_FLIGHT_PER_WORKER, lambda t: remote.remote(t), wait):
            try:
                outcome = ray.get(ref)
            except Exception as e:  # a worker died or Ray failed: the finished ones are cached
                raise SpecError(f"a Ray task failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}); what "
                                "finished is cached: run the sweep again to resume") from None
            finished(outcome)
    finally:
        if started_here:
            ray.shutdown()


# --- output --------------------------------------------------------------------------------------


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """The rows as CSV (COLUMNS; empty cells for None)."""
    import csv

    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
            w.writeheader()
            w.writerows(rows)
    except OSError as e:
        raise SpecError(f"{path}: cannot write ({e.strerror or e})") from None


def summary_lines(r: SweepResult) -> list[str]:
    """What `planner sweep` prints: the scenarios, their answers, how they ran."""
    axes = [f"{n} {AXIS_WORDS[a]}" for a, n in r.shape.items() if n > 1]
    shape = f" ({' x '.join(axes)})" if axes else ""
    why = f" ({', '.join(f'{k}: {v}' for k, v in sorted(r.reasons.items()))})" if r.reasons else ""
    errors = f", {r.errors} could not be searched" if r.errors else ""
    lines = [f"{r.scenarios} scenario{'s' if r.scenarios != 1 else ''}{shape}: {r.with_plan} with a plan, "
             f"{r.infeasible} without{why}{errors}"]
    by = f" by {r.runner}" if r.solved else ""
    where = f" ({r.cache})" if r.cache else ""
    lines.append(f"{r.solved} solved{by}, {r.cached} from the cache{where}, in {r.wall_s:.1f} s")
    return lines


__all__ = ["COLUMNS", "SweepGrid", "SweepInterrupted", "SweepResult", "load_grid", "scenarios", "sweep",
           "write_csv"]
