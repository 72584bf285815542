"""The `planner` command line: output contract, option parsing, and one-line errors (exit 2, no traceback).

Most tests use a small problem (Llama-3.1-8B on 8 H100, 1000/200 tokens, FP8: ~0.25 s per solve); the
default GPT-MoE-1.8T case (~1 s) runs twice, once as a table and once as JSON (module fixture).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
from clirun import error_line, run, run_json

from planner.cli import main
from planner.space import DEFAULT_MICRO_BATCHES
from planner.specs import Plan

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", "8", "--isl", "1000", "--osl", "200",
         "--precision", "fp8"]
HF_LLAMA_8B = REPO / "data" / "hf-configs" / "meta-llama--Meta-Llama-3.1-8B.json"

PLAN_FIELDS = {
    "model", "cluster", "gpus", "isl", "osl", "parallel", "batch", "metrics", "memory", "solver",
}
NESTED_FIELDS = {
    "parallel": {"dp", "tp", "pp", "ep", "attention_dp", "moe_tp"},
    "batch": {"concurrency", "chunk_tokens"},
    "metrics": {"tokens_per_s_per_user", "tokens_per_s_per_gpu", "ttft_ms", "tpot_ms"},
    "memory": {"per_gpu_bytes", "capacity_bytes", "weights_bytes", "kv_cache_bytes"},
    "solver": {"status", "wall_s", "method"},
}


def strip_timing(plan: dict) -> dict:
    """A plan without the fields that vary run to run (wall time)."""
    out = json.loads(json.dumps(plan))
    out["solver"].pop("wall_s")
    return out


@pytest.fixture(scope="module")
def default_plan() -> dict:
    """`planner solve --sla 20tok/s --json` on the defaults (the ~1 s case; run once)."""
    return run_json("solve", "--sla", "20tok/s")


# --- solve -----------------------------------------------------------------------------------------


def test_solve_default_table():
    result = run("solve", "--sla", "20tok/s")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for text in ("gpt-moe-1.8t", "gb200-nvl72", "64 x", "isl 32768", "osl 1024", "fp4 weights", "OPTIMAL"):
        assert text in out, text
    assert re.search(r"\bTP\d+\b.*\bPP\d+\b", out), "no layout label in the table"
    # serving auto: the better mode's plan, the other's best on a line
    agg = re.search(r"layout: tp=\d+ attention_dp=\d+ pp=\d+ ep=\d+ moe_tp=\d+ dp=\d+", out)
    dis = re.search(r"^prefill: \d+ workers? x .*\n^decode: \d+ workers? x ", out, re.MULTILINE)
    assert bool(agg) != bool(dis)
    assert re.search(r"^(agg|disagg) best: ", out, re.MULTILINE)
    assert result.stderr == ""


def test_solve_json_contract(default_plan):
    p = default_plan
    assert PLAN_FIELDS <= set(p)
    for key, fields in NESTED_FIELDS.items():
        assert fields <= set(p[key]), (key, fields - set(p[key]))
    assert (p["model"], p["cluster"], p["gpus"], p["isl"], p["osl"]) == ("gpt-moe-1.8t", "gb200-nvl72", 64, 32768, 1024)
    assert p["precision"] == "fp4"
    assert p["solver"]["status"] == "OPTIMAL" and p["solver"]["method"] == "cpsat"
    assert p["solver"]["wall_s"] >= 0


def test_solve_json_consistent(default_plan):
    p = default_plan
    par, met, mem = p["parallel"], p["metrics"], p["memory"]
    assert met["tokens_per_s_per_user"] == pytest.approx(1000.0 / met["tpot_ms"], rel=1e-6)
    assert met["tokens_per_s_per_user"] >= 20.0
    assert met["tokens_per_s_per_gpu"] > 0 and met["ttft_ms"] > 0
    assert 0 < mem["weights_bytes"] <= mem["per_gpu_bytes"] <= mem["capacity_bytes"]
    assert mem["kv_cache_bytes"] >= 0
    assert par["dp"] * par["tp"] * par["attention_dp"] * par["pp"] <= p["gpus"]
    assert par["moe_tp"] * par["ep"] == par["tp"] * par["attention_dp"]
    assert p["batch"]["concurrency"] % (par["attention_dp"] * par["pp"]) == 0


def test_schema_and_plan_validate(default_plan):
    result = run("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "Plan"
    assert PLAN_FIELDS <= set(schema["properties"])
    defs = schema["$defs"]
    for key, fields in NESTED_FIELDS.items():
        assert fields <= set(defs[key.capitalize() if key != "solver" else "SolverInfo"]["properties"]), key
    plan = Plan.model_validate(default_plan)
    assert plan.model_dump(mode="json") == default_plan
    jsonschema.validate(default_plan, schema)


@pytest.mark.parametrize("sla", ["20tok/s", "20", "50ms", "20 tokens/s", "0.05s"])
def test_sla_forms_give_the_same_plan(sla):
    reference = strip_timing(run_json("solve", *SMALL, "--sla", "20tok/s"))
    plan = strip_timing(run_json("solve", *SMALL, "--sla", sla))
    assert plan["sla"]["min_tokens_per_s_per_user"] == pytest.approx(20.0)
    assert plan == reference


def test_ttft_forms_give_the_same_plan():
    a = strip_timing(run_json("solve", *SMALL, "--ttft", "5s"))
    b = strip_timing(run_json("solve", *SMALL, "--ttft", "5000ms"))
    assert a["sla"]["max_ttft_s"] == pytest.approx(5.0)
    assert a == b
    assert a["metrics"]["ttft_ms"] <= 5000


@pytest.mark.parametrize(
    "option, value",
    [("--sla", "fast"), ("--sla", "0"), ("--sla", "-3"), ("--sla", "5x"), ("--ttft", "5x"), ("--ttft", "0"),
     ("--ttft", "fast")],
)
def test_bad_sla_and_ttft_values(option, value):
    line = error_line("solve", *SMALL, f"{option}={value}")
    assert f"'{option}'" in line
    assert f"'{value}'" in line


def test_top_three_distinct_and_sorted():
    plans = run_json("solve", *SMALL, "--top", "3")
    assert isinstance(plans, list) and len(plans) == 3
    keys = [tuple(p["parallel"][k] for k in ("tp", "attention_dp", "pp", "ep", "moe_tp")) for p in plans]
    assert len(set(keys)) == 3, keys
    per_gpu = [p["metrics"]["tokens_per_s_per_gpu"] for p in plans]
    assert per_gpu == sorted(per_gpu, reverse=True)
    assert all(p["metrics"]["tokens_per_s_per_user"] >= 20 for p in plans)
    # The first of the top 3 is the plan of --top 1.
    assert strip_timing(plans[0])["parallel"] == run_json("solve", *SMALL)["parallel"]


def test_exhaustive_matches_cpsat():
    cpsat = run_json("solve", *SMALL, "--method", "cpsat")
    oracle = run_json("solve", *SMALL, "--method", "exhaustive")
    assert oracle["solver"]["method"] == "exhaustive"
    assert cpsat["metrics"]["tokens_per_s_per_gpu"] == pytest.approx(oracle["metrics"]["tokens_per_s_per_gpu"],
                                                                      rel=1e-3)


# --- estimate --------------------------------------------------------------------------------------


def test_estimate_table():
    result = run("estimate", *SMALL, "--tp", "2", "--dp", "2", "--concurrency", "16")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "llama-3.1-8b" in out and "h100-sxm" in out
    assert "TP2 PP1 DP2" in out
    assert "tok/s/user" in out and "TPOT" in out and "memory/GPU" in out


def test_estimate_json():
    p = run_json("estimate", *SMALL, "--tp", "2", "--dp", "2", "--concurrency", "16", "--chunk", "1024")
    Plan.model_validate(p)
    assert p["parallel"] == {"tp": 2, "attention_dp": 1, "pp": 1, "ep": 1, "moe_tp": 2, "dp": 2}
    assert p["batch"]["concurrency"] == 16 and p["batch"]["chunk_tokens"] == 1024
    assert p["solver"]["status"] == "EVALUATED" and p["solver"]["method"] == "estimate"
    assert p["metrics"]["tokens_per_s_per_user"] == pytest.approx(1000 / p["metrics"]["tpot_ms"], rel=1e-6)
    assert p["memory"]["per_gpu_bytes"] <= p["memory"]["capacity_bytes"]
    assert p["gpus"] == 8  # --gpus given explicitly in SMALL


def test_estimate_gpus_default_to_layout():
    p = run_json("estimate", "--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--precision", "fp8",
                 "--isl", "1000", "--osl", "200", "--tp", "2", "--pp", "2", "--dp", "2", "--concurrency", "4")
    assert p["gpus"] == p["gpus_used"] == 8


def test_estimate_matches_solve():
    """Evaluating the solver's own plan reproduces its figures."""
    best = run_json("solve", *SMALL)
    q = best["parallel"]
    p = run_json("estimate", *SMALL, *(f"--{k.replace('_', '-')}={v}" for k, v in q.items()),
                 "--concurrency", str(best["batch"]["concurrency"]), "--chunk", str(best["batch"]["chunk_tokens"]))
    assert p["metrics"]["tokens_per_s_per_gpu"] == pytest.approx(best["metrics"]["tokens_per_s_per_gpu"], rel=1e-9)


