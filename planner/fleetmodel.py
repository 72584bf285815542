"""The fleet's integer program: how many replicas of each option, under demand, inventory and placement.

Given the options of every workload (planner.fleetoptions: a replica or disaggregated unit of g GPUs on one GPU
type serving T output tokens/s), choose integer replica counts n_o:

- demand: each workload's replicas serve its demand, sum_o T_o n_o >= D_w (min_cost), or as much of it as the
  inventory allows (max_served: served_w = min(D_w, sum_o T_o n_o), maximised in total output tokens/s, then the
  cheapest way to serve that);
- placement (planner.placement): small replicas fill node slots, counted by node patterns (z_P nodes hold the
  multiset P of small replica sizes, P maximal among those fitting one node); where a domain of several nodes is a
  unit of placement (NVL72 racks) its pieces (blocks of nodes, whole domains) fill domain patterns in the same
  way, at most as many of each capacity as the inventory has domains;
- inventory: the nodes used, sum_P z_P plus the nodes of every block and whole replica, within the GPU type's;
- cost: every node used is paid in full, price x GPUs per node [$/hour]; among plans of equal cost, the fewest
  GPUs in replicas.

The patterns make placement exact and linear: any packing of replicas into nodes puts in each node a multiset
of sizes that is part of a maximal pattern, and any pattern count covering the replicas is a packing (`place`).

`FleetModel` states it for CP-SAT in one method per rule (add_replicas, add_demand, add_placement,
add_inventory, then minimize_cost or maximize_served); `solve_cpsat` solves it (two phases for max_served: the
most served, then the least cost at that). `exhaustive` enumerates replica counts (the test oracle, small fleets
only) and checks placement by exact packing; `greedy` is the baseline: per workload in turn, replicas of the
option of the lowest $/token that still fits, placed first fit.

Everything is in integers: rates and demands in fleetoptions.RATE_UNIT tokens/s (rates rounded down, demands up),
prices in micro-dollars per GPU-hour; both methods and the greedy baseline share them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from planner.cpsat import INT_MAX, Model
from planner.errors import SpecError
from planner.fleetoptions import RATE_UNIT, GpuType, Option
from planner.placement import FirstFit, min_nodes, patterns, place, place_exact

Objective = Literal["min_cost", "max_served"]
"""What a fleet optimises: the cheapest inventory serving every demand, or the most demand served."""
PRICE_UNITS = 1_000_000
"""Prices enter the model in micro-dollars per GPU-hour (read to the micro-dollar) [1/$]."""
LINEARIZATION_LEVEL = 2
"""CP-SAT's linearization level for the fleet (every constraint in its LP relaxation): on the 20-workload benchmark
fleet it proved the optimum in 5 s, where the default level left the bound at 0 after 60 s (one worker)."""
MAX_ENUMERATION = 20_000_000
"""Most steps the exhaustive enumeration takes before refusing the fleet as too large for it [steps]."""

Domains = list[list[tuple[int, list[str]]]]
"""An explicit placement on one GPU type: per domain its groups (nodes, labels of the replicas on them)."""


@dataclass
class FleetInstance:
    """One fleet problem in the model's integers: GPU types, options, demands [tokens/s] and the objective."""

    types: list[GpuType]
    options: list[Option]
    demand: list[float]  # per workload [tokens/s]
    objective: Objective = "min_cost"
    names: list[str] = field(default_factory=list)  # per workload, for labels

    def need(self, w: int) -> int:
        """Workload w's demand in the model's units, rounded up [RATE_UNIT tokens/s]."""
        return int(math.ceil(self.demand[w] / RATE_UNIT - 1e-9)) if self.demand[w] > 0 else 0

    def price(self, c: int) -> int:
        """Price of one node of GPU type c [micro-dollars/hour]."""
        t = self.types[c]
        return round(t.cost_per_gpu_hour * PRICE_UNITS) * t.rule.node_gpus

    def cap(self, k: int) -> int:
        """The most replicas of option k worth deploying: enough for its workload's demand alone, and what its GPU
        type holds [replicas]."""
        o = self.options[k]
        enough = -(-self.need(o.workload) // o.rate) if o.rate > 0 else 0
        return min(enough, self.types[o.gpu_type].rule.most(o.gpus))

    def label(self, k: int) -> str:
        """A replica's label in a placement: 'workload: layout'."""
        o = self.options[k]
        name = self.names[o.workload] if self.names else f"w{o.workload}"
        return f"{name}: {o.label}"

    def served(self, counts: Sequence[int]) -> list[int]:
        """Per workload the demand its replicas serve, at most the demand [RATE_UNIT tokens/s]."""
        total = [0] * len(self.demand)
        for o, n in zip(self.options, counts):
            total[o.workload] += o.rate * n
        return [min(t, self.need(w)) for w, t in enumerate(total)]

    def replicas_on(self, c: int, counts: Sequence[int]) -> list[tuple[str, int]]:
        """(label, GPUs) of every replica the counts put on GPU type c."""
        return [(self.label(k), o.gpus) for k, (o, n) in enumerate(zip(self.options, counts)) if o.gpu_type == c
                for _ in range(n)]


@dataclass
class FleetSolution:
    """Replica counts and their placement, found by one method; cost [micro-dollars/hour] and served demand
    [RATE_UNIT tokens/s] in the model's integers; proven bounds where the method gives them."""

    status: str  # OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN (no solution within the time limit)
    counts: list[int] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)  # per GPU type
    placement: list[Domains] = field(default_factory=list)  # per GPU type
    cost: int | None = None
    served: int | None = None
    cost_bound: int | None = None  # proven lower bound of the cost (min_cost; max_served: at the served level)
    served_bound: int | None = None  # proven upper bound of the served demand (max_served)
    wall_s: float = 0.0
    variables: int = 0  # of the CP-SAT model
    constraints: int = 0


