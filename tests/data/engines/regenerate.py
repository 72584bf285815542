"""Regenerate the engines' argument lists and schemas that tests/test_export.py checks `planner export` against.

    python tests/data/engines/regenerate.py [--wheels DIR]

Downloads each engine's published wheel from PyPI (`pip download --no-deps NAME==VERSION -d DIR`, skipped when
the wheel is already in DIR) and reads its source files straight from the zip, statically (`ast`): no engine
is imported, so neither torch nor CUDA is needed. Writes, beside this file:

- vllm-0.33.0.json: every option `vllm serve` defines (vllm/engine/arg_utils.py EngineArgs.add_cli_args and
  AsyncEngineArgs.add_cli_args, vllm/entrypoints/common/cli_args.py make_arg_parser and the FrontendArgs
  dataclasses), the choices of the options whose values export maps (--kv-cache-dtype, --quantization, ...) and
  the keys of the JSON options it emits (--speculative-config: SpeculativeConfig, --kv-transfer-config:
  KVTransferConfig, with the registered connector names).
- sglang-0.5.23.json: every option `python -m sglang.launch_server` defines (the `A[T, Arg(...)]` fields of the
  namespaces sglang/srt/server_args.py _INPUT_NAMESPACES lists, from sglang/srt/arg_groups/fields/*.py, with
  their aliases and cli_name, minus no_cli ones, plus the options ServerArgs.add_cli_args registers by hand) and
  the choices of the options export maps.
- dynamo-1.6.1.json: the DynamoGraphDeployment schema as Dynamo's own profiler models it
  (dynamo/profiler/utils/config.py: Config, Metadata, Spec, Component, PodTemplate, PodSpec, MultinodeConfig,
  Container), as JSON Schema; the component types Dynamo's planner knows; and the options of the workers a DGD
  runs (python -m dynamo.vllm / dynamo.sglang / dynamo.trtllm: Dynamo's own groups plus the engine's); and the
  DGD templates Dynamo's profiler ships (dynamo/profiler/templates/dgd/*/*.yaml), which the schema must accept.
- trtllm-1.2.1.json: the keys of TensorRT-LLM's extra LLM-API options YAML. TensorRT-LLM's wheel is not on
  PyPI (only a 10 kB placeholder sdist that downloads it from NVIDIA's own index, which this project cannot
  reach), so its LlmArgs model (tensorrt_llm/llmapi/llm_args.py) and trtllm-serve's options
  (tensorrt_llm/commands/serve.py) cannot be read here. The keys come instead from NVIDIA's aiconfigurator
  0.12.0 (Apache-2.0), the configuration generator Dynamo documents, which ships a template of that YAML per
  TensorRT-LLM version: the one its own version resolution picks for 1.2.1
  (extra_engine_args.1.2.0rc6.post2.yaml.j2), and the LlmArgs keys Dynamo 1.6.1's TRT-LLM worker sets
  (dynamo/trtllm/workers/llm_worker.py). tests/data/engines/README.md says what that leaves unchecked.

Each file records the package, its version and licence, the sha256 of the wheel and of every file read.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

PACKAGES = {
    "vllm": ("vllm", "0.33.0", "Apache-2.0"),
    "sglang": ("sglang", "0.5.23", "Apache-2.0"),
    "dynamo": ("ai-dynamo", "1.6.1", "Apache-2.0"),
    "aiconfigurator": ("aiconfigurator", "0.12.0", "Apache-2.0"),
}


class Wheel:
    """A downloaded wheel whose files are read (and hashed) on demand."""

    def __init__(self, key: str, folder: Path) -> None:
        self.name, self.version, self.licence = PACKAGES[key]
        stem = self.name.replace("-", "_")
        found = sorted(folder.glob(f"{stem}-{self.version}-*.whl"))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"{self.name}=={self.version}",
                            "-d", str(folder)], check=True)
            found = sorted(folder.glob(f"{stem}-{self.version}-*.whl"))
        self.path = found[0]
        self.zip = zipfile.ZipFile(self.path)
        self.read_files: dict[str, str] = {}

    def text(self, name: str) -> str:
        data = self.zip.read(name)
        self.read_files[name] = hashlib.sha256(data).hexdigest()
        return data.decode("utf-8")

    def tree(self, name: str) -> ast.Module:
        return ast.parse(self.text(name))

    def glob(self, pattern: str) -> list[str]:
        return sorted(n for n in self.zip.namelist() if re.fullmatch(pattern, n))

    def record(self) -> dict[str, Any]:
        return {"package": self.name, "version": self.version, "licence": self.licence, "wheel": self.path.name,
                "wheel_sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(),
                "files_sha256": dict(sorted(self.read_files.items()))}


# --- static helpers --------------------------------------------------------------------------------


def _str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def add_argument_flags(tree: ast.AST, within: set[str] | None = None) -> set[str]:
    """Option strings ('--x') of every add_argument(...) call (in functions named `within`, if given), positional
    or as a flag_name=/obsolete_flag= keyword (Dynamo's add_argument helper)."""
    out: set[str] = set()
    scopes = [tree] if within is None else [n for n in ast.walk(tree)
                                            if isinstance(n, ast.FunctionDef) and n.name in within]
    for scope in scopes:
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if fn not in ("add_argument", "add_negatable_bool_argument"):
                continue
            for arg in node.args:
                s = _str(arg)
                if s and s.startswith("--"):
                    out.add(s)
            for kw in node.keywords:
                s = _str(kw.value)
                if kw.arg in ("flag_name",) and s and s.startswith("--"):
                    out.add(s)
                    if fn == "add_negatable_bool_argument":
                        out.add("--no-" + s[2:])
    return out


def class_def(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def dataclass_fields(tree: ast.Module, name: str) -> list[str]:
    """Annotated field names of a class body (a dataclass or pydantic model), its in-module bases' first."""
    cls = class_def(tree, name)
    out: list[str] = []
    for base in cls.bases:
        if isinstance(base, ast.Name) and any(isinstance(n, ast.ClassDef) and n.name == base.id for n in tree.body):
            out += dataclass_fields(tree, base.id)
    out += [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    return out


def literal_values(tree: ast.Module, node: ast.AST) -> list[str]:
    """The strings of a Literal[...] (nested Literals and module-level aliases of them resolved)."""
    if isinstance(node, ast.Name):
        for n in tree.body:
            target = n.targets[0] if isinstance(n, ast.Assign) else getattr(n, "target", None)
            if isinstance(target, ast.Name) and target.id == node.id and getattr(n, "value", None) is not None:
                return literal_values(tree, n.value)
        return []
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "Literal":
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        out: list[str] = []
        for e in elts:
            out += [e.value] if _str(e) is not None else literal_values(tree, e)
        return out
    if isinstance(node, ast.BinOp):  # X | None
        return literal_values(tree, node.left) + literal_values(tree, node.right)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [e.value for e in node.elts if _str(e) is not None]
    return []


def module_list(tree: ast.Module, name: str) -> list[str]:
    for n in tree.body:
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == name for t in n.targets):
            return literal_values(tree, n.value)
    raise KeyError(name)


# --- vLLM ------------------------------------------------------------------------------------------


def vllm(folder: Path) -> dict[str, Any]:
    w = Wheel("vllm", folder)
    args = w.tree("vllm/engine/arg_utils.py")
    flags = add_argument_flags(args, {"add_cli_args"})
    cli = w.tree("vllm/entrypoints/common/cli_args.py")
    flags |= add_argument_flags(cli, {"make_arg_parser"})
    flags |= {"--" + f.replace("_", "-") for f in dataclass_fields(cli, "FrontendArgs")}
    cache = w.tree("vllm/config/cache.py")
    quant = w.tree("vllm/model_executor/layers/quantization/__init__.py")
    spec = w.tree("vllm/config/speculative.py")
    kvt = w.tree("vllm/config/kv_transfer.py")
    spec_cls = class_def(spec, "SpeculativeConfig")
    method = next(n.annotation for n in spec_cls.body if isinstance(n, ast.AnnAssign) and n.target.id == "method")
    kv_cls = class_def(kvt, "KVTransferConfig")
    role = next(n.annotation for n in kv_cls.body if isinstance(n, ast.AnnAssign) and n.target.id == "kv_role")
    factory = w.text("vllm/distributed/kv_transfer/kv_connector/factory.py")
    connectors = sorted(set(re.findall(r'register_connector\(\s*"(\w+)"', factory)))
    return {**w.record(), "command": "vllm serve MODEL", "flags": sorted(flags), "choices": {
        "--kv-cache-dtype": module_list(cache, "CacheDType"),
        "--quantization": module_list(quant, "QuantizationMethods"),
        "--distributed-executor-backend": ["mp", "ray", "uni", "external_launcher"],
    }, "json_keys": {
        "--speculative-config": dataclass_fields(spec, "SpeculativeConfig"),
        "--kv-transfer-config": dataclass_fields(kvt, "KVTransferConfig"),
    }, "json_choices": {
        "--speculative-config.method": sorted(set(literal_values(spec, method))),
        "--kv-transfer-config.kv_role": sorted(set(literal_values(kvt, role))),
        "--kv-transfer-config.kv_connector": connectors,
    }}


# --- SGLang ----------------------------------------------------------------------------------------


def _sglang_arg(node: ast.AST) -> dict[str, Any] | None:
    """CLI metadata of an `A[T, "help"]` / `A[T, Arg(...)]` annotation; None when it has none (Derived etc.)."""
    if not (isinstance(node, ast.Subscript) and getattr(node.value, "id", "") in ("A", "Annotated")):
        return None
    elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    meta: dict[str, Any] = {"type": elts[0]}
    for e in elts[1:]:
        if _str(e) is not None or isinstance(e, ast.JoinedStr | ast.BinOp):
            return meta
        if isinstance(e, ast.Call) and getattr(e.func, "id", "") == "Arg":
            for kw in e.keywords:
                meta[kw.arg] = kw.value
            return meta
    return None


def sglang(folder: Path) -> dict[str, Any]:
    w = Wheel("sglang", folder)
    server = w.tree("sglang/srt/server_args.py")
    namespaces = next(literal for n in server.body if isinstance(n, ast.Assign)
                      and getattr(n.targets[0], "id", "") == "_INPUT_NAMESPACES"
                      for literal in [[e.id for e in n.value.elts]])
    choices_tree = w.tree("sglang/srt/arg_groups/choices.py")
    flags: set[str] = set()
    choices: dict[str, list[str]] = {}
    found: set[str] = set()
    for name in w.glob(r"sglang/srt/arg_groups/fields/\w+\.py"):
        tree = w.tree(name)
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in namespaces):
            found.add(cls.name)
            for node in cls.body:
                if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                    continue
                meta = _sglang_arg(node.annotation)
                if meta is None or (isinstance(meta.get("no_cli"), ast.Constant) and meta["no_cli"].value):
                    continue
                cli = _str(meta["cli_name"]) if "cli_name" in meta else None
                names = [cli or "--" + node.target.id.replace("_", "-")]
                if "aliases" in meta:
                    names += [e.value for e in meta["aliases"].elts]
                flags |= set(names)
                values: list[str] = []
                if "choices" in meta:
                    c = meta["choices"]
                    values = module_list(choices_tree, c.id) if isinstance(c, ast.Name) else literal_values(tree, c)
                else:
                    values = literal_values(tree, meta["type"])
                if values:
                    for n in names:
                        choices[n] = values
                action = meta.get("action")
                if isinstance(action, ast.Attribute) and action.attr == "BooleanOptionalAction":
                    flags |= {"--no-" + n[2:] for n in names}
    missing = set(namespaces) - found
    if missing:
        raise SystemExit(f"sglang: namespaces not found in arg_groups/fields: {sorted(missing)}")
    flags |= add_argument_flags(server, {"add_cli_args"})
    spec_info = w.text("sglang/srt/speculative/spec_info.py")
    enum = re.search(r"class SpeculativeAlgorithm\(Enum\):(.*?)\n    @", spec_info, re.S).group(1)
    registry = w.text("sglang/srt/speculative/spec_registry.py")
    aliases = re.search(r"_RESERVED_ALIASES = frozenset\(\{([^}]*)\}\)", registry).group(1)
    algorithms = re.findall(r"^\s+([A-Z0-9_]+) = auto\(\)", enum, re.M) + re.findall(r'"(\w+)"', aliases)
    choices["--speculative-algorithm"] = sorted(a for a in algorithms if a != "NONE")
    wanted = ("--kv-cache-dtype", "--quantization", "--disaggregation-mode", "--disaggregation-transfer-backend",
              "--speculative-algorithm", "--moe-a2a-backend", "--load-balance-method")
    return {**w.record(), "command": "python -m sglang.launch_server", "flags": sorted(flags),
            "choices": {k: choices[k] for k in wanted}}


# --- Dynamo ----------------------------------------------------------------------------------------

DGD_CLASSES = ("DgdModel", "Container", "PodSpec", "PodTemplate", "MultinodeConfig", "Component", "Spec", "Metadata",
               "Config")
OPEN_CLASSES = ("Container",)
"""Kubernetes' core/v1 Container: Dynamo's model lists the fields its profiler touches, the CRD embeds the whole
Container schema (envFrom, ports, ...), so its other keys stay allowed."""


def dgd_schema(source: str) -> dict[str, Any]:
    """JSON Schema of Dynamo's DGD pydantic models: their class definitions taken from the source and built with
    pydantic (nothing of Dynamo imported); closed (no other keys) at every level but the Container."""
    from typing import Any as _Any
    from typing import Optional

    from pydantic import BaseModel, ConfigDict, Field

    tree = ast.parse(source)
    body = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in DGD_CLASSES]
    for cls in body:
        if cls.name == "DgdModel":  # drop the model_dump override; keep the aliases
            cls.body = [n for n in cls.body if not isinstance(n, ast.FunctionDef)]
    ns: dict[str, Any] = {"BaseModel": BaseModel, "Field": Field, "Optional": Optional, "Any": _Any,
                          "ConfigDict": ConfigDict, "__name__": "dgd"}
    exec(compile(ast.Module(body=[ast.parse("from __future__ import annotations").body[0], *body], type_ignores=[]),
                 "dynamo/profiler/utils/config.py", "exec"), ns)
    for name in DGD_CLASSES[1:]:
        ns[name].model_rebuild(_types_namespace=ns)
    schema = ns["Config"].model_json_schema(by_alias=True, mode="validation")
    for name, sub in schema.get("$defs", {}).items():
        sub["additionalProperties"] = name in OPEN_CLASSES
    schema["additionalProperties"] = False
    return schema


