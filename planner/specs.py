"""Pydantic schemas: the one definition of every input and output of the planner.

Units are spelled in field names where they could be ambiguous (``_bytes``, ``_s``, ``_ms``,
``_gb`` = 10^9 bytes, ``_gbps`` = 10^9 bytes/s, ``_tbps`` = 10^12 bytes/s, ``_tflops`` = 10^12
FLOP/s) and repeated in each ``Field(description=...)``.
"""

from __future__ import annotations

import math
from enum import Enum
from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from planner.errors import SpecError

GB = 1e9
"""Bytes in one decimal gigabyte [bytes]."""

# --- bounds of the inputs ---------------------------------------------------------------------------
# Generous but finite, most about 100x today's largest value, so that no real or near-future deployment
# comes near them; tried at the limits, the cost model and the CP-SAT model (integer nanoseconds, 64-bit
# coefficients) answer with a plan or a one-line 'no plan', never an overflow. An input beyond a bound is
# a typo or a probe, refused with the field, the value and the limit (tests/test_inputs.py).

MAX_GPUS = 2**20
"""GPUs given to one problem: 1,048,576, about 5x the largest clusters built today (100-200 thousand
GPUs) [GPUs]."""
MAX_TOKENS = 10_000_000
"""Input or output tokens per request: 10 million, the longest context window announced (Llama 4 Scout);
most models serve at most 1 million [tokens]."""
MIN_TOKENS_PER_S_PER_USER = 0.001
"""Slowest decode speed an SLA may ask for: one token per 1000 s; below it no floor is meant [tokens/s]."""
MAX_TOKENS_PER_S_PER_USER = 1_000_000.0
"""Fastest decode speed an SLA may ask for: 1 us per token, ~1000x any engine today [tokens/s]."""
MAX_TTFT_S = 604_800.0
"""Longest TTFT limit: 7 days; a longer limit is no limit [s]."""

MAX_LAYERS = 100_000
"""Transformer blocks (and layer counts of every kind): ~800x the deepest model today (126) [layers]."""
MAX_WIDTH = 2**20
"""Residual width and latent ranks: 1,048,576, 64x the widest model today (16,384) [values]."""
MAX_FFN_WIDTH = 10_000_000
"""Dense, expert and shared-expert FFN widths: ~190x the widest FFN today (53,248) [values]."""
MAX_HEADS = 65_536
"""Attention heads (query or key/value): 512x the most today (128) [heads]."""
MAX_HEAD_DIM = 65_536
"""Width of one attention head (query/key/value, MLA's per-head widths): 256x the widest today [values]."""
MAX_VOCAB = 100_000_000
"""Vocabulary: ~380x the largest today (262,144) [tokens]."""
MAX_EXPERTS = 100_000
"""Routed or shared experts per MoE layer: ~260x the most today (384) [experts]."""
MAX_WINDOW = 100_000_000
"""Sliding-window width: 5x the longest context a problem may have (isl + osl) [tokens]."""

MAX_HBM_GB = 10_000.0
"""HBM per GPU: 10 TB, ~35x the largest today (288 GB) and 10x the 1 TB announced for 2027 [GB]."""
MIN_HBM_GB = 0.1
"""HBM per GPU below 100 MB holds no LLM layer [GB]."""
MAX_HBM_TBPS = 1_000.0
"""HBM bandwidth per GPU: 1 PB/s, 125x the fastest today (8 TB/s) [TB/s]."""
MIN_HBM_TBPS = 0.01
"""HBM bandwidth per GPU: 10 GB/s, ~90x below the slowest GPU of the catalog (L40S, 864 GB/s) [TB/s]."""
MAX_TFLOPS = 1_000_000.0
"""Dense tensor-core peak per GPU and format: 1 EFLOP/s, ~65x the fastest today (15 PFLOP/s FP4) [TFLOP/s]."""
MIN_TFLOPS = 0.01
"""Dense tensor-core peak per GPU and format: 10 GFLOP/s, below any GPU made for LLM serving [TFLOP/s]."""
MAX_DOMAIN_GPUS = 65_536
"""GPUs in one scale-up domain: ~110x the largest announced (576) [GPUs]."""
MAX_NODE_GPUS = 1_024
"""GPUs per server or tray: 128x the most today (8) [GPUs]."""
MAX_SCALEUP_GBPS = 100_000.0
"""Scale-up bandwidth per GPU, one direction: 100 TB/s, ~110x NVLink 5 (900 GB/s) [GB/s]."""
MAX_SCALEOUT_GBPS = 10_000.0
"""Scale-out bandwidth per GPU, one direction: 10 TB/s (80 Tb/s), 100x an 800 Gb/s NIC [GB/s]."""
MIN_LINK_GBPS = 0.01
"""Any link slower than 10 MB/s (80 Mb/s) is no GPU interconnect [GB/s]."""
MAX_LATENCY_US = 1_000_000.0
"""Latency of one collective step: 1 s, 100,000x today's ~10 us [us]."""
MIN_LATENCY_US = 0.001
"""Latency of one collective step: 1 ns, below a signal's time to cross a package [us]."""


PRECISION_ALIASES: dict[str, str] = {
    "nvfp4": "fp4",
    "int4_wo": "int4", "int4_awq": "int4", "awq": "int4", "gptq": "int4", "w4a16": "int4",
}
"""Other names of the weight formats -> the canonical Precision value (checkpoint and engine names:
NVFP4 is `fp4`; AWQ/GPTQ INT4 weight-only, which run data records as `int4_wo`, is `int4`)."""


