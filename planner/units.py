"""Values written as text: speeds, durations, percentiles, demands, rates, lists and probabilities.

The command line reads its options with these parsers (planner.cli turns a ParseError into click's "Invalid
value for '--sla'" line) and the library reads the same forms in files (a fleet's workloads, planner.fleetplan), so
that `sla: 40ms@p99` in a YAML file means what `--sla 40ms@p99` means. Each raises ParseError (a SpecError)
with one line naming the text and the forms it takes.
"""

from __future__ import annotations

import math
import re

from planner.errors import SpecError
from planner.space import MAX_GRID_VALUE
from planner.specs import MAX_TOKENS_PER_S_PER_USER, MIN_TOKENS_PER_S_PER_USER, PERCENTILES

MAX_TIME_LIMIT_S = 86400.0
"""Longest time limit accepted [s]."""
MAX_LIST_VALUES = 1_000_000
"""Most values a list of chunks or micro-batches may hold."""


class ParseError(SpecError):
    """A value written as text is not in any of the forms its parser takes (one line saying which are)."""


_NUMBER = r"([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)"


def _positive(text: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ParseError(f"'{text}' must be a positive finite number")
    return value


def parse_sla(text: str) -> float:
    """'20tok/s', '20 tokens/s', '20' -> 20 tokens/s/user; '50ms' (per token) -> 20 [tokens/s]; within the
    bounds an SLA may take (specs.MIN/MAX_TOKENS_PER_S_PER_USER)."""
    t = text.strip().lower().replace(" ", "")
    m = re.fullmatch(_NUMBER + r"(tok/s|tokens/s|tps|tok/s/user|ms|s)?", t)
    if not m:
        raise ParseError(f"'{text}' is not a speed: use e.g. 20tok/s, 20, or 50ms (time per token)")
    value, unit = _positive(text, float(m.group(1))), m.group(2) or "tok/s"
    speed = 1000.0 / value if unit == "ms" else 1.0 / value if unit == "s" else value
    if not MIN_TOKENS_PER_S_PER_USER <= speed <= MAX_TOKENS_PER_S_PER_USER:
        raise ParseError(f"'{text}' is {speed:g} tokens/s/user: an SLA must be from "
                         f"{MIN_TOKENS_PER_S_PER_USER:g} to {MAX_TOKENS_PER_S_PER_USER:,.0f} tokens/s/user")
    return speed


_AT = re.compile(r"(.*?)@p(\d+)")


def _percentile_of(text: str) -> tuple[str, int | None]:
    """'40ms@p99' -> ('40ms', 99); '40ms' -> ('40ms', None); refuses a percentile outside PERCENTILES."""
    m = _AT.fullmatch(text.strip().lower().replace(" ", ""))
    if not m:
        if "@" in text:
            raise ParseError(f"'{text}': a percentile is written @p50, @p90, @p95 or @p99, e.g. 40ms@p99")
        return text, None
    q = int(m.group(2))
    if q not in PERCENTILES:
        raise ParseError(f"'{text}': the percentile must be one of "
                         f"{', '.join(f'p{k}' for k in PERCENTILES)}, got p{q}")
    return m.group(1), q


def parse_percentile(text: str) -> int:
    """'p99' or '99' -> 99 (one of PERCENTILES)."""
    t = text.strip().lower().removeprefix("p")
    if not t.isdigit() or int(t) not in PERCENTILES:
        raise ParseError(f"'{text}': a percentile is one of {', '.join(f'p{k}' for k in PERCENTILES)}")
    return int(t)



def parse_sla_at(text: str) -> tuple[float, int | None]:
    """'20tok/s', '40ms@p99' -> (tokens/s/user, percentile of requests' TPOT or None for the mean)."""
    value, q = _percentile_of(text)
    return parse_sla(value), q


def parse_ttft_at(text: str) -> tuple[float, int | None]:
    """'5s', '450ms@p99' -> (seconds, percentile of requests' TTFT or None for the mean)."""
    value, q = _percentile_of(text)
    return parse_duration(value), q


def parse_duration(text: str) -> float:
    """'5s', '500ms', '5' -> seconds [s]."""
    t = text.strip().lower().replace(" ", "")
    m = re.fullmatch(_NUMBER + r"(ms|s)?", t)
    if not m:
        raise ParseError(f"'{text}' is not a duration: use e.g. 5s or 500ms")
    return _positive(text, float(m.group(1))) / (1000.0 if m.group(2) == "ms" else 1.0)


def parse_time_limit(text: str) -> float:
    """'60', '0.5', '2s' -> seconds, at least 0.01 and at most a day [s]."""
    value = parse_duration(text)
    if not 0.01 <= value <= MAX_TIME_LIMIT_S:
        raise ParseError(f"'{text}' must be between 0.01 s and {MAX_TIME_LIMIT_S:,.0f} s")
    return value



def parse_int_list(text: str) -> tuple[int, ...]:
    """'128,256,512' or '128:8192:128' (start:stop:step, inclusive) -> a tuple of positive ints (at most
    MAX_LIST_VALUES of them)."""
    try:
        if ":" in text:
            start, stop, step = (int(x) for x in text.split(":"))
            if step < 1:
                raise ParseError(f"'{text}': the step must be positive")
            span = range(start, stop + 1, step)
            if len(span) > MAX_LIST_VALUES:
                raise ParseError(f"'{text}' lists {len(span):,} values, more than {MAX_LIST_VALUES:,}")
            values = tuple(span)
        else:
            values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ParseError(f"'{text}' is not a list: use e.g. 256,512,1024 or 128:8192:128") from None
    if not values or min(values) < 1 or max(values) > MAX_GRID_VALUE:
        raise ParseError(f"'{text}' must list whole numbers from 1 to {MAX_GRID_VALUE:,}")
    if len(values) > MAX_LIST_VALUES:
        raise ParseError(f"'{text}' lists {len(values):,} values, more than {MAX_LIST_VALUES:,}")
    return values


def parse_demand(text: str) -> tuple[float | None, float | None]:
    """'40req/s', '40 requests/s', '40rps' -> (40 requests/s, None); '50000tok/s' -> (None, 50000 tokens/s)."""
    t = text.strip().lower().replace(" ", "")
    m = re.fullmatch(_NUMBER + r"(req/s|requests/s|rps|tok/s|tokens/s|tps)", t)
    if not m:
        raise ParseError(f"'{text}' is not a demand: use e.g. 40req/s (requests) or 50000tok/s "
                         "(output tokens)")
    value = _positive(text, float(m.group(1)))
    return (value, None) if m.group(2) in ("req/s", "requests/s", "rps") else (None, value)


def parse_rate(text: str) -> float:
    """'2.5', '2.5req/s', '2.5 requests/s' -> 2.5 requests/s: a positive finite arrival rate."""
    t = text.strip().lower().replace(" ", "")
    m = re.fullmatch(r"(-?" + _NUMBER[1:] + r"(req/s|requests/s|rps)?", t)
    if not m:
        raise ParseError(f"'{text}' is not an arrival rate: use e.g. 2.5 or 2.5req/s (requests per second)")
    return _positive(text, float(m.group(1)))


def parse_confidence(text: str) -> float:
    """'0.9' or '90%' -> 0.9: a probability from 0.5 up to (not including) 1."""
    t = text.strip().replace(" ", "")
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ParseError(f"'{text}' is not a probability: use e.g. 0.9 or 90%") from None
    if not (math.isfinite(value) and 0.5 <= value < 1):
        raise ParseError(f"'{text}' must be from 0.5 up to (not including) 1, e.g. 0.9 or 90%")
    return value


def parse_spec(text: str) -> tuple[str, str | None]:
    """'mtp', 'eagle' or 'draft:MODEL' -> (method, draft model or None)."""
    t = text.strip()
    method, _, model = t.partition(":")
    method = method.strip().lower()
    if method in ("mtp", "eagle") and not model:
        return method, None
    if method == "draft" and model.strip():
        return method, model.strip()
    raise ParseError(f"'{text}' is not a speculation method: use mtp, eagle or draft:MODEL (a catalog name, "
                     "HuggingFace id or file of the draft model)")


def parse_acceptance(text: str) -> float:
    """'0.8' or '80%' -> 0.8: a per-token acceptance above 0 and below 1."""
    t = text.strip().replace(" ", "")
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ParseError(f"'{text}' is not a probability: use e.g. 0.8 or 80%") from None
    if not (math.isfinite(value) and 0 < value < 1):
        raise ParseError(f"'{text}' must be above 0 and below 1, e.g. 0.8 or 80%")
    return value


def parse_range(text: str) -> tuple[float, float]:
    """'5:200' -> (5, 200) tokens/s/user; each end takes the --sla forms (20tok/s, 50ms)."""
    parts = text.split(":")
    if len(parts) != 2:
        raise ParseError(f"'{text}' is not a range: use LOW:HIGH in tokens/s/user, e.g. 5:200")
    lo, hi = (parse_sla(x) for x in parts)
    if lo > hi:
        lo, hi = hi, lo  # '50ms:10ms' reads as speeds 20:100
    return lo, hi
