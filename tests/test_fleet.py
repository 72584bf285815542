"""planner fleet: many workloads on a priced, mixed inventory.

- the placement rule (planner.placement): patterns, the exact packer, first fit, the copies that make the option
  reduction exact;
- the fleet's integer program: CP-SAT against the enumeration oracle on seeded random instances (min_cost and
  max_served), the greedy baseline never cheaper, every placement re-checked;
- whole fleets: CP-SAT against `method='exhaustive'` on small random fleets (options built independently: the
  planner's tables and closed forms against plain enumeration), the demand served, every SLA held by the float
  model, the inventory and the placement respected, max_served on a short inventory, the day curve's hours each
  the optimum of its own demand;
- the command line: text, JSON, and one-line errors.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from clirun import error_line, run, run_json

from planner import disagg, load_cluster, make_problem, rules
from planner.errors import InfeasibleError
from planner.fleetmodel import FleetInstance, exhaustive, greedy, solve_cpsat
from planner.fleetoptions import GpuType, Option, _agg_oracle, _agg_table, _disagg_oracle, _disagg_units
from planner.fleetplan import FleetOptions, cost_curve, fleet, load_fleet
from planner.placement import FirstFit, NodeRule, check_placement, min_nodes, pack, patterns, place_exact
from planner.search import Searcher
from planner.space import Space
from planner.specs import Parallel

REPO = Path(__file__).resolve().parents[1]
FLEETS = REPO / "fleets"
EXAMPLE = FLEETS / "example.yaml"
H100, GB200, L40S = (load_cluster(n) for n in ("h100-sxm", "gb200-nvl72", "l40s"))
GRID = {"micro_batches": "4,16,64", "chunks": "512,2048"}
"""Short batch grids for the fleets the oracle enumerates."""


def write(tmp_path: Path, data: dict, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- placement -------------------------------------------------------------------------------------------------


def multisets(sizes: list[int], capacity: int):
    """Every multiset of sizes (counts per size) with sum <= capacity, by brute force."""
    ranges = [range(capacity // s + 1) for s in sizes]
    for counts in itertools.product(*ranges):
        if sum(c * s for c, s in zip(counts, sizes)) <= capacity:
            yield counts


@pytest.mark.parametrize("sizes, capacity", [([1, 2, 4], 8), ([3, 5], 8), ([2, 3, 6, 7], 8), ([1, 2, 3, 4, 5, 6, 7, 8],
                                                                                                8), ([2, 4, 16], 18)])
def test_patterns_are_the_maximal_contents_of_a_node(sizes, capacity):
    pats = patterns(sizes, capacity)
    assert pats and len(set(pats)) == len(pats)
    for p in pats:  # fits, and nothing more does
        room = capacity - sum(c * s for c, s in zip(p, sizes))
        assert 0 <= room < min(sizes)
    for m in multisets(sizes, capacity):  # every content is part of a pattern
        assert any(all(a <= b for a, b in zip(m, p)) for p in pats), m


def brute_fits(items: list[int], bins: list[int]) -> bool:
    for where in itertools.product(range(len(bins)), repeat=len(items)):
        load = [0] * len(bins)
        for i, b in zip(items, where):
            load[b] += i
        if all(x <= c for x, c in zip(load, bins)):
            return True
    return False


def test_the_exact_packer_agrees_with_brute_force():
    rng = random.Random(7)
    for _ in range(300):
        bins = [rng.choice([4, 8, 18]) for _ in range(rng.randint(1, 3))]
        items = [rng.randint(1, max(bins)) for _ in range(rng.randint(0, 6))]
        got = pack(items, bins)
        assert (got is not None) == brute_fits(items, bins), (items, bins)
        if got is not None:
            assert sorted(i for b in got for i in b) == list(range(len(items)))
            assert all(sum(items[i] for i in b) <= c for b, c in zip(got, bins))


def test_the_rule_of_each_node_unit():
    hgx, nvl, pcie = NodeRule.of(H100, 32), NodeRule.of(GB200, 88), NodeRule.of(L40S, 16)
    assert (hgx.node_gpus, hgx.domain_nodes, hgx.nodes, hgx.domains) == (8, 1, 4, [1, 1, 1, 1])
    assert [hgx.kind(g) for g in (1, 8, 9, 64)] == ["small", "small", "whole", "whole"]
    assert hgx.items(12) == [1, 1] and hgx.nodes_of(12) == 2
    assert (nvl.node_gpus, nvl.domain_nodes, nvl.domains) == (4, 18, [18, 4])  # one NVL72 rack and 4 trays
    assert [nvl.kind(g) for g in (4, 5, 72, 73)] == ["small", "block", "block", "whole"]
    assert nvl.items(8) == [2] and nvl.items(100) == [18, 18] and nvl.most(100) == 0 and nvl.most(8) == 9 + 2
    assert pcie.domain_nodes == 1 and pcie.kind(2) == "small"  # a PCIe GPU is its own domain: the server is the unit


@pytest.mark.parametrize("cluster, gpus", [(H100, 32), (GB200, 160), (L40S, 24)])
def test_copies_fit_where_the_larger_replica_was(cluster, gpus):
    """The monotone rule the option reduction rests on: `copies(small, big)` replicas of `small` GPUs pack into the
    nodes (and domain) one replica of `big` GPUs occupies."""
    rule = NodeRule.of(cluster, gpus)
    sizes = sorted({1, 2, 3, 4, 5, 8, 12, 16, 24, 36, 72, 100, 144} & set(range(1, gpus + 1)))
    for small, big in itertools.combinations_with_replacement(sizes, 2):
        n = rule.copies(small, big)
        assert n >= 1, (small, big)
        footprint = 1 if rule.kind(big) == "small" else rule.nodes_of(big)
        own = NodeRule(rule.cluster, rule.node_gpus, rule.domain_nodes, footprint)  # just the big replica's nodes
        if rule.kind(big) == "small":
            assert n * small <= big
        else:
            assert min_nodes(own, [small] * n) is not None, (small, big, n)


def test_first_fit_never_beats_the_exact_packing():
    rng = random.Random(3)
    for _ in range(200):
        rule = rng.choice([NodeRule.of(H100, 24), NodeRule.of(GB200, 80)])
        ff, placed = FirstFit(rule), []
        for _ in range(rng.randint(1, 12)):
            g = rng.choice([1, 2, 3, 4, 8, 12, 16, 40])
            if ff.add(g):
                placed.append(g)
        best = min_nodes(rule, placed)
        assert best is not None and best <= ff.nodes_used <= rule.nodes
        labels = [(f"r{i}", g) for i, g in enumerate(placed)]
        assert check_placement(rule, place_exact(rule, labels), dict(labels)) == []


# --- the integer program against the oracle ------------------------------------------------------------------------


P = make_problem(model="llama-3.1-8b", cluster="h100-sxm", gpus=1)


def random_instance(rng: random.Random, objective: str) -> FleetInstance:
    """Options of made-up sizes and rates on one or two GPU types (the integer program alone)."""
    kinds = rng.sample([(H100, [1, 2, 3, 4, 5, 8, 16]), (GB200, [1, 2, 4, 8, 12, 72, 80]), (L40S, [1, 2, 4, 8])],
                       rng.randint(1, 2))
    types = []
    for c, _ in kinds:
        nodes = rng.randint(1, 2) if c.gpus_per_node == 8 else rng.choice([2, 5, 20])
        types.append(GpuType(c, nodes * c.gpus_per_node, rng.choice([1.0, 2.2, 2.5, 4.5])))
    options = []
    for w in range(rng.randint(1, 2)):
        for t, (_, sizes) in enumerate(kinds):
            for _ in range(rng.randint(1, 2)):
                g = rng.choice([s for s in sizes if s <= types[t].gpus])
                tokens = rng.uniform(100, 1000) * g ** rng.uniform(0.6, 1.2)
                options.append(Option(w, t, "agg", g, tokens, 0.02, 0.5, f"g{g}-{int(tokens)}", P, Parallel(tp=1), 1,
                                      128))
    workloads = sorted({o.workload for o in options})
    demand = [rng.uniform(0.3, 2.0) * max(o.tokens_per_s for o in options if o.workload == w) for w in workloads]
    return FleetInstance(types, options, demand, objective, [f"w{w}" for w in workloads])


def placement_errors(inst: FleetInstance, sol) -> list[str]:
    out = []
    for c, t in enumerate(inst.types):
        sizes = {inst.label(k): o.gpus for k, o in enumerate(inst.options) if o.gpu_type == c}
        out += check_placement(t.rule, sol.placement[c], sizes)
        used = sum(n for groups in sol.placement[c] for n, _ in groups)
        if used != sol.nodes[c] or used > t.rule.nodes:
            out.append(f"{t.name}: {used} nodes placed, {sol.nodes[c]} counted")
    return out


@pytest.mark.parametrize("objective", ["min_cost", "max_served"])
def test_cpsat_equals_the_enumeration_on_random_instances(objective):
    rng = random.Random(11 if objective == "min_cost" else 12)
    compared = 0
    for _ in range(40):
        inst = random_instance(rng, objective)
        a, b = solve_cpsat(inst), exhaustive(inst)
        assert (a.status == "INFEASIBLE") == (b.status == "INFEASIBLE")
        if a.status == "INFEASIBLE":
            continue
        assert a.status == b.status == "OPTIMAL"
        assert (a.cost, a.served) == (b.cost, b.served), (inst.demand, a.counts, b.counts)
        assert a.cost_bound == a.cost and a.served_bound == a.served
        assert placement_errors(inst, a) == [] and placement_errors(inst, b) == []
        if objective == "min_cost":  # every demand served, in the model's integers
            assert all(s >= inst.need(w) for w, s in enumerate(inst.served(a.counts)))
        g = greedy(inst)
        if g.status == "FEASIBLE":  # the baseline is never better
            assert (-g.served, g.cost) >= (-a.served, a.cost)
        compared += 1
    assert compared >= 25


# --- whole fleets -------------------------------------------------------------------------------------------------


def float_check(result, spec: dict) -> None:
    """Independently of the fleet's own check: every deployment re-checked by the rule checker on the float model
    (SLA and TTFT included), the demand served, the inventory and each node's GPUs respected."""
    workloads = {w["name"]: w for w in spec["workloads"]}
    for w in result.workloads:
        given = workloads[w.name]
        assert sum(d.requests_per_s for d in w.deployments) >= w.served_req_per_s * (1 - 1e-12)
        if result.objective == "min_cost":
            assert w.served_req_per_s == pytest.approx(w.demand_req_per_s)
        for d in w.deployments:
            plan = d.plan
            p = make_problem(model=given["model"], cluster=d.cluster, gpus=d.gpus_per_replica, isl=given["isl"],
                             osl=given["osl"], precision=given.get("precision", "fp4"),
                             min_tokens_per_s_per_user=w.sla.min_tokens_per_s_per_user if w.sla else None,
                             max_ttft_s=w.sla.max_ttft_s if w.sla else None,
                             tpot_percentile=w.sla.tpot_percentile if w.sla else None,
                             ttft_percentile=w.sla.ttft_percentile if w.sla else None)
            if d.serving == "agg":
                assert rules.violations(p, plan.parallel, plan.batch.micro_batch, plan.batch.chunk_tokens) == []
            else:
                assert disagg.deployment_violations(
                    disagg.make_disagg(p), plan.prefill.parallel, plan.prefill.batch.chunk_tokens, plan.decode.parallel,
                    plan.decode.batch.micro_batch, p.sla.min_tokens_per_s_per_user if p.sla else None,
                    p.sla.max_ttft_s if p.sla else None) == []
            assert plan.gpus_used == d.gpus_per_replica
            assert d.requests_per_s == pytest.approx(d.replicas * plan.metrics.requests_per_s, rel=1e-9)
    for t in result.gpu_types:
        assert t.gpus_used <= t.gpus_inventory and t.gpus_busy <= t.gpus_used
        assert sum(g.count * g.nodes_each for g in t.placement) == t.nodes_used <= t.nodes_inventory
        sizes = {f"{w.name}: {d.label}": d.gpus_per_replica for w in result.workloads for d in w.deployments
                 if d.cluster == t.cluster}
        for g in t.placement:
            if g.nodes_each == 1:  # one node: its replicas' GPUs fit in it
                assert sum(sizes[x] for x in g.replicas) <= t.gpus_per_node
            else:  # a replica over whole nodes
                assert len(g.replicas) == 1 and sizes[g.replicas[0]] <= g.nodes_each * t.gpus_per_node
        busy = sum(d.gpus for w in result.workloads for d in w.deployments if d.cluster == t.cluster)
        assert busy == t.gpus_busy
    assert result.cost_per_hour == pytest.approx(sum(t.cost_per_hour for t in result.gpu_types))


