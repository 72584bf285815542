"""Absurd inputs are refused in one line: numbers past the schemas' physical bounds, NaN and infinity,
and files nested too deep to read.

Library level: make_problem / load_cluster / load_model / model_from_hf_config raise SpecError naming
the field (or the file), the limit and the value given. CLI level: `planner solve` / `estimate` end
such input with exit code 2 and one line on stderr, before any search runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import annotated_types
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from planner import catalog, search
from planner.calibrate import load_calibration
from planner.catalog import load_cluster, load_model
from planner.cli import main
from planner.errors import SpecError
from planner.hfconfig import model_from_hf_config
from planner.specs import (
    MAX_GPUS,
    MAX_LAYERS,
    MAX_TFLOPS,
    MAX_TOKENS,
    MAX_TOKENS_PER_S_PER_USER,
    MAX_TTFT_S,
    MIN_TFLOPS,
    MIN_TOKENS_PER_S_PER_USER,
    SLA,
    Calibration,
    ClusterSpec,
    ModelSpec,
    Workload,
)

REPO = Path(__file__).resolve().parent.parent
DEEP = 100_000
"""Nesting depth of the deep files: far past Python's recursion limit."""
SMALL = dict(model="llama-3.1-8b", cluster="h100-sxm", gpus=8, isl=1000, osl=200, precision="fp8")
SMALL_ARGS = ["--model", "llama-3.1-8b", "--cluster", "h100-sxm", "--gpus", "8", "--isl", "1000", "--osl", "200",
              "--precision", "fp8"]
_MODEL = load_model("llama-3.1-8b")
_CLUSTER = load_cluster("h100-sxm")
HF_LLAMA = {
    "model_type": "llama", "num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8,
    "num_key_value_heads": 2, "intermediate_size": 1024, "vocab_size": 1000,
}


# --- files ---------------------------------------------------------------------------------------------


def _yaml_with(tmp_path: Path, kind: str, stem: str, name: str, **changes: object) -> Path:
    """A copy of a shipped catalog YAML with fields changed."""
    data = yaml.safe_load((REPO / kind / f"{stem}.yaml").read_text())
    data.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _text_with(tmp_path: Path, kind: str, stem: str, name: str, old: str, new: str) -> Path:
    """A copy of a shipped catalog YAML with one line's text replaced (numbers exactly as a user types them)."""
    text = (REPO / kind / f"{stem}.yaml").read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


def deep_list_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "deep-list.yaml"
    path.write_text("a: " + "[" * DEEP + "]" * DEEP + "\n")
    return path


def deep_mapping_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "deep-mapping.yaml"
    path.write_text("a: " + "{b: " * DEEP + "1" + "}" * DEEP + "\n")
    return path


