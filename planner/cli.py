"""The `planner` command: a thin click layer over the library (planner.search, planner.catalog).

Each command parses options, calls one library function and renders the result as a table or
JSON. Errors end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from planner import catalog, search
from planner.calibrate import MIN_ANCHOR_ROWS
from planner.errors import PlannerError
from planner.specs import Parallel, Plan, Precision, Problem

PRECISIONS = [p.value for p in Precision]
CHUNKS_HELP = "Chunk sizes to consider: 256,512 or 128:8192:128 [default: 128..8192]."
MICRO_BATCHES_HELP = ("Decode requests per attention-DP rank to consider: 8,16,32 or 1:512:1 "
                      "[default: 25 values, 1..512, steps of at most a third].")


# --- parsing -------------------------------------------------------------------------------------


def parse_sla(text: str) -> float:
    """'20tok/s', '20 tokens/s', '20' -> 20 tokens/s/user; '50ms' (per token) -> 20 [tokens/s]."""
    t = text.strip().lower().replace(" ", "")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)(tok/s|tokens/s|tps|tok/s/user|ms|s)?", t)
    if not m:
        raise click.BadParameter(f"'{text}' is not a speed: use e.g. 20tok/s, 20, or 50ms (time per token)")
    value, unit = float(m.group(1)), m.group(2) or "tok/s"
    if value <= 0:
        raise click.BadParameter(f"'{text}' must be positive")
    if unit == "ms":
        return 1000.0 / value
    if unit == "s":
        return 1.0 / value
    return value


def parse_duration(text: str) -> float:
    """'5s', '500ms', '5' -> seconds [s]."""
    t = text.strip().lower().replace(" ", "")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)(ms|s)?", t)
    if not m:
        raise click.BadParameter(f"'{text}' is not a duration: use e.g. 5s or 500ms")
    value = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    if value <= 0:
        raise click.BadParameter(f"'{text}' must be positive")
    return value


def _callback(parse: Callable) -> Callable:
    """A click callback applying `parse` to a given value (None passes through)."""

    def cb(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        return None if value is None else parse(value)

    return cb


def parse_int_list(text: str) -> tuple[int, ...]:
    """'128,256,512' or '128:8192:128' (start:stop:step, inclusive) -> a tuple of positive ints."""
    try:
        if ":" in text:
            start, stop, step = (int(x) for x in text.split(":"))
            values = tuple(range(start, stop + 1, step))
        else:
            values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a list: use e.g. 256,512,1024 or 128:8192:128") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"'{text}' must list positive whole numbers")
    return values


# --- one-line errors -------------------------------------------------------------------------------


class OneLineErrors(click.Group):
    """A group whose every error is one line on stderr with exit code 2."""

    def main(self, args: Any = None, prog_name: str | None = None, **kwargs: Any) -> Any:  # noqa: D102
        try:
            return super().main(args=args, prog_name=prog_name, standalone_mode=False, **kwargs)
        except click.exceptions.Abort:
            click.echo("planner: aborted", err=True)
            sys.exit(1)
        except click.ClickException as e:
            msg = e.format_message().replace("\n", " ")
            ctx_cmd = getattr(getattr(e, "ctx", None), "command_path", "planner")
            click.echo(f"{ctx_cmd}: error: {msg}", err=True)
            sys.exit(2)
        except PlannerError as e:
            click.echo(f"planner: error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("planner: interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # a bug: still one line, never a traceback
            click.echo(f"planner: internal error (please report): {type(e).__name__}: {e}", err=True)
            sys.exit(1)


CASE_OPTIONS = ("model", "cluster", "gpus", "precision")
"""Options `compare` takes repeatedly (one case per value)."""


def _problem_options(f: Callable | None = None, *, repeatable: bool = False) -> Callable:
    """The options every planning command shares, with the study's defaults. With `repeatable`,
    --model/--cluster/--gpus/--precision may be given several times (compare's cases)."""

    def case(name: str, *decls: str, default: Any, **kw: Any) -> Callable:
        if repeatable:
            return click.option(*decls, multiple=True, default=[default], show_default=True, **kw)
        return click.option(*decls, default=default, show_default=True, **kw)

    options = [
        case("model", "--model", default=search.DEFAULT_MODEL,
             help="Catalog name, HuggingFace id, or path to a YAML file or config.json."),
        case("cluster", "--cluster", default=search.DEFAULT_CLUSTER,
             help="Catalog name, alias (e.g. h100_sxm) or path to a YAML file."),
        case("gpus", "--gpus", type=click.IntRange(min=1), default=search.DEFAULT_GPUS, help="GPUs given."),
        click.option("--isl", type=click.IntRange(min=1), default=search.DEFAULT_ISL, show_default=True,
                     help="Input tokens per request."),
        click.option("--osl", type=click.IntRange(min=1), default=search.DEFAULT_OSL, show_default=True,
                     help="Output tokens per request."),
        case("precision", "--precision", type=click.Choice(PRECISIONS), default=search.DEFAULT_PRECISION.value,
             help="Weight and GEMM format."),
        click.option("--kv-precision", type=click.Choice(["fp8", "bf16"]), default=None,
                     help="KV-cache format [default: fp8 where the GPU has FP8 and weights are not bf16, else bf16]."),
        click.option("--backend", default="*", show_default=True,
                     help="Serving engine whose calibration profile applies: trtllm, vllm, sglang or *."),
        click.option("--calibration", "calibration", default=None,
                     help="Calibration YAML (from `planner calibrate`) [default: the shipped one]."),
        click.option("--memory-utilization", type=click.FloatRange(0.3, 1.0, min_open=True), default=None,
                     help="Fraction of HBM the engine may use [default: the calibration's, 0.9]."),
        click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout."),
    ]

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate(f) if f is not None else decorate


def _problem(kw: dict, sla: float | None = None, ttft: float | None = None, gpus: int | None = None):
    return search.make_problem(
        model=kw["model"], cluster=kw["cluster"], gpus=gpus or kw["gpus"], isl=kw["isl"], osl=kw["osl"],
        precision=kw["precision"], kv_precision=kw["kv_precision"],
        min_tokens_per_s_per_user=sla, max_ttft_s=ttft, calibration=kw["calibration"], backend=kw["backend"],
        memory_utilization=kw["memory_utilization"],
    )


# --- rendering -------------------------------------------------------------------------------------


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(x) for x in row)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _fmt_time(ms: float) -> str:
    if ms != ms or ms == float("inf"):
        return "inf"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def _plan_rows(plans: list[Plan]) -> list[list[str]]:
    return [
        [str(i), p.label, str(p.batch.concurrency), str(p.batch.chunk_tokens),
         f"{p.metrics.tokens_per_s_per_user:.1f}", f"{p.metrics.tokens_per_s_per_gpu:.1f}",
         _fmt_time(p.metrics.ttft_ms),
         f"{p.memory.per_gpu_bytes / 1e9:.1f}/{p.memory.capacity_bytes / 1e9:.1f} GB"]
        for i, p in enumerate(plans, 1)
    ]


