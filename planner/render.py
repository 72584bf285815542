"""Text rendering of the library's results: aligned tables and the lines `planner` prints.

Pure functions from pydantic results to strings, so that the CLI only parses options, calls the library
and echoes these lines (and other front ends can reuse them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from planner.specs import Plan, Precision, Problem

PLAN_HEADERS = ["#", "layout", "concurrency", "chunk", "tok/s/user", "tok/s/GPU", "TTFT", "memory/GPU"]
FRONTIER_HEADERS = ["SLA", "", "layout", "concurrency", "chunk", "tok/s/user", "tok/s/GPU", "TTFT", "memory/GPU"]
GB = 1e9


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(x) for x in row)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def duration(ms: float) -> str:
    """'14.08 s' or '478.8 ms' from milliseconds; 'inf' when unbounded."""
    if not math.isfinite(ms):
        return "inf"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def plan_rows(plans: Sequence[Plan]) -> list[list[str]]:
    """One row per plan for PLAN_HEADERS."""
    return [
        [str(i), p.label, str(p.batch.concurrency), str(p.batch.chunk_tokens),
         f"{p.metrics.tokens_per_s_per_user:.1f}", f"{p.metrics.tokens_per_s_per_gpu:.1f}",
         duration(p.metrics.ttft_ms),
         f"{p.memory.per_gpu_bytes / GB:.1f}/{p.memory.capacity_bytes / GB:.1f} GB"]
        for i, p in enumerate(plans, 1)
    ]


def _format(precision: Precision, math: str, what: str) -> str:
    """'fp4 weights', 'fp4 weights (bf16 math, weight-only)', 'mxfp4 experts (fp4 math)'."""
    if math == precision.value:
        return f"{precision.value} {what}"
    weight_only = ", weight-only" if math == "bf16" and precision != Precision.bf16 else ""
    return f"{precision.value} {what} ({math} math{weight_only})"


def formats(p: Plan) -> str:
    """The weight formats: 'fp4 weights', or 'bf16 weights + mxfp4 experts (fp4 math)' when the routed
    experts have their own."""
    text = _format(p.precision, p.gemm_math, "weights")
    if p.expert_precision is not None:
        text += " + " + _format(p.expert_precision, p.expert_gemm_math or p.expert_precision.math, "experts")
    return text


def describe(p: Plan) -> str:
    """'gpt-moe-1.8t on 64 x gb200-nvl72, fp4 weights / fp8 KV cache, isl 32768 / osl 1024 tokens'."""
    where = f"{p.gpus} x {p.cluster}"
    if p.serving == "disagg" and p.prefill and p.decode and p.prefill.cluster != p.decode.cluster:
        where = f"{p.prefill.cluster} (prefill) + {p.decode.cluster} (decode), {p.gpus} GPUs given"
    return (f"{p.model} on {where}, {formats(p)} / {p.kv_precision.value} KV cache, "
            f"isl {p.isl} / osl {p.osl} tokens")


def sla_line(p: Plan, problem: Problem) -> str:
    """The case and its service level, the first line of `planner solve`."""
    sla = problem.sla
    limit = f", TTFT <= {duration(sla.max_ttft_s * 1000)}" if sla and sla.max_ttft_s else ""
    if limit and sla.ttft_percentile:
        limit += f" at p{sla.ttft_percentile}"
    floor = sla.min_tokens_per_s_per_user if sla else None
    at = f" (TPOT <= {1000 / floor:.1f} ms at p{sla.tpot_percentile})" if floor and sla.tpot_percentile else ""
    return f"{describe(p)}; SLA >= {floor:g} tokens/s/user{at}{limit}" if floor else f"{describe(p)}{limit}"


def percentile_lines(p: Plan) -> list[str]:
    """The plan's predicted percentiles over requests (planner.percentiles), one line."""
    q = p.metrics.percentiles
    if q is None:
        return []

    def row(d: dict[str, float]) -> str:
        return " / ".join(f"{k} {duration(d[k])}" for k in ("p50", "p90", "p99"))

    return [f"percentiles over requests: TTFT {row(q.ttft_ms)}; TPOT {row(q.tpot_ms)}"]


def layout_line(p: Plan) -> str:
    """Every degree, the GPUs used and the batch per rank."""
    q = p.parallel
    return (f"layout: tp={q.tp} attention_dp={q.attention_dp} pp={q.pp} ep={q.ep} moe_tp={q.moe_tp} dp={q.dp} "
            f"({p.gpus_used} of {p.gpus} GPUs); {p.batch.micro_batch} requests per attention-DP rank per "
            f"micro-batch; TPOT {p.metrics.tpot_ms:.1f} ms{_interval(p, p.metrics.tpot_interval_ms, ms=True)}")


def _interval(p: Plan, pair: tuple[float, float] | None, ms: bool = False) -> str:
    """' (80% interval 29.0–38.2 ms)', or '' when the plan has no intervals."""
    if pair is None or p.metrics.interval_level is None:
        return ""
    lo, hi = pair
    if not ms:
        span = f"{lo:,.1f}–{hi:,.1f}"
    elif hi < 1000 or lo >= 1000:  # one unit for both ends
        a, b = (duration(x) for x in (lo, hi))
        span = f"{a.rsplit(' ', 1)[0]}–{b}"
    else:
        span = f"{duration(lo)}–{duration(hi)}"
    return f" ({p.metrics.interval_level:.0%} interval {span})"