@pytest.mark.parametrize(
    "args, expected",
    [
        ([*SMALL, "--tp", "3"], ["tp must divide the attention heads", "tp=3", "32 heads"]),
        (["--model", "mixtral-8x7b", "--cluster", "h100-sxm", "--precision", "fp8", "--isl", "1000", "--osl", "200",
          "--attention-dp", "3", "--ep", "3", "--concurrency", "3"],
         ["ep must divide the routed experts", "ep=3", "8 experts"]),
        ([*SMALL, "--pp", "3"], ["pp must divide the layers", "32 layers"]),
        ([*SMALL, "--pp", "2", "--concurrency", "3"], ["concurrency 3", "attention_dp * pp = 2", "multiple of 2"]),
        ([*SMALL, "--tp", "4", "--dp", "4"], ["must not exceed the GPUs given", "16 GPUs, 8 given"]),
        ([*SMALL, "--tp", "2", "--attention-dp", "2", "--concurrency", "2"], ["a dense model has attention_dp = 1"]),
        (["--model", "mixtral-8x7b", "--cluster", "h100-sxm", "--precision", "fp8", "--isl", "1000", "--osl", "200",
          "--tp", "2", "--ep", "2", "--moe-tp", "2"],
         ["re-split as moe_tp * ep", "moe_tp*ep = 4", "tp*attention_dp = 2"]),
        ([*SMALL, "--ep", "2"], ["'--ep'", "ep=2 does not divide tp*attention_dp=1"]),
        (["--model", "llama-3.1-405b", "--cluster", "h100-sxm", "--precision", "fp8", "--isl", "1000", "--osl", "200"],
         ["memory per GPU must fit the usable HBM", "GB per GPU"]),
        ([*SMALL, "--chunk", "1", "--concurrency", "1000"], ["prefill chunk must admit new requests"]),
    ],
    ids=["heads", "experts", "layers", "concurrency", "gpu-budget", "dense-adp", "moe-resplit", "ep-no-moe-tp",
         "memory", "chunk"],
)
def test_estimate_invalid_layouts(args, expected):
    line = error_line("estimate", *args)
    for text in expected:
        assert text in line, (text, line)


