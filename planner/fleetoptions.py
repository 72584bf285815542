"""The options of a fleet: for each workload, GPU type and serving mode, the replicas worth deploying.

An option is one replica of a workload on one GPU type: an aggregated replica (one layout with dp = 1 and its
batch and chunk) or a disaggregated deployment unit (x prefill workers + y decode workers of one layout each, its
own rate matching), with its GPUs g and the output tokens/s T it serves at the workload's SLA (its full batch;
requests/s = T / osl). Every figure comes from the single-deployment planner's tables and cost model:

- aggregated: the table of one replica of up to L GPUs (planner.options.tabulate with max_dp = 1, the table
  `planner size` uses); among the options obeying every rule (layout rules, memory, chunk keeps up, the SLA at its
  percentile, the TTFT limit), the most tokens/s for each replica size (ties: the lower TPOT, then the larger
  chunk);
- disaggregated: the two pool tables of a deployment of up to 2L GPUs on one GPU type (planner.disagg), the prefill
  options disagg.prefill_rows keeps (no option of as few GPUs beats them in effective capacity, exact), and for
  every prefill option p, decode group (worker GPUs, KV receive class), worker counts x, y with
  x g_p + y g_d <= 2L and the link the unit's size implies (scale-up when it fits one domain), the fastest decode
  option whose requests the x prefill workers serve within the TTFT limit: R y / osl <= E_p x (the closed form of
  disagg.enumerate_argbest); for each unit size, the most tokens/s. Each unit kept is re-checked by
  disagg.deployment_violations.

Replicas of up to L GPUs are considered, and disaggregated units of up to 2L GPUs (workers from the candidate
lists of L): L = min(the GPU type's inventory, the power of two at or above max(8, a node, 4 x the fewest GPUs the
model fits on)). Larger replicas only add communication, and more replicas add throughput; `planner size` looks
further (64 GPUs at least), which a fleet of many workloads and GPU types cannot afford in time. A fleet plan is
optimal over these options.

**The reduction is exact for the fleet problem.** Replica counts enter the fleet's model linearly (n copies of an
option serve n T), and the placement rule is monotone (planner.placement): m replicas of option q fit in the place
one replica of option o occupies whenever m <= NodeRule.copies(g_q, g_o). So if m T_q >= T_o for such an m, any
fleet plan using o is matched, in the same nodes and at no more cost, by one using m replicas of q instead: o is
*dominated* and is dropped (`reduce`; with m = 1 this is the Pareto set of (GPUs, tokens/s): fewer or as many
GPUs, at least as many tokens/s). Dominance is transitive and ties go to the first of a fixed order, so an optimum
over the kept options is an optimum over every option of the tables. The exhaustive oracle (method 'exhaustive')
keeps only the Pareto set (m = 1), found by plain enumeration (planner.oracle: every layout and batch for
aggregated replicas, every worker pair for disaggregated units), a superset of the reduced set, and the tests
check that both reach the same optimum.

Rates enter the CP-SAT model as integers of RATE_UNIT tokens/s, rounded down (a replica never counts for more
than the float model gives it); dominance is decided on the same integers, so that both methods see one problem.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from planner import cost, disagg, rules
from planner.errors import InfeasibleError, SearchTooLargeError, TimeLimitError
from planner.placement import NodeRule
from planner.search import Method, Searcher, build_plan, diagnose, speculation_variants
from planner.space import Candidate, Space
from planner.specs import ClusterSpec, Parallel, Plan, Problem, Serving, SolverInfo

RATE_UNIT = 1.0 / 1024
"""Resolution of the rates and demands of the fleet's integer model [tokens/s]."""
DISAGG_MARGIN = 1e-9
"""Relative margin kept below the rate-matching threshold when a unit's decode option is picked, so that the float
re-check (disagg.deployment_violations) passes whatever the order of operations."""


@dataclass(frozen=True)
class GpuType:
    """One GPU type of an inventory: its cluster, GPUs, price and placement rule."""

    cluster: ClusterSpec
    gpus: int  # [GPUs], whole nodes
    cost_per_gpu_hour: float  # [$/GPU-hour]

    @property
    def rule(self) -> NodeRule:
        return NodeRule.of(self.cluster, self.gpus)

    @property
    def name(self) -> str:
        return self.cluster.name


