"""Studies: the frontier (against the oracle, every layout's own curve and single solves), compare,
capacity sizing (against its enumeration), charts, and the CLI commands over them."""

from __future__ import annotations

import csv
import json
import math
import re

import jsonschema
import pytest
from clirun import error_line, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner import InfeasibleError, solve, studies
from planner.cli import parse_demand, parse_range
from planner.search import make_problem
from planner.specs import Calibration, Plan

CAL = Calibration()  # unfitted factors: cases do not move when the shipped calibration is refitted


def _p(model="llama-3.1-8b", cluster="h100-sxm", gpus=8, isl=1000, osl=200, precision="fp8", sla=None, ttft=None):
    return make_problem(model=model, cluster=cluster, gpus=gpus, isl=isl, osl=osl, precision=precision,
                        min_tokens_per_s_per_user=sla or 1.0, max_ttft_s=ttft, calibration=CAL)


FRONTIER_CASES = [
    dict(),  # dense, tp/dp only
    dict(model="qwen3-30b-a3b", gpus=8, isl=2000, osl=500),  # MoE: attention-DP and EP layouts
    dict(model="mixtral-8x7b", cluster="a100-sxm", gpus=8, isl=2000, osl=500, precision="bf16", ttft=1.0),
]


@pytest.fixture(scope="module", params=range(len(FRONTIER_CASES)), ids=lambda i: str(FRONTIER_CASES[i]))
def pair(request):
    """(problem, CP-SAT frontier, oracle frontier) of one case, 12 levels, with every layout's curve."""
    p = _p(**FRONTIER_CASES[request.param])
    fast = studies.frontier(p, points=12, all_layouts=True)
    slow = studies.frontier(p, points=12, method="exhaustive")
    return p, fast, slow


def test_frontier_matches_the_oracle_at_every_level(pair):
    _, fast, slow = pair
    assert [x.target_tokens_per_s_per_user for x in fast.points] == pytest.approx(
        [x.target_tokens_per_s_per_user for x in slow.points], rel=1e-6)
    for a, b in zip(fast.points, slow.points):
        assert a.metrics.tokens_per_s_per_gpu == pytest.approx(b.metrics.tokens_per_s_per_gpu, rel=1e-3)
        assert a.solver.status == "OPTIMAL"


def test_frontier_is_monotone_and_every_plan_meets_its_level(pair):
    p, f, _ = pair
    thr = [x.metrics.tokens_per_s_per_gpu for x in f.points]
    assert all(a >= b for a, b in zip(thr, thr[1:])), thr  # more interactivity never buys more throughput
    targets = [x.target_tokens_per_s_per_user for x in f.points]
    assert targets == sorted(targets) and len(targets) == 12
    assert targets[0] == pytest.approx(f.lowest_tokens_per_s_per_user)
    for x in f.points:
        assert x.metrics.tokens_per_s_per_user >= x.target_tokens_per_s_per_user * (1 - 1e-9)
        assert x.memory.per_gpu_bytes <= x.memory.usable_bytes
        assert x.sla.min_tokens_per_s_per_user == x.target_tokens_per_s_per_user
        if p.sla.max_ttft_s:
            assert x.metrics.ttft_ms <= p.sla.max_ttft_s * 1000 * (1 + 1e-9)
    flags = [x.new_layout for x in f.points]
    keys = [x.parallel.key() for x in f.points]
    assert flags == [True] + [a != b for a, b in zip(keys, keys[1:])]
    assert f.solves <= len(f.points) + 2  # levels an earlier plan meets need no search


def test_frontier_dominates_every_layouts_own_curve(pair):
    """No layout, at any batch and chunk, beats the frontier at an SLA level it reaches."""
    _, f, _ = pair
    assert f.valid_layouts == len(f.layouts) > 1
    for curve in f.layouts:
        us = [c.tokens_per_s_per_user for c in curve.points]
        assert us == sorted(us)
        thr = [c.tokens_per_s_per_gpu for c in curve.points]
        assert all(a > b for a, b in zip(thr, thr[1:]))  # a Pareto curve: faster means less throughput
        for c in curve.points:
            for x in f.points:
                if x.target_tokens_per_s_per_user <= c.tokens_per_s_per_user:
                    assert x.metrics.tokens_per_s_per_gpu >= c.tokens_per_s_per_gpu * (1 - 1e-3)
    best = max(c.tokens_per_s_per_gpu for curve in f.layouts for c in curve.points)
    assert f.points[0].metrics.tokens_per_s_per_gpu == pytest.approx(best, rel=1e-3)