# --- catalogs, schema, help ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["models", "clusters"])
def test_catalog_listing(kind):
    stems = sorted(f.stem for f in (REPO / kind).glob("*.yaml"))
    assert len(stems) >= 5
    result = run(kind)
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.stdout.splitlines()[2:] if line.strip()}
    assert listed == set(stems)
    entries = run_json(kind)
    assert sorted(e["name"] for e in entries) == stems


def test_every_command_has_help():
    assert {"solve", "estimate", "models", "clusters", "schema"} <= set(main.commands)
    result = run("--help")
    assert result.exit_code == 0
    for name, command in main.commands.items():
        assert name in result.stdout
        assert command.help and command.help.strip(), name
        sub = run(name, "--help")
        assert sub.exit_code == 0, name
        assert f"planner {name}" in sub.stdout and "--help" in sub.stdout


README = REPO / "README.md"


def test_readme_mentions_every_command():
    text = README.read_text()
    missing = [name for name in main.commands if f"planner {name}" not in text]
    assert not missing, missing


# --- names, aliases and files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, suggestion",
    [("--model", "llama-3.1-7b", "llama-3.1-8b"), ("--cluster", "h100", "h100-sxm"),
     ("--model", "mixtral-8x8b", "mixtral-8x7b")],
)
def test_unknown_name_suggests(option, value, suggestion):
    line = error_line("solve", option, value)
    kind = option.lstrip("-")
    assert f"unknown {kind} '{value}'" in line
    assert "did you mean" in line and suggestion in line