def interval_lines(p: Plan) -> list[str]:
    """TTFT and tokens/s/GPU with their intervals, and where the intervals come from (none without them)."""
    m = p.metrics
    if m.interval_level is None:
        return []
    return [f"intervals from held-out errors of the regime '{m.interval_regime}': TTFT {duration(m.ttft_ms)}"
            f"{_interval(p, m.ttft_interval_ms, ms=True)}, {m.tokens_per_s_per_gpu:,.1f} tok/s/GPU"
            f"{_interval(p, m.tokens_per_s_per_gpu_interval)}"]


def confidence_lines(p: Plan, problem: Problem) -> list[str]:
    """How a plan searched with --confidence meets its SLA, and what the confidence costs."""
    c = p.confidence
    if c is None:
        return []
    sla = problem.sla
    level = f"{c.level * 100:g}"
    checks = []
    if sla and sla.min_tokens_per_s_per_user:
        checks.append(f"TPOT <= {1000 / sla.min_tokens_per_s_per_user:.1f} ms (plan {c.tpot_ms:.1f} ms)")
    if sla and sla.max_ttft_s:
        checks.append(f"TTFT <= {duration(sla.max_ttft_s * 1000)} (plan {duration(c.ttft_ms)})")
    checked = f"SLA checked at {' and '.join(checks)} at the {level}th percentile" if checks else "no SLA to check"
    if c.central_tokens_per_s_per_gpu is None:
        costs = "the central estimate finds no plan to compare with"
    else:
        costs = (f"costs {c.cost:.0%} tokens/s/GPU against the plan at the central estimate "
                 f"({p.metrics.tokens_per_s_per_gpu:,.1f} vs {c.central_tokens_per_s_per_gpu:,.1f}, "
                 f"{c.central_label})")
    return [f"confidence {level}%: {checked}; {costs}"]


SPAN_EFFECT = {
    "tp": "its all-reduce runs hierarchically over scale-out",
    "moe_stage": "its token dispatch and combine run over scale-out",
    "pipeline": "its stage hand-offs run over scale-out",
}
"""What crossing scale-up domains does to each group's communication."""


def span_lines(p: Plan) -> list[str]:
    """One line per group that crosses scale-up domains, e.g. 'TP16 spans 2 scale-up domains of 8 GPUs: ...'."""
    out = []
    for s in p.spans_domains:
        name = {"tp": f"TP{s.gpus}", "moe_stage": f"the MoE stage ({s.gpus} GPUs)",
                "pipeline": f"the pipeline replica (PP{p.parallel.pp}, {s.gpus} GPUs)"}[s.group]
        unit = "GPU" if s.domain_gpus == 1 else "GPUs"
        out.append(f"{name} spans {s.domains} scale-up domains of {s.domain_gpus} {unit}: {SPAN_EFFECT[s.group]}")
    return out


def memory_line(p: Any) -> str:
    """The memory terms of one GPU of the busiest stage (of a Plan, or of one pool of a disaggregated plan)."""
    m = p.memory
    draft = f" + draft {m.draft_bytes / GB:.1f}" if m.draft_bytes else ""
    return (f"memory/GPU: weights {m.weights_bytes / GB:.1f} + KV {m.kv_cache_bytes / GB:.1f}{draft} + activations "
            f"{m.activation_bytes / GB:.1f} + buffers {m.comm_buffer_bytes / GB:.1f} + reserved "
            f"{m.reserved_bytes / GB:.1f} = {m.per_gpu_bytes / GB:.1f} GB of {m.usable_bytes / GB:.1f} GB usable")


SPEC_METHODS = {"mtp": "the model's MTP modules", "eagle": "an EAGLE head", "draft": "draft model {}"}
"""How the speculation line names each method's draft."""


def speculation_lines(p: Plan, problem: Problem) -> list[str]:
    """Speculative decoding: the draft, its length and acceptance (given, searched or the calibration's), the
    tokens per step and the step time; and the best plan of each draft length compared (k = 0: none)."""
    s = p.speculation
    if s is None:
        return []
    from planner.search import SEARCHED_DRAFT_TOKENS

    asked = problem.speculation
    searched = f"best of {SEARCHED_DRAFT_TOKENS[0]}..{SEARCHED_DRAFT_TOKENS[-1]}"
    k_how = "given" if asked is not None and asked.draft_tokens is not None else searched
    given = asked is not None and asked.acceptance is not None
    a_how = "given" if given else f"calibration, {s.method.value}_acceptance"
    m = p.metrics
    pool = "the decode pool's " if p.serving == "disagg" else ""
    tokens = f"{s.draft_tokens} draft token{'s' if s.draft_tokens != 1 else ''} per step ({k_how})"
    out = [f"speculation: {SPEC_METHODS[s.method.value].format(s.draft_model)}, {tokens}, acceptance "
           f"{s.acceptance:.2f} ({a_how}): {m.tokens_per_step:.2f} tokens per step of "
           f"{duration(m.tpot_ms * m.tokens_per_step)} ({pool}TPOT {m.tpot_ms:.1f} ms)"]
    if p.speculation_options:
        def cell(o: Any) -> str:
            name = "none" if o.draft_tokens == 0 else f"k={o.draft_tokens}"
            return f"{name} {o.tokens_per_s_per_gpu:,.1f}" if o.tokens_per_s_per_gpu is not None else f"{name} -"
        out.append("tok/s/GPU by draft length (best plan of each; none = no speculative decoding): "
                   + ", ".join(cell(o) for o in p.speculation_options))
    return out