@pytest.fixture(scope="module")
def moe_frontier():
    p = _p(model="qwen3-30b-a3b", isl=2000, osl=500)
    return p, studies.frontier(p, points=10)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.floats(min_value=0.0, max_value=1.0))
def test_a_solve_between_two_levels_lies_between_their_throughputs(moe_frontier, share):
    """For any SLA s between levels a < s < b: frontier(b) <= solve(s) <= frontier(a)."""
    p, f = moe_frontier
    lo, hi = f.lowest_tokens_per_s_per_user, f.highest_tokens_per_s_per_user
    s = lo * (hi / lo) ** (0.001 + share * 0.998)  # inside: at the very ends TPOT rounding decides
    best = solve(p.model_copy(update={"sla": p.sla.model_copy(update={"min_tokens_per_s_per_user": s})}))[0]
    below = [x for x in f.points if x.target_tokens_per_s_per_user <= s]
    above = [x for x in f.points if x.target_tokens_per_s_per_user >= s]
    thr = best.metrics.tokens_per_s_per_gpu
    assert thr <= below[-1].metrics.tokens_per_s_per_gpu * (1 + 1e-3)
    assert thr >= above[0].metrics.tokens_per_s_per_gpu * (1 - 1e-3)


def test_sla_range_extra_levels_and_unreachable():
    p = _p()
    f = studies.frontier(p, points=3, sla_range=(20.0, 5000.0), extra=(33.0,))
    targets = [x.target_tokens_per_s_per_user for x in f.points]
    assert 33.0 in targets and targets[0] == pytest.approx(20.0)
    assert f.unreachable == [5000.0]  # far above what 8 H100 reach for Llama-3.1-8B
    assert f.at(33.0) is not None and f.at(34.0) is None


def test_frontier_of_a_model_that_does_not_fit_says_where_it_fits():
    with pytest.raises(InfeasibleError, match="fits on"):
        studies.frontier(_p(model="gpt-moe-1.8t", cluster="h100-sxm", gpus=8, isl=4000, osl=1000), points=3)


def test_compare_ratios_and_grid():
    a = _p(model="llama-3.1-8b", cluster="h100-sxm")
    b = _p(model="llama-3.1-8b", cluster="h200-sxm")
    c = studies.compare([a, b], at=40.0, points=4, levels=(40.0, 1e5))
    assert [r.case for r in c.rows] == [f.case for f in c.frontiers]
    assert c.rows[0].ratio == pytest.approx(1.0)
    t0, t1 = (r.tokens_per_s_per_gpu for r in c.rows)
    assert c.rows[1].ratio == pytest.approx(t1 / t0)
    assert t1 > t0  # more HBM bandwidth and capacity per GPU
    assert c.grid[0][0] == pytest.approx(t0) and c.grid[1][0] == pytest.approx(t1)
    assert c.grid[0][1] is None and c.grid[1][1] is None  # 100,000 tokens/s/user: unreachable


SIZE_CASES = [
    dict(sla=30.0),  # Llama-3.1-8B on H100 (8-GPU nodes)
    dict(model="llama-3.1-70b", sla=25.0, isl=2000, osl=500, ttft=2.0),
    dict(model="qwen3-30b-a3b", cluster="gb200-nvl72", precision="fp4", sla=60.0, isl=2000, osl=500),  # 4-GPU trays
    dict(model="gpt-moe-1.8t", cluster="gb200-nvl72", precision="fp4", sla=20.0, isl=32768, osl=1024),
]


@pytest.mark.parametrize("case", SIZE_CASES, ids=lambda c: f"{c.get('model', 'llama-3.1-8b')}-{c['sla']}")
@pytest.mark.parametrize("demand", [0.7, 13.0, 250.0])
def test_size_matches_its_enumeration(case, demand):
    p = _p(**case)
    fast = studies.size(p, demand_requests_per_s=demand, replica_limit=64)
    slow = studies.size(p, demand_requests_per_s=demand, replica_limit=64, method="exhaustive")
    assert (fast.gpus, fast.gpus_used) == (slow.gpus, slow.gpus_used)
    node = p.cluster.gpus_per_node
    assert fast.gpus % node == 0 and fast.nodes * node == fast.gpus
    assert fast.gpus - node < fast.gpus_used <= fast.gpus  # whole nodes, none spare
    assert fast.capacity_tokens_per_s >= demand * p.workload.osl * (1 - 1e-6)
    assert fast.plan.metrics.tokens_per_s_per_user >= case["sla"] * (1 - 1e-9)
    assert fast.plan.parallel.dp == fast.replicas
    assert fast.node_unit == ("tray" if p.cluster.name == "gb200-nvl72" else "node")


