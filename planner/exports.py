"""Launch commands and configuration files that deploy a plan on a serving engine.

    from planner.exports import export
    out = export(plan, "vllm")            # or "sglang", "trtllm", "dynamo"
    out.files["launch.sh"]; out.commands[0].argv

One function per engine turns a Plan (the JSON of `planner solve --json`) into the engine's own settings: the
parallel sizes (tensor, pipeline, attention data parallel, expert), the running requests and batched tokens of
the plan's batch and chunk, the memory fraction of its memory breakdown, the KV-cache and weight formats, the
context length, the arguments of a replica that spans nodes, speculative decoding and the prefill and decode
roles of a disaggregated plan. Every option name comes from FLAGS, one table per engine and version, checked by
tests/test_export.py against the engine's own argument list at that version (tests/data/engines). A layout or
setting an engine cannot express raises ExportError, one line naming the engine and the setting.

Counting: a plan's micro_batch is decode requests per attention-DP rank per pipeline micro-batch, its
chunk_tokens prompt tokens per pass per attention-DP rank (planner.specs.Batch). vLLM's --max-num-seqs and
TensorRT-LLM's max_batch_size count per attention-DP rank (each rank is an engine core with its own scheduler);
vLLM's counts every request a core keeps running, across its pipeline's micro-batches, TensorRT-LLM's those of
one scheduled batch. SGLang's --max-running-requests and --chunked-prefill-size count over the whole server and
are divided among its attention-DP ranks. vLLM's and TensorRT-LLM's token budgets count a pass's decode tokens
with its prefill chunk; SGLang's chunk counts prompt tokens only.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from planner.errors import PlannerError, SpecError
from planner.specs import Memory, ModelSpec, Parallel, Plan, Precision, SpecMethod

ENGINES: dict[str, tuple[str, ...]] = {
    "vllm": ("0.33.0",),
    "sglang": ("0.5.23",),
    "trtllm": ("1.2.1",),
    "dynamo": ("1.6.1",),
}
"""Engines export writes for, and their versions (the first one is the default)."""

DYNAMO_WORKERS = ("vllm", "sglang", "trtllm")
"""Engines a Dynamo deployment runs its workers on."""

FLAGS: dict[tuple[str, str], dict[str, str]] = {
    ("vllm", "0.33.0"): {
        "served_name": "--served-model-name",
        "tensor": "--tensor-parallel-size",
        "pipeline": "--pipeline-parallel-size",
        "data": "--data-parallel-size",
        "data_local": "--data-parallel-size-local",
        "data_address": "--data-parallel-address",
        "data_rpc_port": "--data-parallel-rpc-port",
        "data_start_rank": "--data-parallel-start-rank",
        "expert": "--enable-expert-parallel",
        "max_requests": "--max-num-seqs",
        "batched_tokens": "--max-num-batched-tokens",
        "memory": "--gpu-memory-utilization",
        "kv_dtype": "--kv-cache-dtype",
        "quantization": "--quantization",
        "context": "--max-model-len",
        "nnodes": "--nnodes",
        "node_rank": "--node-rank",
        "master_addr": "--master-addr",
        "master_port": "--master-port",
        "headless": "--headless",
        "speculation": "--speculative-config",
        "kv_transfer": "--kv-transfer-config",
        "host": "--host",
        "port": "--port",
    },
    ("sglang", "0.5.23"): {
        "model": "--model-path",
        "served_name": "--served-model-name",
        "tensor": "--tp-size",
        "pipeline": "--pp-size",
        "attention_dp": "--attn-dp-size",
        "expert": "--ep-size",
        "moe_dp": "--moe-dp-size",
        "max_requests": "--max-running-requests",
        "pp_micro_batch": "--pp-max-micro-batch-size",
        "batched_tokens": "--chunked-prefill-size",
        "memory": "--mem-fraction-static",
        "kv_dtype": "--kv-cache-dtype",
        "quantization": "--quantization",
        "context": "--context-length",
        "nnodes": "--nnodes",
        "node_rank": "--node-rank",
        "dist_init": "--dist-init-addr",
        "spec_algorithm": "--speculative-algorithm",
        "spec_steps": "--speculative-num-steps",
        "spec_topk": "--speculative-eagle-topk",
        "spec_tokens": "--speculative-num-draft-tokens",
        "spec_draft": "--speculative-draft-model-path",
        "disagg_mode": "--disaggregation-mode",
        "disagg_backend": "--disaggregation-transfer-backend",
        "host": "--host",
        "port": "--port",
    },
    ("trtllm", "1.2.1"): {  # keys of the extra LLM-API options YAML (dots: nested keys)
        "tensor": "tensor_parallel_size",
        "pipeline": "pipeline_parallel_size",
        "expert": "moe_expert_parallel_size",
        "moe_tp": "moe_tensor_parallel_size",
        "attention_dp": "enable_attention_dp",
        "max_requests": "max_batch_size",
        "batched_tokens": "max_num_tokens",
        "context": "max_seq_len",
        "chunked_prefill": "enable_chunked_prefill",
        "memory": "kv_cache_config.free_gpu_memory_fraction",
        "kv_dtype": "kv_cache_config.dtype",
        "spec_type": "speculative_config.decoding_type",
        "spec_layers": "speculative_config.num_nextn_predict_layers",
        "kv_transfer": "cache_transceiver_config.backend",
        "kv_transfer_tokens": "cache_transceiver_config.max_tokens_in_buffer",
        "backend": "backend",
        # trtllm-serve's own options (tensorrt_llm/commands/serve.py: not in any package reachable here, see
        # tests/data/engines/README.md)
        "serve_options": "--extra_llm_api_options",
        "serve_host": "--host",
        "serve_port": "--port",
    },
    ("dynamo", "1.6.1"): {  # options of Dynamo's workers beside the engine's own, and the DGD's names
        "api_version": "nvidia.com/v1beta1",
        "disagg_mode": "--disaggregation-mode",  # dynamo.vllm and dynamo.trtllm (SGLang's own for dynamo.sglang)
        "trtllm_model": "--model",
        "trtllm_served_name": "--served-model-name",
        "trtllm_options": "--override-engine-args",
        "image_vllm": "nvcr.io/nvidia/ai-dynamo/vllm-runtime:1.6.1",
        "image_sglang": "nvcr.io/nvidia/ai-dynamo/sglang-runtime:1.6.1",
        "image_trtllm": "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:1.6.1",
    },
}
"""Per engine and version: the planner's name of each setting -> the engine's option (or YAML key). The one
place an option name is spelled; tests/test_export.py checks each against the engine's published argument list."""

