"""Studies with --serving: frontier, compare and size over aggregated and disaggregated plans.

Each frontier level under auto is checked against single solves of both modes at that level; the
disaggregated frontier's reach against solves just past it; the disaggregated sizing against the plans of
its GPU count and of one node fewer. Small problems (Llama-3.1-8B on 8 H100, FP8, unfitted factors so that
a refit of the shipped calibration does not move the cases): a disaggregated solve takes ~0.05 s.
"""

from __future__ import annotations

import csv
import json

import pytest
from clirun import error_line, run

from planner import disagg, studies
from planner.errors import InfeasibleError, SpecError
from planner.search import make_problem, solve, with_sla
from planner.specs import Calibration

CAL = Calibration()
CASE = dict(model="llama-3.1-8b", cluster="h100-sxm", gpus=8, isl=2048, osl=128, precision="fp8")
"""Aggregated plans win at most SLA levels of this case, disaggregated ones around 230 tokens/s/user."""
RANGE = (10.0, 300.0)
"""The same SLA levels for every frontier of a test [tokens/s/user]."""


def _p(sla: float | None = None, **kw) -> object:
    return make_problem(**{**CASE, **kw}, min_tokens_per_s_per_user=sla, calibration=CAL)


def _best(p, sla: float, serving: str) -> float | None:
    """tokens/s/GPU of one solve of p at this SLA in one mode (None: no plan)."""
    try:
        return solve(with_sla(p, sla), serving=serving)[0].metrics.tokens_per_s_per_gpu
    except InfeasibleError:
        return None


@pytest.fixture(scope="module")
def auto():
    return studies.frontier(_p(), points=10, sla_range=RANGE, serving="auto")


def test_auto_takes_the_better_mode_at_every_level(auto):
    """Each point is the larger of the agg and disagg solves at its level, its serving says which, and its
    alternative carries the other; both modes win somewhere in this case."""
    p = _p()
    assert auto.serving == "auto" and len(auto.points) == 10
    for pt in auto.points:
        sla = pt.target_tokens_per_s_per_user
        agg, dis = _best(p, sla, "agg"), _best(p, sla, "disagg")
        best = max(x for x in (agg, dis) if x is not None)
        assert pt.metrics.tokens_per_s_per_gpu == pytest.approx(best, rel=1e-6), sla
        assert pt.serving == ("disagg" if dis is not None and (agg is None or dis > agg) else "agg"), sla
        other = dis if pt.serving == "agg" else agg
        assert pt.alternative.serving != pt.serving
        if other is None:
            assert pt.alternative.tokens_per_s_per_gpu is None and pt.alternative.reason
        else:
            assert pt.alternative.tokens_per_s_per_gpu == pytest.approx(other, rel=1e-6)
        assert pt.metrics.tokens_per_s_per_user >= sla * (1 - 1e-9)
    assert {pt.serving for pt in auto.points} == {"agg", "disagg"}


def test_auto_holds_each_modes_own_frontier(auto):
    """The mode curves of auto are the single-mode frontiers over the same levels."""
    for mode in ("agg", "disagg"):
        alone = studies.frontier(_p(), points=10, sla_range=RANGE, serving=mode)
        curve = next(c for c in auto.modes if c.serving == mode)
        assert [x.target_tokens_per_s_per_user for x in curve.points] == pytest.approx(
            [x.target_tokens_per_s_per_user for x in alone.points])
        assert [x.tokens_per_s_per_gpu for x in curve.points] == pytest.approx(
            [x.metrics.tokens_per_s_per_gpu for x in alone.points], rel=1e-9)
        assert {x.serving for x in alone.points} == {mode} and all(x.alternative is None for x in alone.points)
        assert curve.highest_tokens_per_s_per_user == pytest.approx(alone.highest_tokens_per_s_per_user)


def test_disagg_frontier_is_monotone_and_reaches_exactly_its_top():
    f = studies.frontier(_p(), points=8, serving="disagg")
    thr = [x.metrics.tokens_per_s_per_gpu for x in f.points]
    assert all(a >= b for a, b in zip(thr, thr[1:])), thr
    assert all(x.metrics.tokens_per_s_per_user >= x.target_tokens_per_s_per_user * (1 - 1e-9) for x in f.points)
    assert all(x.serving == "disagg" and x.prefill and x.decode for x in f.points)
    top = f.highest_tokens_per_s_per_user
    assert f.points[-1].metrics.tokens_per_s_per_user == pytest.approx(top)
    dp = disagg.make_disagg(_p(top * (1 + 1e-6)))
    with pytest.raises(InfeasibleError):  # just past the top: no disaggregated plan
        disagg.solve_disagg(dp)
    base = disagg.solve_disagg(disagg.make_disagg(_p()))  # no SLA: the frontier's first point
    assert f.points[0].metrics.tokens_per_s_per_gpu == pytest.approx(base.metrics.tokens_per_s_per_gpu, rel=1e-9)
    assert f.lowest_tokens_per_s_per_user == pytest.approx(base.metrics.tokens_per_s_per_user)


