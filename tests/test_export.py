"""planner export: every option and key it emits is one the engine defines at that version (tests/data/engines,
extracted from the engines' published packages by tests/data/engines/regenerate.py), the plan's degrees, batch and
chunk are carried, unexpressible layouts fail with one line, and the CLI reads what `solve --json` writes."""

from __future__ import annotations

import json
import shlex
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from clirun import error_line, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import planner
from planner import Speculation, estimate, solve
from planner.cli import main
from planner.exports import FLAGS, ExportError, export, memory_fractions
from planner.specs import Batch, Parallel, Plan

DATA = Path(__file__).resolve().parent / "data" / "engines"


@cache
def engine_data(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


VLLM, SGLANG, DYNAMO, TRTLLM = "vllm-0.33.0", "sglang-0.5.23", "dynamo-1.6.1", "trtllm-1.2.1"


def key_schema(tree: dict) -> dict:
    """JSON Schema of a key tree: each level closed to the keys the tree has."""
    return {"type": "object", "additionalProperties": False,
            "properties": {k: key_schema(v) if v else {} for k, v in tree.items()}}


# --- the plans -------------------------------------------------------------------------------------


@cache
def plans() -> dict[str, Plan]:
    """A handful of small catalog problems, solved or estimated (about a second in all)."""
    sla = {"min_tokens_per_s_per_user": 20}
    out = {
        "dense": solve(model="llama-3.1-70b", cluster="h100-sxm", gpus=8, precision="fp8", **sla)[0],
        "moe_adp": solve(model="qwen3-30b-a3b", cluster="h100-sxm", gpus=8, precision="bf16", **sla)[0],
        "disagg": solve(model="llama-3.1-8b", cluster="h100-sxm", gpus=8, precision="bf16", serving="disagg",
                        **sla)[0],
        "multinode_tp": solve(model="llama-3.1-405b", cluster="h100-sxm", gpus=16, precision="bf16", **sla)[0],
        "mtp": solve(model="deepseek-r1", cluster="h200-sxm", gpus=16, precision="fp8",
                     speculation=Speculation(method="mtp"), **sla)[0],
        "checkpoint_mixed": solve(model="gpt-oss-120b", cluster="h100-sxm", gpus=8, precision="checkpoint",
                                  **sla)[0],
        "pipeline": estimate(model="llama-3.1-70b", cluster="h100-sxm", gpus=8, precision="fp8",
                             parallel=Parallel(tp=4, pp=2), concurrency=16, chunk=512),
        "multinode_adp": estimate(model="deepseek-r1", cluster="h100-sxm", gpus=16, precision="fp8",
                                  parallel=Parallel(tp=1, attention_dp=16, ep=16), concurrency=64, chunk=256),
        "draft": estimate(model="llama-3.1-70b", cluster="h100-sxm", gpus=8, precision="fp8",
                          parallel=Parallel(tp=4, dp=2),
                          speculation=Speculation(method="draft", draft_model="llama-3.1-8b", draft_tokens=3)),
    }
    assert out["disagg"].serving == "disagg" and out["moe_adp"].parallel.attention_dp > 1
    assert out["multinode_tp"].parallel.replica_gpus > 8 and out["mtp"].speculation is not None
    return out


PLAN_NAMES = ["dense", "moe_adp", "disagg", "multinode_tp", "mtp", "checkpoint_mixed", "pipeline", "multinode_adp",
              "draft"]


# --- checking one export ----------------------------------------------------------------------------


def options(argv: list[str]) -> dict[str, str | bool]:
    """--flag value pairs of a command (a flag without a value: True)."""
    out: dict[str, str | bool] = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[a] = nxt if nxt is not None and not nxt.startswith("--") else True
    return out


def check_flags(argv: list[str], data: dict) -> dict[str, str | bool]:
    """Every option of argv is one the engine defines, with a value among its choices; its JSON options' keys
    are the engine's."""
    opts = options(argv)
    unknown = sorted(set(opts) - set(data["flags"]))
    assert not unknown, f"{data['package']} {data['version']} defines no {unknown}"
    for flag, value in opts.items():
        if flag in data.get("choices", {}):
            assert value in data["choices"][flag], (flag, value)
        if flag in data.get("json_keys", {}):
            cfg = json.loads(value)
            assert set(cfg) <= set(data["json_keys"][flag]), (flag, cfg)
            for key, v in cfg.items():
                allowed = data["json_choices"].get(f"{flag}.{key}")
                assert allowed is None or v in allowed, (flag, key, v)
    return opts


def pools(plan: Plan):
    """(role, parallel, micro_batch, chunk, memory, instances) of each role of a plan."""
    if plan.serving == "disagg":
        return [(p.role, p.parallel, p.batch.micro_batch, p.batch.chunk_tokens, p.memory, p.workers)
                for p in (plan.prefill, plan.decode)]
    return [("server", plan.parallel, plan.batch.micro_batch, plan.batch.chunk_tokens, plan.memory, plan.parallel.dp)]


def k_of(plan: Plan) -> int:
    return plan.speculation.draft_tokens if plan.speculation else 0


def check_vllm(plan: Plan, out) -> None:
    data = engine_data(VLLM)
    for role, par, m, chunk, memory, n in pools(plan):
        cmds = [c for c in out.commands if c.role == role]
        assert cmds and all(c.instances == n and c.gpus == par.replica_gpus for c in cmds)
        for c in cmds:
            assert c.argv[:2] == ["vllm", "serve"]
            o = check_flags(c.argv[3:], data)
            assert int(o["--tensor-parallel-size"]) == par.tp and int(o["--pipeline-parallel-size"]) == par.pp
            assert int(o.get("--data-parallel-size", 1)) == par.attention_dp
            moe = planner.load_model(plan.model).is_moe
            assert ("--enable-expert-parallel" in o) == (moe and par.ep > 1)
            assert float(o["--gpu-memory-utilization"]) == memory_fractions(memory)["usable"]
            assert o["--kv-cache-dtype"] == {"fp8": "fp8", "bf16": "auto"}[plan.kv_precision.value]
            if m:
                assert int(o["--max-num-seqs"]) == m * par.pp
            if chunk:
                assert int(o["--max-num-batched-tokens"]) == chunk + (m or 0) * (1 + k_of(plan))
            assert int(o["--max-model-len"]) == plan.isl + plan.osl
            if plan.speculation:
                assert json.loads(o["--speculative-config"])["num_speculative_tokens"] == k_of(plan)
            assert ("--kv-transfer-config" in o) == (role != "server")
            if c.nodes > 1:
                assert c.ranks in ("first", "others") and ("--headless" in o) == (c.ranks == "others")


def check_sglang(plan: Plan, out) -> None:
    data = engine_data(SGLANG)
    for role, par, m, chunk, memory, n in pools(plan):
        (c,) = [c for c in out.commands if c.role == role]
        assert c.instances == n and c.argv[:3] == ["python", "-m", "sglang.launch_server"]
        o = check_flags(c.argv[3:], data)
        tp, ep, moe_dp = int(o["--tp-size"]), int(o.get("--ep-size", 1)), int(o.get("--moe-dp-size", 1))
        assert tp == par.tp * par.attention_dp and int(o["--pp-size"]) == par.pp
        assert int(o.get("--attn-dp-size", 1)) == par.attention_dp
        assert tp // int(o.get("--attn-dp-size", 1)) == par.tp  # SGLang's attention TP
        assert ep == par.ep and tp // ep // moe_dp == par.moe_tp  # SGLang's MoE TP (runtime_context)
        if m:
            assert int(o["--max-running-requests"]) == m * par.pp * par.attention_dp
        if chunk:
            assert int(o["--chunked-prefill-size"]) == chunk * par.attention_dp
        assert float(o["--mem-fraction-static"]) == memory_fractions(memory)["static"]
        static = memory_fractions(memory)["static"] * memory.capacity_bytes
        assert static >= memory.weights_bytes + memory.kv_cache_bytes + memory.draft_bytes
        if role != "server":
            assert o["--disaggregation-mode"] == role
        if c.nodes > 1:
            assert int(o["--nnodes"]) == c.nodes and "--dist-init-addr" in o


def check_trtllm(plan: Plan, out) -> None:
    schema = key_schema(engine_data(TRTLLM)["keys"])
    for role, par, m, chunk, memory, _ in pools(plan):
        (c,) = [c for c in out.commands if c.role == role]
        name = options(c.argv)["--extra_llm_api_options"]
        cfg = yaml.safe_load(out.files[name])
        jsonschema.validate(cfg, schema)
        check_trtllm_options(plan, cfg, par, m, chunk, memory)


def check_trtllm_options(plan: Plan, cfg: dict, par: Parallel, m, chunk, memory) -> None:
    jsonschema.validate(cfg, key_schema(engine_data(TRTLLM)["keys"]))
    assert cfg["tensor_parallel_size"] == par.stage_gpus and cfg["pipeline_parallel_size"] == par.pp
    assert cfg["enable_attention_dp"] == (par.attention_dp > 1)
    assert cfg.get("moe_expert_parallel_size", 1) == par.ep
    if m:
        assert cfg["max_batch_size"] == m
    if chunk:
        assert cfg["max_num_tokens"] == chunk + (m or 0) * (1 + k_of(plan))
    assert cfg["kv_cache_config"]["free_gpu_memory_fraction"] == memory_fractions(memory)["free_kv"]


def check_dynamo(plan: Plan, out) -> None:
    data = engine_data(DYNAMO)
    graph = yaml.safe_load(out.files["dynamo.yaml"])
    jsonschema.validate(graph, data["schema"])
    workers = [c for c in graph["spec"]["components"] if c["type"] != "frontend"]
    for (role, par, m, chunk, memory, n), comp in zip(pools(plan), workers):
        assert comp["replicas"] == n and comp["type"] == ("worker" if role == "server" else role)
        (container,) = comp["podTemplate"]["spec"]["containers"]
        command = " ".join(container["command"])
        argv = container["args"]
        opts = options(argv)
        assert not set(opts) - set(data["worker_flags"][command]), set(opts) - set(data["worker_flags"][command])
        if par.replica_gpus > 8:
            assert comp["multinode"]["nodeCount"] * int(container["resources"]["limits"]["nvidia.com/gpu"]) \
                == par.replica_gpus
        if out.worker == "trtllm":
            check_trtllm_options(plan, json.loads(opts["--override-engine-args"]), par, m, chunk, memory)
        elif out.worker == "vllm":
            assert int(opts["--tensor-parallel-size"]) == par.tp
        else:
            assert int(opts["--tp-size"]) == par.stage_gpus


CHECKS = {"vllm": check_vllm, "sglang": check_sglang, "trtllm": check_trtllm, "dynamo": check_dynamo}
ENGINES = ["vllm", "sglang", "trtllm", "dynamo"]


def model_path(plan: Plan, engine: str) -> str | None:
    """A checkpoint for plans whose formats the catalog's checkpoint lacks and the engine cannot make."""
    return "/models/fp8" if engine == "trtllm" and plan.precision.value == "fp8" and plan.model.startswith("llama") \
        else None


# --- the tests ------------------------------------------------------------------------------------


def test_the_data_is_the_engines():
    """The lists name the engines' packages and carry the options export relies on; Dynamo's own DGD templates
    pass the schema the tests check exports with."""
    v, s, d, t = (engine_data(n) for n in (VLLM, SGLANG, DYNAMO, TRTLLM))
    assert (v["package"], v["version"], s["package"], s["version"]) == ("vllm", "0.33.0", "sglang", "0.5.23")
    assert v["licence"] == s["licence"] == "Apache-2.0" and len(v["wheel_sha256"]) == 64
    assert {"--tensor-parallel-size", "--enable-expert-parallel", "--max-num-seqs"} <= set(v["flags"])
    assert {"--tp-size", "--attn-dp-size", "--ep-size", "--max-running-requests"} <= set(s["flags"])
    assert "--enable-dp-attention" in s["flags"]  # deprecated at 0.5.23: export uses --attn-dp-size
    assert d["templates"] and t["unavailable"]
    for name, template in d["templates"].items():
        jsonschema.validate(template, d["schema"]), name
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**d["templates"]["dynamo/profiler/templates/dgd/vllm/agg.yaml"], "extra": 1},
                            d["schema"])