def test_the_example_fleet(tmp_path):
    spec = yaml.safe_load(EXAMPLE.read_text())
    r = fleet(EXAMPLE)
    assert r.solver.status == "OPTIMAL" and r.solver.gap == 0 and r.solver.checked
    assert r.cost_per_hour == pytest.approx(r.solver.cost_bound_per_hour)
    float_check(r, spec)
    assert r.greedy.feasible and r.greedy.cost_per_hour >= r.cost_per_hour
    assert r.cost_per_million_tokens == pytest.approx(r.cost_per_hour / (r.served_tokens_per_s * 3600) * 1e6)


MODELS = ["llama-3.1-8b", "qwen3-32b", "gpt-oss-20b", "qwen3-30b-a3b", "llama-3.1-70b"]


def random_fleet(rng: random.Random) -> dict:
    inventory = [{"cluster": c, "gpus": g, "cost_per_gpu_hour": rng.choice([1.5, 2.2, 3.0, 4.5])}
                 for c, g in rng.sample([("h100-sxm", 8), ("b200", 8), ("l40s", 8), ("gb200-nvl72", 8),
                                         ("mi300x", 8)], 2)]
    workloads = []
    for i in range(rng.randint(1, 2)):
        workloads.append({"name": f"w{i}", "model": rng.choice(MODELS), "isl": rng.choice([512, 2048]),
                          "osl": rng.choice([128, 512]), "sla": f"{rng.choice([10, 30, 60])}tok/s",
                          "demand": f"{rng.choice([0.5, 2, 5, 10])}req/s", "precision": rng.choice(["fp8", "fp4"]),
                          "serving": rng.choice(["agg", "auto"]), **GRID})
        if rng.random() < 0.3:
            workloads[-1]["ttft"] = "1s"
    return {"inventory": inventory, "workloads": workloads, "objective": rng.choice(["min_cost", "max_served"])}


