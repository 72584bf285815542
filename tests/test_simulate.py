"""planner.simulate: the discrete-event simulation of a plan's scheduler against the cost model it takes its
iteration times from, its bookkeeping (Little's law, closed loops, KV capacity, determinism) and the command line
(`planner simulate`, `planner solve --verify`) with its one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from clirun import error_line, run

from planner import cost, disagg, search, traffic
from planner import simulate as sim
from planner.errors import SpecError
from planner.specs import SLA, Calibration, Factors, Parallel, SolverInfo, Speculation, Workload

REPO = Path(__file__).resolve().parents[1]
L8 = dict(model="llama-3.1-8b", cluster="h100-sxm", isl=1024, osl=256, precision="fp8")
TPOT_TOL = 0.03
"""Simulated mean TPOT against the cost model's at the simulated mean decoding batch, open traffic at half the
plan's rate (measured: within 1.0% on every case below)."""
TTFT_TOL = 0.10
"""Simulated mean TTFT against the cost model's at the same load (measured: within 7.5%; the cost model's M/D/1
wait per prefill worker is a little longer than the pooled FIFO's of a worker with several lanes)."""


def agg_case(gpus: int, par: Parallel, concurrency: int, chunk: int, **kw):
    p = search.make_problem(gpus=gpus, **{**L8, **kw})
    return p, search.estimate(p, parallel=par, concurrency=concurrency, chunk=chunk)


def disagg_case(gpus: int, pre: Parallel, chunk: int, dec: Parallel, m: int, **kw):
    p = search.make_problem(gpus=gpus, **{**L8, **kw})
    return p, disagg.estimate(disagg.make_disagg(p), pre, chunk, dec, m)


CASES = {
    "agg-tp1": lambda: agg_case(1, Parallel(tp=1), 64, 512),
    "agg-pp2": lambda: agg_case(2, Parallel(tp=1, pp=2), 128, 1024),
    "agg-moe-adp8": lambda: agg_case(8, Parallel(tp=1, attention_dp=8, ep=8), 256, 2048, model="deepseek-r1",
                                     cluster="b200", isl=4000, osl=1000, precision="fp4"),
    "agg-70b-tp4-dp2": lambda: agg_case(8, Parallel(tp=4, dp=2), 64, 1024, model="llama-3.1-70b", isl=2000, osl=500),
    "disagg-chunk-isl": lambda: disagg_case(8, Parallel(tp=1, dp=3), 1024, Parallel(tp=1, dp=1), 128),
    "disagg-pp2": lambda: disagg_case(8, Parallel(tp=1, pp=2, dp=2), 512, Parallel(tp=1, dp=4), 96),
}


def predicted(p, plan, r: sim.SimResult, rate: float) -> tuple[float, float]:
    """The cost model's mean TPOT and TTFT [ms] at the simulation's operating point: its mean decoding batch
    (aggregated: the prefill load follows from it), or its arrival rate (the prefill pool's load)."""
    if plan.serving == "agg":
        g = cost.metrics_grid(p, plan.parallel, r.mean_decode_batch, plan.batch.chunk_tokens)
        return float(g["tpot_s"]) * 1e3, float(g["ttft_s"]) * 1e3
    pre = plan.prefill
    rho = rate / (pre.workers * pre.metrics.prefill_capacity_requests_per_s)
    ttft = cost.disagg_ttft(p, pre.metrics.prefill_service_ms / 1e3, rho, plan.kv_transfer.transfer_ms / 1e3)
    return float(cost.decode_pass_time(p, plan.decode.parallel, r.mean_decode_batch)) * 1e3, float(ttft) * 1e3


# --- against the cost model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_steady_open_traffic_agrees_with_the_cost_model(name):
    p, plan = CASES[name]()
    rate = 0.5 * plan.metrics.requests_per_s
    r = sim.simulate(p, plan, rate_per_s=rate, requests=3000)
    tpot, ttft = predicted(p, plan, r, rate)
    assert r.tpot.mean_ms == pytest.approx(tpot, rel=TPOT_TOL)
    assert r.ttft.mean_ms == pytest.approx(ttft, rel=TTFT_TOL)
    assert 0.3 * plan.batch.micro_batch < r.mean_decode_batch < 0.7 * plan.batch.micro_batch  # half the plan's load


