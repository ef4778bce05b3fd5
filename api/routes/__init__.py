"""The HTTP routes, one module per resource."""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def json_of(model: BaseModel) -> Response:
    """``model`` as the JSON response, serialized once. A sync route returning the model itself
    has FastAPI validate it again on one more threadpool trip; polled routes skip that (their
    ``response_model`` still documents the shape)."""
    return Response(model.model_dump_json(), media_type="application/json")