KV_DTYPE: dict[str, dict[str, str]] = {
    "vllm": {"fp8": "fp8", "bf16": "auto"},
    "sglang": {"fp8": "fp8_e4m3", "bf16": "auto"},
    "trtllm": {"fp8": "fp8", "bf16": "auto"},
}
"""KV-cache format -> the engine's --kv-cache-dtype value ('auto': the model's BF16 activations)."""

ONLINE_QUANTIZATION: dict[str, dict[str, str]] = {"vllm": {"fp8": "fp8"}, "sglang": {"fp8": "fp8"}, "trtllm": {}}
"""Weight formats an engine quantizes a BF16 checkpoint to at load time (--quantization); the others need a
checkpoint published in the format."""

CHECKPOINT_SUFFIX: dict[str, Precision] = {"-FP8": Precision.fp8, "-NVFP4": Precision.fp4, "-FP4": Precision.fp4,
                                           "-AWQ": Precision.int4, "-GPTQ": Precision.int4}
"""Repository-name endings of quantized checkpoints (the catalog's aliases) and their weight format."""

PORT = 8000
"""The first HTTP port of the commands; instances on one node take PORT, PORT + 1, ..."""
DIST_PORT = 5000
"""Port of a multi-node instance's rendezvous on its first node (SGLang --dist-init-addr, vLLM --master-port)."""
DP_RPC_PORT = 13345
"""vLLM's data-parallel RPC port on a multi-node instance's first node."""


class ExportError(PlannerError):
    """A plan's setting that an engine cannot express (`engine`, `setting`), or export input that is missing:
    `needs` names the argument of export() that supplies it ('model_path', 'draft_model_path', 'gpus_per_node')."""

    def __init__(self, message: str, engine: str = "", setting: str = "", needs: str | None = None) -> None:
        super().__init__(message)
        self.engine, self.setting, self.needs = engine, setting, needs


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Launch(_Frozen):
    """One command of a deployment: what it runs, on how many GPUs and nodes, how many identical instances."""

    role: Literal["server", "prefill", "decode"] = Field(description="agg: server; disagg: the pool it serves")
    instances: int = Field(description="Identical instances of the command: replicas or pool workers")
    gpus: int = Field(description="GPUs of one instance [GPUs]")
    nodes: int = Field(description="Nodes one instance spans [nodes]")
    ranks: Literal["all", "first", "others"] = Field(
        "all", description="Nodes of an instance that run this command: every one, its first, or the others")
    argv: list[str] = Field(description="The command; $NODE_RANK, $HEAD_IP and $PORT are the shell's")
    note: str = Field("", description="Where and how to run it")


class Export(_Frozen):
    """What `planner export` writes for one plan and engine."""

    engine: str
    version: str
    worker: str | None = Field(None, description="dynamo: the engine its workers run")
    model: str = Field(description="The checkpoint served: a HuggingFace repository or a path")
    label: str = Field(description="The plan's layout")
    serving: Literal["agg", "disagg"]
    commands: list[Launch]
    files: dict[str, str] = Field(description="File name -> content (launch.sh, YAML)")
    notes: list[str] = Field(default_factory=list)


# --- inputs -----------------------------------------------------------------------------------------


def _model_spec(plan: Plan) -> ModelSpec | None:
    from planner.catalog import load_model
    from planner.errors import UnknownNameError

    try:
        return load_model(plan.model)
    except UnknownNameError:
        return None