def test_isolated_requests_take_exactly_the_cost_models_passes():
    """One request at a time on an idle lane: its prompt's chunks are passes with no decode, its tokens passes of
    one decoding request (admission_iterations 1/2: no streaming lag beyond the simulated half iteration)."""
    cal = Calibration(base=Factors(admission_iterations=0.5))
    p = search.make_problem(gpus=1, calibration=cal, **L8)
    plan = search.estimate(p, parallel=Parallel(tp=1), concurrency=8, chunk=384)
    n = 20
    trace = traffic.Trace(isl=np.full(n, 1024), osl=np.full(n, 256), arrival_s=np.arange(n) * 60.0)
    r = sim.simulate(p, plan, trace=trace)
    chunks = 2 * float(cost.pass_time(p, plan.parallel, 0, 384)) + float(cost.pass_time(p, plan.parallel, 0, 256))
    assert r.ttft.p99_ms == pytest.approx((chunks + cost.request_overhead(p)) * 1e3, rel=1e-9)
    assert r.tpot.p50_ms == pytest.approx(float(cost.pass_time(p, plan.parallel, 1, 0)) * 1e3, rel=1e-9)
    assert r.e2e.mean_ms == pytest.approx(r.ttft.mean_ms + 255 * r.tpot.mean_ms, rel=1e-9)
    p2, dplan = CASES["disagg-chunk-isl"]()
    r = sim.simulate(p2, dplan, trace=trace)
    idle = cost.disagg_ttft(p2, dplan.prefill.metrics.prefill_service_ms / 1e3, 0.0,
                            dplan.kv_transfer.transfer_ms / 1e3)
    assert r.ttft.p50_ms == pytest.approx(float(idle) * 1e3, rel=1e-9)
    assert r.tpot.p50_ms == pytest.approx(float(cost.decode_pass_time(p2, dplan.decode.parallel, 1)) * 1e3, rel=1e-9)


def test_pass_table_interpolates_the_cost_model():
    p, plan = CASES["agg-moe-adp8"]()
    table = sim._PassTable(lambda m, c: cost.pass_time(p, plan.parallel, m, c), 32, 2048)
    rng = np.random.default_rng(3)
    for m, c in zip(rng.integers(0, 33, 200), rng.integers(0, 2049, 200)):
        exact = float(cost.pass_time(p, plan.parallel, int(m), int(c)))
        assert table(int(m), int(c)) == pytest.approx(exact, rel=1e-3)


# --- bookkeeping ---------------------------------------------------------------------------------------------


def test_throughput_equals_the_arrival_rate_below_saturation_and_caps_above():
    p, plan = CASES["agg-tp1"]()
    for frac in (0.3, 0.8):
        r = sim.simulate(p, plan, rate_per_s=frac * plan.metrics.requests_per_s, requests=3000)
        assert r.requests_per_s == pytest.approx(r.arrival_rate_per_s, rel=0.01)
        assert r.arrival_rate_per_s == pytest.approx(frac * plan.metrics.requests_per_s, rel=0.05)
        assert r.tokens_per_s_per_gpu == pytest.approx(r.requests_per_s * 256 / plan.gpus, rel=1e-9)
    over = sim.simulate(p, plan, rate_per_s=2 * plan.metrics.requests_per_s, requests=3000)
    assert over.requests_per_s < 0.6 * over.arrival_rate_per_s
    assert over.requests_per_s == pytest.approx(plan.metrics.requests_per_s, rel=0.05)  # every slot decoding
    assert over.mean_decode_batch == pytest.approx(plan.batch.micro_batch, rel=0.02)


@pytest.mark.parametrize("name", ["agg-pp2", "disagg-pp2"])
def test_littles_law_holds(name):
    p, plan = CASES[name]()
    w = Workload(isl=1024, osl=256, isl_cv=0.8, osl_cv=0.5)
    p = p.model_copy(update={"workload": w})
    plan = plan.model_copy(update={"workload": w})
    r = sim.simulate(p, plan, rate_per_s=0.6 * plan.metrics.requests_per_s, requests=3000, seed=4)
    assert r.ttft.p99_ms > 1.5 * r.ttft.p50_ms  # the lengths vary
    assert r.mean_in_flight == pytest.approx(r.arrival_rate_per_s * r.e2e.mean_ms / 1e3, rel=0.03)