def test_the_library_default_stays_agg():
    f = studies.frontier(_p(), points=4)
    assert f.serving == "agg" and [m.serving for m in f.modes] == ["agg"]
    assert all(x.serving == "agg" and x.alternative is None for x in f.points)
    rows = studies.frontier_rows(f)
    assert {r["serving"] for r in rows} == {"agg"} and {r["other_tokens_per_s_per_gpu"] for r in rows} == {None}


def test_frontier_rows_carry_serving_and_the_other_mode(auto):
    rows = studies.frontier_rows(auto)
    assert [r["serving"] for r in rows] == [x.serving for x in auto.points]
    for r, x in zip(rows, auto.points):
        want = x.alternative.tokens_per_s_per_gpu
        assert r["other_tokens_per_s_per_gpu"] == (None if want is None else pytest.approx(want, abs=1e-4))


def test_serving_errors():
    with pytest.raises(SpecError, match="serving mode"):
        studies.frontier(_p(), points=2, serving="sometimes")
    with pytest.raises(SpecError, match="--all-layouts"):
        studies.frontier(_p(), points=2, serving="disagg", all_layouts=True)
    with pytest.raises(SpecError, match="aggregated plans only"):
        studies.frontier(_p().model_copy(update={"confidence": 0.9}), points=2, serving="disagg")


def test_auto_with_confidence_sweeps_agg_and_says_why():
    f = studies.frontier(_p().model_copy(update={"confidence": 0.9}), points=3, serving="auto")
    assert {x.serving for x in f.points} == {"agg"}
    assert all("--confidence" in x.alternative.reason for x in f.points)
    assert [(m.serving, m.error is not None) for m in f.modes] == [("agg", False), ("disagg", True)]


def test_auto_frontier_where_agg_has_no_plan():
    """Chunks too small for agg to keep a batch of long prompts full: auto sweeps disagg alone, saying why."""
    p = _p(isl=8192, osl=64)
    with pytest.raises(InfeasibleError):
        studies.frontier(p, points=3, chunks=(128,))
    f = studies.frontier(p, points=3, chunks=(128,), serving="auto")
    assert {x.serving for x in f.points} == {"disagg"} and all(x.alternative.reason for x in f.points)
    assert next(m for m in f.modes if m.serving == "agg").error


# --- compare -------------------------------------------------------------------------------------------------


def test_compare_marks_the_winner_of_each_case_and_level():
    cases = [_p(), _p(cluster="h200-sxm")]
    c = studies.compare(cases, at=230.0, points=4, serving="auto", levels=(20.0, 230.0))
    assert c.serving == "auto"
    for row, f in zip(c.rows, c.frontiers):
        pt = f.at(230.0)
        assert row.serving == pt.serving and row.tokens_per_s_per_gpu == pt.metrics.tokens_per_s_per_gpu
        other = _best(cases[c.rows.index(row)], 230.0, "agg" if pt.serving == "disagg" else "disagg")
        assert row.other_tokens_per_s_per_gpu == pytest.approx(other, abs=1e-4)
    for modes, values, f in zip(c.grid_serving, c.grid, c.frontiers):
        assert modes == [f.at(x).serving for x in c.levels]
        assert values == [f.at(x).metrics.tokens_per_s_per_gpu for x in c.levels]
    assert c.rows[0].serving == "disagg"  # this case's disagg plan wins at 230 tokens/s/user
    agg_only = studies.compare(cases, at=230.0, points=4, levels=(20.0, 230.0))
    assert agg_only.serving == "agg" and {r.serving for r in agg_only.rows} == {"agg"}
    assert c.rows[0].tokens_per_s_per_gpu > agg_only.rows[0].tokens_per_s_per_gpu


# --- size ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sla, demand", [(50.0, 2000.0), (230.0, 300_000.0)])
def test_disagg_size_serves_the_demand_and_one_node_fewer_does_not(sla, demand):
    p = _p(sla)
    s = studies.size(p, demand_tokens_per_s=demand, serving="disagg")
    node = p.cluster.gpus_per_node
    assert s.serving == "disagg" and s.gpus == s.nodes * node and s.plan.gpus == s.gpus
    assert s.capacity_tokens_per_s >= demand and s.gpus_used <= s.gpus
    assert s.plan.metrics.tokens_per_s_per_user >= sla * (1 - 1e-9)
    assert s.replicas == s.plan.prefill.workers + s.plan.decode.workers
    direct = disagg.solve_disagg(disagg.make_disagg(p.model_copy(update={"gpus": s.gpus})))
    assert direct.metrics.tokens_per_s_per_gpu * s.gpus >= demand
    if s.nodes > 1:
        fewer = p.model_copy(update={"gpus": s.gpus - node})
        try:
            plan = disagg.solve_disagg(disagg.make_disagg(fewer))
            assert plan.metrics.tokens_per_s_per_gpu * fewer.gpus < demand
        except InfeasibleError:
            pass