def test_cpsat_equals_exhaustive_on_random_small_fleets():
    """The whole chain twice: the planner's tables and closed forms with the dominance reduction and CP-SAT, against
    plain enumeration of replicas and units and of replica counts."""
    rng = random.Random(5)
    agreed = 0
    for _ in range(8):
        spec = random_fleet(rng)
        try:
            a = fleet(spec)
        except InfeasibleError as e:
            with pytest.raises(InfeasibleError) as other:
                fleet(spec, method="exhaustive")
            assert other.value.reason == e.reason
            continue
        b = fleet(spec, method="exhaustive")
        assert a.solver.status == b.solver.status == "OPTIMAL"
        assert a.cost_per_hour == pytest.approx(b.cost_per_hour, rel=1e-12)
        assert a.served_tokens_per_s == pytest.approx(b.served_tokens_per_s, rel=1e-9)
        assert a.solver.options <= b.solver.options  # the reduction keeps a subset of the Pareto set
        float_check(a, spec)
        float_check(b, spec)
        agreed += 1
    assert agreed >= 5


@pytest.mark.parametrize("model, cluster, gpus, ttft", [("llama-3.1-8b", "h100-sxm", 8, None),
                                                       ("qwen3-30b-a3b", "b200", 8, 1.0),
                                                       ("llama-3.1-70b", "gb200-nvl72", 16, 2.0)])