def note_lines(p: Plan) -> list[str]:
    """Where the model's architecture is approximated."""
    return [f"approximated: {note}" for note in p.notes]


def profile_lines(problem: Problem) -> list[str]:
    """A line when the calibration holds a profile fitted to this very deployment (calibrate --anchor)."""
    return [f"calibration: {problem.calibration.name}, anchored to {prof.rows} measured runs of {prof.model} on "
            f"{prof.system} with {prof.backend}"
            for prof in problem.calibration.profiles
            if (prof.model, prof.system, prof.backend) == (problem.model.name, problem.cluster.name, problem.backend)]


def solver_line(p: Plan) -> str:
    """How the plan was found: method, status, time, bound and gap, the options and the certificate."""
    info = p.solver
    bound = (f", bound {info.objective_bound:.1f} tok/s/GPU, gap {info.gap:.2%}"
             if info.objective_bound is not None and info.gap is not None else "")
    space = f"{info.candidates:,} (layout, batch) options" if info.candidates is not None else "options"
    if info.evaluated is not None:
        space += f", {info.evaluated:,} evaluated"
    if info.model_options is not None:
        space += f", {info.model_options:,} in the CP-SAT model"
    check = {True: "; certified", False: "; certificate FAILED: a better plan exists (status lowered)",
             None: ""}[info.certified]
    return f"solver: {info.method} {info.status} in {info.wall_s:.2f} s{bound}; {space}{check}"


def limits_line(p: Plan) -> list[str]:
    """The rules a larger batch of the plan's layout would break."""
    broken = p.solver.limited_by
    return [f"a larger batch of this layout would break: {', '.join(broken)}"] if broken else []


def pool_lines(p: Plan) -> list[str]:
    """A disaggregated plan's pools, its KV transfer and each pool's memory (none for an aggregated plan)."""
    if p.serving != "disagg" or p.prefill is None or p.decode is None or p.kv_transfer is None:
        return []
    pre, dec, kv = p.prefill, p.decode, p.kv_transfer
    pm, dm = pre.metrics, dec.metrics

    def workers(pool: Any) -> str:
        unit = "worker" if pool.workers == 1 else "workers"
        each = "GPU" if pool.gpus_per_worker == 1 else "GPUs"
        return (f"{pool.workers} {unit} x {pool.label} on {pool.cluster} ({pool.gpus_per_worker} {each} each, "
                f"{pool.gpus} GPUs)")

    return [
        f"prefill: {workers(pre)}; {pre.batch.chunk_tokens} prompt tokens per pass per attention-DP rank; a prompt "
        f"takes {duration(pm.prefill_service_ms or 0.0)} in passes; load {pm.load:.2f} of "
        f"{pm.prefill_capacity_requests_per_s or 0.0:,.2f} prompts/s per worker",
        f"decode: {workers(dec)}; {dec.batch.micro_batch} requests per attention-DP rank per micro-batch "
        f"({dec.batch.concurrency} in flight per worker); TPOT {dm.tpot_ms or 0.0:.1f} ms; "
        f"{dm.tokens_per_s or 0.0:,.0f} tokens/s per worker",
        f"KV transfer: {kv.bytes_per_request / GB:.2f} GB per request over {kv.link} in {duration(kv.transfer_ms)} "
        f"(TTFT {duration(p.metrics.ttft_ms)} = prefill with queueing + transfer + hand-off and request overhead)",
        f"prefill {memory_line(pre)}",
        f"decode {memory_line(dec)}",
        *span_lines(p),
    ]


def alternative_lines(p: Plan) -> list[str]:
    """serving auto: the other mode's best plan, or why it has none."""
    a = p.alternative
    if a is None:
        return []
    if a.reason is not None:
        return [f"{a.serving}: no plan ({a.reason})"]
    return [f"{a.serving} best: {a.label}, {a.tokens_per_s_per_gpu:,.1f} tok/s/GPU at "
            f"{a.tokens_per_s_per_user:.1f} tok/s/user, TTFT {duration(a.ttft_ms or 0.0)}"]


def solve_lines(plans: Sequence[Plan], problem: Problem) -> list[str]:
    """Everything `planner solve` prints for its plans (best first)."""
    best = plans[0]
    head = [sla_line(best, problem), table(PLAN_HEADERS, plan_rows(plans))]
    if best.serving == "disagg":
        return [*head, *pool_lines(best), *percentile_lines(best), *speculation_lines(best, problem),
                *note_lines(best), *profile_lines(problem), solver_line(best), *alternative_lines(best)]
    return [*head, layout_line(best), *span_lines(best), *interval_lines(best), *percentile_lines(best),
            *confidence_lines(best, problem), *speculation_lines(best, problem), memory_line(best),
            *note_lines(best), *profile_lines(problem), solver_line(best), *limits_line(best),
            *alternative_lines(best)]


def estimate_lines(plan: Plan, problem: Problem) -> list[str]:
    """Everything `planner estimate` prints for one plan."""
    if plan.serving == "disagg":
        return [describe(plan), table(PLAN_HEADERS, plan_rows([plan])), *pool_lines(plan),
                *percentile_lines(plan), *speculation_lines(plan, problem), *note_lines(plan), *profile_lines(problem)]
    return [describe(plan), table(PLAN_HEADERS, plan_rows([plan])), layout_line(plan), *span_lines(plan),
            *interval_lines(plan), *percentile_lines(plan), *speculation_lines(plan, problem), memory_line(plan),
            *note_lines(plan),
            *profile_lines(problem)]


