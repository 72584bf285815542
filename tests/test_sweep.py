"""`planner sweep` and planner.sweep: the grid's product and order, one row per scenario whatever runs it
(this process, local processes, Ray), the cache (a rerun solves nothing; an interrupted sweep keeps what
finished), rows of scenarios without a plan, and one-line errors."""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from clirun import error_line, run

import planner
from planner import search, sweeps
from planner.errors import InfeasibleError, SpecError, UnknownNameError
from planner.solver import SolverParams

GRID = {
    "models": ["llama-3.1-8b"], "clusters": ["h100-sxm", "b200"], "gpus": 2, "isl": 1024, "osl": 256,
    "precision": "fp8", "sla": ["40tok/s", "25ms@p99", "900tok/s"], "serving": ["agg", "disagg", "auto"],
}
"""18 small scenarios (2 clusters x 3 SLAs x 3 serving modes; 900 tokens/s/user is out of reach): about 2 s."""


def write_grid(folder: Path, grid: dict, name: str = "grid.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(grid))
    return path


def masked_csv(path: Path) -> str:
    """The CSV's text with the wall-time columns emptied: what must be identical from run to run."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    walls = [rows[0].index(c) for c in sweeps.WALL_COLUMNS]
    for row in rows[1:]:
        for i in walls:
            row[i] = ""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


@pytest.fixture
def solves(monkeypatch) -> list:
    """Count the searches a sweep in this process runs (search.solve calls)."""
    calls: list = []
    real = search.solve

    def counted(problem, **kw):
        calls.append(problem)
        return real(problem, **kw)

    monkeypatch.setattr(search, "solve", counted)
    return calls


# --- the grid --------------------------------------------------------------------------------------


def test_product_size_and_order():
    grid = sweeps.SweepGrid.model_validate({**GRID, "ttft": [None, "2s"]})
    items = sweeps.scenarios(grid)
    assert grid.size() == len(items) == 1 * 2 * 1 * 1 * 1 * 3 * 2 * 1 * 3
    expected = itertools.product(*(getattr(grid, a) for a in sweeps.AXES))
    for s, values in zip(items, expected, strict=True):
        assert tuple(s.inputs[a.removesuffix("s") if a in ("models", "clusters") else a]
                     for a in sweeps.AXES) == values
    assert [s.index for s in items] == list(range(1, len(items) + 1))
    first, p99 = items[0], items[6]  # the last axis (serving) varies fastest, then ttft, then sla
    assert (first.inputs["sla"], first.inputs["ttft"], first.inputs["serving"]) == ("40tok/s", None, "agg")
    assert (p99.inputs["sla"], p99.inputs["sla_percentile"], p99.inputs["sla_tokens_per_s_per_user"]) == \
        ("25ms@p99", 99, 40.0)
    assert items[3].inputs["ttft_limit_ms"] == 2000.0 and items[3].task.problem.sla.max_ttft_s == 2.0


def test_single_values_and_defaults_are_solves():
    default = sweeps.scenarios(sweeps.SweepGrid())
    assert len(default) == 1
    want = search.make_problem(min_tokens_per_s_per_user=20)
    assert default[0].task.problem == want  # an empty grid is `planner solve --sla 20tok/s`
    assert default[0].task.options.serving == "auto"
    assert sweeps.SweepGrid.model_validate({"models": "llama-3.1-8b", "gpus": 8}).models == ["llama-3.1-8b"]


def test_equal_problems_share_one_key_and_other_inputs_do_not():
    """The key is the normalised problem: 20 tok/s written as 50ms is the same scenario; a calibration, a time
    limit or a serving mode of its own is another."""
    grid = sweeps.SweepGrid.model_validate({**GRID, "sla": ["40tok/s", "25ms"], "serving": "agg",
                                            "clusters": "h100-sxm"})
    a, b = sweeps.scenarios(grid)
    assert a.task.key == b.task.key and a.inputs["sla"] != b.inputs["sla"]
    other = sweeps.scenarios(grid.model_copy(update={"time_limit": 30}))[0]
    assert other.task.key != a.task.key
    fitted = sweeps.scenarios(grid.model_copy(update={"calibration": "planner/calibration.yaml"}))[0]
    assert fitted.task.key == a.task.key  # the shipped calibration named as a file is the same data
    cal = a.task.problem.calibration
    changed = a.task.problem.model_copy(update={"calibration": cal.model_copy(update={"memory_utilization": 0.8})})
    assert sweeps.problem_key(changed, a.task.options) != a.task.key


# --- rows ----------------------------------------------------------------------------------------


def test_rows_identical_from_one_process_local_processes_and_ray(tmp_path: Path):
    """The same CSV, byte for byte once the wall times are masked, from --jobs 1, --jobs 2 and --ray (a local
    Ray started by the sweep: this module's one Ray session)."""
    grid = write_grid(tmp_path, GRID)
    texts = {}
    for name, args in (("one", ["--jobs", "1"]), ("two", ["--jobs", "2"]), ("ray", ["--ray", "--jobs", "2"])):
        out = tmp_path / f"{name}.csv"
        result = run("sweep", grid, "--out", out, "--no-cache", *args)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0] == "18 scenarios (2 clusters x 3 SLAs x 3 serving modes): 12 with a " \
                                                "plan, 6 without (sla: 6)"
        texts[name] = masked_csv(out)
    assert texts["one"] == texts["two"] == texts["ray"]
    rows = list(csv.DictReader(io.StringIO(texts["one"])))
    assert len(rows) == 18 and list(rows[0]) == list(sweeps.COLUMNS)
    assert [r["scenario"] for r in rows] == [str(i) for i in range(1, 19)]
    assert {r["plan_serving"] for r in rows if r["status"] == "plan"} == {"agg", "disagg"}


def test_a_plan_row_holds_the_plan_of_solve():
    """Each row carries what `planner solve` finds: an aggregated layout in tp..dp, a disaggregated one in the
    pools' columns, the p99s, the other mode's figure under auto."""
    result = planner.sweep({**GRID, "clusters": "h100-sxm", "sla": "40tok/s"})
    agg, dis, auto = result.rows
    p = search.make_problem(model="llama-3.1-8b", cluster="h100-sxm", gpus=2, isl=1024, osl=256, precision="fp8",
                            min_tokens_per_s_per_user=40)
    plan = search.solve(p, serving="agg")[0]
    assert (agg["layout"], agg["tp"], agg["dp"], agg["concurrency"], agg["chunk_tokens"]) == \
        (plan.label, plan.parallel.tp, plan.parallel.dp, plan.batch.concurrency, plan.batch.chunk_tokens)
    assert agg["tokens_per_s_per_gpu"] == round(plan.metrics.tokens_per_s_per_gpu, 4)
    assert agg["tpot_p99_ms"] == round(plan.metrics.percentiles.tpot_ms["p99"], 4)
    assert agg["solver_status"] == "OPTIMAL" and agg["certified"] is True and agg["prefill_layout"] is None
    d = search.solve(p, serving="disagg")[0]
    assert (dis["plan_serving"], dis["layout"], dis["tp"]) == ("disagg", d.label, None)
    assert (dis["prefill_workers"], dis["decode_workers"], dis["decode_tp"]) == \
        (d.prefill.workers, d.decode.workers, d.decode.parallel.tp)
    assert dis["prefill_pool_gpus"] + dis["decode_pool_gpus"] == dis["gpus_used"] == d.gpus_used
    assert auto["other_serving"] == "disagg" and auto["other_tokens_per_s_per_gpu"] == dis["tokens_per_s_per_gpu"]
    assert result.with_plan == 3 and result.solved == 3 and result.cached == 0


def test_a_scenario_without_a_plan_has_its_reason_row():
    """A row per failure: InfeasibleError's one line, reason and reachable figures, as solve raises them; a
    combination that cannot be searched (here: a model without checkpoint formats) is an error row."""
    grid = {"models": ["llama-3.1-70b", "gpt-moe-1.8t"], "clusters": "h100-sxm", "gpus": 1, "isl": 1024,
            "osl": 256, "precision": ["bf16", "checkpoint"], "sla": "30tok/s", "serving": "agg"}
    fit, _, _, ckpt = planner.sweep(grid).rows
    p = search.make_problem(model="llama-3.1-70b", cluster="h100-sxm", gpus=1, isl=1024, osl=256, precision="bf16",
                            min_tokens_per_s_per_user=30)
    with pytest.raises(InfeasibleError) as e:
        search.solve(p, serving="agg")
    assert (fit["status"], fit["reason"], fit["message"]) == ("infeasible", "fit", str(e.value))
    assert fit["reachable_gpus"] == e.value.reachable["gpus"] == 2 and fit["layout"] is None
    assert ckpt["status"] == "error" and ckpt["reason"] == "SpecError" and "checkpoint" in ckpt["message"]
    slow = planner.sweep({**GRID, "clusters": "h100-sxm", "sla": "900tok/s", "serving": "agg"}).rows[0]
    assert slow["reason"] == "sla" and 100 < slow["reachable_tokens_per_s_per_user"] < 900


# --- the cache -----------------------------------------------------------------------------------


def test_a_rerun_solves_nothing_and_gives_the_same_rows(tmp_path: Path, solves: list):
    grid = {**GRID, "clusters": "h100-sxm", "serving": "agg", "sla": ["40tok/s", "25ms", "900tok/s"]}
    first = planner.sweep(grid, cache=tmp_path / "c")
    assert len(solves) == 2  # 40 tok/s and 25 ms are one problem: one search
    assert (first.solved, first.cached) == (2, 0) and len(list((tmp_path / "c").glob("*.json"))) == 2
    again = planner.sweep(grid, cache=tmp_path / "c")
    assert len(solves) == 2 and (again.solved, again.cached) == (0, 3)
    assert again.rows == first.rows  # wall times too: a cached row keeps those of the run that solved it
    more = planner.sweep({**grid, "sla": ["40tok/s", "60tok/s", "900tok/s"]}, cache=tmp_path / "c")
    assert len(solves) == 3 and (more.solved, more.cached) == (1, 2)


def test_an_interrupted_sweep_keeps_what_finished(tmp_path: Path, solves: list):
    grid = {**GRID, "clusters": "h100-sxm", "serving": "agg"}

    def stop_after_two(done: int, total: int, what: str) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(sweeps.SweepInterrupted) as e:
        planner.sweep(grid, cache=tmp_path / "c", progress=stop_after_two)
    assert (e.value.done, e.value.total) == (2, 3) and len(solves) == 2
    rest = planner.sweep(grid, cache=tmp_path / "c")
    assert len(solves) == 3 and (rest.solved, rest.cached) == (1, 2)


def test_the_cli_caches_next_to_out_and_reports(tmp_path: Path, solves: list):
    grid = write_grid(tmp_path, {**GRID, "clusters": "h100-sxm", "serving": "agg"})
    out = tmp_path / "r.csv"
    first = run("sweep", grid, "--out", out)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "r.csv.cache").is_dir() and len(solves) == 3
    again = run("sweep", grid, "--out", out)
    assert len(solves) == 3
    assert again.stdout.splitlines()[1].startswith(f"0 solved, 3 from the cache ({out}.cache), in ")
    assert again.stdout.splitlines()[2] == f"rows written to {out}"
    data = json.loads(run("sweep", grid, "--json").stdout)  # no --out: the cache is the grid's
    assert data["cached"] == 0 and len(data["rows"]) == 3 and (tmp_path / "grid.yaml.cache").is_dir()
    assert [r["status"] for r in data["rows"]] == ["plan", "plan", "infeasible"]


