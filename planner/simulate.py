"""`planner simulate`: a discrete-event simulation of the engine scheduler serving a plan, every iteration's time
from the one cost model (planner.cost), tabulated once over (decoding requests, prefill tokens) and interpolated.

What runs. A deployment serves its requests on *lanes*: one lane is one pipeline micro-batch of one attention-DP
rank, the unit the cost model's m and chunk are counted per (an aggregated replica has attention_dp x pp lanes; a
disaggregated prefill worker has as many prefill lanes, a decode worker as many decode lanes). Every lane of the
deployment is simulated, not one representative rank: an aggregated plan's dp x attention_dp x pp lanes; a
disaggregated plan's prefill lanes behind one shared FIFO and its decode lanes. Each lane iterates back to back
while it has work, every iteration taking

- aggregated lane: ``cost.pass_time(m, c)``: m requests decoding (at most ``batch.micro_batch``, the cap) and c
  prompt tokens of chunked prefill (at most ``batch.chunk_tokens``, the budget, filled first-come first-served
  from the lane's queue: a prompt takes ceil(prefill tokens / chunk) chunk-carrying iterations when alone);
  the iteration that carries a prompt's last token streams its first token, and the request decodes from the
  next one (if the decode batch is full it waits, prefilled, and the budget pauses until a slot frees);
- disaggregated prefill lane: ``cost.prefill_pass_time(c)``, c <= the chunk, taken from its own prompt first,
  then from the pool's FIFO; a finished prompt's KV moves in ``cost.kv_transfer_time`` (per prompt length),
  then the hand-off (``Factors.disagg_handoff_ms``) and the request joins a decode lane, where its first token
  counts (TTFT) when a slot and KV room let it in;
- disaggregated decode lane: ``cost.decode_pass_time(m)``.

KV capacity per lane: the HBM the plan leaves to the KV cache (``memory.usable_bytes`` minus weights, activations,
buffers and reserve: an engine gives all free memory to KV), in tokens at the cost model's bytes per token for the
workload's context. A prompt takes the KV of its whole prefill (the tokens the prefix cache misses) when its first
chunk is scheduled, and starts only when that fits beside the decoding requests' next tokens (it waits in the queue
meanwhile); a decoding request takes one token more per iteration, and when decoding outgrows the cache the
latest-admitted request is preempted (counted): an aggregated lane recomputes its tokens through the chunk budget, a
decode lane swaps them out and back. A request whose whole context exceeds a lane's cache is refused (counted).

Traffic: open (Poisson, gaps gamma-spread by the workload's burstiness: traffic.poisson_arrivals), a closed loop
of N clients (each sends its next request when the previous one's last token arrives; all start at once, as a
benchmark does), or a trace's arrival times (traffic.load_trace; lengths from the trace). Lengths are drawn per
request as the workload says (traffic.sample_lengths); ``prefix_hit`` removes that share of each prompt's prefill
tokens. Open and trace requests go to a lane at random (each lane sees a Poisson share, as the cost model assumes
each rank does); client k of a closed loop always uses lane k mod lanes. Default traffic: a closed loop of the
plan's concurrency (requests in flight per replica x replicas, or per decode worker x decode workers), the benchmark
setting; the plan's own rate (``rate_per_s=plan.metrics.requests_per_s``) loads every decode slot fully, so open
traffic at it queues without bound.

The cost model's other fixed times: its request overhead (``Factors.ttft_overhead_ms``) is added to TTFT and
end-to-end latency; an aggregated request's tokens stream ``admission_iterations - 1/2`` of its lane's mean
iterations late (the cost model counts that many iterations of the mean TPOT; the half iteration in flight when a
request arrives is simulated). ITL is every iteration a measured request decodes in, plus its stalls (waits for a
decode slot or after a preemption) as one gap each.

Not simulated: speculative decoding (refused); iteration times of a batch whose contexts differ from the workload's
mean lengths (the cost model's attention terms take the mean: lengths change the work per request, not the time per
iteration); attention-DP ranks' synchronisation at MoE layers (each lane runs its own iterations); the pipeline
stages of a lane as separate resources (a lane's pass is the cost model's time through all stages); prefill
workers' own KV limit; network contention of KV transfers.

Times inside are seconds; the result is in milliseconds (``_ms``) where it says so.
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_right
from collections import deque
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner import cost, traffic
from planner.errors import SpecError, UnknownNameError
from planner.specs import Calibration, ClusterSpec, ModelSpec, Parallel, Plan, Problem, Workload

DEFAULT_REQUESTS = 10_000
"""Requests measured when neither `requests` nor a timed trace says how many [requests]."""
WARMUP_SHARE = 0.1
"""Share of the measured requests simulated first and left out of the statistics (generated traffic) [share]."""
MAX_REQUESTS = 10_000_000
"""Most requests one simulation measures [requests]."""
C_GRID_LINEAR = 129
"""Points of the prefill-token grid spread evenly over 0..chunk (plus every count up to 64 and 64 log-spaced
ones): pass times between them are interpolated linearly (measured error below 1e-4 on the default case's
aggregated plan)."""
TIE = 1e-12
"""Relative slack when an arrival time falls on an iteration boundary [share of an iteration]."""

AGG, DEC, PRE = 0, 1, 2
"""Lane kinds: aggregated (prefill and decode), disaggregated decode, disaggregated prefill."""
IDLE, HEAD, MULTI, DECODE = 0, 1, 2, 3
"""Segment modes: nothing to do; k iterations carrying a full chunk of the first prompt; one iteration carrying
whatever the budget takes from several prompts; k decode-only iterations."""
SEG_END, DEC_ARRIVE, SEND = 0, 1, 2
"""Event kinds, in this order at equal times: a lane's segment ends, a prefilled request reaches its decode lane,
a client sends its next request."""


# --- result --------------------------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyStats(_Out):
    """Mean and percentiles of one latency over the measured requests (ITL: over their tokens) [ms]."""

    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float

    def at(self, percentile: int | None) -> float:
        """The figure an SLA names: the mean (None) or p50/p90/p95/p99 [ms]."""
        return self.mean_ms if percentile is None else getattr(self, f"p{percentile}_ms")


class SimResult(_Out):
    """What `simulate` measured: latencies of the measured requests, throughput over the measurement window (from
    the first to the last measured request's arrival), and the scheduler's figures."""

    serving: Literal["agg", "disagg"]
    traffic: str = Field(description="The arrivals, e.g. 'closed loop of 96 clients' or 'open, 2.5 requests/s'")
    arrivals: Literal["closed", "open", "trace"]
    rate_per_s: float | None = Field(None, description="Open traffic: the arrival rate [requests/s]")
    clients: int | None = Field(None, description="Closed loop: the clients [requests]")
    seed: int
    requests: int = Field(description="Requests measured [requests]")
    warmup: int = Field(description="Requests simulated before the measured ones, left out [requests]")
    simulated: int = Field(description="Requests that arrived in the whole run, warm-up and tail included")
    rejected: int = Field(0, description="Measured requests longer than a lane's whole KV cache, never served")
    lanes: int = Field(description="Lanes that decode (aggregated: every rank's micro-batch of every replica)")
    prefill_lanes: int = Field(0, description="Disaggregated: prefill lanes of all prefill workers")
    ttft: LatencyStats
    tpot: LatencyStats | None = Field(description="Per request (finish - first token) / (osl - 1); None if osl 1")
    itl: LatencyStats | None = Field(description="Time between a request's consecutive tokens, over all tokens: "
                                     "the iterations it decodes in, and its stalls")
    e2e: LatencyStats = Field(description="Arrival to last token")
    arrival_rate_per_s: float = Field(description="Requests that arrived per second in the window [requests/s]")
    requests_per_s: float = Field(description="Requests finished per second in the window [requests/s]")
    tokens_per_s: float = Field(description="Output tokens of the requests finished in the window, per s [tokens/s]")
    tokens_per_s_per_gpu: float = Field(description="tokens_per_s over the plan's GPUs given [tokens/s/GPU]")
    mean_decode_batch: float = Field(description="Decoding requests per lane iteration (the cost model's m)")
    mean_in_flight: float = Field(description="Requests between arrival and last token, time-averaged")
    preemptions: int = Field(description="Requests preempted because decoding outgrew a lane's KV cache")
    kv_waits: int = Field(description="Measured requests that waited for KV room before prefill or decode")
    decode_waits: int = Field(description="Measured requests that waited, prefilled, for a decode slot")
    mean_prefill_wait_ms: float = Field(description="Arrival to its first chunk carried, mean [ms]")
    mean_decode_wait_ms: float = Field(description="Prefilled (disagg: transferred) to decoding, mean [ms]")
    kv_capacity_tokens: float = Field(description="KV cache of one decoding lane [tokens]")
    kv_peak_share: float = Field(description="Most KV any lane held at once, over its capacity (<= 1)")
    span_s: float = Field(description="Simulated time from the first arrival to the last finish [s]")
    wall_s: float = Field(description="Wall time of the simulation [s]")


# --- the plan's problem --------------------------------------------------------------------------------------


def load_plan(source: str | Path) -> Plan:
    """The Plan of a JSON file (`planner solve --json`), or of stdin when `source` is '-'; SpecError naming the
    file and what is wrong with it (catalog.load_plans), or that it holds several plans."""
    from planner.catalog import load_plans

    plans = load_plans(source)
    if len(plans) != 1:
        name = "stdin" if str(source) == "-" else str(source)
        raise SpecError(f"{name}: a list of {len(plans)} plans; simulate one (planner solve --json without --top)")
    return plans[0]


def _catalog(kind: str, name: str, given: str | Path | ModelSpec | ClusterSpec | None):
    from planner.catalog import load_cluster, load_model

    load = load_model if kind == "model" else load_cluster
    if given is not None:
        return given if isinstance(given, (ModelSpec, ClusterSpec)) else load(given)
    try:
        return load(name)
    except (UnknownNameError, SpecError):
        option = "--model" if kind == "model" else ("--decode-cluster" if kind == "decode cluster" else "--cluster")
        raise SpecError(f"the plan's {kind} '{name}' is not in the catalog: give its file ({option} FILE)") from None


def problem_of_plan(plan: Plan, *, model: str | Path | ModelSpec | None = None,
                    cluster: str | Path | ClusterSpec | None = None,
                    calibration: Calibration | str | Path | None = None) -> Problem:
    """The Problem a plan was made for, rebuilt from its JSON: the model and cluster by their catalog names (or the
    files/specs given), its workload, formats, backend, SLA and GPUs, with the shipped calibration (or the one
    given) at the plan's memory utilization. A disaggregated plan's problem is its prefill pool's
    (`decode_problem_of_plan` gives the decode pool's). SpecError when the model or cluster is not in the
    catalog and no file is given."""
    from planner.calibrate import load_calibration
    from planner.catalog import validation_message

    cluster_name = plan.prefill.cluster if plan.serving == "disagg" and plan.prefill else plan.cluster
    m = _catalog("model", plan.model, model)
    c = _catalog("cluster", cluster_name, cluster)
    cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
    if plan.memory.capacity_bytes > 0:
        util = plan.memory.usable_bytes / plan.memory.capacity_bytes
        if 0.3 < util <= 1.0 and abs(util - cal.memory_utilization) > 1e-9:
            cal = cal.model_copy(update={"memory_utilization": util})
    workload = plan.workload or Workload(isl=plan.isl, osl=plan.osl)
    gpus = plan.prefill.gpus if plan.serving == "disagg" and plan.prefill and plan.decode and \
        plan.prefill.cluster != plan.decode.cluster else plan.gpus
    try:
        return Problem(model=m, cluster=c, gpus=gpus, workload=workload, precision=plan.precision,
                       expert_precision=plan.expert_precision, kv_precision=plan.kv_precision, sla=plan.sla,
                       calibration=cal, backend=plan.backend, speculation=plan.speculation)
    except ValidationError as e:
        raise SpecError(f"the plan does not make a problem: {validation_message(e)}") from None


def decode_problem_of_plan(plan: Plan, problem: Problem, decode_cluster: str | Path | ClusterSpec | None = None
                           ) -> Problem:
    """The decode pool's Problem of a disaggregated plan: `problem` itself when both pools share a cluster, else
    `problem` on the decode cluster (by its catalog name or the file/spec given) with the decode pool's GPUs."""
    if plan.decode is None or (plan.prefill is not None and plan.decode.cluster == plan.prefill.cluster
                               and decode_cluster is None):
        return problem
    c = _catalog("decode cluster", plan.decode.cluster, decode_cluster)
    return problem.model_copy(update={"cluster": c, "gpus": plan.decode.gpus})


# --- iteration times -----------------------------------------------------------------------------------------


class _PassTable:
    """Iteration times [s] of one lane kind for m = 0..m_max decoding requests and c = 0..c_max prefill tokens: the
    cost model evaluated once on a grid (every m; c on C_GRID_LINEAR even points, every count up to 64 and 64
    log-spaced ones) and interpolated linearly in c; each (m, c) asked is remembered."""

    def __init__(self, fn, m_max: int, c_max: int) -> None:
        if c_max > 0:
            cs = np.unique(np.concatenate([np.arange(0, min(c_max, 64) + 1), np.linspace(0, c_max, C_GRID_LINEAR),
                                           np.geomspace(1, c_max, 64)]).round().astype(np.int64))
        else:
            cs = np.zeros(1, np.int64)
        table = np.asarray(fn(np.arange(m_max + 1)[:, None], cs[None, :]), dtype=float)
        table = np.broadcast_to(table, (m_max + 1, len(cs)))
        if not np.isfinite(table).all() or (table[:, 1:] <= 0).any() or (table[1:, :] <= 0).any():
            raise SpecError("simulate: the cost model gives no finite positive iteration time for this plan")
        self.cs = cs.tolist()
        self.rows = table.tolist()
        self.memo: dict[tuple[int, int], float] = {}

    def __call__(self, m: int, c: int) -> float:
        key = (m, c)
        t = self.memo.get(key)
        if t is None:
            row, cs = self.rows[m], self.cs
            i = bisect_right(cs, c) - 1
            if i >= len(cs) - 1:
                t = row[-1]
            else:
                c0, c1 = cs[i], cs[i + 1]
                t = row[i] + (row[i + 1] - row[i]) * (c - c0) / (c1 - c0)
            self.memo[key] = t
        return t


def kv_lane_tokens(p: Problem, par: Parallel, memory) -> float:
    """KV cache one lane may fill [tokens]: the HBM per GPU the plan leaves to KV (usable minus weights,
    activations, buffers and reserve), at the cost model's bytes per request at full context (isl + osl, over every
    layer, cost.kv_cache_bytes_per_gpu) spread over its tokens; minus the prefix cache's resident tokens (shared by
    the pp lanes of a rank)."""
    w = p.workload
    pool = memory.usable_bytes - (memory.per_gpu_bytes - memory.kv_cache_bytes)
    per_request = float(cost.kv_cache_bytes_per_gpu(p, par.tp, 1))
    tokens = pool / per_request * (w.isl + w.osl)
    return tokens - w.cached_prefix_tokens / par.pp


# --- the engine ----------------------------------------------------------------------------------------------


class _Lane:
    """One lane's scheduler state at its current iteration boundary `t` [s] (after `step` iterations), and the
    segment of `k` identical iterations (each `d` seconds, carrying `c` prefill tokens) it is running."""

    __slots__ = ("kind", "t", "step", "heap", "dec_n", "meas_n", "order", "fifo", "pending", "waiting", "ready",
                 "kv", "cap", "peak", "mode", "k", "d", "c", "ver", "busy", "started")

    def __init__(self, kind: int, cap: float) -> None:
        self.kind, self.cap = kind, cap
        self.t, self.step = 0.0, 0
        self.heap: list[tuple[int, int, int]] = []  # decoding: (finish step, epoch, request)
        self.dec_n = self.meas_n = 0  # decoding requests, of them measured
        self.order: list[tuple[int, int]] = []  # (request, epoch) in the order they joined the batch
        self.fifo: deque[list[int]] = deque()  # [request, prefill tokens left] in service order
        self.started = 0  # leading fifo entries that hold their KV (aggregated lane; a prefill lane: all)
        self.pending = 0  # prefill tokens left in those entries [tokens]
        self.waiting: deque[int] = deque()  # not yet queued for prefill (agg) / not yet decoding (decode lane)
        self.ready: deque[int] = deque()  # aggregated: prefilled, waiting for a decode slot
        self.kv = 0.0  # KV held [tokens]
        self.peak = 0.0
        self.mode, self.k, self.d, self.c, self.ver = IDLE, 0, 0.0, 0, 0
        self.busy = 0.0  # time spent in iterations [s] (over `step` iterations)


class _Engine:
    """The event loop over every lane of a deployment (the module docstring says what it does). Requests are
    numbered in arrival order; `measure` = (first, end) of the measured ones."""

    def __init__(self, *, agg: bool, lanes: list[_Lane], pre_lanes: list[_Lane], t_agg, t_dec, t_pre, chunk: int,
                 pre_chunk: int, cap: int, lag: float, handoff: float, transfer, overhead: float, lengths,
                 arrivals, clients: int | None, measure: tuple[int, int], steps=None) -> None:
        self.agg = agg
        self.steps = steps or (lambda tokens: tokens)  # decode steps a request needs for `tokens` more tokens
        self.lanes, self.pre_lanes = lanes, pre_lanes
        self.T_agg, self.T_dec, self.T_pre = t_agg, t_dec, t_pre
        self.C, self.CP, self.cap = chunk, pre_chunk, cap
        self.lag_iters, self.handoff, self.transfer, self.overhead = lag, handoff, transfer, overhead
        self.lengths, self.arrivals, self.clients = lengths, arrivals, clients
        self.m0, self.m1 = measure
        self.heap: list[tuple] = []
        self.seq = 0
        r: dict[str, list] = {k: [] for k in (
            "arr", "isl", "osl", "pre", "lane", "gen", "epoch", "join_step", "kv_join", "recompute", "t_first",
            "t_fin", "t_start", "t_ready", "t_b1", "t_evict", "t_join", "lag", "client", "flags")}
        self.r = r
        self.zeros = [r[k] for k in ("gen", "epoch", "join_step", "kv_join", "recompute", "lag", "flags")]
        self.nans = [r[k] for k in ("t_first", "t_fin", "t_start", "t_ready", "t_b1", "t_evict", "t_join")]
        (self.arr, self.isl, self.osl, self.pre, self.lane, self.gen, self.epoch, self.join_step, self.kv_join,
         self.recompute, self.t_first, self.t_fin, self.t_start, self.t_ready, self.t_b1, self.t_evict, self.t_join,
         self.lag, self.client, self.flags) = r.values()
        self.shared: deque[list[int]] = deque()  # disaggregated: the prefill pool's FIFO
        self.idle_pre: list[_Lane] = list(reversed(pre_lanes))
        self.itl: dict[float, int] = {}  # iteration time [s] -> measured tokens it streamed
        self.stalls: list[float] = []  # measured requests' gaps between tokens beyond the iterations [s]
        self.preemptions = self.done = self.rejected = 0
        self.window = [math.inf, math.inf]  # arrivals of the first and last measured requests [s]
        self.in_window = False
        self.n_sys, self.area, self.t_area = 0, 0.0, 0.0  # requests in the system, its integral over the window
        self.fin_window = self.tok_window = 0
        self.sum_m = self.n_steps = 0  # decode-lane iterations in the window and their decoding requests

    # --- requests ---

    def measured(self, rid: int) -> bool:
        return self.m0 <= rid < self.m1

    def new_request(self, t: float, lane: int, client: int = -1) -> int:
        rid = len(self.arr)
        isl, osl, pre = self.lengths(rid)
        self.arr.append(t)
        self.isl.append(isl)
        self.osl.append(osl)
        self.pre.append(pre)
        self.lane.append(lane)
        self.client.append(client)
        for column in self.zeros:
            column.append(0)
        for column in self.nans:
            column.append(math.nan)
        if rid == self.m0:
            self.in_window, self.window[0], self.t_area = True, t, t
        self.count(t, +1)
        if rid == self.m1 - 1:
            self.window[1] = t
        return rid

    def count(self, t: float, delta: int) -> None:
        if self.in_window:
            self.area += self.n_sys * (t - self.t_area)
            self.t_area = t
        self.n_sys += delta

    def close_window(self, t: float) -> None:
        if self.in_window and t >= self.window[1]:
            self.count(self.window[1], 0)
            self.in_window = False

    def finish(self, rid: int, t: float) -> None:
        """The request's last token left the engine at t; it reaches the client after the streaming lag and the
        request overhead (both counted in its time in flight)."""
        self.t_fin[rid] = t
        after = self.lag[rid] + self.overhead
        if self.in_window:
            self.fin_window += 1
            self.tok_window += self.osl[rid]
            self.area += after
        self.count(t, -1)
        if self.measured(rid):
            self.done += 1
        if self.clients is not None:
            self.push(t + after, SEND, self.client[rid], 0)

    def reject(self, rid: int, t: float) -> None:
        self.flags[rid] |= 4
        if self.measured(rid):
            self.rejected += 1
        self.finish(rid, t)

    def push(self, t: float, kind: int, a, b) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, kind, self.seq, a, b))

    # --- decoding batch ---

    def join(self, L: _Lane, rid: int, kv_held: float) -> None:
        L.dec_n += 1
        if self.measured(rid):
            L.meas_n += 1
        self.join_step[rid] = L.step
        self.kv_join[rid] = kv_held
        self.t_join[rid] = L.t
        e = self.epoch[rid]
        heapq.heappush(L.heap, (L.step + self.steps(self.osl[rid] - self.gen[rid]), e, rid))
        order = L.order
        order.append((rid, e))
        if len(order) > 64 and len(order) > 4 * L.dec_n:  # drop the requests that left, keeping the order
            L.order = [x for x in order if x[1] == self.epoch[x[0]]]

    def leave(self, L: _Lane, rid: int) -> float:
        """Take a decoding request out of the batch, freeing its KV; its KV tokens [tokens]."""
        L.dec_n -= 1
        if self.measured(rid):
            L.meas_n -= 1
        held = self.kv_join[rid] + (L.step - self.join_step[rid])
        L.kv -= held
        self.epoch[rid] += 1
        return held

    def preempt(self, L: _Lane) -> None:
        """Decoding outgrew the KV cache: the latest-admitted decoding request leaves and queues first again (an
        aggregated lane recomputes its tokens through the chunk budget, a decode lane swaps them back in)."""
        while True:
            rid, e = L.order.pop()
            if e == self.epoch[rid]:
                break
        self.gen[rid] += L.step - self.join_step[rid]
        held = self.leave(L, rid)
        self.preemptions += 1
        self.t_evict[rid] = L.t
        if L.kind == AGG:  # first of the prompts not started
            self.recompute[rid] = int(held)
            L.fifo.insert(L.started, [rid, int(held)])
        else:
            self.kv_join[rid] = held
            L.waiting.appendleft(rid)

    # --- one lane ---

    def plan(self, L: _Lane) -> None:
        """Admit what the lane's state allows at its boundary, choose its next segment and schedule its end."""
        if L.kind == PRE:
            self.plan_pre(L)
            return
        agg = L.kind == AGG
        while True:
            self.admit(L)
            m = L.dec_n
            room = L.cap - L.kv
            if m and room < m:
                self.preempt(L)
                continue
            mode, k, c = IDLE, 0, 0
            if agg and L.fifo and not L.ready:
                fifo = L.fifo
                while L.pending < self.C and L.started < len(fifo):  # start prompts whose whole prefill fits
                    rid, tokens = fifo[L.started]
                    if L.kv + tokens + m > L.cap:
                        if self.measured(rid):
                            self.flags[rid] |= 1
                        break
                    L.kv += tokens
                    if L.kv > L.peak:
                        L.peak = L.kv
                    L.started += 1
                    L.pending += tokens
                room = L.cap - L.kv
                if L.started:
                    head = fifo[0][1]
                    if head >= self.C:
                        mode, c, k = HEAD, self.C, head // self.C
                    else:
                        mode, c, k = MULTI, min(self.C, L.pending), 1
                    if m:
                        k = min(k, int(room // m))
            if mode == IDLE:
                if not m:
                    L.mode = IDLE
                    return
                mode, k = DECODE, int(room // m)
            if m:
                h = L.heap
                while h[0][1] != self.epoch[h[0][2]]:
                    heapq.heappop(h)
                k = min(k, h[0][0] - L.step)
            break
        d = self.T_agg(m, c) if agg else self.T_dec(m, 0)
        L.mode, L.k, L.d, L.c = mode, k, d, c
        L.ver += 1
        self.push(L.t + k * d, SEG_END, L, L.ver)

    def plan_pre(self, L: _Lane) -> None:
        """A prefill lane's next segment: its own prompts first, then whole prompts from the pool's FIFO, up to the
        chunk (a prompt stays on the lane that started it)."""
        C = self.CP
        if L.fifo and L.fifo[0][1] >= C:
            L.mode, L.c, L.k = HEAD, C, L.fifo[0][1] // C
        else:
            shared = self.shared
            while L.pending < C and shared:
                entry = shared.popleft()
                L.fifo.append(entry)
                L.started += 1
                L.pending += entry[1]
            if not L.fifo:
                L.mode = IDLE
                self.idle_pre.append(L)
                return
            L.mode, L.c, L.k = MULTI, min(C, L.pending), 1
        L.d = self.T_pre(0, L.c)
        L.ver += 1
        self.push(L.t + L.k * L.d, SEG_END, L, L.ver)
        if self.shared and self.idle_pre:
            self.wake_pre(L.t)

    def wake_pre(self, t: float) -> None:
        other = self.idle_pre.pop()
        if t > other.t:
            other.t = t
        self.plan_pre(other)

    def admit(self, L: _Lane) -> None:
        """The front of the lane's queue moves on: an aggregated lane queues prompts for the chunk budget (plan()
        starts them); a decode lane lets requests into the batch while it has a slot and KV room for them. A
        request whose whole context exceeds the lane's KV cache is refused."""
        w = L.waiting
        if L.kind == AGG:
            while w:
                rid = w.popleft()
                if self.pre[rid] + self.osl[rid] > L.cap:
                    self.reject(rid, L.t)
                    continue
                L.fifo.append([rid, self.pre[rid]])
            return
        while w and L.dec_n < self.cap:
            rid = w[0]
            if self.pre[rid] + self.osl[rid] > L.cap:
                w.popleft()
                self.reject(rid, L.t)
                continue
            first = self.gen[rid] == 0
            need = self.pre[rid] if first else self.kv_join[rid]
            if L.kv + need > L.cap:
                if self.measured(rid):
                    self.flags[rid] |= 1
                break
            w.popleft()
            L.kv += need
            if L.kv > L.peak:
                L.peak = L.kv
            if first:  # the first token streams as the decode lane takes the request in
                self.gen[rid] = 1
                b1 = self.t_b1[rid]
                self.t_first[rid] = self.t_ready[rid] + (L.t - b1)
                if L.t > b1 and self.measured(rid):
                    self.flags[rid] |= 2
                if self.osl[rid] == 1:
                    L.kv -= need
                    self.finish(rid, L.t)
                    continue
            elif self.measured(rid):
                self.stalls.append(L.t - self.t_evict[rid])
            self.join(L, rid, need)

    def apply(self, L: _Lane, j: int) -> list[int]:
        """Run j iterations of the lane's segment; the prompts whose prefill they complete."""
        d, m = L.d, L.dec_n
        t0 = L.t
        L.t = t0 + j * d
        L.step += j
        L.busy += j * d
        if m:
            L.kv += m * j
            if L.meas_n:
                self.itl[d] = self.itl.get(d, 0) + L.meas_n * j
        if self.in_window and L.kind != PRE:
            self.sum_m += m * j
            self.n_steps += j
        done: list[int] = []
        if L.mode == HEAD:
            entry = L.fifo[0]
            rid = entry[0]
            if self.t_start[rid] != self.t_start[rid]:
                self.t_start[rid] = t0
            took = j * L.c
            entry[1] -= took
            L.pending -= took
            if entry[1] == 0:
                L.fifo.popleft()
                L.started -= 1
                done.append(rid)
        elif L.mode == MULTI:
            left = L.c
            fifo = L.fifo
            while left > 0:
                entry = fifo[0]
                rid = entry[0]
                if self.t_start[rid] != self.t_start[rid]:
                    self.t_start[rid] = t0
                take = entry[1] if entry[1] <= left else left
                entry[1] -= take
                left -= take
                L.pending -= take
                if entry[1] == 0:
                    fifo.popleft()
                    L.started -= 1
                    done.append(rid)
        if L.kv > L.peak:
            L.peak = L.kv
        return done

    def seg_end(self, L: _Lane) -> None:
        """The lane's segment ran to its end: prompts prefilled, requests finished, the next segment planned."""
        done = self.apply(L, L.k)
        t = L.t
        if L.kind == PRE:
            for rid in done:
                self.push(t + self.transfer(self.isl[rid]) + self.handoff, DEC_ARRIVE, rid, 0)
            self.plan_pre(L)
            return
        h = L.heap
        while h and h[0][0] <= L.step:
            _, e, rid = heapq.heappop(h)
            if e != self.epoch[rid]:
                continue
            self.gen[rid] = self.osl[rid]
            self.leave(L, rid)
            self.finish(rid, t)
        if L.kind == AGG:
            ready = L.ready
            while ready and L.dec_n < self.cap:
                rid = ready.popleft()
                if self.measured(rid):
                    self.flags[rid] |= 2
                    self.stalls.append(t - self.t_ready[rid])
                self.join(L, rid, self.kv_join[rid])
            for rid in done:
                self.prefilled(L, rid, t)
        self.plan(L)

    def prefilled(self, L: _Lane, rid: int, t: float) -> None:
        """An aggregated lane carried a prompt's last token: it streams its first token (recomputed after a
        preemption: its next one) and decodes from the next iteration, or waits, prefilled, for a slot."""
        held = self.recompute[rid] or self.pre[rid]
        if self.recompute[rid]:
            self.recompute[rid] = 0
            if self.measured(rid):
                self.stalls.append(t - self.t_evict[rid])
        else:
            self.t_first[rid] = t
            self.lag[rid] = self.lag_iters * L.busy / L.step
        self.gen[rid] += 1
        if self.gen[rid] >= self.osl[rid]:
            L.kv -= held
            self.finish(rid, t)
            return
        self.t_ready[rid] = t
        if L.dec_n < self.cap and not L.ready:
            self.join(L, rid, held)
        else:
            self.kv_join[rid] = held
            L.ready.append(rid)

    def arrive(self, L: _Lane, rid: int, t: float) -> None:
        """Request rid reaches lane L at time t (aggregated: schedulable; decode lane: its KV transferred)."""
        replan = L.mode == IDLE
        if replan:
            if t > L.t:
                L.t = t
        elif L.mode == DECODE:
            j = max(0, math.ceil((t - L.t) / L.d - TIE))
            if j < L.k:
                if j:
                    self.apply(L, j)
                L.ver += 1  # the segment's end event is void; plan() schedules what follows
                L.mode, replan = IDLE, True
        if L.kind == DEC:
            self.t_ready[rid] = t
            self.t_b1[rid] = L.t if replan else L.t + L.k * L.d
        L.waiting.append(rid)
        if replan:
            self.plan(L)

    def pre_arrive(self, rid: int, t: float) -> None:
        """A prompt joins the prefill pool's FIFO; an idle prefill lane starts on it."""
        self.shared.append([rid, self.pre[rid]])
        if self.idle_pre:
            self.wake_pre(t)

    def enter(self, rid: int, t: float) -> None:
        """A new request enters its aggregated lane, or the prefill pool's FIFO."""
        if self.agg:
            self.arrive(self.lanes[self.lane[rid]], rid, t)
        else:
            self.pre_arrive(rid, t)

    # --- the loop ---

    def run(self) -> None:
        heap, lanes = self.heap, self.lanes
        nxt = self.arrivals() if self.arrivals is not None else None  # (time, lane) of the next open arrival
        if self.clients is not None:
            for k in range(self.clients):
                self.push(0.0, SEND, k, 0)
        total = self.m1 - self.m0
        while self.done < total:
            if nxt is not None and (not heap or nxt[0] < heap[0][0]):
                t, lane = nxt
                nxt = self.arrivals()
                self.close_window(t)
                self.enter(self.new_request(t, lane), t)
                continue
            if not heap:
                raise SpecError("simulate: the traffic ended before the measured requests finished")
            t, kind, _, a, b = heapq.heappop(heap)
            if kind == SEG_END:
                if b == a.ver:
                    self.close_window(t)
                    self.seg_end(a)
            elif kind == DEC_ARRIVE:
                self.arrive(lanes[self.lane[a]], a, t)
            else:  # SEND: client a's next request
                self.close_window(t)
                self.enter(self.new_request(t, a % len(lanes), a), t)


# --- one simulation ------------------------------------------------------------------------------------------


def _stats(values_ms: np.ndarray, weights: np.ndarray | None = None) -> LatencyStats:
    """Mean and p50/p90/p95/p99 of values [ms]; with weights, of the distribution giving each value its weight."""
    if weights is None:
        mean = float(values_ms.mean())
        q = np.percentile(values_ms, [50, 90, 95, 99])
    else:
        order = np.argsort(values_ms, kind="stable")
        v, w = values_ms[order], weights[order].astype(float)
        cum = np.cumsum(w)
        mean = float((v * w).sum() / cum[-1])
        q = v[np.minimum(np.searchsorted(cum, np.array([0.5, 0.9, 0.95, 0.99]) * cum[-1]), len(v) - 1)]
    return LatencyStats(mean_ms=mean, p50_ms=float(q[0]), p90_ms=float(q[1]), p95_ms=float(q[2]), p99_ms=float(q[3]))


def default_clients(plan: Plan) -> int:
    """The default traffic's clients: the plan's requests in flight, per replica x replicas (disaggregated: per
    decode worker x decode workers) [requests]."""
    if plan.serving == "disagg" and plan.decode is not None:
        return int((plan.decode.batch.concurrency or plan.batch.concurrency) * plan.decode.workers)
    return int(plan.batch.concurrency * plan.parallel.dp)


def _transfer_fn(plan: Plan, pre: Problem, dec: Problem, ppar: Parallel, dpar: Parallel, varies: bool):
    """KV transfer time of a prompt of `isl` tokens [s]: cost.kv_transfer_time at the workload's isl (fixed
    lengths), else on 64 log-spaced prompt lengths up to 64x the mean, interpolated."""
    same = plan.kv_transfer is not None and plan.kv_transfer.link == "scale-up"

    def at(isl_values) -> np.ndarray:
        out = []
        for v in isl_values:
            wp = pre.model_copy(update={"workload": pre.workload.model_copy(update={"isl": int(v)})})
            wd = dec.model_copy(update={"workload": dec.workload.model_copy(update={"isl": int(v)})})
            out.append(float(cost.kv_transfer_time(cost.kv_send_time(wp, ppar.tp, ppar.pp, same),
                                                   cost.kv_receive_time(wd, dpar.tp, dpar.pp, same))))
        return np.asarray(out)

    if not varies:
        fixed = float(at([pre.workload.isl])[0])
        return lambda isl: fixed
    grid = np.unique(np.geomspace(1, min(64 * pre.workload.isl, 10_000_000), 64).round())
    times = at(grid)
    memo: dict[int, float] = {}

    def transfer(isl: int) -> float:
        t = memo.get(isl)
        if t is None:
            t = memo[isl] = float(np.interp(isl, grid, times))
        return t

    return transfer


def check_supported(plan: Plan) -> None:
    """SpecError for a plan the simulator does not model: a speculative plan without its draft length."""
    if plan.speculation is not None and plan.speculation.draft_tokens is None:
        raise SpecError("simulate: the plan's speculative decoding has no draft length (a plan of `planner solve` "
                        "records the one it chose)")


def step_counts(p: Problem, rng: np.random.Generator):
    """Decode steps a request needs for n more tokens: n without speculative decoding; with k drafts of
    acceptance a, each step yields 1 + A tokens (A accepted drafts: j < k with probability a^j (1 - a), k with
    probability a^k), drawn per request until the n tokens are out."""
    if p.speculation is None:
        return None
    a, k = cost.acceptance(p), cost.draft_tokens(p)
    e = float(cost.expected_tokens(a, k))

    def steps(n: int) -> int:
        if n <= 0:
            return 0
        draws = int(n / e * 1.3) + 16
        while True:
            accepted = np.minimum(rng.geometric(1 - a, draws) - 1, k) if a < 1 else np.full(draws, k)
            done = np.searchsorted(np.cumsum(1 + accepted), n)  # the step whose tokens reach n
            if done < draws:
                return int(done) + 1
            draws *= 2

    return steps


def simulate(problem: Problem, plan: Plan, *, trace: traffic.Trace | None = None, rate_per_s: float | None = None,
             clients: int | None = None, requests: int | None = None, seed: int = 0, warmup: int | None = None,
             decode_problem: Problem | None = None) -> SimResult:
    """Simulate the engine scheduler serving `plan` (module docstring) and measure its requests.

    problem: the plan's Problem (problem_of_plan; a disaggregated plan's prefill pool's); decode_problem: the
    decode pool's when it runs on another cluster (decode_problem_of_plan; default `problem`).
    Traffic, one of: `trace` (traffic.load_trace: its arrival times and lengths; without arrival times, its lengths
    in order with the traffic below), `rate_per_s` (open, Poisson gaps spread by the workload's burstiness
    [requests/s]) or `clients` (a closed loop); none: a closed loop of the plan's concurrency (default_clients).
    requests: requests measured (default 10,000; a timed trace: all of its rows after the warm-up); warmup:
    requests simulated first and not measured (default a tenth of `requests`, at least two per client;
    a timed trace: 0). The same seed gives the same result.
    """
    started = time.perf_counter()
    check_supported(plan)
    timed = trace is not None and trace.arrival_s is not None
    if rate_per_s is not None and clients is not None:
        raise SpecError("simulate: give an arrival rate or a number of clients, not both")
    if timed and (rate_per_s is not None or clients is not None):
        raise SpecError("simulate: the trace has its own arrival times (arrival_s); an arrival rate or clients go "
                        "with a trace without them")
    if rate_per_s is not None and not (isinstance(rate_per_s, (int, float)) and math.isfinite(rate_per_s)
                                       and rate_per_s > 0):
        raise SpecError(f"simulate: the arrival rate must be a positive number of requests/s, got {rate_per_s!r}")
    if clients is not None and (not isinstance(clients, int) or not 1 <= clients <= MAX_REQUESTS):
        raise SpecError(f"simulate: clients must be a whole number from 1 to {MAX_REQUESTS:,}, got {clients!r}")
    if not timed and rate_per_s is None and clients is None:
        clients = default_clients(plan)
    for name, v in (("requests", requests), ("warmup", warmup)):
        if v is not None and (not isinstance(v, int) or not (0 if name == "warmup" else 1) <= v <= MAX_REQUESTS):
            raise SpecError(f"simulate: {name} must be a whole number up to {MAX_REQUESTS:,}, got {v!r}")
    if timed:
        warmup = warmup or 0
        if requests is None:
            requests = len(trace) - warmup
        if requests < 1 or warmup + requests > len(trace):
            raise SpecError(f"simulate: the trace holds {len(trace):,} requests, fewer than {warmup:,} warm-up + "
                            f"{max(requests, 1):,} measured")
    else:
        requests = requests or DEFAULT_REQUESTS
        if warmup is None:
            warmup = max(round(WARMUP_SHARE * requests), 2 * clients if clients else 0)
    if warmup + requests > MAX_REQUESTS:
        raise SpecError(f"simulate: {warmup + requests:,} requests, more than {MAX_REQUESTS:,}")

    w = problem.workload
    disagg = plan.serving == "disagg"
    dec_p = decode_problem or problem
    if disagg:
        if plan.prefill is None or plan.decode is None:
            raise SpecError("simulate: a disaggregated plan needs its prefill and decode pools")
        dpool, ppool = plan.decode, plan.prefill
        dpar, ppar = dpool.parallel, ppool.parallel
        cap = int(dpool.batch.micro_batch or plan.batch.micro_batch)
        n_lanes = dpool.workers * dpar.attention_dp * dpar.pp
        n_pre = ppool.workers * ppar.attention_dp * ppar.pp
        kv_cap = kv_lane_tokens(dec_p, dpar, dpool.memory)
        pre_chunk = int(ppool.batch.chunk_tokens or plan.batch.chunk_tokens)
        t_dec = _PassTable(lambda m, c: cost.decode_pass_time(dec_p, dpar, m), cap, 0)
        t_pre = _PassTable(lambda m, c: cost.prefill_pass_time(problem, ppar, c), 0, pre_chunk)
        t_agg, chunk, lag = None, 0, 0.0
        handoff = cost.disagg_overhead(problem) - cost.request_overhead(problem)
        transfer = _transfer_fn(plan, problem, dec_p, ppar, dpar, w.varies or trace is not None)
    else:
        par = plan.parallel
        cap, chunk = int(plan.batch.micro_batch), int(plan.batch.chunk_tokens)
        n_lanes, n_pre = par.dp * par.attention_dp * par.pp, 0
        kv_cap = kv_lane_tokens(problem, par, plan.memory)
        t_agg = _PassTable(lambda m, c: cost.pass_time(problem, par, m, c), cap, chunk)
        t_dec = t_pre = None
        pre_chunk, handoff, transfer = 0, 0.0, None
        lag = max(cost.admission_passes(problem) - 0.5, 0.0)  # [iterations]
    if kv_cap < 1:
        raise SpecError("simulate: the plan leaves no memory for the KV cache")
    overhead = cost.request_overhead(problem)

    seq = np.random.SeedSequence(seed).spawn(4)
    rng_len, rng_arr, rng_lane, rng_spec = (np.random.default_rng(s) for s in seq)
    block = max(1024, (warmup + requests) // 4)
    isl_l: list[int] = []
    osl_l: list[int] = []
    pre_l: list[int] = []
    hit = w.prefix_hit

    def extend_lengths() -> None:
        n = len(isl_l)
        if trace is not None:
            idx = np.arange(n, n + block) % len(trace)
            isl, osl = trace.isl[idx], trace.osl[idx]
        else:
            isl, osl = traffic.sample_lengths(w, block, rng_len)
        pre = np.maximum(np.rint(isl * (1.0 - hit)), 1).astype(np.int64)
        isl_l.extend(isl.tolist())
        osl_l.extend(osl.tolist())
        pre_l.extend(pre.tolist())

    def lengths(rid: int) -> tuple[int, int, int]:
        while rid >= len(isl_l):
            extend_lengths()
        return isl_l[rid], osl_l[rid], pre_l[rid]

    arrivals = None
    if timed:
        times = (trace.arrival_s[: warmup + requests] - trace.arrival_s[0]).tolist()
        lanes_of = rng_lane.integers(0, n_lanes, len(times)).tolist()
        it = iter(zip(times, lanes_of))

        def arrivals():
            return next(it, None)
    elif rate_per_s is not None:
        burst = w.burstiness or 0.0
        buf: deque[tuple[float, int]] = deque()
        last: list[float] = []  # the latest arrival generated [s]

        def arrivals():
            if not buf:  # the next block: gaps drawn by traffic.poisson_arrivals, the first arrival at 0
                a = traffic.poisson_arrivals(rate_per_s, block + 1, rng_arr, burst)
                ts = (a[:-1] if not last else last[0] + a[1:]).tolist()
                last[:] = [ts[-1]]
                buf.extend(zip(ts, rng_lane.integers(0, n_lanes, len(ts)).tolist()))
            return buf.popleft()

    lanes = [_Lane(AGG if not disagg else DEC, kv_cap) for _ in range(n_lanes)]
    pre_lanes = [_Lane(PRE, math.inf) for _ in range(n_pre)]
    eng = _Engine(agg=not disagg, lanes=lanes, pre_lanes=pre_lanes, t_agg=t_agg, t_dec=t_dec, t_pre=t_pre,
                  chunk=chunk, pre_chunk=pre_chunk, cap=cap, lag=lag, handoff=handoff, transfer=transfer,
                  overhead=overhead, lengths=lengths, arrivals=arrivals, clients=clients,
                  measure=(warmup, warmup + requests),
                  steps=step_counts(dec_p if disagg else problem, rng_spec))
    eng.run()
    return _result(eng, plan, problem, disagg=disagg, timed=timed, rate_per_s=rate_per_s, clients=clients,
                   seed=seed, warmup=warmup, requests=requests, lanes=lanes, n_pre=n_pre, kv_cap=kv_cap,
                   started=started)


def _result(eng: _Engine, plan: Plan, problem: Problem, *, disagg: bool, timed: bool, rate_per_s: float | None,
            clients: int | None, seed: int, warmup: int, requests: int, lanes: list[_Lane], n_pre: int,
            kv_cap: float, started: float) -> SimResult:
    """The SimResult of a finished run: the measured requests' latencies, the window's throughput."""
    ids = np.arange(warmup, warmup + requests)
    flags = np.asarray(eng.flags, dtype=np.int64)[ids]
    ids = ids[(flags & 4) == 0]
    if not len(ids):
        raise SpecError("simulate: no request fits a lane's KV cache (every prompt plus output is longer)")
    flags = np.asarray(eng.flags, dtype=np.int64)[ids]
    arr, first, fin, lag = (np.asarray(x, dtype=float)[ids] for x in (eng.arr, eng.t_first, eng.t_fin, eng.lag))
    osl = np.asarray(eng.osl, dtype=np.int64)[ids]
    ttft = (first + lag - arr + eng.overhead) * 1e3
    e2e = (fin + lag - arr + eng.overhead) * 1e3
    many = osl > 1
    tpot = _stats((fin[many] - first[many]) / (osl[many] - 1) * 1e3) if many.any() else None
    itl = None
    if eng.itl or eng.stalls:
        values = np.fromiter(list(eng.itl) + eng.stalls, float) * 1e3
        weights = np.fromiter(list(eng.itl.values()) + [1] * len(eng.stalls), float)
        itl = _stats(values, weights)
    start = np.asarray(eng.t_start, dtype=float)[ids]
    ready, join = (np.asarray(x, dtype=float)[ids] for x in (eng.t_ready, eng.t_join))
    started_ok = np.isfinite(start)
    joined = np.isfinite(ready) & np.isfinite(join)
    span = eng.window[1] - eng.window[0]
    if not span > 0:
        span = max(float(np.nanmax(np.asarray(eng.t_fin, float)) - eng.arr[0]), 1e-9)
    rps, tps = eng.fin_window / span, eng.tok_window / span
    if clients is not None:
        what = f"closed loop of {clients:,} clients"
    elif rate_per_s is not None:
        b = problem.workload.burstiness or 0.0
        what = f"open, {rate_per_s:.3g} requests/s " + (f"(bursty, burstiness {b:g})" if b else "(Poisson)")
    else:
        what = "trace arrivals"
    return SimResult(
        serving="disagg" if disagg else "agg", traffic=what,
        arrivals="closed" if clients is not None else ("open" if rate_per_s is not None else "trace"),
        rate_per_s=rate_per_s, clients=clients, seed=seed, requests=int(len(ids)), warmup=warmup,
        simulated=len(eng.arr), rejected=eng.rejected, lanes=len(lanes), prefill_lanes=n_pre,
        ttft=_stats(ttft), tpot=tpot, itl=itl, e2e=_stats(e2e), arrival_rate_per_s=(requests - 1) / span,
        requests_per_s=rps, tokens_per_s=tps,
        tokens_per_s_per_gpu=tps / plan.gpus,
        mean_decode_batch=eng.sum_m / eng.n_steps if eng.n_steps else 0.0,
        mean_in_flight=eng.area / span, preemptions=eng.preemptions,
        kv_waits=int(((flags & 1) != 0).sum()), decode_waits=int(((flags & 2) != 0).sum()),
        mean_prefill_wait_ms=float((start - arr)[started_ok].mean() * 1e3) if started_ok.any() else 0.0,
        mean_decode_wait_ms=float((join - ready)[joined].mean() * 1e3) if joined.any() else 0.0,
        kv_capacity_tokens=kv_cap, kv_peak_share=max(L.peak / L.cap for L in lanes),
        span_s=float(np.nanmax(np.asarray(eng.t_fin, float)) - eng.arr[0]), wall_s=time.perf_counter() - started)


# --- text ----------------------------------------------------------------------------------------------------


def model_mismatch(problem: Problem, plan: Plan, decode_problem: Problem | None = None) -> str | None:
    """A note when the cost model rebuilt for the plan does not give the plan's own TPOT (it was made with another
    calibration, or the catalog changed since); None when they agree."""
    if plan.serving == "disagg" and plan.decode is not None:
        tpot = float(cost.decode_pass_time(decode_problem or problem, plan.decode.parallel,
                                           plan.decode.batch.micro_batch or plan.batch.micro_batch))
    else:
        tpot = float(cost.metrics_grid(problem, plan.parallel, plan.batch.micro_batch, plan.batch.chunk_tokens)[
            "tpot_s"])
    if abs(tpot * 1e3 / plan.metrics.tpot_ms - 1) <= 1e-6:
        return None
    return (f"note: the cost model rebuilt for this plan gives TPOT {tpot * 1e3:.1f} ms where the plan says "
            f"{plan.metrics.tpot_ms:.1f} ms: was it made with another calibration (--calibration)?")


def _row(name: str, s: LatencyStats | None, plan_ms: float | None) -> list[str]:
    from planner.render import duration

    if s is None:
        return [name, "-", "-", "-", "-", "-", duration(plan_ms) if plan_ms is not None else "-"]
    return [name, *(duration(x) for x in (s.mean_ms, s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms)),
            duration(plan_ms) if plan_ms is not None else "-"]


def result_lines(r: SimResult, plan: Plan) -> list[str]:
    """What `planner simulate` prints: the plan, the traffic, the latency table beside the plan's predicted means,
    throughput and the scheduler's figures."""
    from planner.render import describe, duration, table

    m = plan.metrics
    lanes = (f"{r.prefill_lanes + r.lanes} lanes ({r.prefill_lanes} prefill, {r.lanes} decode)" if r.serving == "disagg"
             else f"{r.lanes} lanes (rank x micro-batch of every replica)")
    e2e_plan = m.ttft_ms + (plan.osl - 1) * m.tpot_ms
    batch = plan.decode.batch.micro_batch if plan.serving == "disagg" and plan.decode else plan.batch.micro_batch
    rejected = f"; {r.rejected:,} longer than a lane's KV cache, refused" if r.rejected else ""
    return [
        f"{plan.label}: {describe(plan)}",
        f"simulated: {r.traffic}; {r.requests:,} requests measured after {r.warmup:,} warm-up (seed {r.seed}); "
        f"{lanes}",
        table(["latency", "mean", "p50", "p90", "p95", "p99", "plan (mean)"], [
            _row("TTFT", r.ttft, m.ttft_ms), _row("TPOT", r.tpot, m.tpot_ms), _row("ITL", r.itl, m.tpot_ms),
            _row("e2e", r.e2e, e2e_plan)]),
        f"throughput: {r.tokens_per_s_per_gpu:,.1f} tok/s/GPU (plan {m.tokens_per_s_per_gpu:,.1f}), "
        f"{r.requests_per_s:,.3g} requests/s (plan {m.requests_per_s:,.3g}; arrivals {r.arrival_rate_per_s:,.3g}); "
        f"decoding batch {r.mean_decode_batch:.1f} per lane (plan {batch}); {r.mean_in_flight:,.1f} requests in "
        f"flight",
        f"scheduler: {r.preemptions:,} preemptions; {r.kv_waits:,} requests waited for KV room, {r.decode_waits:,} "
        f"for a decode slot; mean wait for prefill {duration(r.mean_prefill_wait_ms)}, for decode "
        f"{duration(r.mean_decode_wait_ms)}; KV peak {r.kv_peak_share:.0%} of a lane's {r.kv_capacity_tokens:,.0f} "
        f"tokens{rejected}",
        f"simulated {r.simulated:,} requests over {r.span_s:,.1f} s of traffic in {r.wall_s:.2f} s",
    ]


def _which(q: int | None) -> str:
    return "mean" if q is None else f"p{q}"


def verify_lines(r: SimResult, plan: Plan) -> list[str]:
    """`solve --verify`: one line per part of the plan's SLA saying whether it holds in the simulation, at the
    percentile the SLA names (None: the mean)."""
    from planner.render import duration

    head = (f"verify: simulated {r.requests:,} requests ({r.traffic}, seed {r.seed}): TTFT mean "
            f"{duration(r.ttft.mean_ms)} p99 {duration(r.ttft.p99_ms)}"
            + (f", TPOT mean {r.tpot.mean_ms:.1f} ms p99 {r.tpot.p99_ms:.1f} ms" if r.tpot else "")
            + f", {r.tokens_per_s_per_gpu:,.1f} tok/s/GPU")
    sla = plan.sla
    if sla is None or (sla.min_tokens_per_s_per_user is None and sla.max_ttft_s is None):
        return [head, "verify: the plan has no SLA to check"]
    out = [head]
    if sla.min_tokens_per_s_per_user is not None:
        q, limit = sla.tpot_percentile, 1000 / sla.min_tokens_per_s_per_user
        if r.tpot is None:
            out.append("verify: TPOT: no request has two tokens; nothing to check")
        else:
            got = r.tpot.at(q)
            out.append(f"verify: SLA >= {sla.min_tokens_per_s_per_user:g} tokens/s/user ({_which(q)} TPOT <= "
                       f"{limit:.1f} ms): {'holds' if got <= limit else 'does not hold'} in the simulation "
                       f"({_which(q)} TPOT {got:.1f} ms)")
    if sla.max_ttft_s is not None:
        q, limit = sla.ttft_percentile, sla.max_ttft_s * 1e3
        got = r.ttft.at(q)
        out.append(f"verify: TTFT <= {duration(limit)} ({_which(q)}): {'holds' if got <= limit else 'does not hold'} "
                   f"in the simulation ({_which(q)} TTFT {duration(got)})")
    return out
