"""Fleet planning: many workloads (models, SLAs, demands) on a priced, mixed inventory of GPU types.

`fleet(spec)` answers `planner fleet FLEET.yaml`: for each workload, which deployments of which GPU types and
serving modes, how many replicas of each, at the least cost per hour (objective min_cost) or serving the most
demand the inventory allows (max_served); with hourly demands (a day's load curve of 24 values), the replicas of
every hour, an autoscaling plan, and the peak inventory it needs.

Three steps, each in its own module:

1. options (planner.fleetoptions): per workload and GPU type, the replicas (aggregated, or disaggregated units)
   the single-deployment planner finds at the workload's SLA, reduced to those no other dominates (exact);
2. the integer program (planner.fleetmodel): replica counts under demand, inventory and placement (whole nodes and
   scale-up domains, planner.placement), by CP-SAT with its proven bound, or by enumeration (`method='exhaustive'`,
   the test oracle); the greedy baseline beside it;
3. the check: every chosen replica re-checked by the float cost model (every rule, the SLA at its percentile and
   the TTFT limit), the demand served in floats, the placement re-checked node by node against the inventory.

The schema of a fleet file (`FleetSpec`): `inventory` (cluster, gpus, cost_per_gpu_hour), `workloads` (name,
model, isl, osl, sla, demand, and any option of `planner solve`), `objective`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from planner.errors import InfeasibleError, PlannerError, SpecError, UnknownNameError
from planner.fleetmodel import PRICE_UNITS, FleetInstance, FleetSolution, Objective, exhaustive, greedy, solve_cpsat
from planner.fleetoptions import RATE_UNIT, GpuType, Option, workload_options
from planner.placement import check_placement, groups_of
from planner.search import DEFAULT_PRECISION, DEFAULT_TIME_LIMIT_S, Method
from planner.specs import MAX_GPUS, SLA, ClusterSpec, FileSolveOptions, Plan, Problem, Serving, _Input, _Strict
from planner.units import (
    ParseError,
    parse_acceptance,
    parse_confidence,
    parse_demand,
    parse_int_list,
    parse_sla_at,
    parse_spec,
    parse_ttft_at,
)

HOURS = 24
"""Hourly values of a day's load curve."""
MAX_DEMAND_TOKENS_PER_S = 1e10
"""Largest demand of one workload: 10 billion output tokens/s, far above any fleet [tokens/s]."""
MAX_PRICE = 1e6
"""Highest price of one GPU-hour accepted [$/GPU-hour]."""


# --- the fleet file ---------------------------------------------------------------------------------------------


class InventoryItem(_Input):
    """GPUs of one type the fleet may use, and their price."""

    cluster: str = Field(description="Catalog name, alias or YAML file of the GPU type, e.g. 'h100-sxm'")
    gpus: int = Field(ge=1, le=MAX_GPUS, description="GPUs available, a whole number of nodes [GPUs]")
    cost_per_gpu_hour: float = Field(gt=0, le=MAX_PRICE, description="Price of one GPU for one hour [$/GPU-hour]")


Number = float | int


def _read(parse: Callable[[str], Any], value: Any) -> Any:
    """A parser of planner.units applied in a field validator: its ParseError as the ValueError pydantic reports
    with the field's name."""
    try:
        return parse(str(value))
    except ParseError as e:
        raise ValueError(str(e)) from None


def _demand(value: Any, hourly: bool) -> tuple[float, float | None]:
    """(requests/s, tokens/s or None) of one demand value: '12req/s', '50000tok/s' or a number of requests/s
    (hourly values may be 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"a demand is a rate like 12req/s or 50000tok/s, or a number of requests/s; got {value!r}")
    if isinstance(value, str):
        req, tok = _read(parse_demand, value)
        return (req or 0.0), tok
    if not math.isfinite(value) or value < 0 or (value == 0 and not hourly):
        raise ValueError(f"demand must be {'at least 0' if hourly else 'above 0'} requests/s, got {value!r}")
    return float(value), None


class FleetWorkload(_Input, FileSolveOptions):
    """One workload: a model served at a service level with a demand; any option of `planner solve` besides."""

    name: str = Field(min_length=1, description="Name of the workload, unique in the fleet")
    model: str = Field(description="Catalog name, HuggingFace id, YAML file or config.json")
    isl: int = Field(ge=1, le=10_000_000, description="Input tokens per request [tokens]")
    osl: int = Field(ge=1, le=10_000_000, description="Output tokens per request [tokens]")
    sla: str | Number = Field(description="Minimum tokens/s per user: 30tok/s, 30, 50ms (per token), 40ms@p99")
    demand: str | Number | list[str | Number] = Field(
        description="What to serve: 12req/s, 50000tok/s (output tokens), a number of requests/s, or a list of 24 "
        "hourly values (a day's load curve)")
    ttft: str | Number | None = Field(None, description="Maximum time to first token: 2s, 500ms, 450ms@p99")
    precision: str = Field(DEFAULT_PRECISION.value, description="Weight format, as planner solve --precision")
    serving: Literal["agg", "disagg", "auto"] = Field("auto", description="Serving modes considered")
    confidence: str | Number | None = Field(None, description="As planner solve --confidence (aggregated only)")
    trace: str | None = Field(None, description="Request lengths from a trace (CSV or JSONL); sets isl/osl")
    acceptance: str | Number | None = None

    @field_validator("sla")
    @classmethod
    def _sla(cls, v: str | Number) -> str | Number:
        _read(parse_sla_at, v)
        return v

    @field_validator("ttft")
    @classmethod
    def _ttft(cls, v: str | Number | None) -> str | Number | None:
        if v is not None:
            _read(parse_ttft_at, v)
        return v

    @field_validator("demand")
    @classmethod
    def _demand(cls, v: Any) -> Any:
        if isinstance(v, list):
            if len(v) != HOURS:
                raise ValueError(f"a day's load curve has {HOURS} hourly values, got {len(v)}")
            for x in v:
                _demand(x, hourly=True)
        else:
            _demand(v, hourly=False)
        return v

    @field_validator("confidence")
    @classmethod
    def _confidence(cls, v: str | Number | None) -> str | Number | None:
        if v is not None:
            _read(parse_confidence, v)
        return v

    @field_validator("spec")
    @classmethod
    def _spec(cls, v: str | None) -> str | None:
        if v is not None:
            _read(parse_spec, v)
        return v

    @field_validator("acceptance")
    @classmethod
    def _acceptance(cls, v: str | Number | None) -> str | Number | None:
        if v is not None:
            _read(parse_acceptance, v)
        return v

    @field_validator("chunks", "micro_batches")
    @classmethod
    def _grid(cls, v: str | list[int] | None) -> str | list[int] | None:
        if v is not None:
            _read(parse_int_list, v if isinstance(v, str) else ",".join(str(x) for x in v))
        return v

    @model_validator(mode="after")
    def _together(self) -> FleetWorkload:
        if self.spec is None and (self.draft_tokens is not None or self.acceptance is not None):
            raise ValueError("draft_tokens and acceptance go with spec (mtp, eagle or draft:MODEL)")
        if self.serving == "disagg" and self.confidence is not None:
            raise ValueError("confidence checks aggregated plans only: give serving agg or auto")
        return self

    @property
    def hourly(self) -> bool:
        """The demand is a day's load curve."""
        return isinstance(self.demand, list)

    def demand_tokens(self, osl: int) -> list[float]:
        """The demand in output tokens/s, one value per hour (a single value when constant) [tokens/s]."""
        values = self.demand if isinstance(self.demand, list) else [self.demand]
        out = []
        for v in values:
            req, tok = _demand(v, hourly=self.hourly)
            out.append(tok if tok is not None else req * osl)
        return out

    def grid(self, which: str) -> tuple[int, ...] | None:
        v = getattr(self, which)
        if v is None:
            return None
        return parse_int_list(v if isinstance(v, str) else ",".join(str(x) for x in v))