def test_results_of_another_planner_are_refused(monkeypatch):
    """Workers (e.g. a Ray cluster's) running other planner code would give other rows: the sweep stops."""
    real = sweeps.run_task
    monkeypatch.setattr(sweeps, "run_task", lambda t: {**real(t), "code": "0123456789abcdef"})
    with pytest.raises(SpecError, match="another planner"):
        planner.sweep({**GRID, "clusters": "h100-sxm", "serving": "agg", "sla": "40tok/s"})


def test_a_ray_address_ships_this_planner(monkeypatch):
    """With an address the workers get this package (runtime_env py_modules); the Ray session is closed after."""
    calls: dict = {}

    class FakeRay:
        initialized = False

        def is_initialized(self):
            return self.initialized

        def init(self, **kw):
            calls["init"] = kw
            self.initialized = True

        def shutdown(self):
            calls["shutdown"] = True

        def cluster_resources(self):
            return {"CPU": 4.0}

        def remote(self, **kw):
            return lambda f: type("Remote", (), {"remote": staticmethod(lambda t: Ref(f(t)))})

        def wait(self, refs, num_returns):
            return refs[:1], refs[1:]

        def get(self, ref):
            return ref.value

    class Ref:
        def __init__(self, value):
            self.value = value

    monkeypatch.setattr(sweeps, "_ray_module", lambda: FakeRay())
    monkeypatch.setattr(sweeps, "_check_reachable", lambda address: None)  # no host 'head' here
    result = planner.sweep({**GRID, "clusters": "h100-sxm", "serving": "agg"}, ray="ray://head:10001")
    assert calls["init"]["address"] == "ray://head:10001" and calls["shutdown"]
    assert calls["init"]["runtime_env"] == {"py_modules": [str(Path(sweeps.__file__).resolve().parent)]}
    assert result.runner == "Ray tasks at ray://head:10001" and result.with_plan == 2