@dataclass(frozen=True)
class Option:
    """One replica (or disaggregated unit) of a workload on one GPU type: its GPUs, the output tokens/s it serves
    at full batch by the float model, and what it is (layout, batch, chunk; the prefill pool of a unit)."""

    workload: int  # index of the workload
    gpu_type: int  # index of the GPU type in the inventory
    serving: Serving
    gpus: int  # GPUs of one replica or unit [GPUs]
    tokens_per_s: float  # output tokens/s of one replica at full batch [tokens/s]
    tpot_s: float  # [s]
    ttft_s: float  # mean TTFT at full batch [s]
    label: str
    problem: Problem  # the workload's problem on this GPU type, gpus = this replica's
    parallel: Parallel  # agg: the layout (dp 1); disagg: the decode workers' layout (dp = their count)
    micro_batch: int  # decode requests per attention-DP rank per micro-batch [requests]
    chunk: int  # prefill chunk [tokens]
    prefill: Parallel | None = None  # disagg: the prefill workers' layout (dp = their count)

    @property
    def rate(self) -> int:
        """Output tokens/s in the integer model's units, rounded down [RATE_UNIT tokens/s]."""
        return int(math.floor(self.tokens_per_s / RATE_UNIT))

    @property
    def requests_per_s(self) -> float:
        """Requests/s one replica completes at full batch [requests/s]."""
        return self.tokens_per_s / self.problem.workload.osl

    @property
    def tokens_per_s_per_user(self) -> float:
        return 1.0 / self.tpot_s

    def _disagg(self) -> disagg.DisaggProblem:
        return disagg.make_disagg(self.problem)

    def violations(self) -> list[str]:
        """Every rule this replica breaks on the float cost model (empty when valid): all the rules of a plan,
        the SLA at its percentile and the TTFT limit included."""
        p = self.problem
        if self.serving == "agg":
            return rules.violations(p, self.parallel, self.micro_batch, self.chunk)
        sla = p.sla
        return disagg.deployment_violations(self._disagg(), self.prefill, self.chunk, self.parallel, self.micro_batch,
                                            sla.min_tokens_per_s_per_user if sla else None,
                                            sla.max_ttft_s if sla else None)

    def float_tokens(self) -> float:
        """Output tokens/s of one replica, recomputed by the float cost model [tokens/s]."""
        if self.serving == "agg":
            g = cost.metrics_grid(self.problem, self.parallel, self.micro_batch, self.chunk)
            return float(g["concurrency"] / g["tpot_s"])
        cand = disagg.DisaggCandidate(self.prefill, self.chunk, self.parallel, self.micro_batch, "EVALUATED")
        return disagg.deployment_tokens(self._disagg(), cand)

    def plan(self) -> Plan:
        """The Plan of one replica (the JSON of `planner estimate`), every figure from the float cost model."""
        info = SolverInfo(method="estimate", status="EVALUATED", wall_s=0.0)
        if self.serving == "agg":
            return build_plan(self.problem, Candidate(self.parallel, self.micro_batch, self.chunk, "EVALUATED"), info)
        return disagg.build_plan(self._disagg(), self.prefill, self.chunk, self.parallel, self.micro_batch, info)


@dataclass
class WorkloadOptions:
    """A workload's options over the inventory, and for each GPU type without any, why."""

    options: list[Option]
    reasons: dict[str, Exception]


def _short(par: Parallel) -> str:
    return par.model_copy(update={"dp": 1}).label.removesuffix(" DP1")


# --- aggregated replicas -----------------------------------------------------------------------------------------


def _agg_table(q: Problem, t) -> list[tuple[Parallel, int, int, float, float, float]]:
    """(layout, micro-batch, chunk, tokens/s, TPOT, TTFT) of the best option of each replica size in the table `t`
    of one replica (every rule obeyed): the single-deployment planner's table (planner.options)."""
    sla = q.sla.min_tokens_per_s_per_user if q.sla else None
    ok = np.flatnonzero(t.obeys(True, sla))
    if not len(ok):
        return []
    tokens = t.concurrency_of(ok) / t.tpot_s[ok]
    size = t.replica_gpus_of(ok)
    out = []
    for g in np.unique(size):
        mine = np.flatnonzero(size == g)
        top = mine[tokens[mine] == tokens[mine].max()]
        i = top[np.lexsort((-t.chunk_of(ok[top]), t.tpot_s[ok[top]]))[0]]  # ties: the lower TPOT, the larger chunk
        k = int(ok[i])
        out.append((t.parallel(k), int(t.micro_batch_of(k)), int(t.chunk_of(k)), float(tokens[i]), float(t.tpot_s[k]),
                    float(t.ttft_s[k])))
    return out