def other_throughput(p: Plan) -> str:
    """serving auto: the other mode's tokens/s/GPU, or '-' when it has no plan."""
    a = p.alternative
    return f"{a.tokens_per_s_per_gpu:.1f}" if a is not None and a.tokens_per_s_per_gpu is not None else "-"


def frontier_table(f: Any) -> str:
    """One row per SLA level; '*' where the optimal layout changes. After tok/s/GPU: its interval (when the
    points have one); the serving mode (unless agg only) and, under auto, the other mode's tok/s/GPU."""
    rows = [[f"{pt.target_tokens_per_s_per_user:.1f}", "*" if pt.new_layout else ""] + plan_rows([pt])[0][1:]
            for pt in f.points]
    heads = list(FRONTIER_HEADERS)
    at = heads.index("tok/s/GPU") + 1
    columns: list[tuple[str, Any]] = []
    levels = {pt.metrics.interval_level for pt in f.points if pt.metrics.tokens_per_s_per_gpu_interval}
    if len(levels) == 1:
        def interval(pt: Plan) -> str:
            pair = pt.metrics.tokens_per_s_per_gpu_interval
            return f"{pair[0]:.1f}–{pair[1]:.1f}" if pair else "-"

        columns.append((f"{next(iter(levels)):.0%} interval", interval))
    if f.serving != "agg":
        columns.append(("serving", lambda pt: pt.serving))
    if any(pt.speculation is not None for pt in f.points):
        columns.append(("draft k", lambda pt: str(pt.speculation.draft_tokens) if pt.speculation else "-"))
    if f.serving == "auto":
        columns.append(("other tok/s/GPU", other_throughput))
    for k, (head, cell) in enumerate(columns):
        heads.insert(at + k, head)
        for row, pt in zip(rows, f.points):
            row.insert(at + k, cell(pt))
    return table(heads, rows)


def mode_spans(f: Any) -> list[tuple[str, float, float]]:
    """(serving mode, first level, last level) of each run of consecutive points one mode wins [tokens/s/user]."""
    out: list[tuple[str, float, float]] = []
    for pt in f.points:
        x = pt.target_tokens_per_s_per_user
        if out and out[-1][0] == pt.serving:
            out[-1] = (pt.serving, out[-1][1], x)
        else:
            out.append((pt.serving, x, x))
    return out


def winner_line(f: Any) -> list[str]:
    """serving auto: which mode wins at which SLA levels, and each mode's reach (none otherwise)."""
    if f.serving != "auto" or not f.points:
        return []
    spans = ", ".join(f"{m} {a:.1f}" + (f"..{b:.1f}" if b != a else "") for m, a, b in mode_spans(f))
    reach = "; ".join(f"{c.serving} reaches {c.lowest_tokens_per_s_per_user:.1f}..{c.highest_tokens_per_s_per_user:.1f}"
                      if c.error is None else f"{c.serving}: no plan ({c.error})" for c in f.modes)
    return [f"best mode by SLA level (tokens/s/user): {spans}; {reach}"]


def frontier_summary(f: Any) -> str:
    """The reachable range, the levels, the searches and whether every point is proven."""
    statuses = {pt.solver.status for pt in f.points}
    proof = "every point OPTIMAL" if statuses == {"OPTIMAL"} else "some points only FEASIBLE (time limit)"
    limit = f", TTFT <= {f.max_ttft_s:g} s" if f.max_ttft_s else ""
    at = f" at the {f.confidence * 100:g}th percentile" if f.confidence is not None else ""
    modes = {"agg": "", "disagg": ", disaggregated", "auto": ", agg and disagg"}[f.serving]
    return (f"frontier{limit}: {f.lowest_tokens_per_s_per_user:.1f} .. {f.highest_tokens_per_s_per_user:.1f} "
            f"tokens/s/user reachable{at}; {len(f.points)} SLA levels, {f.solves} searches in {f.wall_s:.1f} s "
            f"({f.method}{modes}, {proof})")


def frontier_lines(f: Any, all_layouts: bool) -> list[str]:
    """Everything `planner frontier` prints."""
    out = [describe(f.points[0]) if f.points else f.case, frontier_summary(f)]
    sla = f.points[0].sla if f.points else None
    if sla is not None and (sla.tpot_percentile or sla.ttft_percentile):
        at = [f"tokens/s/user at p{sla.tpot_percentile} of requests' TPOT"] if sla.tpot_percentile else []
        at += [f"TTFT at p{sla.ttft_percentile}"] if sla.ttft_percentile and sla.max_ttft_s else []
        out[0] += "; levels held at percentiles: " + ", ".join(at)
    if f.points:
        out.append(frontier_table(f))
    out += winner_line(f)
    if f.unreachable:
        out.append(f"unreachable (above {f.highest_tokens_per_s_per_user:.1f} tokens/s/user): "
                   + ", ".join(f"{x:g}" for x in f.unreachable))
    if all_layouts:
        out.append(f"valid layouts (at least one batch fits and keeps up): {f.valid_layouts}")
    return out