def _checkpoint(plan: Plan, engine: str, version: str, model_path: str | None) -> tuple[str, str | None]:
    """(repository or path to serve, --quantization value or None) for the plan's weight formats.

    With model_path, that checkpoint is taken to hold the plan's formats (the engine reads them from its
    quantization config). Else a catalog alias published in the plan's format, else the catalog's checkpoint:
    as is when its formats are the plan's, quantized at load time where the engine can, or an ExportError.
    """
    if model_path:
        return model_path, None
    spec = _model_spec(plan)
    repos = [a for a in (spec.aliases if spec else []) if "/" in a]
    if not repos:
        raise _fail(engine, version, "model", f"{plan.model} has no public checkpoint in the catalog: the path or "
                    "repository of its weights is needed", needs="model_path")
    experts = plan.expert_precision or plan.precision
    for repo in repos:
        fmt = next((p for s, p in CHECKPOINT_SUFFIX.items() if repo.upper().endswith(s)), None)
        if fmt is not None and fmt == plan.precision == experts:
            return repo, None
    plain = [r for r in repos if not any(r.upper().endswith(s) for s in CHECKPOINT_SUFFIX)] or repos
    repo = next((r for r in plain if "instruct" in r.lower()), plain[0])
    ck = spec.checkpoint_precision
    if ck is None or (ck.dense == plan.precision and (ck.experts or ck.dense) == experts):
        return repo, None
    online = ONLINE_QUANTIZATION[engine].get(plan.precision.value)
    bf16 = ck.dense == Precision.bf16 and (ck.experts or ck.dense) == Precision.bf16
    if online and bf16 and experts == plan.precision:
        return repo, online
    have = ck.dense.value + (f" + {ck.experts.value} experts" if ck.experts else "")
    want = plan.precision.value + (f" + {experts.value} experts" if experts != plan.precision else "")
    raise _fail(engine, version, f"weights {want}", f"{repo} is {have} and {engine} does not quantize it to {want} "
                f"at load time: a checkpoint in {want} is needed", needs="model_path")


def _gpus_per_node(plan: Plan, cluster: str, given: int | None) -> int:
    if given:
        return given
    from planner.catalog import load_cluster
    from planner.errors import UnknownNameError

    try:
        return load_cluster(cluster).gpus_per_node
    except UnknownNameError:
        raise ExportError(f"cluster {cluster!r} of the plan is not in the catalog: its GPUs per node are needed",
                          setting="cluster", needs="gpus_per_node") from None


def _floor(x: float, digits: int = 3) -> float:
    """x rounded down to `digits` decimals (a memory fraction never above the plan's)."""
    return math.floor(x * 10**digits + 1e-9) / 10**digits


def memory_fractions(memory: Memory) -> dict[str, float]:
    """The plan's memory breakdown as each engine's fraction [dimensionless].

    - usable: capacity * memory_utilization / capacity, vLLM's --gpu-memory-utilization (all it may fill).
    - static: what SGLang's --mem-fraction-static gives weights and KV pool: the usable memory less the plan's
      activations, communication buffers and runtime context, over the capacity.
    - free_kv: TensorRT-LLM's kv_cache_config.free_gpu_memory_fraction, the share of the memory left after
      weights, draft, activations, buffers and runtime that the KV cache takes, so that the whole stays within
      the usable memory.
    """
    cap = memory.capacity_bytes
    other = memory.activation_bytes + memory.comm_buffer_bytes + memory.reserved_bytes
    non_kv = memory.weights_bytes + memory.draft_bytes + other
    return {"usable": _floor(memory.usable_bytes / cap), "static": _floor((memory.usable_bytes - other) / cap),
            "free_kv": _floor((memory.usable_bytes - non_kv) / max(cap - non_kv, 1.0))}