def _agg_oracle(q: Problem, space: Space, deadline: float) -> list[tuple[Parallel, int, int, float, float, float]]:
    """The same by plain enumeration (planner.oracle.layouts, the cost model and the rule checker): the exhaustive
    method's aggregated replicas."""
    from planner.oracle import layouts

    m, c = np.meshgrid(np.asarray(space.micro_batches), np.asarray(space.chunks), indexing="ij")
    best: dict[int, tuple] = {}
    for par in layouts(q, space, q.gpus):
        if time.perf_counter() > deadline:
            raise TimeLimitError("the fleet's enumeration of replicas did not finish within the time limit",
                                 limit_s=float("nan"))
        g = cost.metrics_grid(q, par, m, c)
        ok = rules.batch_ok(q, g)
        if not ok.any():
            continue
        tokens = np.where(ok, g["concurrency"] / g["tpot_s"], -np.inf)
        i, j = np.unravel_index(int(np.argmax(tokens)), tokens.shape)
        key = (float(tokens[i, j]), -float(g["tpot_s"][i, j]))
        size = par.replica_gpus
        if size not in best or key > best[size][0]:
            best[size] = (key, (par.model_copy(update={"dp": 1}), int(m[i, j]), int(c[i, j]), float(tokens[i, j]),
                                float(g["tpot_s"][i, j]), float(g["ttft_s"][i, j])))
    return [v for _, v in (best[k] for k in sorted(best))]


# --- disaggregated units ----------------------------------------------------------------------------------------