class FleetSpec(_Input):
    """A fleet file: the inventory, the workloads, the objective."""

    inventory: list[InventoryItem] = Field(min_length=1, description="GPU types available, each once")
    workloads: list[FleetWorkload] = Field(min_length=1, description="What to serve, each with a unique name")
    objective: Literal["min_cost", "max_served"] = Field(
        "min_cost", description="min_cost: the cheapest plan serving every demand; max_served: as much demand as the "
        "inventory allows (output tokens/s in all), then the cheapest")

    @model_validator(mode="after")
    def _unique(self) -> FleetSpec:
        names = [w.name for w in self.workloads]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"workload names must be unique: {', '.join(repr(n) for n in twice)} given twice")
        return self


def _located(message: str, spec_data: Any) -> str:
    """'field 'workloads.1.sla': ...' -> "workload 'small': field 'sla': ..." (names from the raw data)."""
    m = re.match(r"field '(workloads|inventory)\.(\d+)(?:\.([^']*))?': (.*)", message)
    if not m:
        return message
    kind, i, rest, msg = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    items = spec_data.get(kind) if isinstance(spec_data, dict) else None
    item = items[i] if isinstance(items, list) and i < len(items) and isinstance(items[i], dict) else {}
    who = item.get("name") if kind == "workloads" else item.get("cluster")
    where = f"workload {who!r}" if kind == "workloads" and who else (f"inventory {who!r}" if who else
                                                                     f"{kind[:-1] if kind == 'workloads' else kind} "
                                                                     f"entry {i + 1}")
    return f"{where}: " + (f"field '{rest}': {msg}" if rest else msg)


def load_fleet(path: str | Path) -> FleetSpec:
    """A fleet file read and validated (planner.catalog.parse_yaml); SpecError in one line naming the file, the
    workload or inventory entry, the field and what it takes."""
    import yaml

    from planner.catalog import parse_yaml

    path = Path(path)
    try:
        return parse_yaml(path, FleetSpec)
    except SpecError as e:
        text = str(e)
        prefix = f"{path}: "
        if not text.startswith(prefix):
            raise
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except Exception:  # the message stands as it is
            raise e from None
        raise SpecError(prefix + _located(text[len(prefix):], data)) from None


def _spec_of(spec: FleetSpec | dict | str | Path) -> tuple[FleetSpec, Path | None]:
    if isinstance(spec, FleetSpec):
        return spec, None
    if isinstance(spec, dict):
        from planner.catalog import validation_message

        try:
            return FleetSpec.model_validate(spec), None
        except ValidationError as e:
            raise SpecError(_located(validation_message(e), spec)) from None
    return load_fleet(spec), Path(spec).resolve().parent


# --- results ------------------------------------------------------------------------------------------------------


class Deployment(_Strict):
    """Replicas of one option of a workload: one GPU type, serving mode and layout."""

    cluster: str
    serving: Serving
    label: str = Field(description="Layout of one replica, or of a disaggregated unit's two pools")
    replicas: int = Field(description="Replicas (disaggregated: units) [replicas]; in a day plan, at the peak hour")
    gpus_per_replica: int = Field(description="GPUs of one replica (a unit: both pools) [GPUs]")
    gpus: int = Field(description="replicas x gpus_per_replica [GPUs]")
    requests_per_s: float = Field(description="What these replicas serve at full batch [requests/s]")
    tokens_per_s: float = Field(description="The same in output tokens [tokens/s]")
    tokens_per_s_per_user: float = Field(description="Decode speed of a request at full batch [tokens/s]")
    tpot_ms: float = Field(description="Time per output token at full batch [ms]")
    ttft_ms: float = Field(description="Mean time to first token at full batch [ms]")
    replicas_by_hour: list[int] | None = Field(None, description="Day plan: replicas in each hour")
    plan: Plan = Field(description="One replica as `planner estimate --json` gives it")


