"""The model catalog (models/*.yaml): valid specs, aliases, agreement with the HuggingFace configs and
with the published parameter counts of shared/reference/models.md."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from planner.hfconfig import model_from_hf_config
from planner.specs import ModelSpec

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "models"
DATA = REPO / "data"
HF_DIR = DATA / "hf-configs"
CALIBRATION = DATA / "calibration.csv"
HF_CONFIGS = sorted(HF_DIR.glob("*.json"))

EXPECTED = {
    "gpt-moe-1.8t", "gpt-moe-1.8t-alt", "deepseek-r1", "kimi-k2", "llama-3.1-8b", "llama-3.1-70b",
    "llama-3.1-405b", "mixtral-8x7b", "mixtral-8x22b", "qwen3-32b", "qwen3-235b-a22b", "qwen3-30b-a3b",
    "gpt-oss-120b", "gpt-oss-20b", "llama-4-maverick",
}

# Everything but the bookkeeping fields must agree between a catalog file and its config import.
# checkpoint_precision is compared on its own (test_checkpoint_formats_match_config): an -FP8 config shares the
# architecture but not the formats, and the sources are worded differently.
ARCHITECTURE = sorted(set(ModelSpec.model_fields)
                      - {"name", "description", "source", "aliases", "approximations", "checkpoint_precision"})

# Published figures (shared/reference/models.md) [parameters]: (total, active, how active is counted).
# Total counts every weight, input embedding and LM head included, as ModelSpec.total_params does.
# ModelSpec.active_params also includes both embedding matrices. Vendors differ on that: most
# (Meta, Mistral, Qwen, DeepSeek, Moonshot) count them, e.g. Qwen3-30B-A3B's 3.3B is only reached
# with them (3.35B with, 3.04B without); OpenAI's gpt-oss model card counts the LM head (unembedding)
# but not the input embedding, which is a table lookup, so its 5.1B/3.6B are compared with
# active_params minus vocab x hidden ("no-input-embedding"). Published figures are rounded (37B, 32B),
# so 3% covers rounding plus the weights ModelSpec leaves out (norms, biases, attention sinks).
PUBLISHED: dict[str, tuple[float, float | None, str]] = {
    "deepseek-r1": (671e9, 37e9, "all"),
    "kimi-k2": (1.04e12, 32e9, "all"),
    "llama-3.1-405b": (405e9, None, "all"),
    "llama-3.1-70b": (70.6e9, None, "all"),
    "llama-3.1-8b": (8.0e9, None, "all"),
    "mixtral-8x7b": (46.7e9, 12.9e9, "all"),
    "mixtral-8x22b": (141e9, 39e9, "all"),
    "qwen3-32b": (32.8e9, None, "all"),
    "qwen3-235b-a22b": (235e9, 22e9, "all"),
    "qwen3-30b-a3b": (30.5e9, 3.3e9, "all"),
    "gpt-oss-120b": (117e9, 5.1e9, "no-input-embedding"),
    "gpt-oss-20b": (21e9, 3.6e9, "no-input-embedding"),
    "llama-4-maverick": (400e9, 17e9, "all"),
    # models.md: "about 1.8T", reconstruction "1.85T total, ~280B active at top-2".
    "gpt-moe-1.8t": (1.8e12, 280e9, "all"),
}
TOLERANCE = 0.03
# gpt-moe-1.8t-alt: its experts alone are 120 x 16 x 2 x 15360 x 30720 = 1.812T, so any attention and
# embedding on top lands above 1.8T: at least 2 x hidden^2 per layer (Q and O) = 57B, +3.2%, with the
# assumed heads +4.5%. "About 1.8T" is a rounded figure; 5% is the tolerance this shape can meet.
ALT_TOLERANCE = 0.05


def load_catalog() -> dict[str, ModelSpec]:
    """Every models/*.yaml, validated, by name."""
    return {
        (spec := ModelSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))).name: spec
        for path in sorted(MODELS_DIR.glob("*.yaml"))
    }


CATALOG = load_catalog()


def hf_id(path: Path) -> str:
    """``org--model.json`` -> ``org/model``."""
    return path.stem.replace("--", "/")


def config_pairs() -> list[tuple[str, Path]]:
    """(catalog name, config file) for every config whose HuggingFace id is a catalog alias."""
    return [(name, path) for path in HF_CONFIGS for name, spec in CATALOG.items() if hf_id(path) in spec.aliases]


def test_catalog_has_every_model() -> None:
    assert set(CATALOG) == EXPECTED


@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_file_layout(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "each catalog file starts with a comment header"
    spec = ModelSpec.model_validate(yaml.safe_load(text))
    assert spec.name == path.stem
    assert spec.source.strip() and spec.description.strip()


def test_aliases_are_unique() -> None:
    owners: dict[str, str] = {}
    for name, spec in CATALOG.items():
        for alias in spec.aliases:
            assert alias.lower() not in owners, f"{alias} in {name} and {owners[alias.lower()]}"
            owners[alias.lower()] = name
        assert name not in owners


def test_calibration_models_are_aliases() -> None:
    with CALIBRATION.open(newline="", encoding="utf-8") as fh:
        used = {row["model_path"] for row in csv.DictReader(fh)}
    aliases = {alias for spec in CATALOG.values() for alias in spec.aliases}
    assert used and used <= aliases, f"not in any catalog file: {sorted(used - aliases)}"


def test_every_config_belongs_to_one_model() -> None:
    for path in HF_CONFIGS:
        owners = [name for name, spec in CATALOG.items() if hf_id(path) in spec.aliases]
        assert len(owners) == 1, f"{path.name}: claimed by {owners}"
        assert path.name in CATALOG[owners[0]].source or hf_id(path).endswith("-FP8")


@pytest.mark.parametrize(("name", "path"), config_pairs(), ids=lambda x: getattr(x, "stem", x))
def test_architecture_matches_config(name: str, path: Path) -> None:
    catalog = CATALOG[name].model_dump(include=set(ARCHITECTURE))
    imported = model_from_hf_config(path).model_dump(include=set(ARCHITECTURE))
    diff = {k: (catalog[k], imported[k]) for k in ARCHITECTURE if catalog[k] != imported[k]}
    assert not diff, f"{name} vs {path.name} (catalog, import): {diff}"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_published(name: str) -> None:
    spec = CATALOG[name]
    total, active, counting = PUBLISHED[name]
    assert spec.total_params == pytest.approx(total, rel=TOLERANCE)
    if active is None:  # dense: every weight is active
        assert spec.active_params == spec.total_params and not spec.is_moe
        return
    computed = spec.active_params
    if counting == "no-input-embedding":
        computed -= spec.vocab_size * spec.hidden_size
    assert computed == pytest.approx(active, rel=TOLERANCE)


def test_gpt_moe_alternative() -> None:
    main, alt = CATALOG["gpt-moe-1.8t"], CATALOG["gpt-moe-1.8t-alt"]
    assert alt.total_params == pytest.approx(1.8e12, rel=ALT_TOLERANCE)
    assert alt.num_layers * alt.num_experts * alt.expert_params == pytest.approx(1.8e12, rel=0.01)
    assert not alt.gated_ffn and main.gated_ffn
    for spec in (main, alt):
        assert (spec.num_experts, spec.experts_per_token, spec.num_moe_layers) == (16, 2, 120)
    # models.md: the reconstruction has about 55B attention and 1.79T expert parameters.
    assert main.num_layers * main.attention_params_per_layer == pytest.approx(55e9, rel=TOLERANCE)
    assert main.num_layers * main.num_experts * main.expert_params == pytest.approx(1.79e12, rel=TOLERANCE)


@pytest.mark.parametrize(("name", "path"), [(n, p) for n, p in config_pairs() if p.name in CATALOG[n].source],
                         ids=lambda x: getattr(x, "stem", x))
def test_checkpoint_formats_match_config(name: str, path: Path) -> None:
    """The formats a catalog file states for its checkpoint are those its source config.json declares, and
    the catalog source names that file."""
    ckpt, imported = CATALOG[name].checkpoint_precision, model_from_hf_config(path).checkpoint_precision
    assert ckpt is not None and imported is not None
    assert (ckpt.dense, ckpt.experts) == (imported.dense, imported.experts)
    assert path.name in ckpt.source


def test_gpt_oss_checkpoint_is_mxfp4_experts_with_bf16_attention() -> None:
    """openai/gpt-oss-*: quantization_config mxfp4 leaves self_attn, router, embeddings and LM head out."""
    for name in ("gpt-oss-120b", "gpt-oss-20b"):
        ckpt = CATALOG[name].checkpoint_precision
        assert (ckpt.dense.value, ckpt.experts.value) == ("bf16", "mxfp4")
    assert CATALOG["deepseek-r1"].checkpoint_precision.dense.value == "fp8"
    assert CATALOG["gpt-moe-1.8t"].checkpoint_precision is None  # no checkpoint was ever published


def test_checkpoint_experts_need_an_moe_model() -> None:
    data = yaml.safe_load((MODELS_DIR / "llama-3.1-8b.yaml").read_text())
    data["checkpoint_precision"] = {"dense": "bf16", "experts": "mxfp4", "source": "a test"}
    with pytest.raises(ValueError, match="routed experts"):
        ModelSpec(**data)