def compare_lines(result: Any, isl: int, osl: int, ttft: float | None, at: float) -> list[str]:
    """Everything `planner compare` prints: the cases at `at`, the ratios and the grid of levels."""
    out = [f"isl {isl} / osl {osl} tokens" + (f", TTFT <= {ttft:g} s" if ttft else "")
           + f"; compared at {at:g} tokens/s/user"]
    by_case = {f.case: f for f in result.frontiers}
    modes, auto = result.serving != "agg", result.serving == "auto"
    rows = []
    for r in result.rows:
        f, pt = by_case.get(r.case), r.plan
        reach = f"{f.lowest_tokens_per_s_per_user:.1f}..{f.highest_tokens_per_s_per_user:.1f}" if f else "-"
        rows.append([r.case, reach, pt.label if pt else "unreachable",
                     f"{pt.metrics.tokens_per_s_per_user:.1f}" if pt else "-",
                     f"{r.tokens_per_s_per_gpu:.2f}" if pt else "-"]
                    + ([r.serving or "-"] if modes else [])
                    + ([f"{r.other_tokens_per_s_per_gpu:.2f}" if r.other_tokens_per_s_per_gpu is not None else "-"]
                       if auto else [])
                    + [f"{r.ratio:.2f}x" if r.ratio is not None else "-", f"{f.wall_s:.1f} s" if f else "-"])
    out.append(table(["case", "tok/s/user reachable", f"best layout at {at:g}", "tok/s/user", "tok/s/GPU"]
                     + (["serving"] if modes else []) + (["other tok/s/GPU"] if auto else []) + ["ratio", "sweep"],
                     rows))
    out += [f"{r.case}: no plan: {r.error}" for r in result.rows if r.error]
    base = result.rows[0]
    out += [f"{base.case} serves {1 / r.ratio:.2f}x the tokens/s/GPU of {r.case} at {at:g} tokens/s/user"
            for r in result.rows[1:] if r.ratio]
    keep = [k for k in range(len(result.levels)) if any(row[k] is not None for row in result.grid)]
    marks = result.grid_serving if auto else [[None] * len(row) for row in result.grid]

    def cell(value: float | None, mode: str | None) -> str:
        return "-" if value is None else f"{value:.2f}" + (" d" if mode == "disagg" else "")

    out.append("best tokens/s/GPU at each tokens/s/user ('-': unreachable" + ("; d: disaggregated" if auto else "")
               + "):")
    out.append(table(["case"] + [f"{result.levels[k]:g}" for k in keep],
                     [[r.case] + [cell(row[k], mode[k]) for k in keep]
                      for r, row, mode in zip(result.rows, result.grid, marks)]))
    return out


def size_lines(result: Any, problem: Problem, sla: float, ttft: float | None) -> list[str]:
    """Everything `planner size` prints: an aggregated sizing's replicas and layout, or a disaggregated one's
    pools; under auto, what the other mode needs."""
    plan = result.plan
    limit = f", TTFT <= {duration(ttft * 1000)}" if ttft else ""
    unit = result.node_unit
    dis = result.serving == "disagg"
    what = plan.label if dis else (f"{result.replicas} replica{'s' if result.replicas != 1 else ''} of "
                                   f"{plan.label.rsplit(' DP', 1)[0]}")
    body = pool_lines(plan) if dis else [layout_line(plan)]
    considered = "workers" if dis else "replicas"
    return [
        f"{plan.model} on {problem.cluster.name}, {formats(plan)}, isl {plan.isl} / osl {plan.osl} tokens",
        f"demand {result.demand_requests_per_s:,.4g} requests/s = {result.demand_tokens_per_s:,.0f} output "
        f"tokens/s at >= {sla:g} tokens/s/user{limit}",
        f"fewest GPUs{' (disaggregated)' if dis else ''}: {result.gpus} ({result.nodes} {unit}"
        f"{'s' if result.nodes != 1 else ''} of {result.gpus_per_node} GPUs; GPUs are counted in whole {unit}s), "
        f"{result.gpus_used} in use: {what}",
        table(PLAN_HEADERS, plan_rows([plan])),
        *body,
        f"capacity {result.capacity_tokens_per_s:,.0f} tokens/s ({result.capacity_requests_per_s:,.4g} "
        f"requests/s), {result.utilization:.0%} used by the demand; {considered} of up to "
        f"{result.max_replica_gpus} GPUs considered; {result.wall_s:.1f} s",
        *size_alternative_lines(result),
        *note_lines(plan),
    ]


def size_alternative_lines(result: Any) -> list[str]:
    """serving auto: the GPUs the other mode needs, or why it has no sizing."""
    a = result.alternative
    if a is None:
        return []
    if a.reason is not None:
        return [f"{a.serving}: {a.reason}"]
    return [f"{a.serving} needs {a.gpus} GPUs ({a.gpus_used} in use: {a.label})"]


def model_rows(specs: Sequence[Any]) -> str:
    """The model catalog as a table."""
    rows = [[m.name, str(m.num_layers), str(m.hidden_size), f"{m.num_attention_heads}/{m.num_kv_heads}"
             + (" MLA" if m.mla else ""),
             f"{m.num_experts}/top-{m.experts_per_token}" if m.is_moe else "dense",
             f"{m.total_params / 1e9:,.1f}B", f"{m.active_params / 1e9:,.1f}B",
             ", ".join(m.aliases[:2]) + (" ..." if len(m.aliases) > 2 else "")] for m in specs]
    return table(["name", "layers", "hidden", "heads q/kv", "experts", "params", "active", "aliases"], rows)