def test_replicas_and_units_match_plain_enumeration(model, cluster, gpus, ttft):
    """Per replica size the planner's table and the oracle find the same best aggregated replica; the closed-form
    disaggregated units reach, for every GPU count, what the enumeration of every worker pair reaches."""
    from dataclasses import replace

    q = make_problem(model=model, cluster=cluster, gpus=gpus, isl=2048, osl=256, precision="fp8",
                     min_tokens_per_s_per_user=30, max_ttft_s=ttft)
    space = Space.of(q, (512, 2048), (4, 16, 64))
    one = replace(space, max_dp=1)
    a = {par.replica_gpus: tokens for par, _, _, tokens, _, _ in _agg_table(q, Searcher(q, one).table)}
    b = {par.replica_gpus: tokens for par, _, _, tokens, _, _ in _agg_oracle(q, one, math.inf)}
    assert a.keys() == b.keys() and all(a[g] == pytest.approx(b[g], rel=1e-12) for g in a)

    def front(units):
        best, out = 0.0, {}
        for pre, _, dec, _, tokens, _ in sorted(units, key=lambda u: u[0].gpus_used + u[2].gpus_used):
            best = max(best, tokens)
            out[pre.gpus_used + dec.gpus_used] = best
        return out

    closed, plain = front(_disagg_units(q, space, None, math.inf)), front(_disagg_oracle(q, space, math.inf))
    sizes = sorted(set(closed) | set(plain))
    assert sizes
    top = {"closed": 0.0, "plain": 0.0}
    for g in sizes:  # the best unit of at most g GPUs
        top["closed"] = max(top["closed"], closed.get(g, 0.0))
        top["plain"] = max(top["plain"], plain.get(g, 0.0))
        assert top["closed"] == pytest.approx(top["plain"], rel=1e-9), g