PLAN_HEADERS = ["#", "layout", "concurrency", "chunk", "tok/s/user", "tok/s/GPU", "TTFT", "memory/GPU"]


def _describe(p: Plan) -> str:
    kv = p.kv_precision.value
    weight_only = p.gemm_math == "bf16" and p.precision != Precision.bf16
    math = "" if p.gemm_math == p.precision.value else f" ({p.gemm_math} math{', weight-only' if weight_only else ''})"
    return (f"{p.model} on {p.gpus} x {p.cluster}, {p.precision.value} weights{math} / {kv} KV cache, "
            f"isl {p.isl} / osl {p.osl} tokens")


def _layout_line(p: Plan) -> str:
    q = p.parallel
    return (f"layout: tp={q.tp} attention_dp={q.attention_dp} pp={q.pp} ep={q.ep} moe_tp={q.moe_tp} dp={q.dp} "
            f"({p.gpus_used} of {p.gpus} GPUs); {p.batch.micro_batch} requests per attention-DP rank per "
            f"micro-batch; TPOT {p.metrics.tpot_ms:.1f} ms")


def _echo_notes(p: Plan) -> None:
    for note in p.notes:
        click.echo(f"approximated: {note}")


def _memory_line(p: Plan) -> str:
    m = p.memory
    gb = 1e9
    return (f"memory/GPU: weights {m.weights_bytes / gb:.1f} + KV {m.kv_cache_bytes / gb:.1f} + activations "
            f"{m.activation_bytes / gb:.1f} + buffers {m.comm_buffer_bytes / gb:.1f} + reserved "
            f"{m.reserved_bytes / gb:.1f} = {m.per_gpu_bytes / gb:.1f} GB of {m.usable_bytes / gb:.1f} GB usable")


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


# --- commands --------------------------------------------------------------------------------------


def _echo_deployment_profile(problem: Problem) -> None:
    """Say so when the calibration holds a profile fitted to this very deployment (calibrate --anchor)."""
    for prof in problem.calibration.profiles:
        if (prof.model, prof.system, prof.backend) == (problem.model.name, problem.cluster.name, problem.backend):
            click.echo(f"calibration: {problem.calibration.name}, anchored to {prof.rows} measured runs of "
                       f"{prof.model} on {prof.system} with {prof.backend}")


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="planner")
def main() -> None:
    """Find the provably best way to deploy an LLM for inference on a GPU cluster."""


@main.command()
@_problem_options
@click.option("--sla", "sla", default="20tok/s", show_default=True, callback=_callback(parse_sla),
              help="Minimum tokens/s per user: 20tok/s, 20, or 50ms per token.")