def cluster_rows(specs: Sequence[Any]) -> str:
    """The cluster catalog as a table."""
    def tf(c: Any, k: str) -> str:
        return f"{c.tflops[k]:,.0f}" if k in c.tflops else "-"

    rows = [[c.name, c.gpu, f"{c.hbm_capacity_gb:.0f}", f"{c.hbm_bandwidth_tbps:g}", tf(c, "bf16"), tf(c, "fp8"),
             tf(c, "fp4"), str(c.scaleup_domain_gpus), f"{c.scaleup_bandwidth_gbps:g}",
             f"{c.scaleout_bandwidth_gbps:g}", ", ".join(c.aliases[:2])] for c in specs]
    return table(["name", "GPU", "HBM GB", "TB/s", "BF16 TF", "FP8 TF", "FP4 TF", "domain", "up GB/s", "out GB/s",
                  "aliases"], rows)


def pct(x: float) -> str:
    """A relative error to two significant figures: 4.1%, 19%."""
    return f"{x:.0%}" if x >= 0.095 else f"{x:.1%}"


def interval_table_text(t: Any) -> str:
    """An interval table (specs.IntervalTable) as text: per regime, the held-out runs and the 80% range of
    measured / predicted of each figure."""
    from planner.uncertainty import DEFAULT_LEVEL, POOLED, REGIMES

    lo, hi = (1 - DEFAULT_LEVEL) / 2, (1 + DEFAULT_LEVEL) / 2
    by = {(r.regime, r.metric): r for r in t.rows}

    def span(row: Any) -> str:
        a, b = (math.exp(float(np.interp(x, t.probs, row.quantiles))) - 1 for x in (lo, hi))
        return f"{a:+.0%}..{b:+.0%}"

    rows = []
    for name in (POOLED, *REGIMES):
        got = [by.get((name, m)) for m in ("tpot", "ttft", "tokens_per_s_per_gpu")]
        if got[0] is None:
            continue
        rows.append([name, str(got[0].runs), *(span(r) if r else "-" for r in got)])
    level = f"{DEFAULT_LEVEL:.0%}"
    head = table(["regime", "runs", f"TPOT {level}", f"TTFT {level}", f"tok/s/GPU {level}"], rows)
    return (f"error bars ({t.source}): measured / predicted - 1, {level} of held-out runs; regimes with fewer "
            f"than {t.min_runs} runs use 'all'\n{head}")


# --- planner fleet -------------------------------------------------------------------------------------------------


def money(x: float | None) -> str:
    """'$1,234.50' ('-' for None)."""
    return "-" if x is None else f"${x:,.2f}"


def _rate(req: float, osl: int) -> str:
    """'12 req/s (6,144 tok/s)'."""
    return f"{req:,.4g} req/s ({req * osl:,.0f} tok/s)"


def _sla_text(sla: Any) -> str:
    """'>= 30 tok/s/user, TTFT <= 2.00 s' with their percentiles."""
    if sla is None:
        return "-"
    parts = []
    if sla.min_tokens_per_s_per_user:
        at = f" at p{sla.tpot_percentile}" if sla.tpot_percentile else ""
        parts.append(f">= {sla.min_tokens_per_s_per_user:g} tok/s/user{at}")
    if sla.max_ttft_s:
        at = f" at p{sla.ttft_percentile}" if sla.ttft_percentile else ""
        parts.append(f"TTFT <= {duration(sla.max_ttft_s * 1000)}{at}")
    return ", ".join(parts)


def _inventory(r: Any) -> str:
    return ", ".join(f"{t.cluster} ({t.gpus_inventory} GPUs, {money(t.cost_per_gpu_hour)}/GPU-hour)"
                     for t in r.gpu_types)


OBJECTIVES = {"min_cost": "the cheapest plan serving every demand",
              "max_served": "as much demand as the inventory serves, then the cheapest"}
"""What each objective asks for, as the first line of `planner fleet` says it."""


def _placement_lines(r: Any) -> list[str]:
    """Where the replicas sit, per GPU type: '2 nodes each [4x chat: TP1 PP1]', '1x big: TP8 PP1 on 2 trays'."""
    out = []
    for t in r.gpu_types:
        if not t.placement:
            continue
        groups = []
        for g in t.placement:
            seen: dict[str, int] = {}
            for x in g.replicas:
                seen[x] = seen.get(x, 0) + 1
            content = ", ".join(f"{n}x {x}" if n > 1 else x for x, n in seen.items())
            each = " each" if g.count > 1 else ""
            if g.nodes_each > 1:  # one replica over whole nodes
                groups.append(f"{g.count}x {content} on {g.nodes_each} {t.node_unit}s{each}")
            else:
                groups.append(f"{g.count} {t.node_unit}{'s' if g.count > 1 else ''}{each} [{content}]")
        out.append(f"placement {t.cluster}: " + "; ".join(groups))
    return out