def _disagg_units(q: Problem, space: Space, params, deadline: float
                  ) -> list[tuple[Parallel, int, Parallel, int, float, float]]:
    """(prefill layout with dp = x, chunk, decode layout with dp = y, micro-batch, tokens/s, TPOT) of the unit of
    the most output tokens/s for each unit size up to q.gpus, by the closed form over the planner's pool tables
    (module docstring)."""
    dp = disagg.make_disagg(q)
    s = disagg.DisaggSearcher(dp, space, space, "cpsat", params, deadline)
    pre, dec = s.tables
    klass, receive = disagg.receive_classes(dec)
    limit_s = s.ttft_limit()
    prows = disagg.prefill_rows(dp, pre, receive, limit_s)
    ok_p = prows[pre.broken[prows] == 0]
    floor = q.sla.min_tokens_per_s_per_user if q.sla else None
    sla_ok = ~rules.sla_broken(dec.tpot_hi_s, floor) if floor else np.ones(dec.size, bool)
    ok_d = np.flatnonzero((dec.broken == 0) & sla_ok)
    if not len(ok_p) or not len(ok_d):
        return []
    eff = disagg.effective_capacity(dp, pre, ok_p, receive, limit_s)  # [prefill option, class, link]
    budget, osl, domain = q.gpus, q.workload.osl, q.cluster.scaleup_domain_gpus
    best_t = np.full(budget + 1, -np.inf)  # per unit size: the most tokens/s and its unit
    best_u = np.zeros((budget + 1, 4), np.int64)
    gp = pre.gpus[ok_p].astype(np.int64)[:, None, None]
    xs = np.arange(1, budget // int(gp.min()) + 1)[None, :, None]
    for gd, j in np.unique(np.stack([dec.gpus[ok_d], klass[ok_d]], axis=1), axis=0):
        mine = ok_d[(dec.gpus[ok_d] == gd) & (klass[ok_d] == j)]
        order = mine[np.argsort(dec.rate[mine], kind="stable")]
        rates = dec.rate[order]
        ys = np.arange(1, budget // int(gd) + 1)[None, None, :]
        used = xs * gp + ys * int(gd)  # [prefill option, x, y]
        e = eff[:, j, :][np.arange(len(ok_p))[:, None, None], (used <= domain).astype(np.int64)]  # scale-up if 1 domain
        pos = np.searchsorted(rates, osl * e * xs / ys * (1 - DISAGG_MARGIN), side="right") - 1
        valid = (used <= budget) & (pos >= 0)
        if not valid.any():
            continue
        u, t = used[valid], rates[pos[valid]] * np.broadcast_to(ys, used.shape)[valid]
        top = np.lexsort((-t, u))
        first = top[np.r_[True, u[top][1:] != u[top][:-1]]]
        better = t[first] > best_t[u[first]]
        first = first[better]
        if not len(first):
            continue
        i, x, y = (np.broadcast_to(a, used.shape)[valid][first] for a in
                   (np.arange(len(ok_p))[:, None, None], xs, ys))
        best_t[u[first]] = t[first]
        best_u[u[first]] = np.stack([ok_p[i], x, order[pos[valid][first]], y], axis=1)
    sizes = np.flatnonzero(np.isfinite(best_t))
    return [(pre.parallel(int(kp), int(x)), int(pre.batch[kp]), dec.parallel(int(kd), int(y)), int(dec.batch[kd]),
             float(dec.rate[kd] * y), float(dec.tpot_hi_s[kd])) for kp, x, kd, y in best_u[sizes]]


def _disagg_oracle(q: Problem, space: Space, deadline: float
                   ) -> list[tuple[Parallel, int, Parallel, int, float, float]]:
    """The same by plain enumeration (planner.oracle.exhaustive_disagg_front): the exhaustive method's units."""
    from planner.oracle import exhaustive_disagg_front
    from planner.space import OutOfTime

    sla = q.sla
    try:
        front = exhaustive_disagg_front(disagg.make_disagg(q), space, sla.min_tokens_per_s_per_user if sla else None,
                                        sla.max_ttft_s if sla else None, deadline)
    except OutOfTime:
        raise TimeLimitError("the fleet's enumeration of disaggregated units did not finish within the time limit",
                             limit_s=float("nan")) from None
    out = []
    for g in sorted(front):
        tokens, c = front[g]
        tpot = cost.decode_pass_time(q, c.decode.model_copy(update={"dp": 1}), c.micro_batch)
        out.append((c.prefill, c.chunk, c.decode, c.micro_batch, tokens, float(tpot)))
    return out


# --- the options of one workload ----------------------------------------------------------------------------------


def reduce(options: Sequence[Option], rule: NodeRule) -> list[Option]:
    """The options no other one dominates (module docstring): o is dropped when, for some option q of the same
    workload and GPU type, m = ceil(rate_o / rate_q) replicas of q fit where one o is (NodeRule.copies) and
    serve more (or as much, q coming first in the order by GPUs, then rate, then TPOT, then label)."""
    order = sorted(options, key=lambda o: (o.gpus, -o.rate, o.tpot_s, o.label))
    kept = []
    for i, o in enumerate(order):
        beaten = False
        for j, q in enumerate(order):
            if i == j or q.rate <= 0:
                continue
            m = -(-o.rate // q.rate)
            if m <= rule.copies(q.gpus, o.gpus) and (m * q.rate > o.rate or j < i):
                beaten = True
                break
        if not beaten:
            kept.append(o)
    return kept


SMALL_REPLICA_GPUS = 8
"""Replicas of up to max(this, a node) GPUs are always considered [GPUs]."""


def _replica_limit(q: Problem, gpus: int, chunks: tuple[int, ...] | None, micro_batches: tuple[int, ...] | None,
                   params, deadline: float):
    """(L, the table of one replica of up to L GPUs when it is the one already built, else None): L = the GPU
    type's inventory or, if fewer, the power of two at or above max(8, a node, 4 x the fewest GPUs the model fits
    on) [GPUs]. The fewest GPUs come from the table of replicas of up to max(8, a node) GPUs (layout rules, memory,
    chunk keeps up), or beyond it from search.min_gpus_to_fit; InfeasibleError when the model fits on none."""
    from planner.options import BIT, TABLE_RULES
    from planner.search import min_gpus_to_fit

    small = min(gpus, max(SMALL_REPLICA_GPUS, q.cluster.gpus_per_node))
    qs = q.model_copy(update={"gpus": small})
    t = Searcher(qs, replace(Space.of(qs, chunks, micro_batches), max_dp=1), "cpsat", params, deadline=deadline).table
    rules_ = sum(BIT[r] for r in TABLE_RULES if r != "ttft")
    fits = np.flatnonzero((t.broken & np.uint16(rules_)) == 0)
    fit = int(t.replica_gpus_of(fits).min()) if len(fits) else None
    if fit is not None and (4 * fit <= small or small == gpus):
        return small, t
    if fit is None:
        fit = min_gpus_to_fit(q, "cpsat", params, chunks=chunks, deadline=deadline)
        if fit is None:
            raise InfeasibleError(f"{q.model.name} fits on no layout of {q.cluster.name} GPUs at "
                                  f"{q.precision_label}", "fit")
    if fit > gpus:
        raise InfeasibleError(f"{q.model.name} does not fit on {gpus} {q.cluster.name} GPUs at {q.precision_label}: "
                              f"it fits on {fit}", "fit", {"gpus": fit})
    limit = min(gpus, 1 << (max(small, 4 * fit) - 1).bit_length())
    return limit, (t if limit == small else None)


def workload_options(w: int, problem_of: Callable[[ClusterSpec], Problem], types: Sequence[GpuType], serving: str,
                     method: Method, params, deadline: float, chunks: tuple[int, ...] | None = None,
                     micro_batches: tuple[int, ...] | None = None) -> WorkloadOptions:
    """The options of workload `w` on every GPU type (`problem_of(cluster)`: its problem there): the dominance-
    reduced set (method 'cpsat') or the Pareto set found by plain enumeration (method 'exhaustive'), aggregated and/or
    disaggregated as `serving` allows (agg, disagg, auto: both), over the draft lengths of a searched speculative
    decoding; `reasons` says why a GPU type has none."""
    out: list[Option] = []
    reasons: dict[str, Exception] = {}
    for c, gt in enumerate(types):
        found: list[Option] = []
        errors: list[Exception] = []
        for q in speculation_variants(problem_of(gt.cluster)):
            try:
                limit, table = _replica_limit(q, gt.gpus, chunks, micro_batches, params, deadline)
            except InfeasibleError as e:
                errors.append(e)
                continue
            q = q.model_copy(update={"gpus": limit})
            space = Space.of(q, chunks, micro_batches)
            if serving in ("agg", "auto"):
                one = replace(space, max_dp=1)
                if method == "exhaustive":
                    rows = _agg_oracle(q, one, deadline)
                else:
                    rows = _agg_table(q, table or Searcher(q, one, "cpsat", params, deadline=deadline).table)
                for par, m, chunk, tokens, tpot, ttft in rows:
                    found.append(Option(w, c, "agg", par.replica_gpus, tokens, tpot, ttft, _short(par),
                                        q.model_copy(update={"gpus": par.replica_gpus}), par, m, chunk))
                if not rows:
                    errors.append(diagnose(Searcher(q, one, method, params, deadline=deadline)))
            if serving in ("disagg", "auto") and q.confidence is None and limit >= 2:
                qu = q.model_copy(update={"gpus": min(gt.gpus, 2 * limit)})  # units of workers of up to L GPUs
                units = (_disagg_oracle(qu, space, deadline) if method == "exhaustive"
                         else _disagg_units(qu, space, params, deadline))
                for pre, chunk, dec, m, tokens, tpot in units:
                    g = pre.gpus_used + dec.gpus_used
                    found.append(Option(w, c, "disagg", g, tokens, tpot, math.nan,
                                        f"prefill {pre.dp}x {_short(pre)} + decode {dec.dp}x {_short(dec)}",
                                        q.model_copy(update={"gpus": g}), dec, m, chunk, pre))
                if not units and serving == "disagg":
                    s = disagg.DisaggSearcher(disagg.make_disagg(qu), space, space, method, params, deadline)
                    errors.append(disagg.diagnose(s, q.sla.min_tokens_per_s_per_user if q.sla else None))
            elif serving == "disagg":
                errors.append(InfeasibleError(
                    "--confidence checks aggregated plans only" if q.confidence is not None else
                    f"a disaggregated unit needs at least 2 GPUs; {limit} considered", "layout"))
        if not found:
            reasons[gt.name] = _reach(errors)
            continue
        if method == "exhaustive":  # the Pareto set of (GPUs, tokens/s): more GPUs only for more tokens/s
            found.sort(key=lambda o: (o.gpus, -o.rate, o.tpot_s, o.label))
            front: list[Option] = []
            for o in found:
                if not front or o.rate > front[-1].rate:
                    front.append(o)
            found = front
        else:
            found = reduce(found, gt.rule)
        out += [_finished(o) for o in found]
    return WorkloadOptions(out, reasons)


def _finished(o: Option) -> Option:
    """A kept disaggregated unit with its TTFT at full load, re-checked on the float model (a broken rule is a bug:
    the unit was built to obey them); an aggregated replica as it is."""
    if o.serving == "agg":
        return o
    p, pre, dec = o.problem, o.prefill, o.parallel
    one_p, one_d = pre.model_copy(update={"dp": 1}), dec.model_copy(update={"dp": 1})
    f = cost.disagg_metrics(p, one_p, o.chunk, pre.dp, p, one_d, o.micro_batch, dec.dp,
                            disagg.make_disagg(p).same_domain(o.gpus))
    broken = o.violations()
    if broken:
        raise RuntimeError(f"fleet unit {o.label} of {p.model.name} on {p.cluster.name} breaks {broken}")  # a bug
    return replace(o, ttft_s=float(f["ttft_s"]))


def _reach(errors: list[Exception]) -> Exception:
    """Of the reasons a GPU type has no option (one per draft length or mode), the one saying the most is
    reachable (search._best_error's order)."""
    from planner.search import _best_error

    if not errors:
        return InfeasibleError("no option", "layout")
    kept = [e for e in errors if isinstance(e, (InfeasibleError, SearchTooLargeError, TimeLimitError))]
    return _best_error(kept or errors)
