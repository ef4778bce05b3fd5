"""The HTTP routes, one module per resource."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from api.errors import LlomeError

# The paging query of every list (``api.services.paging``): ``next_cursor`` of the previous page.
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
# A cursor is the id a page ended at, as digits: the schema says so, so a client (or a fuzzer)
# knows which strings can be one, and anything else is a 422 naming the parameter.
Cursor = Annotated[
    str | None,
    Query(description="next_cursor of the previous page", pattern=r"^[0-9]{0,18}$"),
]


def parse_cursor(cursor: str | None) -> int | None:
    if cursor in (None, ""):
        return None
    try:
        return int(cursor)
    except ValueError:
        raise LlomeError(f"cursor {cursor!r} is not one this API returned") from None


def json_of(model: BaseModel) -> Response:
    """``model`` as the JSON response, serialized once. A sync route returning the model itself
    has FastAPI validate it again on one more threadpool trip; polled routes skip that (their
    ``response_model`` still documents the shape)."""
    return Response(model.model_dump_json(), media_type="application/json")


def operation_id(route: APIRoute) -> str:
    """The OpenAPI operation id: the route function's name (``create_campaign``, ``get_batch``),
    so generated clients read well and keep their names when a path changes."""
    return route.name


def file_response(*media_types: str, description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 whose body is a file (PNG, CSV, FASTA, tar.gz), described as binary so client
    generators return its bytes instead of dropping the body. A binary type also lists
    application/octet-stream: generators that know no image or archive type (openapi-python-
    client 0.29 drops them) keep the body as bytes through it."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    content = {m: binary for m in media_types}
    if not all(m.startswith("text/") for m in media_types):
        content["application/octet-stream"] = binary
    return {200: {"description": description, "content": content}}