class WorkloadResult(_Strict):
    """One workload's demand and the deployments serving it."""

    name: str
    model: str
    precision: str = Field(description="Weight formats, e.g. 'fp8' or 'bf16 + mxfp4 experts'")
    isl: int
    osl: int
    sla: SLA | None
    demand_req_per_s: float = Field(description="Demand (day plan: the day's mean) [requests/s]")
    demand_tokens_per_s: float = Field(description="The same in output tokens [tokens/s]")
    served_req_per_s: float = Field(description="Demand served: at most the demand and the capacity [requests/s]")
    served_tokens_per_s: float = Field(description="The same in output tokens [tokens/s]")
    capacity_req_per_s: float = Field(description="What the deployments serve at full batch [requests/s]")
    deployments: list[Deployment]
    gpu_types_without_option: dict[str, str] = Field(
        default_factory=dict, description="GPU types of the inventory with no replica meeting this workload's SLA, "
        "and why")


class PlacementGroup(_Strict):
    """`count` identical groups of `nodes_each` nodes, each holding these replicas."""

    count: int
    nodes_each: int
    replicas: list[str]


class GpuTypeUse(_Strict):
    """One GPU type: what the plan uses of it and what that costs."""

    cluster: str
    node_unit: str = Field(description="What one node is: 'node' (a server) or 'tray'")
    gpus_per_node: int
    gpus_inventory: int = Field(description="GPUs of the inventory [GPUs]")
    gpus_used: int = Field(description="GPUs of the nodes holding a replica (paid) [GPUs]; day plan: at the peak")
    gpus_busy: int = Field(description="GPUs the replicas occupy [GPUs]")
    nodes_used: int
    nodes_inventory: int
    cost_per_gpu_hour: float = Field(description="[$/GPU-hour]")
    cost_per_hour: float = Field(description="gpus_used x price [$/hour]; day plan: the day's mean")
    gpus_by_hour: list[int] | None = Field(None, description="Day plan: GPUs used in each hour [GPUs]")
    peak_hour: int | None = Field(None, description="Day plan: the first hour at the peak")
    placement: list[PlacementGroup] = Field(default_factory=list, description="Where the replicas sit")


class FleetSolverInfo(_Strict):
    """How the fleet was solved."""

    method: Literal["cpsat", "exhaustive"]
    status: Literal["OPTIMAL", "FEASIBLE"]
    objective: Objective
    wall_s: float = Field(description="Wall time of the whole fleet: options, search, check [s]")
    options_wall_s: float = Field(description="Time to build the options [s]")
    search_wall_s: float = Field(description="Time of the search(es) [s]")
    cost_bound_per_hour: float | None = Field(
        None, description="Proven lower bound of the cost [$/hour] (max_served: at the demand served); day plan: "
        "of the day's mean")
    served_bound_tokens_per_s: float | None = Field(
        None, description="max_served: proven upper bound of the demand served [tokens/s]")
    gap: float | None = Field(None, description="Relative gap of the objective to its proven bound")
    options: int = Field(description="Options in the model (all workloads and GPU types) [options]")
    variables: int = Field(0, description="Variables of the CP-SAT model (day plan: of its largest hour)")
    checked: bool = Field(description="Every replica re-checked on the float cost model and the placement node by "
                          "node (a failed check is an error, never a plan)")
    hours_optimal: int | None = Field(None, description="Day plan: hours proven optimal, of 24")


class GreedyInfo(_Strict):
    """The greedy baseline: per workload in turn, the cheapest $/token option first."""

    feasible: bool = Field(description="It serves every demand (min_cost) within the inventory")
    cost_per_hour: float | None = Field(None, description="Its cost [$/hour] (day plan: the day's mean)")
    served_tokens_per_s: float = Field(description="What it serves [tokens/s]")
    worse_by: float | None = Field(None, description="Its cost over the optimum's, minus 1 (min_cost), or the share "
                                   "of demand it serves less (max_served)")
    reason: str | None = Field(None, description="Why it is not feasible")


class HourPlan(_Strict):
    """One hour of a day plan: its demand, replicas and cost."""

    hour: int
    demand_tokens_per_s: float
    served_tokens_per_s: float
    cost_per_hour: float
    status: Literal["OPTIMAL", "FEASIBLE"]
    gap: float | None
    greedy_cost_per_hour: float | None
    gpus_used: dict[str, int] = Field(description="GPUs used per GPU type [GPUs]")
    replicas: dict[str, dict[str, int]] = Field(description="Per workload, replicas per deployment (cluster serving "
                                                "layout)")


class FleetResult(_Strict):
    """What `planner fleet` answers; its JSON."""

    objective: Objective
    workloads: list[WorkloadResult]
    gpu_types: list[GpuTypeUse]
    cost_per_hour: float = Field(description="What the plan costs [$/hour]; day plan: the day's mean")
    cost_per_million_tokens: float | None = Field(description="Cost per million output tokens served [$]")
    demand_tokens_per_s: float
    served_tokens_per_s: float
    solver: FleetSolverInfo
    greedy: GreedyInfo
    cost_per_day: float | None = Field(None, description="Day plan: the 24 hours' cost [$]")
    hours: list[HourPlan] = Field(default_factory=list, description="Day plan: each hour")


# --- building the instance ----------------------------------------------------------------------------------------