def test_size_grows_with_demand_and_says_when_the_sla_is_out_of_reach():
    p = _p(sla=30.0)
    sizes = [studies.size(p, demand_requests_per_s=d).gpus for d in (1, 10, 100, 1000)]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    same = studies.size(p, demand_tokens_per_s=10 * p.workload.osl)
    assert same.gpus == sizes[1] and same.demand_requests_per_s == pytest.approx(10)
    with pytest.raises(InfeasibleError, match="unreachable"):
        studies.size(_p(sla=5000.0), demand_requests_per_s=1)
    with pytest.raises(InfeasibleError, match="more than 8"):
        studies.size(p, demand_requests_per_s=1e6, max_gpus=8)


def test_plots_are_written_as_png_and_svg(tmp_path, moe_frontier):
    from planner.plots import plot_frontiers

    _, f = moe_frontier
    png = plot_frontiers([f], tmp_path / "f.png", at=20)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    svg = plot_frontiers([f, f], tmp_path / "f.svg")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and f.points[0].label in text


# --- CLI -------------------------------------------------------------------------------------------

SMALL = ["--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", "8", "--isl", "1000", "--osl", "200",
         "--precision", "fp8"]


def test_cli_frontier_table_json_csv_and_plot(tmp_path):
    r = run("frontier", *SMALL, "--points", "6", "--csv", tmp_path / "f.csv", "--plot", tmp_path / "f.png")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""  # no progress display when stderr is not a terminal
    lines = r.stdout.splitlines()
    assert lines[1].startswith("frontier:") and "6 SLA levels" in lines[1]
    assert lines[2].split()[:3] == ["SLA", "layout", "concurrency"]
    assert len([x for x in lines if x[:1].isdigit()]) == 6
    rows = list(csv.DictReader(open(tmp_path / "f.csv")))
    assert len(rows) == 6 and {"target_tokens_per_s_per_user", "layout", "tokens_per_s_per_gpu"} <= set(rows[0])
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads(run("frontier", *SMALL, "--points", "4", "--json").stdout)
    assert len(data["points"]) == 4
    for pt in data["points"]:
        Plan.model_validate({k: v for k, v in pt.items() if k in Plan.model_fields})  # the solve JSON's fields
        assert pt["target_tokens_per_s_per_user"] > 0


def test_cli_frontier_sla_range_and_all_layouts():
    r = run("frontier", *SMALL, "--sla-range", "30:50ms", "--points", "3", "--all-layouts")
    assert r.exit_code == 0, r.stderr
    levels = [line.split()[0] for line in r.stdout.splitlines()[4:7]]
    assert levels == ["20.0", "24.5", "30.0"]  # 50 ms per token = 20 tokens/s/user, log-spaced to 30
    assert re.search(r"valid layouts .*: \d+", r.stdout)


def test_cli_compare_pairs_repeated_options(tmp_path):
    r = run("compare", *SMALL[:2], "--cluster", "h100-sxm", "--cluster", "h200-sxm", "--isl", "1000", "--osl", "200",
            "--precision", "fp8", "--points", "3", "--at", "30tok/s", "--plot",
            tmp_path / "c.svg")
    assert r.exit_code == 0, r.stderr
    assert "ratio" in r.stdout and "1.00x" in r.stdout and "h200-sxm" in r.stdout
    assert "x the tokens/s/GPU of" in r.stdout
    assert "<svg" in (tmp_path / "c.svg").read_text()
    data = json.loads(run("compare", *SMALL, "--gpus", "4", "--points", "2", "--json").stdout)
    assert [f["gpus"] for f in data["frontiers"]] == [8, 4]  # --gpus given twice: two cases
    assert data["at_tokens_per_s_per_user"] == 20


def test_cli_size_json_and_table():
    data = json.loads(run("size", *SMALL, "--demand", "40req/s", "--sla", "30", "--json").stdout)
    assert data["gpus"] % 8 == 0 and data["plan"]["parallel"]["dp"] == data["replicas"]
    assert data["capacity_requests_per_s"] >= 40
    r = run("size", *SMALL, "--demand", "8000tok/s", "--sla", "30")
    assert r.exit_code == 0, r.stderr
    assert re.search(r"fewest GPUs: \d+ \(\d+ nodes? of 8 GPUs", r.stdout)