class _Role(BaseModel):
    """One kind of instance of a plan: agg's replicas or a disagg pool's workers."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    role: Literal["server", "prefill", "decode"]
    parallel: Parallel
    instances: int
    micro_batch: int | None
    chunk: int | None
    memory: Memory
    gpus_per_node: int

    @property
    def gpus(self) -> int:
        return self.parallel.replica_gpus

    @property
    def nodes(self) -> int:
        return math.ceil(self.gpus / self.gpus_per_node)


def _roles(plan: Plan, gpus_per_node: int | None) -> list[_Role]:
    if plan.serving == "disagg":
        if plan.prefill is None or plan.decode is None:
            raise SpecError("a disaggregated plan without its prefill and decode pools")
        return [_Role(role=pool.role, parallel=pool.parallel, instances=pool.workers,
                      micro_batch=pool.batch.micro_batch, chunk=pool.batch.chunk_tokens, memory=pool.memory,
                      gpus_per_node=_gpus_per_node(plan, pool.cluster, gpus_per_node))
                for pool in (plan.prefill, plan.decode)]
    return [_Role(role="server", parallel=plan.parallel, instances=plan.parallel.dp, micro_batch=plan.batch.micro_batch,
                  chunk=plan.batch.chunk_tokens, memory=plan.memory,
                  gpus_per_node=_gpus_per_node(plan, plan.cluster, gpus_per_node))]


def _context(plan: Plan) -> int | None:
    """Context length to configure: isl + osl, or None (the model's own) when request lengths vary [tokens]."""
    if plan.workload is not None and plan.workload.varies:
        return None
    return plan.isl + plan.osl


def _k(plan: Plan) -> int:
    """Draft tokens per step (0 without speculative decoding)."""
    return (plan.speculation.draft_tokens or 0) if plan.speculation else 0


def _draft(plan: Plan, engine: str, version: str, draft_path: str | None) -> str | None:
    """The draft's checkpoint: --draft-model-path, or the draft model's catalog checkpoint."""
    spec = plan.speculation
    if spec is None or spec.method == SpecMethod.mtp:
        return None
    if draft_path:
        return draft_path
    if spec.method == SpecMethod.draft and spec.draft_model:
        from planner.catalog import load_model
        from planner.errors import UnknownNameError

        try:
            repos = [a for a in load_model(spec.draft_model).aliases if "/" in a]
        except (UnknownNameError, SpecError):
            repos = []
        if repos:
            return next((r for r in repos if "instruct" in r.lower()), repos[0])
    what = "EAGLE head" if spec.method == SpecMethod.eagle else f"draft model {spec.draft_model}"
    raise _fail(engine, version, f"speculation {spec.method.value}", f"the {what} has no checkpoint in the catalog: "
                "its path or repository is needed", needs="draft_model_path")


def _fail(engine: str, version: str, setting: str, why: str, needs: str | None = None) -> ExportError:
    return ExportError(f"{engine} {version}: {setting}: {why}", engine, setting, needs)


# --- vLLM -------------------------------------------------------------------------------------------


def _vllm_moe(plan: Plan, par: Parallel, version: str) -> bool:
    """True when the MoE layers run expert parallel (--enable-expert-parallel); ExportError when vLLM cannot
    split them as the plan does: its experts are tensor-parallel over all tp * attention_dp GPUs of a stage, or
    expert-parallel over all of them."""
    spec = _model_spec(plan)
    if spec is not None and not spec.is_moe:
        return False
    stage = par.stage_gpus
    if par.ep == 1 and par.moe_tp == stage:
        return False
    if par.ep == stage and par.moe_tp == 1:
        return True
    raise _fail("vllm", version, f"EP{par.ep} MOETP{par.moe_tp}", f"vLLM splits the MoE layers of a stage of {stage} "
                f"GPUs either tensor-parallel (EP1 MOETP{stage}) or expert-parallel (EP{stage} MOETP1), not "
                "both; SGLang (--moe-dp-size) or TensorRT-LLM (moe_tensor_parallel_size) can")


def vllm_args(plan: Plan, role: _Role, model: str, quant: str | None, version: str, draft: str | None,
              dynamo: bool = False) -> list[Launch]:
    """The `vllm serve` command(s) of one role: one command, or a first-node and an other-nodes one when an
    instance spans nodes."""
    f, par = FLAGS[("vllm", version)], role.parallel
    args = ([] if dynamo else ["vllm", "serve", model]) + [f["served_name"], plan.model,
                                                           f["tensor"], str(par.tp), f["pipeline"], str(par.pp)]
    if par.attention_dp > 1:
        args += [f["data"], str(par.attention_dp)]
    if _vllm_moe(plan, par, version):
        args += [f["expert"]]
    if role.micro_batch:
        args += [f["max_requests"], str(role.micro_batch * par.pp)]
    if role.chunk:
        decode = (role.micro_batch or 0) * (1 + _k(plan))
        args += [f["batched_tokens"], str(role.chunk + decode)]
    args += [f["memory"], f"{memory_fractions(role.memory)['usable']:g}",
             f["kv_dtype"], KV_DTYPE["vllm"][plan.kv_precision.value]]
    if quant:
        args += [f["quantization"], quant]
    if (ctx := _context(plan)) is not None:
        args += [f["context"], str(ctx)]
    if plan.speculation is not None:
        s = plan.speculation
        method = {"mtp": "mtp", "eagle": "eagle3", "draft": "draft_model"}[s.method.value]
        cfg: dict[str, Any] = {"method": method, "num_speculative_tokens": _k(plan) or 1}
        if draft:
            cfg["model"] = draft
        args += [f["speculation"], json.dumps(cfg, separators=(",", ":"))]
    if role.role != "server":
        args += [f["kv_transfer"], json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"},
                                              separators=(",", ":"))]
    if dynamo:
        return [Launch(role=role.role, instances=role.instances, gpus=role.gpus, nodes=role.nodes, argv=args)]
    serve = [f["host"], "0.0.0.0", f["port"], "$PORT"]
    note = _placement(role)
    if role.nodes == 1:
        return [Launch(role=role.role, instances=role.instances, gpus=role.gpus, nodes=1, argv=args + serve,
                       note=note)]
    gpn = role.gpus_per_node
    if par.attention_dp > 1:  # data-parallel ranks spread over the nodes, each rank's tp * pp GPUs on one node
        rank_gpus = par.tp * par.pp
        local = gpn // rank_gpus
        if gpn % rank_gpus or par.attention_dp % local:
            raise _fail("vllm", version, f"TP{par.tp} PP{par.pp} ADP{par.attention_dp} over {role.nodes} nodes",
                        f"vLLM gives every node the same number of data-parallel ranks, and ranks of {rank_gpus} "
                        f"GPUs do not fill nodes of {gpn} GPUs evenly")
        dp = [f["data_local"], str(local), f["data_address"], "$HEAD_IP", f["data_rpc_port"], str(DP_RPC_PORT)]
        return [Launch(role=role.role, instances=role.instances, gpus=role.gpus, nodes=role.nodes, ranks="first",
                       argv=args + dp + serve, note=note),
                Launch(role=role.role, instances=role.instances, gpus=role.gpus, nodes=role.nodes, ranks="others",
                       argv=args + dp + [f["data_start_rank"], f"$(( NODE_RANK * {local} ))", f["headless"]],
                       note=note)]
    multi = [f["nnodes"], str(role.nodes), f["node_rank"], "$NODE_RANK", f["master_addr"], "$HEAD_IP",
             f["master_port"], str(DIST_PORT)]
    return [Launch(role=role.role, instances=role.instances, gpus=role.gpus, nodes=role.nodes, ranks="first",
                   argv=args + multi + serve, note=note),
            Launch(role=role.role, instances=role.instances, gpus=role.gpus, nodes=role.nodes, ranks="others",
                   argv=args + multi + [f["headless"]], note=note)]