def _solver_text(r: Any) -> str:
    s = r.solver
    if r.objective == "min_cost":
        bound = (f"bound {money(s.cost_bound_per_hour * 24)} per day" if r.hours else
                 f"bound {money(s.cost_bound_per_hour)}/hour") if s.cost_bound_per_hour is not None else "no bound"
    else:
        bound = (f"bound {s.served_bound_tokens_per_s:,.0f} tok/s served" if s.served_bound_tokens_per_s is not None
                 else "no bound")
    gap = f", gap {s.gap:.2%}" if s.gap is not None else ""
    hours = f", {s.hours_optimal} of 24 hours OPTIMAL" if s.hours_optimal is not None else ""
    return (f"solver: {s.method} {s.status} in {s.search_wall_s:.2f} s{hours}, {bound}{gap}; {s.options} options in "
            f"the model (built in {s.options_wall_s:.2f} s); every replica re-checked on the float cost model, the "
            f"placement node by node")


def _greedy_text(r: Any) -> str:
    g = r.greedy
    what = "greedy (per workload in turn, the cheapest $/token option first)"
    if not g.feasible:
        return f"{what}: no plan ({g.reason})"
    if r.objective == "max_served":
        return (f"{what}: {g.served_tokens_per_s:,.0f} tok/s served, {g.worse_by:.1%} less, at "
                f"{money(g.cost_per_hour)}/hour")
    cost = f"{money(g.cost_per_hour * 24)} per day" if r.hours else f"{money(g.cost_per_hour)}/hour"
    return f"{what}: {cost}, {g.worse_by:.1%} more than the optimum"


def fleet_lines(r: Any) -> list[str]:
    """Everything `planner fleet` prints (planner.fleetplan.FleetResult): the workloads and their deployments, the
    GPU types used and their cost, the solver's status with bound and gap, and the greedy baseline; a day plan's
    hours, replicas per hour and peak inventory."""
    day = bool(r.hours)
    head = (f"fleet: {len(r.workloads)} workload{'s' if len(r.workloads) != 1 else ''} on {_inventory(r)}; "
            f"{r.objective}: {OBJECTIVES[r.objective]}" + ("; a day's load curve, 24 hourly demands" if day else ""))
    demand = "demand (mean)" if day else "demand"
    rows = [[w.name, f"{w.model} {w.precision}", f"{w.isl}/{w.osl}", _sla_text(w.sla), _rate(w.demand_req_per_s, w.osl),
             f"{w.served_req_per_s:,.4g} req/s", f"{w.capacity_req_per_s:,.4g} req/s"] for w in r.workloads]
    out = [head, table(["workload", "model", "isl/osl", "SLA", demand, "served", "capacity"], rows)]
    for w in r.workloads:
        for name, why in w.gpu_types_without_option.items():
            out.append(f"{w.name}: nothing on {name} ({why})")
    deps = [[w.name, d.cluster, d.serving, d.label, str(d.replicas), str(d.gpus), f"{d.requests_per_s:,.4g}",
             f"{d.tokens_per_s_per_user:.1f}", duration(d.ttft_ms)] for w in r.workloads for d in w.deployments]
    peak = " (peak)" if day else ""
    out.append(table(["workload", "GPU type", "serving", "layout", f"replicas{peak}", "GPUs", "req/s", "tok/s/user",
                      "TTFT"], deps))
    types = [[t.cluster, str(t.gpus_used), str(t.gpus_inventory), f"{t.nodes_used} of {t.nodes_inventory}",
              str(t.gpus_busy), f"{t.cost_per_gpu_hour:,.2f}", f"{t.cost_per_hour:,.2f}"] for t in r.gpu_types]
    used = "peak GPUs" if day else "GPUs used"
    out.append(table(["GPU type", used, "of", "nodes" + (" (peak)" if day else ""), "busy GPUs", "$/GPU-hour",
                      "$/hour" + (" (mean)" if day else "")], types))
    out += _placement_lines(r) if not day else []
    per_m = f", {money(r.cost_per_million_tokens)} per 1M output tokens" if r.cost_per_million_tokens else ""
    if day:
        out.append(f"cost: {money(r.cost_per_day)} per day (mean {money(r.cost_per_hour)}/hour) for "
                   f"{r.served_tokens_per_s:,.0f} output tokens/s on average{per_m}")
    else:
        out.append(f"cost: {money(r.cost_per_hour)}/hour for {r.served_tokens_per_s:,.0f} output tokens/s served"
                   f"{per_m}")
    out += [_solver_text(r), _greedy_text(r)]
    return out + (_day_lines(r) if day else [])


def _day_lines(r: Any) -> list[str]:
    """A day plan: the peak inventory; each hour's demand, GPUs and cost; the replicas of every deployment per
    hour."""
    names = [t.cluster for t in r.gpu_types]
    rows = [[str(h.hour), f"{h.demand_tokens_per_s:,.0f}", f"{h.served_tokens_per_s:,.0f}",
             *(str(h.gpus_used[n]) for n in names), f"{h.cost_per_hour:,.2f}",
             f"{h.greedy_cost_per_hour:,.2f}" if h.greedy_cost_per_hour is not None else "-",
             f"{h.gap:.2%}" if h.gap is not None else "-"] for h in r.hours]
    peaks = [f"{t.cluster} {t.gpus_used} of {t.gpus_inventory} GPUs (hour {t.peak_hour})" for t in r.gpu_types
             if t.gpus_used]
    out = ["peak inventory needed: " + (", ".join(peaks) if peaks else "none"),
           table(["hour", "demand tok/s", "served tok/s", *(f"{n} GPUs" for n in names), "$/hour", "greedy $/hour",
                  "gap"], rows), "replicas per hour:"]
    grid = [[w.name, f"{d.cluster} {d.serving} {d.label}", *(str(x) for x in d.replicas_by_hour or [])]
            for w in r.workloads for d in w.deployments]
    out.append(table(["workload", "deployment", *(str(h) for h in range(24))], grid))
    return out