def dynamo(folder: Path, vllm_flags: list[str], sglang_flags: list[str]) -> dict[str, Any]:
    w = Wheel("dynamo", folder)
    schema = dgd_schema(w.text("dynamo/profiler/utils/config.py"))
    config = w.tree("dynamo/profiler/utils/config.py")
    defaults = next(n for n in class_def(config, "Config").body if isinstance(n, ast.AnnAssign)
                    and n.target.id == "apiVersion").value.value
    services = w.text("dynamo/planner/monitoring/dgd_services.py")
    types = set(re.findall(r'"(\w+)"', re.search(r"V1BETA1_COMPONENT_TYPES = \{([^}]*)\}", services).group(1)))
    types |= set(re.findall(r'V1BETA1_GENERIC_WORKER_COMPONENT_TYPE = "(\w+)"', services))
    types |= {"frontend", "planner"}  # the Frontend and Planner components of the templates and of config.py
    import yaml

    templates = {name: yaml.safe_load(w.text(name)) for name in w.glob(r"dynamo/profiler/templates/dgd/\w+/\w+\.yaml")}
    common = add_argument_flags(w.tree("dynamo/common/configuration/groups/runtime_args.py"))
    workers = {}
    for backend, engine_flags in (("vllm", vllm_flags), ("sglang", sglang_flags), ("trtllm", [])):
        own = add_argument_flags(w.tree(f"dynamo/{backend}/backend_args.py"))
        workers[f"python3 -m dynamo.{backend}"] = sorted(common | own | set(engine_flags))
    schema["properties"]["apiVersion"]["const"] = defaults
    schema["properties"]["kind"]["const"] = "DynamoGraphDeployment"
    schema["$defs"]["Component"]["properties"]["type"]["enum"] = sorted(types)
    return {**w.record(), "schema": schema, "component_types": sorted(types), "worker_flags": workers,
            "templates": templates}


