"""One error hierarchy and one JSON envelope: RFC 9457 problem details (``application/problem+json``).

CSV problems carry ``errors: [{row, column, reason}]``; request-shape problems (422) carry
``errors: [{field, reason}]`` naming the dotted field.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

log = logging.getLogger("llome.api")

PROBLEM_JSON = "application/problem+json"


class LlomeError(Exception):
    """An error the client can act on; ``message`` says what was wrong and what is expected."""

    status: int = 400
    title: str = "Bad request"

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.extra = extra


class StoredResponse(Exception):
    """A retried idempotent request: its first response (status and JSON body) is sent again."""

    def __init__(self, status_code: int, body: dict[str, Any]):
        super().__init__(status_code)
        self.status_code = status_code
        self.body = body


class Unauthorized(LlomeError):
    """No API key, or one that is unknown or revoked."""

    status = 401
    title = "Unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class NotFound(LlomeError):
    status = 404
    title = "Not found"


class CampaignNotFound(NotFound):
    def __init__(self, campaign_id: int):
        super().__init__(f"campaign {campaign_id} does not exist")


class BatchNotFound(NotFound):
    def __init__(self, campaign_id: int, batch_id: int):
        super().__init__(f"campaign {campaign_id} has no batch {batch_id}")


class Conflict(LlomeError):
    status = 409
    title = "Conflict"


class BatchNotAwaitingLabels(Conflict):
    title = "Batch not awaiting labels"


class InvalidState(Conflict):
    title = "Not allowed in this state"


class InvalidUpload(LlomeError):
    """A file that cannot be stored as it is; ``errors`` lists every problem with its row."""

    status = 422
    title = "Invalid upload"


class PayloadTooLarge(LlomeError):
    status = 413
    title = "Upload too large"


def problem(
    status: int, title: str, detail: str, instance: str | None = None, **fields: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in fields.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def validation_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Pydantic's errors as ``[{field, reason}]``, in the names and words a user typed."""
    return [
        {
            "field": _field_name(tuple(e.get("loc", ()))),
            "reason": str(e.get("msg", "invalid")).removeprefix("Value error, "),
        }
        for e in errors
    ]


def _field_name(loc: tuple[Any, ...]) -> str:
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        loc = loc[1:]  # where the value came from, not its name
    parts = [str(p) for p in loc]
    # Discriminated unions add the tag ("ehrlich") to the location: drop it, users never typed it.
    return ".".join(p for p in parts if p not in ("ehrlich", "wetlab", "llome", "ga")) or "body"


def _allowed(request: Request) -> list[str]:
    path = request.url.path
    paths = request.app.openapi().get("paths", {})
    if path in paths:  # a literal path (POST /campaigns/import) is not also a template's
        return sorted(m.upper() for m in paths[path])
    methods: set[str] = set()
    for template, ops in paths.items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {m.upper() for m in ops}
    return sorted(methods)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(LlomeError)
    async def _llome(request: Request, exc: LlomeError) -> JSONResponse:
        response = problem(
            exc.status, exc.title, exc.message, request.url.path, errors=exc.errors, **exc.extra
        )
        response.headers.update(getattr(exc, "headers", {}))
        return response

    @app.exception_handler(StoredResponse)
    async def _stored(request: Request, exc: StoredResponse) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc.errors())
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return problem(422, "Invalid request", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 413 and MAX_BODY_SIZE_SCOPE_KEY in request.scope:
            from api.request_body import too_large

            detail = too_large(request.scope[MAX_BODY_SIZE_SCOPE_KEY])  # reading stopped there
        response = problem(exc.status_code, str(exc.detail), detail, request.url.path)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; list every documented one.
            response.headers["Allow"] = ", ".join(_allowed(request))
        return response

    @app.exception_handler(DataError)
    async def _out_of_range(request: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot hold: the client's mistake, not a server error. An id in
        # the path past the database's integers names nothing that exists: 404.
        # A path id is text, or already an int where the route's path converts it.
        ids = [str(v) for k, v in request.path_params.items() if k.endswith("_id")]
        if any(not v.lstrip("-").isdigit() or not -(2**31) <= int(v) < 2**31 for v in ids):
            return problem(404, "Not found", f"{request.url.path} does not exist", request.url.path)
        return problem(
            422,
            "Invalid request",
            "a value is outside what this service stores (integers are at most 2147483647)",
            request.url.path,
        )

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Every database connection stayed busy for db_pool_timeout_s: overload, not a bug.
        response = problem(
            503,
            "Service busy",
            "no database connection came free in time; retry after the Retry-After seconds",
            request.url.path,
        )
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(OperationalError)
    async def _database_busy(request: Request, exc: OperationalError) -> JSONResponse:
        # SQLite (the embedded default) lets one writer in at a time; one that waited its busy
        # timeout is told to come back, not given a 500.
        if "database is locked" in str(exc.orig) or "database table is locked" in str(exc.orig):
            response = problem(
                503,
                "Service busy",
                "the database is busy with another write; retry after the Retry-After seconds",
                request.url.path,
            )
            response.headers["Retry-After"] = "2"
            return response
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(
            500,
            "Internal error",
            "an unexpected error occurred; see the server log",
            request.url.path,
        )