# --- SGLang -----------------------------------------------------------------------------------------


def _sglang_moe(plan: Plan, par: Parallel, version: str) -> tuple[int, int]:
    """(--ep-size, --moe-dp-size): SGLang's MoE tensor parallel is tp_size / ep_size / moe_dp_size."""
    stage = par.stage_gpus
    if par.ep == 1 and par.moe_tp == stage:
        return 1, 1
    if stage % (par.ep * par.moe_tp):
        raise _fail("sglang", version, f"EP{par.ep} MOETP{par.moe_tp}", f"the expert groups do not divide the "
                    f"stage's {stage} GPUs (SGLang's MoE tensor parallel is tp-size / ep-size / moe-dp-size)")
    return par.ep, stage // (par.ep * par.moe_tp)


def sglang_args(plan: Plan, role: _Role, model: str, quant: str | None, version: str, draft: str | None,
                dynamo: bool = False) -> list[Launch]:
    """The `python -m sglang.launch_server` command of one role (every node of an instance runs it)."""
    f, par = FLAGS[("sglang", version)], role.parallel
    args = ([] if dynamo else ["python", "-m", "sglang.launch_server"]) + [
        f["model"], model, f["served_name"], plan.model, f["tensor"], str(par.stage_gpus), f["pipeline"], str(par.pp)]
    if par.attention_dp > 1:
        args += [f["attention_dp"], str(par.attention_dp)]
    ep, moe_dp = _sglang_moe(plan, par, version)
    if ep > 1:
        args += [f["expert"], str(ep)]
    if moe_dp > 1:
        args += [f["moe_dp"], str(moe_dp)]
    if role.micro_batch:
        args += [f["max_requests"], str(role.micro_batch * par.pp * par.attention_dp)]
        if par.pp > 1:
            args += [f["pp_micro_batch"], str(role.micro_batch * par.attention_dp)]
    if role.chunk:
        args += [f["batched_tokens"], str(role.chunk * par.attention_dp)]
    args += [f["memory"], f"{memory_fractions(role.memory)['static']:g}",
             f["kv_dtype"], KV_DTYPE["sglang"][plan.kv_precision.value]]
    if quant:
        args += [f["quantization"], quant]
    if (ctx := _context(plan)) is not None:
        args += [f["context"], str(ctx)]
    if plan.speculation is not None:
        k = _k(plan) or 1
        algorithm = {"mtp": "NEXTN", "eagle": "EAGLE3", "draft": "STANDALONE"}[plan.speculation.method.value]
        args += [f["spec_algorithm"], algorithm, f["spec_steps"], str(k), f["spec_topk"], "1",
                 f["spec_tokens"], str(k + 1)]
        if draft:
            args += [f["spec_draft"], draft]
    if role.role != "server":
        args += [f["disagg_mode"], role.role, f["disagg_backend"], "nixl"]
    if not dynamo and role.nodes > 1:
        args += [f["nnodes"], str(role.nodes), f["node_rank"], "$NODE_RANK", f["dist_init"], f"$HEAD_IP:{DIST_PORT}"]
    if not dynamo:
        args += [f["host"], "0.0.0.0", f["port"], "$PORT"]
    return [Launch(role=role.role, instances=role.instances, gpus=role.gpus, nodes=role.nodes, argv=args,
                   note="" if dynamo else _placement(role))]