def _named(e: PlannerError, prefix: str) -> PlannerError:
    """The same error with its message prefixed (its fields kept)."""
    if isinstance(e, InfeasibleError):
        return InfeasibleError(f"{prefix}: {e}", e.reason, e.reachable)
    if isinstance(e, UnknownNameError):
        return UnknownNameError(f"{prefix}: {e}")
    if isinstance(e, (SpecError, ParseError)):
        return SpecError(f"{prefix}: {e}")
    out = type(e).__new__(type(e))
    out.__dict__.update(e.__dict__)
    out.args = (f"{prefix}: {e}",)
    return out


def _ref(value: str, base: Path | None) -> str:
    """A file reference read relative to the fleet file's folder when it names a file there."""
    if base is not None and value.endswith((".yaml", ".yml", ".json", ".csv", ".jsonl")):
        there = base / value
        if there.exists() and not Path(value).exists():
            return str(there)
    return value


def _types(spec: FleetSpec, base: Path | None) -> list[GpuType]:
    from planner.catalog import load_cluster

    out: list[GpuType] = []
    for item in spec.inventory:
        try:
            c = load_cluster(_ref(item.cluster, base))
        except PlannerError as e:
            raise _named(e, f"inventory {item.cluster!r}") from None
        n = c.gpus_per_node
        if item.gpus % n:
            lo, hi = item.gpus // n * n, -(-item.gpus // n) * n
            near = f"{lo} or {hi}" if lo else f"{hi}"
            raise SpecError(f"inventory {item.cluster!r}: {item.gpus} GPUs is not a whole number of {n}-GPU "
                            f"{c.node_unit}s: give {near}")
        if any(t.name == c.name for t in out):
            raise SpecError(f"inventory: {c.name} is listed twice: give each GPU type once, with all its GPUs")
        out.append(GpuType(c, item.gpus, round(item.cost_per_gpu_hour * PRICE_UNITS) / PRICE_UNITS))
    return out


def _problem_factory(w: FleetWorkload, base: Path | None) -> Callable[[ClusterSpec], Problem]:
    """The workload's Problem on a given cluster (gpus set later by the options), every option of the file applied;
    errors named after the workload."""
    from planner import traffic
    from planner.calibrate import load_calibration
    from planner.search import make_problem
    from planner.specs import LengthShape, Speculation, Workload
    from planner.uncertainty import with_confidence

    prefix = f"workload {w.name!r}"
    try:
        cal = load_calibration(_ref(w.calibration, base) if w.calibration else None)
        speed, tpot_q = parse_sla_at(str(w.sla))
        limit, ttft_q = parse_ttft_at(str(w.ttft)) if w.ttft is not None else (None, None)
        closed = w.arrivals == "closed"
        cache = {"prefix_hit": w.prefix_hit, "prefix_cache_tokens": w.prefix_cache_tokens, "closed_loop": closed,
                 "burstiness": w.burstiness if w.burstiness is not None or closed else 0.0}
        if w.trace is not None:
            workload = traffic.workload_of_trace(traffic.load_trace(_ref(w.trace, base)), **cache)
        else:
            workload = Workload(isl=w.isl, osl=w.osl, isl_cv=w.isl_cv, osl_cv=w.osl_cv, shape=LengthShape(w.lengths),
                                **cache)
        speculation = None
        if w.spec is not None:
            method, draft = parse_spec(w.spec)
            speculation = Speculation(method=method, draft_tokens=w.draft_tokens, draft_model=draft,
                                      acceptance=parse_acceptance(str(w.acceptance)) if w.acceptance is not None
                                      else None)
        confidence = parse_confidence(str(w.confidence)) if w.confidence is not None else None
    except ValidationError as e:
        from planner.catalog import validation_message

        raise SpecError(f"{prefix}: {validation_message(e)}") from None
    except PlannerError as e:
        raise _named(e, prefix) from None

    def of(cluster: ClusterSpec) -> Problem:
        try:
            p = make_problem(model=_ref(w.model, base), cluster=cluster, gpus=cluster.gpus_per_node, isl=workload.isl,
                             osl=workload.osl, precision=w.precision, expert_precision=w.expert_precision,
                             kv_precision=w.kv_precision, min_tokens_per_s_per_user=speed, max_ttft_s=limit,
                             calibration=cal, backend=w.backend, memory_utilization=w.memory_utilization,
                             workload=workload, tpot_percentile=tpot_q, ttft_percentile=ttft_q,
                             speculation=speculation)
            return with_confidence(p, confidence) if confidence is not None else p
        except PlannerError as e:
            raise _named(e, prefix) from None

    return of