def test_an_unreachable_ray_address_is_refused_at_once():
    with pytest.raises(SpecError, match=r"^cannot reach Ray at 127\.0\.0\.1:1: "):
        planner.sweep({**GRID, "clusters": "h100-sxm", "serving": "agg"}, ray="127.0.0.1:1")


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, says", [
    ("models: [llama-3.1-8b\n", "malformed YAML"),
    ("model: llama-3.1-8b\n", "unknown field 'model' (did you mean models?)"),
    ("models: [llama-9]\n", "models: unknown model 'llama-9'"),
    ("clusters: [h100-sxm, h100-sxm]\n", "lists 'h100-sxm' twice"),
    ("sla: [fast]\n", "sla 'fast': 'fast' is not a speed"),
    ("ttft: [2 days]\n", "ttft '2 days': '2 days' is not a duration"),
    ("precision: fp3\n", "precision: unknown format 'fp3'"),
    ("serving: [both]\n", "field 'serving.0'"),
    ("gpus: []\n", "must list at least one value"),
    ("- models\n", "expected a mapping"),
    ("models: [a, b]\n" + "".join(f"{axis}: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" for axis in ("isl", "osl", "gpus", "sla",
                                                                                         "ttft")),
     "more than 100,000"),
])
def test_a_bad_grid_is_one_line(tmp_path: Path, text: str, says: str):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    line = error_line("sweep", path, "--out", tmp_path / "r.csv")
    assert says in line, line
    assert not (tmp_path / "r.csv").exists()