def deep_block_yaml(tmp_path: Path) -> Path:
    """Nested by indentation, 1000 levels (half a megabyte: indentation grows with the depth)."""
    path = tmp_path / "deep-block.yaml"
    path.write_text("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 1000)))
    return path


def deep_json(tmp_path: Path, name: str = "deep.json") -> Path:
    path = tmp_path / name
    path.write_text('{"name": "x", "a": ' + "[" * DEEP + "]" * DEEP + "}")
    return path


def deep_hf_config(tmp_path: Path) -> Path:
    folder = tmp_path / "deep-model"
    folder.mkdir()
    path = folder / "config.json"
    path.write_text(json.dumps(HF_LLAMA)[:-1] + ', "rope_scaling": ' + "{\"a\": " * DEEP + "1" + "}" * DEEP + "}")
    return path


def hf_config(tmp_path: Path, **changes: object) -> Path:
    folder = tmp_path / "hf-model"
    folder.mkdir(exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps({**HF_LLAMA, **changes}))
    return path


def huge_hbm_cluster(tmp_path: Path) -> Path:
    return _text_with(tmp_path, "clusters", "h100-sxm", "huge-hbm.yaml", "hbm_capacity_gb: 85.9",
                      "hbm_capacity_gb: 1e30")


def deep_layers_model(tmp_path: Path) -> Path:
    return _text_with(tmp_path, "models", "llama-3.1-8b", "deep-layers.yaml", "num_layers: 32",
                      "num_layers: 1000000000000000")


# --- make_problem ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "fragments"),
    [
        (dict(isl=99999999999999999999), "isl", ["at most 10,000,000 tokens", "got 99999999999999999999"]),
        (dict(isl=MAX_TOKENS + 1), "isl", ["at most 10,000,000 tokens", "got 10000001"]),
        (dict(osl=10**20), "osl", ["at most 10,000,000 tokens"]),
        (dict(isl=0), "isl", ["at least 1 tokens", "got 0"]),
        (dict(gpus=10**20), "gpus", ["at most 1,048,576 GPUs", "got 100000000000000000000"]),
        (dict(gpus=0), "gpus", ["at least 1 GPUs"]),
        (dict(min_tokens_per_s_per_user=1e-30), "min_tokens_per_s_per_user", ["0.001", "got 1e-30"]),
        (dict(min_tokens_per_s_per_user=1e7), "min_tokens_per_s_per_user", ["1,000,000 tokens/s", "got 10000000.0"]),
        (dict(min_tokens_per_s_per_user=math.nan), "min_tokens_per_s_per_user", ["got nan"]),
        (dict(min_tokens_per_s_per_user=math.inf), "min_tokens_per_s_per_user", ["got inf"]),
        (dict(min_tokens_per_s_per_user=-1.0), "min_tokens_per_s_per_user", ["got -1.0"]),
        (dict(max_ttft_s=1e30), "max_ttft_s", ["604,800 s", "got 1e+30"]),
        (dict(max_ttft_s=math.nan), "max_ttft_s", ["got nan"]),
        (dict(max_ttft_s=-math.inf), "max_ttft_s", ["got -inf"]),
        (dict(max_ttft_s=0.0), "max_ttft_s", ["above 0"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_make_problem_refuses(changes: dict, field: str, fragments: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        search.make_problem(**{**SMALL, **changes})
    message = str(err.value)
    assert f"field '{field}'" in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize("value", [math.nan, math.inf, 2.0, 0.3, -1.0])
def test_make_problem_refuses_memory_utilization(value: float) -> None:
    with pytest.raises(SpecError, match="memory utilization"):
        search.make_problem(**SMALL, memory_utilization=value)


def test_make_problem_refuses_an_integer_too_long_to_print() -> None:
    with pytest.raises(SpecError, match=r"field 'isl': must be at most 10,000,000 tokens, got a \d+-digit number"):
        search.make_problem(**{**SMALL, "isl": 10**5000})


def test_make_problem_accepts_every_limit() -> None:
    p = search.make_problem(**{**SMALL, "gpus": MAX_GPUS, "isl": MAX_TOKENS, "osl": MAX_TOKENS},
                            min_tokens_per_s_per_user=MIN_TOKENS_PER_S_PER_USER, max_ttft_s=MAX_TTFT_S)
    assert (p.gpus, p.workload.isl, p.workload.osl) == (MAX_GPUS, MAX_TOKENS, MAX_TOKENS)
    assert p.sla == SLA(min_tokens_per_s_per_user=0.001, max_ttft_s=604_800)
    fast = search.make_problem(**SMALL, min_tokens_per_s_per_user=MAX_TOKENS_PER_S_PER_USER)
    assert fast.sla.min_tokens_per_s_per_user == 1e6


# --- cluster files --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "fragments"),
    [
        (dict(hbm_capacity_gb=1e30), "hbm_capacity_gb", ["at most 10,000 GB", "got 1e+30"]),
        (dict(hbm_capacity_gb=math.nan), "hbm_capacity_gb", ["finite number", "got nan"]),
        (dict(hbm_capacity_gb=1e-9), "hbm_capacity_gb", ["at least 0.1 GB"]),
        (dict(hbm_bandwidth_tbps=math.inf), "hbm_bandwidth_tbps", ["finite number", "got inf"]),
        (dict(hbm_bandwidth_tbps=1e-300), "hbm_bandwidth_tbps", ["at least 0.01 TB/s", "got 1e-300"]),
        (dict(tflops={"bf16": 1e30}), "tflops.bf16", ["at most 1,000,000 TFLOP/s"]),
        (dict(tflops={"bf16": 989.0, "fp8": math.nan}), "tflops.fp8", ["finite number"]),
        (dict(scaleup_domain_gpus=10**9), "scaleup_domain_gpus", ["at most 65,536 GPUs", "got 1000000000"]),
        (dict(gpus_per_node=10**6), "gpus_per_node", ["at most 1,024 GPUs"]),
        (dict(scaleup_bandwidth_gbps=1e12), "scaleup_bandwidth_gbps", ["at most 100,000 GB/s"]),
        (dict(scaleout_bandwidth_gbps=1e-30), "scaleout_bandwidth_gbps", ["at least 0.01 GB/s"]),
        (dict(scaleup_latency_us=1e30), "scaleup_latency_us", ["at most 1,000,000 us"]),
        (dict(scaleout_latency_us=0.0), "scaleout_latency_us", ["at least 0.001 us"]),
        (dict(reserved_memory_gb=math.inf), "reserved_memory_gb", ["finite number"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_cluster_yaml_refuses(tmp_path: Path, changes: dict, field: str, fragments: list[str]) -> None:
    path = _yaml_with(tmp_path, "clusters", "h100-sxm", "bad-cluster.yaml", **changes)
    with pytest.raises(SpecError) as err:
        load_cluster(path)
    message = str(err.value)
    assert str(path) in message and f"field '{field}'" in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_cluster_number_as_typed(tmp_path: Path) -> None:
    """YAML 1.1 reads `1e30` (no dot) as text; pydantic still reads it as the number, shown as typed."""
    with pytest.raises(SpecError, match=r"huge-hbm.yaml: field 'hbm_capacity_gb': must be at most 10,000 GB, "
                                        r"got 1e30$"):
        load_cluster(huge_hbm_cluster(tmp_path))


def test_cluster_json_refuses(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "clusters" / "h100-sxm.yaml").read_text())
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({**data, "hbm_capacity_gb": 1e30}))
    with pytest.raises(SpecError, match=r"cluster.json: field 'hbm_capacity_gb': must be at most 10,000 GB"):
        load_cluster(path)
    path.write_text(json.dumps({**data, "hbm_bandwidth_tbps": math.nan}))  # JSON's NaN literal
    with pytest.raises(SpecError, match=r"field 'hbm_bandwidth_tbps': must be a finite number, got nan"):
        load_cluster(path)
    path.write_text(json.dumps(data))
    assert load_cluster(path).name == "h100-sxm"


# --- model files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "changes", "field", "fragments"),
    [
        ("llama-3.1-8b", dict(num_layers=10**15), "num_layers", ["at most 100,000 layers", "got 1000000000000000"]),
        ("llama-3.1-8b", dict(hidden_size=10**9), "hidden_size", ["at most 1,048,576 values"]),
        ("llama-3.1-8b", dict(num_attention_heads=10**9), "num_attention_heads", ["at most 65,536 heads"]),
        ("llama-3.1-8b", dict(head_dim=10**9), "head_dim", ["at most 65,536 values"]),
        ("llama-3.1-8b", dict(vocab_size=10**12), "vocab_size", ["at most 100,000,000 tokens"]),
        ("llama-3.1-8b", dict(intermediate_size=10**12), "intermediate_size", ["at most 10,000,000 values"]),
        ("llama-3.1-8b", dict(num_layers=1e400), "num_layers", ["finite number"]),
        ("mixtral-8x7b", dict(num_experts=10**9), "num_experts", ["at most 100,000 experts"]),
        ("llama-3.1-8b", dict(sliding_window=10**12, sliding_window_layers=1), "sliding_window",
         ["at most 100,000,000 tokens"]),
        ("deepseek-r1", dict(mla={"kv_lora_rank": 10**9, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                                  "v_head_dim": 128}), "mla.kv_lora_rank", ["at most 1,048,576 values"]),
    ],
    ids=lambda v: v if isinstance(v, str) and "-" not in v else None,
)
def test_model_yaml_refuses(tmp_path: Path, stem: str, changes: dict, field: str, fragments: list[str]) -> None:
    path = _yaml_with(tmp_path, "models", stem, "bad-model.yaml", **changes)
    with pytest.raises(SpecError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and f"field '{field}'" in message, message
    for fragment in fragments:
        assert fragment in message, message


# --- HuggingFace config.json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        (dict(num_hidden_layers=10**15), ["'num_hidden_layers' must be at most 100,000", "got 1000000000000000"]),
        (dict(hidden_size=10**9), ["field 'hidden_size'", "at most 1,048,576 values", "got 1000000000"]),
        (dict(model_type="deepseek_v3", kv_lora_rank=10**9, qk_nope_head_dim=128, qk_rope_head_dim=64,
              v_head_dim=128), ["field 'kv_lora_rank'", "at most 1,048,576"]),
        (dict(model_type="llama4", num_local_experts=4, num_experts_per_tok=1, moe_layers=["a", "b"]),
         ["'moe_layers' must be a list of layer indices"]),
        (dict(model_type="qwen3_moe", num_experts=4, num_experts_per_tok=1, moe_intermediate_size=64,
              mlp_only_layers=[[0]]), ["'mlp_only_layers' must be a list of layer indices"]),
        (dict(hidden_size={"a": [1]}), ["'hidden_size' must be an integer", "got dict"]),
    ],
)
def test_hf_config_refuses(tmp_path: Path, changes: dict, fragments: list[str]) -> None:
    path = hf_config(tmp_path, **changes)
    with pytest.raises(SpecError) as err:
        model_from_hf_config(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_hf_config_at_the_layer_limit_loads(tmp_path: Path) -> None:
    spec = model_from_hf_config(hf_config(tmp_path, num_hidden_layers=MAX_LAYERS))
    assert spec.num_layers == MAX_LAYERS


# --- nesting and unreadable numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "load"),
    [
        (deep_list_yaml, load_cluster),
        (deep_mapping_yaml, load_cluster),
        (deep_list_yaml, load_model),
        (deep_mapping_yaml, load_model),
        (deep_block_yaml, load_cluster),
        (deep_block_yaml, load_model),
        (deep_json, load_cluster),
        (deep_json, load_model),  # a .json model is read as a HuggingFace config
        (deep_hf_config, load_model),
        (deep_mapping_yaml, load_calibration),
    ],
    ids=lambda f: f.__name__,
)
def test_deep_nesting_is_a_spec_error(tmp_path: Path, make: Callable, load: Callable) -> None:
    path = make(tmp_path)
    with pytest.raises(SpecError) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and "nesting too deep" in message and "\n" not in message, message


def test_integer_beyond_the_digit_limit(tmp_path: Path) -> None:
    path = _text_with(tmp_path, "models", "llama-3.1-8b", "long.yaml", "num_layers: 32", "num_layers: 1" + "0" * 5000)
    with pytest.raises(SpecError, match="long.yaml: unreadable value in YAML"):
        load_model(path)
    data = yaml.safe_load((REPO / "clusters" / "h100-sxm.yaml").read_text())
    path = tmp_path / "long.json"
    path.write_text(json.dumps(data)[:-1] + ', "gpus_per_node": 1' + "0" * 5000 + "}")
    with pytest.raises(SpecError, match="long.json: unreadable value in JSON"):
        load_cluster(path)
    path = hf_config(tmp_path)
    path.write_text(json.dumps(HF_LLAMA)[:-1] + ', "vocab_size": 1' + "0" * 5000 + "}")
    with pytest.raises(SpecError, match="unreadable value in JSON"):
        model_from_hf_config(path)


def test_calibration_file_refuses_nan(tmp_path: Path) -> None:
    path = tmp_path / "cal.yaml"
    path.write_text("memory_utilization: .nan\n")
    with pytest.raises(SpecError, match=r"cal.yaml: field 'memory_utilization': must be a finite number, got nan"):
        load_calibration(path)
    path.write_text("engine_chunk_tokens: {vllm: 100000000000}\n")
    with pytest.raises(SpecError, match=r"field 'engine_chunk_tokens.vllm': must be at most 10,000,000"):
        load_calibration(path)


# --- the shipped catalog stays far from every bound ------------------------------------------------------


def _bounds(field) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in field.metadata:
        if isinstance(m, (annotated_types.Ge, annotated_types.Gt)):
            lo = getattr(m, "ge", getattr(m, "gt", None))
        if isinstance(m, (annotated_types.Le, annotated_types.Lt)):
            hi = getattr(m, "le", getattr(m, "lt", None))
    return lo, hi


@pytest.mark.parametrize("spec", catalog.all_models() + catalog.all_clusters(), ids=lambda s: s.name)
def test_shipped_values_are_far_inside_the_bounds(spec: ModelSpec | ClusterSpec) -> None:
    """Every bound is at least 10x away from every shipped value (zeros of optional counts aside)."""
    checked = 0
    values = spec.model_dump()
    for name, field in type(spec).model_fields.items():
        lo, hi = _bounds(field)
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or hi is None:
            continue
        checked += 1
        assert value * 10 <= hi, (name, value, hi)
        if lo and value:
            assert value >= lo * 10, (name, value, lo)
    if isinstance(spec, ClusterSpec):
        for fmt, value in spec.tflops.items():
            assert MIN_TFLOPS * 10 <= value <= MAX_TFLOPS / 10, (fmt, value)
    assert checked >= 8


# --- properties ------------------------------------------------------------------------------------------

ABSURD_SPEEDS = st.one_of(
    st.floats(min_value=1e-300, max_value=MIN_TOKENS_PER_S_PER_USER, exclude_max=True),
    st.floats(min_value=MAX_TOKENS_PER_S_PER_USER, exclude_min=True),  # up to infinity
    st.floats(max_value=0.0),
    st.just(math.nan),
)


@given(ABSURD_SPEEDS)
def test_any_absurd_sla_is_refused(value: float) -> None:
    with pytest.raises(SpecError, match=r"field 'min_tokens_per_s_per_user': must be from 0.001 to 1,000,000"):
        SLA(min_tokens_per_s_per_user=value)


@given(st.floats(min_value=MIN_TOKENS_PER_S_PER_USER, max_value=MAX_TOKENS_PER_S_PER_USER))
def test_any_sla_in_range_is_accepted(value: float) -> None:
    assert SLA(min_tokens_per_s_per_user=value).min_tokens_per_s_per_user == value


@given(st.one_of(st.floats(min_value=MAX_TTFT_S, exclude_min=True), st.floats(max_value=0.0), st.just(math.nan)))
def test_any_absurd_ttft_is_refused(value: float) -> None:
    with pytest.raises(SpecError, match=r"field 'max_ttft_s'"):
        SLA(max_ttft_s=value)


@given(st.floats(min_value=0.0, max_value=MAX_TTFT_S, exclude_min=True))
def test_any_ttft_in_range_is_accepted(value: float) -> None:
    assert SLA(max_ttft_s=value).max_ttft_s == value


@given(st.integers(min_value=MAX_TOKENS + 1, max_value=10**40), st.booleans())
def test_any_absurd_token_count_is_refused(value: int, input_side: bool) -> None:
    with pytest.raises(ValidationError, match="less than or equal to 10000000"):
        Workload(**{"isl" if input_side else "osl": value})


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=MAX_TOKENS), st.integers(min_value=1, max_value=MAX_TOKENS),
       st.floats(min_value=MIN_TOKENS_PER_S_PER_USER, max_value=MAX_TOKENS_PER_S_PER_USER))
def test_make_problem_accepts_any_in_range_workload(isl: int, osl: int, sla: float) -> None:
    p = search.make_problem(model=_MODEL, cluster=_CLUSTER, gpus=8, isl=isl, osl=osl, precision="fp8",
                            min_tokens_per_s_per_user=sla, calibration=Calibration())
    assert (p.workload.isl, p.workload.osl, p.sla.min_tokens_per_s_per_user) == (isl, osl, sla)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["hbm_capacity_gb", "hbm_bandwidth_tbps", "scaleup_bandwidth_gbps",
                        "scaleout_bandwidth_gbps", "scaleup_latency_us", "scaleout_latency_us"]),
       st.one_of(st.floats(min_value=1e6, exclude_min=True), st.floats(max_value=1e-3, exclude_max=True),
                 st.just(math.nan)))
