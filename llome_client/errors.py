"""Typed exceptions: every problem+json answer of the API raises one of these, carrying it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.schemas.common import Problem

if TYPE_CHECKING:
    import pandas as pd


class LlomeApiError(Exception):
    """The API answered with an RFC 9457 problem; ``problem`` is it, parsed."""

    retry_after: float | None = None  # seconds, from a 429 or 503 answer's Retry-After

    def __init__(self, problem: Problem, *, method: str = "", url: str = "") -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")
        self.problem = problem
        self.status = problem.status
        self.method, self.url = method, url

    @property
    def detail(self) -> str:
        return self.problem.detail


class BadRequest(LlomeApiError):
    """400: the request cannot be understood (a malformed cursor, a bad parameter)."""


class Unauthorized(LlomeApiError):
    """401: no API key, or an unknown or revoked one."""


class NotFound(LlomeApiError):
    """404: no such resource (another lab's campaign is one too)."""


class Conflict(LlomeApiError):
    """409: not allowed in the resource's present state."""


class PayloadTooLarge(LlomeApiError):
    """413: an upload over the server's size or row limit."""


class ValidationFailed(LlomeApiError):
    """422: the body or file is invalid; ``problem.errors`` names each field or row."""


class RateLimited(LlomeApiError):
    """429: too many requests for this key; ``retry_after`` seconds to wait."""


class ServiceBusy(LlomeApiError):
    """503: the server is at capacity; retry later."""


class ServerError(LlomeApiError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[LlomeApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: ServiceBusy,
}


def error_for(status: int, body: Any, *, method: str = "", url: str = "") -> LlomeApiError:
    """The typed exception for an error answer (a problem+json body, or whatever came back)."""
    try:
        problem = Problem.model_validate(body)
    except ValueError:
        problem = Problem(title="Error", status=status, detail=str(body)[:2000])
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else LlomeApiError)
    return cls(problem, method=method, url=url)


class UploadRejected(ValidationFailed):
    """A file with rejected rows: nothing was stored. ``errors`` is a DataFrame of row (1 is the
    header), column and reason; ``upload`` is the previewed upload when the server kept one."""

    def __init__(self, problem: Problem, errors: pd.DataFrame, upload: Any = None) -> None:
        super().__init__(problem)
        self.errors = errors
        self.upload = upload


class CampaignEnded(RuntimeError):
    """``wait_for_batch`` on a campaign that completed, failed or was cancelled meanwhile."""

    def __init__(self, campaign_id: int, status: str, reason: str | None) -> None:
        super().__init__(f"campaign {campaign_id} is {status}" + (f": {reason}" if reason else ""))
        self.campaign_id, self.status, self.reason = campaign_id, status, reason
