"""planner: the provably best way to deploy an LLM for inference on a GPU cluster.

    from planner import solve, estimate, load_model, load_cluster, sweep
    plans = solve(min_tokens_per_s_per_user=20)          # the study's case, best plan first
    plan = planner.fleet("fleets/example.yaml")           # many workloads on a priced inventory (planner.fleetplan)
    result = planner.sweep("sweeps/example.yaml", jobs=2, cache="results.cache")   # a grid of scenarios: .rows
    out = planner.export(plans[0], "vllm")                # launch commands and files: .files["launch.sh"]
    why = planner.explain(make_problem())                 # binding rules, runner-ups, or conflict and relaxations
"""

from typing import Any

from planner.catalog import load_cluster, load_model
from planner.errors import InfeasibleError, InvalidLayoutError, PlannerError, SpecError, UnknownNameError
from planner.search import estimate, make_problem, min_gpus_to_fit, solve
from planner.specs import (
    SLA,
    Calibration,
    ClusterSpec,
    ModelSpec,
    Parallel,
    Plan,
    Precision,
    Problem,
    SpecMethod,
    Speculation,
    Workload,
)

__all__ = [
    "SLA", "Calibration", "ClusterSpec", "InfeasibleError", "InvalidLayoutError", "ModelSpec", "Parallel",
    "Plan", "PlannerError", "Precision", "Problem", "SpecError", "SpecMethod", "Speculation", "UnknownNameError",
    "Workload", "estimate",
    "explain", "export", "fleet", "load_cluster", "load_model", "make_problem", "min_gpus_to_fit", "solve", "sweep",
]


def __getattr__(name: str) -> Any:
    """`planner.fleet`, `planner.sweep`, `planner.export` and `planner.explain`, imported on first use
    (planner.fleetplan, planner.sweeps, planner.exports, planner.explanations), so that `import planner` and
    `planner solve` stay as fast."""
    if name == "fleet":
        from planner.fleetplan import fleet

        return fleet
    if name == "sweep":
        from planner.sweeps import sweep

        return sweep
    if name == "explain":
        from planner.explanations import explain

        return explain
    if name == "export":
        from planner.exports import export

        return export
    raise AttributeError(f"module 'planner' has no attribute {name!r}")