def test_every_flag_of_the_table_is_the_engines():
    """FLAGS, the one table of option names: each vLLM and SGLang option is in that version's list, each
    TensorRT-LLM key in its key tree, each Dynamo worker option in dynamo.<worker>'s list."""
    for (engine, version), table in FLAGS.items():
        if engine in ("vllm", "sglang"):
            flags = set(engine_data(f"{engine}-{version}")["flags"])
            assert {v for v in table.values()} <= flags, {v for v in table.values()} - flags
        elif engine == "trtllm":
            keys = engine_data(f"trtllm-{version}")["keys"]
            for name, key in table.items():
                if key.startswith("--"):
                    continue  # trtllm-serve's options: not in any package reachable here (data README)
                node = keys
                for part in key.split("."):
                    assert part in node, (name, key)
                    node = node[part]
        else:
            worker = engine_data(f"dynamo-{version}")["worker_flags"]
            assert table["disagg_mode"] in worker["python3 -m dynamo.vllm"]
            assert {table["trtllm_model"], table["trtllm_options"], table["disagg_mode"]} <= set(
                worker["python3 -m dynamo.trtllm"])
            assert table["api_version"] == engine_data(f"dynamo-{version}")["schema"]["properties"]["apiVersion"][
                "const"]


@pytest.mark.parametrize("name", PLAN_NAMES)
@pytest.mark.parametrize("engine", ENGINES)
def test_export_uses_the_engines_flags_and_carries_the_plan(name: str, engine: str):
    plan = plans()[name]
    try:
        out = export(plan, engine, model_path=model_path(plan, engine),
                     worker="sglang" if engine == "dynamo" and name in ("moe_adp", "multinode_adp") else None)
    except ExportError as e:
        # what the engines cannot express: TensorRT-LLM's draft models (not in its checked keys)
        assert (engine, name) in {("trtllm", "draft"), ("dynamo", "draft")} and "\n" not in str(e), (engine, name, e)
        assert str(e).startswith(engine if engine != "dynamo" else "vllm")
        return
    CHECKS[engine](plan, out)
    if "launch.sh" in out.files:
        script = out.files["launch.sh"]
        assert script.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in script
        body = [ln for ln in script.replace("\\\n", " ").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert all(shlex.split(ln) for ln in body)  # every line parses as shell words


def test_dynamo_workers_of_each_engine():
    for worker in ("vllm", "sglang", "trtllm"):
        for name in ("dense", "disagg", "multinode_tp"):
            plan = plans()[name]
            out = export(plan, "dynamo", worker=worker, model_path="/models/fp8" if worker == "trtllm" else None)
            assert out.worker == worker
            check_dynamo(plan, out)


def test_checkpoints_and_formats():
    """The catalog's checkpoint; an alias published in the plan's format; load-time FP8 where the engine has it;
    an explicit --model-path; none for a model without a public checkpoint."""
    dense, mixed = plans()["dense"], plans()["checkpoint_mixed"]
    out = export(dense, "vllm")
    assert out.model == "meta-llama/Llama-3.1-70B-Instruct" and options(out.commands[0].argv)["--quantization"] == "fp8"
    assert "--quantization" not in options(export(mixed, "vllm").commands[0].argv)  # bf16 + mxfp4, as published
    qwen = estimate(model="qwen3-32b", cluster="h100-sxm", gpus=8, precision="fp8", parallel=Parallel(tp=2, dp=4))
    assert export(qwen, "trtllm").model == "Qwen/Qwen3-32B-FP8"  # the -FP8 alias
    nvfp4 = estimate(model="qwen3-32b", cluster="b200", gpus=8, precision="fp4", parallel=Parallel(tp=1, dp=8))
    assert export(nvfp4, "sglang").model == "nvidia/Qwen3-32B-NVFP4"
    with pytest.raises(ExportError, match=r"^trtllm 1.2.1: weights fp8: .* a checkpoint in fp8 is needed$") as e:
        export(dense, "trtllm")
    assert e.value.needs == "model_path"
    fp4 = estimate(model="llama-3.1-70b", cluster="b200", gpus=8, precision="fp4", parallel=Parallel(tp=2, dp=4))
    with pytest.raises(ExportError, match="weights fp4") as e:
        export(fp4, "vllm")
    assert e.value.engine == "vllm" and e.value.setting == "weights fp4"
    assert export(fp4, "vllm", model_path="/ckpt/llama-70b-nvfp4").model == "/ckpt/llama-70b-nvfp4"
    moe18 = dense.model_copy(update={"model": "gpt-moe-1.8t"})
    with pytest.raises(ExportError, match="gpt-moe-1.8t has no public checkpoint"):
        export(moe18, "sglang")
    assert export(moe18, "sglang", model_path="/weights/gpt-moe-1.8t").model == "/weights/gpt-moe-1.8t"
    mine = dense.model_copy(update={"cluster": "my-h100s"})
    with pytest.raises(ExportError, match="cluster 'my-h100s' of the plan is not in the catalog") as e:
        export(mine, "vllm")
    assert e.value.needs == "gpus_per_node"
    assert export(mine, "vllm", gpus_per_node=4).commands[0].note.endswith("up to 2 per node of 4: each on its own "
                                                                          "GPUs and PORT")


def test_speculation_needs_its_draft():
    eagle = estimate(model="llama-3.1-8b", cluster="h100-sxm", gpus=8, precision="bf16", parallel=Parallel(dp=8),
                     speculation=Speculation(method="eagle", draft_tokens=2))
    with pytest.raises(ExportError, match="EAGLE head has no checkpoint"):
        export(eagle, "vllm")
    out = export(eagle, "vllm", draft_model_path="yuhuili/EAGLE3-LLaMA3.1-Instruct-8B")
    cfg = json.loads(options(out.commands[0].argv)["--speculative-config"])
    assert cfg == {"method": "eagle3", "num_speculative_tokens": 2, "model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"}
    o = check_flags(export(eagle, "sglang", draft_model_path="x/eagle").commands[0].argv[3:], engine_data(SGLANG))
    assert (o["--speculative-algorithm"], o["--speculative-num-draft-tokens"]) == ("EAGLE3", "3")
    with pytest.raises(ExportError, match="^trtllm 1.2.1: speculation eagle: "):
        export(eagle, "trtllm", draft_model_path="x/eagle")
    draft = export(plans()["draft"], "sglang")
    assert options(draft.commands[0].argv)["--speculative-draft-model-path"] == "meta-llama/Llama-3.1-8B-Instruct"


def test_unexpressible_layouts_fail_in_one_line_naming_engine_and_setting():
    moe = plans()["moe_adp"]
    split = moe.model_copy(update={"parallel": Parallel(tp=1, attention_dp=8, ep=4, moe_tp=2)})
    with pytest.raises(ExportError, match=r"^vllm 0.33.0: EP4 MOETP2: .*SGLang") as e:
        export(split, "vllm")
    assert e.value.setting == "EP4 MOETP2" and "\n" not in str(e.value)
    o = options(export(split, "sglang").commands[0].argv)  # SGLang: --moe-dp-size
    assert (o["--tp-size"], o["--ep-size"], "--moe-dp-size" in o) == ("8", "4", False)  # MoE TP 8 / 4 = 2
    moe_dp = moe.model_copy(update={"parallel": Parallel(tp=1, attention_dp=8, ep=2, moe_tp=2)})
    o = options(export(moe_dp, "sglang").commands[0].argv)
    assert (o["--tp-size"], o["--ep-size"], o["--moe-dp-size"]) == ("8", "2", "2")  # MoE TP 8 / 2 / 2 = 2
    cfg = yaml.safe_load(export(split, "trtllm").files["extra-llm-api-config.yaml"])
    assert (cfg["moe_expert_parallel_size"], cfg["moe_tensor_parallel_size"]) == (4, 2)
    adp = moe.model_copy(update={"parallel": Parallel(tp=2, attention_dp=4, ep=8, moe_tp=1)})
    with pytest.raises(ExportError, match=r"^trtllm 1.2.1: TP2 ADP4: "):
        export(adp, "trtllm")
    with pytest.raises(ExportError, match=r"^trtllm 1.2.1: TP2 ADP4: "):
        export(adp, "dynamo", worker="trtllm")
    odd = plans()["multinode_adp"].model_copy(update={"parallel": Parallel(tp=3, attention_dp=6, ep=18, moe_tp=1)})
    with pytest.raises(ExportError, match=r"^vllm 0.33.0: TP3 PP1 ADP6 over 3 nodes: "):
        export(odd, "vllm")
    uneven = odd.model_copy(update={"parallel": Parallel(tp=1, attention_dp=12, ep=12, moe_tp=1)})
    with pytest.raises(ExportError, match=r"^vllm 0.33.0: TP1 PP1 ADP12 over 2 nodes: .*evenly"):
        export(uneven, "vllm")
    check_sglang(uneven, export(uneven, "sglang"))  # SGLang: every node of the 12 GPUs runs one command
    with pytest.raises(ExportError, match="unknown engine 'foo'"):
        export(moe, "foo")
    with pytest.raises(ExportError, match="vllm version '0.1' has no flag table: known 0.33.0"):
        export(moe, "vllm", "0.1")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tp=st.sampled_from([1, 2, 4, 8]), adp=st.sampled_from([1, 2, 4, 8]), pp=st.sampled_from([1, 2, 4]),
       ep_share=st.sampled_from([1, 2, 4, 8, 16, 32]), dp=st.integers(1, 3), m=st.integers(1, 256),
       chunk=st.integers(16, 16384), engine=st.sampled_from(ENGINES))
