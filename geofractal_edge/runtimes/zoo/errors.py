"""Errors a zoo user can act on. Each names the problem and the fix (see geofractal_edge.errors)."""

from __future__ import annotations

from geofractal_edge.errors import GfedgeError


class NoCandidateError(GfedgeError):
    """No registered, healthy model declares what the request needs."""


class UnknownModelError(GfedgeError):
    """A model id that is not in the zoo."""


class UnknownRequestError(GfedgeError):
    """Feedback for a request id the zoo does not know (or already got feedback for)."""


class BusyError(GfedgeError):
    """The budget is held by models in use; the request waited and gave up."""


class ModelTooLargeError(GfedgeError):
    """A model that cannot fit the budget even with nothing else resident."""