class FleetOptions:
    """A fleet's options, built once (planner.fleetoptions): the GPU types, each workload's options and problems,
    and its demand curve; instances of any demand are made from it."""

    def __init__(self, spec: FleetSpec, base: Path | None, method: Method, params, deadline: float) -> None:
        t0 = time.perf_counter()
        self.spec, self.method = spec, method
        self.types = _types(spec, base)
        self.options: list[Option] = []
        self.reasons: list[dict[str, str]] = []
        self.problems: list[Problem] = []
        self.demand: list[list[float]] = []
        for w, wl in enumerate(spec.workloads):
            make = _problem_factory(wl, base)
            self.problems.append(make(self.types[0].cluster))
            found = workload_options(w, make, self.types, wl.serving, method, params, deadline, wl.grid("chunks"),
                                     wl.grid("micro_batches"))
            self.reasons.append({name: str(e) for name, e in found.reasons.items()})
            if not found.options:
                raise _no_option(wl, self.problems[-1], found.reasons)
            self.options += found.options
            self.demand.append(wl.demand_tokens(self.problems[-1].workload.osl))
        self.hourly = any(wl.hourly for wl in spec.workloads)
        self.wall_s = time.perf_counter() - t0

    @classmethod
    def of(cls, spec: FleetSpec | dict | str | Path, method: Method = "cpsat", params=None,
           deadline: float | None = None) -> FleetOptions:
        """The options of a fleet file (a path), its parsed content (a dict) or a FleetSpec, built by `method` within
        `deadline` (time.perf_counter; default: params' time limit from now)."""
        from planner.solver import SolverParams

        if method not in ("cpsat", "exhaustive"):
            raise SpecError(f"unknown method {method!r}: cpsat or exhaustive")
        params = params or SolverParams(time_limit_s=DEFAULT_TIME_LIMIT_S)
        fs, base = _spec_of(spec)
        return cls(fs, base, method, params, deadline if deadline is not None else
                   time.perf_counter() + params.time_limit_s)

    def demand_at(self, hour: int | None, scale: float = 1.0) -> list[float]:
        """Each workload's demand in one hour (None: a constant demand), times `scale` [tokens/s]."""
        return [(d[hour] if len(d) > 1 and hour is not None else d[0]) * scale for d in self.demand]

    def instance(self, demand: Sequence[float], objective: Objective | None = None) -> FleetInstance:
        return FleetInstance(self.types, self.options, list(demand), objective or self.spec.objective,
                             [w.name for w in self.spec.workloads])


def _no_option(wl: FleetWorkload, p: Problem, reasons: dict[str, Exception]) -> InfeasibleError:
    """The one-line error of a workload no GPU type serves: each type's reason, and what would work."""
    sla = p.sla
    ask = f">= {sla.min_tokens_per_s_per_user:g} tokens/s/user" if sla and sla.min_tokens_per_s_per_user else ""
    if sla and sla.max_ttft_s:
        ask += f", TTFT <= {sla.max_ttft_s:g} s"
    why = "; ".join(f"{name}: {e}" for name, e in reasons.items())
    reach = [getattr(e, "reachable", {}) or {} for e in reasons.values()]
    hint = ""
    speeds = [r["tokens_per_s_per_user"] for r in reach if "tokens_per_s_per_user" in r]
    ttfts = [r["ttft_ms"] for r in reach if "ttft_ms" in r]
    gpus = [r["gpus"] for r in reach if "gpus" in r]
    if speeds:
        hint = f" (an sla of at most {math.floor(max(speeds) * 10) / 10:g}tok/s would be served)"
    elif ttfts:
        hint = f" (a ttft of at least {math.ceil(min(ttfts)):g}ms would be served)"
    elif gpus:
        hint = f" (it needs replicas of {int(min(gpus))} GPUs: add GPUs of a type it fits on)"
    return InfeasibleError(f"workload {wl.name!r} ({p.model.name}, {ask}): no GPU type of the inventory serves it: "
                           f"{why}{hint}", "workload")


# --- the check ----------------------------------------------------------------------------------------------------


def check(opts: FleetOptions, inst: FleetInstance, sol: FleetSolution) -> list[str]:
    """What a solution breaks on the float model (empty when nothing): a chosen replica breaking a rule (SLA and
    TTFT at their percentiles included) or serving less than the model counted, a demand not served (min_cost),
    nodes beyond the inventory, a placement over a node's or domain's capacity."""
    out = []
    served = [0.0] * len(inst.demand)
    for k, n in enumerate(sol.counts):
        if not n:
            continue
        o = inst.options[k]
        broken = o.violations()
        if broken:
            out.append(f"{inst.label(k)} breaks {broken}")
        tokens = o.float_tokens()
        if tokens < o.rate * RATE_UNIT * (1 - 1e-12):  # the table and a scalar evaluation agree to rounding
            out.append(f"{inst.label(k)} serves {tokens:g} tokens/s, counted {o.rate * RATE_UNIT:g}")
        served[o.workload] += n * tokens
    if inst.objective == "min_cost":
        out += [f"workload {inst.names[w]!r} served {s:g} of {d:g} tokens/s" for w, (s, d) in
                enumerate(zip(served, inst.demand)) if s < d * (1 - 1e-12)]
    for c, t in enumerate(inst.types):
        rule = t.rule
        placed = sol.placement[c]
        used = sum(n for groups in placed for n, _ in groups)
        if used != sol.nodes[c] or used > rule.nodes:
            out.append(f"{t.name}: {used} nodes placed, {sol.nodes[c]} counted, {rule.nodes} in the inventory")
        sizes = {inst.label(k): o.gpus for k, o in enumerate(inst.options) if o.gpu_type == c}
        out += check_placement(rule, placed, sizes)
        mine = [(o, n) for o, n in zip(inst.options, sol.counts) if o.gpu_type == c]
        small = sum(len(labels) for groups in placed for _, labels in groups
                    if any(rule.kind(sizes[x]) == "small" for x in labels))
        pieces = sum(1 for groups in placed for _, labels in groups
                     if len(labels) == 1 and rule.kind(sizes[labels[0]]) != "small")
        if small != sum(n for o, n in mine if rule.kind(o.gpus) == "small") or \
                pieces != sum(n * len(rule.items(o.gpus)) for o, n in mine):
            out.append(f"{t.name}: the placement holds other replicas than the counts")
    return out


# --- solving --------------------------------------------------------------------------------------------------------


def _solve(opts: FleetOptions, inst: FleetInstance, method: Method, params, deadline: float,
           hint: Sequence[int] | None) -> FleetSolution:
    if method == "exhaustive":
        return exhaustive(inst, deadline)
    return solve_cpsat(inst, params, deadline, hint)