# --- the CP-SAT model ------------------------------------------------------------------------------------------


class FleetModel:
    """The fleet as one CP-SAT model, built rule by rule (planner.cpsat)."""

    def __init__(self, inst: FleetInstance, params=None) -> None:
        from planner.solver import SolverParams

        self.inst, self.params = inst, params or SolverParams()
        self.model = Model()
        self.n: list[int] = []  # replicas per option
        self.served: list[int] = []  # max_served: served demand per workload
        self.small: list[tuple[list[int], list[tuple[int, ...]], list[int]]] = []  # per type: sizes, patterns, vars
        self.domain: list[tuple[list[int], list[tuple[tuple[int, ...], int, int]]]] = []  # pieces, (P, var, cap)
        self.node_terms: list[tuple[list[int], list[int]]] = []  # per type: nodes used, as a linear expression

    def add_replicas(self) -> None:
        """An integer replica count per option, 0 up to FleetInstance.cap."""
        self.n = [self.model.new_int(0, self.inst.cap(k), f"replicas[{k}]") for k in range(len(self.inst.options))]

    def add_demand(self) -> None:
        """min_cost: each workload's replicas serve its demand, sum rate * n >= need. max_served: served_w <= need
        and served_w <= sum rate * n (the objective pushes it up to the smaller)."""
        by_w: dict[int, list[int]] = {w: [] for w in range(len(self.inst.demand))}
        for k, o in enumerate(self.inst.options):
            by_w[o.workload].append(k)
        for w, ks in by_w.items():
            need = self.inst.need(w)
            terms = [self.n[k] for k in ks], [self.inst.options[k].rate for k in ks]
            if self.inst.objective == "min_cost":
                self.model.add_linear(*terms, need, INT_MAX)
                continue
            s = self.model.new_int(0, need, f"served[{w}]")
            self.served.append(s)
            self.model.add_linear([s, *terms[0]], [1, *(-a for a in terms[1])], -INT_MAX, 0)

    def add_placement(self, c: int) -> None:
        """GPU type c: small replicas in node patterns (for each size, the replicas of that size at most the
        slots the chosen patterns hold); block and whole replicas' pieces in domain patterns (where a domain of
        several nodes is a unit: at most as many patterns of each capacity as domains of it). Defines the nodes
        used: the patterns' nodes plus the block and whole replicas' nodes."""
        inst, rule = self.inst, self.inst.types[c].rule
        mine = [k for k, o in enumerate(inst.options) if o.gpu_type == c]
        sizes = sorted({inst.options[k].gpus for k in mine if rule.kind(inst.options[k].gpus) == "small"})
        node_pats = patterns(sizes, rule.node_gpus)
        z = [self.model.new_int(0, rule.nodes, f"{rule.cluster}.nodes[{i}]") for i in range(len(node_pats))]
        for j, s in enumerate(sizes):
            ks = [k for k in mine if inst.options[k].gpus == s]
            self.model.add_linear([*(self.n[k] for k in ks), *z], [1] * len(ks) + [-p[j] for p in node_pats],
                                  -INT_MAX, 0)
        self.small.append((sizes, node_pats, z))
        big = [k for k in mine if rule.kind(inst.options[k].gpus) != "small"]
        pieces = sorted({x for k in big for x in rule.items(inst.options[k].gpus)})
        chosen: list[tuple[tuple[int, ...], int, int]] = []
        if pieces and rule.domain_nodes > 1:
            for cap in sorted(set(rule.domains)):
                count = rule.domains.count(cap)
                for p in patterns(pieces, cap):
                    chosen.append((p, self.model.new_int(0, count, f"{rule.cluster}.domains[{cap}][{p}]"), cap))
            for cap in sorted(set(rule.domains)):
                here = [v for _, v, cp in chosen if cp == cap]
                if here:
                    self.model.add_linear(here, [1] * len(here), 0, rule.domains.count(cap))
            for j, x in enumerate(pieces):
                per = [rule.items(inst.options[k].gpus).count(x) for k in big]
                self.model.add_linear([*(self.n[k] for k in big), *(v for _, v, _ in chosen)],
                                      [*per, *(-p[j] for p, _, _ in chosen)], -INT_MAX, 0)
        self.domain.append((pieces, chosen))
        self.node_terms.append(([*z, *(self.n[k] for k in big)],
                                [1] * len(z) + [rule.nodes_of(inst.options[k].gpus) for k in big]))

    def add_inventory(self, c: int) -> None:
        """GPU type c: the nodes used at most the inventory's."""
        self.model.add_linear(*self.node_terms[c], 0, self.inst.types[c].rule.nodes)

    def _cost_terms(self) -> tuple[list[int], list[int]]:
        vs, cs = [], []
        for c, (v, k) in enumerate(self.node_terms):
            vs += v
            cs += [x * self.inst.price(c) for x in k]
        return vs, cs

    @property
    def weight(self) -> int:
        """The cost's weight in the objective: above the most GPUs the replicas can occupy, so that the GPUs
        busy only break ties of cost."""
        return sum(t.gpus for t in self.inst.types) + 1

    def minimize_cost(self) -> None:
        """The least cost of the nodes used [micro-dollars/hour]; among plans of equal cost, the fewest GPUs in
        replicas (no replica the demand does not need)."""
        vs, cs = self._cost_terms()
        w = self.weight
        self.model.minimize([*vs, *self.n], [*(c * w for c in cs), *(o.gpus for o in self.inst.options)])

    def maximize_served(self) -> None:
        """The most demand served, all workloads together [RATE_UNIT tokens/s]."""
        self.model.maximize(self.served, [1] * len(self.served))

    def require_served(self, at_least: int) -> None:
        """The served demand at least this much (max_served's second phase)."""
        self.model.add_linear(self.served, [1] * len(self.served), at_least, INT_MAX)

    def hint(self, counts: Sequence[int]) -> None:
        """A solution hint: these replica counts (CP-SAT starts there; a hint is never trusted as a solution)."""
        for k, (var, n) in enumerate(zip(self.n, counts)):
            self.model.hint(var, min(n, self.inst.cap(k)))

    def build(self) -> None:
        """Every rule: replicas, demand, and each GPU type's placement and inventory."""
        self.add_replicas()
        self.add_demand()
        for c in range(len(self.inst.types)):
            self.add_placement(c)
            self.add_inventory(c)

    def solution(self, r, status: str) -> FleetSolution:
        """The counts, nodes and explicit placement of a CP-SAT response."""
        inst = self.inst
        counts = [r.value(v) for v in self.n]
        nodes = [sum(r.value(v) * a for v, a in zip(*terms)) for terms in self.node_terms]
        placement = []
        for c in range(len(inst.types)):
            sizes, pats, z = self.small[c]
            pieces, chosen = self.domain[c]
            placement.append(place(inst.types[c].rule, inst.replicas_on(c, counts),
                                   [(p, r.value(v)) for p, v in zip(pats, z)], sizes,
                                   [(p, r.value(v), cap) for p, v, cap in chosen], pieces))
        cost = sum(n * inst.price(c) for c, n in enumerate(nodes))
        return FleetSolution(status, counts, nodes, placement, cost, sum(inst.served(counts)),
                             variables=len(self.model.proto.variables), constraints=len(self.model.proto.constraints))


