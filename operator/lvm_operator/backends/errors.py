"""The errors every serve backend raises: one flat set, each naming its URL or object.

The controller catches :class:`BackendError` (and any other exception) around a backend call and
turns it into a condition and an Event; the subclasses say whether retrying can help.
"""

from __future__ import annotations


class BackendError(Exception):
    """Base class: the backend could not do what was asked. ``target`` names the URL/object."""

    def __init__(self, message: str, target: str, status_code: int | None = None) -> None:
        where = f"{target} answered {status_code}" if status_code is not None else target
        super().__init__(f"{message} ({where})")
        self.message = message
        self.target = target
        self.status_code = status_code


class BackendUnavailable(BackendError):
    """Connection refused, timed out, or a 5xx answer (after retries): try again later."""


class BackendRejected(BackendError):
    """The backend refused the config or the request (4xx): retrying the same thing won't help."""


class BackendNotFound(BackendError):
    """The target does not exist: the RayService object, or the RayService CRD itself."""


class BackendConflict(BackendError):
    """Someone else changed the target between our read and our write, again and again; or a
    foreign application cannot be preserved (deployed imperatively, without a config)."""


class UnexpectedResponse(BackendError):
    """The backend answered, but not in the shape we know (a Ray/KubeRay version mismatch?)."""


class BackendConfigError(BackendError):
    """The rollout's ``spec.serve`` cannot select a backend (a missing URL or RayService name)."""
