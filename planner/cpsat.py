"""A thin builder of CP-SAT's model (the CpModelProto of OR-Tools) and its solve call.

planner.solver states the planner's rules with it. It writes the proto directly instead of going through
`ortools.sat.python.cp_model`, which imports pandas at load time: 0.3-0.5 s of every command's start-up
on the 2-core development machine (benchmarks/startup.py), for a model that needs Booleans, bounded
integers, exactly-one, enforced linear constraints and a linear objective. The solve call is the one
cp_model.CpSolver makes (cp_model_helper.SolveWrapper, a new one per solve).

Variables are indices into the proto; a literal is a Boolean variable's index, or `not_(index)` for its
negation (CP-SAT's own convention, -index - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ortools.sat import cp_model_pb2, sat_parameters_pb2
from ortools.sat.python import cp_model_helper

STATUS = {cp_model_pb2.OPTIMAL: "OPTIMAL", cp_model_pb2.FEASIBLE: "FEASIBLE", cp_model_pb2.INFEASIBLE: "INFEASIBLE",
          cp_model_pb2.MODEL_INVALID: "MODEL_INVALID", cp_model_pb2.UNKNOWN: "UNKNOWN"}
"""CP-SAT's statuses by name."""
INT_MAX = 2**62
"""Largest bound of a linear constraint or variable (CP-SAT works in 64-bit integers)."""


def not_(literal: int) -> int:
    """The negation of a literal."""
    return -literal - 1


@dataclass
class Response:
    """What a solve found: the status, the value of every variable (when a solution exists), the objective
    and its proven bound (in the objective's integer units)."""

    status: str
    values: np.ndarray
    objective: float | None
    bound: float | None
    wall_s: float
    core: list[int] = field(default_factory=list)  # INFEASIBLE under assumptions: a subset of them that conflicts

    def value(self, var: int) -> int:
        """The value of a variable in the solution."""
        return int(self.values[var])


class Model:
    """A CP-SAT model being built."""

    def __init__(self) -> None:
        self.proto = cp_model_pb2.CpModelProto()

    def new_int(self, lo: int, hi: int, name: str = "") -> int:
        """An integer variable lo..hi; its index."""
        var = self.proto.variables.add()
        var.domain.extend((int(lo), int(hi)))
        var.name = name
        return len(self.proto.variables) - 1

    def new_bools(self, names: Sequence[str]) -> list[int]:
        """Boolean variables, one per name; their indices."""
        first = len(self.proto.variables)
        for name in names:
            var = self.proto.variables.add()
            var.domain.extend((0, 1))
            var.name = name
        return list(range(first, first + len(names)))

    def new_bool(self, name: str = "") -> int:
        """One Boolean variable; its index."""
        return self.new_bools([name])[0]

    def add_exactly_one(self, literals: Sequence[int]) -> None:
        """Exactly one of the literals is true."""
        self.proto.constraints.add().exactly_one.literals.extend(int(x) for x in literals)

    def add_linear(self, variables: Sequence[int], coefficients: Sequence[int], lo: int, hi: int,
                   enforce: Sequence[int] = ()) -> None:
        """lo <= sum(coefficient * variable) <= hi, when every `enforce` literal is true."""
        ct = self.proto.constraints.add()
        ct.enforcement_literal.extend(int(x) for x in enforce)
        ct.linear.vars.extend(int(v) for v in variables)
        ct.linear.coeffs.extend(int(c) for c in coefficients)
        ct.linear.domain.extend((max(int(lo), -INT_MAX), min(int(hi), INT_MAX)))

    def fix(self, var: int, value: int) -> None:
        """Fix a variable to one value."""
        del self.proto.variables[var].domain[:]
        self.proto.variables[var].domain.extend((int(value), int(value)))

    def free(self, var: int, lo: int = 0, hi: int = 1) -> None:
        """Give a variable its whole domain back, lo..hi (a Boolean fixed by `fix`: 0..1)."""
        del self.proto.variables[var].domain[:]
        self.proto.variables[var].domain.extend((int(lo), int(hi)))

    def assume(self, literals: Sequence[int]) -> None:
        """Solve under these assumptions (replacing any before): an INFEASIBLE solve names a subset of them that
        conflicts (Response.core)."""
        del self.proto.assumptions[:]
        self.proto.assumptions.extend(int(x) for x in literals)

    def hint(self, var: int, value: int) -> None:
        """A solution hint for one variable (CP-SAT tries it first)."""
        self.proto.solution_hint.vars.append(int(var))
        self.proto.solution_hint.values.append(int(value))

    def minimize(self, variables: Sequence[int], coefficients: Sequence[int]) -> None:
        """Minimise sum(coefficient * variable)."""
        obj = self.proto.objective
        obj.Clear()
        obj.vars.extend(int(v) for v in variables)
        obj.coeffs.extend(int(c) for c in coefficients)

    def maximize(self, variables: Sequence[int], coefficients: Sequence[int]) -> None:
        """Maximise sum(coefficient * variable) (CP-SAT minimises the negation, scaled by -1)."""
        self.minimize(variables, [-int(c) for c in coefficients])
        self.proto.objective.scaling_factor = -1.0

    @property
    def has_objective(self) -> bool:
        return len(self.proto.objective.vars) > 0

    def solve(self, time_limit_s: float, workers: int = 1, seed: int = 0,
              linearization_level: int | None = None) -> Response:
        """Solve within `time_limit_s`; one worker keeps it deterministic. `linearization_level` (CP-SAT's: 0-2,
        None its default 1): how much of the model enters the LP relaxation (2: the enforced linear constraints
        too, which the disaggregated model's bound needs)."""
        params = sat_parameters_pb2.SatParameters(max_time_in_seconds=max(0.01, time_limit_s), num_workers=workers,
                                                  random_seed=seed)
        if linearization_level is not None:
            params.linearization_level = linearization_level
        wrapper = cp_model_helper.SolveWrapper()  # one per solve, as cp_model.CpSolver does
        wrapper.set_parameters(params)
        r = wrapper.solve_and_return_response_wrapper(self.proto).response()
        status = STATUS.get(r.status, "UNKNOWN")
        found = status in ("OPTIMAL", "FEASIBLE")
        values = np.asarray(r.solution, dtype=np.int64) if found else np.zeros(0, np.int64)
        scored = found and self.has_objective
        return Response(status=status, values=values, objective=r.objective_value if scored else None,
                        bound=r.best_objective_bound if scored else None, wall_s=r.wall_time,
                        core=[int(x) for x in r.sufficient_assumptions_for_infeasibility])