def test_max_served_on_a_short_inventory(tmp_path):
    spec = {"inventory": [{"cluster": "h100-sxm", "gpus": 8, "cost_per_gpu_hour": 2.2}],
            "workloads": [{"name": "chat", "model": "llama-3.1-70b", "isl": 2048, "osl": 512, "sla": "30tok/s",
                           "demand": "40req/s", "precision": "fp8", **GRID},
                          {"name": "small", "model": "llama-3.1-8b", "isl": 1024, "osl": 256, "sla": "80tok/s",
                           "demand": "100req/s", "precision": "fp8", **GRID}],
            "objective": "max_served"}
    r = fleet(spec)
    assert r.solver.status == "OPTIMAL" and r.served_tokens_per_s < r.demand_tokens_per_s
    assert r.gpu_types[0].gpus_used == 8  # all of it
    float_check(r, spec)
    oracle = fleet(spec, method="exhaustive")
    assert r.served_tokens_per_s == pytest.approx(oracle.served_tokens_per_s, rel=1e-9)
    assert r.cost_per_hour == pytest.approx(oracle.cost_per_hour)
    assert r.greedy.served_tokens_per_s <= r.served_tokens_per_s * (1 + 1e-12)
    spec["objective"] = "min_cost"  # the same fleet cannot serve everything: one line saying what fits
    with pytest.raises(InfeasibleError) as e:
        fleet(spec)
    assert e.value.reason == "inventory" and "max_served" in str(e.value) and "chat" in str(e.value)
    line = error_line("fleet", str(write(tmp_path, spec)))
    assert "cannot serve every workload's demand" in line and "max_served" in line


def test_the_day_curve_is_each_hour_optimum(tmp_path):
    chat = [2, 2, 2, 2, 2, 2, 4, 6, 8, 8, 8, 8, 8, 8, 8, 8, 6, 6, 4, 4, 4, 2, 2, 2]
    spec = {"inventory": [{"cluster": "h100-sxm", "gpus": 16, "cost_per_gpu_hour": 2.2},
                          {"cluster": "b200", "gpus": 8, "cost_per_gpu_hour": 4.5}],
            "workloads": [{"name": "chat", "model": "llama-3.1-70b", "isl": 2048, "osl": 512, "sla": "30tok/s",
                           "demand": chat, "precision": "fp8", **GRID},
                          {"name": "small", "model": "llama-3.1-8b", "isl": 1024, "osl": 256, "sla": "80tok/s",
                           "demand": "20req/s", "precision": "fp8", **GRID}]}
    day = fleet(spec)
    assert len(day.hours) == 24 and day.solver.hours_optimal == 24 and day.solver.status == "OPTIMAL"
    assert day.cost_per_day == pytest.approx(sum(h.cost_per_hour for h in day.hours))
    assert day.cost_per_hour == pytest.approx(day.cost_per_day / 24)
    single = {}
    for value in sorted(set(chat)):
        one = json.loads(json.dumps(spec))
        one["workloads"][0]["demand"] = f"{value}req/s"
        single[value] = fleet(one).cost_per_hour
    assert [h.cost_per_hour for h in day.hours] == pytest.approx([single[v] for v in chat])
    for t in day.gpu_types:  # the peak inventory is the busiest hour's
        assert t.gpus_by_hour == [h.gpus_used[t.cluster] for h in day.hours]
        assert t.gpus_used == max(t.gpus_by_hour) == t.gpus_by_hour[t.peak_hour] <= t.gpus_inventory
    for w in day.workloads:
        for d in w.deployments:
            assert len(d.replicas_by_hour) == 24 and d.replicas == max(d.replicas_by_hour)
    g = day.greedy
    assert not g.feasible or g.cost_per_hour >= day.cost_per_hour * (1 - 1e-12)


