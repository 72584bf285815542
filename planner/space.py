"""The search space: candidate values of every choice, shared by the CP-SAT model and the oracle.

The candidate lists say which values are worth trying, not which are allowed: they include values
that break the rules (a tp that does not divide the heads, a pp that does not divide the layers,
layouts larger than the GPUs given), and the rules in planner.rules / the CP-SAT model reject them.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.specs import Problem

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


def _divisors(n: int) -> set[int]:
    return {d for d in range(1, n + 1) if n % d == 0} if n > 0 else set()


def _powers_of_two(limit: int) -> set[int]:
    out, v = set(), 1
    while v <= limit:
        out.add(v)
        v *= 2
    return out


@dataclass(frozen=True)
class Space:
    """Candidate values per choice. Degrees are GPUs, micro_batches requests, chunks tokens."""

    tp: tuple[int, ...]
    attention_dp: tuple[int, ...]
    pp: tuple[int, ...]
    ep: tuple[int, ...]
    moe_tp: tuple[int, ...]
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
        pow2 = _powers_of_two(g)

        def upto(values: set[int]) -> tuple[int, ...]:
            return tuple(sorted(v for v in values if 1 <= v <= g))

        tp = upto(pow2 | _divisors(md.num_attention_heads))
        adp = upto(pow2 | _divisors(g))
        pp = upto(pow2 | _divisors(md.num_layers))
        ep = upto(pow2 | _divisors(md.num_experts))
        moe_tp = upto({t * a // e for t in tp for a in adp for e in ep if (t * a) % e == 0})
        return cls(
            tp=tp, attention_dp=adp, pp=pp, ep=ep, moe_tp=moe_tp,
            micro_batches=tuple(sorted(set(micro_batches or DEFAULT_MICRO_BATCHES))),
            chunks=tuple(sorted(set(chunks or DEFAULT_CHUNKS))),
            max_dp=g,
        )

    @property
    def size(self) -> int:
        """Combinations of all candidate values, before any rule [combinations]."""
        n = self.max_dp
        for values in (self.tp, self.attention_dp, self.pp, self.ep, self.moe_tp, self.micro_batches, self.chunks):
            n *= len(values)
        return n