@pytest.mark.parametrize("name", ["agg-tp1", "disagg-chunk-isl"])
def test_a_closed_loop_keeps_its_clients_in_flight(name):
    p, plan = CASES[name]()
    r = sim.simulate(p, plan, clients=40, requests=2000)
    assert r.clients == 40 and r.arrivals == "closed"
    assert r.mean_in_flight == pytest.approx(40, rel=1e-3)  # requests between their last token and the next send
    assert r.requests_per_s * r.e2e.mean_ms / 1e3 == pytest.approx(40, rel=0.02)
    half = sim.simulate(p, plan, clients=20, requests=2000)
    assert r.requests_per_s > 1.6 * half.requests_per_s  # far from saturation, twice the clients nearly twice the rate


def test_default_traffic_is_a_closed_loop_of_the_plans_concurrency():
    p, plan = CASES["agg-70b-tp4-dp2"]()
    r = sim.simulate(p, plan, requests=1000)
    assert r.clients == plan.batch.concurrency * plan.parallel.dp == sim.default_clients(plan)
    p, dplan = CASES["disagg-pp2"]()
    assert sim.default_clients(dplan) == dplan.decode.batch.concurrency * dplan.decode.workers


def test_same_seed_same_result_another_seed_another():
    p, plan = CASES["disagg-pp2"]()
    w = Workload(isl=1024, osl=256, isl_cv=0.5, osl_cv=0.5, prefix_hit=0.2)
    p, plan = p.model_copy(update={"workload": w}), plan.model_copy(update={"workload": w})

    def fig(seed):
        d = sim.simulate(p, plan, rate_per_s=30.0, requests=1500, seed=seed).model_dump()
        d.pop("wall_s")
        return d

    assert fig(7) == fig(7)
    assert fig(7) != fig(8)


def test_kv_capacity_is_never_exceeded(monkeypatch):
    """A plan whose HBM leaves KV room for 20 requests at full context, loaded beyond it: requests wait for room and
    decoding preempts, and no lane ever holds more KV than it has (checked after every iteration)."""
    p, plan = CASES["agg-tp1"]()
    mem = plan.memory
    room = 20 * float(cost.kv_cache_bytes_per_gpu(p, 1, 1))
    tight = plan.model_copy(update={"memory": mem.model_copy(update={
        "usable_bytes": mem.per_gpu_bytes - mem.kv_cache_bytes + room})})
    worst = []
    apply = sim._Engine.apply

    def checked(self, lane, j):
        out = apply(self, lane, j)
        worst.append(lane.kv / lane.cap)
        assert lane.dec_n <= self.cap
        return out

    monkeypatch.setattr(sim._Engine, "apply", checked)
    r = sim.simulate(p, tight, rate_per_s=0.5 * plan.metrics.requests_per_s, requests=2000)
    assert r.kv_capacity_tokens == pytest.approx(20 * (1024 + 256))
    assert r.preemptions > 0 and r.kv_waits > 0
    assert max(worst) <= 1 + 1e-12 and r.kv_peak_share <= 1 + 1e-12
    assert r.mean_decode_batch < 0.4 * plan.batch.micro_batch  # the cache, not the cap, bounds the batch


def test_prefix_hits_shorten_prefill_and_long_requests_are_refused():
    p, plan = CASES["agg-70b-tp4-dp2"]()
    base = sim.simulate(p, plan, rate_per_s=5.0, requests=1000)
    w = p.workload.model_copy(update={"prefix_hit": 0.5})
    hit = sim.simulate(p.model_copy(update={"workload": w}), plan.model_copy(update={"workload": w}), rate_per_s=5.0,
                       requests=1000)
    assert hit.ttft.mean_ms < 0.8 * base.ttft.mean_ms
    cap = base.kv_capacity_tokens
    n = 50
    long = traffic.Trace(isl=np.where(np.arange(n) % 10 == 0, int(cap), 500), osl=np.full(n, 10),
                         arrival_s=np.arange(n) * 1.0)
    r = sim.simulate(p, plan, trace=long)
    assert r.rejected == 5 and r.requests == 45