# --- TensorRT-LLM (via aiconfigurator and Dynamo) ----------------------------------------------------


def template_keys(text: str) -> dict[str, Any]:
    """The key tree of a YAML Jinja template: every `key:` at the start of a line, nested by indentation."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for line in text.splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):", line)
        if not m or line.lstrip().startswith("{%"):
            continue
        indent = len(m.group(1))
        while stack[-1][0] >= indent:
            stack.pop()
        node = stack[-1][1].setdefault(m.group(2), {})
        stack.append((indent, node))
    return root


def trtllm(folder: Path) -> dict[str, Any]:
    a = Wheel("aiconfigurator", folder)
    base = "aiconfigurator/generator/config/backend_templates/trtllm/"
    template = "extra_engine_args.1.2.0rc6.post2.yaml.j2"
    keys = template_keys(a.text(base + template))
    d = Wheel("dynamo", folder)
    worker = d.tree("dynamo/trtllm/workers/llm_worker.py")
    set_by_dynamo = sorted({k.value for node in ast.walk(worker) if isinstance(node, ast.Dict)
                            for k in node.keys if _str(k) and re.fullmatch(r"[a-z_]+", k.value)
                            and k.value.endswith(("_size", "_attention_dp", "_tokens", "_len", "backend"))})
    for k in set_by_dynamo:
        keys.setdefault(k, {})
    return {"package": "tensorrt-llm", "version": "1.2.1", "licence": "Apache-2.0",
            "unavailable": "tensorrt-llm 1.2.1 is a placeholder sdist on PyPI (its wheel is on NVIDIA's index only); "
                           "its LlmArgs and trtllm-serve options were not read",
            "sources": [{**a.record(), "template": base + template},
                        {**d.record(), "keys_set": set_by_dynamo}],
            "keys": keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, default=Path("/tmp/wheels"), help="Where the wheels are downloaded")
    ns = parser.parse_args()
    ns.wheels.mkdir(parents=True, exist_ok=True)
    v, s = vllm(ns.wheels), sglang(ns.wheels)
    out = {f"vllm-{v['version']}.json": v, f"sglang-{s['version']}.json": s}
    dyn = dynamo(ns.wheels, v["flags"], s["flags"])
    out[f"dynamo-{dyn['version']}.json"] = dyn
    t = trtllm(ns.wheels)
    out[f"trtllm-{t['version']}.json"] = t
    for name, data in out.items():
        (HERE / name).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
