"""Named exceptions of the library. The CLI turns each into one line on stderr and exit code 2."""


class PlannerError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class SpecError(PlannerError):
    """A model, cluster or workload description is malformed or impossible."""


class UnknownNameError(PlannerError):
    """A catalog name or alias that does not exist."""


class InvalidLayoutError(PlannerError):
    """A given layout or batch breaks one of the planner's rules."""


class InfeasibleError(PlannerError):
    """No plan satisfies the rules and the service level."""
