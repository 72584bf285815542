"""The search space: candidate values of every choice, a point of the space, and what a search optimises.

The candidate lists say which values are worth trying, not which are allowed: they include values
that break the rules (a tp that does not divide the heads, a pp that does not divide the layers,
layouts larger than the GPUs given), and the rules (planner.rules) reject them. moe_tp is not a
choice: a stage of tp * attention_dp GPUs re-split as ep expert groups gives moe_tp = tp *
attention_dp / ep, and the cost model never reads it.

Shared by both searches (planner.search: CP-SAT over tabulated options; planner.oracle: plain
enumeration), neither of which this module depends on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from planner.errors import SpecError
from planner.specs import Parallel, Problem

Objective = Literal["throughput", "min_tpot", "min_ttft", "min_gpus"]
"""What a search optimises: the highest tokens/s/GPU (the plan), the lowest TPOT (the highest
tokens/s/user reachable), the lowest TTFT, or the fewest GPUs in one replica (the fewest GPUs the
model fits on)."""

DEFAULT_CHUNKS: tuple[int, ...] = (
    tuple(range(128, 1025, 128)) + tuple(range(1280, 2049, 256)) + tuple(range(2560, 4097, 512))
    + tuple(range(5120, 8193, 1024))
)
"""Prefill chunk budgets tried by default, 128 ... 8192 as in the study [tokens]."""

DEFAULT_MICRO_BATCHES: tuple[int, ...] = (
    (1, 2, 3, 4, 5, 6) + tuple(v for k in range(3, 9) for v in (2**k, 2**k * 5 // 4, 2**k * 3 // 2)) + (512,)
)
"""Decode requests per attention-DP rank per micro-batch tried by default: every value to 6, then x,
1.25x, 1.5x per doubling up to 512 (steps of at most a third). Every rule only tightens as the batch
grows, so the best batch on the grid serves at least 3/4 of what the best whole number would [requests]."""


@dataclass(frozen=True)
class Candidate:
    """A point of the space a search returns: layout and batching, with the search's status and the
    proven upper bound of its objective (tokens/s/GPU for the throughput objective)."""

    parallel: Parallel
    micro_batch: int
    chunk: int
    status: str
    objective_bound: float | None = None
    certified: bool | None = None  # re-checked by the plain rule checker (and against the whole table)
    model_options: int | None = None  # options in the CP-SAT model that found it (None: the oracle)


class OutOfTime(Exception):
    """A search's deadline passed with `done` of `total` options evaluated (planner.search words it)."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(done, total)
        self.done, self.total = done, total


MAX_GRID_VALUE = 100_000_000
"""Largest chunk [tokens] or micro-batch [requests] a search grid may hold: 10x the longest prompt."""


def short_list(values: tuple[int, ...]) -> str:
    """A list of candidate values for a message: whole up to 8 values, else its ends and its length."""
    return str(list(values)) if len(values) <= 8 else f"[{values[0]}, ..., {values[-1]}] ({len(values)} values)"


def divisors(n: int, limit: int) -> set[int]:
    """The divisors of n that are at most `limit`, in O(min(sqrt(n), limit)) steps."""
    out: set[int] = set()
    if n < 1:
        return out
    for i in range(1, min(math.isqrt(n), limit) + 1):
        if n % i == 0:
            out.add(i)
            if n // i <= limit:
                out.add(n // i)
    return out


def powers_of_two(limit: int) -> set[int]:
    """1, 2, 4, ... up to `limit`."""
    return {1 << k for k in range(max(limit, 1).bit_length()) if 1 << k <= limit}


@dataclass(frozen=True)
class Space:
    """Candidate values per choice. Degrees are GPUs, micro_batches requests, chunks tokens."""

    tp: tuple[int, ...]
    attention_dp: tuple[int, ...]
    pp: tuple[int, ...]
    ep: tuple[int, ...]
    micro_batches: tuple[int, ...]
    chunks: tuple[int, ...]
    max_dp: int

    @classmethod
    def of(
        cls,
        p: Problem,
        chunks: tuple[int, ...] | None = None,
        micro_batches: tuple[int, ...] | None = None,
    ) -> Space:
        """Powers of two up to the GPU count, plus the divisors of the dimension each degree splits."""
        g, md = p.gpus, p.model
        pow2 = powers_of_two(g)
        for name, values in (("chunks", chunks), ("micro-batches", micro_batches)):
            if values is not None and not (values and all(1 <= int(v) <= MAX_GRID_VALUE for v in values)):
                raise SpecError(f"{name} must be whole numbers from 1 to {MAX_GRID_VALUE:,}, got "
                                f"{short_list(tuple(values))}")

        def upto(values: set[int]) -> tuple[int, ...]:
            return tuple(sorted(v for v in values if 1 <= v <= g))

        return cls(
            tp=upto(pow2 | divisors(md.num_attention_heads, g)),
            attention_dp=upto(pow2 | divisors(g, g)),
            pp=upto(pow2 | divisors(md.num_layers, g)),
            ep=upto(pow2 | divisors(md.num_experts, g)),
            micro_batches=tuple(sorted(set(micro_batches or DEFAULT_MICRO_BATCHES))),
            chunks=tuple(sorted(set(chunks or DEFAULT_CHUNKS))),
            max_dp=g,
        )

    @property
    def layouts(self) -> int:
        """Replica layouts (tp, attention_dp, pp, ep) in the candidate lists, before any rule [layouts]."""
        return len(self.tp) * len(self.attention_dp) * len(self.pp) * len(self.ep)

    @property
    def batches(self) -> int:
        """(micro-batch, chunk) pairs [pairs]."""
        return len(self.micro_batches) * len(self.chunks)

    @property
    def size(self) -> int:
        """Combinations of all candidate values, before any rule; dp takes its largest value [combinations]."""
        return self.layouts * self.batches