# --- TensorRT-LLM -----------------------------------------------------------------------------------


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def trtllm_options(plan: Plan, role: _Role, version: str) -> dict[str, Any]:
    """The extra LLM-API options (trtllm-serve --extra_llm_api_options) of one role, nested."""
    f, par = FLAGS[("trtllm", version)], role.parallel
    if par.attention_dp > 1 and par.tp > 1:
        raise _fail("trtllm", version, f"TP{par.tp} ADP{par.attention_dp}", "TensorRT-LLM's attention data parallel "
                    "spans its whole tensor-parallel group (attention TP 1 with enable_attention_dp): TP1 "
                    f"ADP{par.stage_gpus} expresses that stage, or SGLang (--attn-dp-size) this one")
    spec = _model_spec(plan)
    moe = spec is None or spec.is_moe
    if moe and par.ep * par.moe_tp != par.stage_gpus:
        raise _fail("trtllm", version, f"EP{par.ep} MOETP{par.moe_tp}", f"TensorRT-LLM splits a stage's "
                    f"{par.stage_gpus} GPUs into moe_expert_parallel_size x moe_tensor_parallel_size")
    flat: dict[str, Any] = {f["backend"]: "pytorch", f["tensor"]: par.stage_gpus, f["pipeline"]: par.pp}
    if moe and (par.ep > 1 or par.moe_tp != par.stage_gpus):
        flat |= {f["expert"]: par.ep, f["moe_tp"]: par.moe_tp}
    flat[f["attention_dp"]] = par.attention_dp > 1
    if role.micro_batch:
        flat[f["max_requests"]] = role.micro_batch
    if role.chunk:
        flat[f["batched_tokens"]] = role.chunk + (role.micro_batch or 0) * (1 + _k(plan))
        flat[f["chunked_prefill"]] = True
    if (ctx := _context(plan)) is not None:
        flat[f["context"]] = ctx
    flat[f["memory"]] = memory_fractions(role.memory)["free_kv"]
    flat[f["kv_dtype"]] = KV_DTYPE["trtllm"][plan.kv_precision.value]
    if plan.speculation is not None:
        if plan.speculation.method != SpecMethod.mtp:
            raise _fail("trtllm", version, f"speculation {plan.speculation.method.value}", "only MTP "
                        "(speculative_config decoding_type MTP) is in the options schema this export checks against "
                        "(tests/data/engines/trtllm-1.2.1.json); vLLM and SGLang export EAGLE and draft models")
        flat |= {f["spec_type"]: "MTP", f["spec_layers"]: _k(plan) or 1}
    if role.role != "server":
        flat[f["kv_transfer"]] = "NIXL"
        flat[f["kv_transfer_tokens"]] = _context(plan) or plan.isl + plan.osl  # one request's whole KV cache
    return _nest(flat)


def trtllm_args(plan: Plan, role: _Role, model: str, version: str, config: str) -> list[Launch]:
    """The trtllm-serve command of one role; an instance over several nodes starts under MPI, one rank per GPU
    (trtllm-llmapi-launch)."""
    f = FLAGS[("trtllm", version)]
    launcher = ["trtllm-llmapi-launch"] if role.nodes > 1 else []
    argv = launcher + ["trtllm-serve", model, f["serve_options"], config, f["serve_host"], "0.0.0.0",
                       f["serve_port"], "$PORT"]
    note = _placement(role)
    if role.nodes > 1:
        note += f"; start it with MPI as {role.gpus} ranks, {role.gpus_per_node} per node (mpirun or srun)"
    return [Launch(role=role.role, instances=role.instances, gpus=role.gpus, nodes=role.nodes, argv=argv, note=note)]


# --- Dynamo -----------------------------------------------------------------------------------------