def _short_error(opts: FleetOptions, inst: FleetInstance, method: Method, params, deadline: float) -> InfeasibleError:
    """The inventory cannot serve every demand: how much of each it can (a max_served solve), and what to do."""
    most = None
    try:
        most = _solve(opts, FleetInstance(inst.types, inst.options, inst.demand, "max_served", inst.names), method,
                      params, deadline, None)
    except PlannerError:
        pass
    detail = ""
    if most is not None and most.counts:
        got = inst.served(most.counts)
        short = [f"{inst.names[w]} {got[w] * RATE_UNIT / opts.problems[w].workload.osl:.4g} of "
                 f"{inst.demand[w] / opts.problems[w].workload.osl:.4g} req/s" for w in range(len(inst.demand))
                 if got[w] < inst.need(w)]
        detail = f": at most {', '.join(short)} together" if short else ""
    return InfeasibleError(f"the inventory cannot serve every workload's demand{detail}; use objective max_served "
                           "(serve what fits) or add GPUs", "inventory")


def _gap(value: float, bound: float | None, minimise: bool) -> float | None:
    if bound is None:
        return None
    if minimise:
        return max(0.0, (value - bound) / value) if value > 0 else 0.0
    return max(0.0, (bound - value) / bound) if bound > 0 else 0.0


def _dollars(units: int | None) -> float | None:
    return None if units is None else units / PRICE_UNITS


def _deployments(opts: FleetOptions, inst: FleetInstance, counts: Sequence[int], w: int,
                 by_hour: list[list[int]] | None = None) -> list[Deployment]:
    out = []
    for k, o in enumerate(inst.options):
        n = counts[k]
        if o.workload != w or (n == 0 and not (by_hour and any(h[k] for h in by_hour))):
            continue
        if by_hour:
            n = max(h[k] for h in by_hour)
        out.append(Deployment(
            cluster=inst.types[o.gpu_type].name, serving=o.serving, label=o.label, replicas=n,
            gpus_per_replica=o.gpus, gpus=n * o.gpus, requests_per_s=n * o.requests_per_s,
            tokens_per_s=n * o.tokens_per_s, tokens_per_s_per_user=o.tokens_per_s_per_user, tpot_ms=o.tpot_s * 1e3,
            ttft_ms=o.ttft_s * 1e3, replicas_by_hour=[h[k] for h in by_hour] if by_hour else None, plan=o.plan()))
    out.sort(key=lambda d: (-d.tokens_per_s, d.cluster, d.label))
    return out


def _workload_results(opts: FleetOptions, inst: FleetInstance, counts: Sequence[int],
                      by_hour: list[list[int]] | None = None, days: list[FleetInstance] | None = None
                      ) -> list[WorkloadResult]:
    out = []
    for w, wl in enumerate(opts.spec.workloads):
        p = opts.problems[w]
        osl = p.workload.osl
        deps = _deployments(opts, inst, counts, w, by_hour)
        if days:  # the day's means
            demand = sum(d.demand[w] for d in days) / len(days)
            served = sum(min(d.demand[w], sum(o.tokens_per_s * h[k] for k, o in enumerate(d.options)
                                              if o.workload == w)) for d, h in zip(days, by_hour)) / len(days)
            capacity = sum(sum(o.tokens_per_s * h[k] for k, o in enumerate(d.options) if o.workload == w)
                           for d, h in zip(days, by_hour)) / len(days)
        else:
            demand = inst.demand[w]
            capacity = sum(o.tokens_per_s * counts[k] for k, o in enumerate(inst.options) if o.workload == w)
            served = min(demand, capacity)
        out.append(WorkloadResult(
            name=wl.name, model=p.model.name, precision=p.precision_label, isl=p.workload.isl, osl=osl, sla=p.sla,
            demand_req_per_s=demand / osl, demand_tokens_per_s=demand, served_req_per_s=served / osl,
            served_tokens_per_s=served, capacity_req_per_s=capacity / osl, deployments=deps,
            gpu_types_without_option=opts.reasons[w]))
    return out


def _gpu_uses(inst: FleetInstance, sol: FleetSolution, by_hour: list[FleetSolution] | None = None) -> list[GpuTypeUse]:
    out = []
    for c, t in enumerate(inst.types):
        rule = t.rule
        if by_hour:
            per = [s.nodes[c] for s in by_hour]
            nodes = max(per)
            peak = per.index(nodes)
            busy = sum(o.gpus * by_hour[peak].counts[k] for k, o in enumerate(inst.options) if o.gpu_type == c)
            placement = by_hour[peak].placement[c]
            cost = sum(per) * rule.node_gpus * t.cost_per_gpu_hour / len(per)
        else:
            nodes, per, peak = sol.nodes[c], None, None
            busy = sum(o.gpus * sol.counts[k] for k, o in enumerate(inst.options) if o.gpu_type == c)
            placement = sol.placement[c]
            cost = nodes * rule.node_gpus * t.cost_per_gpu_hour
        out.append(GpuTypeUse(
            cluster=t.name, node_unit=t.cluster.node_unit, gpus_per_node=rule.node_gpus, gpus_inventory=t.gpus,
            gpus_used=nodes * rule.node_gpus, gpus_busy=busy, nodes_used=nodes, nodes_inventory=rule.nodes,
            cost_per_gpu_hour=t.cost_per_gpu_hour, cost_per_hour=cost,
            gpus_by_hour=[x * rule.node_gpus for x in per] if per else None, peak_hour=peak,
            placement=[PlacementGroup(count=g.count, nodes_each=g.nodes_each, replicas=list(g.replicas))
                       for g in groups_of(placement)]))
    return out