def test_percentile_slas_hold_for_every_deployment():
    spec = {"inventory": [{"cluster": "h200-sxm", "gpus": 16, "cost_per_gpu_hour": 3.1}],
            "workloads": [{"name": "mlperf", "model": "llama-3.1-70b", "isl": 700, "osl": 300, "sla": "40ms@p99",
                           "ttft": "450ms@p99", "demand": "5req/s", "precision": "fp8", "serving": "agg", **GRID}]}
    r = fleet(spec)
    float_check(r, spec)
    for d in r.workloads[0].deployments:
        q = d.plan.metrics.percentiles
        assert q.tpot_ms["p99"] <= 40.0 and q.ttft_ms["p99"] <= 450.0


def test_blocks_of_trays_stay_in_one_rack():
    """On GB200 NVL72 a replica of more than a tray takes whole trays of one rack: a 405B model
    at bf16 needs several trays per replica."""
    spec = {"inventory": [{"cluster": "gb200-nvl72", "gpus": 80, "cost_per_gpu_hour": 6.0}],
            "workloads": [{"name": "big", "model": "llama-3.1-405b", "isl": 1024, "osl": 256, "sla": "20tok/s",
                           "demand": "3req/s", "precision": "bf16", "serving": "agg", **GRID}]}
    r = fleet(spec)
    float_check(r, spec)
    t = r.gpu_types[0]
    assert t.node_unit == "tray" and any(g.nodes_each > 1 for g in t.placement)
    assert all(g.nodes_each <= 18 for g in t.placement)  # a block never leaves its rack


def test_cost_against_demand_rises_and_greedy_is_never_cheaper():
    points = cost_curve(EXAMPLE, [0.25, 0.5, 1.0, 2.0, 50.0])
    costs = [p.cost_per_hour for p in points]
    assert costs[-1] is None and points[-1].status == "INFEASIBLE"  # 50 times the demand does not fit
    assert all(a <= b for a, b in zip(costs[:-2], costs[1:-1]))
    assert all(p.greedy_cost_per_hour is None or p.greedy_cost_per_hour >= p.cost_per_hour for p in points[:-1])


def test_the_shipped_fleets_are_valid():
    files = sorted(FLEETS.glob("*.yaml"))
    assert {f.name for f in files} >= {"example.yaml", "three-by-three.yaml", "day.yaml"}
    for f in files:
        load_fleet(f)
    assert yaml.safe_load(EXAMPLE.read_text())["workloads"][0]["demand"] == "12req/s"


def test_options_are_built_once_for_many_demands():
    opts = FleetOptions.of(EXAMPLE)
    a = fleet(options=opts)
    b = fleet(EXAMPLE)
    assert a.cost_per_hour == b.cost_per_hour and a.solver.options == b.solver.options


# --- the command line ------------------------------------------------------------------------------------------------