def _dns(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "plan"


def dynamo_graph(plan: Plan, roles: list[_Role], model: str, quant: str | None, version: str, worker: str,
                 draft: str | None) -> tuple[dict[str, Any], list[Launch]]:
    """The DynamoGraphDeployment (v1beta1) of a plan: a Frontend and one worker component per role, each worker
    a `python3 -m dynamo.<worker>` with the engine's options; an instance over several nodes is a multinode
    component (Dynamo's operator places and ranks its nodes)."""
    f = FLAGS[("dynamo", version)]
    engine_version = ENGINES[worker][0]
    image = f[f"image_{worker}"]

    def env() -> list[dict[str, Any]]:  # a fresh list per container: no YAML anchors
        return [{"secretRef": {"name": "hf-token-secret"}}]

    components: list[dict[str, Any]] = [{
        "name": "Frontend", "type": "frontend", "replicas": 1,
        "podTemplate": {"spec": {"containers": [{"name": "main", "image": image, "command": ["python3"],
                                                 "args": ["-m", "dynamo.frontend"], "envFrom": env()}]}}}]
    launches: list[Launch] = []
    for role in roles:
        if worker == "vllm":
            (launch,) = vllm_args(plan, role, model, quant, engine_version, draft, dynamo=True)
            args = ["--model", model] + launch.argv
            if role.role != "server":
                args += [f["disagg_mode"], role.role]
        elif worker == "sglang":
            (launch,) = sglang_args(plan, role, model, quant, engine_version, draft, dynamo=True)
            args = launch.argv
        else:
            options = trtllm_options(plan, role, engine_version)
            args = [f["trtllm_model"], model, f["trtllm_served_name"], plan.model,
                    f["trtllm_options"], json.dumps(options, separators=(",", ":"))]
            if role.role != "server":
                args += [f["disagg_mode"], role.role]
        argv = ["python3", "-m", f"dynamo.{worker}"] + args
        launches.append(Launch(role=role.role, instances=role.instances, gpus=role.gpus, nodes=role.nodes,
                               argv=argv, note=_placement(role)))
        per_node = min(role.gpus, role.gpus_per_node)
        component: dict[str, Any] = {
            "name": "worker" if role.role == "server" else role.role,
            "type": "worker" if role.role == "server" else role.role,
            "replicas": role.instances,
            "podTemplate": {"spec": {"containers": [{
                "name": "main", "image": image, "command": argv[:3], "args": argv[3:], "envFrom": env(),
                "resources": {"limits": {"nvidia.com/gpu": str(per_node)}}}]}}}
        if role.nodes > 1:
            component["multinode"] = {"nodeCount": role.nodes}
        components.append(component)
    name = _dns(f"{plan.model}-{plan.serving}")
    graph = {"apiVersion": f["api_version"], "kind": "DynamoGraphDeployment", "metadata": {"name": name},
             "spec": {"components": components}}
    return graph, launches


# --- rendering --------------------------------------------------------------------------------------


def _placement(role: _Role) -> str:
    par = role.parallel
    what = {"server": "replica", "prefill": "prefill worker", "decode": "decode worker"}[role.role]
    many = f"{role.instances} {what}{'s' if role.instances > 1 else ''}"
    layout = f"{par.label.rsplit(' DP', 1)[0]}, {role.gpus} GPU{'s' if role.gpus > 1 else ''}"
    if role.nodes > 1:
        return (f"{many} ({layout}) of {role.nodes} nodes each: every node of one runs this, NODE_RANK 0 to "
                f"{role.nodes - 1}, HEAD_IP the address of its node 0")
    per = role.gpus_per_node // role.gpus
    if role.instances > 1 and per > 1:
        return f"{many} ({layout}), up to {per} per node of {role.gpus_per_node}: each on its own GPUs and PORT"
    return f"{many} ({layout})"


def shell_word(arg: str) -> str:
    """A shell word of an argument: $VAR and $((...)) kept for the shell to expand, the rest quoted."""
    if re.fullmatch(r"\$\w+(:\d+)?", arg):
        name, _, port = arg[1:].partition(":")
        default = {"PORT": f":-{PORT}"}.get(name, "")
        return f'"${{{name}{default}}}' + (f":{port}" if port else "") + '"'
    if arg.startswith("$(("):
        return f'"{arg}"'
    return shlex.quote(arg)


def command_text(argv: list[str], indent: str = "") -> str:
    """A command over lines, one option (and its value) to a line."""
    words, line, lines = [shell_word(a) for a in argv], [], []
    for w, raw in zip(words, argv):
        if raw.startswith("--") and line:
            lines.append(" ".join(line))
            line = []
        line.append(w)
    lines.append(" ".join(line))
    return f" \\\n{indent}    ".join(lines)


def launch_script(title: str, commands: list[Launch], notes: list[str]) -> str:
    """launch.sh: the commands, by role (its first argument) when there are several, and by NODE_RANK where an
    instance spans nodes."""
    out = ["#!/usr/bin/env bash", f"# {title}"] + [f"# {n}" for n in notes] + ["set -euo pipefail"]
    roles = list(dict.fromkeys(c.role for c in commands))
    if len(roles) > 1:
        out.append(f'case "${{1:?usage: launch.sh {"|".join(roles)}}}" in')
    for role in roles:
        cmds = [c for c in commands if c.role == role]
        ind = "  " if len(roles) > 1 else ""
        if len(roles) > 1:
            out.append(f"{role})")
        out.append(f"{ind}# {cmds[0].note}")
        if len(cmds) == 1:
            out.append(ind + command_text(cmds[0].argv, ind))
        else:
            first, others = cmds
            out.append(f'{ind}if [ "${{NODE_RANK:?}}" = 0 ]; then')
            out.append(f"{ind}  " + command_text(first.argv, ind + "  "))
            out.append(f"{ind}else")
            out.append(f"{ind}  " + command_text(others.argv, ind + "  "))
            out.append(f"{ind}fi")
        if len(roles) > 1:
            out.append(f"{ind};;")
    if len(roles) > 1:
        out.append("esac")
    return "\n".join(out) + "\n"


def _title(plan: Plan, engine: str, version: str, worker: str | None = None) -> str:
    names = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM", "dynamo": "Dynamo"}
    on = f"{names[engine]} {version}" + (f" with {names[worker]} {ENGINES[worker][0]} workers" if worker else "")
    label = plan.label if plan.serving == "agg" else f"prefill {plan.prefill.workers}x {plan.prefill.label}, " \
                                                      f"decode {plan.decode.workers}x {plan.decode.label}"
    return f"planner export: {plan.model} on {plan.gpus_used} {plan.cluster} GPUs, {label}, for {on}"


def _dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000)