def test_auto_size_takes_the_fewer_gpus_and_names_the_other():
    p = _p(230.0)
    agg = studies.size(p, demand_tokens_per_s=300_000.0)
    dis = studies.size(p, demand_tokens_per_s=300_000.0, serving="disagg")
    best = studies.size(p, demand_tokens_per_s=300_000.0, serving="auto")
    assert best.gpus == min(agg.gpus, dis.gpus)
    assert dis.gpus < agg.gpus and best.serving == "disagg"  # at this SLA disagg needs fewer GPUs
    assert (best.alternative.serving, best.alternative.gpus) == ("agg", agg.gpus)
    assert agg.serving == "agg" and agg.alternative is None  # the library default stays agg


def test_auto_size_looks_for_disagg_no_further_than_agg():
    """Where agg needs fewer GPUs, the disaggregated sizing stops at the aggregated count and says so; the
    disaggregated plan of that many GPUs indeed falls short of the demand."""
    p = _p(50.0)
    best = studies.size(p, demand_tokens_per_s=300_000.0, serving="auto")
    assert best.serving == "agg" and best.alternative.serving == "disagg" and best.alternative.gpus is None
    assert f"needs more than {best.gpus} GPUs" in best.alternative.reason
    plan = disagg.solve_disagg(disagg.make_disagg(p.model_copy(update={"gpus": best.gpus})))
    assert plan.metrics.tokens_per_s_per_gpu * best.gpus < 300_000.0


def test_disagg_size_errors():
    with pytest.raises(InfeasibleError, match="unreachable"):
        studies.size(_p(5000.0), demand_requests_per_s=1, serving="disagg")
    with pytest.raises(InfeasibleError, match="more than 16"):
        studies.size(_p(50.0), demand_tokens_per_s=1e9, max_gpus=16, serving="disagg")


# --- command line --------------------------------------------------------------------------------------------

SMALL = ["--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", "8", "--isl", "1024", "--osl", "256",
         "--precision", "fp8"]


def test_cli_frontier_auto_table_csv_json_and_chart(tmp_path):
    r = run("frontier", *SMALL, "--points", "6", "--csv", tmp_path / "f.csv", "--plot", tmp_path / "f.svg")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    head = lines[2].split()
    assert "serving" in head and "other" in head and "agg and disagg" in lines[1]
    data = json.loads(run("frontier", *SMALL, "--points", "6", "--json").stdout)
    assert data["serving"] == "auto" and [m["serving"] for m in data["modes"]] == ["agg", "disagg"]
    modes = [pt["serving"] for pt in data["points"]]
    rows = [line for line in lines[4:] if line[:1].isdigit()]
    assert [next(w for w in row.split() if w in ("agg", "disagg")) for row in rows] == modes
    assert [row["serving"] for row in csv.DictReader(open(tmp_path / "f.csv"))] == modes
    assert any(line.startswith("best mode by SLA level") for line in lines)
    svg = (tmp_path / "f.svg").read_text()
    assert "(agg)" in svg and "(disagg)" in svg  # both curves in the legend


def test_cli_frontier_single_modes():
    agg = run("frontier", *SMALL, "--points", "3", "--serving", "agg")
    assert agg.exit_code == 0 and "serving" not in agg.stdout.splitlines()[2]
    dis = json.loads(run("frontier", *SMALL, "--points", "3", "--serving", "disagg", "--json").stdout)
    assert {pt["serving"] for pt in dis["points"]} == {"disagg"} and dis["serving"] == "disagg"


def test_cli_compare_and_size_say_which_mode():
    r = run("compare", *SMALL, "--cluster", "h200-sxm", "--points", "3", "--at", "200tok/s")
    assert r.exit_code == 0, r.stderr
    assert "serving" in r.stdout and "d: disaggregated" in r.stdout
    data = json.loads(run("compare", *SMALL, "--points", "3", "--at", "200tok/s", "--json").stdout)
    assert data["rows"][0]["serving"] == data["rows"][0]["plan"]["serving"]
    s = run("size", *SMALL, "--demand", "400000tok/s", "--sla", "200tok/s")
    assert s.exit_code == 0, s.stderr
    sized = json.loads(run("size", *SMALL, "--demand", "400000tok/s", "--sla", "200tok/s", "--json").stdout)
    other = sized["alternative"]
    assert other["serving"] != sized["serving"] and other["gpus"] >= sized["gpus"]
    assert f"{other['serving']} needs {other['gpus']} GPUs" in s.stdout
    agg = json.loads(run("size", *SMALL, "--demand", "40req/s", "--sla", "30", "--serving", "agg",
                         "--json").stdout)
    assert agg["serving"] == "agg" and agg["alternative"] is None


@pytest.mark.parametrize("args, needle", [
    (["frontier", *SMALL, "--serving", "sometimes"], "sometimes"),
    (["frontier", *SMALL, "--serving", "disagg", "--all-layouts"], "--all-layouts"),
    (["frontier", *SMALL, "--serving", "disagg", "--confidence", "0.9"], "aggregated plans only"),
    (["size", *SMALL, "--demand", "1req/s", "--sla", "5000", "--serving", "disagg"], "unreachable"),
    (["size", *SMALL, "--demand", "1e30req/s", "--sla", "20", "--serving", "auto", "--max-gpus", "1024"],
     "aggregated or disaggregated"),
])
def test_cli_serving_errors_are_one_line(args, needle):
    assert needle in error_line(*args)