@click.option("--ttft", default=None, callback=_callback(parse_duration),
              help="Maximum time to first token, e.g. 5s or 500ms.")
@click.option("--top", type=click.IntRange(min=1, max=50), default=1, show_default=True,
              help="The K best distinct layouts.")
@click.option("--method", type=click.Choice(["cpsat", "exhaustive"]), default="cpsat", show_default=True,
              help="CP-SAT model, or the exhaustive enumeration (the test oracle).")
@click.option("--chunks", default=None, callback=_callback(parse_int_list),
              help=CHUNKS_HELP)
@click.option("--micro-batches", default=None, callback=_callback(parse_int_list),
              help=MICRO_BATCHES_HELP)
@click.option("--time-limit", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="CP-SAT time limit [s]; a plan found by then is reported FEASIBLE with its gap.")
def solve(sla: float, ttft: float | None, top: int, method: str, chunks: tuple[int, ...] | None,
          micro_batches: tuple[int, ...] | None, time_limit: float, as_json: bool, **kw: Any) -> None:
    """Best plan (layout, batch, chunk) maximising tokens/s/GPU at a minimum tokens/s/user.

    With no options: GPT-MoE-1.8T on 64 GB200 NVL72 GPUs, 32768 input / 1024 output tokens, FP4.
    """
    from planner.solver import SolverParams

    problem = _problem(kw, sla, ttft)
    plans = search.solve(problem, method=method, top=top, chunks=chunks, micro_batches=micro_batches,
                         params=SolverParams(time_limit_s=time_limit))
    if as_json:
        _dump(plans[0].model_dump(mode="json") if top == 1 else [p.model_dump(mode="json") for p in plans])
        return
    best = plans[0]
    limit = f", TTFT <= {_fmt_time(problem.sla.max_ttft_s * 1000)}" if problem.sla.max_ttft_s else ""
    click.echo(f"{_describe(best)}; SLA >= {problem.sla.min_tokens_per_s_per_user:g} tokens/s/user{limit}")
    click.echo(render_table(PLAN_HEADERS, _plan_rows(plans)))
    click.echo(_layout_line(best))
    click.echo(_memory_line(best))
    _echo_notes(best)
    _echo_deployment_profile(problem)
    info = best.solver
    bound = f", bound {info.objective_bound:.1f} tok/s/GPU, gap {info.gap:.2%}" if info.objective_bound else ""
    click.echo(f"solver: {info.method} {info.status} in {info.wall_s:.2f} s{bound}; "
               f"{info.candidates:,} combinations in the space")
    if info.limited_by:
        click.echo(f"a larger batch of this layout would break: {', '.join(info.limited_by)}")


@main.command()
@_problem_options
@click.option("--tp", type=click.IntRange(min=1), default=1, show_default=True, help="Attention tensor parallel.")
@click.option("--attention-dp", type=click.IntRange(min=1), default=1, show_default=True,
              help="Attention data parallel inside a replica.")
@click.option("--pp", type=click.IntRange(min=1), default=1, show_default=True, help="Pipeline stages.")
@click.option("--ep", type=click.IntRange(min=1), default=1, show_default=True, help="Expert parallel.")
@click.option("--moe-tp", type=click.IntRange(min=1), default=None,
              help="Tensor split inside experts [default: tp * attention_dp / ep].")
