"""The `planner` command: a thin click layer over the library (planner.search, planner.studies,
planner.calibrate, planner.catalog) and its text rendering (planner.render).

Each command parses options, calls one library function and echoes the rendered result (or JSON).
Errors end in one line on stderr and exit code 2; the library's message, plus a hint naming the options
that would help.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from planner import catalog, render, search
from planner.calibrate import MIN_ANCHOR_ROWS
from planner.errors import (
    InfeasibleError,
    PlannerError,
    SearchTooLargeError,
    SpecError,
    TimeLimitError,
)
from planner.specs import (
    LengthShape,
    Parallel,
    Plan,
    Precision,
    Workload,
)
from planner.units import (  # noqa: F401 (re-exported: the parsers lived here)
    MAX_LIST_VALUES,
    MAX_TIME_LIMIT_S,
    ParseError,
    parse_acceptance,
    parse_confidence,
    parse_demand,
    parse_duration,
    parse_int_list,
    parse_percentile,
    parse_range,
    parse_rate,
    parse_sla,
    parse_sla_at,
    parse_spec,
    parse_time_limit,
    parse_ttft_at,
)

PRECISIONS = Precision.names() + [search.CHECKPOINT]
"""Names --precision takes: the formats, their aliases (awq, gptq, int4_wo, w4a16 = int4; nvfp4 = fp4) and
'checkpoint' (the model's published formats)."""
EXPERT_PRECISIONS = Precision.names()
"""Names --expert-precision takes."""
PRECISION_HELP = ("Weight and GEMM format: fp4 (NVFP4), mxfp4, int4 (W4A16 AWQ/GPTQ; also int4_wo, awq, gptq, "
                  "w4a16), w4a8, fp8, bf16; or checkpoint, the model's published formats per component (gpt-oss: "
                  "bf16 + mxfp4 experts).")
EXPERT_PRECISION_HELP = "Format of the routed experts of an MoE model, where it differs [default: as --precision]."
CHUNKS_HELP = "Chunk sizes to consider: 256,512 or 128:8192:128 [default: 128..8192]."
MICRO_BATCHES_HELP = ("Decode requests per attention-DP rank to consider: 8,16,32 or 1:512:1 "
                      "[default: 25 values, 1..512, steps of at most a third].")
TIME_LIMIT_HELP = ("Time limit of the search [s]: a plan found by then is reported FEASIBLE with its gap; a search "
                   "space too large for it is refused at once.")
MAX_SIM_REQUESTS = 10_000_000
"""Most requests `simulate --requests` and `solve --verify --requests` take (planner.simulate.MAX_REQUESTS)."""


# --- parsing -------------------------------------------------------------------------------------


def with_percentile(problem, percentile: int | None):
    """The problem with every SLA level held at this percentile of requests' TPOT (None: the mean)."""
    if percentile is None:
        return problem
    from planner.specs import SLA

    kept = problem.sla.model_dump() if problem.sla else {}
    return problem.model_copy(update={"sla": SLA(**{**kept, "tpot_percentile": percentile})})


def _callback(parse: Callable) -> Callable:
    """A click callback applying `parse` (planner.units) to a given value (None passes through); a ParseError
    becomes click's one line naming the option."""

    def cb(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        try:
            return None if value is None else parse(value)
        except ParseError as e:
            raise click.BadParameter(str(e)) from None

    return cb


# --- one-line errors -------------------------------------------------------------------------------


def hint(e: PlannerError) -> str:
    """What to try, in command-line terms, for a library error that carries structured fields."""
    if isinstance(e, InfeasibleError):
        reach = e.reachable
        return {
            "chunk": f"give larger --chunks, up to at least {int(reach.get('chunk', 0))}",
            "fit": (f"try --gpus {int(reach['gpus'])} or a smaller --precision" if "gpus" in reach
                    else "try a smaller --precision, a shorter --isl/--osl or a larger GPU"),
            "layout": "try another --gpus",
            "ttft": "raise --ttft or add GPUs",
            "sla": "lower --sla or change the cluster",
            "demand": "lower the --demand or the --sla, or raise --max-gpus",
        }.get(e.reason, "")
    if isinstance(e, SearchTooLargeError):
        if e.limit_s is None:
            return "give fewer --micro-batches or --chunks"
        return f"raise --time-limit to {max(1, math.ceil(e.seconds * 1.2))} or give fewer --micro-batches or --chunks"
    if isinstance(e, TimeLimitError):
        return "raise --time-limit"
    needs = getattr(e, "needs", None)  # planner.exports.ExportError
    if needs:
        return f"give --{needs.replace('_', '-')} {'N' if needs == 'gpus_per_node' else 'PATH'}"
    return ""


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
            extra = hint(e)
            click.echo(f"planner: error: {e}" + (f" ({extra})" if extra else ""), err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("planner: interrupted", err=True)
            sys.exit(130)
        except RecursionError:
            click.echo("planner: error: input nested too deeply", err=True)
            sys.exit(2)
        except Exception as e:  # a bug: still one line, never a traceback
            click.echo(f"planner: internal error (please report): {type(e).__name__}: {e}", err=True)
            sys.exit(1)


CASE_OPTIONS = ("model", "cluster", "gpus", "precision", "expert_precision")
"""Options `compare` takes repeatedly (one case per value)."""


def _problem_options(f: Callable | None = None, *, repeatable: bool = False) -> Callable:
    """The options every planning command shares, with the study's defaults. With `repeatable`,
    --model/--cluster/--gpus/--precision/--expert-precision may be given several times (compare's cases)."""

    def case(name: str, *decls: str, default: Any, **kw: Any) -> Callable:
        shown = default is not None
        if repeatable:
            return click.option(*decls, multiple=True, default=[default], show_default=shown, **kw)
        return click.option(*decls, default=default, show_default=shown, **kw)

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
        case("precision", "--precision", type=click.Choice(PRECISIONS, case_sensitive=False),
             default=search.DEFAULT_PRECISION.value, help=PRECISION_HELP),
        case("expert_precision", "--expert-precision", type=click.Choice(EXPERT_PRECISIONS, case_sensitive=False),
             default=None, help=EXPERT_PRECISION_HELP),
        click.option("--kv-precision", type=click.Choice(["fp8", "bf16"]), default=None,
                     help="KV-cache format [default: fp8 where the GPU has FP8 and weights are not bf16, else bf16]."),
        click.option("--backend", default="*", show_default=True,
                     help="Serving engine whose calibration profile applies: trtllm, vllm, sglang or *."),
        click.option("--calibration", "calibration", default=None,
                     help="Calibration YAML (from `planner calibrate`) [default: the shipped one]."),
        click.option("--memory-utilization", type=click.FloatRange(0.3, 1.0, min_open=True), default=None,
                     help="Fraction of HBM the engine may use [default: the calibration's, 0.9]."),
        click.option("--isl-cv", type=click.FloatRange(0, 4), default=0.0, show_default=True,
                     help="Spread of prompt lengths around --isl: standard deviation / mean."),
        click.option("--osl-cv", type=click.FloatRange(0, 4), default=0.0, show_default=True,
                     help="Spread of output lengths around --osl: standard deviation / mean."),
        click.option("--lengths", type=click.Choice([s.value for s in LengthShape if s != LengthShape.trace]),
                     default="lognormal", show_default=True, help="Shape of the length distributions."),
        click.option("--trace", "trace", type=click.Path(dir_okay=False), default=None,
                     help="Request lengths from a trace: CSV or JSONL of input_tokens, output_tokens[, arrival_s] "
                          "(sets --isl/--osl to its means)."),
        click.option("--arrivals", type=click.Choice(["open", "closed"]), default="open", show_default=True,
                     help="open: requests arrive on their own (Poisson, or burstier with --burstiness); closed: a "
                          "fixed number of clients, each sending its next request when the last one finishes "
                          "(a benchmark's setting)."),
        click.option("--burstiness", type=click.FloatRange(0, 1), default=None,
                     help="open: gaps between arrivals 1 + 4b times as variable as Poisson's; closed: the share of "
                          "requests arriving in waves [default: 0 open; the calibration's fitted value closed]."),
        click.option("--prefix-hit", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
                     help="Share of each prompt's tokens found in the prefix cache (not prefilled)."),
        click.option("--prefix-cache-tokens", type=click.IntRange(min=0), default=None,
                     help="Distinct prefix tokens the cache keeps per replica, charged in KV memory "
                          "[default: --prefix-hit x isl, one shared prefix]."),
        click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout."),
    ]

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate(f) if f is not None else decorate


def _search_options(f: Callable) -> Callable:
    """--chunks, --micro-batches, --method and --time-limit: how a command searches."""
    options = [
        click.option("--chunks", default=None, callback=_callback(parse_int_list), help=CHUNKS_HELP),
        click.option("--micro-batches", default=None, callback=_callback(parse_int_list), help=MICRO_BATCHES_HELP),
        click.option("--method", type=click.Choice(["cpsat", "exhaustive"]), default="cpsat", show_default=True,
                     help="CP-SAT over the tabulated options, or the exhaustive enumeration (the test oracle)."),
        click.option("--time-limit", default="60", show_default=True, callback=_callback(parse_time_limit),
                     help=TIME_LIMIT_HELP),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _spec_options(f: Callable) -> Callable:
    """--spec, --draft-tokens and --acceptance: speculative decoding."""
    options = [
        click.option("--spec", "spec", default=None, callback=_callback(parse_spec),
                     help="Speculative decoding: mtp (the model's multi-token-prediction modules), eagle (an EAGLE "
                          "head) or draft:MODEL (a draft model) [default: none]."),
        click.option("--draft-tokens", "draft_tokens", type=click.IntRange(1, 8), default=None,
                     help="Draft tokens per step with --spec [default: the best of 1..4]."),
        click.option("--acceptance", "acceptance", default=None, callback=_callback(parse_acceptance),
                     help="Per-token acceptance of the drafts with --spec, e.g. 0.8 [default: the calibration's "
                          "for the method]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _speculation(kw: dict):
    """The Speculation of --spec/--draft-tokens/--acceptance (None without --spec); UsageError for the latter two
    alone. Pops the three options from kw."""
    spec, k, a = kw.pop("spec", None), kw.pop("draft_tokens", None), kw.pop("acceptance", None)
    if spec is None:
        if k is not None or a is not None:
            raise click.UsageError("--draft-tokens and --acceptance go with --spec (mtp, eagle or draft:MODEL)")
        return None
    from planner.specs import Speculation

    method, model = spec
    return Speculation(method=method, draft_tokens=k, acceptance=a, draft_model=model)


_TRAFFIC = ("isl_cv", "osl_cv", "lengths", "trace", "prefix_hit", "prefix_cache_tokens", "arrivals", "burstiness")


def _workload(kw: dict) -> Workload:
    """The Workload of the traffic options (pops them from kw): fixed or spread lengths, a trace, a prefix cache."""
    from planner import traffic

    t = {k: kw.pop(k, None) for k in _TRAFFIC}
    closed = t["arrivals"] == "closed"
    cache = {"prefix_hit": t["prefix_hit"] or 0.0, "prefix_cache_tokens": t["prefix_cache_tokens"],
             "closed_loop": closed, "burstiness": t["burstiness"] if t["burstiness"] is not None or closed else 0.0}
    try:
        if t["trace"] is not None:
            ctx = click.get_current_context()
            given = [f"--{k.replace('_', '-')}" for k in ("isl", "osl", "isl_cv", "osl_cv")
                     if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT]
            if given:
                raise click.UsageError(f"--trace sets the lengths: drop {', '.join(given)}")
            return traffic.workload_of_trace(traffic.load_trace(t["trace"]), **cache)
        return Workload(isl=kw["isl"], osl=kw["osl"], isl_cv=t["isl_cv"] or 0.0, osl_cv=t["osl_cv"] or 0.0,
                        shape=LengthShape(t["lengths"] or "lognormal"), **cache)
    except ValidationError as e:
        from planner.catalog import validation_message

        raise SpecError(validation_message(e)) from None


def _limit(x: float | tuple[float, int | None] | None) -> tuple[float | None, int | None]:
    """(value, percentile) of a parsed --sla/--ttft (a number: the mean)."""
    if isinstance(x, tuple):
        return x
    return x, None


def _problem(kw: dict, sla: float | tuple | None = None, ttft: float | tuple | None = None, gpus: int | None = None):
    (speed, tpot_q), (limit, ttft_q) = _limit(sla), _limit(ttft)
    workload = _workload(kw)
    return search.make_problem(
        model=kw["model"], cluster=kw["cluster"], gpus=gpus or kw["gpus"], isl=workload.isl, osl=workload.osl,
        precision=kw["precision"], expert_precision=kw["expert_precision"], kv_precision=kw["kv_precision"],
        min_tokens_per_s_per_user=speed, max_ttft_s=limit, calibration=kw["calibration"], backend=kw["backend"],
        memory_utilization=kw["memory_utilization"], workload=workload, tpot_percentile=tpot_q,
        ttft_percentile=ttft_q, speculation=kw.get("speculation"),
    )


def _params(time_limit: float):
    from planner.solver import SolverParams

    return SolverParams(time_limit_s=time_limit)


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def _echo(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


# --- commands --------------------------------------------------------------------------------------


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="planner")
def main() -> None:
    """Find the provably best way to deploy an LLM for inference on a GPU cluster."""


def _ask_options(f: Callable) -> Callable:
    """The service level and the serving mode of one ask (`solve` and `explain`): --sla, --ttft, --confidence,
    --serving, --decode-cluster, --decode-gpus, with the problem's, speculative decoding's and the search's
    options."""
    options = [
        _problem_options,
        click.option("--sla", "sla", default="20tok/s", show_default=True, callback=_callback(parse_sla_at),
                     help="Minimum tokens/s per user: 20tok/s, 20, or 50ms per token; @p50/@p90/@p95/@p99 holds it "
                          "for that share of requests (e.g. 40ms@p99) [default: the mean]."),
        click.option("--ttft", default=None, callback=_callback(parse_ttft_at),
                     help="Maximum time to first token, e.g. 5s or 500ms; 450ms@p99 for a percentile."),
        click.option("--confidence", default=None, callback=_callback(parse_confidence),
                     help="Plan so that the SLA and --ttft hold at this one-sided quantile of the held-out errors "
                          "(0.5 to below 1, e.g. 0.9 or 90%%), and say what it costs in tokens/s/GPU [default: at "
                          "the central estimate]."),
        click.option("--serving", type=click.Choice(search.SERVING_MODES), default="auto", show_default=True,
                     help="agg: every replica prefills and decodes; disagg: a prefill pool and a decode pool; auto: "
                          "the better of the two, with the other's best on a line."),
        click.option("--decode-cluster", default=None,
                     help="Decode pool on another GPU type (disaggregated): catalog name or YAML path."),
        click.option("--decode-gpus", type=click.IntRange(min=1), default=None,
                     help="GPUs of the decode cluster [default: as many as --gpus]."),
        _spec_options,
        _search_options,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _ask_problem(kw: dict, sla, ttft, confidence: float | None):
    """The Problem of an ask's options (pops the speculation options from kw), at --confidence when given."""
    kw["speculation"] = _speculation(kw)
    problem = _problem(kw, sla, ttft)
    if confidence is not None:
        from planner.uncertainty import with_confidence

        problem = with_confidence(problem, confidence)
    return problem


@main.command()
@_ask_options
@click.option("--top", type=click.IntRange(min=1, max=50), default=1, show_default=True,
              help="The K best distinct layouts.")
@click.option("--verify", is_flag=True,
              help="Simulate the chosen plan (planner simulate's default traffic) and say whether each part of the "
                   "SLA holds in the simulation (lines on stderr with --json).")
@click.option("--requests", type=click.IntRange(min=1, max=MAX_SIM_REQUESTS), default=None,
              help="With --verify: requests to simulate [default: 10,000].")
def solve(sla: tuple[float, int | None], ttft: tuple[float, int | None] | None, top: int, confidence: float | None,
          serving: str, decode_cluster: str | None, decode_gpus: int | None, verify: bool, requests: int | None,
          method: str,
          chunks: tuple[int, ...] | None, micro_batches: tuple[int, ...] | None, time_limit: float, as_json: bool,
          **kw: Any) -> None:
    """Best plan (layout, batch, chunk) maximising tokens/s/GPU at a minimum tokens/s/user.

    With no options: GPT-MoE-1.8T on 64 GB200 NVL72 GPUs, 32768 input / 1024 output tokens, FP4, aggregated
    or disaggregated, whichever serves more. With --spec, speculative decoding: the best draft length of 1..4
    unless --draft-tokens, compared with no speculation on a line.
    """
    problem = _ask_problem(kw, sla, ttft, confidence)
    if requests is not None and not verify:
        raise click.UsageError("--requests goes with --verify")
    plans = search.solve(problem, method=method, top=top, chunks=chunks, micro_batches=micro_batches,
                         params=_params(time_limit), serving=serving, decode_cluster=decode_cluster,
                         decode_gpus=decode_gpus)
    if as_json:
        _dump(plans[0].model_dump(mode="json") if top == 1 else [p.model_dump(mode="json") for p in plans])
    else:
        _echo(render.solve_lines(plans, problem))
    if verify:
        from planner import simulate as sim

        best = plans[0]
        result = sim.simulate(problem, best, requests=requests,
                              decode_problem=sim.decode_problem_of_plan(best, problem, decode_cluster))
        for line in sim.verify_lines(result, best):
            click.echo(line, err=as_json)


@main.command()
@_ask_options
@click.option("--runner-ups", type=click.IntRange(min=0, max=20), default=3, show_default=True,
              help="Runner-up layouts to explain.")
def explain(sla: tuple[float, int | None], ttft: tuple[float, int | None] | None, confidence: float | None,
            serving: str, decode_cluster: str | None, decode_gpus: int | None, method: str,
            chunks: tuple[int, ...] | None, micro_batches: tuple[int, ...] | None, time_limit: float, as_json: bool,
            runner_ups: int, **kw: Any) -> None:
    """Why the best plan is the best: which rules bind (proved by re-solving with each released), every rule's
    slack, the runner-ups and what makes each lose; for an infeasible ask, a minimal set of requirements that
    conflict and the nearest relaxations, each confirmed by solve. Takes solve's options."""
    from planner import explanations as ex

    problem = _ask_problem(kw, sla, ttft, confidence)
    result = ex.explain(problem, serving=serving, method=method, chunks=chunks, micro_batches=micro_batches,
                        params=_params(time_limit), decode_cluster=decode_cluster, decode_gpus=decode_gpus,
                        runner_ups=runner_ups)
    if as_json:
        _dump(result.model_dump(mode="json"))
    else:
        _echo(render.explain_lines(result, problem))


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
@click.option("--serving", type=click.Choice(["agg", "disagg"]), default="agg", show_default=True,
              help="agg: the layout above; disagg: the --prefill-* and --decode-* pools.")
@click.option("--prefill-tp", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--prefill-attention-dp", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--prefill-pp", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--prefill-ep", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--prefill-workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--decode-tp", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--decode-attention-dp", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--decode-pp", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--decode-ep", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--decode-workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--decode-micro-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="disagg: decode requests per attention-DP rank per micro-batch.")
@click.option("--decode-cluster", default=None, help="disagg: the decode pool's GPU type [default: --cluster].")
@click.option("--decode-gpus", type=click.IntRange(min=1), default=None,
              help="disagg: GPUs of the decode cluster [default: what the decode pool uses].")
@_spec_options
def estimate(as_json: bool, tp: int, attention_dp: int, pp: int, ep: int, moe_tp: int | None, dp: int,
             concurrency: int | None, chunk: int, csv_in: str | None, csv_out: str | None, serving: str,
             decode_cluster: str | None, decode_gpus: int | None, **kw: Any) -> None:
    """Evaluate one given plan with the cost model (no search), or predict the rows of a CSV.

    --gpus defaults here to the GPUs the plan uses (dp * tp * attention_dp * pp). With --csv, each
    row (model_path, system, backend, precision, isl, osl, batch_size, tp_size, ...) is a measured
    launch; the output adds pred_ttft_ms, pred_tpot_ms, pred_tokens_per_s_per_gpu, their 80% interval ends
    (pred_*_lo/hi, when the calibration has an interval table) and error.
    """
    speculation = _speculation(kw)
    if csv_in is not None:
        if speculation is not None:
            raise click.UsageError("with --csv each row says its speculative decoding (column spec_decoding); "
                                   "--spec goes with one plan")
        _estimate_csv(Path(csv_in), Path(csv_out) if csv_out else None, kw["calibration"])
        return
    kw["speculation"] = speculation
    if csv_out is not None:
        raise click.UsageError("--out goes with --csv")
    pools = {k: kw.pop(k) for k in list(kw) if k.startswith(("prefill_", "decode_"))}
    if serving == "disagg":
        _estimate_disagg(kw, pools, chunk, decode_cluster, decode_gpus, as_json)
        return
    if decode_cluster is not None or decode_gpus is not None:
        raise click.UsageError("--decode-cluster and --decode-gpus go with --serving disagg")
    if moe_tp is None and (tp * attention_dp) % ep:
        raise click.BadParameter(f"ep={ep} does not divide tp*attention_dp={tp * attention_dp}; give --moe-tp",
                                 param_hint="'--ep'")
    par = Parallel(tp=tp, attention_dp=attention_dp, pp=pp, ep=ep, moe_tp=moe_tp, dp=dp)
    ctx = click.get_current_context()
    gpus_given = ctx.get_parameter_source("gpus") != click.core.ParameterSource.DEFAULT
    problem = _problem(kw, gpus=kw["gpus"] if gpus_given else par.gpus_used)
    plan = search.estimate(problem, parallel=par, concurrency=concurrency, chunk=chunk)
    if as_json:
        _dump(plan.model_dump(mode="json"))
        return
    _echo(render.estimate_lines(plan, problem))


def _estimate_disagg(kw: dict, pools: dict, chunk: int, decode_cluster: str | None, decode_gpus: int | None,
                     as_json: bool) -> None:
    """`estimate --serving disagg`: the given prefill and decode pools (--gpus and --decode-gpus default to what
    the pools use)."""

    def layout(pool: str) -> Parallel:
        tp, adp, ep = pools[f"{pool}_tp"], pools[f"{pool}_attention_dp"], pools[f"{pool}_ep"]
        if (tp * adp) % ep:
            raise click.BadParameter(f"ep={ep} does not divide tp*attention_dp={tp * adp}", param_hint=f"'--{pool}-ep'")
        return Parallel(tp=tp, attention_dp=adp, pp=pools[f"{pool}_pp"], ep=ep, dp=pools[f"{pool}_workers"])

    pre, dec = layout("prefill"), layout("decode")
    ctx = click.get_current_context()
    gpus_given = ctx.get_parameter_source("gpus") != click.core.ParameterSource.DEFAULT
    own = pre.gpus_used if decode_cluster else pre.gpus_used + dec.gpus_used
    problem = _problem(kw, gpus=kw["gpus"] if gpus_given else own)
    plan = search.estimate_disagg(problem, pre, chunk, dec, pools["decode_micro_batch"], decode_cluster,
                                  decode_gpus or (dec.gpus_used if decode_cluster else None))
    if as_json:
        _dump(plan.model_dump(mode="json"))
        return
    _echo(render.estimate_lines(plan, problem))


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
@click.argument("plan_file", metavar="PLAN.json|-")
@click.option("--trace", type=click.Path(dir_okay=False), default=None,
              help="Requests to replay: CSV (header input_tokens,output_tokens[,arrival_s]) or JSONL; its arrival "
                   "times and lengths (without arrival_s: its lengths, with the traffic below).")
@click.option("--rate", default=None, callback=_callback(parse_rate),
              help="Open traffic of this many requests/s (Poisson, spread by the workload's burstiness), e.g. 2.5.")
@click.option("--clients", type=click.IntRange(min=1, max=MAX_SIM_REQUESTS), default=None,
              help="A closed loop of N clients, each sending its next request when the last one finishes "
                   "[default: the plan's concurrency].")
@click.option("--requests", type=click.IntRange(min=1, max=MAX_SIM_REQUESTS), default=None,
              help="Requests to measure, after a warm-up of a tenth as many [default: 10,000; a trace with arrival "
                   "times: all of it].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the lengths, arrivals and routing.")
@click.option("--model", default=None, help="The plan's model as a file (YAML or config.json), when its name is "
                                            "not in the catalog.")
@click.option("--cluster", default=None, help="The plan's cluster (disaggregated: the prefill pool's) as a YAML "
                                              "file, when its name is not in the catalog.")
@click.option("--decode-cluster", default=None, help="A disaggregated plan's decode cluster as a YAML file.")
@click.option("--calibration", default=None,
              help="The calibration the plan was made with [default: the shipped one].")
@click.option("--json", "as_json", is_flag=True, help="Print only the simulation's result as JSON.")
def simulate(plan_file: str, trace: str | None, rate: float | None, clients: int | None, requests: int | None,
             seed: int, model: str | None, cluster: str | None, decode_cluster: str | None, calibration: str | None,
             as_json: bool) -> None:
    """Simulate the engine scheduler serving a plan (the JSON of `planner solve --json`, or - for stdin).

    A discrete-event simulation of every lane (attention-DP rank x micro-batch) of the deployment: continuous
    batching up to the plan's micro-batch, chunked prefill within its chunk, the KV cache's capacity (waits,
    preemption), a disaggregated plan's prefill pool, KV transfer and decode pool; every iteration's time from the
    cost model. Prints mean and percentiles of TTFT, TPOT, ITL and end-to-end latency beside the plan's predicted
    means, and the throughput. Traffic: --trace, --rate or --clients; none: a closed loop of the plan's
    concurrency.
    """
    from planner import simulate as sim
    from planner.traffic import load_trace

    if rate is not None and clients is not None:
        raise click.UsageError("give --rate or --clients, not both")
    plan = sim.load_plan(plan_file)
    sim.check_supported(plan)
    problem = sim.problem_of_plan(plan, model=model, cluster=cluster, calibration=calibration)
    decode_problem = sim.decode_problem_of_plan(plan, problem, decode_cluster)
    replay = load_trace(trace) if trace is not None else None
    result = sim.simulate(problem, plan, trace=replay, rate_per_s=rate, clients=clients, requests=requests, seed=seed,
                          decode_problem=decode_problem)
    if as_json:
        _dump(result.model_dump(mode="json"))
        return
    note = sim.model_mismatch(problem, plan, decode_problem)
    _echo(sim.result_lines(result, plan) + ([note] if note else []))


@main.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Where to write the fitted calibration (YAML).")
@click.option("--calibration", default=None, help="Starting calibration [default: the shipped one].")
@click.option("--name", default=None, help="Name recorded in the calibration [default: the data file's stem].")
@click.option("--anchor", is_flag=True,
              help="Keep the starting calibration and fit only a profile per (model, system, backend) "
                   f"deployment in DATA, from as few as {MIN_ANCHOR_ROWS} runs measured on it.")
@click.option("--intervals", type=click.Choice(["lomo", "loso", "keep", "none"]), default=None,
              help="Error bars: from held-out errors, leaving one model (lomo) or one system (loso) out, one more "
                   "fit per model or system (minutes each on calibration.csv); the starting calibration's "
                   "(keep); or none [default: keep with --anchor, else none].")
@click.option("--disagg-only", is_flag=True,
              help="Fit only the disaggregated factors (the pools' hand-off), on DATA's disaggregated rows, on top of "
                   "the starting calibration.")
@click.option("--spec-only", is_flag=True,
              help="Fit only the draft acceptance of speculative decoding per engine, on DATA's speculative rows "
                   "(spec_decoding mtp or eagle), on top of the starting calibration.")
def calibrate(data: tuple[str, ...], output: str, calibration: str | None, name: str | None, anchor: bool,
              intervals: str | None, disagg_only: bool, spec_only: bool) -> None:
    """Fit the efficiency factors to measured runs and print the error before and after.

    DATA is one or more CSVs with calibration.csv's columns and the measured silicon_ttft_ms,
    silicon_tpot_ms. Aggregated rows fit every aggregated factor; disaggregated rows (mode disagg, the prefill_*
    and decode_* columns of disagg.csv) then fit the pools' hand-off per engine (--disagg-only: that alone).
    Base factors are fitted on all runs, then per-engine and per-system profiles where a group has
    enough runs; rows with speculative decoding then fit the draft acceptance per engine (--spec-only: that
    alone). With --anchor, a few runs of your own deployment instead tune that deployment's
    profile on top of the starting calibration. Use the result with --calibration FILE on any command.
    """
    from planner.calibrate import (
        Dataset,
        TooFewRunsError,
        calibrate_runs,
        check_enough_runs,
        load_calibration,
        save_calibration,
    )
    from planner.runs import read_rows, row_mode, row_spec

    start = load_calibration(calibration)
    if disagg_only and spec_only:
        raise click.UsageError("--disagg-only and --spec-only fit different factors: give one")
    if disagg_only:
        _calibrate_disagg(data, start, output, name)
        return
    if spec_only:
        _calibrate_spec(data, start, output, name)
        return
    intervals = intervals or ("keep" if anchor else "none")
    if intervals in ("lomo", "loso") and anchor:
        raise click.UsageError("--intervals lomo/loso goes with a full fit, not --anchor (use --intervals keep)")
    ds = Dataset.of([row for path in data for row in read_rows(Path(path))], start)
    names = " ".join(Path(path).name for path in data)
    try:
        check_enough_runs(ds, anchor)
    except TooFewRunsError as e:
        extra = "" if e.anchor else "; to tune one deployment from a few runs, add --anchor"
        raise click.UsageError(f"{', '.join(data)}: {e}{extra}") from None
    if intervals in ("lomo", "loso"):
        from planner.uncertainty import HOLDOUT_SCHEMES

        by = HOLDOUT_SCHEMES[intervals]
        if len(set(ds.models if by == "model" else ds.systems)) < 2:
            raise click.UsageError(f"--intervals {intervals} needs runs of at least 2 {by}s in {names}")
    click.echo(f"{len(ds.runs)} runs to fit, {len(ds.errors)} rows left out (unparseable or no measurement)",
               err=True)
    source = f"planner calibrate {names}" + (f" --anchor, on top of {start.name}" if anchor else "")
    report = calibrate_runs(ds, start, anchor=anchor, name=name or Path(data[0]).stem, source=source,
                            log=lambda msg: click.echo(f"  {msg}", err=True))
    rows = [[by, group, str(runs)] + [f"{b:.1%} -> {a:.1%}" for b, a in zip(before, after)]
            for by, group, runs, before, after in report.errors]
    click.echo(render.table(["by", "group", "runs", "TPOT |err|", "TTFT |err|", "tok/s/GPU |err|"], rows))
    cal = report.calibration.model_copy(update={"intervals": start.intervals if intervals == "keep" else None})
    if intervals in ("lomo", "loso"):
        from planner.uncertainty import holdout_table

        table = holdout_table(ds, intervals, start, log=lambda msg: click.echo(f"  {msg}", err=True))
        cal = cal.model_copy(update={"intervals": table})
        click.echo(render.interval_table_text(table))
    all_rows = [row for path in data for row in read_rows(Path(path))]
    if not anchor and any(row_mode(r) == "disagg" for r in all_rows):
        cal = _fit_rows("disagg", all_rows, cal, names)
    if not anchor and any(row_spec(r) != "none" for r in all_rows):
        cal = _fit_rows("spec", all_rows, cal, names)
    save_calibration(cal, output)
    click.echo(f"median absolute errors before -> after the fit, on the runs it was fitted to; calibration written "
               f"to {output}", err=True)
    for check in report.holdout:
        model, system, backend = check.deployment
        who = f"{model} on {system} with {backend}"
        if not check.folds:
            click.echo(f"held-out check, {who}: {check.runs} runs, too few to predict one from an anchoring to the "
                       f"others (needs {MIN_ANCHOR_ROWS + 1})")
            continue
        how = (f"each predicted from the other {check.runs - 1}" if check.folds == check.runs
               else f"in {check.folds} folds, each predicted from the runs of the other folds")
        (b_tpot, b_ttft, b_thr), (a_tpot, a_ttft, a_thr) = check.before, check.after
        click.echo(f"held-out check, {who} ({check.runs} runs, {how}): median |err| TPOT {render.pct(b_tpot)} -> "
                   f"{render.pct(a_tpot)}, TTFT {render.pct(b_ttft)} -> {render.pct(a_ttft)}, tok/s/GPU "
                   f"{render.pct(b_thr)} -> {render.pct(a_thr)} (start -> anchored)")


def _fit_rows(kind: str, rows: list[dict[str, str]], cal: Any, names: str) -> Any:
    """cal with the factors of `kind` fitted on its rows ('disagg': the disaggregated factors on the disaggregated
    rows; 'spec': the draft acceptance on the speculative rows); prints their errors before -> after."""
    import numpy as np

    from planner import calibrate as c

    if kind == "disagg":
        what, fitted_what, ds = "disaggregated", "disaggregated factors", c.DisaggSet.of(rows, cal)
        size, fit, predict = len(ds.runs), c.fit_disagg, c.predict_disagg_set
    else:
        what, fitted_what, ds = "speculative", "draft acceptance", c.SpecSet.of(rows, cal)
        size, fit, predict = ds.size, c.fit_spec, c.predict_spec_set
    click.echo(f"{size} {what} runs to fit, {len(ds.errors)} {what} rows left out", err=True)
    if not size:
        return cal
    before = predict(ds, cal)
    fitted = fit(ds, cal, log=lambda msg: click.echo(f"  {msg}", err=True))
    after = predict(ds, fitted)

    def err(pred: dict, key: str, measured: np.ndarray) -> float:
        return float(np.median(np.abs(pred[key] / measured - 1)))

    click.echo(render.table([f"{what} runs", "TPOT |err|", "TTFT |err|"], [[
        str(size), f"{err(before, 'tpot_ms', ds.tpot_ms):.1%} -> {err(after, 'tpot_ms', ds.tpot_ms):.1%}",
        f"{err(before, 'ttft_ms', ds.ttft_ms):.1%} -> {err(after, 'ttft_ms', ds.ttft_ms):.1%}"]]))
    source = f"{fitted.source}; {fitted_what} fitted on {names}".lstrip("; ")
    return fitted.model_copy(update={"source": source})


def _calibrate_spec(data: tuple[str, ...], start: Any, output: str, name: str | None) -> None:
    """`planner calibrate --spec-only`: the draft acceptance alone, on top of `start`."""
    from planner.calibrate import save_calibration
    from planner.runs import read_rows, row_spec

    rows = [row for path in data for row in read_rows(Path(path))]
    if not any(row_spec(r) != "none" for r in rows):
        raise click.UsageError(f"{', '.join(data)}: no rows with speculative decoding (spec_decoding mtp or eagle) "
                               "to fit")
    names = " ".join(Path(path).name for path in data)
    cal = _fit_rows("spec", rows, start, names)
    if name:
        cal = cal.model_copy(update={"name": name})
    save_calibration(cal, output)
    click.echo(f"median absolute errors before -> after, on the speculative runs fitted to; calibration written to "
               f"{output}", err=True)


def _calibrate_disagg(data: tuple[str, ...], start: Any, output: str, name: str | None) -> None:
    """`planner calibrate --disagg-only`: the disaggregated factors alone, on top of `start`."""
    from planner.calibrate import save_calibration
    from planner.runs import read_rows, row_mode

    rows = [row for path in data for row in read_rows(Path(path))]
    if not any(row_mode(r) == "disagg" for r in rows):
        raise click.UsageError(f"{', '.join(data)}: no disaggregated rows (mode disagg) to fit")
    names = " ".join(Path(path).name for path in data)
    cal = _fit_rows("disagg", rows, start, names)
    if name:
        cal = cal.model_copy(update={"name": name})
    save_calibration(cal, output)
    click.echo(f"median absolute errors before -> after, on the disaggregated runs fitted to; calibration written "
               f"to {output}", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def models(as_json: bool) -> None:
    """The model catalog, with key figures."""
    specs = catalog.all_models()
    if as_json:
        _dump([m.model_dump(mode="json") for m in specs])
        return
    click.echo(render.model_rows(specs))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def clusters(as_json: bool) -> None:
    """The cluster catalog, with key figures."""
    specs = catalog.all_clusters()
    if as_json:
        _dump([c.model_dump(mode="json") for c in specs])
        return
    click.echo(render.cluster_rows(specs))


@main.command()
@click.option("--of", "of", type=click.Choice(["plan", "frontier", "compare", "size", "fleet", "fleet-file"]),
              default="plan", show_default=True,
              help="Whose JSON: solve/estimate (plan), frontier, compare, size, fleet (its answer) or fleet-file (the "
                   "FLEET.yaml it reads).")
def schema(of: str) -> None:
    """JSON schema of what `--json` prints: the plan of solve/estimate, or a study's result."""
    from planner import studies

    if of in ("fleet", "fleet-file"):
        from planner import fleetplan as fleet_mod

        _dump((fleet_mod.FleetResult if of == "fleet" else fleet_mod.FleetSpec).model_json_schema())
        return
    model = {"plan": Plan, "frontier": studies.Frontier, "compare": studies.Comparison, "size": studies.Sizing}[of]
    _dump(model.model_json_schema())


# --- studies -------------------------------------------------------------------------------------


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
        click.option("--ttft", default=None, callback=_callback(parse_ttft_at),
                     help="Maximum time to first token at every point, e.g. 5s; 450ms@p99 for a percentile."),
        click.option("--percentile", default=None, callback=_callback(parse_percentile),
                     help="Every SLA level holds at this percentile of requests' TPOT: p50, p90, p95 or p99 "
                          "[default: the mean]."),
        click.option("--points", type=click.IntRange(min=1, max=500), default=40, show_default=True,
                     help="SLA levels, log-spaced from the lowest to the highest reachable tokens/s/user."),
        click.option("--sla-range", default=None, callback=_callback(parse_range),
                     help="Sweep these tokens/s/user instead, e.g. 5:200."),
        click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None,
                     help="Also write the points as CSV here."),
        click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
                     help="Also draw the chart here (.png, .svg or .pdf)."),
        click.option("--all-layouts", is_flag=True, help="Add each valid layout's own curve (and count them)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress display on stderr."),
    ]
    for option in reversed(options):
        f = option(f)
    return _search_options(f)


def _serving_option(what: str) -> Callable:
    """--serving of a study command (default auto, as for solve); `what` says what auto picks per."""
    return click.option("--serving", type=click.Choice(search.SERVING_MODES), default="auto", show_default=True,
                        help=f"agg: every replica prefills and decodes; disagg: a prefill pool and a decode pool; "
                             f"auto: both, the better one {what}, the other's figure alongside.")


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


@main.command()
@_problem_options
@_study_options
@_serving_option("at each level")
@_spec_options
@click.option("--confidence", default=None, callback=_callback(parse_confidence),
              help="Every SLA level and --ttft hold at this one-sided quantile of the held-out errors (0.5 to "
                   "below 1, e.g. 0.9) [default: at the central estimate].")
def frontier(ttft: tuple[float, int | None] | None, percentile: int | None, points: int,
             sla_range: tuple[float, float] | None, chunks: tuple[int, ...] | None,
             micro_batches: tuple[int, ...] | None, method: str, time_limit: float, csv_out: str | None,
             plot_out: str | None, all_layouts: bool, quiet: bool, serving: str, confidence: float | None,
             as_json: bool, **kw: Any) -> None:
    """Best tokens/s/GPU at each tokens/s/user: the throughput/interactivity frontier.

    Sweeps the SLA from the lowest to the highest reachable interactivity (or --sla-range) and
    solves at each level; '*' marks where the optimal layout changes. With --serving auto (the default)
    both serving modes are searched at every level: the table shows the better plan, its mode and the
    other mode's tokens/s/GPU, and --plot draws both curves. With no options: the study's case
    (GPT-MoE-1.8T, 64 GB200 NVL72 GPUs, 32768/1024 tokens, FP4).
    """
    from planner import studies

    _check_plot_path(plot_out)
    kw["speculation"] = _speculation(kw)
    problem = with_percentile(_problem(kw, None, ttft), percentile)
    if confidence is not None:
        from planner.uncertainty import with_confidence

        problem = with_confidence(problem, confidence)
    bar = _Progress(quiet or as_json)
    try:
        f = studies.frontier(problem, points=points, sla_range=sla_range, chunks=chunks,
                             micro_batches=micro_batches, method=method, params=_params(time_limit),
                             all_layouts=all_layouts, progress=bar, serving=serving)
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
    _echo(render.frontier_lines(f, all_layouts))
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
@_serving_option("per case and level")
def compare(at: float, ttft: tuple[float, int | None] | None, percentile: int | None, points: int,
            sla_range: tuple[float, float] | None,
            chunks: tuple[int, ...] | None, micro_batches: tuple[int, ...] | None, method: str, time_limit: float,
            csv_out: str | None, plot_out: str | None, all_layouts: bool, quiet: bool, serving: str, as_json: bool,
            **kw: Any) -> None:
    """Frontiers of several cases on one chart and one table, with the ratio at one SLA.

    Repeat --cluster, --model, --precision, --expert-precision or --gpus for the cases: e.g. --cluster gb200-nvl72
    --precision fp4 --cluster h100-sxm --precision fp8 compares two (options pair up in order; one
    given once applies to every case). With --serving auto (the default) each case's best at --at and at
    each level is the better serving mode's, marked with its mode; --plot draws both modes' curves.
    """
    from planner import studies

    _check_plot_path(plot_out)
    problems = [with_percentile(_problem(c, None, ttft), percentile) for c in _cases(kw)]
    bar = _Progress(quiet or as_json)
    try:
        result = studies.compare(problems, at=at, points=points, sla_range=sla_range, chunks=chunks,
                                 micro_batches=micro_batches, method=method, params=_params(time_limit),
                                 all_layouts=all_layouts, progress=bar, serving=serving)
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
    w = problems[0].workload
    _echo(render.compare_lines(result, w.isl, w.osl, _limit(ttft)[0], at))
    for what, out in (("points", csv_out), ("chart", plot_out)):
        if out:
            click.echo(f"{what} written to {out}")


@main.command()
@_problem_options
@click.option("--demand", required=True, callback=_callback(parse_demand),
              help="What to serve: 40req/s (requests) or 50000tok/s (output tokens).")
@click.option("--sla", "sla", default="20tok/s", show_default=True, callback=_callback(parse_sla_at),
              help="Minimum tokens/s per user: 20tok/s, 20, or 50ms per token; 40ms@p99 for a percentile.")
@click.option("--ttft", default=None, callback=_callback(parse_ttft_at),
              help="Maximum time to first token, e.g. 5s or 500ms; 450ms@p99 for a percentile.")
@click.option("--max-gpus", type=click.IntRange(min=1, max=1 << 20), default=65536, show_default=True,
              help="Most GPUs to consider.")
@_serving_option("(fewer GPUs)")
@_search_options
def size(demand: tuple[float | None, float | None], sla: tuple[float, int | None],
         ttft: tuple[float, int | None] | None, chunks: tuple[int, ...] | None,
         micro_batches: tuple[int, ...] | None, method: str, max_gpus: int, serving: str, time_limit: float,
         as_json: bool, **kw: Any) -> None:
    """Fewest GPUs (whole nodes) that serve a demand at an SLA, and the plan: replicas, layout, batch.

    --gpus is ignored: the sizing finds the count. Demand in tokens/s counts output tokens. With --serving
    auto (the default) both serving modes are sized and the one needing fewer GPUs is shown, with the
    other's count; a disaggregated sizing is the fewest whole nodes whose best disaggregated plan serves
    the demand.
    """
    from planner import studies

    problem = _problem(kw, sla, ttft)
    req, tok = demand
    result = studies.size(problem, demand_requests_per_s=req, demand_tokens_per_s=tok, chunks=chunks,
                          micro_batches=micro_batches, method=method, params=_params(time_limit), max_gpus=max_gpus,
                          serving=serving)
    if as_json:
        _dump(result.model_dump(mode="json"))
        return
    _echo(render.size_lines(result, problem, _limit(sla)[0], _limit(ttft)[0]))


FLEET_SCALES = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
"""Demand levels `planner fleet --plot` draws the cost at (every workload's demand times each)."""


@main.command()
@click.argument("fleet_file", metavar="FLEET.yaml")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
@click.option("--method", type=click.Choice(["cpsat", "exhaustive"]), default="cpsat", show_default=True,
              help="CP-SAT over the replica counts, or their enumeration (the test oracle, small fleets only).")
@click.option("--time-limit", default="60", show_default=True, callback=_callback(parse_time_limit),
              help="Time limit of the whole fleet [s]: a plan found by then is reported FEASIBLE with its gap.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
              help="Also draw the cost against demand here (.png, .svg or .pdf): the optimum and the greedy baseline "
                   "at 10% to 300% of the demand; a day plan: each hour's cost and demand.")
def fleet(fleet_file: str, as_json: bool, method: str, time_limit: float, plot_out: str | None) -> None:
    """Many workloads on a priced, mixed inventory: the cheapest deployments serving every demand.

    FLEET.yaml lists the inventory (cluster, gpus, cost_per_gpu_hour), the workloads (name, model, isl, osl,
    sla, demand, and any option of `planner solve`: precision, serving, ttft, percentiles, spec, ...) and the
    objective (min_cost, or max_served: as much demand as the inventory allows). A demand of 24 hourly values
    gives a day plan: the replicas of every hour and the peak inventory. `planner schema --of fleet-file`
    gives the file's schema.
    """
    import time

    from planner import fleetplan as fleet_mod

    _check_plot_path(plot_out)
    params = _params(time_limit)
    t0 = time.perf_counter()
    opts = fleet_mod.FleetOptions.of(fleet_file, method, params, t0 + time_limit)
    result = fleet_mod.fleet(options=opts, params=_params(max(0.01, time_limit - (time.perf_counter() - t0))))
    if plot_out:
        from planner import plots

        if result.hours:
            plots.plot_fleet_day(result, plot_out)
        else:
            left = max(1.0, time_limit - (time.perf_counter() - t0))
            plots.plot_fleet_costs(fleet_mod.cost_curve(None, FLEET_SCALES, options=opts, params=_params(left)),
                                   plot_out)
    if as_json:
        _dump(result.model_dump(mode="json"))
        return
    _echo(render.fleet_lines(result))
    if plot_out:
        click.echo(f"chart written to {plot_out}")


@main.command()
@click.argument("grid", metavar="GRID.yaml", type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write one CSV row per scenario here (required unless --json).")
@click.option("--jobs", "-j", type=click.IntRange(min=1, max=1024), default=1, show_default=True,
              help="Local worker processes; with --ray, the CPUs of the local Ray it starts [default there: every "
                   "CPU].")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run the scenarios as Ray tasks: on a local Ray (no address) or on the cluster at ADDRESS "
                   "(auto, HOST:PORT, ray://HOST:PORT). Needs pip install 'planner[ray]'.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of cached results: a rerun solves only the scenarios missing there [default: "
                   "--out's path + .cache].")
@click.option("--no-cache", is_flag=True, help="Solve every scenario, keep nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows and the summary as JSON on stdout.")
def sweep(grid: str, out: str | None, jobs: int, ray_address: str | None, cache_dir: str | None, no_cache: bool,
          quiet: bool, as_json: bool) -> None:
    """Solve every scenario of a grid: one tidy CSV row per scenario (its plan, or why none exists).

    GRID.yaml lists values of models, clusters, gpus, isl, osl, sla, ttft, precision and serving (a single value
    is a list of one); their product is the scenarios, each solved as `planner solve` does, with the grid's fixed
    options (backend, kv_precision, method, time_limit, chunks, ...). Rows come in the product's order (the last
    axis varying fastest) however they ran. Results are cached by a hash of each scenario's problem, so a rerun
    or an interrupted sweep (Ctrl-C) resumes where it stopped.
    """
    from planner import sweeps

    if out is None and not as_json:
        raise click.UsageError("give --out FILE.csv for the rows (or --json to print them)")
    if cache_dir is not None and no_cache:
        raise click.UsageError("--cache and --no-cache exclude each other")
    if out is not None and not Path(out).resolve().parent.is_dir():
        raise click.BadParameter(f"'{out}': its folder does not exist", param_hint="'--out'")
    folder = None if no_cache else cache_dir or (f"{out}.cache" if out else f"{grid}.cache")
    if ray_address is not None and ray_address.startswith("-"):
        raise click.BadParameter(f"'{ray_address}' is not a Ray address", param_hint="'--ray'")
    given = click.get_current_context().get_parameter_source("jobs") != click.core.ParameterSource.DEFAULT
    bar = _Progress(quiet or as_json)
    try:
        result = sweeps.sweep(grid, jobs=jobs if given else None, ray=ray_address, cache=folder, progress=bar)
    except sweeps.SweepInterrupted as e:
        kept = f", kept in {e.cache}: run the same command again to finish" if e.cache else ""
        bar.close()
        click.echo(f"planner: interrupted: {e.done} of {e.total} scenarios finished{kept}", err=True)
        sys.exit(130)
    bar.close()
    if out:
        sweeps.write_csv(out, result.rows)
    if as_json:
        _dump(result.model_dump(mode="json"))
        return
    _echo(sweeps.summary_lines(result))
    click.echo(f"rows written to {out}")


@main.command()
@click.argument("plan_file", metavar="PLAN.json|-")
@click.option("--engine", required=True, type=click.Choice(["vllm", "sglang", "trtllm", "dynamo"]),
              help="Engine to deploy on: vLLM, SGLang, TensorRT-LLM (trtllm-serve with its extra LLM-API options "
                   "YAML) or Dynamo (a DynamoGraphDeployment).")
@click.option("--version", "version", default=None, help="The engine's version [default: the newest known].")
@click.option("--worker", type=click.Choice(["vllm", "sglang", "trtllm"]), default=None,
              help="--engine dynamo: the engine of its workers [default: the plan's backend, else vllm].")
@click.option("--model-path", default=None,
              help="Checkpoint to serve (a path or HuggingFace repository) in the plan's weight formats [default: "
                   "the catalog's; required where it has none].")
@click.option("--draft-model-path", default=None,
              help="Speculative plans: the EAGLE head or draft model to serve [default: the catalog's].")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=None,
              help="GPUs per node, for a cluster not in the catalog [GPUs].")
@click.option("--rank", type=click.IntRange(min=1), default=1, show_default=True,
              help="Which plan of a list (solve --json --top N) to export, best first.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write the files (launch.sh, YAML) into this folder instead of printing them.")
@click.option("--json", "as_json", is_flag=True, help="Print the commands and files as JSON.")
def export(plan_file: str, engine: str, version: str | None, worker: str | None, model_path: str | None,
           draft_model_path: str | None, gpus_per_node: int | None, rank: int, out_dir: str | None,
           as_json: bool) -> None:
    """Launch commands or config files deploying a plan (the JSON of `planner solve --json`, or - for stdin).

    vLLM and SGLang: launch.sh with the server command of each role (a disaggregated plan's prefill and decode
    workers, by its first argument); TensorRT-LLM: launch.sh with trtllm-serve and its extra LLM-API options
    YAML per role; Dynamo: dynamo.yaml, a DynamoGraphDeployment for kubectl apply. Carried: the parallel sizes,
    running requests and batched tokens of the batch and chunk, the memory fraction, KV-cache and weight
    formats, the context length, the arguments of a replica over several nodes, speculative decoding and the
    prefill/decode roles. A setting the engine cannot express is an error naming it.
    """
    from planner import exports as ex
    from planner.catalog import load_plans

    plans = load_plans(plan_file)
    if rank > len(plans):
        raise click.BadParameter(f"{plan_file} has {len(plans)} plan{'s' if len(plans) > 1 else ''}",
                                 param_hint="'--rank'")
    result = ex.export(plans[rank - 1], engine, version, model_path=model_path, draft_model_path=draft_model_path,
                       worker=worker, gpus_per_node=gpus_per_node)
    if out_dir is not None:
        for path in ex.write(result, Path(out_dir)):
            click.echo(f"wrote {path}")
        return
    if as_json:
        _dump(result.model_dump(mode="json"))
        return
    click.echo(ex.text(result), nl=False)
