"""The catalogs of models and clusters: YAML files shipped with the package, found by name or alias.

`load_model` and `load_cluster` also take a path to a YAML file; `load_model` takes a path to a
HuggingFace config.json as well.
"""

from __future__ import annotations

import json
import re
import typing
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from planner import specs
from planner.errors import SpecError, UnknownNameError
from planner.specs import ClusterSpec, ModelSpec, Plan

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


_BOUNDS = {"less_than_equal": ("le", "at most"), "less_than": ("lt", "below"),
           "greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "above")}
"""pydantic's error types of numeric bounds -> (its context key, the words of the message)."""


def _number(x: Any) -> str:
    """A limit for a message: whole numbers with thousands separators (10,000,000), others as %g."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
        x = int(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _given(value: Any) -> str | None:
    """The value a user gave, shown short; None for containers (a whole mapping, a nested list)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # beyond Python's 4300-digit conversion limit
            return f"a {value.bit_length() * 3 // 10}-digit number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        try:
            float(value)
            return text  # a number YAML read as text, e.g. 1e30: shown as written
        except ValueError:
            return repr(text)
    return None


def _unit(schema: type[BaseModel] | None, loc: tuple) -> str:
    """The unit of the field at `loc` of `schema`, from the '[unit]' of its description ('' if none)."""
    field = None
    for key in loc:
        if schema is None or not isinstance(key, str) or key not in schema.model_fields:
            break
        field = schema.model_fields[key]
        schema = _model_in(field.annotation)
    found = re.findall(r"\[([^\[\]]+)\]", (field.description or "") if field else "")
    unit = found[-1].split(" = ")[0].strip() if found else ""
    return unit if re.fullmatch(r"[\w/]+", unit) else ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (itself, or inside Optional/list/dict), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def validation_message(e: ValidationError) -> str:
    """One line from a pydantic error: the first failing field, the rule it breaks and the value given.

    E.g. "field 'isl': must be at most 10,000,000 tokens, got 99999999999999999999".
    """
    err = e.errors()[0]
    loc = tuple(err["loc"])
    where = ".".join(str(x) for x in loc)
    kind = err["type"]
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        limit = err["ctx"][key]
        if isinstance(limit, int) and isinstance(err.get("input"), int) and key in ("gt", "lt"):
            key, limit = ("ge", limit + 1) if key == "gt" else ("le", limit - 1)  # whole numbers: >= 1, not > 0
            words = "at least" if key == "ge" else "at most"
        schema = getattr(specs, e.title, None)
        unit = _unit(schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None, loc)
        msg = f"must be {words} {_number(limit)}{' ' + unit if unit else ''}"
    elif kind == "finite_number":
        msg = "must be a finite number"
    given = None if kind in ("value_error", "assertion_error", "missing") else _given(err.get("input"))
    if given is not None:
        msg += f", got {given}"
    extra = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    line = f"field '{where}': {msg}{extra}" if where else f"{msg}{extra}"
    return " ".join(line.split())  # one line, whatever a message holds


def _too_deep(path: Path, where: str = "", limit: str = "past Python's recursion limit") -> SpecError:
    return SpecError(
        f"{path}: nesting too deep{where} ({limit}); a model, cluster or calibration file needs a few levels"
    )


MAX_FLOW_DEPTH = 100
"""Deepest nesting of YAML flow collections ([...], {...}) read [levels]; files here need 3."""


class _DeepFlow(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__(f" at line {mark.line + 1}, column {mark.column + 1}")


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader refusing flow collections nested past MAX_FLOW_DEPTH as it scans them.

    PyYAML's scanner looks up to 1024 characters ahead for every '[' or '{' (each may start a key),
    so a line of thousands of brackets takes seconds before the composer's recursion gives up;
    stopping at the bracket is immediate. Deep block (indented) nesting ends in RecursionError.
    """

    def fetch_flow_collection_start(self, TokenClass) -> None:  # noqa: D102, N803 (PyYAML's names)
        if self.flow_level >= MAX_FLOW_DEPTH:
            raise _DeepFlow(self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


def _read_text(path: Path) -> str:
    """A text file's content, or SpecError naming the file and why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror or e})") from None


_SHIPPED_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader, ten times faster, for the files shipped with the package (catalogs, calibration)."""


def parse_yaml(path: Path, schema: type[T], shipped: bool = False) -> T:
    """Read and validate one YAML file, raising SpecError naming the file, field and reason. `shipped`: a
    file of the package itself, read with libyaml; others go through the guarded loader."""
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_SHIPPED_LOADER if shipped else _Loader)  # noqa: S506 (safe loaders)
    except _DeepFlow as e:
        raise _too_deep(path, str(e), f"more than {MAX_FLOW_DEPTH} levels of [ ] or {{ }}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise SpecError(f"{path}: malformed YAML{at}: {problem}") from None
    except RecursionError:
        raise _too_deep(path) from None
    except ValueError as e:  # e.g. an integer beyond Python's 4300-digit conversion limit
        raise SpecError(f"{path}: unreadable value in YAML: {' '.join(str(e).split())}") from None
    return _validate(path, data, schema)


def parse_json(path: Path, schema: type[T]) -> T:
    """Read and validate one JSON file, raising SpecError naming the file, field and reason."""
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise _too_deep(path) from None
    except ValueError as e:  # e.g. an integer beyond Python's 4300-digit conversion limit
        raise SpecError(f"{path}: unreadable value in JSON: {' '.join(str(e).split())}") from None
    return _validate(path, data, schema)


def _validate(path: Path, data: Any, schema: type[T]) -> T:
    """The parsed content of `path` as a `schema`; SpecError naming the file, field, rule and value."""
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of {schema.__name__} fields, got {type(data).__name__}")
    if "name" in schema.model_fields:
        data.setdefault("name", path.stem)
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise SpecError(f"{path}: {validation_message(e)}") from None
    except RecursionError:
        raise _too_deep(path) from None


@cache
def _entries(kind: str) -> dict[str, Path]:
    """Every name and alias (normalised) -> its YAML file."""
    out: dict[str, Path] = {}
    for f in sorted(_catalog_dir(kind).glob("*.yaml")):
        out[_norm(f.stem)] = f
        data = yaml.load(f.read_text(encoding="utf-8"), Loader=_SHIPPED_LOADER) or {}  # noqa: S506 (safe)
        for alias in data.get("aliases", []) or []:
            out[_norm(str(alias))] = f
    return out


def names(kind: str) -> list[str]:
    """Catalog names (file stems) of 'models' or 'clusters'."""
    return sorted(f.stem for f in _catalog_dir(kind).glob("*.yaml"))


@cache
def _load(kind: str, path: Path) -> BaseModel:
    return parse_yaml(path, ModelSpec if kind == "models" else ClusterSpec, shipped=True)


def _lookup(kind: str, name: str) -> BaseModel:
    entries = _entries(kind)
    key = _norm(name)
    if key in entries:
        return _load(kind, entries[key])
    # HuggingFace ids: also try the last path component ("org/Model" -> "model")
    tail = _norm(name.rsplit("/", 1)[-1])
    if tail in entries:
        return _load(kind, entries[tail])
    import difflib  # only to suggest a name

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
            return parse_json(path, ClusterSpec)
        return parse_yaml(path, ClusterSpec)
    return _lookup("clusters", ref_s)  # type: ignore[return-value]


def all_models() -> list[ModelSpec]:
    """Every catalog model."""
    return [load_model(n) for n in names("models")]


def all_clusters() -> list[ClusterSpec]:
    """Every catalog cluster."""
    return [load_cluster(n) for n in names("clusters")]


def load_plans(source: str | Path) -> list[Plan]:
    """The plans of a JSON file (`planner solve --json`: one plan, or a list with --top) or of stdin ('-'),
    best first; SpecError naming the file and what is wrong with it (`planner export`, `planner simulate`)."""
    import sys

    name = "stdin" if str(source) == "-" else str(source)
    try:
        text = sys.stdin.read() if str(source) == "-" else Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{name}: a folder, not a plan file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{name}: cannot read it ({e.__class__.__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{name}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except (RecursionError, ValueError):
        raise SpecError(f"{name}: unreadable JSON") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(d, dict) for d in items):
        raise SpecError(f"{name}: not a plan (expected the JSON object or list `planner solve --json` prints)")
    try:
        return [Plan.model_validate(d) for d in items]
    except ValidationError as e:
        raise SpecError(f"{name}: not a plan: {validation_message(e)}") from None
    except RecursionError:
        raise SpecError(f"{name}: nested too deeply to be a plan") from None
