"""Every (layout, batch) option of a problem, evaluated once by the cost model, and the dominance that
reduces them to the options a CP-SAT model needs.

`tabulate` evaluates, with numpy and the one cost model (planner.cost.metrics_grid over many layouts at
once), every micro-batch and chunk of every layout of the candidate lists that the layout rules admit,
and records for each option the rules it breaks (planner.rules, the one checker). `Table.front` (and
`Table.reduce`, per objective) keeps the options a search can need: an option is dropped only when
another one breaks no rule it obeys and is at least as good on every quantity the search reads
(tokens/s/GPU, and TPOT, which the SLA bounds); besides the options that obey every rule it keeps, for
each rule in `lift`, the best options only that rule excludes, so that every rule is a constraint the
CP-SAT model enforces (planner.solver).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import product

import numpy as np

from planner import cost
from planner.rules import LAYOUT_RULES, batch_masks, checked_times, layout_masks, percentile_sla, sla_broken
from planner.space import Candidate, Objective, OutOfTime, Space
from planner.specs import Parallel, Problem

TABLE_RULES: tuple[str, ...] = (*LAYOUT_RULES, "memory", "chunk_keeps_up", "ttft")
"""Rules recorded per option, one bit each (the SLA is checked per search: sweeps change it)."""
BIT: dict[str, int] = {rule: 1 << i for i, rule in enumerate(TABLE_RULES)}
"""The bit of each rule in Table.broken."""
BATCH_LIFT: tuple[str, ...] = ("memory", "chunk_keeps_up", "ttft")
"""Rules whose best excluded options a search keeps by default: they cost nothing to tabulate."""
LIFTABLE: tuple[str, ...] = tuple(r for r in TABLE_RULES if r != "gpu_budget")
"""Rules that may be lifted (a layout larger than the GPUs given has no replica at all)."""

BLOCK_OPTIONS = 1 << 18
"""Options evaluated per numpy block (bounds the temporaries to tens of MB) [options]."""
MAX_OPTIONS = 40_000_000
"""Most options one table holds (about 1 GB of columns) [options]."""
SECONDS_PER_OPTION = 1.0e-6
"""Time to evaluate one option, for refusing up front a space the time limit cannot cover: about twice the
0.37-0.55 us measured on the 2-core development machine (Table.wall_s / Table.size: the default case,
DeepSeek-R1 on 4,608 GB200, Llama-3.1-8B on 8 H100) [s/option]."""


class SpaceTooLarge(Exception):
    """The options to evaluate exceed MAX_OPTIONS (memory) or what the time left allows: `options`, about
    `seconds` to evaluate them, `left_s` left (planner.search words it)."""

    def __init__(self, options: int, seconds: float, left_s: float | None, memory: bool) -> None:
        super().__init__(options, seconds, left_s, memory)
        self.options, self.seconds, self.left_s, self.memory = options, seconds, left_s, memory


def candidate_layouts(p: Problem, s: Space, lift: tuple[str, ...] = ()) -> tuple[cost.Layouts, np.ndarray]:
    """The layouts of the candidate lists to tabulate, with the most replicas each (dp = GPUs // replica,
    at most s.max_dp), and the layout rules each breaks (bits): those obeying every layout rule, and with
    `lift`, those breaking exactly one lifted layout rule."""
    grid = np.array(list(product(s.tp, s.attention_dp, s.pp, s.ep)), dtype=np.int64).reshape(-1, 4)
    tp, adp, pp, ep = grid.T
    dp = np.minimum(p.gpus // (tp * adp * pp), s.max_dp)
    masks = layout_masks(p, tp, adp, pp, ep, np.maximum(dp, 1))
    bits = np.zeros(len(tp), np.uint16)
    for rule, mask in masks.items():
        bits |= np.where(mask, BIT[rule], 0).astype(np.uint16)
    liftable = sum(BIT[r] for r in lift if r in LAYOUT_RULES and r != "gpu_budget")
    single = (bits & (bits - 1)) == 0  # at most one bit
    keep = (dp >= 1) & ((bits == 0) | (single & ((bits & ~np.uint16(liftable)) == 0)))
    lay = cost.Layouts(tp=tp[keep], attention_dp=adp[keep], pp=pp[keep], ep=ep[keep], dp=dp[keep])
    return lay, bits[keep]


@dataclass
class Table:
    """The options of one problem: every batch (m, chunk) of every tabulated layout, in one flat order
    (option k is layout k // B, micro-batch (k // C) % M, chunk k % C, with B = M * C batches)."""

    p: Problem
    space: Space
    layouts: cost.Layouts
    tpot_s: np.ndarray  # [s] mean time per output token
    ttft_s: np.ndarray  # [s] mean time to first token
    tpot_hi_s: np.ndarray  # [s] the TPOT the SLA is checked at (rules.checked_times): tpot_s itself without confidence
    ttft_hi_s: np.ndarray  # [s] the TTFT the limit is checked at: ttft_s itself without confidence
    thr: np.ndarray  # [tokens/s/GPU] over the GPUs given
    broken: np.ndarray  # uint16 bits of TABLE_RULES
    lift: tuple[str, ...]
    wall_s: float  # [s] time to tabulate

    @property
    def size(self) -> int:
        """Options tabulated [options]."""
        return len(self.thr)

    # --- addressing ----------------------------------------------------------------------------
    def layout_of(self, k: np.ndarray) -> np.ndarray:
        """Index into self.layouts of options k."""
        return np.asarray(k) // self.space.batches

    def micro_batch_of(self, k: np.ndarray) -> np.ndarray:
        """Decode requests per attention-DP rank per micro-batch of options k [requests]."""
        m = np.asarray(self.space.micro_batches)
        return m[(np.asarray(k) // len(self.space.chunks)) % len(m)]

    def chunk_of(self, k: np.ndarray) -> np.ndarray:
        """Prefill chunk of options k [tokens]."""
        return np.asarray(self.space.chunks)[np.asarray(k) % len(self.space.chunks)]

    def replica_gpus_of(self, k: np.ndarray) -> np.ndarray:
        """GPUs of one replica of options k [GPUs]."""
        return self.layouts.replica_gpus[self.layout_of(k)]

    def concurrency_of(self, k: np.ndarray) -> np.ndarray:
        """Requests in flight per replica of options k [requests]."""
        i = self.layout_of(k)
        return self.micro_batch_of(k) * self.layouts.attention_dp[i] * self.layouts.pp[i]

    def parallel(self, k: int) -> Parallel:
        """The layout of option k."""
        i, q = int(self.layout_of(k)), self.layouts
        return Parallel(tp=int(q.tp[i]), attention_dp=int(q.attention_dp[i]), pp=int(q.pp[i]), ep=int(q.ep[i]),
                        dp=int(q.dp[i]))

    def candidate(self, k: int, status: str, bound: float | None = None) -> Candidate:
        """Option k as a search result."""
        return Candidate(self.parallel(k), int(self.micro_batch_of(k)), int(self.chunk_of(k)), status, bound)

    # --- which rules hold ----------------------------------------------------------------------
    def active_bits(self, use_ttft: bool) -> int:
        """Bits of the rules a search enforces: all recorded, but TTFT when use_ttft is off."""
        return sum(BIT[r] for r in TABLE_RULES if use_ttft or r != "ttft")

    def obeys(self, use_ttft: bool = True, sla: float | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """Where an option (of `rows`, default every one) obeys every rule: the recorded ones (TTFT only with
        use_ttft) and, given, an SLA floor [tokens/s/user]."""
        pick = slice(None) if rows is None else np.asarray(rows)
        ok = (self.broken[pick] & np.uint16(self.active_bits(use_ttft))) == 0
        if sla:
            ok &= ~sla_broken(self.tpot_hi_s[pick], sla)
        return ok

    def key(self, objective: Objective) -> np.ndarray:
        """What a search of `objective` minimises per option: -tokens/s/GPU, TPOT [s], TTFT [s] (those the
        rules check, rules.checked_times) or replica GPUs."""
        if objective == "throughput":
            return -self.thr
        if objective == "min_tpot":
            return self.tpot_hi_s
        if objective == "min_ttft":
            return self.ttft_hi_s
        return self.replica_gpus_of(np.arange(self.size)).astype(float)

    def best_value(self, objective: Objective, sla: float | None, use_ttft: bool,
                   exclude_layouts: tuple[int, ...] = ()) -> float | None:
        """The best objective value over every tabulated option obeying every rule, outside exclude_layouts
        (tokens/s/GPU for the throughput, else the minimised quantity), None when none does: the
        certificate of a search."""
        ok = self.obeys(use_ttft, sla)
        if exclude_layouts:
            ok &= ~np.isin(self.layout_of(np.arange(self.size)), np.asarray(exclude_layouts))
        if not ok.any():
            return None
        best = float(self.key(objective)[ok].min())
        return -best if objective == "throughput" else best

    # --- dominance -----------------------------------------------------------------------------
    def reduce(self, objective: Objective, use_ttft: bool = True, lift: tuple[str, ...] | None = None,
               with_tpot: bool | None = None, exclude_layouts: tuple[int, ...] = ()) -> np.ndarray:
        """Indices of the options a search of `objective` needs (see `front`); with_tpot by default for the
        throughput, whose SLA varies between searches. Layouts in exclude_layouts (indices into
        self.layouts) are left out: for the next best layout."""
        with_tpot = objective == "throughput" if with_tpot is None else with_tpot
        return self.front(self.key(objective), with_tpot=with_tpot, use_ttft=use_ttft, lift=lift,
                          exclude_layouts=exclude_layouts)

    def front(self, key: np.ndarray, group: np.ndarray | None = None, with_tpot: bool = True,
              use_ttft: bool = True, lift: tuple[str, ...] | None = None, exclude_layouts: tuple[int, ...] = ()
              ) -> np.ndarray:
        """Indices, sorted, of the options no option obeying the same rules beats: among the options obeying
        every recorded rule (TTFT only with use_ttft) and, for each rule of `lift` (default: the table's),
        among those that break that rule alone. 'Beats': lower or equal on `key` [per option, minimised]
        and, with_tpot, on the TPOT an SLA bounds (tpot_hi_s), strictly lower on one; ties go to the larger chunk.
        With `group` [per option], each group keeps its own."""
        active = np.uint16(self.active_bits(use_ttft))
        lifted = [BIT[r] for r in (self.lift if lift is None else lift) if BIT[r] & int(active)]
        bits = self.broken & active
        ok = np.isin(bits, np.array([0, *lifted], np.uint16))  # no rule broken, or one lifted rule
        if exclude_layouts:
            ok &= ~np.isin(self.layout_of(np.arange(self.size)), np.asarray(exclude_layouts))
        eligible = np.flatnonzero(ok)
        bits = bits[eligible]
        primary = np.asarray(key)[eligible]
        tpot = self.tpot_hi_s[eligible]
        grp = None if group is None else np.asarray(group)[eligible]
        chunk_rank = -(eligible % len(self.space.chunks))  # ties: the larger chunk (less waiting for prefill)
        passes = [0, *lifted]
        if not with_tpot and grp is None:  # 1-D: per pass the smallest key (ties: the larger chunk)
            keep = np.zeros(len(eligible), bool)
            for bit in passes:
                allowed = np.flatnonzero((bits == 0) | (bits == bit))
                if len(allowed):
                    best = allowed[primary[allowed] == primary[allowed].min()]
                    k = best[np.argmin(chunk_rank[best])]
                    keep[k] |= bits[k] == bit
            return np.sort(eligible[keep])
        if grp is None:  # drop options an option obeying every rule strictly beats at no higher TPOT
            alive = ~_below_staircase(tpot, primary, bits == 0)
            eligible, bits, primary, tpot, chunk_rank = (x[alive] for x in (eligible, bits, primary, tpot, chunk_rank))
        keys: tuple[np.ndarray, ...] = (chunk_rank, primary)
        if with_tpot:  # by TPOT, then by the key: an option is kept when its key beats every option of lower TPOT
            keys += (tpot,)
        if grp is not None:
            keys += (grp,)
        order = np.lexsort(keys)
        keep = np.zeros(len(eligible), bool)
        for bit in passes:
            allowed = (bits == 0) | (bits == bit) if bit else bits == 0
            idx = order[allowed[order]]
            if len(idx):
                kept = idx[_front(primary[idx], None if grp is None else grp[idx], two_d=with_tpot)]
                keep[kept[bits[kept] == bit]] = True
        return np.sort(eligible[keep])

    # --- pictures ------------------------------------------------------------------------------
    def layout_curves(self) -> list[tuple[Parallel, list[tuple[float, float, int, int]]]]:
        """Each layout's own Pareto curve over its batches obeying every recorded rule: (tokens/s/user,
        tokens/s/GPU, micro-batch, chunk) by increasing tokens/s/user; layouts with no valid batch left out."""
        kept = self.front(-self.thr, group=self.layout_of(np.arange(self.size)), lift=())
        out = []
        lay = self.layout_of(kept)
        for i in np.unique(lay):
            ks = kept[lay == i]
            ks = ks[np.argsort(self.tpot_s[ks])[::-1]]  # by tokens/s/user increasing
            pts = [(1 / float(self.tpot_s[k]), float(self.thr[k]), int(self.micro_batch_of(k)),
                    int(self.chunk_of(k))) for k in ks]
            out.append((self.parallel(int(ks[0])), pts))
        return out


def _below_staircase(tpot: np.ndarray, key: np.ndarray, valid: np.ndarray, stride: int = 8) -> np.ndarray:
    """Where an option is strictly beaten by one of a sample of the `valid` options: some sampled option has
    no higher TPOT and a strictly lower key. Such an option is on no front, whatever rules it breaks (the
    valid options break none), so dropping it first is exact; it only makes the sort that follows small."""
    sample = np.flatnonzero(valid)[::stride]
    if not len(sample):
        return np.zeros(len(key), bool)
    order = np.lexsort((key[sample], tpot[sample]))
    steps_t = tpot[sample][order]
    steps_k = np.minimum.accumulate(key[sample][order])
    pos = np.searchsorted(steps_t, tpot, side="right") - 1
    return (pos >= 0) & (steps_k[np.maximum(pos, 0)] < key)


def _front(key: np.ndarray, group: np.ndarray | None, two_d: bool) -> np.ndarray:
    """Which of options sorted by ([group,] [TPOT,] key) to keep: (1-D) the first option of each group,
    the smallest key; (2-D) each option whose key is strictly below every earlier one's in its group."""
    n = len(key)
    if not two_d:
        return np.r_[True, group[1:] != group[:-1]] if group is not None else np.arange(n) == 0
    if group is None:
        return key < np.minimum.accumulate(np.r_[np.inf, key[:-1]])
    # exact segmented running minimum: integer ranks of the keys, each later group shifted below every
    # earlier one, so that no group's minimum reaches into the next
    _, rank = np.unique(key, return_inverse=True)
    value = rank.astype(np.int64) - group.astype(np.int64) * (n + 1)
    return value < np.minimum.accumulate(np.r_[np.iinfo(np.int64).max, value[:-1]])

def tabulate(p: Problem, s: Space, lift: tuple[str, ...] = BATCH_LIFT, deadline: float | None = None) -> Table:
    """Evaluate every option of the layouts the layout rules admit (and those breaking exactly one lifted
    layout rule) with the cost model, in blocks of layouts; record the rules each option breaks.

    Raises SpaceTooLarge up front when the options exceed MAX_OPTIONS or, with a deadline, the time left
    at SECONDS_PER_OPTION; OutOfTime when the deadline passes while evaluating.
    """
    t0 = time.perf_counter()
    lay, lay_bits = candidate_layouts(p, s, lift)
    batches = s.batches
    total = len(lay.tp) * batches
    left = None if deadline is None else deadline - t0
    if total > MAX_OPTIONS or (left is not None and total * SECONDS_PER_OPTION > left):
        raise SpaceTooLarge(total, total * SECONDS_PER_OPTION, left, memory=total > MAX_OPTIONS)
    m = np.asarray(s.micro_batches, dtype=np.int64)[None, :, None]
    c = np.asarray(s.chunks, dtype=np.int64)[None, None, :]
    tpot, ttft, thr = (np.empty(total) for _ in range(3))
    checks = p.confidence is not None or percentile_sla(p)  # limits checked at other figures than the means
    tpot_hi, ttft_hi = (np.empty(total), np.empty(total)) if checks else (tpot, ttft)
    broken = np.empty(total, np.uint16)
    per_block = max(1, BLOCK_OPTIONS // batches)
    for a in range(0, len(lay.tp), per_block):
        if deadline is not None and a and time.perf_counter() > deadline:
            raise OutOfTime(a * batches, total)
        sl = slice(a, a + per_block)
        block = cost.Layouts(*(np.asarray(getattr(lay, f)[sl])[:, None, None]
                               for f in ("tp", "attention_dp", "pp", "ep", "dp")))
        g = cost.metrics_grid(p, block, m, c)
        out = slice(a * batches, (a + len(block.tp)) * batches)
        shape = (len(block.tp), m.size, c.size)
        tpot[out] = np.broadcast_to(g["tpot_s"], shape).ravel()
        ttft[out] = np.broadcast_to(g["ttft_s"], shape).ravel()
        thr[out] = np.broadcast_to(g["tokens_per_s_per_gpu"], shape).ravel()
        if checks:
            hi = checked_times(p, g)
            tpot_hi[out], ttft_hi[out] = (np.broadcast_to(x, shape).ravel() for x in hi)
        bits = np.broadcast_to(lay_bits[sl][:, None, None], shape).copy()
        for rule, mask in batch_masks(p, g, use_sla=False).items():
            bits |= np.where(np.broadcast_to(mask, shape), BIT[rule], 0).astype(np.uint16)
        broken[out] = bits.ravel()
    ttft = np.where(np.isfinite(ttft), ttft, math.inf)
    ttft_hi = np.where(np.isfinite(ttft_hi), ttft_hi, math.inf) if checks else ttft
    return Table(p=p, space=s, layouts=lay, tpot_s=tpot, ttft_s=ttft, tpot_hi_s=tpot_hi, ttft_hi_s=ttft_hi,
                 thr=thr, broken=broken,
                 lift=tuple(r for r in lift if r in LIFTABLE), wall_s=time.perf_counter() - t0)