def problem_line(problem: Problem) -> str:
    """An ask without a plan in one line: model, GPUs, formats, lengths and service level."""
    text = _format(problem.precision, problem.gemm_math, "weights")
    if problem.mixed_formats:
        text += " + " + _format(problem.experts, problem.math_for(problem.experts), "experts")
    w, sla = problem.workload, problem.sla
    line = (f"{problem.model.name} on {problem.gpus} x {problem.cluster.name}, {text} / {problem.kv_precision.value} "
            f"KV cache, isl {w.isl} / osl {w.osl} tokens")
    if sla and sla.min_tokens_per_s_per_user:
        line += f"; SLA >= {sla.min_tokens_per_s_per_user:g} tokens/s/user"
        line += f" at p{sla.tpot_percentile}" if sla.tpot_percentile else ""
    if sla and sla.max_ttft_s is not None:
        line += f", TTFT <= {duration(sla.max_ttft_s * 1000)}"
        line += f" at p{sla.ttft_percentile}" if sla.ttft_percentile else ""
    return line


def slack_text(value: float | None, unit: str) -> str:
    """A rule's slack with its unit: '12.0 GB', '0.000 rho', '3 GPUs', '-' for none."""
    if value is None:
        return "-"
    if unit == "GPUs":
        return f"{value:.0f} GPUs"
    if unit == "rho":
        return f"{value:.3f} rho"
    if unit == "s":
        return duration(value * 1000)
    return f"{value:.2f} {unit}" if unit == "tok/s/user" else f"{value:.1f} {unit}"


STATUS_ORDER = {"binding": 0, "tight": 1, "slack": 2, "holds": 3}
"""The order of explain's rule table: binding rules first."""


def rule_rows(result: Any) -> list[list[str]]:
    """explain's rule table: binding rules first, each with its slack and what releasing it allows."""
    out = []
    for st in sorted(result.rules, key=lambda r: STATUS_ORDER[r.status]):
        gain = "-"
        if st.status == "binding" and st.released_tokens_per_s_per_gpu is not None:
            more = st.released_tokens_per_s_per_gpu / result.plan.metrics.tokens_per_s_per_gpu - 1
            gain = f"{st.released_tokens_per_s_per_gpu:,.2f} tok/s/GPU (+{more:.2%}): {st.released_label}"
        out.append([st.rule, st.status, slack_text(st.slack, st.unit), st.detail, gain])
    return out


def runner_up_rows(result: Any) -> list[list[str]]:
    """explain's runner-up table."""
    out = []
    for i, u in enumerate(result.runner_ups, 1):
        loses = []
        if u.breaks_at_winner_batch:
            loses.append(f"breaks {', '.join(u.breaks_at_winner_batch)} at the winner's batch")
        if u.cost_term is not None and (u.cost_excess_ms or 0) > 0:
            loses.append(f"+{u.cost_excess_ms:.3g} ms GPU/token on {u.cost_term}")
        out.append([str(i), u.label, u.serving, f"{u.tokens_per_s_per_gpu:,.1f}", f"{u.tokens_per_s_per_user:.1f}",
                    f"{u.gap:.2%}", "; ".join(loses) or "-"])
    return out


def headline_text(h: Any) -> str:
    """A relaxation's resulting plan in one line."""
    return (f"{h.label} ({h.serving}) on {h.gpus} GPUs, {h.tokens_per_s_per_gpu:,.1f} tok/s/GPU at "
            f"{h.tokens_per_s_per_user:.1f} tok/s/user, TTFT {duration(h.ttft_ms)}")


def change_text(change: dict[str, Any]) -> str:
    """A relaxation's change as command-line options: '--sla 45tok/s'."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in change.items())


def explain_lines(result: Any, problem: Problem) -> list[str]:
    """Everything `planner explain` prints."""
    if not result.feasible:
        lines = [problem_line(problem), f"infeasible: {result.error}"]
        if result.conflict:
            lines.append(f"conflict (a minimal set of requirements that cannot hold together): "
                         f"{', '.join(result.conflict)}")
        if result.relaxations:
            lines.append("relaxations, each confirmed by planner solve:")
            lines.append(table(["change", "result"], [[change_text(r.change), headline_text(r.result)]
                                                      for r in result.relaxations]))
        else:
            lines.append("no relaxation found that planner solve confirms")
        return lines + [f"note: {n}" for n in result.notes]
    plan = result.plan
    m = plan.metrics
    lines = [sla_line(plan, problem),
             f"plan: {plan.label} ({plan.serving}), {m.tokens_per_s_per_gpu:,.1f} tok/s/GPU at "
             f"{m.tokens_per_s_per_user:.1f} tok/s/user, TTFT {duration(m.ttft_ms)}",
             f"binding: {', '.join(result.binding) or 'none'} (releasing each lets the solver serve more "
             "tokens/s/GPU)",
             table(["rule", "status", "slack", "at the optimum", "released"], rule_rows(result))]
    if result.runner_ups:
        lines.append("runner-ups:")
        lines.append(table(["#", "layout", "serving", "tok/s/GPU", "tok/s/user", "gap", "loses on"],
                           runner_up_rows(result)))
    return lines + [f"note: {n}" for n in result.notes]
