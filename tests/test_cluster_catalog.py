"""The cluster catalog (clusters/*.yaml): every file is a valid ClusterSpec with sourced numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from planner.specs import ClusterSpec

CLUSTERS_DIR = Path(__file__).resolve().parents[1] / "clusters"
YAML_FILES = sorted(CLUSTERS_DIR.glob("*.yaml"))

REQUIRED = {
    "h100-sxm", "h200-sxm", "b200", "b300", "gb200-nvl72", "gb300-nvl72",
    "a100-sxm", "mi300x", "mi325x", "mi355x", "l40s",
}

# System names used by measured data, which must resolve to a catalog entry.
REQUIRED_ALIASES = {
    "h100-sxm": {"h100_sxm"},
    "h200-sxm": {"h200_sxm"},
    "b200": {"b200_sxm", "b200-sxm"},
    "gb200-nvl72": {"gb200", "gb200_nvl72"},
    "b300": {"b300_sxm"},
    "gb300-nvl72": {"gb300"},
    "a100-sxm": {"a100_sxm"},
}


def _raw(path: Path) -> dict:
    with path.open() as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def catalog() -> dict[str, ClusterSpec]:
    specs = [ClusterSpec.model_validate(_raw(p)) for p in YAML_FILES]
    return {s.name: s for s in specs}


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.stem)
def test_file_is_a_valid_cluster_named_after_it(path: Path) -> None:
    spec = ClusterSpec.model_validate(_raw(path))
    assert spec.name == path.stem
    assert path.read_text().startswith("#"), "each cluster file starts with a comment header"
    assert spec.description and spec.gpu


def test_all_required_clusters_exist(catalog: dict[str, ClusterSpec]) -> None:
    assert REQUIRED <= set(catalog)


@pytest.mark.parametrize("name", sorted(REQUIRED_ALIASES))
def test_measured_data_aliases_present(catalog: dict[str, ClusterSpec], name: str) -> None:
    assert REQUIRED_ALIASES[name] <= set(catalog[name].aliases)


def test_aliases_unique_and_distinct_from_names(catalog: dict[str, ClusterSpec]) -> None:
    owner: dict[str, str] = {}
    for spec in catalog.values():
        for alias in spec.aliases:
            assert alias not in catalog, f"alias {alias!r} of {spec.name} is also a catalog name"
            assert alias not in owner, f"alias {alias!r} used by both {owner[alias]} and {spec.name}"
            owner[alias] = spec.name


def test_h100_spot_check(catalog: dict[str, ClusterSpec]) -> None:
    h100 = catalog["h100-sxm"]
    assert h100.hbm_bandwidth_tbps == pytest.approx(3.35)
    assert h100.tflops == {"bf16": pytest.approx(989), "fp8": pytest.approx(1979)}
    assert h100.scaleup_domain_gpus == 8
    assert h100.scaleup_bandwidth_gbps == pytest.approx(450)
    assert h100.hbm_capacity_gb == pytest.approx(80 * 2**30 / 1e9, abs=0.05)  # 80 GiB in decimal GB


def test_gb200_spot_check(catalog: dict[str, ClusterSpec]) -> None:
    gb200 = catalog["gb200-nvl72"]
    assert gb200.scaleup_domain_gpus == 72
    assert gb200.gpus_per_node == 4
    assert gb200.tflops["fp4"] == pytest.approx(10000)
    assert gb200.hbm_capacity_gb == pytest.approx(185 * 2**30 / 1e9, abs=0.05)  # ~185 GiB usable


def test_nvl72_scaleout_nics(catalog: dict[str, ClusterSpec]) -> None:
    """GB200 NVL72 trays carry ConnectX-7 400 Gb/s per GPU, GB300 NVL72 trays ConnectX-8 800 Gb/s; each
    source says which NIC it is."""
    gb200, gb300 = catalog["gb200-nvl72"], catalog["gb300-nvl72"]
    assert gb200.scaleout_bandwidth_gbps == pytest.approx(400 / 8)
    assert gb300.scaleout_bandwidth_gbps == pytest.approx(800 / 8)
    assert "ConnectX-7" in gb200.sources["scaleout_bandwidth_gbps"]
    assert "ConnectX-8" in gb300.sources["scaleout_bandwidth_gbps"]
    assert "400 Gb/s" in gb200.description


@pytest.mark.parametrize(("name", "tbps", "quoted"), [
    ("b200", 8.0, "8 TB/s per GPU"), ("b300", 8.0, "8 TB/s"), ("gb200-nvl72", 8.0, "8.0 TB/s"),
    ("gb300-nvl72", 8.0, "8.0 TB/s"), ("mi300x", 5.3, "5.3 TB/s"), ("mi325x", 6.0, "6.0 TB/s"),
    ("mi355x", 8.0, "8.0 TB/s")])
def test_hbm_bandwidth_is_the_figure_its_source_quotes(catalog: dict[str, ClusterSpec], name: str, tbps: float,
                                                       quoted: str) -> None:
    """The figures their sources quote (B200/B300: NVIDIA's 8 TB/s, not hardware.md's revised 7.7/7.75, which
    put the fitted Blackwell HBM efficiency at its bound)."""
    spec = catalog[name]
    assert spec.hbm_bandwidth_tbps == pytest.approx(tbps)
    assert quoted in spec.sources["hbm_bandwidth_tbps"]


def test_amd_entries_match_the_reference(catalog: dict[str, ClusterSpec]) -> None:
    """hardware.md: MI300X 192 GB / 1307 / 2615, MI325X 256 GB as MI300X, MI355X 288 GB ~2500 / ~5000 / ~10000
    (FP4), 50 GB/s scale-out each; xGMI 7 x 64 GB/s (MI355X ~538) as the aggregate."""
    expect = {"mi300x": (192, {"bf16": 1307, "fp8": 2615}, 448), "mi325x": (256, {"bf16": 1307, "fp8": 2615}, 448),
              "mi355x": (288, {"bf16": 2500, "fp8": 5000, "fp4": 10000}, 538)}
    for name, (hbm, tflops, up) in expect.items():
        spec = catalog[name]
        assert (spec.hbm_capacity_gb, spec.tflops, spec.scaleup_bandwidth_gbps) == (hbm, tflops, up)
        assert spec.scaleout_bandwidth_gbps == 50 and spec.scaleup_domain_gpus == 8


def test_format_support(catalog: dict[str, ClusterSpec]) -> None:
    assert set(catalog["a100-sxm"].tflops) == {"bf16"}
    assert not catalog["a100-sxm"].supports("fp8")
    assert set(catalog["l40s"].tflops) == {"bf16", "fp8"}
    assert catalog["l40s"].tflops["fp8"] == pytest.approx(733)
    assert set(catalog["mi300x"].tflops) == {"bf16", "fp8"}
    assert set(catalog["mi325x"].tflops) == {"bf16", "fp8"}
    assert catalog["mi355x"].supports("fp4")


def test_l40s_has_no_scaleup_domain(catalog: dict[str, ClusterSpec]) -> None:
    assert catalog["l40s"].scaleup_domain_gpus == 1


def test_domain_is_a_multiple_of_node(catalog: dict[str, ClusterSpec]) -> None:
    for spec in catalog.values():
        if spec.scaleup_domain_gpus > 1:
            assert spec.scaleup_domain_gpus % spec.gpus_per_node == 0, spec.name


def test_missing_source_is_rejected_naming_the_field() -> None:
    data = _raw(CLUSTERS_DIR / "h100-sxm.yaml")
    del data["sources"]["scaleout_latency_us"]
    with pytest.raises(ValidationError, match="missing: scaleout_latency_us"):
        ClusterSpec.model_validate(data)


def test_blank_source_is_rejected_naming_the_field() -> None:
    data = _raw(CLUSTERS_DIR / "h100-sxm.yaml")
    data["sources"]["hbm_bandwidth_tbps"] = "  "
    with pytest.raises(ValidationError, match="hbm_bandwidth_tbps"):
        ClusterSpec.model_validate(data)


def test_reserved_memory_not_below_capacity_is_rejected() -> None:
    data = _raw(CLUSTERS_DIR / "h100-sxm.yaml")
    data["reserved_memory_gb"] = data["hbm_capacity_gb"]
    with pytest.raises(ValidationError, match="reserved_memory_gb must be smaller"):
        ClusterSpec.model_validate(data)


def test_unknown_key_is_rejected() -> None:
    data = _raw(CLUSTERS_DIR / "h100-sxm.yaml")
    data["nvlink_version"] = 4
    with pytest.raises(ValidationError, match="nvlink_version"):
        ClusterSpec.model_validate(data)