def _checked(opts: FleetOptions, inst: FleetInstance, sol: FleetSolution) -> None:
    broken = check(opts, inst, sol)
    if broken:
        raise RuntimeError(f"the fleet's solution fails its float check: {'; '.join(broken[:3])}")  # a bug


def fleet(spec: FleetSpec | dict | str | Path | None = None, *, method: Method = "cpsat", params=None,
          time_limit_s: float | None = None, options: FleetOptions | None = None) -> FleetResult:
    """The fleet plan of a fleet file (a path), its parsed content (a dict) or a FleetSpec: per workload its
    deployments, per GPU type what it uses, the cost [$/hour] and [$/1M output tokens], the solver's status with its
    proven bound and gap, and the greedy baseline's cost beside it. Hourly demands give a day plan (the replicas of
    each hour). `method`: 'cpsat' or 'exhaustive' (the enumeration oracle, small fleets). One time limit
    (params.time_limit_s or time_limit_s, default 60 s) for everything. `options`: a FleetOptions already built
    (FleetOptions.of; then `spec` is not read again and its method applies).

    Raises SpecError/UnknownNameError on bad input, InfeasibleError ('workload': a workload no GPU type serves at
    its SLA; 'inventory': min_cost and the inventory cannot serve every demand) saying what would work, and
    TimeLimitError when no plan is found in time."""
    from planner.errors import TimeLimitError
    from planner.solver import SolverParams

    t0 = time.perf_counter()
    if params is None:
        params = SolverParams(time_limit_s=time_limit_s or DEFAULT_TIME_LIMIT_S)
    deadline = t0 + params.time_limit_s
    opts = options or FleetOptions.of(spec, method, params, deadline)
    method = opts.method
    t1 = time.perf_counter()
    built = opts.wall_s if options is not None else t1 - t0
    hours = list(range(HOURS)) if opts.hourly else [None]
    solved: dict[tuple[float, ...], tuple[FleetInstance, FleetSolution, FleetSolution]] = {}
    plans = []
    for i, h in enumerate(hours):
        demand = opts.demand_at(h)
        key = tuple(demand)
        if key not in solved:
            inst = opts.instance(demand)
            base_line = greedy(inst)
            left = (deadline - time.perf_counter()) / max(1, len({tuple(opts.demand_at(x)) for x in hours[i:]}))
            sol = _solve(opts, inst, method, params, time.perf_counter() + left,
                         base_line.counts if base_line.status == "FEASIBLE" else None)
            if sol.status == "INFEASIBLE":
                raise _short_error(opts, inst, method, params, deadline)
            if sol.status not in ("OPTIMAL", "FEASIBLE"):
                raise TimeLimitError(f"no fleet plan found within the time limit of {params.time_limit_s:g} s",
                                     limit_s=params.time_limit_s)
            _checked(opts, inst, sol)
            solved[key] = (inst, sol, base_line)
        plans.append(solved[key])
    t2 = time.perf_counter()
    if not opts.hourly:
        return _single(opts, *plans[0], method, t0, built, t2 - t1)
    return _day(opts, plans, method, t0, built, t2 - t1)


def _greedy_info(inst: FleetInstance, sol: FleetSolution, base: FleetSolution) -> GreedyInfo:
    served = (base.served or 0) * RATE_UNIT
    if base.status != "FEASIBLE":
        return GreedyInfo(feasible=False, served_tokens_per_s=served, reason="it cannot place enough replicas for "
                          "every demand in the inventory, one workload after the other")
    cost = base.cost / PRICE_UNITS
    if inst.objective == "min_cost":
        worse = cost / (sol.cost / PRICE_UNITS) - 1 if sol.cost else 0.0
    else:
        worse = 1 - (base.served or 0) / sol.served if sol.served else 0.0
    return GreedyInfo(feasible=True, cost_per_hour=cost, served_tokens_per_s=served, worse_by=worse)


def _single(opts: FleetOptions, inst: FleetInstance, sol: FleetSolution, base: FleetSolution, method: Method,
            t0: float, built: float, searched: float) -> FleetResult:
    cost = sol.cost / PRICE_UNITS
    served = sum(min(d, sum(o.tokens_per_s * sol.counts[k] for k, o in enumerate(inst.options) if o.workload == w))
                 for w, d in enumerate(inst.demand))
    if inst.objective == "min_cost":
        gap = _gap(cost, _dollars(sol.cost_bound), True)
    else:
        gap = _gap(sol.served or 0, sol.served_bound, False)
    info = FleetSolverInfo(
        method=method, status=sol.status, objective=inst.objective, wall_s=time.perf_counter() - t0,
        options_wall_s=built, search_wall_s=searched, cost_bound_per_hour=_dollars(sol.cost_bound),
        served_bound_tokens_per_s=sol.served_bound * RATE_UNIT if inst.objective == "max_served" and
        sol.served_bound is not None else None, gap=gap, options=len(inst.options), variables=sol.variables,
        checked=True)
    return FleetResult(
        objective=inst.objective, workloads=_workload_results(opts, inst, sol.counts),
        gpu_types=_gpu_uses(inst, sol), cost_per_hour=cost,
        cost_per_million_tokens=cost / (served * 3600) * 1e6 if served > 0 else None,
        demand_tokens_per_s=sum(inst.demand), served_tokens_per_s=served, solver=info,
        greedy=_greedy_info(inst, sol, base))