@click.option("--dp", type=click.IntRange(min=1), default=1, show_default=True, help="Replicas.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Requests in flight per replica [default: attention_dp * pp].")
@click.option("--chunk", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Prefill chunk per iteration and attention-DP rank [tokens].")
@click.option("--csv", "csv_in", type=click.Path(dir_okay=False), default=None,
              help="Predict every row of a measured-run CSV (calibration.csv's columns) instead.")
@click.option("--out", "csv_out", type=click.Path(dir_okay=False), default=None,
              help="With --csv: write the rows with predictions here [default: stdout].")
def estimate(as_json: bool, tp: int, attention_dp: int, pp: int, ep: int, moe_tp: int | None, dp: int,
             concurrency: int | None, chunk: int, csv_in: str | None, csv_out: str | None, **kw: Any) -> None:
    """Evaluate one given plan with the cost model (no search), or predict the rows of a CSV.

    --gpus defaults here to the GPUs the plan uses (dp * tp * attention_dp * pp). With --csv, each
    row (model_path, system, backend, precision, isl, osl, batch_size, tp_size, ...) is a measured
    launch; the output adds pred_ttft_ms, pred_tpot_ms, pred_tokens_per_s_per_gpu and error.
    """
    if csv_in is not None:
        _estimate_csv(Path(csv_in), Path(csv_out) if csv_out else None, kw["calibration"])
        return
    if csv_out is not None:
        raise click.UsageError("--out goes with --csv")
    if moe_tp is None:
        if (tp * attention_dp) % ep:
            raise click.BadParameter(f"ep={ep} does not divide tp*attention_dp={tp * attention_dp}; give --moe-tp",
                                     param_hint="'--ep'")
        moe_tp = tp * attention_dp // ep
    par = Parallel(tp=tp, attention_dp=attention_dp, pp=pp, ep=ep, moe_tp=moe_tp, dp=dp)
    ctx = click.get_current_context()
    gpus_given = ctx.get_parameter_source("gpus") != click.core.ParameterSource.DEFAULT
    problem = _problem(kw, gpus=kw["gpus"] if gpus_given else par.gpus_used)
    plan = search.estimate(problem, parallel=par, concurrency=concurrency, chunk=chunk)
    if as_json:
        _dump(plan.model_dump(mode="json"))
        return
    click.echo(_describe(plan))
    click.echo(render_table(PLAN_HEADERS, _plan_rows([plan])))
    click.echo(_layout_line(plan))
    click.echo(_memory_line(plan))
    _echo_notes(plan)
    _echo_deployment_profile(problem)


def _estimate_csv(path: Path, out: Path | None, calibration: str | None) -> None:
    import time

    from planner.calibrate import load_calibration
    from planner.runs import predict_rows, read_rows, write_rows

    t0 = time.perf_counter()
    rows = predict_rows(read_rows(path), load_calibration(calibration))
    if out is None:
        write_rows(sys.stdout, rows)
    else:
        try:
            with open(out, "w", newline="", encoding="utf-8") as f:
                write_rows(f, rows)
        except OSError as e:
            raise click.ClickException(f"{out}: cannot write ({e.strerror or e})") from None
    failed = sum(1 for r in rows if r["error"])
    note = f"; {failed} with an error (see the error column)" if failed else ""
    click.echo(f"planner: predicted {len(rows) - failed} of {len(rows)} rows in {time.perf_counter() - t0:.2f} s"
               f"{note}", err=True)


@main.command()
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Where to write the fitted calibration (YAML).")
@click.option("--calibration", default=None, help="Starting calibration [default: the shipped one].")
@click.option("--name", default=None, help="Name recorded in the calibration [default: the data file's stem].")
@click.option("--anchor", is_flag=True,
              help="Keep the starting calibration and fit only a profile per (model, system, backend) "
                   f"deployment in DATA, from as few as {MIN_ANCHOR_ROWS} runs measured on it.")
def calibrate(data: str, output: str, calibration: str | None, name: str | None, anchor: bool) -> None:
    """Fit the efficiency factors to measured runs and print the error before and after.

    DATA is a CSV with calibration.csv's columns and the measured silicon_ttft_ms, silicon_tpot_ms.
    Base factors are fitted on all runs, then per-engine and per-system profiles where a group has
    enough runs. With --anchor, a few runs of your own deployment instead tune that deployment's
    profile on top of the starting calibration. Use the result with --calibration FILE on any command.
    """
    from planner.calibrate import (
        Dataset,
        deployments,
        error_table,
        fit,
        fit_anchors,
        load_calibration,
        predict,
        save_calibration,
    )
    from planner.runs import read_rows

    start = load_calibration(calibration)
    ds = Dataset.of(read_rows(Path(data)), start)
    if anchor and all(mask.sum() < MIN_ANCHOR_ROWS for mask in deployments(ds).values()):
        found = ", ".join(f"{m} on {s} with {b}" for m, s, b in deployments(ds))
        found = f"at most one run each of: {found}" if found else "no row has a usable measured TTFT/TPOT"
        raise click.UsageError(f"{data}: no (model, system, backend) deployment has {MIN_ANCHOR_ROWS} usable runs "
                               f"to anchor to ({found})")
    if not anchor and len(ds.runs) < 10:
        raise click.UsageError(f"{data}: only {len(ds.runs)} rows with measured TTFT/TPOT can be used; need 10; "
                               "to tune one deployment from a few runs, add --anchor")
    click.echo(f"{len(ds.runs)} runs to fit, {len(ds.errors)} rows left out (unparseable or no measurement)",
               err=True)
    start_pred = predict(ds, start)
    before = {(a, b): r for a, b, *r in error_table(ds, start_pred)}
    fitter = fit_anchors if anchor else fit
    cal = fitter(ds, start, name=name or Path(data).stem, source=f"planner calibrate {Path(data).name}"
                 + (f" --anchor, on top of {start.name}" if anchor else ""),
                 log=lambda msg: click.echo(f"  {msg}", err=True))
    after = {(a, b): r for a, b, *r in error_table(ds, predict(ds, cal))}
    rows = [[by, group, str(after[(by, group)][0])]
            + [f"{before[(by, group)][i]:.1%} -> {after[(by, group)][i]:.1%}" for i in (1, 2, 3)]
            for by, group in after]
    click.echo(render_table(["by", "group", "runs", "TPOT |err|", "TTFT |err|", "tok/s/GPU |err|"], rows))
    save_calibration(cal, output)
    click.echo(f"median absolute errors before -> after the fit, on the runs it was fitted to; calibration written "
               f"to {output}", err=True)
    if anchor:
        _echo_holdout(ds, start, start_pred)


def _pct(x: float) -> str:
    """A relative error to two significant figures: 4.1%, 19%."""
    return f"{x:.0%}" if x >= 0.095 else f"{x:.1%}"


def _echo_holdout(ds: Any, start: Any, start_pred: dict[str, Any]) -> None:
    """Per anchored deployment, the median error on runs the anchoring was not fitted to (calibrate.anchor_holdout)
    against the starting calibration's on the same runs."""
    from planner.calibrate import anchor_holdout, deployments, error_table, holdout_folds

    held = anchor_holdout(ds, start)
    for (model, system, backend), mask in deployments(ds).items():
        runs, name = int(mask.sum()), f"{model} on {system} with {backend}"
        if runs < MIN_ANCHOR_ROWS:
            continue  # not anchored (fit_anchors said so)
        if runs < MIN_ANCHOR_ROWS + 1:
            click.echo(f"held-out check, {name}: {runs} runs, too few to predict one from an anchoring to the "
                       f"others (needs {MIN_ANCHOR_ROWS + 1})")
            continue
        sub = ds.subset(mask)
        folds = int(holdout_folds(runs).max()) + 1
        how = (f"each predicted from the other {runs - 1}" if folds == runs
               else f"in {folds} folds, each predicted from the runs of the other folds")
        (*_, b_tpot, b_ttft, b_thr), (*_, a_tpot, a_ttft, a_thr) = (
            error_table(sub, {k: v[mask] for k, v in pred.items()})[0] for pred in (start_pred, held))
        click.echo(f"held-out check, {name} ({runs} runs, {how}): median |err| TPOT {_pct(b_tpot)} -> {_pct(a_tpot)}, "
                   f"TTFT {_pct(b_ttft)} -> {_pct(a_ttft)}, tok/s/GPU {_pct(b_thr)} -> {_pct(a_thr)} "
                   "(start -> anchored)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def models(as_json: bool) -> None:
    """The model catalog, with key figures."""
    specs = catalog.all_models()
    if as_json:
        _dump([m.model_dump(mode="json") for m in specs])
        return
    rows = [[m.name, str(m.num_layers), str(m.hidden_size), f"{m.num_attention_heads}/{m.num_kv_heads}"
             + (" MLA" if m.mla else ""),
             f"{m.num_experts}/top-{m.experts_per_token}" if m.is_moe else "dense",
             f"{m.total_params / 1e9:,.1f}B", f"{m.active_params / 1e9:,.1f}B",
             ", ".join(m.aliases[:2]) + (" ..." if len(m.aliases) > 2 else "")] for m in specs]
    click.echo(render_table(["name", "layers", "hidden", "heads q/kv", "experts", "params", "active", "aliases"],
                            rows))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def clusters(as_json: bool) -> None:
    """The cluster catalog, with key figures."""
    specs = catalog.all_clusters()
    if as_json:
        _dump([c.model_dump(mode="json") for c in specs])
        return

    def tf(c, k):
        return f"{c.tflops[k]:,.0f}" if k in c.tflops else "-"

    rows = [[c.name, c.gpu, f"{c.hbm_capacity_gb:.0f}", f"{c.hbm_bandwidth_tbps:g}", tf(c, "bf16"), tf(c, "fp8"),
             tf(c, "fp4"), str(c.scaleup_domain_gpus), f"{c.scaleup_bandwidth_gbps:g}",
             f"{c.scaleout_bandwidth_gbps:g}", ", ".join(c.aliases[:2])] for c in specs]
    click.echo(render_table(["name", "GPU", "HBM GB", "TB/s", "BF16 TF", "FP8 TF", "FP4 TF", "domain",
                             "up GB/s", "out GB/s", "aliases"], rows))


@main.command()
@click.option("--of", "of", type=click.Choice(["plan", "frontier", "compare", "size"]), default="plan",
              show_default=True, help="Whose JSON: solve/estimate (plan), frontier, compare or size.")
def schema(of: str) -> None:
    """JSON schema of what `--json` prints: the plan of solve/estimate, or a study's result."""
    from planner import studies

    model = {"plan": Plan, "frontier": studies.Frontier, "compare": studies.Comparison, "size": studies.Sizing}[of]
    _dump(model.model_json_schema())


# --- studies -------------------------------------------------------------------------------------


def parse_demand(text: str) -> tuple[float | None, float | None]:
    """'40req/s', '40 requests/s', '40rps' -> (40 requests/s, None); '50000tok/s' -> (None, 50000 tokens/s)."""
    t = text.strip().lower().replace(" ", "")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)(req/s|requests/s|rps|tok/s|tokens/s|tps)", t)
    if not m:
        raise click.BadParameter(f"'{text}' is not a demand: use e.g. 40req/s (requests) or 50000tok/s "
                                 "(output tokens)")
    value = float(m.group(1))
    if value <= 0:
        raise click.BadParameter(f"'{text}' must be positive")
    return (value, None) if m.group(2) in ("req/s", "requests/s", "rps") else (None, value)


def parse_range(text: str) -> tuple[float, float]:
    """'5:200' -> (5, 200) tokens/s/user; each end takes the --sla forms (20tok/s, 50ms)."""
    parts = text.split(":")
    if len(parts) != 2:
        raise click.BadParameter(f"'{text}' is not a range: use LOW:HIGH in tokens/s/user, e.g. 5:200")
    lo, hi = (parse_sla(x) for x in parts)
    if lo > hi:
        lo, hi = hi, lo  # '50ms:10ms' reads as speeds 20:100
    return lo, hi


class _Progress:
    """A one-line progress display on stderr; silent unless stderr is a terminal (or when quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.on = not quiet and sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.on:
            width = 24
            filled = width * done // max(total, 1)
            click.echo(f"\r[{'#' * filled}{'.' * (width - filled)}] {what[:60]:<60}", err=True, nl=False)
            self.shown = True

    def close(self) -> None:
        if self.shown:
            click.echo("\r" + " " * 90 + "\r", err=True, nl=False)


def _study_options(f: Callable) -> Callable:
    """Options of the commands that sweep SLA levels (frontier, compare)."""
    options = [
        click.option("--ttft", default=None, callback=_callback(parse_duration),
                     help="Maximum time to first token at every point, e.g. 5s."),
        click.option("--points", type=click.IntRange(min=1, max=500), default=40, show_default=True,
                     help="SLA levels, log-spaced from the lowest to the highest reachable tokens/s/user."),
        click.option("--sla-range", default=None, callback=_callback(parse_range),
                     help="Sweep these tokens/s/user instead, e.g. 5:200."),
        click.option("--chunks", default=None, callback=_callback(parse_int_list),
                     help=CHUNKS_HELP),
        click.option("--micro-batches", default=None, callback=_callback(parse_int_list),
                     help=MICRO_BATCHES_HELP),
        click.option("--method", type=click.Choice(["cpsat", "exhaustive"]), default="cpsat", show_default=True,
                     help="CP-SAT model, or the exhaustive enumeration (the test oracle)."),
        click.option("--time-limit", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
                     help="CP-SAT time limit per search [s]."),
        click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None,
                     help="Also write the points as CSV here."),
        click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
                     help="Also draw the chart here (.png, .svg or .pdf)."),
        click.option("--all-layouts", is_flag=True, help="Add each valid layout's own curve (and count them)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress display on stderr."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


FRONTIER_HEADERS = ["SLA", "", "layout", "concurrency", "chunk", "tok/s/user", "tok/s/GPU", "TTFT", "memory/GPU"]


def _frontier_table(f: Any) -> str:
    rows = []
    for pt in f.points:
        row = _plan_rows([pt])[0]
        rows.append([f"{pt.target_tokens_per_s_per_user:.1f}", "*" if pt.new_layout else ""] + row[1:])
    return render_table(FRONTIER_HEADERS, rows)


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    import csv

    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["case"])
            w.writeheader()
            w.writerows(rows)
    except OSError as e:
        raise click.ClickException(f"{path}: cannot write ({e.strerror or e})") from None


def _check_plot_path(path: str | None) -> None:
    """Refuse an unknown picture format before any search runs."""
    from planner.plots import FORMATS

    if path is not None and Path(path).suffix.lower() not in FORMATS:
        raise click.BadParameter(f"'{path}' must end in {', '.join(FORMATS)}", param_hint="'--plot'")


def _summary(f: Any) -> str:
    statuses = {pt.solver.status for pt in f.points}
    proof = "every point OPTIMAL" if statuses == {"OPTIMAL"} else "some points only FEASIBLE (time limit)"
    limit = f", TTFT <= {f.max_ttft_s:g} s" if f.max_ttft_s else ""
    return (f"frontier{limit}: {f.lowest_tokens_per_s_per_user:.1f} .. {f.highest_tokens_per_s_per_user:.1f} "
            f"tokens/s/user reachable; {len(f.points)} SLA levels, {f.solves} searches in {f.wall_s:.1f} s "
            f"({f.method}, {proof})")


@main.command()
@_problem_options
@_study_options
def frontier(ttft: float | None, points: int, sla_range: tuple[float, float] | None, chunks: tuple[int, ...] | None,
             micro_batches: tuple[int, ...] | None, method: str, time_limit: float, csv_out: str | None,
             plot_out: str | None, all_layouts: bool, quiet: bool, as_json: bool, **kw: Any) -> None:
    """Best tokens/s/GPU at each tokens/s/user: the throughput/interactivity frontier.

    Sweeps the SLA from the lowest to the highest reachable interactivity (or --sla-range) and
    solves at each level; '*' marks where the optimal layout changes. With no options: the
    study's case (GPT-MoE-1.8T, 64 GB200 NVL72 GPUs, 32768/1024 tokens, FP4).
    """
    from planner import studies
    from planner.solver import SolverParams

    _check_plot_path(plot_out)
    problem = _problem(kw, None, ttft)
    bar = _Progress(quiet or as_json)
    try:
        f = studies.frontier(problem, points=points, sla_range=sla_range, chunks=chunks,
                             micro_batches=micro_batches, method=method,
                             params=SolverParams(time_limit_s=time_limit), all_layouts=all_layouts, progress=bar)
    finally:
        bar.close()
    if csv_out:
        _write_csv(csv_out, studies.frontier_rows(f))
    if plot_out:
        from planner.plots import plot_frontiers

        plot_frontiers([f], plot_out)
    if as_json:
        _dump(f.model_dump(mode="json"))
        return
    click.echo(_describe(f.points[0]) if f.points else f.case)
    click.echo(_summary(f))
    if f.points:
        click.echo(_frontier_table(f))
    if f.unreachable:
        click.echo(f"unreachable (above {f.highest_tokens_per_s_per_user:.1f} tokens/s/user): "
                   + ", ".join(f"{x:g}" for x in f.unreachable))
    if all_layouts:
        click.echo(f"valid layouts (at least one batch fits and keeps up): {f.valid_layouts}")
    for what, out in (("points", csv_out), ("chart", plot_out)):
        if out:
            click.echo(f"{what} written to {out}")


def _cases(kw: dict[str, Any]) -> list[dict[str, Any]]:
    """One option set per case: repeated options pair up in order; an option given once applies to all."""
    lengths = {k: len(kw[k]) for k in CASE_OPTIONS}
    n = max(lengths.values())
    uneven = [f"--{k} x{v}" for k, v in lengths.items() if v not in (1, n)]
    if uneven:
        raise click.UsageError(f"repeated options pair up in order: give each {n} times or once (got "
                               f"{', '.join(f'--{k} x{v}' for k, v in lengths.items())})")
    return [{**kw, **{k: kw[k][i if lengths[k] > 1 else 0] for k in CASE_OPTIONS}} for i in range(n)]


@main.command()
@_problem_options(repeatable=True)
@_study_options
@click.option("--at", "at", default="20tok/s", show_default=True, callback=_callback(parse_sla),
              help="The SLA at which the cases are compared (ratio to the first case).")
def compare(at: float, ttft: float | None, points: int, sla_range: tuple[float, float] | None,
            chunks: tuple[int, ...] | None, micro_batches: tuple[int, ...] | None, method: str, time_limit: float,
            csv_out: str | None, plot_out: str | None, all_layouts: bool, quiet: bool, as_json: bool,
            **kw: Any) -> None:
    """Frontiers of several cases on one chart and one table, with the ratio at one SLA.

    Repeat --cluster, --model, --precision or --gpus for the cases: e.g. --cluster gb200-nvl72
    --precision fp4 --cluster h100-sxm --precision fp8 compares two (options pair up in order; one
    given once applies to every case).
    """
    from planner import studies
    from planner.solver import SolverParams

    _check_plot_path(plot_out)
    cases = _cases(kw)
    problems = [_problem(c, None, ttft) for c in cases]
    bar = _Progress(quiet or as_json)
    try:
        result = studies.compare(problems, at=at, points=points, sla_range=sla_range, chunks=chunks,
                                 micro_batches=micro_batches, method=method,
                                 params=SolverParams(time_limit_s=time_limit), all_layouts=all_layouts,
                                 progress=bar)
    finally:
        bar.close()
    if csv_out:
        _write_csv(csv_out, [r for f in result.frontiers for r in studies.frontier_rows(f)])
    if plot_out:
        from planner.plots import plot_frontiers

        plot_frontiers(result.frontiers, plot_out, at=at, label_layouts=len(result.frontiers) <= 2)
    if as_json:
        _dump(result.model_dump(mode="json"))
        return
    click.echo(f"isl {kw['isl']} / osl {kw['osl']} tokens" + (f", TTFT <= {ttft:g} s" if ttft else "")
               + f"; compared at {at:g} tokens/s/user")
    by_case = {f.case: f for f in result.frontiers}
    rows = []
    for r in result.rows:
        f, pt = by_case.get(r.case), r.plan
        reach = f"{f.lowest_tokens_per_s_per_user:.1f}..{f.highest_tokens_per_s_per_user:.1f}" if f else "-"
        rows.append([r.case, reach, pt.label if pt else "unreachable", f"{pt.metrics.tokens_per_s_per_user:.1f}" if pt
                     else "-", f"{r.tokens_per_s_per_gpu:.2f}" if pt else "-",
                     f"{r.ratio:.2f}x" if r.ratio is not None else "-", f"{f.wall_s:.1f} s" if f else "-"])
    click.echo(render_table(["case", "tok/s/user reachable", f"best layout at {at:g}", "tok/s/user", "tok/s/GPU",
                             "ratio", "sweep"], rows))
    for r in result.rows:
        if r.error:
            click.echo(f"{r.case}: no plan: {r.error}")
    base = result.rows[0]
    for r in result.rows[1:]:
        if r.ratio:
            click.echo(f"{base.case} serves {1 / r.ratio:.2f}x the tokens/s/GPU of {r.case} at {at:g} tokens/s/user")
    keep = [k for k in range(len(result.levels)) if any(row[k] is not None for row in result.grid)]
    click.echo("best tokens/s/GPU at each tokens/s/user ('-': unreachable):")
    click.echo(render_table(["case"] + [f"{result.levels[k]:g}" for k in keep],
                            [[r.case] + [f"{row[k]:.2f}" if row[k] is not None else "-" for k in keep]
                             for r, row in zip(result.rows, result.grid)]))
    for what, out in (("points", csv_out), ("chart", plot_out)):
        if out:
            click.echo(f"{what} written to {out}")


@main.command()
@_problem_options
@click.option("--demand", required=True, callback=_callback(parse_demand),
              help="What to serve: 40req/s (requests) or 50000tok/s (output tokens).")
@click.option("--sla", "sla", default="20tok/s", show_default=True, callback=_callback(parse_sla),
              help="Minimum tokens/s per user: 20tok/s, 20, or 50ms per token.")
@click.option("--ttft", default=None, callback=_callback(parse_duration),
              help="Maximum time to first token, e.g. 5s or 500ms.")
@click.option("--chunks", default=None, callback=_callback(parse_int_list),
              help=CHUNKS_HELP)
@click.option("--micro-batches", default=None, callback=_callback(parse_int_list),
              help=MICRO_BATCHES_HELP)
@click.option("--method", type=click.Choice(["cpsat", "exhaustive"]), default="cpsat", show_default=True,
              help="CP-SAT model, or the exhaustive enumeration (the test oracle).")
@click.option("--max-gpus", type=click.IntRange(min=1), default=65536, show_default=True,
              help="Most GPUs to consider.")
@click.option("--time-limit", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="CP-SAT time limit [s].")
def size(demand: tuple[float | None, float | None], sla: float, ttft: float | None, chunks: tuple[int, ...] | None,
         micro_batches: tuple[int, ...] | None, method: str, max_gpus: int, time_limit: float, as_json: bool,
         **kw: Any) -> None:
    """Fewest GPUs (whole nodes) that serve a demand at an SLA, and the plan: replicas, layout, batch.

    --gpus is ignored: the sizing finds the count. Demand in tokens/s counts output tokens.
    """
    from planner import studies
    from planner.solver import SolverParams

    problem = _problem(kw, sla, ttft)
    req, tok = demand
    result = studies.size(problem, demand_requests_per_s=req, demand_tokens_per_s=tok, chunks=chunks,
                          micro_batches=micro_batches, method=method, params=SolverParams(time_limit_s=time_limit),
                          max_gpus=max_gpus)
    if as_json:
        _dump(result.model_dump(mode="json"))
        return
    plan = result.plan
    limit = f", TTFT <= {_fmt_time(ttft * 1000)}" if ttft else ""
    click.echo(f"{_describe(plan).split(' on ')[0]} on {problem.cluster.name}, {plan.precision.value} weights, "
               f"isl {plan.isl} / osl {plan.osl} tokens")
    click.echo(f"demand {result.demand_requests_per_s:,.4g} requests/s = {result.demand_tokens_per_s:,.0f} output "
               f"tokens/s at >= {sla:g} tokens/s/user{limit}")
    unit = result.node_unit
    click.echo(f"fewest GPUs: {result.gpus} ({result.nodes} {unit}{'s' if result.nodes != 1 else ''} of "
               f"{result.gpus_per_node} GPUs; GPUs are counted in whole {unit}s), {result.gpus_used} in use: "
               f"{result.replicas} replica{'s' if result.replicas != 1 else ''} of {plan.label.rsplit(' DP', 1)[0]}")
    click.echo(render_table(PLAN_HEADERS, _plan_rows([plan])))
    click.echo(_layout_line(plan))
    click.echo(f"capacity {result.capacity_tokens_per_s:,.0f} tokens/s ({result.capacity_requests_per_s:,.4g} "
               f"requests/s), {result.utilization:.0%} used by the demand; replicas of up to "
               f"{result.max_replica_gpus} GPUs considered; {result.wall_s:.1f} s")
    _echo_notes(plan)