def test_aliases():
    p = run_json("solve", "--model", "meta-llama/Llama-3.1-70B", "--cluster", "h100_sxm", "--gpus", "8",
                 "--isl", "1000", "--osl", "200", "--precision", "fp8")
    assert (p["model"], p["cluster"]) == ("llama-3.1-70b", "h100-sxm")


def test_model_yaml_file(tmp_path):
    path = tmp_path / "my-model.yaml"
    shutil.copy(REPO / "models" / "llama-3.1-8b.yaml", path)
    by_file = strip_timing(run_json("solve", *SMALL, "--model", str(path)))
    by_name = strip_timing(run_json("solve", *SMALL))
    assert by_file == by_name


def test_cluster_yaml_file(tmp_path):
    path = tmp_path / "my-cluster.yaml"
    shutil.copy(REPO / "clusters" / "h100-sxm.yaml", path)
    p = run_json("estimate", *SMALL, "--cluster", str(path), "--tp", "2")
    assert p["cluster"] == "h100-sxm"


def test_malformed_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nnum_layers: [1, 2\nhidden_size: 3\n")
    line = error_line("solve", *SMALL, "--model", str(path))
    assert "broken.yaml" in line and "malformed YAML" in line
    assert re.search(r"line \d+", line)


def test_yaml_with_bad_field(tmp_path):
    path = tmp_path / "negative.yaml"
    text = (REPO / "models" / "llama-3.1-8b.yaml").read_text()
    assert "num_layers: 32" in text
    path.write_text(text.replace("num_layers: 32", "num_layers: -1"))
    line = error_line("solve", *SMALL, "--model", str(path))
    assert "negative.yaml" in line and "num_layers" in line


def test_yaml_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "expected a mapping" in error_line("solve", *SMALL, "--model", str(path))


def test_missing_model_file(tmp_path):
    line = error_line("solve", *SMALL, "--model", str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in line and "no such file" in line


def test_hf_config_json(tmp_path):
    folder = tmp_path / "llama8b"
    folder.mkdir()
    shutil.copyfile(HF_LLAMA_8B, folder / "config.json")
    p = strip_timing(run_json("solve", *SMALL, "--model", str(folder / "config.json")))
    assert p["model"] == "llama8b"  # named after the folder
    reference = strip_timing(run_json("solve", *SMALL))
    assert p["parallel"] == reference["parallel"]
    assert p["metrics"]["tokens_per_s_per_gpu"] == pytest.approx(reference["metrics"]["tokens_per_s_per_gpu"],
                                                                 rel=1e-6)


def test_malformed_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama",\n "hidden_size": 4096,,\n}')
    line = error_line("solve", *SMALL, "--model", str(path))
    assert "config.json" in line and "malformed JSON" in line and "line 2" in line


def test_hf_config_missing_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama"}')
    line = error_line("solve", *SMALL, "--model", str(path))
    assert "missing 'num_hidden_layers'" in line


@pytest.mark.parametrize("option", ["--model", "--cluster"])
def test_non_utf8_yaml(tmp_path, option):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: x\nsource: \xff\xfe caf\xe9\n")
    assert "latin1.yaml" in error_line("solve", *SMALL, option, str(path))


def test_cluster_json_path_is_a_directory(tmp_path):
    folder = tmp_path / "cluster.json"
    folder.mkdir()
    assert "cluster.json" in error_line("solve", *SMALL, "--cluster", str(folder))


# --- infeasible problems ---------------------------------------------------------------------------


def test_unreachable_sla_reports_highest():
    line = error_line("solve", *SMALL, "--sla", "100000")
    assert "unreachable" in line and "highest" in line
    m = re.search(r"highest[^0-9]*([0-9]+(?:\.[0-9]+)?) tokens/s/user", line)
    assert m, line
    highest = float(m.group(1))
    assert 20 < highest < 100000
    # The reported figure is truthful: just below it a plan exists.
    p = run_json("solve", *SMALL, "--sla", f"{highest * 0.99:.3f}")
    assert p["metrics"]["tokens_per_s_per_user"] >= highest * 0.99


def test_unreachable_ttft():
    line = error_line("solve", *SMALL, "--ttft", "1ms")
    assert "TTFT" in line and "unreachable" in line and re.search(r"lowest TTFT .* \d+ ms", line)


def test_model_does_not_fit_names_fewest_gpus():
    args = ["--model", "llama-3.1-405b", "--cluster", "l40s", "--precision", "fp8", "--isl", "1000", "--osl", "200"]
    line = error_line("solve", *args, "--gpus", "1")
    assert "does not fit" in line
    m = re.search(r"fits on (\d+)", line)
    assert m, line
    fewest = int(m.group(1))
    assert fewest > 1
    # The claim holds: it fits on `fewest` GPUs and not on one fewer.
    assert run_json("solve", *args, "--gpus", str(fewest), "--sla", "0.01")["gpus_used"] <= fewest
    assert f"fits on {fewest}" in error_line("solve", *args, "--gpus", str(fewest - 1), "--sla", "0.01")


def test_infeasible_chunks_are_not_reported_as_memory():
    line = error_line("solve", *SMALL, "--chunks", "1", "--serving", "agg")
    assert "fits on 1 " not in line
    assert "chunk" in line


def test_fp4_on_hopper_runs_weight_only():
    """H100 has no FP4 tensor cores: 4-bit weights are stored in 4 bits and multiplied in BF16 (weight-only, W4A16).

    (This used to be an error naming fp4; planner/specs.py Problem.gemm_math now falls back instead.)
    """
    base = ["--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--isl", "1000", "--osl", "200", "--tp", "2"]
    result = run("estimate", *base, "--precision", "fp4")
    assert result.exit_code == 0, result.stderr
    assert "fp4 weights" in result.stdout and "weight-only" in result.stdout
    fp4 = run_json("estimate", *base, "--precision", "fp4")
    fp8 = run_json("estimate", *base, "--precision", "fp8")
    assert fp4["precision"] == "fp4" and fp4["gemm_math"] == "bf16"
    assert fp4["memory"]["weights_bytes"] < 0.7 * fp8["memory"]["weights_bytes"]
    result = run("estimate", *base, "--precision", "w4a8")
    assert result.exit_code == 0, result.stderr
    assert "w4a8 weights (fp8 math) /" in result.stdout  # an FP8 activation path: not weight-only
    assert run_json("estimate", *base, "--precision", "w4a8")["gemm_math"] == "fp8"


GPT_OSS = ["--model", "gpt-oss-120b", "--isl", "1000", "--osl", "200", "--tp", "2"]


@pytest.mark.parametrize("alias", ["int4_wo", "awq", "gptq", "w4a16", "INT4"])
def test_int4_aliases_are_accepted_and_shown_canonical(alias):
    base = ["--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--isl", "1000", "--osl", "200", "--tp", "2"]
    p = run_json("estimate", *base, "--precision", alias)
    assert p["precision"] == "int4" and p["gemm_math"] == "bf16"
    assert p["memory"]["weights_bytes"] == run_json("estimate", *base, "--precision", "int4")["memory"]["weights_bytes"]


def test_mxfp4_is_its_own_format():
    """MXFP4 (1 scale per 32) is smaller than NVFP4 (1 per 16), FP4 math on Blackwell, weight-only on Hopper."""
    mx = run_json("estimate", *GPT_OSS, "--cluster", "b200", "--precision", "mxfp4")
    nv = run_json("estimate", *GPT_OSS, "--cluster", "b200", "--precision", "fp4")
    assert mx["precision"] == "mxfp4" and mx["gemm_math"] == "fp4" and mx["expert_precision"] is None
    assert mx["memory"]["weights_bytes"] < 0.97 * nv["memory"]["weights_bytes"]
    assert run_json("estimate", *GPT_OSS, "--cluster", "h100-sxm", "--precision", "mxfp4")["gemm_math"] == "bf16"


def test_component_precisions_on_the_command_line():
    """--precision checkpoint = the published formats (gpt-oss: BF16 attention, MXFP4 experts), the same as
    --precision bf16 --expert-precision mxfp4; the plan names both formats."""
    ckpt = run_json("estimate", *GPT_OSS, "--cluster", "b200", "--precision", "checkpoint")
    both = run_json("estimate", *GPT_OSS, "--cluster", "b200", "--precision", "bf16", "--expert-precision", "mxfp4")
    assert (ckpt["precision"], ckpt["expert_precision"], ckpt["gemm_math"], ckpt["expert_gemm_math"]) == (
        "bf16", "mxfp4", "bf16", "fp4")
    assert ckpt["memory"] == both["memory"] and ckpt["metrics"] == both["metrics"]
    text = run("estimate", *GPT_OSS, "--cluster", "h100-sxm", "--precision", "checkpoint").stdout
    assert "bf16 weights + mxfp4 experts (bf16 math, weight-only) / fp8 KV cache" in text  # quantised experts
    # an expert format equal to the weights' is no component format of its own
    same = run_json("estimate", *GPT_OSS, "--cluster", "b200", "--precision", "fp8", "--expert-precision", "fp8")
    assert same["expert_precision"] is None and same["expert_gemm_math"] is None


def test_compare_takes_expert_precision_per_case():
    result = run("compare", "--model", "gpt-oss-120b", "--cluster", "b200", "--gpus", "8", "--isl", "1000", "--osl",
                 "200", "--precision", "bf16", "--expert-precision", "mxfp4", "--precision", "mxfp4",
                 "--expert-precision", "mxfp4", "--points", "3", "--quiet", "--json")
    assert result.exit_code == 0, result.stderr
    cases = [f["case"] for f in json.loads(result.stdout)["frontiers"]]
    assert cases == ["gpt-oss-120b on 8 x b200 bf16 + mxfp4 experts", "gpt-oss-120b on 8 x b200 mxfp4"]


@pytest.mark.parametrize(
    "args, text",
    [
        (["estimate", "--model", "llama-3.1-8b", "--expert-precision", "mxfp4"], "llama-3.1-8b is a dense model"),
        (["solve", "--precision", "checkpoint"], "gpt-moe-1.8t states no checkpoint formats"),
        (["solve", "--expert-precision", "fp3"], "'fp3' is not one of 'fp4', 'mxfp4', 'int4'"),
    ],
)
def test_component_precision_errors_are_one_line(args, text):
    assert text in error_line(*args)


def test_unknown_precision_lists_every_name():
    line = error_line("solve", "--precision", "fp3")
    for name in ("fp4", "mxfp4", "int4", "w4a8", "fp8", "bf16", "nvfp4", "int4_wo", "awq", "gptq", "w4a16",
                 "checkpoint"):
        assert f"'{name}'" in line


@pytest.mark.parametrize(
    "args, text",
    [
        (["solve", "--gpus", "0"], "'--gpus'"),
        (["solve", "--precision", "fp3"], "'--precision'"),
        (["solve", "--method", "magic"], "'--method'"),
        (["solve", "--top", "0"], "'--top'"),
        (["solve", "--chunks", "0:10:0"], "'--chunks'"),
        (["solve", "--nonsense"], "--nonsense"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_usage_errors_are_one_line(args, text):
    assert text in error_line(*args)


LLAMA_70B_ONE_H200 = ["--model", "llama-3.1-70b", "--cluster", "h200-sxm", "--gpus", "1", "--isl", "1024", "--osl",
                      "1024", "--precision", "fp8", "--sla", "30tok/s"]


def test_micro_batches_option_sets_the_batch_grid():
    """Every whole batch (1:256:1) finds the batch between two default grid values (96 < 116 < 128 here),
    never worse than the default grid; a given list is all the solver may choose from."""
    default = run_json("solve", *LLAMA_70B_ONE_H200)
    exact = run_json("solve", *LLAMA_70B_ONE_H200, "--micro-batches", "1:256:1")
    assert exact["batch"]["micro_batch"] not in DEFAULT_MICRO_BATCHES
    assert exact["metrics"]["tokens_per_s_per_gpu"] > default["metrics"]["tokens_per_s_per_gpu"]
    few = run_json("solve", *LLAMA_70B_ONE_H200, "--micro-batches", "8,16")
    assert few["batch"]["micro_batch"] in (8, 16)
    f = run_json("frontier", *SMALL, "--points", "3", "--micro-batches", "4,8")
    assert {pt["batch"]["micro_batch"] for pt in f["points"]} <= {4, 8}
    sized = run_json("size", *SMALL, "--demand", "1000tok/s", "--sla", "50tok/s", "--micro-batches", "2,4")
    assert sized["plan"]["batch"]["micro_batch"] in (2, 4)


@pytest.mark.parametrize("value", ["0,3", "abc", "8:4:1"])
def test_bad_micro_batches_are_one_line(value):
    line = error_line("solve", *SMALL, "--micro-batches", value)
    assert "--micro-batches" in line


# --- the audit's time-limit and size cases -----------------------------------------------------------------


@pytest.mark.parametrize("command", [["solve"], ["frontier", "--points", "3", "--quiet"],
                                     ["size", "--demand", "2req/s", "--sla", "20tok/s"]])
def test_a_short_time_limit_answers_or_says_so(command):
    """--time-limit 0.1 on the default case: a plan (the search fits the limit and its slack), or one line
    naming the time limit; never 'no plan satisfies the rules' or an internal error."""
    result = run(*command, "--time-limit", "0.1", "--json")  # one run: a second may time differently
    if result.exit_code == 0:
        json.loads(result.stdout)
    else:
        assert isinstance(result.exception, SystemExit) and result.exit_code == 2 and result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("planner") and "error:" in lines[0], result.stderr
        assert "time limit" in lines[0] and "no plan satisfies" not in lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "1e9"])
def test_absurd_time_limits_are_refused(value):
    assert "'--time-limit'" in error_line("solve", "--time-limit", value)


@pytest.mark.parametrize("args, text", [
    (["--micro-batches", "1:5000:1", "--time-limit", "5"], "46,400,000 (layout, micro-batch, chunk) options"),
    (["--chunks", "1:100000:1"], "1,160,000,000 (layout, micro-batch, chunk) options"),
    (["--micro-batches", "1:2000:1", "--time-limit", "2"], "raise --time-limit to"),
])
def test_a_space_too_large_is_refused_at_once(args, text):
    """Refused before any evaluation, in one line naming the size and what to change (not after minutes)."""
    import time

    t0 = time.perf_counter()
    line = error_line("solve", *args)
    assert text in line and ("--micro-batches" in line or "--chunks" in line)
    assert time.perf_counter() - t0 < 10


def test_a_quarter_million_gpus_get_a_plan():
    """The audit's 262,144 GPUs: CP-SAT said 'no plan' where the oracle found one."""
    p = run_json("solve", "--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", "262144", "--isl", "1000",
                 "--osl", "200", "--precision", "fp8", "--sla", "20tok/s", "--serving", "agg")
    assert p["solver"]["status"] == "OPTIMAL" and p["solver"]["certified"] is True
    assert p["gpus_used"] == 262144


def test_an_absurd_demand_needs_more_gpus():
    line = error_line("size", *SMALL, "--demand", "1e30req/s", "--sla", "20tok/s")
    assert "needs more than 65536 h100-sxm GPUs" in line and "2e+32 output tokens/s" in line


def test_the_oracle_does_not_import_ortools():
    import subprocess
    import sys

    code = "import sys, planner.oracle, planner.search; sys.exit('ortools' in ' '.join(sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# --- groups spanning scale-up domains -----------------------------------------------------------------------

TP16_H200 = ("--model", "deepseek-r1", "--cluster", "h200-sxm", "--precision", "fp8", "--tp", "16", "--isl", "1000",
             "--osl", "1000", "--concurrency", "64")


def test_a_plan_says_which_groups_span_domains():
    """TP16 over two 8-GPU nodes: the JSON plan names the group and its domains, the text says how it talks."""
    plan = run_json("estimate", *TP16_H200)
    assert plan["spans_domains"] == [{"group": "tp", "gpus": 16, "domains": 2, "domain_gpus": 8}]
    text = run("estimate", *TP16_H200).stdout
    assert "TP16 spans 2 scale-up domains of 8 GPUs: its all-reduce runs hierarchically over scale-out" in text
    wide = run_json("estimate", "--model", "qwen3-235b-a22b", *TP16_H200[2:-2], "--attention-dp", "2", "--ep", "32",
                    "--pp", "2", "--concurrency", "64")
    assert [(s["group"], s["domains"]) for s in wide["spans_domains"]] == [("tp", 2), ("moe_stage", 4),
                                                                          ("pipeline", 8)]
    assert run_json("estimate", *TP16_H200[:7], "8", *TP16_H200[8:])["spans_domains"] == []


def test_a_tp_group_of_part_domains_is_refused_in_one_line():
    line = error_line("estimate", "--model", "mixtral-8x22b", "--cluster", "a100-sxm", "--precision", "bf16",
                      "--tp", "12", "--isl", "4000", "--osl", "1000")
    assert "must span whole domains" in line and "tp=12 spans 1.5 8-GPU scale-up domains" in line