@pytest.mark.parametrize("args, needle", [
    (["frontier", *SMALL, "--plot", "x.gif"], "--plot"),
    (["frontier", *SMALL, "--sla-range", "5"], "LOW:HIGH"),
    (["compare", "--cluster", "h100-sxm", "--cluster", "h200-sxm", "--model", "llama-3.1-8b", "--model",
      "qwen3-32b", "--model", "llama-3.1-70b"], "pair up"),
    (["compare", "--cluster", "h900"], "h900"),
    (["size", *SMALL, "--demand", "40 apples"], "not a demand"),
    (["size", *SMALL, "--demand", "40req/s", "--sla", "5000"], "unreachable"),
])
def test_cli_study_errors_are_one_line(args, needle):
    assert needle in error_line(*args)


def test_parsers():
    assert parse_demand("40req/s") == (40.0, None) and parse_demand("5e4 tok/s") == (None, 50000.0)
    assert parse_range("5:200") == (5.0, 200.0) and parse_range("50ms:10ms") == (20.0, 100.0)


def test_progress_is_drawn_only_on_a_terminal(monkeypatch, capsys):
    from planner import cli

    bar = cli._Progress(quiet=False)
    bar(1, 2, "half")
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    bar = cli._Progress(quiet=False)
    bar(1, 2, "half")
    bar.close()
    err = capsys.readouterr().err
    assert "half" in err and "[" in err
    bar = cli._Progress(quiet=True)
    bar(1, 2, "half")
    assert capsys.readouterr().err == ""


def test_frontier_levels_are_log_spaced():
    levels = studies.sla_levels(10, 1000, 3)
    assert levels == pytest.approx([10, 100, 1000]) and math.isclose(levels[1] / levels[0], levels[2] / levels[1])


@settings(max_examples=5, deadline=None)
@given(model=st.sampled_from(["llama-3.1-8b", "qwen3-30b-a3b", "mixtral-8x7b", "qwen3-32b"]),
       cluster=st.sampled_from(["h100-sxm", "b200", "mi300x"]), gpus=st.sampled_from([4, 8, 16]),
       isl=st.sampled_from([500, 2000, 8000]), osl=st.sampled_from([100, 500, 1000]),
       ttft=st.sampled_from([None, 2.0]))
def test_any_frontier_is_monotone_and_meets_its_levels(model, cluster, gpus, isl, osl, ttft):
    p = _p(model=model, cluster=cluster, gpus=gpus, isl=isl, osl=osl, precision="fp8", ttft=ttft)
    try:
        f = studies.frontier(p, points=5)
    except InfeasibleError:
        return  # no plan at all: the CLI says why (tested elsewhere)
    thr = [x.metrics.tokens_per_s_per_gpu for x in f.points]
    assert all(a >= b for a, b in zip(thr, thr[1:])), thr
    for x in f.points:
        assert x.metrics.tokens_per_s_per_user >= x.target_tokens_per_s_per_user * (1 - 1e-9)
        if ttft:
            assert x.metrics.ttft_ms <= ttft * 1000 * (1 + 1e-9)


@pytest.mark.parametrize("of, args", [
    ("frontier", ["frontier", *SMALL, "--points", "3"]),
    ("compare", ["compare", *SMALL, "--points", "2"]),
    ("size", ["size", *SMALL, "--demand", "10req/s", "--sla", "30"]),
])
def test_study_json_validates_against_its_schema(of, args):
    schema = json.loads(run("schema", "--of", of).stdout)
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    jsonschema.validate(json.loads(result.stdout), schema)


def test_a_ttft_limit_alone_is_kept_and_held_at_every_level():
    p = make_problem(model="llama-3.1-70b", cluster="h100-sxm", gpus=8, isl=8000, osl=500, precision="fp8",
                     max_ttft_s=1.5, calibration=CAL)
    assert p.sla is not None and p.sla.max_ttft_s == 1.5 and p.sla.min_tokens_per_s_per_user is None
    f = studies.frontier(p, points=4)
    assert f.max_ttft_s == 1.5
    assert all(x.metrics.ttft_ms <= 1500 * (1 + 1e-9) for x in f.points)
    free = studies.frontier(p.model_copy(update={"sla": None}), points=4)
    assert max(x.metrics.ttft_ms for x in free.points) > 1500  # the limit binds somewhere
    assert solve(p)[0].metrics.ttft_ms <= 1500 * (1 + 1e-9)
