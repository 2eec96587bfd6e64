"""The two ways planning stops: the input is wrong, or the input is fine and nothing meets it."""

from __future__ import annotations


class PlanInputError(ValueError):
    """A workload, catalog, profile or inventory value is wrong; the message names the file/field."""


class PlanInfeasible(ValueError):
    """The inputs are valid but no deployment meets them; the message names the binding constraint in plain words."""

    def __init__(self, message: str, binding: list[str] | None = None) -> None:
        super().__init__(message)
        self.binding = binding or [message]
