"""The catalogs of models and clusters: YAML files shipped with the package, found by name or alias.

`load_model` and `load_cluster` also take a path to a YAML file; `load_model` takes a path to a
HuggingFace config.json as well.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from planner.errors import SpecError, UnknownNameError
from planner.specs import ClusterSpec, ModelSpec

T = TypeVar("T", bound=BaseModel)


def _catalog_dir(kind: str) -> Path:
    """The folder of YAML files: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "catalog" / kind, here.parent / kind):
        if candidate.is_dir():
            return candidate
    raise SpecError(f"the {kind} catalog is missing from this installation (looked in {here / 'catalog'})")


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def validation_message(e: ValidationError) -> str:
    """One line from a pydantic error: the first failing field and the reason."""
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    extra = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"field '{where}': {msg}{extra}" if where else f"{msg}{extra}"


def _read_text(path: Path) -> str:
    """A text file's content, or SpecError naming the file and why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror or e})") from None


def parse_yaml(path: Path, schema: type[T]) -> T:
    """Read and validate one YAML file, raising SpecError naming the file, field and reason."""
    try:
        data = yaml.safe_load(_read_text(path))
    except SpecError:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}: malformed YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of {schema.__name__} fields, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise SpecError(f"{path}: {validation_message(e)}") from None


@cache
def _entries(kind: str) -> dict[str, Path]:
    """Every name and alias (normalised) -> its YAML file."""
    out: dict[str, Path] = {}
    for f in sorted(_catalog_dir(kind).glob("*.yaml")):
        out[_norm(f.stem)] = f
        data = yaml.safe_load(f.read_text()) or {}
        for alias in data.get("aliases", []) or []:
            out[_norm(str(alias))] = f
    return out


def names(kind: str) -> list[str]:
    """Catalog names (file stems) of 'models' or 'clusters'."""
    return sorted(f.stem for f in _catalog_dir(kind).glob("*.yaml"))


@cache
def _load(kind: str, path: Path) -> BaseModel:
    return parse_yaml(path, ModelSpec if kind == "models" else ClusterSpec)


def _lookup(kind: str, name: str) -> BaseModel:
    entries = _entries(kind)
    key = _norm(name)
    if key in entries:
        return _load(kind, entries[key])
    # HuggingFace ids: also try the last path component ("org/Model" -> "model")
    tail = _norm(name.rsplit("/", 1)[-1])
    if tail in entries:
        return _load(kind, entries[tail])
    close = difflib.get_close_matches(key, list(entries), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(names(kind))}"
    what = "model" if kind == "models" else "cluster"
    raise UnknownNameError(f"unknown {what} '{name}': {hint} (or give a path to a YAML file)")


def _is_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml", ".json")) or "/" in ref and Path(ref).exists()


def load_model(ref: str | Path) -> ModelSpec:
    """A model by catalog name, alias (HuggingFace id), YAML path or HuggingFace config.json path."""
    ref_s = str(ref)
    if isinstance(ref, Path) or _is_path(ref_s):
        path = Path(ref_s)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise SpecError(f"{path}: no such file")
        if path.suffix == ".json":
            from planner.hfconfig import model_from_hf_config

            return model_from_hf_config(path)
        return parse_yaml(path, ModelSpec)
    return _lookup("models", ref_s)  # type: ignore[return-value]


def load_cluster(ref: str | Path) -> ClusterSpec:
    """A cluster by catalog name, alias (e.g. 'h100_sxm') or YAML path."""
    ref_s = str(ref)
    if isinstance(ref, Path) or _is_path(ref_s):
        path = Path(ref_s)
        if not path.exists():
            raise SpecError(f"{path}: no such file")
        if path.suffix == ".json":
            try:
                data = json.loads(_read_text(path))
                return ClusterSpec.model_validate(data)
            except json.JSONDecodeError as e:
                raise SpecError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
            except ValidationError as e:
                raise SpecError(f"{path}: {validation_message(e)}") from None
        return parse_yaml(path, ClusterSpec)
    return _lookup("clusters", ref_s)  # type: ignore[return-value]


def all_models() -> list[ModelSpec]:
    """Every catalog model."""
    return [load_model(n) for n in names("models")]


def all_clusters() -> list[ClusterSpec]:
    """Every catalog cluster."""
    return [load_cluster(n) for n in names("clusters")]