def solve_cpsat(inst: FleetInstance, params=None, deadline: float | None = None,
                hint: Sequence[int] | None = None) -> FleetSolution:
    """The fleet by CP-SAT within `deadline` (time.perf_counter; default: the time limit from now); max_served in
    two phases (the most served, then the least cost serving that much). A solution found but not proven is
    FEASIBLE with its proven bound."""
    t0 = time.perf_counter()
    params = params or _params()
    deadline = deadline if deadline is not None else t0 + params.time_limit_s
    fm = FleetModel(inst, params)
    fm.build()
    if hint is not None:
        fm.hint(hint)
    served_bound, first = None, None
    level = params.linearization_level if params.linearization_level is not None else LINEARIZATION_LEVEL
    if inst.objective == "max_served":
        fm.maximize_served()
        first = fm.model.solve(deadline - time.perf_counter(), params.workers, params.seed, level)
        if first.status not in ("OPTIMAL", "FEASIBLE"):
            return FleetSolution(first.status, wall_s=time.perf_counter() - t0)
        served_bound = int(math.floor(first.bound + 1e-6))
        fm.require_served(int(round(first.objective)))
        del fm.model.proto.solution_hint.vars[:]  # the second phase starts from the first one's solution
        del fm.model.proto.solution_hint.values[:]
        for var in range(len(fm.model.proto.variables)):
            fm.model.hint(var, first.value(var))
    fm.minimize_cost()
    r = fm.model.solve(deadline - time.perf_counter(), params.workers, params.seed, level)
    if r.status not in ("OPTIMAL", "FEASIBLE"):
        if first is None:
            return FleetSolution(r.status, wall_s=time.perf_counter() - t0)
        out = fm.solution(first, "FEASIBLE")  # the most served, its cost not minimised in time
        out.served_bound = served_bound
        out.wall_s = time.perf_counter() - t0
        return out
    proven = r.status == "OPTIMAL" and (first is None or first.status == "OPTIMAL")
    out = fm.solution(r, "OPTIMAL" if proven else "FEASIBLE")
    # cost * weight + busy GPUs >= bound (no objective: nothing to deploy, the cost is 0)
    out.cost_bound = int(math.floor(r.bound + 1e-6)) // fm.weight if r.bound is not None else out.cost
    out.served_bound = served_bound if served_bound is not None else out.served
    out.wall_s = time.perf_counter() - t0
    return out