def test_disaggregated_prompts_queue_in_one_fifo_and_outputs_of_one_token():
    p = search.make_problem(gpus=2, **{**L8, "osl": 1})
    plan = disagg.build_plan(disagg.make_disagg(p), Parallel(tp=1), 8192, Parallel(tp=1), 8,
                             SolverInfo(method="estimate", status="EVALUATED", wall_s=0.0))
    r = sim.simulate(p, plan, rate_per_s=20.0, requests=500)
    assert r.tpot is None and r.itl is None and r.requests == 500
    assert r.e2e.mean_ms == pytest.approx(r.ttft.mean_ms)


@pytest.mark.parametrize("serving", ["agg", "disagg"])
def test_speculative_plans_decode_several_tokens_a_step(serving):
    """With MTP drafts each step yields 1 + the accepted drafts: the simulated mean TPOT is the cost model's step
    / E at the simulated batch, and E tokens a step show as fewer, longer-apart streamed chunks."""
    p = search.make_problem(model="deepseek-r1", cluster="b200", gpus=8, isl=2000, osl=500, precision="fp4",
                            min_tokens_per_s_per_user=40, speculation=Speculation(method="mtp", draft_tokens=3))
    plan = search.solve(p, serving=serving)[0]
    assert plan.speculation.draft_tokens == 3 and plan.metrics.tokens_per_step > 2
    r = sim.simulate(p, plan, rate_per_s=0.5 * plan.metrics.requests_per_s, requests=2000)
    par = plan.parallel if serving == "agg" else plan.decode.parallel
    if serving == "agg":
        want = float(cost.metrics_grid(p, par, r.mean_decode_batch, plan.batch.chunk_tokens)["tpot_s"]) * 1e3
    else:
        want = float(cost.decode_pass_time(p, par, r.mean_decode_batch)) / cost.tokens_per_step(p) * 1e3
    assert r.tpot.mean_ms == pytest.approx(want, rel=TPOT_TOL)
    assert r.itl.mean_ms > 1.5 * r.tpot.mean_ms  # a streamed chunk per step, E tokens in it


def test_conflicting_traffic_and_unsearched_drafts_are_refused():
    p, plan = CASES["agg-tp1"]()
    spec = plan.model_copy(update={"speculation": Speculation(method="mtp")})
    with pytest.raises(SpecError, match="no draft length"):
        sim.simulate(p, spec)
    with pytest.raises(SpecError, match="not both"):
        sim.simulate(p, plan, rate_per_s=1.0, clients=3)
    timed = traffic.Trace(isl=np.full(3, 10), osl=np.full(3, 10), arrival_s=np.arange(3.0))
    with pytest.raises(SpecError, match="own arrival times"):
        sim.simulate(p, plan, trace=timed, rate_per_s=1.0)
    for bad in (-1.0, 0.0, math.inf):
        with pytest.raises(SpecError, match="positive"):
            sim.simulate(p, plan, rate_per_s=bad)


def test_problem_of_plan_rebuilds_the_cost_model():
    for name in ("agg-moe-adp8", "disagg-pp2"):
        p, plan = CASES[name]()
        rebuilt = sim.problem_of_plan(round_trip(plan))
        assert sim.model_mismatch(rebuilt, plan) is None
    p, plan = CASES["agg-tp1"]()
    with pytest.raises(SpecError, match=r"model 'my-model' is not in the catalog: give its file \(--model FILE\)"):
        sim.problem_of_plan(plan.model_copy(update={"model": "my-model"}))
    with pytest.raises(SpecError, match=r"--cluster FILE"):
        sim.problem_of_plan(plan.model_copy(update={"cluster": "my-gpu"}))
    given = sim.problem_of_plan(plan.model_copy(update={"model": "my-model"}), model=p.model)
    assert given.model.name == "llama-3.1-8b"
    other = Calibration(base=Factors(hbm_efficiency=0.6))
    assert "another calibration" in sim.model_mismatch(sim.problem_of_plan(plan, calibration=other), plan)


def round_trip(plan):
    """The plan after a round trip through its JSON."""
    from planner.specs import Plan

    return Plan.model_validate(json.loads(plan.model_dump_json()))


# --- command line --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "plan.json"
    _, plan = CASES["agg-tp1"]()
    path.write_text(plan.model_dump_json())
    return path