def test_any_layout_exports_valid_flags_or_one_line_error(tp, adp, pp, ep_share, dp, m, chunk, engine):
    """Variations of a MoE plan's layout and batch: the export uses only the engine's options and carries the
    degrees, or fails in one line naming the engine."""
    stage = tp * adp
    ep = min(ep_share, stage)
    par = Parallel(tp=tp, attention_dp=adp, pp=pp, ep=ep, dp=dp)
    base = plans()["moe_adp"]
    plan = base.model_copy(update={"parallel": par, "label": par.label, "batch": Batch(
        concurrency=m * adp * pp, chunk_tokens=chunk, micro_batch=m)})
    try:
        out = export(plan, engine)
    except ExportError as e:
        assert "\n" not in str(e) and str(e).startswith(("vllm", "sglang", "trtllm")), str(e)
        assert e.setting
        return
    CHECKS[engine](plan, out)


def test_planner_export_is_lazy():
    import subprocess
    import sys

    code = "import sys, planner; assert 'planner.exports' not in sys.modules; print(callable(planner.export))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"
    assert planner.export(plans()["dense"], "sglang").engine == "sglang"
    assert planner.export is export


# --- the command line ------------------------------------------------------------------------------


@pytest.fixture()
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plans()["dense"].model_dump(mode="json")), encoding="utf-8")
    return path