class Precision(str, Enum):
    """Number format of weights (and GEMM math) or of the KV cache.

    `Precision(name)` also takes the names of PRECISION_ALIASES (any case) and gives the canonical member,
    so every input (CLI, make_problem, YAML, run data) resolves aliases in this one place.
    """

    fp4 = "fp4"
    mxfp4 = "mxfp4"
    int4 = "int4"
    w4a8 = "w4a8"
    fp8 = "fp8"
    bf16 = "bf16"

    @classmethod
    def _missing_(cls, value: object) -> Precision | None:
        """A canonical member by an alias or another case ('AWQ', 'int4_wo', 'NVFP4'); None (refused) else."""
        if not isinstance(value, str):
            return None
        key = value.strip().lower()
        key = PRECISION_ALIASES.get(key, key)
        return next((m for m in cls if m.value == key), None)

    @classmethod
    def names(cls) -> list[str]:
        """Every name a precision may be given by: the canonical values, then the aliases."""
        return [m.value for m in cls] + list(PRECISION_ALIASES)

    @property
    def bytes_per_value(self) -> float:
        """Storage per weight value including its block scales [bytes].

        - fp4 (NVFP4): 4-bit E2M1 values, one FP8 (E4M3) scale per 16: 0.5 + 1/16 = 0.5625 (the per-tensor
          FP32 scale is negligible). Source: NVIDIA's NVFP4 format (TensorRT Model Optimizer, Blackwell).
        - mxfp4: 4-bit E2M1 values, one E8M0 scale per 32: 0.5 + 1/32 = 0.53125. Source: OCP Microscaling
          Formats (MX) Specification v1.0, block size 32 with an 8-bit shared exponent.
        - int4 (AWQ/GPTQ W4A16, group size 128): 4-bit values; per group of 128 one FP16 scale and one
          4-bit zero point (packed eight to an int32 as the weights are): 0.5 + (2 + 0.5) / 128 = 0.5195.
          Source: the AutoAWQ and GPTQ checkpoint layouts (qweight/qzeros int32-packed 4-bit, scales FP16
          per group; group_size 128 is their default); GPTQ's g_idx adds 4 bytes per input row, < 0.1%.
        - w4a8 (MXFP4 or INT4-AWQ weights multiplied with FP8 activations): the MXFP4 size, 0.53125.
        - fp8: one byte; block scales (one FP32 per 128x128 block) are negligible. bf16: two bytes.
        """
        return {"fp4": 0.5 + 1 / 16, "mxfp4": 0.5 + 1 / 32, "int4": 0.5 + 2.5 / 128, "w4a8": 0.5 + 1 / 32,
                "fp8": 1.0, "bf16": 2.0}[self.value]

    @property
    def math(self) -> str:
        """The tensor-core format the GEMMs run in where the GPU has it. NVFP4 and MXFP4 run in FP4
        (Blackwell, MI355X); INT4 weights (AWQ/GPTQ) run weight-only: dequantised in the kernel and
        multiplied in BF16 (W4A16), as serving engines do. W4A8 is 4-bit weights multiplied with FP8
        activations in FP8 (TensorRT-LLM's W4A8_AWQ and W4A8_MXFP4_FP8 modes): 4-bit memory traffic at
        the FP8 rate."""
        return {"fp4": "fp4", "mxfp4": "fp4", "int4": "bf16", "w4a8": "fp8", "fp8": "fp8",
                "bf16": "bf16"}[self.value]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Input(_Strict):
    """A schema of user input: every float finite (NaN and infinity refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MLA(_Input):
    """Multi-head latent attention dimensions (DeepSeek-V3 family)."""

    q_lora_rank: int = Field(
        0, ge=0, le=MAX_WIDTH, description="Query low-rank dimension; 0 = full-rank query [values]"
    )
    kv_lora_rank: PositiveInt = Field(le=MAX_WIDTH, description="Compressed KV latent width [values]")
    qk_nope_head_dim: PositiveInt = Field(le=MAX_HEAD_DIM, description="Per-head non-rotary query/key width [values]")
    qk_rope_head_dim: PositiveInt = Field(le=MAX_HEAD_DIM, description="Shared rotary key width [values]")
    v_head_dim: PositiveInt = Field(le=MAX_HEAD_DIM, description="Per-head value width [values]")


class CheckpointPrecision(_Input):
    """Weight formats of a model's published checkpoint, by component. Embeddings and the LM head are
    BF16 in every checkpoint and engine modelled (cost.EMBED_BYTES)."""

    dense: Precision = Field(
        description="Attention, dense FFNs, shared experts and routers: every GEMM weight but the routed experts"
    )
    experts: Precision | None = Field(None, description="Routed experts, where their format differs from dense")
    source: str = Field(min_length=3, description="Where the formats come from (the checkpoint's quantization_config)")


class ModelSpec(_Input):
    """Architecture of a decoder-only transformer, dense or mixture-of-experts."""

    name: str = Field(description="Catalog name, e.g. 'llama-3.1-70b'")
    description: str = ""
    source: str = Field(min_length=3, description="Where the architecture numbers come from")
    aliases: list[str] = Field(default_factory=list, description="Other names (HuggingFace ids)")
    num_layers: PositiveInt = Field(le=MAX_LAYERS, description="Transformer blocks [layers]")
    hidden_size: PositiveInt = Field(le=MAX_WIDTH, description="Residual width [values]")
    num_attention_heads: PositiveInt = Field(le=MAX_HEADS, description="Query heads [heads]")
    num_kv_heads: PositiveInt = Field(
        le=MAX_HEADS, description="Key/value heads (GQA); MLA: equal to query heads [heads]"
    )
    head_dim: PositiveInt = Field(le=MAX_HEAD_DIM, description="Per-head query/key/value width [values]")
    vocab_size: PositiveInt = Field(le=MAX_VOCAB, description="Vocabulary [tokens]")
    tie_word_embeddings: bool = Field(False, description="Input embedding shared with the LM head")
    intermediate_size: int = Field(
        0, ge=0, le=MAX_FFN_WIDTH, description="Dense FFN width; 0 when every layer is MoE [values]"
    )
    gated_ffn: bool = Field(True, description="SwiGLU-style FFN with three matrices (else two)")
    num_experts: int = Field(
        0, ge=0, le=MAX_EXPERTS, description="Routed experts per MoE layer; 0 = dense model [experts]"
    )
    experts_per_token: int = Field(
        0, ge=0, le=MAX_EXPERTS, description="Routed experts each token visits (top-k) [experts]"
    )
    moe_intermediate_size: int = Field(0, ge=0, le=MAX_FFN_WIDTH, description="Routed expert FFN width [values]")
    num_shared_experts: int = Field(
        0, ge=0, le=MAX_EXPERTS, description="Always-active shared experts per MoE layer [experts]"
    )
    shared_expert_intermediate_size: int = Field(
        0, ge=0, le=MAX_FFN_WIDTH, description="Shared expert FFN width; 0 = same as moe_intermediate_size [values]"
    )
    first_dense_layers: int = Field(
        0, ge=0, le=MAX_LAYERS, description="Leading layers with a dense FFN instead of MoE [layers]"
    )
    moe_layer_step: PositiveInt = Field(
        1, le=MAX_LAYERS, description="After the leading dense layers, every n-th layer is MoE, the others dense "
        "[layers]"
    )
    mla: MLA | None = Field(None, description="Latent attention dimensions, when the model uses MLA")
    sliding_window: int = Field(
        0, ge=0, le=MAX_WINDOW, description="Window of the windowed/chunked-attention layers [tokens]"
    )
    sliding_window_layers: int = Field(
        0, ge=0, le=MAX_LAYERS, description="Layers that attend within sliding_window [layers]"
    )
    mtp_layers: int = Field(
        0, ge=0, le=MAX_LAYERS, description="Multi-token-prediction (MTP) modules the checkpoint ships beside its "
        "layers (HuggingFace num_nextn_predict_layers), each one transformer layer of the model's own kind that "
        "proposes draft tokens; counted only with speculative decoding (Speculation method mtp) [layers]"
    )
    approximations: list[str] = Field(
        default_factory=list, description="Parts of the architecture the cost model approximates"
    )
    checkpoint_precision: CheckpointPrecision | None = Field(
        None, description="Formats of the checkpoint the catalog's source describes (aliases naming other "
        "checkpoints, e.g. -FP8 or -NVFP4 repositories, are not told apart); None = not stated"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.checkpoint_precision and self.checkpoint_precision.experts and not self.num_experts:
            raise ValueError("checkpoint_precision.experts needs routed experts (num_experts > 0)")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.num_experts:
            if not 1 <= self.experts_per_token <= self.num_experts:
                raise ValueError("experts_per_token must be between 1 and num_experts for an MoE model")
            if not self.moe_intermediate_size:
                raise ValueError("moe_intermediate_size is required for an MoE model (num_experts > 0)")
        elif self.experts_per_token or self.num_shared_experts:
            raise ValueError("experts_per_token/num_shared_experts need num_experts > 0")
        if self.num_dense_layers and not self.intermediate_size:
            raise ValueError(
                f"{self.num_dense_layers} layers have a dense FFN, so intermediate_size must be > 0"
            )
        if self.first_dense_layers > self.num_layers:
            raise ValueError("first_dense_layers exceeds num_layers")
        if self.sliding_window_layers > self.num_layers:
            raise ValueError("sliding_window_layers exceeds num_layers")
        if self.sliding_window_layers and not self.sliding_window:
            raise ValueError("sliding_window_layers given without sliding_window")
        return self

    @property
    def is_moe(self) -> bool:
        """True when the model has routed experts."""
        return self.num_experts > 0

    @property
    def num_moe_layers(self) -> int:
        """Layers whose FFN is a mixture of experts [layers]."""
        if not self.is_moe:
            return 0
        rest = self.num_layers - self.first_dense_layers
        return (rest + self.moe_layer_step - 1) // self.moe_layer_step if self.moe_layer_step > 1 else rest

    @property
    def num_dense_layers(self) -> int:
        """Layers whose FFN is dense [layers]."""
        return self.num_layers - self.num_moe_layers

    # --- parameter counts [parameters] -------------------------------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        """Q, K, V and output projection weights of one layer [parameters]."""
        h = self.hidden_size
        if self.mla:
            m = self.mla
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            heads = self.num_attention_heads
            q = (h * m.q_lora_rank + m.q_lora_rank * heads * qk) if m.q_lora_rank else h * heads * qk
            kv_down = h * (m.kv_lora_rank + m.qk_rope_head_dim)
            kv_up = m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
            out = heads * m.v_head_dim * h
            return q + kv_down + kv_up + out
        q = h * self.num_attention_heads * self.head_dim
        kv = 2 * h * self.num_kv_heads * self.head_dim
        out = self.num_attention_heads * self.head_dim * h
        return q + kv + out

    def _ffn_params(self, width: int) -> int:
        return (3 if self.gated_ffn else 2) * self.hidden_size * width

    @property
    def dense_ffn_params(self) -> int:
        """One dense FFN [parameters]."""
        return self._ffn_params(self.intermediate_size)

    @property
    def expert_params(self) -> int:
        """One routed expert [parameters]."""
        return self._ffn_params(self.moe_intermediate_size)

    @property
    def shared_expert_params(self) -> int:
        """All shared experts of one MoE layer, plus its router [parameters]."""
        width = self.shared_expert_intermediate_size or self.moe_intermediate_size
        return self.num_shared_experts * self._ffn_params(width) + self.hidden_size * self.num_experts

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (once when tied) [parameters]."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def total_params(self) -> int:
        """All weights [parameters]."""
        return (
            self.num_layers * self.attention_params_per_layer
            + self.num_dense_layers * self.dense_ffn_params
            + self.num_moe_layers * (self.num_experts * self.expert_params + self.shared_expert_params)
            + self.embedding_params
        )

    @property
    def active_params(self) -> int:
        """Weights one token multiplies with, embeddings included [parameters]."""
        return (
            self.num_layers * self.attention_params_per_layer
            + self.num_dense_layers * self.dense_ffn_params
            + self.num_moe_layers * (self.experts_per_token * self.expert_params + self.shared_expert_params)
            + self.embedding_params
        )


class ClusterSpec(_Input):
    """A GPU system: per-GPU memory, compute and the two tiers of interconnect."""

    name: str = Field(description="Catalog name, e.g. 'gb200-nvl72'")
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    gpu: str = Field(description="GPU model name")
    generation: str = Field(
        "", description="GPU architecture generation (ampere, ada, hopper, blackwell, blackwell-ultra, cdna3, "
        "cdna4): GPUs of one generation share a die family and its kernels, so they share fitted "
        "compute and memory efficiencies; empty = none (the base factors)")
    hbm_capacity_gb: float = Field(
        ge=MIN_HBM_GB, le=MAX_HBM_GB, description="HBM per GPU usable by the process [GB = 1e9 bytes]"
    )
    hbm_bandwidth_tbps: float = Field(
        ge=MIN_HBM_TBPS, le=MAX_HBM_TBPS, description="Peak HBM bandwidth per GPU [TB/s = 1e12 bytes/s]"
    )
    tflops: dict[Literal["bf16", "fp8", "fp4"], Annotated[float, Field(ge=MIN_TFLOPS, le=MAX_TFLOPS)]] = Field(
        description="Dense tensor-core peak per GPU by math format [TFLOP/s = 1e12 FLOP/s]"
    )
    scaleup_domain_gpus: PositiveInt = Field(le=MAX_DOMAIN_GPUS, description="GPUs in one NVLink/xGMI domain [GPUs]")
    scaleup_bandwidth_gbps: float = Field(
        ge=MIN_LINK_GBPS, le=MAX_SCALEUP_GBPS,
        description="Scale-up bandwidth per GPU, one direction [GB/s = 1e9 bytes/s]",
    )
    scaleout_bandwidth_gbps: float = Field(
        ge=MIN_LINK_GBPS, le=MAX_SCALEOUT_GBPS,
        description="Scale-out (NIC) bandwidth per GPU, one direction [GB/s = 1e9 bytes/s]",
    )
    gpus_per_node: PositiveInt = Field(
        le=MAX_NODE_GPUS, description="GPUs per server or tray: the unit GPUs are bought in [GPUs]"
    )
    node_unit: Literal["node", "tray"] = Field(
        "node", description="What the unit of gpus_per_node is called: a server ('node') or a rack tray ('tray')"
    )
    scaleup_latency_us: float = Field(
        ge=MIN_LATENCY_US, le=MAX_LATENCY_US, description="Latency of one scale-up collective step [us]"
    )
    scaleout_latency_us: float = Field(
        ge=MIN_LATENCY_US, le=MAX_LATENCY_US, description="Latency of one scale-out collective step [us]"
    )
    reserved_memory_gb: float = Field(
        ge=0, le=MAX_HBM_GB, description="HBM taken by the CUDA/ROCm context and runtime, never usable [GB]"
    )
    sources: dict[str, str] = Field(description="Source of each physical number, by field name")

    @model_validator(mode="after")
    def _every_number_sourced(self) -> ClusterSpec:
        physical = [
            "hbm_capacity_gb", "hbm_bandwidth_tbps", "tflops", "scaleup_domain_gpus",
            "scaleup_bandwidth_gbps", "scaleout_bandwidth_gbps", "gpus_per_node",
            "scaleup_latency_us", "scaleout_latency_us", "reserved_memory_gb",
        ]
        missing = [f for f in physical if not self.sources.get(f, "").strip()]
        if missing:
            raise ValueError(f"sources must name where each number comes from; missing: {', '.join(missing)}")
        if self.reserved_memory_gb >= self.hbm_capacity_gb:
            raise ValueError("reserved_memory_gb must be smaller than hbm_capacity_gb")
        if "bf16" not in self.tflops:
            raise ValueError("tflops must give at least bf16")
        return self

    @property
    def vendor(self) -> str:
        """'amd' for CDNA generations, 'nvidia' for the others, '' when no generation is given."""
        if not self.generation:
            return ""
        return "amd" if self.generation.startswith("cdna") else "nvidia"

    def supports(self, math: str) -> bool:
        """True when the GPU has tensor cores for this math format."""
        return math in self.tflops

    @property
    def capacity_bytes(self) -> float:
        """HBM per GPU [bytes]."""
        return self.hbm_capacity_gb * GB


class LengthShape(str, Enum):
    """Distribution of request lengths around their mean."""

    lognormal = "lognormal"
    normal = "normal"
    uniform = "uniform"
    exponential = "exponential"
    trace = "trace"


class Workload(_Input):
    """What each request asks for."""

    isl: PositiveInt = Field(32768, le=MAX_TOKENS, description="Input (prompt) tokens per request [tokens]")
    osl: PositiveInt = Field(1024, le=MAX_TOKENS, description="Output tokens per request [tokens]")
    burstiness: float | None = Field(
        0.0, ge=0, le=1, description="In a closed loop, the share of a rank's other requests whose prompts "
        "arrive together with a request (0 = steady traffic; no effect on open traffic); None = the "
        "calibration's fitted value (measured closed-loop benchmarks)"
    )
    closed_loop: bool = Field(
        False, description="Requests come back as soon as they finish (a benchmark's fixed concurrency), "
        "so those that finished together arrive together"
    )
    isl_cv: float = Field(0.0, ge=0, le=4, description="Spread of prompt lengths: standard deviation / mean "
                          "(0 = every prompt isl tokens)")
    osl_cv: float = Field(0.0, ge=0, le=4, description="Spread of output lengths: standard deviation / mean")
    shape: LengthShape = Field(
        LengthShape.lognormal, description="Shape of the length distributions where a cv is above 0 (isl and osl "
        "their means); 'trace': the samples isl_samples / osl_samples")
    isl_samples: tuple[PositiveInt, ...] | None = Field(
        None, description="Prompt lengths of a trace, paired with osl_samples (shape 'trace') [tokens]")
    osl_samples: tuple[PositiveInt, ...] | None = Field(
        None, description="Output lengths of a trace, paired with isl_samples [tokens]")
    prefix_hit: float = Field(
        0.0, ge=0, lt=1, description="Share of each prompt's tokens found in the prefix cache: not prefilled, "
        "their KV already resident")
    prefix_cache_tokens: NonNegativeInt | None = Field(
        None, le=MAX_TOKENS * 1024, description="Distinct prefix tokens the cache keeps resident per replica, "
        "charged in KV memory; None = one shared prefix, prefix_hit * isl [tokens]")

    @model_validator(mode="after")
    def _lengths(self) -> Workload:
        given = (self.isl_samples is not None, self.osl_samples is not None)
        if given[0] != given[1] or (self.shape == LengthShape.trace) != given[0]:
            raise ValueError("a trace needs isl_samples and osl_samples together with shape 'trace'")
        if given[0] and len(self.isl_samples) != len(self.osl_samples):
            raise ValueError(f"isl_samples has {len(self.isl_samples)} lengths, osl_samples "
                             f"{len(self.osl_samples)}: a trace pairs them")
        if self.shape == LengthShape.exponential and (self.isl_cv not in (0, 1) or self.osl_cv not in (0, 1)):
            raise ValueError("an exponential length has cv 1: give isl_cv/osl_cv 1 (or 0 for a fixed length)")
        return self

    @property
    def varies(self) -> bool:
        """True when request lengths vary (a cv above 0 or a trace)."""
        return self.shape == LengthShape.trace or self.isl_cv > 0 or self.osl_cv > 0

    @property
    def prefill_tokens(self) -> float:
        """Prompt tokens a request prefills: the part the prefix cache misses, isl * (1 - prefix_hit) [tokens]."""
        return self.isl * (1.0 - self.prefix_hit)

    @property
    def cached_prefix_tokens(self) -> float:
        """Prefix tokens resident in the KV cache per replica [tokens]."""
        if self.prefix_cache_tokens is not None:
            return float(self.prefix_cache_tokens)
        return self.prefix_hit * self.isl


PERCENTILES = (50, 90, 95, 99)
"""Percentiles an SLA may name (p50, p90, p95, p99)."""


class SpecMethod(str, Enum):
    """How draft tokens are proposed: DeepSeek-style multi-token-prediction heads, an EAGLE head, or a
    separate small draft model."""

    mtp = "mtp"
    eagle = "eagle"
    draft = "draft"


class Speculation(_Input):
    """Speculative decoding: k draft tokens proposed per step, verified in one pass of the target model."""

    method: SpecMethod
    draft_tokens: int | None = Field(
        None, ge=1, le=8, description="Draft tokens k per step; None = searched (1 to 4)")
    acceptance: float | None = Field(
        None, gt=0, lt=1, description="Probability a draft token is accepted given the ones before it were; "
        "None = the calibration's value for the method")
    draft_model: str | None = Field(None, description="method 'draft': the draft model's catalog name or file")

    @model_validator(mode="after")
    def _draft(self) -> Speculation:
        if (self.method == SpecMethod.draft) != (self.draft_model is not None):
            raise ValueError("a draft model is named with method 'draft', and only then")
        return self


class SLA(_Input):
    """Service level per user.

    A number out of range (NaN and infinity included) raises SpecError itself, not pydantic's
    ValidationError: the studies build an SLA directly for each level of a frontier sweep and for
    compare's --at, and each of those paths must end in the same one-line error as make_problem's.
    """

    min_tokens_per_s_per_user: float | None = Field(
        None, allow_inf_nan=True,  # refused by _in_range, with the message below
        description="Minimum decode speed per request, from 0.001 (one token per 1000 s) to 1,000,000 (1 us "
        "per token) [tokens/s]; None = no floor (e.g. a TTFT limit only)",
    )
    max_ttft_s: float | None = Field(
        None, allow_inf_nan=True, description="Maximum time to first token, above 0 and at most 7 days [s]"
    )
    tpot_percentile: int | None = Field(
        None, description="The tokens/s/user floor holds at this percentile of requests' TPOT (50, 90, 95, 99); "
        "None = the mean TPOT")
    ttft_percentile: int | None = Field(
        None, description="The TTFT limit holds at this percentile of requests' TTFT; None = the mean TTFT")

    @field_validator("tpot_percentile", "ttft_percentile")
    @classmethod
    def _percentile(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value not in PERCENTILES:
            raise SpecError(f"field '{info.field_name}': a percentile is one of "
                            f"{', '.join(f'p{q}' for q in PERCENTILES)}, got {value!r}")
        return value

    @field_validator("min_tokens_per_s_per_user", "max_ttft_s")
    @classmethod
    def _in_range(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return None
        name = info.field_name
        if name == "min_tokens_per_s_per_user":
            bad = not MIN_TOKENS_PER_S_PER_USER <= value <= MAX_TOKENS_PER_S_PER_USER
            rule = f"from {MIN_TOKENS_PER_S_PER_USER:g} to {MAX_TOKENS_PER_S_PER_USER:,.0f} tokens/s"
        else:
            bad = not 0 < value <= MAX_TTFT_S
            rule = f"above 0 and at most {MAX_TTFT_S:,.0f} s (7 days)"
        if not math.isfinite(value) or bad:
            raise SpecError(f"field '{name}': must be {rule}, got {value!r}")
        return value


class Factors(_Input):
    """Efficiency factors of the cost model: the only fitted numbers, each bounded where a kernel engineer
    would accept it. Defaults are the priors the fit starts from and is pulled towards
    (planner.calibrate.PRIORS gives each its source)."""

    hbm_efficiency: float = Field(
        0.85, ge=0.5, le=0.95, description="Achieved fraction of peak HBM bandwidth streaming weights in GEMMs; "
        "large streaming reads reach 0.8-0.9 of peak on H100/B200/MI300X")
    compute_efficiency: float = Field(
        0.7, ge=0.3, le=0.95, description="Achieved fraction of peak dense tensor-core FLOP/s in large GEMMs, "
        "per GPU generation and math format")
    prefill_attention_efficiency: float = Field(
        0.5, ge=0.15, le=0.85, description="FlashAttention-family kernels (prefill of GQA and MLA, and the math "
        "of GQA decode): achieved fraction of peak tensor FLOP/s")
    decode_attention_efficiency: float = Field(
        0.7, ge=0.3, le=0.95, description="Paged-decode kernels: achieved fraction of peak HBM bandwidth while "
        "reading the KV cache")
    mla_decode_efficiency: float = Field(
        0.6, ge=0.15, le=0.85, description="FlashMLA-family kernels (absorbed MLA decode, compute-bound over "
        "the shared latent): achieved fraction of peak tensor FLOP/s; no effect on GQA models")
    moe_gemm_efficiency: float = Field(
        0.7, ge=0.2, le=1.0, description="Achieved fraction of the dense GEMM rates (compute_efficiency FLOP/s "
        "when compute-bound, hbm_efficiency bandwidth when reading weights) that the routed-expert grouped "
        "GEMMs of MoE layers reach: many small per-expert GEMMs, routing/permute kernels and load imbalance "
        "across experts; dimensionless, 1 = as fast as dense GEMMs, no effect on dense models"
    )
    scaleup_efficiency: float = Field(
        0.75, ge=0.4, le=0.95, description="Achieved fraction of scale-up bandwidth by large collectives (the "
        "beta of the alpha-beta model; NCCL bus bandwidth over NVLink reaches 0.7-0.9 of the link)")
    scaleout_efficiency: float = Field(
        0.7, ge=0.3, le=0.95, description="Achieved fraction of scale-out (NIC) bandwidth by large transfers")
    layer_overhead_us: float = Field(
        10.0, ge=0, le=40, description="Fixed time per layer per iteration beyond its roofline: kernel launch "
        "gaps and the ramp of ~10 small kernels (norms, rotary, activation, GEMMs) [us]"
    )
    collective_overhead_us: float = Field(
        8.0, ge=0.5, le=60, description="Time each collective (all-reduce, all-to-all, hand-off) adds to the "
        "link latency: launch and synchronisation (the alpha of the alpha-beta model beside the link's own) "
        "[us]"
    )
    iteration_overhead_ms: float = Field(
        1.0, ge=0, le=30, description="Fixed scheduler/sampling time per engine iteration [ms]"
    )
    request_step_overhead_us: float = Field(
        10.0, ge=0, le=200, description="Host time per decoding request per iteration of an attention-DP rank: "
        "scheduling it, sampling, detokenising and streaming its token [us]"
    )
    ttft_overhead_ms: float = Field(
        20.0, ge=0, le=300, description="Fixed time every request spends before its first token outside the "
        "prefill passes: HTTP and tokenisation in the front end, admission by the scheduler, detokenising "
        "and streaming the first token back [ms]"
    )
    disagg_handoff_ms: float = Field(
        30.0, ge=0, le=500, description="Disaggregated serving: fixed time a request spends between its last "
        "prefill pass and its first token besides the KV bytes' transfer: the router's hand-off, the transfer's "
        "set-up (NIXL/UCX registration and metadata), the decode engine's admission and first step [ms]"
    )
    admission_iterations: float = Field(
        1.5, ge=0, le=12, description="Engine iterations a request's first token waits besides its prefill "
        "passes: the rest of the iteration in flight when it arrives (1/2 on average), iterations the scheduler "
        "lets pass before admitting it, and one more where the engine streams tokens an iteration behind "
        "(overlap scheduling) [iterations of the mean TPOT]"
    )
    mtp_acceptance: float = Field(
        0.85, ge=0.3, le=0.95, description="Speculative decoding with multi-token-prediction modules (Speculation "
        "mtp): probability that a draft token is accepted given that the ones before it were, the same at every "
        "position (planner.cost.expected_tokens); dimensionless"
    )
    eagle_acceptance: float = Field(
        0.75, ge=0.3, le=0.95, description="Speculative decoding with an EAGLE head (Speculation eagle): per-token "
        "acceptance as for mtp_acceptance; dimensionless"
    )
    draft_acceptance: float = Field(
        0.7, ge=0.3, le=0.95, description="Speculative decoding with a separate draft model (Speculation draft): "
        "per-token acceptance as for mtp_acceptance; dimensionless"
    )
    queue_burstiness: float = Field(
        0.5, ge=0, le=1, description="How synchronised a closed loop of fixed-length requests stays: the share "
        "of a rank's other requests whose prompts arrive together with a request (0 = they have drifted "
        "apart into steady traffic, 1 = every wave stays whole); fitted per engine to closed-loop "
        "benchmarks, applied to measured runs; planning uses Workload.burstiness"
    )


FACTOR_NAMES: tuple[str, ...] = tuple(Factors.model_fields)
"""Names of the fitted factors, in a fixed order."""


class Profile(_Input):
    """Factors fitted to runs of one GPU system or generation, serving engine, GPU vendor, math format and/or
    model ('*' matches any)."""

    model: str = Field("*", description="Model catalog name, or '*' (a deployment's own profile, fitted by "
                       "`planner calibrate --anchor` to runs measured on it)")
    system: str = Field("*", description="Cluster catalog name, or '*'")
    generation: str = Field("*", description="GPU generation (ClusterSpec.generation: hopper, blackwell, cdna3, "
                            "...), or '*'")
    vendor: str = Field("*", description="GPU vendor (nvidia, amd): an engine's build for it, or '*'")
    math: str = Field("*", description="Tensor-core format of the dense GEMMs (bf16, fp8, fp4), or '*'")
    backend: str = Field("*", description="Serving engine (trtllm, vllm, sglang, atom), or '*'")
    factors: dict[str, float] = Field(default_factory=dict, description="Overrides of Factors fields")
    rows: int = Field(0, ge=0, description="Measured runs the profile was fitted on")

    @model_validator(mode="after")
    def _known_factors(self) -> Profile:
        unknown = sorted(set(self.factors) - set(FACTOR_NAMES))
        if unknown:
            raise ValueError(f"unknown factors {unknown}; known: {', '.join(FACTOR_NAMES)}")
        Factors(**self.factors)  # bounds
        return self

    def matches(self, system: str, backend: str, model: str, generation: str, vendor: str, math: str) -> bool:
        """True when every key of the profile is '*' or the given value."""
        return all(mine in ("*", theirs) for mine, theirs in (
            (self.model, model), (self.system, system), (self.generation, generation), (self.vendor, vendor),
            (self.math, math), (self.backend, backend)))

    @property
    def rank(self) -> int:
        """Specificity: a model's profile over a system's over a generation and format's over a generation's
        over an engine's (on a vendor's build over any)."""
        return ((self.model != "*") * 32 + (self.system != "*") * 16 + (self.math != "*") * 8
                + (self.generation != "*") * 4 + (self.backend != "*") * 2 + (self.vendor != "*"))

    @property
    def label(self) -> str:
        """The keys that are set, e.g. 'sglang@amd' or 'hopper/fp8'."""
        parts = [self.model, self.system, self.generation, self.math]
        out = "/".join(p for p in parts if p != "*")
        if self.backend != "*":
            engine = self.backend + (f"@{self.vendor}" if self.vendor != "*" else "")
            out = f"{out} {engine}".strip()
        elif self.vendor != "*":
            out = f"{out} @{self.vendor}".strip()
        return out or "*"


INTERVAL_PROBS: tuple[float, ...] = (
    0.0, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99,
    1.0)
"""Probabilities at which an interval table keeps its quantiles (0 and 1: the smallest and largest residual);
quantiles in between are interpolated linearly."""
INTERVAL_METRICS: tuple[str, ...] = ("tpot", "ttft", "tokens_per_s_per_gpu")
"""The predicted figures an interval table covers."""


class RegimeResiduals(_Input):
    """Quantiles of log(measured / predicted) of one figure over the held-out runs of one regime."""

    regime: str = Field(description="Regime name (planner.uncertainty.REGIMES) or 'all' (every run)")
    metric: Literal["tpot", "ttft", "tokens_per_s_per_gpu"]
    runs: PositiveInt = Field(description="Held-out runs the quantiles come from [runs]")
    quantiles: list[float] = Field(description="log(measured / predicted) at IntervalTable.probs, nondecreasing "
                                   "[natural log units]")

    @field_validator("quantiles")
    @classmethod
    def _nondecreasing(cls, q: list[float]) -> list[float]:
        if any(b < a for a, b in zip(q, q[1:])):
            raise ValueError("quantiles must be nondecreasing")
        return q


class IntervalTable(_Input):
    """Empirical quantiles of held-out (cross-validated) prediction errors, per regime and figure: the error
    bars of every prediction (planner.uncertainty). Regimes with fewer than `min_runs` held-out runs have no
    row; their predictions take the 'all' row."""

    source: str = Field(description="How the held-out predictions were made, e.g. 'LOMO: 6 folds, ...'")
    min_runs: PositiveInt = Field(description="Fewest held-out runs a regime needs for its own row [runs]")
    probs: list[float] = Field(default_factory=lambda: list(INTERVAL_PROBS),
                               description="Probabilities of every row's quantiles, increasing, 0 to 1")
    rows: list[RegimeResiduals]

    @model_validator(mode="after")
    def _consistent(self) -> IntervalTable:
        pr = self.probs
        if len(pr) < 2 or pr[0] != 0.0 or pr[-1] != 1.0 or any(b <= a for a, b in zip(pr, pr[1:])):
            raise ValueError("probs must increase from 0 to 1")
        for row in self.rows:
            if len(row.quantiles) != len(pr):
                raise ValueError(f"row {row.regime}/{row.metric}: {len(row.quantiles)} quantiles for {len(pr)} probs")
        missing = [m for m in INTERVAL_METRICS if not any(r.regime == "all" and r.metric == m for r in self.rows)]
        if missing:
            raise ValueError(f"the 'all' regime needs a row for {', '.join(missing)}")
        return self


class Calibration(_Input):
    """Efficiency factors (base plus per system/backend/model profiles) and the engine's memory headroom.

    The shipped calibration (planner/calibration.yaml) is fitted to measured runs by
    `planner calibrate`; without it the base factors are starting values from the hardware notes.
    """

    name: str = "default"
    source: str = "starting values from shared/reference/hardware.md, not fitted"
    base: Factors = Field(default_factory=Factors)
    profiles: list[Profile] = Field(default_factory=list)
    memory_utilization: float = Field(
        0.9, gt=0.3, le=1.0, description="Fraction of HBM the engine may use (vLLM gpu_memory_utilization)"
    )
    comm_buffer_gb: float = Field(0.4, ge=0, le=16, description="NCCL buffers once any GPU group > 1 [GB]")
    engine_chunk_tokens: dict[str, Annotated[int, Field(ge=1, le=MAX_TOKENS)]] = Field(
        default_factory=lambda: {"trtllm": 8192, "vllm": 8192, "sglang": 8192, "*": 8192},
        description="Default prefill token budget per iteration of each engine, for measured runs [tokens]",
    )
    intervals: IntervalTable | None = Field(
        None, description="Held-out error quantiles per regime, the error bars of predictions (None: none shown)")

    def factors_for(self, system: str, backend: str, model: str = "*", generation: str = "",
                    vendor: str = "", math: str = "") -> Factors:
        """Base factors overridden by matching profiles, least specific first (Profile.rank: a model's
        profile over a system's over a generation's over an engine's). An empty generation, vendor or
        math matches only profiles that leave it '*'."""
        merged = self.base.model_dump()
        ranked = sorted((p for p in self.profiles if p.matches(system, backend, model, generation, vendor, math)),
                        key=lambda p: p.rank)
        for prof in ranked:
            merged.update(prof.factors)
        return Factors(**merged)


class Parallel(_Strict):
    """How one replica splits the model, and how many replicas run."""

    tp: PositiveInt = Field(1, description="Tensor parallel size of attention [GPUs]")
    attention_dp: PositiveInt = Field(1, description="Attention data-parallel size inside a replica [GPUs]")
    pp: PositiveInt = Field(1, description="Pipeline stages [stages]")
    ep: PositiveInt = Field(1, description="Expert parallel size of MoE layers [GPUs]")
    moe_tp: PositiveInt = Field(
        description="Tensor parallel size inside each expert; when not given, tp * attention_dp / ep (the MoE "
        "layers re-split the stage's GPUs) [GPUs]")
    dp: PositiveInt = Field(1, description="Replicas [replicas]")

    @model_validator(mode="before")
    @classmethod
    def _derive_moe_tp(cls, data: object) -> object:
        """moe_tp defaults to tp * attention_dp / ep (rounded down, at least 1: when ep does not divide the
        stage, the moe_resplit rule names it)."""
        if isinstance(data, dict) and data.get("moe_tp") is None:
            try:
                stage = int(data.get("tp", 1)) * int(data.get("attention_dp", 1))
                data = {**data, "moe_tp": max(1, stage // max(1, int(data.get("ep", 1))))}
            except (TypeError, ValueError):
                pass  # the field validators name the bad degree
        return data

    @property
    def stage_gpus(self) -> int:
        """GPUs of one pipeline stage = tp * attention_dp [GPUs]."""
        return self.tp * self.attention_dp

    @property
    def replica_gpus(self) -> int:
        """GPUs of one replica = tp * attention_dp * pp [GPUs]."""
        return self.stage_gpus * self.pp

    @property
    def gpus_used(self) -> int:
        """GPUs of all replicas [GPUs]."""
        return self.replica_gpus * self.dp

    @property
    def label(self) -> str:
        """Compact label in the study's style, e.g. 'TP2 EP16 PP2 DP1'.

        EPn alone means attention_dp = ep = n (the study's convention); ADPn is shown whenever
        attention_dp differs from ep, MOETPn whenever the expert split differs from tp.
        """
        parts = [f"TP{self.tp}"]
        if self.attention_dp != self.ep:
            if self.attention_dp > 1 or self.ep > 1:
                parts.append(f"ADP{self.attention_dp}")
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        if self.moe_tp != self.tp and self.ep > 1:
            parts.append(f"MOETP{self.moe_tp}")
        parts += [f"PP{self.pp}", f"DP{self.dp}"]
        return " ".join(parts)

    def key(self) -> tuple[int, int, int, int, int]:
        """The replica layout without dp: (tp, attention_dp, pp, ep, moe_tp)."""
        return (self.tp, self.attention_dp, self.pp, self.ep, self.moe_tp)


class Batch(_Strict):
    """Batching of one replica."""

    concurrency: PositiveInt = Field(description="Requests in flight per replica [requests]")
    chunk_tokens: PositiveInt = Field(description="Prefill token budget per iteration per attention-DP rank [tokens]")
    micro_batch: PositiveInt = Field(
        description="Decode requests per attention-DP rank per pipeline micro-batch [requests]"
    )


class LatencyPercentiles(_Strict):
    """Percentiles over requests, keyed 'p50', 'p90', 'p95', 'p99' [ms]."""

    ttft_ms: dict[str, float] = Field(description="Time to first token by percentile [ms]")
    tpot_ms: dict[str, float] = Field(description="A request's mean time per output token by percentile [ms]")


class Metrics(_Strict):
    """Predicted service figures."""

    tokens_per_s_per_user: float = Field(description="Decode speed of one request = 1000 / tpot_ms [tokens/s]")
    tokens_per_s_per_gpu: float = Field(description="Output tokens per second over all GPUs given [tokens/s/GPU]")
    tpot_ms: float = Field(description="Mean time per output token after the first [ms]")
    ttft_ms: float = Field(description="Mean time to first token [ms]")
    requests_per_s: float = Field(description="Completed requests per second, all replicas [requests/s]")
    prefill_share: float = Field(description="Fraction of iterations that carry a prefill chunk")
    prefill_load: float = Field(description="Share of the chunk budget prefill needs (< 1 by rule)")
    interval_level: float | None = Field(
        None, description="Probability each interval holds the measured figure (two-sided, e.g. 0.8); None when "
        "the calibration has no interval table")
    interval_regime: str | None = Field(None, description="Regime whose held-out errors give the intervals")
    tpot_interval_ms: tuple[float, float] | None = Field(None, description="Interval of the TPOT [ms]")
    ttft_interval_ms: tuple[float, float] | None = Field(None, description="Interval of the TTFT [ms]")
    tokens_per_s_per_gpu_interval: tuple[float, float] | None = Field(
        None, description="Interval of the tokens/s/GPU [tokens/s/GPU]")
    percentiles: LatencyPercentiles | None = Field(
        None, description="Predicted percentiles over requests of TTFT and TPOT (planner.percentiles)")
    tokens_per_step: float = Field(
        1.0, description="Output tokens a request gains per decode step: 1, or more with speculative decoding")


class Memory(_Strict):
    """Memory per GPU of the busiest pipeline stage [bytes]."""

    per_gpu_bytes: float = Field(description="Everything below, summed [bytes]")
    capacity_bytes: float = Field(description="HBM of one GPU [bytes]")
    usable_bytes: float = Field(description="capacity * memory_utilization [bytes]")
    weights_bytes: float = Field(description="Weights held by one GPU [bytes]")
    kv_cache_bytes: float = Field(description="KV cache for the concurrency at full context [bytes]")
    activation_bytes: float = Field(description="Activations/workspace for one iteration's tokens [bytes]")
    comm_buffer_bytes: float = Field(description="Collective communication buffers [bytes]")
    reserved_bytes: float = Field(description="Runtime context, never usable [bytes]")
    draft_bytes: float = Field(0.0, description="Speculative decoding: the draft's weights and KV cache (MTP "
                               "modules, EAGLE head or draft model); 0 without [bytes]")


class SolverInfo(_Strict):
    """How the plan was found."""

    method: Literal["cpsat", "exhaustive", "estimate"]
    status: Literal["OPTIMAL", "FEASIBLE", "EVALUATED"]
    wall_s: float = Field(description="Wall time of the search [s]")
    objective_bound: float | None = Field(None, description="Proven upper bound of tokens/s/GPU [tokens/s/GPU]")
    gap: float | None = Field(None, description="Relative gap between plan and bound")
    candidates: int | None = Field(
        None, description="(layout, batch) combinations in the candidate lists, before any rule [options]")
    evaluated: int | None = Field(
        None, description="Options the cost model evaluated: every batch of every layout the layout rules "
        "admit [options]")
    model_options: int | None = Field(
        None, description="Options in the CP-SAT model: those no other option dominates, and per rule the best "
        "ones only that rule excludes [options]")
    certified: bool | None = Field(
        None, description="The plan was re-checked by the plain rule checker on the float cost model and no "
        "evaluated option obeying every rule beats it (None: not checked)")
    limited_by: list[str] = Field(
        default_factory=list,
        description="Rules the next larger micro-batch of this layout would break (memory, sla, ttft, "
        "chunk_keeps_up), or 'batch_grid' when the batch is the largest candidate",
    )


class ConfidenceInfo(_Strict):
    """How a plan searched with a confidence level (solve --confidence) meets its SLA, and what that costs."""

    level: float = Field(description="One-sided probability that the measured TPOT and TTFT stay within the SLA")
    tpot_ms: float = Field(description="The plan's TPOT at the pessimistic quantile of its regime [ms]")
    ttft_ms: float = Field(description="The plan's TTFT at the pessimistic quantile of its regime [ms]")
    central_tokens_per_s_per_gpu: float | None = Field(
        None, description="tokens/s/GPU of the best plan at the central estimate, the same rules otherwise; None "
        "when that search found no plan [tokens/s/GPU]")
    central_label: str | None = Field(None, description="Layout of the best plan at the central estimate")
    cost: float | None = Field(
        None, description="Share of tokens/s/GPU given up for the confidence: 1 - plan / central plan")


class DomainSpan(_Strict):
    """A group of one replica that crosses scale-up domains, so that its communication runs over scale-out."""

    group: Literal["tp", "moe_stage", "pipeline"] = Field(
        description="The tp group (all-reduce, hierarchical), the MoE stage tp * attention_dp (token dispatch "
        "and combine) or the pipeline replica (stage hand-offs)")
    gpus: int = Field(description="GPUs of the group [GPUs]")
    domains: int = Field(description="Scale-up domains it spans [domains]")
    domain_gpus: int = Field(description="GPUs of one scale-up domain [GPUs]")


Serving = Literal["agg", "disagg"]
"""How a deployment serves: aggregated (every replica prefills and decodes) or disaggregated (a prefill pool
and a decode pool on separate GPUs, the KV cache moving between them)."""


class PoolBatch(_Strict):
    """Batching of one worker of a pool: the chunk of a prefill worker, the decode batch of a decode worker."""

    chunk_tokens: PositiveInt | None = Field(
        None, description="Prefill: prompt tokens per pass per attention-DP rank [tokens]")
    micro_batch: PositiveInt | None = Field(
        None, description="Decode: requests per attention-DP rank per pipeline micro-batch [requests]")
    concurrency: PositiveInt | None = Field(None, description="Decode: requests in flight per worker [requests]")


class PoolMetrics(_Strict):
    """Predicted figures of one worker of a pool, and the pool's load."""

    pass_ms: float = Field(description="One pass of the worker [ms]")
    prefill_capacity_requests_per_s: float | None = Field(
        None, description="Prefill: prompts one worker completes per second at full load [requests/s]")
    prefill_service_ms: float | None = Field(None, description="Prefill: one prompt's passes, no queueing [ms]")
    load: float | None = Field(None, description="Prefill: the pool's load rho = demand / capacity (< 1 by rule)")
    tpot_ms: float | None = Field(None, description="Decode: time per output token [ms]")
    tokens_per_s: float | None = Field(None, description="Decode: output tokens one worker produces per second "
                                       "[tokens/s]")
    requests_per_s: float = Field(description="Requests one worker completes per second [requests/s]")


class PoolPlan(_Strict):
    """One pool of a disaggregated plan: its workers' layout, count, batch, memory and figures."""

    role: Literal["prefill", "decode"]
    cluster: str
    label: str = Field(description="Layout of one worker, e.g. 'TP4 EP4 PP1'")
    parallel: Parallel = Field(description="Layout of one worker; dp = the pool's workers")
    workers: PositiveInt = Field(description="Workers of the pool [workers]")
    gpus_per_worker: PositiveInt = Field(description="GPUs of one worker [GPUs]")
    gpus: PositiveInt = Field(description="GPUs of the pool = workers * gpus_per_worker [GPUs]")
    batch: PoolBatch
    memory: Memory
    metrics: PoolMetrics


class KVTransfer(_Strict):
    """How one request's KV cache moves from its prefill worker to its decode worker."""

    bytes_per_request: float = Field(description="One copy of a prompt's KV cache, every layer [bytes]")
    link: Literal["scale-up", "scale-out"] = Field(
        description="scale-up when both pools sit in one scale-up domain, else the GPUs' scale-out NICs")
    send_ms: float = Field(description="Time the prefill worker's GPUs send it, latency included [ms]")
    receive_ms: float = Field(description="Time the decode worker's GPUs receive it [ms]")
    transfer_ms: float = Field(description="max(send, receive): part of TTFT [ms]")


class Alternative(_Strict):
    """The best plan of the serving mode `auto` did not choose, or why it has none."""

    serving: Serving
    label: str | None = None
    tokens_per_s_per_gpu: float | None = Field(None, description="Its tokens/s/GPU [tokens/s/GPU]")
    tokens_per_s_per_user: float | None = None
    ttft_ms: float | None = None
    reason: str | None = Field(None, description="Why it has no plan (None: it has one)")


class DraftOption(_Strict):
    """The best plan of one draft length, as a speculative search compared them (k = 0: no speculation)."""

    draft_tokens: int = Field(description="Draft tokens k per step; 0 = no speculative decoding")
    tokens_per_step: float = Field(description="Expected output tokens per step at this k [tokens]")
    label: str | None = Field(None, description="Layout of the best plan at this k (None: no plan)")
    tokens_per_s_per_gpu: float | None = Field(None, description="Its tokens/s/GPU (None: no plan) [tokens/s/GPU]")
    tokens_per_s_per_user: float | None = Field(None, description="Its tokens/s/user [tokens/s]")
    reason: str | None = Field(None, description="Why this k has no plan")


class Plan(_Strict):
    """A deployment: layout, batching and predicted figures. The JSON contract of `planner solve`."""

    model: str
    cluster: str
    gpus: int = Field(description="GPUs given [GPUs]")
    gpus_used: int = Field(description="GPUs the replicas occupy [GPUs]")
    isl: int = Field(description="Input tokens per request [tokens]")
    osl: int = Field(description="Output tokens per request [tokens]")
    precision: Precision
    kv_precision: Precision
    gemm_math: str = Field(description="Tensor-core format the GEMMs run in (weight-only below it)")
    expert_precision: Precision | None = Field(
        None, description="Format of the routed-expert weights where it differs from precision (None: the same)")
    expert_gemm_math: str | None = Field(
        None, description="Tensor-core format of the routed-expert GEMMs where expert_precision is given")
    label: str = Field(description="Compact layout label, e.g. 'TP2 EP16 PP2 DP1'")
    parallel: Parallel
    batch: Batch
    metrics: Metrics
    memory: Memory
    solver: SolverInfo
    sla: SLA | None = None
    workload: Workload | None = Field(None, description="The traffic planned for: lengths and their spread, "
                                      "arrivals, prefix cache (isl/osl above are its means)")
    backend: str = Field("*", description="Serving engine whose calibration profile applies, or '*'")
    speculation: Speculation | None = Field(
        None, description="Speculative decoding of the plan: method, draft tokens k, acceptance (None: none)")
    speculation_options: list[DraftOption] = Field(
        default_factory=list, description="Speculative decoding: the best plan of each draft length searched and "
        "without speculation (draft_tokens 0), as compared by the search (empty: not compared)")
    confidence: ConfidenceInfo | None = Field(
        None, description="The SLA checked at the pessimistic end of the error bars (solve --confidence)")
    notes: list[str] = Field(default_factory=list, description="Parts of the model the cost model approximates")
    spans_domains: list[DomainSpan] = Field(
        default_factory=list, description="Groups of a replica that cross scale-up domains (empty: none does)")
    serving: Serving = Field("agg", description="agg: every replica prefills and decodes; disagg: a prefill "
                             "and a decode pool (then parallel, batch and memory are the decode pool's)")
    prefill: PoolPlan | None = Field(None, description="disagg: the prefill pool")
    decode: PoolPlan | None = Field(None, description="disagg: the decode pool")
    kv_transfer: KVTransfer | None = Field(None, description="disagg: the KV cache's move between the pools")
    alternative: Alternative | None = Field(
        None, description="serving auto: the other mode's best plan, or why it has none")


class Problem(_Input):
    """Everything a search needs: what to serve, on what, and how well."""

    model: ModelSpec
    cluster: ClusterSpec
    gpus: PositiveInt = Field(64, le=MAX_GPUS, description="GPUs given [GPUs]")
    workload: Workload = Field(default_factory=Workload)
    precision: Precision = Field(
        Precision.fp4, description="Weight and GEMM format of attention, dense FFNs, shared experts and routers, "
        "and of the routed experts unless expert_precision is given")
    expert_precision: Precision | None = Field(
        None, description="Format of routed-expert weights when it differs from precision (e.g. MXFP4 experts "
        "with BF16 attention, as gpt-oss ships); MoE models only"
    )
    kv_precision: Precision = Field(Precision.fp8, description="KV-cache format")
    sla: SLA | None = None
    calibration: Calibration = Field(default_factory=Calibration)
    backend: str = Field("*", description="Serving engine whose calibration profile applies, or '*'")
    speculation: Speculation | None = Field(None, description="Speculative decoding (None: none)")
    confidence: float | None = Field(
        None, ge=0.5, lt=1.0, description="Check the SLA and the TTFT limit at this one-sided quantile of the "
        "held-out errors (calibration.intervals) instead of at the central estimate; None = central")

    @model_validator(mode="after")
    def _formats(self) -> Problem:
        if self.kv_precision not in (Precision.fp8, Precision.bf16):
            raise ValueError("kv_precision must be fp8 or bf16")
        if self.expert_precision is not None and not self.model.is_moe:
            raise ValueError(f"expert_precision given, but {self.model.name} is a dense model (no routed experts)")
        if self.confidence is not None and self.calibration.intervals is None:
            raise ValueError("confidence needs a calibration with an interval table (planner calibrate --intervals)")
        spec = self.speculation
        if spec is not None and spec.method == SpecMethod.mtp and not self.model.mtp_layers:
            raise ValueError(f"{self.model.name} has no multi-token-prediction module (mtp_layers 0): speculate "
                             "with an EAGLE head (eagle) or a draft model (draft) instead")
        return self

    def model_copy(self, *, update=None, deep: bool = False) -> Problem:  # noqa: D102
        copy = super().model_copy(update=update, deep=deep)
        for cached in ("factors", "_rates", "_draft"):  # derived from fields the update may change
            copy.__dict__.pop(cached, None)
        return copy

    @property
    def burstiness(self) -> float:
        """Share of wave-like arrivals: the workload's, or the calibration's fitted value."""
        b = self.workload.burstiness
        return self.factors.queue_burstiness if b is None else b

    @cached_property
    def factors(self) -> Factors:
        """The efficiency factors for this cluster, backend and model."""
        c = self.cluster
        return self.calibration.factors_for(c.name, self.backend, self.model.name, c.generation, c.vendor,
                                            self.gemm_math)

    @property
    def experts(self) -> Precision:
        """Format of the routed-expert weights."""
        return self.expert_precision or self.precision

    @property
    def mixed_formats(self) -> bool:
        """True when the routed experts have a format of their own (differing from precision)."""
        return self.model.is_moe and self.experts != self.precision

    @property
    def precision_label(self) -> str:
        """'fp4', or 'bf16 + mxfp4 experts' when the routed experts differ."""
        return f"{self.precision.value} + {self.experts.value} experts" if self.mixed_formats else self.precision.value

    def math_for(self, precision: Precision) -> str:
        """Tensor-core format for weights of `precision`: their own, or BF16 where the GPU lacks it.

        Weights in a format the GPU cannot multiply in (FP4 on Hopper or Ampere, FP8 on Ampere) run
        weight-only: stored in their format, dequantised in the kernel to the BF16 activations and
        multiplied in BF16 (W4A16/W8A16: Marlin, Machete, Triton matmul_ogs kernels in vLLM, SGLang
        and TensorRT-LLM). An FP8 activation path for 4-bit weights is an engine option, not the
        default: it is asked for as `Precision.w4a8` (FP8 math where the GPU has FP8).
        """
        return precision.math if self.cluster.supports(precision.math) else "bf16"

    @property
    def gemm_math(self) -> str:
        """Tensor-core format of the dense GEMMs."""
        return self.math_for(self.precision)

    @property
    def attention_math(self) -> str:
        """Format of attention math: FP8 with an FP8 KV cache where the GPU has it, else BF16."""
        return "fp8" if self.kv_precision == Precision.fp8 and self.cluster.supports("fp8") else "bf16"


class FileSolveOptions(BaseModel):
    """Options of `planner solve` that a file gives under their own names, each as the CLI takes it: a fleet's
    workloads (planner.fleetplan.FleetWorkload) and a sweep's grid (planner.sweeps.SweepGrid) share them."""

    expert_precision: str | None = None
    kv_precision: Literal["fp8", "bf16"] | None = None
    backend: str = "*"
    calibration: str | None = Field(None, description="Calibration YAML [default: the shipped one]")
    memory_utilization: float | None = Field(None, gt=0.3, le=1.0)
    isl_cv: float = Field(0.0, ge=0, le=4)
    osl_cv: float = Field(0.0, ge=0, le=4)
    lengths: Literal["lognormal", "normal", "uniform", "exponential"] = "lognormal"
    arrivals: Literal["open", "closed"] = "open"
    burstiness: float | None = Field(None, ge=0, le=1)
    prefix_hit: float = Field(0.0, ge=0, lt=1)
    prefix_cache_tokens: int | None = Field(None, ge=0)
    spec: str | None = Field(None, description="Speculative decoding: mtp, eagle or draft:MODEL")
    draft_tokens: int | None = Field(None, ge=1, le=8)
    chunks: str | list[int] | None = Field(None, description="Chunk sizes: 256,512 or 128:8192:128 or a list")
    micro_batches: str | list[int] | None = Field(None, description="Micro-batches: 8,16 or 1:512:1 or a list")