def _params():
    from planner.solver import SolverParams

    return SolverParams()


# --- the exhaustive oracle ------------------------------------------------------------------------------------


def _combos(inst: FleetInstance, ks: list[int], budget: list[int]) -> list[tuple[int, ...]]:
    """A workload's replica counts over its options `ks` worth considering: min_cost, the minimal ones serving the
    demand (no replica removable); max_served, those where every replica adds served demand. `budget`: one step
    counter shared by the whole enumeration."""
    need = [inst.need(inst.options[ks[0]].workload)] if ks else [0]
    rates = [inst.options[k].rate for k in ks]
    caps = [inst.cap(k) for k in ks]
    out: list[tuple[int, ...]] = []
    counts = [0] * len(ks)

    def go(i: int, total: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise SpecError(f"the fleet is too large for the exhaustive enumeration (more than {MAX_ENUMERATION:,} "
                            "steps): use the cpsat method")
        if total >= need[0] or i == len(ks):
            present = [a for a, n in zip(rates, counts) if n]
            useful = not present or total - min(present) < need[0]
            if useful and (inst.objective == "max_served" or total >= need[0]):
                out.append(tuple(counts))
            return
        most = min(caps[i], -(-(need[0] - total) // rates[i]) if rates[i] > 0 else 0)
        for n in range(most + 1):
            counts[i] = n
            go(i + 1, total + n * rates[i])
        counts[i] = 0

    go(0, 0)
    return out


def exhaustive(inst: FleetInstance, deadline: float | None = None) -> FleetSolution:
    """The fleet by enumeration of replica counts (the test oracle; small fleets only): every workload's
    combinations worth considering (_combos), every product of them, each placed by exact packing
    (placement.min_nodes) and priced; the least cost (min_cost) or the most served, then the least cost
    (max_served); ties to the fewest GPUs in replicas. Branch and bound: a partial product is dropped when its
    nodes (each type's small GPUs over its node size, plus its block and whole nodes) exceed the inventory, or when
    it cannot beat the best found: at most every remaining workload's demand served, at least the GPUs' price of
    what is chosen plus the cheapest combination of every remaining workload (a node's price spread over its
    GPUs: cost is additive in GPUs below the whole nodes)."""
    t0 = time.perf_counter()
    budget = [MAX_ENUMERATION]
    types = [t.rule for t in inst.types]
    per_gpu = [inst.price(c) / r.node_gpus for c, r in enumerate(types)]
    by_w = {w: [k for k, o in enumerate(inst.options) if o.workload == w] for w in range(len(inst.demand))}
    table = {}  # per workload: (combo, small GPUs per type, big nodes per type, GPUs' price, served) for each combo
    for w, ks in by_w.items():
        rows = []
        for combo in _combos(inst, ks, budget):
            vol, big = [0] * len(types), [0] * len(types)
            served = 0
            for k, n in zip(ks, combo):
                o = inst.options[k]
                r = types[o.gpu_type]
                if r.kind(o.gpus) == "small":
                    vol[o.gpu_type] += n * o.gpus
                else:
                    big[o.gpu_type] += n * r.nodes_of(o.gpus)
                served += n * o.rate
            price = sum(p * (v + b * r.node_gpus) for p, v, b, r in zip(per_gpu, vol, big, types))
            rows.append((combo, vol, big, price, min(served, inst.need(w))))
        if not rows:
            return FleetSolution("INFEASIBLE", wall_s=time.perf_counter() - t0)
        rows.sort(key=lambda x: (-x[4], x[3]))  # the most served, then the cheapest, first
        table[w] = rows
    ws = sorted(table, key=lambda w: -min(x[3] for x in table[w]))  # the costliest workloads first
    cheapest = [min(x[3] for x in table[w]) for w in ws]
    rest_price = [sum(cheapest[i:]) for i in range(len(ws) + 1)]
    rest_served = [sum(inst.need(w) for w in ws[i:]) for i in range(len(ws) + 1)]
    best: list = [None]  # ((-served, cost, busy), counts, nodes)
    counts = [0] * len(inst.options)
    minimise = inst.objective == "min_cost"

    def go(i: int, vol: list[int], big: list[int], price: float, served: int) -> None:
        budget[0] -= 1
        if budget[0] < 0 or (deadline is not None and time.perf_counter() > deadline):
            raise SpecError(f"the fleet is too large for the exhaustive enumeration (more than {MAX_ENUMERATION:,} "
                            "steps or past the time limit): use the cpsat method")
        lb = [-(-v // r.node_gpus) + b for v, b, r in zip(vol, big, types)]
        if any(x > r.nodes for x, r in zip(lb, types)):
            return
        if best[0] is not None:
            (top_served, top_cost, _) = best[0][0]
            most = served + rest_served[i]
            least = max(sum(x * inst.price(c) for c, x in enumerate(lb)), price + rest_price[i] - 0.5)
            if (-most, least) > (top_served, top_cost) if not minimise else least > top_cost:
                return
        if i == len(ws):
            nodes = []
            for c, r in enumerate(types):
                got = min_nodes(r, [o.gpus for o, n in zip(inst.options, counts) if o.gpu_type == c for _ in range(n)])
                if got is None:
                    return
                nodes.append(got)
            cost = sum(x * inst.price(c) for c, x in enumerate(nodes))
            key = (-sum(inst.served(counts)), cost, sum(o.gpus * n for o, n in zip(inst.options, counts)))
            if best[0] is None or key < best[0][0]:
                best[0] = (key, list(counts), nodes)
            return
        w = ws[i]
        for combo, v, b, p, got in table[w]:
            for k, n in zip(by_w[w], combo):
                counts[k] = n
            go(i + 1, [x + y for x, y in zip(vol, v)], [x + y for x, y in zip(big, b)], price + p, served + got)
        for k in by_w[w]:
            counts[k] = 0

    go(0, [0] * len(types), [0] * len(types), 0.0, 0)
    if best[0] is None:
        return FleetSolution("INFEASIBLE", wall_s=time.perf_counter() - t0)
    (neg_served, cost, _), found, nodes = best[0]
    placement = [place_exact(r, inst.replicas_on(c, found)) for c, r in enumerate(types)]
    return FleetSolution("OPTIMAL", found, nodes, placement, cost, -neg_served, cost, -neg_served,
                         wall_s=time.perf_counter() - t0)


# --- the greedy baseline -----------------------------------------------------------------------------------


def greedy(inst: FleetInstance) -> FleetSolution:
    """The baseline: per workload in turn (in the order given), replicas of its option of the lowest $/token
    (price per GPU-hour x GPUs / tokens/s; ties: fewer GPUs) that still fits the inventory, placed first fit
    (placement.FirstFit), until its demand is served; FEASIBLE when every demand is (min_cost) or always
    (max_served), INFEASIBLE when a workload's demand does not fit (min_cost)."""
    t0 = time.perf_counter()
    fits = [FirstFit(t.rule) for t in inst.types]
    counts = [0] * len(inst.options)
    short = False
    for w in range(len(inst.demand)):
        ks = sorted((k for k, o in enumerate(inst.options) if o.workload == w and o.rate > 0),
                    key=lambda k: (inst.types[inst.options[k].gpu_type].cost_per_gpu_hour * inst.options[k].gpus
                                   / inst.options[k].tokens_per_s, inst.options[k].gpus, k))
        need, got = inst.need(w), 0
        while got < need:
            k = next((k for k in ks if fits[inst.options[k].gpu_type].add(inst.options[k].gpus)), None)
            if k is None:
                short = True
                break
            counts[k] += 1
            got += inst.options[k].rate
    nodes = [f.nodes_used for f in fits]
    cost = sum(x * inst.price(c) for c, x in enumerate(nodes))
    status = "INFEASIBLE" if short and inst.objective == "min_cost" else "FEASIBLE"
    return FleetSolution(status, counts, nodes, [], cost, sum(inst.served(counts)), wall_s=time.perf_counter() - t0)