def test_cli_prints_writes_and_reads_stdin(plan_file: Path, tmp_path: Path):
    r = run("export", plan_file, "--engine", "vllm")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == export(plans()["dense"], "vllm").files["launch.sh"]
    r = CliRunner().invoke(main, ["export", "-", "--engine", "sglang"], input=plan_file.read_text(),
                           prog_name="planner")
    assert r.exit_code == 0 and "--tp-size 2" in r.stdout.replace(" \\\n    ", " ")
    r = run("export", plan_file, "--engine", "trtllm", "--model-path", "/ckpt/fp8", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["extra-llm-api-config.yaml", "launch.sh"]
    assert r.stdout.splitlines()[0] == f"wrote {tmp_path / 'out' / 'launch.sh'}"
    r = run("export", plan_file, "--engine", "dynamo", "--json")
    data = json.loads(r.stdout)
    assert data["engine"] == "dynamo" and data["worker"] == "vllm" and "dynamo.yaml" in data["files"]
    top = tmp_path / "top.json"
    top.write_text(json.dumps([plans()["dense"].model_dump(mode="json"), plans()["pipeline"].model_dump(mode="json")]))
    r = run("export", top, "--engine", "vllm", "--rank", "2", "--json")
    assert "--pipeline-parallel-size" in json.loads(r.stdout)["commands"][0]["argv"]


def test_cli_errors_are_one_line(plan_file: Path, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    assert "bad.json: malformed JSON" in error_line("export", bad, "--engine", "vllm")
    bad.write_text('{"model": 1}', encoding="utf-8")
    assert "bad.json: not a plan" in error_line("export", bad, "--engine", "vllm")
    assert "no such file" in error_line("export", tmp_path / "none.json", "--engine", "vllm")
    assert "'foo' is not one of" in error_line("export", plan_file, "--engine", "foo")
    assert "has no flag table: known 0.33.0" in error_line("export", plan_file, "--engine", "vllm", "--version", "9")
    line = error_line("export", plan_file, "--engine", "trtllm")
    assert "trtllm 1.2.1: weights fp8" in line and line.endswith("is needed (give --model-path PATH)")
    assert "has 1 plan" in error_line("export", plan_file, "--engine", "vllm", "--rank", "2")
    split = plans()["moe_adp"].model_copy(update={"parallel": Parallel(tp=1, attention_dp=8, ep=4, moe_tp=2)})
    bad.write_text(json.dumps(split.model_dump(mode="json")), encoding="utf-8")
    assert error_line("export", bad, "--engine", "vllm").startswith("planner: error: vllm 0.33.0: EP4 MOETP2: ")
