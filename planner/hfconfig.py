"""Import a model architecture from a HuggingFace ``config.json``.

Reads the standard fields of the decoder families the planner knows (llama, mistral, qwen2, qwen3,
qwen2_moe, qwen3_moe, mixtral, deepseek_v2/v3/v32, kimi_k2, gpt_oss, llama4) into a
:class:`~planner.specs.ModelSpec`. A missing number is an error naming the field, never a guessed
default; whatever the schema cannot express exactly (an unknown family, linear or sparse attention,
irregular MoE layer placement, ...) is written to ``ModelSpec.approximations``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from pydantic import ValidationError

from planner.errors import SpecError
from planner.specs import MAX_LAYERS, MLA, CheckpointPrecision, ModelSpec, Precision

KNOWN_FAMILIES = frozenset(
    {
        "llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "mixtral",
        "deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2", "gpt_oss", "llama4",
    }
)
"""``model_type`` values read by their own rules; any other is read as a generic llama-like model."""

MLA_FAMILIES = frozenset({"deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2"})
"""Families with multi-head latent attention (``kv_lora_rank`` & co.)."""

# Attention kinds in ``layer_types`` the schema represents: full, or windowed/chunked to sliding_window.
_FULL_TYPES = frozenset({"full_attention", "attention", "global", "global_attention"})
_WINDOW_TYPES = frozenset({"sliding_attention", "chunked_attention", "local", "local_attention"})

# Families (model_type) whose attention is partly linear/recurrent/state-space.
_HYBRID_FAMILIES = frozenset(
    {
        "qwen3_next", "minimax", "minimax_m1", "minimax_text_01", "minimaxtext01", "kimi_linear",
        "jamba", "zamba", "zamba2", "bamba", "nemotron_h", "falcon_h1", "granitemoehybrid", "lfm2",
        "mamba", "mamba2", "rwkv", "recurrent_gemma",
    }
)
# Config fields that only hybrid linear-attention / state-space models carry.
_HYBRID_FIELDS = (
    "linear_attn", "linear_attn_config", "attn_type_list", "full_attention_interval",
    "linear_num_key_heads", "linear_num_value_heads", "layers_block_type", "hybrid_override_pattern",
    "mamba_d_state", "ssm_state_size", "attn_layer_period",
)
# Config fields of sparse (top-k selected) attention, e.g. DeepSeek-V3.2's lightning indexer.
_SPARSE_FIELDS = ("index_topk", "index_n_heads", "index_head_dim")


class _Fields:
    """A config dict plus its file, for reading fields with one-line errors."""

    def __init__(self, path: pathlib.Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def has(self, key: str) -> bool:
        """True when the field is present and not null."""
        return self.data.get(key) is not None

    def first_key(self, keys: tuple[str, ...]) -> str | None:
        """The first of ``keys`` that is present and not null."""
        return next((k for k in keys if self.has(k)), None)

    def integer(
        self, keys: str | tuple[str, ...], purpose: str, *, minimum: int = 1, maximum: int | None = None
    ) -> int:
        """A required integer field (the first present of ``keys``); SpecError when missing or bad."""
        keys = (keys,) if isinstance(keys, str) else keys
        key = self.first_key(keys)
        if key is None:
            alts = f" (or {', '.join(repr(k) for k in keys[1:])})" if len(keys) > 1 else ""
            raise SpecError(f"{self.path}: missing '{keys[0]}'{alts}, needed for {purpose}")
        return self._check(key, minimum, maximum)

    def optional(self, keys: str | tuple[str, ...], default: int, *, minimum: int = 0) -> int:
        """An optional integer field; ``default`` when absent or null."""
        key = self.first_key((keys,) if isinstance(keys, str) else keys)
        return default if key is None else self._check(key, minimum)

    def integers(self, key: str) -> list[int]:
        """An optional list of layer indices (e.g. ``moe_layers``); [] when absent or null."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise SpecError(f"{self.path}: '{key}' must be a list of layer indices (integers)")
        return value

    def _check(self, key: str, minimum: int, maximum: int | None = None) -> int:
        value = self.data[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            shown = repr(value) if isinstance(value, (int, float, str, bool)) else type(value).__name__
            raise SpecError(f"{self.path}: '{key}' must be an integer >= {minimum}, got {shown[:40]}")
        if maximum is not None and value > maximum:
            raise SpecError(f"{self.path}: '{key}' must be at most {maximum:,}, got {value}")
        return value


def _too_deep(path: pathlib.Path) -> SpecError:
    return SpecError(f"{path}: nesting too deep (past Python's recursion limit); a config.json needs a few levels")


def _load_json(path: pathlib.Path) -> dict[str, Any]:
    """Parse the file; SpecError with the file and, for bad JSON, the line/column of the error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read HuggingFace config ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno} (char {exc.pos}): {exc.msg}"
        ) from exc
    except RecursionError:
        raise _too_deep(path) from None
    except ValueError as exc:  # e.g. an integer beyond Python's 4300-digit conversion limit
        raise SpecError(f"{path}: unreadable value in JSON: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _language_model(top: dict[str, Any]) -> tuple[dict[str, Any], str, bool]:
    """The language-model part of a config, its family (``model_type``) and whether it was nested.

    Multimodal configs (llama4, llava, ...) keep the decoder under ``text_config``; its fields win
    over the top level, which still supplies what the text part lacks (e.g. ``tie_word_embeddings``).
    """
    text = top.get("text_config")
    if "hidden_size" not in top and isinstance(text, dict):
        merged = {k: v for k, v in top.items() if not k.endswith("_config")}
        merged.update(text)
        family = str(text.get("model_type") or top.get("model_type") or "")
        return merged, family.lower().removesuffix("_text"), True
    return top, str(top.get("model_type") or "").lower(), False


def _moe_layer_indices(c: _Fields, num_layers: int) -> list[int]:
    """Indices of the layers whose FFN is MoE, by each family's own rule."""
    layers = range(num_layers)
    if c.has("moe_layers"):  # llama4 may list them explicitly
        return sorted(c.integers("moe_layers"))
    if c.has("first_k_dense_replace") or c.has("moe_layer_freq"):  # deepseek_v2/v3, kimi_k2
        first = c.optional("first_k_dense_replace", 0)
        freq = c.optional("moe_layer_freq", 1, minimum=1)
        return [i for i in layers if i >= first and i % freq == 0]
    if c.has("decoder_sparse_step") or c.has("mlp_only_layers"):  # qwen2_moe, qwen3_moe
        step = c.optional("decoder_sparse_step", 1, minimum=1)
        dense = set(c.integers("mlp_only_layers"))
        return [i for i in layers if i not in dense and (i + 1) % step == 0]
    step = c.optional("interleave_moe_layer_step", 1, minimum=1)  # llama4; others: every layer
    return list(range(step - 1, num_layers, step))


def _windowed_layers(c: _Fields, family: str, num_layers: int, notes: list[str]) -> tuple[int, int]:
    """(window [tokens], layers attending within it [layers]) and notes on non-standard attention."""
    types = c.data.get("layer_types")
    if isinstance(types, list) and types:
        kinds = [str(t).lower() for t in types]
        other = sorted({k for k in kinds if k not in _FULL_TYPES | _WINDOW_TYPES})
        if other:
            count = sum(k in other for k in kinds)
            notes.append(
                f"{count} of {len(kinds)} layers are {'/'.join(other)} (linear or recurrent attention), "
                "treated as full attention: KV cache and attention cost overestimated"
            )
        windowed = sum(k in _WINDOW_TYPES for k in kinds)
        if not windowed:
            return 0, 0
        window = c.integer(("sliding_window", "attention_chunk_size"), "the windowed-attention layers")
        return window, windowed
    if c.has("attention_chunk_size"):  # llama4: chunked attention except on the NoPE layers
        window = c.integer("attention_chunk_size", "the chunked-attention layers")
        no_rope = c.data.get("no_rope_layers")
        if isinstance(no_rope, list) and no_rope:
            chunked = sum(1 for v in no_rope if v)  # 1 = RoPE layer = chunked attention
        else:
            interval = c.optional("no_rope_layer_interval", 4, minimum=1)
            chunked = sum(1 for i in range(num_layers) if (i + 1) % interval)
        notes.append(
            f"chunked attention ({window}-token chunks) on {chunked} layers represented as a "
            f"{window}-token sliding window: same KV-cache bound, attention FLOPs slightly overestimated"
        )
        return window, chunked
    if family == "gpt_oss" and c.has("sliding_window"):  # older gpt_oss configs without layer_types
        return c.integer("sliding_window", "the sliding-window layers"), (num_layers + 1) // 2
    if not c.has("sliding_window") or c.data.get("use_sliding_window") is False:
        return 0, 0
    window = c.integer("sliding_window", "the sliding-window layers")
    if c.data.get("use_sliding_window"):  # qwen2/3: layers from max_window_layers on are windowed
        first_full = c.optional("max_window_layers", 0)
        return window, max(num_layers - first_full, 0)
    return window, num_layers  # mistral/mixtral: every layer


def _attention_notes(c: _Fields, family: str, notes: list[str]) -> None:
    """Record hybrid linear-attention and sparse-attention designs the schema cannot express."""
    hybrid = [k for k in _HYBRID_FIELDS if c.has(k)]
    already = any("linear or recurrent attention" in n for n in notes)
    if (hybrid or family in _HYBRID_FAMILIES) and not already:
        found = f"fields {', '.join(hybrid)}" if hybrid else f"model_type '{family}'"
        notes.append(
            f"hybrid linear-attention/state-space model ({found}): all layers treated as full "
            "attention: KV cache and attention cost overestimated"
        )
    sparse = [k for k in _SPARSE_FIELDS if c.has(k)]
    if sparse:
        notes.append(
            f"sparse attention ({', '.join(f'{k}={c.data[k]}' for k in sparse)}) treated as dense "
            "attention: attention FLOPs overestimated at long context; indexer weights and cache not counted"
        )


def _default_name(path: pathlib.Path) -> str:
    """``<folder>/config.json`` -> folder name, else the file stem; lowercased."""
    return (path.parent.name if path.name == "config.json" and path.parent.name else path.stem).lower()


def _default_aliases(path: pathlib.Path, top: dict[str, Any]) -> list[str]:
    """HuggingFace ids recoverable from the file: ``_name_or_path`` and ``org--model.json`` names."""
    aliases: list[str] = []
    ref = top.get("_name_or_path")
    if isinstance(ref, str) and ref.count("/") == 1 and not ref.startswith((".", "/")):
        aliases.append(ref)
    if path.name != "config.json" and path.stem.count("--") == 1:
        alias = path.stem.replace("--", "/")
        if alias not in aliases:
            aliases.append(alias)
    return aliases


def _checkpoint_precision(path: pathlib.Path, top: dict[str, Any], moe: bool) -> CheckpointPrecision | None:
    """The checkpoint's weight formats from its quantization_config (or torch_dtype when unquantised); None
    for a scheme not read here (compressed-tensors, ...)."""
    q = top.get("quantization_config")
    where = f"quantization_config of {path}"
    if q is None:
        dtype = top.get("torch_dtype", top.get("dtype"))
        if dtype == "bfloat16":
            return CheckpointPrecision(dense=Precision.bf16, source=f"torch_dtype bfloat16 of {path}")
        return None
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        return CheckpointPrecision(dense=Precision.fp8, source=where)
    if method in ("awq", "gptq") and q.get("bits", q.get("w_bit")) == 4:
        return CheckpointPrecision(dense=Precision.int4, source=where)
    if method == "mxfp4":
        kept = " ".join(str(m) for m in q.get("modules_to_not_convert") or [])
        if moe and "self_attn" in kept:  # gpt-oss: only the routed experts are MXFP4
            return CheckpointPrecision(dense=Precision.bf16, experts=Precision.mxfp4, source=where)
        return CheckpointPrecision(dense=Precision.mxfp4, source=where)
    return None


def model_from_hf_config(path: pathlib.Path, name: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a HuggingFace ``config.json``.

    Parameters
    ----------
    path
        The config file, or a folder holding ``config.json``.
    name
        Catalog name; defaults to the parent folder (for ``config.json``) or the file stem, lowercased.

    Returns
    -------
    ModelSpec
        Widths in [values], counts in [layers], [heads], [experts], vocabulary in [tokens].

    Raises
    ------
    SpecError
        Unreadable file, malformed JSON (with line and column), a missing or non-integer required field
        (named, with what it is needed for), or numbers that contradict each other.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "config.json"
    top = _load_json(path)
    try:
        return _from_config(path, top, name)
    except ValidationError as exc:
        if all(e["type"] == "value_error" for e in exc.errors()):
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise SpecError(f"{path}: inconsistent architecture: {problems}") from None
        from planner.catalog import validation_message

        raise SpecError(f"{path}: {validation_message(exc)}") from None
    except RecursionError:
        raise _too_deep(path) from None


def _from_config(path: pathlib.Path, top: dict[str, Any], name: str | None) -> ModelSpec:
    """The ModelSpec of a parsed config; pydantic's ValidationError when a number is out of bounds."""
    cfg, family, nested = _language_model(top)
    c = _Fields(path, cfg)
    notes: list[str] = []
    if nested:
        notes.append("multimodal config: only the language model (text_config) is modelled; "
                     "vision/audio encoder weights are not counted")

    # bounded before the per-layer loops below (MoE placement, layer kinds) run over every layer
    num_layers = c.integer("num_hidden_layers", "the number of transformer blocks", maximum=MAX_LAYERS)
    hidden = c.integer("hidden_size", "the residual width of every weight matrix")
    heads = c.integer("num_attention_heads", "the attention projections and FLOPs")
    vocab = c.integer("vocab_size", "the embedding and LM-head weights")

    mla: MLA | None = None
    if family in MLA_FAMILIES or c.has("kv_lora_rank"):
        mla = MLA(
            q_lora_rank=c.optional("q_lora_rank", 0),  # null = full-rank query (DeepSeek-V2-Lite)
            kv_lora_rank=c.integer("kv_lora_rank", "the MLA latent KV cache"),
            qk_nope_head_dim=c.integer("qk_nope_head_dim", "the MLA query/key width"),
            qk_rope_head_dim=c.integer("qk_rope_head_dim", "the MLA rotary key width (KV cache)"),
            v_head_dim=c.integer("v_head_dim", "the MLA value and output projection width"),
        )
        kv_heads = heads  # every query head has its own (decompressed) key and value
        head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim  # query/key width: attention-score FLOPs
    else:
        kv_heads = c.integer("num_key_value_heads", "the KV-cache size (grouped-query attention)")
        head_dim = c.optional("head_dim", 0, minimum=1)
        if not head_dim:
            if hidden % heads:
                raise SpecError(
                    f"{path}: missing 'head_dim', needed for the attention width, and hidden_size "
                    f"{hidden} is not a multiple of num_attention_heads {heads}"
                )
            head_dim = hidden // heads

    moe: dict[str, int] = {}
    dense_width = c.optional("intermediate_size", 0)
    num_experts = c.optional(("num_local_experts", "num_experts", "n_routed_experts"), 0)
    if num_experts:
        moe["num_experts"] = num_experts
        moe["experts_per_token"] = c.integer(
            ("num_experts_per_tok", "experts_per_token", "moe_topk"), "the experts each token visits"
        )
        if c.has("moe_intermediate_size"):  # qwen*_moe, deepseek: intermediate_size is the dense FFN
            expert_width = c.integer("moe_intermediate_size", "the routed expert FFN width")
        else:  # mixtral, gpt_oss, llama4: intermediate_size is the expert; llama4's dense FFN is _mlp
            expert_width = c.integer("intermediate_size", "the routed expert FFN width")
            dense_width = c.optional("intermediate_size_mlp", 0)
        moe["moe_intermediate_size"] = expert_width
        shared_width = c.optional("shared_expert_intermediate_size", 0)
        if c.has("n_shared_experts"):
            moe["num_shared_experts"] = c.optional("n_shared_experts", 0)
        elif shared_width or family == "llama4":
            # qwen2_moe: one shared expert of its own width; llama4: always one, as wide as a routed one
            moe["num_shared_experts"] = 1
        if moe.get("num_shared_experts") and shared_width and shared_width != expert_width:
            moe["shared_expert_intermediate_size"] = shared_width

        exact = _moe_layer_indices(c, num_layers)
        step = c.optional(("moe_layer_freq", "decoder_sparse_step", "interleave_moe_layer_step"), 1, minimum=1)
        if step == 1:  # leading dense layers (deepseek first_k_dense_replace, qwen mlp_only_layers 0..k-1)
            first_dense = exact[0] if exact else 0
        else:
            first_dense = c.optional("first_k_dense_replace", 0)
        moe["first_dense_layers"] = first_dense
        moe["moe_layer_step"] = step
        rest = num_layers - first_dense
        schema_count = (rest + step - 1) // step
        if schema_count != len(exact):
            notes.append(
                f"MoE layer placement not expressible: the config has {len(exact)} MoE layers "
                f"({exact[:8]}{'...' if len(exact) > 8 else ''}), the spec counts {schema_count}"
            )
        dense_layers = num_layers - schema_count
        if dense_layers:
            key = "intermediate_size" if c.has("moe_intermediate_size") else "intermediate_size_mlp"
            if not dense_width:
                dense_width = c.integer(key, f"the dense FFN width of the {dense_layers} non-MoE layers")
        else:
            dense_width = 0  # every layer is MoE: the schema's intermediate_size is 0
    else:
        dense_width = c.integer("intermediate_size", "the dense FFN width")

    mtp_layers = c.optional("num_nextn_predict_layers", 0)
    if mtp_layers:
        notes.append(
            f"{c.data['num_nextn_predict_layers']} multi-token-prediction (MTP) layer(s) not counted: "
            "they serve only speculative decoding"
        )
    window, windowed = _windowed_layers(c, family, num_layers, notes)
    _attention_notes(c, family, notes)
    if family not in KNOWN_FAMILIES:
        kind = "MoE decoder with llama-like attention" if num_experts else "llama-like dense decoder"
        attention = "MLA" if mla else "GQA"
        notes.append(
            f"unknown model_type '{family or '(none)'}': read as a {kind} (generic HuggingFace fields, "
            f"{attention} attention, SwiGLU FFN assumed)"
        )

    return ModelSpec(
        name=name or _default_name(path),
        description=f"Imported from a HuggingFace config.json (model_type '{family or 'unknown'}')",
        source=f"HuggingFace config.json at {path}",
        aliases=_default_aliases(path, top),
        num_layers=num_layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),  # HF decoder default: untied
        intermediate_size=dense_width,
        gated_ffn=True,  # every family above uses a SwiGLU FFN (gpt_oss: clamped SwiGLU)
        mla=mla,
        sliding_window=window,
        sliding_window_layers=windowed,
        mtp_layers=mtp_layers,
        approximations=notes,
        checkpoint_precision=_checkpoint_precision(path, top, bool(moe.get("num_experts"))),
        **moe,
    )