def test_cli_simulate_prints_the_table_beside_the_plan(plan_file):
    result = run("simulate", plan_file, "--requests", 500, "--rate", 10)
    assert result.exit_code == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[1].startswith("simulated: open, 10 requests/s (Poisson); 500 requests measured after 50 warm-up")
    assert [line.split()[0] for line in out[4:8]] == ["TTFT", "TPOT", "ITL", "e2e"]
    assert out[8].startswith("throughput:") and "(plan " in out[8]
    data = json.loads(run("simulate", plan_file, "--requests", 500, "--clients", 8, "--json").stdout)
    r = sim.SimResult.model_validate(data)
    assert r.clients == 8 and r.requests == 500
    stdin = run_stdin(plan_file.read_text(), "simulate", "-", "--requests", 300, "--json")
    assert sim.SimResult.model_validate(json.loads(stdin.stdout)).requests == 300


def run_stdin(text: str, *args):
    from click.testing import CliRunner

    from planner.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=text, prog_name="planner")


def test_cli_simulate_replays_a_trace(plan_file, tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("input_tokens,output_tokens,arrival_s\n" + "".join(f"{500 + i},{20 + i % 7},{i * 0.05}\n"
                                                                       for i in range(400)))
    data = json.loads(run("simulate", plan_file, "--trace", trace, "--json").stdout)
    assert data["arrivals"] == "trace" and data["requests"] == 400 and data["simulated"] == 400


def test_cli_simulate_errors_are_one_line(plan_file, tmp_path):
    assert "no such file" in error_line("simulate", tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "malformed JSON at line 1" in error_line("simulate", bad)
    notplan = tmp_path / "notplan.json"
    notplan.write_text(json.dumps({"name": "h100", "gpu": "x"}))
    assert "not a plan" in error_line("simulate", notplan)
    several = tmp_path / "several.json"
    plan = json.loads(plan_file.read_text())
    several.write_text(json.dumps([plan, plan]))
    assert "a list of 2 plans" in error_line("simulate", several)
    rows = tmp_path / "rows.csv"
    rows.write_text("input_tokens,output_tokens\n100,x\n")
    assert "request 1: output_tokens 'x' is not a number" in error_line("simulate", plan_file, "--trace", rows)
    assert "positive" in error_line("simulate", plan_file, "--rate", "-2")
    assert "not both" in error_line("simulate", plan_file, "--rate", "2", "--clients", "3")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({**plan, "model": "my-model"}))
    assert "give its file (--model FILE)" in error_line("simulate", unknown)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**plan, "speculation": {"method": "mtp"}}))
    assert "has no draft length" in error_line("simulate", spec)


def test_cli_simulate_takes_the_models_file(plan_file, tmp_path):
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({**json.loads(plan_file.read_text()), "model": "my-model"}))
    result = run("simulate", unknown, "--model", REPO / "models" / "llama-3.1-8b.yaml", "--requests", 200)
    assert result.exit_code == 0, result.stderr


def test_cli_solve_verify_says_whether_each_part_of_the_sla_holds():
    args = ("solve", "--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", 1, "--isl", 1024, "--osl", 256,
            "--precision", "fp8", "--sla", "60tok/s", "--ttft", "1s", "--serving", "agg", "--verify", "--requests", 500)
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    lines = [x for x in result.stdout.splitlines() if x.startswith("verify:")]
    assert lines[0].startswith("verify: simulated 500 requests (closed loop of")
    assert lines[1].startswith("verify: SLA >= 60 tokens/s/user (mean TPOT <= 16.7 ms): holds in the simulation")
    assert lines[2].startswith("verify: TTFT <= 1.00 s (mean): holds in the simulation")
    assert len(lines) == 3
    quiet = run(*args, "--json")
    assert json.loads(quiet.stdout)["model"] == "llama-3.1-8b"
    assert quiet.stderr.splitlines() == lines
    assert "--requests goes with --verify" in error_line("solve", "--requests", 10)


def test_verify_reads_the_slas_percentiles():
    p, plan = CASES["agg-tp1"]()
    r = sim.simulate(p, plan, rate_per_s=0.5 * plan.metrics.requests_per_s, requests=1000)
    tight = SLA(min_tokens_per_s_per_user=2000 / (r.tpot.p50_ms + r.tpot.p99_ms), tpot_percentile=99,
                max_ttft_s=r.ttft.mean_ms / 1e3 * 1.01)
    lines = sim.verify_lines(r, plan.model_copy(update={"sla": tight}))
    assert "(p99 TPOT <=" in lines[1] and "does not hold" in lines[1]
    assert "(mean)" in lines[2] and ": holds in the simulation" in lines[2]
