"""Named exceptions of the library. Each carries a one-line message without command-line option names,
and structured fields a caller can act on; the CLI prints the message, adds its own hint, and exits 2."""

from __future__ import annotations


class PlannerError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class SpecError(PlannerError):
    """A model, cluster or workload description is malformed or impossible."""


class UnknownNameError(PlannerError):
    """A catalog name or alias that does not exist."""


class InvalidLayoutError(PlannerError):
    """A given layout or batch breaks one of the planner's rules (`rule`: its name in planner.rules.RULES)."""

    def __init__(self, message: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class InfeasibleError(PlannerError):
    """No plan satisfies the rules and the service level. `reason` says which requirement is out of reach:
    'chunk' (no chunk keeps the batch full), 'fit' (the weights do not fit the GPUs given), 'layout' (the
    divisibility rules leave no layout on this GPU count), 'ttft', 'sla' or 'demand'; `reachable` holds
    what the search found reachable instead (e.g. {'gpus': 16}, {'tokens_per_s_per_user': 33.5})."""

    def __init__(self, message: str, reason: str = "", reachable: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.reachable = reachable or {}


class SearchTooLargeError(PlannerError):
    """The search space is too large to evaluate within the time limit or in memory: `options` to
    evaluate, about `seconds` needed, `limit_s` allowed (None when memory is the limit)."""

    def __init__(self, message: str, options: int, seconds: float, limit_s: float | None) -> None:
        super().__init__(message)
        self.options, self.seconds, self.limit_s = options, seconds, limit_s


class TimeLimitError(PlannerError):
    """The time limit `limit_s` passed before any plan was found."""

    def __init__(self, message: str, limit_s: float) -> None:
        super().__init__(message)
        self.limit_s = limit_s