# --- entry point ------------------------------------------------------------------------------------


def export(plan: Plan, engine: str, version: str | None = None, *, model_path: str | None = None,
           draft_model_path: str | None = None, worker: str | None = None,
           gpus_per_node: int | None = None) -> Export:
    """The launch commands and files deploying `plan` on `engine` (vllm, sglang, trtllm, dynamo) at `version`
    (default: the first of ENGINES).

    model_path: the checkpoint to serve instead of the catalog's (required for a model without a public one,
    or weights in a format the catalog's checkpoint is not published in and the engine cannot make at load
    time). draft_model_path: the EAGLE head or draft model of a speculative plan. worker: dynamo's engine
    (vllm, sglang, trtllm; default: the plan's backend where it is one, else vllm). gpus_per_node: GPUs per
    node, for a cluster not in the catalog [GPUs].
    """
    engine = engine.lower()
    if engine not in ENGINES:
        raise ExportError(f"unknown engine {engine!r}: one of {', '.join(ENGINES)}", engine, "engine")
    version = version or ENGINES[engine][0]
    if version not in ENGINES[engine]:
        raise ExportError(f"{engine} version {version!r} has no flag table: known {', '.join(ENGINES[engine])}",
                          engine, "version")
    if worker is not None and engine != "dynamo":
        raise ExportError(f"{engine}: --worker names the engine of Dynamo's workers: it goes with --engine dynamo",
                          engine, "worker")
    roles = _roles(plan, gpus_per_node)
    if engine == "dynamo":
        worker = (worker or (plan.backend if plan.backend in DYNAMO_WORKERS else "vllm")).lower()
        if worker not in DYNAMO_WORKERS:
            raise ExportError(f"dynamo: unknown worker engine {worker!r}: one of {', '.join(DYNAMO_WORKERS)}",
                              engine, "worker")
    serves = worker or engine
    serves_version = ENGINES[serves][0] if worker else version
    model, quant = _checkpoint(plan, serves, serves_version, model_path)
    draft = _draft(plan, serves, serves_version, draft_model_path)
    notes = []
    if model_path:
        notes.append(f"{model_path} is taken to hold the plan's weight formats ({plan.precision.value}"
                     + (f", {plan.expert_precision.value} experts" if plan.expert_precision else "") + ")")
    if plan.serving == "disagg" and engine in ("vllm", "sglang"):
        notes.append("requests go through a router that sends each prompt to a prefill worker and its KV cache to "
                     "a decode worker (Dynamo: planner export --engine dynamo)")
    if plan.serving == "agg" and plan.parallel.dp > 1 and engine != "dynamo":
        notes.append(f"a load balancer spreads requests over the {plan.parallel.dp} replicas")
    title = _title(plan, engine, version, worker)
    files: dict[str, str] = {}
    commands: list[Launch] = []
    if engine == "vllm":
        commands = [c for r in roles for c in vllm_args(plan, r, model, quant, version, draft)]
    elif engine == "sglang":
        commands = [c for r in roles for c in sglang_args(plan, r, model, quant, version, draft)]
    elif engine == "trtllm":
        for r in roles:
            name = "extra-llm-api-config.yaml" if r.role == "server" else f"extra-llm-api-config.{r.role}.yaml"
            files[name] = _dump_yaml(trtllm_options(plan, r, version))
            commands += trtllm_args(plan, r, model, version, name)
    else:
        graph, commands = dynamo_graph(plan, roles, model, quant, version, worker, draft)
        files["dynamo.yaml"] = f"# {title}\n# kubectl apply -f dynamo.yaml\n" + _dump_yaml(graph)
        return Export(engine=engine, version=version, worker=worker, model=model, label=plan.label,
                      serving=plan.serving, commands=commands, files=files, notes=notes)
    files = {"launch.sh": launch_script(title, commands, notes), **files}
    return Export(engine=engine, version=version, model=model, label=plan.label, serving=plan.serving,
                  commands=commands, files=files, notes=notes)


def write(result: Export, out: Path) -> list[Path]:
    """Write an export's files into the folder `out` (made if missing); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in result.files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        if name.endswith(".sh"):
            path.chmod(0o755)
        paths.append(path)
    return paths


def text(result: Export) -> str:
    """The export's files as one text: the file itself when there is one, else each under a '# ==> NAME <=='
    line."""
    if len(result.files) == 1:
        return next(iter(result.files.values()))
    return "\n".join(f"# ==> {name} <==\n{body}" for name, body in result.files.items())