def test_cli_usage_errors_are_one_line(tmp_path: Path, monkeypatch):
    grid = write_grid(tmp_path, {**GRID, "clusters": "h100-sxm", "serving": "agg"})
    assert "--out FILE.csv" in error_line("sweep", grid)
    assert "no such file" in error_line("sweep", tmp_path / "none.yaml", "--out", tmp_path / "r.csv").lower()
    assert "its folder does not exist" in error_line("sweep", grid, "--out", tmp_path / "none" / "r.csv")
    assert "exclude each other" in error_line("sweep", grid, "--out", tmp_path / "r.csv", "--cache", tmp_path / "c",
                                              "--no-cache")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    line = error_line("sweep", grid, "--out", tmp_path / "r.csv", "--ray")
    assert line == "planner: error: Ray is not installed: pip install 'planner[ray]'"


def test_library_errors_name_the_field():
    with pytest.raises(UnknownNameError, match="^clusters: unknown cluster 'h900'"):
        planner.sweep({"clusters": ["h900"]})
    with pytest.raises(SpecError, match="^grid: unknown field 'sweep'"):
        planner.sweep({"sweep": 1})
    with pytest.raises(SpecError, match="jobs"):
        planner.sweep({}, jobs=0)
    with pytest.raises(SpecError, match="got list"):
        planner.sweep([GRID])