def test_any_absurd_cluster_number_is_refused(field: str, value: float) -> None:
    data = _CLUSTER.model_dump()
    with pytest.raises(ValidationError) as err:
        ClusterSpec.model_validate({**data, field: value})
    message = catalog.validation_message(err.value)
    assert message.startswith(f"field '{field}': must be ") and "\n" not in message, message


# --- the command line ---------------------------------------------------------------------------------


@pytest.fixture
def no_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused while the problem is built: running a search or an estimate fails."""

    def ran(*args: object, **kwargs: object) -> None:
        raise AssertionError("a search ran on input that should have been refused")

    monkeypatch.setattr(search, "solve", ran)
    monkeypatch.setattr(search, "estimate", ran)


def _file_arg(tmp_path: Path, make: str) -> str:
    makers: dict[str, Callable[[Path], Path]] = {
        "huge-hbm": huge_hbm_cluster, "deep-yaml": deep_list_yaml, "deep-mapping": deep_mapping_yaml,
        "deep-block": deep_block_yaml, "deep-json": deep_json, "deep-layers": deep_layers_model,
        "deep-hf": deep_hf_config,
        "hf-layers": lambda t: hf_config(t, num_hidden_layers=10**15),
    }
    return str(makers[make](tmp_path))


CLI_CASES = [
    (["solve", "--isl", "99999999999999999999"], ["field 'isl'", "10,000,000", "99999999999999999999"]),
    (["solve", "--osl", "10000001"], ["field 'osl'", "10,000,000", "10000001"]),
    (["solve", "--gpus", "99999999999999999999"], ["field 'gpus'", "1,048,576", "99999999999999999999"]),
    # the CLI checks an SLA as it parses it (frontier --sla-range and compare --at too), the library again
    (["solve", "--sla", "1e-30tok/s"], ["'--sla'", "0.001", "1e-30"]),
    (["solve", "--sla", "1e308ms"], ["'--sla'", "0.001", "1e-305"]),
    (["solve", "--sla", "1e400"], ["'--sla'", "positive finite"]),
    (["solve", "--ttft", "1e30s"], ["field 'max_ttft_s'", "604,800", "1e+30"]),
    (["solve", "--cluster", "@huge-hbm"], ["huge-hbm.yaml", "field 'hbm_capacity_gb'", "10,000 GB", "1e30"]),
    (["solve", "--cluster", "@deep-yaml"], ["deep-list.yaml", "nesting too deep"]),
    (["solve", "--cluster", "@deep-mapping"], ["deep-mapping.yaml", "nesting too deep"]),
    (["solve", "--cluster", "@deep-block"], ["deep-block.yaml", "nesting too deep"]),
    (["solve", "--cluster", "@deep-json"], ["deep.json", "nesting too deep"]),
    (["solve", "--model", "@deep-yaml"], ["deep-list.yaml", "nesting too deep"]),
    (["solve", "--model", "@deep-hf"], ["config.json", "nesting too deep"]),
    (["solve", "--calibration", "@deep-mapping"], ["deep-mapping.yaml", "nesting too deep"]),
    (["solve", "--model", "@deep-layers"], ["deep-layers.yaml", "field 'num_layers'", "100,000 layers",
                                            "1000000000000000"]),
    (["estimate", "--model", "@deep-layers"], ["deep-layers.yaml", "field 'num_layers'", "100,000 layers"]),
    (["solve", "--model", "@hf-layers"], ["config.json", "'num_hidden_layers' must be at most 100,000"]),
    (["estimate", "--model", "@hf-layers"], ["config.json", "'num_hidden_layers' must be at most 100,000"]),
    (["estimate", "--cluster", "@huge-hbm"], ["huge-hbm.yaml", "field 'hbm_capacity_gb'"]),
]


@pytest.mark.parametrize(("args", "fragments"), CLI_CASES, ids=lambda v: " ".join(v) if v and v[0] in (
    "solve", "estimate") else None)
def test_cli_refuses_in_one_line(tmp_path: Path, no_search: None, args: list[str], fragments: list[str]) -> None:
    args = [_file_arg(tmp_path, a[1:]) if a.startswith("@") else a for a in args]
    command, rest = args[0], args[1:]
    given_opts = set(rest[::2])
    base = [a for pair in zip(SMALL_ARGS[::2], SMALL_ARGS[1::2]) if pair[0] not in given_opts for a in pair]
    result = CliRunner().invoke(main, [command, *base, *rest], prog_name="planner")
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(("planner: error: ", f"planner {command}: error: ")), line
    assert "internal error" not in line and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line, line
    print(line)  # shown with -s: the messages as a user sees them


def test_cli_still_solves_with_a_cluster_file_at_its_limits(tmp_path: Path) -> None:
    """A cluster far past today's GPUs but inside every bound is planned as usual."""
    path = _yaml_with(tmp_path, "clusters", "h100-sxm", "future.yaml", hbm_capacity_gb=9000.0,
                      hbm_bandwidth_tbps=900.0, tflops={"bf16": 900_000.0, "fp8": 900_000.0})
    result = CliRunner().invoke(main, ["solve", *SMALL_ARGS[:2], "--cluster", str(path), *SMALL_ARGS[4:], "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["cluster"] == "h100-sxm"