def test_the_command_prints_the_plan_and_its_json():
    r = run("fleet", str(EXAMPLE))
    assert r.exit_code == 0, r.stderr
    text = r.stdout
    assert "solver: cpsat OPTIMAL" in text and "greedy (per workload in turn" in text and "placement h100-sxm" in text
    data = run_json("fleet", str(EXAMPLE))
    assert data["solver"]["status"] == "OPTIMAL" and data["cost_per_hour"] > 0
    for w in data["workloads"]:
        assert {"name", "demand_req_per_s", "served_req_per_s", "deployments"} <= set(w)
        assert all({"cluster", "gpus"} <= set(d) for d in w["deployments"])
    schema = json.loads(run("schema", "--of", "fleet").stdout)
    assert {"workloads", "cost_per_hour", "solver"} <= set(schema["properties"])
    assert {"inventory", "workloads", "objective"} <= set(json.loads(run("schema", "--of", "fleet-file").stdout)
                                                          ["properties"])


def test_the_command_draws_the_cost_chart(tmp_path):
    out = tmp_path / "cost.png"
    r = run("fleet", str(EXAMPLE), "--plot", str(out))
    assert r.exit_code == 0, r.stderr
    assert out.stat().st_size > 10_000 and f"chart written to {out}" in r.stdout


BASE = {"inventory": [{"cluster": "h100-sxm", "gpus": 8, "cost_per_gpu_hour": 2.2}],
        "workloads": [{"name": "chat", "model": "llama-3.1-8b", "isl": 1024, "osl": 256, "sla": "30tok/s",
                       "demand": "4req/s", "precision": "fp8"}]}


def edited(where: str, key: str, value) -> dict:
    spec = json.loads(json.dumps(BASE))
    item = spec["inventory"][0] if where == "inventory" else spec["workloads"][0]
    if value is None:
        item.pop(key)
    else:
        item[key] = value
    return spec


@pytest.mark.parametrize("spec, words", [
    (edited("workload", "model", "llama-3.1-7b"), ["workload 'chat'", "unknown model", "llama-3.1-8b"]),
    (edited("inventory", "cluster", "h100-sxx"), ["inventory 'h100-sxx'", "unknown cluster", "h100-sxm"]),
    (edited("workload", "isl", None), ["workload 'chat'", "field 'isl'", "required"]),
    (edited("workload", "demand", -4), ["workload 'chat'", "field 'demand'", "above 0"]),
    (edited("workload", "demand", "-4req/s"), ["field 'demand'", "not a demand"]),
    (edited("workload", "demand", [1, 2]), ["24 hourly values", "got 2"]),
    (edited("workload", "sla", "30x"), ["field 'sla'", "not a speed"]),
    (edited("workload", "sla", "900tok/s"), ["workload 'chat'", "no GPU type", "361.2", "sla of at most"]),
    (edited("workload", "ttft", "1ms"), ["workload 'chat'", "TTFT limit", "ttft of at least"]),
    (edited("workload", "precision", "fp9"), ["workload 'chat'", "unknown precision"]),
    (edited("workload", "colour", "red"), ["field 'colour'", "not permitted"]),
    (edited("inventory", "gpus", 12), ["12 GPUs is not a whole number of 8-GPU nodes", "give 8 or 16"]),
    (edited("inventory", "cost_per_gpu_hour", -1), ["field 'cost_per_gpu_hour'"]),
])
def test_bad_fleets_end_in_one_line(tmp_path, spec, words):
    line = error_line("fleet", str(write(tmp_path, spec)))
    for w in words:
        assert w in line, line


def test_bad_files_end_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inventory: [\n")
    assert "malformed YAML" in error_line("fleet", str(bad))
    assert "cannot read" in error_line("fleet", str(tmp_path / "missing.yaml"))
    twice = json.loads(json.dumps(BASE))
    twice["workloads"].append(dict(twice["workloads"][0]))
    assert "unique" in error_line("fleet", str(write(tmp_path, twice)))
    assert "--time-limit" in error_line("fleet", str(EXAMPLE), "--time-limit", "0")


def test_solve_does_not_import_the_fleet():
    code = ("import sys, planner.cli; from click.testing import CliRunner; "
            "CliRunner().invoke(planner.cli.main, ['solve', '--help']); "
            "sys.exit(1 if any(m.startswith('planner.fleet') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_the_api_exports_fleet():
    import planner

    assert planner.fleet is fleet and "fleet" in planner.__all__
