"""Import of HuggingFace config.json files: the shipped reference configs and synthetic error cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from planner.errors import SpecError
from planner.hfconfig import model_from_hf_config

HF_DIR = Path(__file__).resolve().parents[1] / "data" / "hf-configs"
CONFIGS = sorted(HF_DIR.glob("*.json"))

LLAMA_LIKE: dict[str, Any] = {
    "model_type": "llama",
    "num_hidden_layers": 4,
    "hidden_size": 512,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 1024,
    "vocab_size": 1000,
}


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "config.json") -> Path:
    """Write a config (dict as JSON, str verbatim) and return its path."""
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def config(**changes: Any) -> dict[str, Any]:
    """LLAMA_LIKE with fields changed; a value of None removes the field."""
    data = {**LLAMA_LIKE, **changes}
    return {k: v for k, v in data.items() if v is not None}


# --- the reference configs -------------------------------------------------------------------------


def test_reference_configs_are_in_the_repository() -> None:
    assert CONFIGS, f"no HuggingFace configs in {HF_DIR}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_reference_config_parses(path: Path) -> None:
    raw = json.loads(path.read_text())
    text = raw if "hidden_size" in raw else raw["text_config"]
    spec = model_from_hf_config(path)
    assert spec.name == path.stem.lower()
    assert spec.source == f"HuggingFace config.json at {path}"
    assert path.stem.replace("--", "/") in spec.aliases
    assert spec.num_layers == text["num_hidden_layers"]
    assert spec.hidden_size == text["hidden_size"]
    assert spec.vocab_size == text["vocab_size"]
    assert spec.total_params >= spec.active_params > 0


def load(stem: str) -> Any:
    return model_from_hf_config(HF_DIR / f"{stem}.json")


def test_deepseek_mla() -> None:
    spec = load("deepseek-ai--DeepSeek-R1")
    assert spec.mla is not None and spec.mla.kv_lora_rank == 512 and spec.mla.q_lora_rank == 1536
    assert spec.num_kv_heads == spec.num_attention_heads == 128
    assert spec.head_dim == 128 + 64  # qk_nope + qk_rope
    assert (spec.first_dense_layers, spec.num_moe_layers, spec.num_shared_experts) == (3, 58, 1)
    assert spec.intermediate_size == 18432 and spec.moe_intermediate_size == 2048
    assert any("MTP" in note for note in spec.approximations)  # counted out, but said so


def test_kimi_k2_reads_deepseek_fields() -> None:
    spec = load("moonshotai--Kimi-K2-Instruct")
    assert spec.mla is not None and spec.num_experts == 384 and spec.first_dense_layers == 1
    assert spec.approximations == []  # kimi_k2 is a known family, no MTP layer


def test_gpt_oss_alternating_window() -> None:
    spec = load("openai--gpt-oss-120b")
    assert (spec.sliding_window, spec.sliding_window_layers) == (128, 18)
    assert spec.gated_ffn and spec.intermediate_size == 0 and spec.moe_intermediate_size == 2880


def test_llama4_text_config() -> None:
    spec = load("meta-llama--Llama-4-Maverick-17B-128E-Instruct")
    assert (spec.num_moe_layers, spec.num_dense_layers, spec.moe_layer_step) == (24, 24, 2)
    assert (spec.intermediate_size, spec.moe_intermediate_size, spec.num_shared_experts) == (16384, 8192, 1)
    assert (spec.sliding_window, spec.sliding_window_layers) == (8192, 36)
    assert any("chunked attention" in note for note in spec.approximations)
    assert any("text_config" in note for note in spec.approximations)


def test_mixtral_and_qwen3_moe_widths() -> None:
    mixtral = load("mistralai--Mixtral-8x7B-v0.1")
    assert (mixtral.intermediate_size, mixtral.moe_intermediate_size, mixtral.num_experts) == (0, 14336, 8)
    qwen = load("Qwen--Qwen3-235B-A22B")
    assert (qwen.intermediate_size, qwen.moe_intermediate_size, qwen.num_shared_experts) == (0, 1536, 0)


# --- errors ----------------------------------------------------------------------------------------


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  "hidden_size": 512,\n  "vocab_size": ,\n}')
    with pytest.raises(SpecError, match="malformed JSON at line 3, column 17") as err:
        model_from_hf_config(path)
    assert str(path) in str(err.value)


def test_top_level_must_be_object(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="JSON object"):
        model_from_hf_config(write(tmp_path, "[1, 2]"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        model_from_hf_config(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("missing", "purpose"),
    [
        ("num_key_value_heads", "KV-cache"),
        ("num_hidden_layers", "transformer blocks"),
        ("vocab_size", "embedding"),
        ("intermediate_size", "dense FFN"),
    ],
)
def test_missing_field_is_named(tmp_path: Path, missing: str, purpose: str) -> None:
    path = write(tmp_path, config(**{missing: None}))
    with pytest.raises(SpecError) as err:
        model_from_hf_config(path)
    message = str(err.value)
    assert f"missing '{missing}'" in message and purpose in message and str(path) in message


def test_missing_moe_field_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, config(model_type="mixtral", num_local_experts=8))
    with pytest.raises(SpecError, match="missing 'num_experts_per_tok'"):
        model_from_hf_config(path)


def test_missing_mla_field_is_named(tmp_path: Path) -> None:
    data = config(model_type="deepseek_v3", kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16)
    with pytest.raises(SpecError, match="missing 'v_head_dim'"):
        model_from_hf_config(write(tmp_path, data))


def test_non_integer_field(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="'hidden_size' must be an integer"):
        model_from_hf_config(write(tmp_path, config(hidden_size="512")))


def test_inconsistent_heads(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="inconsistent architecture.*multiple of num_kv_heads"):
        model_from_hf_config(write(tmp_path, config(num_key_value_heads=3)))


def test_head_dim_not_derivable(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="missing 'head_dim'"):
        model_from_hf_config(write(tmp_path, config(num_attention_heads=6, num_key_value_heads=6)))


# --- defaults and approximations -------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    folder = tmp_path / "My-Model"
    folder.mkdir()
    path = write(folder, config())
    spec = model_from_hf_config(path)
    assert spec.name == "my-model"  # parent folder of config.json, lowercased
    assert spec.head_dim == 512 // 8  # hidden / heads when head_dim is absent
    assert spec.source == f"HuggingFace config.json at {path}"
    assert not spec.tie_word_embeddings and spec.approximations == []
    assert model_from_hf_config(folder).name == "my-model"  # a folder holding config.json
    assert model_from_hf_config(path, name="x").name == "x"
    assert model_from_hf_config(write(tmp_path, config(), "Org--Some-Model.json")).aliases == ["Org/Some-Model"]


def test_unknown_family_is_approximated(tmp_path: Path) -> None:
    spec = model_from_hf_config(write(tmp_path, config(model_type="brandnew")))
    assert spec.num_layers == 4 and spec.intermediate_size == 1024
    assert any("unknown model_type 'brandnew'" in n and "llama-like" in n for n in spec.approximations)


def test_text_config_nesting_is_general(tmp_path: Path) -> None:
    data = {"model_type": "llava", "vision_config": {"hidden_size": 1024}, "text_config": config()}
    spec = model_from_hf_config(write(tmp_path, data))
    assert spec.hidden_size == 512 and spec.num_kv_heads == 2
    assert any("text_config" in n for n in spec.approximations)
    assert not any("unknown model_type" in n for n in spec.approximations)  # family from text_config


def test_linear_attention_layer_types(tmp_path: Path) -> None:
    kinds = ["linear_attention", "linear_attention", "linear_attention", "full_attention"]
    spec = model_from_hf_config(write(tmp_path, config(model_type="qwen3_next", layer_types=kinds)))
    notes = " ".join(spec.approximations)
    assert "3 of 4 layers are linear_attention" in notes and "KV cache" in notes and "overestimated" in notes


@pytest.mark.parametrize(
    "changes",
    [
        {"model_type": "qwen3_next", "full_attention_interval": 4},
        {"model_type": "minimax", "attn_type_list": [0, 0, 0, 1]},
        {"model_type": "brandnew", "linear_attn_config": {"kda_layers": [1, 2, 3]}},
    ],
    ids=["qwen3_next", "minimax", "linear_attn"],
)
def test_hybrid_models_are_flagged(tmp_path: Path, changes: dict[str, Any]) -> None:
    spec = model_from_hf_config(write(tmp_path, config(**changes)))
    assert any("treated as full attention" in n for n in spec.approximations)


def test_sparse_attention_is_flagged(tmp_path: Path) -> None:
    data = config(
        model_type="deepseek_v32", kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        index_topk=2048,
    )
    spec = model_from_hf_config(write(tmp_path, data))
    assert spec.mla is not None
    assert [n for n in spec.approximations if "index_topk=2048" in n] == spec.approximations  # only that note
    assert "sparse attention" in spec.approximations[0]


def test_sliding_window_variants(tmp_path: Path) -> None:
    mistral = model_from_hf_config(write(tmp_path, config(model_type="mistral", sliding_window=4096)))
    assert (mistral.sliding_window, mistral.sliding_window_layers) == (4096, 4)
    qwen_off = config(model_type="qwen2", sliding_window=32768, use_sliding_window=False)
    assert model_from_hf_config(write(tmp_path, qwen_off)).sliding_window_layers == 0
    qwen_on = config(model_type="qwen2", sliding_window=4096, use_sliding_window=True, max_window_layers=1)
    assert model_from_hf_config(write(tmp_path, qwen_on)).sliding_window_layers == 3


def test_qwen2_moe_shared_expert_and_dense_layers(tmp_path: Path) -> None:
    moe = {"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 128}
    data = config(model_type="qwen2_moe", shared_expert_intermediate_size=512, mlp_only_layers=[0], **moe)
    spec = model_from_hf_config(write(tmp_path, data))
    assert (spec.num_shared_experts, spec.shared_expert_intermediate_size) == (1, 512)
    assert (spec.first_dense_layers, spec.num_dense_layers, spec.intermediate_size) == (1, 1, 1024)
    assert spec.approximations == []
    odd = config(model_type="qwen3_moe", num_hidden_layers=5, decoder_sparse_step=2, **moe)
    spec = model_from_hf_config(write(tmp_path, odd))  # MoE at layers 1 and 3; the spec counts 3
    assert any("MoE layer placement" in n for n in spec.approximations)


# --- checkpoint formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "formats"), [
    ({"torch_dtype": "bfloat16"}, ("bf16", None)),
    ({"torch_dtype": "float32"}, None),  # not a format the planner serves in: not stated
    ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}, ("fp8", None)),
    ({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}, ("int4", None)),
    ({"quantization_config": {"quant_method": "gptq", "bits": 8}}, None),  # INT8 GPTQ: no such Precision
    ({"quantization_config": {"quant_method": "mxfp4"}}, ("mxfp4", None)),
    ({"quantization_config": {"quant_method": "compressed-tensors"}}, None),
])
def test_checkpoint_formats_from_quantization_config(tmp_path: Path, changes: dict, formats) -> None:
    ckpt = model_from_hf_config(write(tmp_path, config(**changes))).checkpoint_precision
    assert (None if ckpt is None else (ckpt.dense.value, ckpt.experts)) == formats


def test_mxfp4_experts_beside_unconverted_attention(tmp_path: Path) -> None:
    """gpt-oss style: modules_to_not_convert names self_attn, so only the routed experts are MXFP4."""
    moe = config(model_type="mixtral", num_local_experts=8, num_experts_per_tok=2,
                 quantization_config={"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]})
    ckpt = model_from_hf_config(write(tmp_path, moe)).checkpoint_precision
    assert (ckpt.dense.value, ckpt.experts.value) == ("bf16", "mxfp4")