def test_the_sweep_and_ray_load_only_when_used():
    """`import planner` and the CLI's start-up import neither planner.sweeps nor Ray; planner.sweep loads it."""
    code = ("import sys, planner, planner.cli; assert 'planner.sweeps' not in sys.modules and 'ray' not in "
            "sys.modules; f = planner.sweep; import planner.sweeps as m; assert f is m.sweep and 'ray' not in "
            "sys.modules; from planner import sweep; assert sweep is f")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_time_limits_are_not_cached(tmp_path: Path, monkeypatch):
    """A search stopped by its time limit is no answer: its row says so and a rerun tries again."""
    from planner.errors import TimeLimitError

    def out_of_time(problem, **kw):
        raise TimeLimitError("no plan found within the time limit of 0.01 s", limit_s=0.01)

    monkeypatch.setattr(search, "solve", out_of_time)
    row = planner.sweep({**GRID, "clusters": "h100-sxm", "serving": "agg", "sla": "40tok/s"},
                        cache=tmp_path / "c").rows[0]
    assert (row["status"], row["reason"]) == ("error", "TimeLimitError")
    assert not list((tmp_path / "c").glob("*.json"))


def test_run_task_is_what_solve_gives():
    task = sweeps.scenarios(sweeps.SweepGrid.model_validate({**GRID, "clusters": "b200", "serving": "agg",
                                                             "sla": "40tok/s"}))[0].task
    out = sweeps.run_task(task)
    plan = search.solve(task.problem, serving="agg", params=SolverParams(time_limit_s=60))[0]
    assert out["cache"] and out["code"] == sweeps.code_digest()
    assert {k: v for k, v in out["result"].items() if k not in sweeps.WALL_COLUMNS} == \
        {k: v for k, v in sweeps.plan_columns(plan).items() if k not in sweeps.WALL_COLUMNS}


def test_ctrl_c_in_the_cli_is_one_line_and_says_what_is_kept(tmp_path: Path, monkeypatch):
    grid = write_grid(tmp_path, {**GRID, "clusters": "h100-sxm", "serving": "agg"})

    def interrupted(*args, **kw):
        raise sweeps.SweepInterrupted(2, 3, tmp_path / "r.csv.cache")

    monkeypatch.setattr(sweeps, "sweep", interrupted)
    result = run("sweep", grid, "--out", tmp_path / "r.csv")
    assert result.exit_code == 130 and result.stdout == ""
    assert result.stderr.splitlines() == [f"planner: interrupted: 2 of 3 scenarios finished, kept in {tmp_path}/"
                                          "r.csv.cache: run the same command again to finish"]


def test_the_readme_shows_the_shipped_example_grid():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shipped = (Path(__file__).resolve().parents[1] / "sweeps" / "example.yaml").read_text()
    assert f"```yaml\n{shipped}```" in readme
    assert sweeps.load_grid(Path(__file__).resolve().parents[1] / "sweeps" / "example.yaml").size() == 12