def _day(opts: FleetOptions, plans: list[tuple[FleetInstance, FleetSolution, FleetSolution]], method: Method,
         t0: float, built: float, searched: float) -> FleetResult:
    insts = [p[0] for p in plans]
    sols = [p[1] for p in plans]
    bases = [p[2] for p in plans]
    by_hour = [s.counts for s in sols]
    inst = insts[0]
    hours = []
    day_cost = day_served = 0.0
    for h, (hi, s, b) in enumerate(plans):
        cost = s.cost / PRICE_UNITS
        served = sum(min(d, sum(o.tokens_per_s * s.counts[k] for k, o in enumerate(hi.options) if o.workload == w))
                     for w, d in enumerate(hi.demand))
        day_cost += cost
        day_served += served
        reps: dict[str, dict[str, int]] = {}
        for k, o in enumerate(hi.options):
            if s.counts[k]:
                reps.setdefault(hi.names[o.workload], {})[f"{hi.types[o.gpu_type].name} {o.serving} {o.label}"] = \
                    s.counts[k]
        gap = _gap(cost, _dollars(s.cost_bound), True) if hi.objective == "min_cost" else \
            _gap(s.served or 0, s.served_bound, False)
        hours.append(HourPlan(
            hour=h, demand_tokens_per_s=sum(hi.demand), served_tokens_per_s=served, cost_per_hour=cost,
            status=s.status, gap=gap, greedy_cost_per_hour=b.cost / PRICE_UNITS if b.status == "FEASIBLE" else None,
            gpus_used={t.name: s.nodes[c] * t.rule.node_gpus for c, t in enumerate(hi.types)}, replicas=reps))
    bound = sum(_dollars(s.cost_bound) or 0.0 for s in sols) if all(s.cost_bound is not None for s in sols) else None
    optimal = sum(1 for s in sols if s.status == "OPTIMAL")
    status = "OPTIMAL" if optimal == len(sols) else "FEASIBLE"
    if inst.objective == "min_cost":
        gap = _gap(day_cost, bound, True)
    else:
        tot = sum(s.served or 0 for s in sols)
        gap = _gap(tot, sum(s.served_bound or 0 for s in sols), False)
    info = FleetSolverInfo(
        method=method, status=status, objective=inst.objective, wall_s=time.perf_counter() - t0,
        options_wall_s=built, search_wall_s=searched, cost_bound_per_hour=bound / HOURS if bound is not None else None,
        served_bound_tokens_per_s=sum(s.served_bound or 0 for s in sols) * RATE_UNIT / HOURS
        if inst.objective == "max_served" else None, gap=gap, options=len(inst.options),
        variables=max(s.variables for s in sols), checked=True, hours_optimal=optimal)
    feasible = all(b.status == "FEASIBLE" for b in bases)
    g_cost = sum(b.cost for b in bases) / PRICE_UNITS if feasible else None
    g_served = sum(b.served or 0 for b in bases) * RATE_UNIT / HOURS
    if feasible and inst.objective == "min_cost":
        worse = g_cost / day_cost - 1 if day_cost else 0.0
    elif feasible:
        tot = sum(s.served or 0 for s in sols)
        worse = 1 - sum(b.served or 0 for b in bases) / tot if tot else 0.0
    else:
        worse = None
    base = GreedyInfo(feasible=feasible, cost_per_hour=g_cost / HOURS if g_cost is not None else None,
                      served_tokens_per_s=g_served, worse_by=worse,
                      reason=None if feasible else "in some hour it cannot place enough replicas for every demand")
    return FleetResult(
        objective=inst.objective, workloads=_workload_results(opts, inst, by_hour[0], by_hour, insts),
        gpu_types=_gpu_uses(inst, sols[0], sols), cost_per_hour=day_cost / HOURS,
        cost_per_million_tokens=day_cost / (day_served * 3600) * 1e6 if day_served > 0 else None,
        demand_tokens_per_s=sum(sum(i.demand) for i in insts) / HOURS, served_tokens_per_s=day_served / HOURS,
        solver=info, greedy=base, cost_per_day=day_cost, hours=hours)


# --- cost against demand -------------------------------------------------------------------------------------------


class CostPoint(_Strict):
    """The optimum and the greedy baseline at one demand level (every workload's demand times `scale`)."""

    scale: float
    demand_tokens_per_s: float
    cost_per_hour: float | None = Field(description="The optimum [$/hour] (None: the inventory cannot serve it)")
    status: str
    greedy_cost_per_hour: float | None


def cost_curve(spec: FleetSpec | dict | str | Path | None, scales: Sequence[float], *, method: Method = "cpsat",
               params=None, time_limit_s: float | None = None, options: FleetOptions | None = None
               ) -> list[CostPoint]:
    """The least cost [$/hour] of serving every workload's demand times each scale (min_cost), with the greedy
    baseline's, on the options built once (or `options`); a day plan's demands are taken at their daily mean.
    Levels the inventory cannot serve have no cost."""
    from planner.solver import SolverParams

    t0 = time.perf_counter()
    if params is None:
        params = SolverParams(time_limit_s=time_limit_s or DEFAULT_TIME_LIMIT_S)
    deadline = t0 + params.time_limit_s
    opts = options or FleetOptions.of(spec, method, params, deadline)
    method = opts.method
    mean = [sum(d) / len(d) for d in opts.demand]
    out = []
    for i, s in enumerate(scales):
        inst = opts.instance([x * s for x in mean], "min_cost")
        line = greedy(inst)
        left = (deadline - time.perf_counter()) / (len(scales) - i)
        sol = _solve(opts, inst, method, params, time.perf_counter() + left,
                     line.counts if line.status == "FEASIBLE" else None)
        if sol.status in ("OPTIMAL", "FEASIBLE"):
            _checked(opts, inst, sol)
        out.append(CostPoint(scale=s, demand_tokens_per_s=sum(inst.demand),
                             cost_per_hour=sol.cost / PRICE_UNITS if sol.cost is not None else None,
                             status=sol.status,
                             greedy_cost_per_hour=line.cost / PRICE_UNITS if line.status == "FEASIBLE" else None))
    return out
