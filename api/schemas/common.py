"""Shapes shared by every resource: progress, pages, problem details."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

T = TypeVar("T")


class Progress(BaseModel):
    """Where a campaign's current step stands; ``message`` says in words what it waits for."""

    phase: str | None = None
    step: int | None = None
    total: int | None = None
    percent: float | None = None
    eta_s: float | None = Field(None, description="seconds left, from the measured throughput")
    round: int = 0
    rounds: int = 0
    message: str | None = None


class Page(BaseModel, Generic[T]):
    """A page of a list; pass ``next_cursor`` as ``cursor`` for the next page (null: no more)."""

    items: list[T]
    next_cursor: str | None = None


class FieldError(BaseModel):
    field: str | None = None
    row: int | None = None
    column: str | None = None
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (400, 401, 404, 409, 413, 422, 429)
}


_NUMBERS = (int, float, int | None, float | None)
_BOOLS = (bool, bool | None)


class Strict(BaseModel):
    """Request bodies: unknown fields are refused by name, true/false is not a number and a number
    is not true/false (pydantic would read ``num_heads: false`` as zero heads), and text holds no
    NUL character."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, v in data.items():
                field = cls.model_fields.get(name)
                if field is None:
                    continue
                if isinstance(v, str) and "\x00" in v:
                    # Postgres text cannot hold NUL; say so by field, not as a database error.
                    raise ValueError(
                        f"{name}: contains a NUL character (\\x00); text cannot hold one"
                    )
                items = (
                    v
                    if typing.get_origin(field.annotation) in (list, tuple) and isinstance(v, list)
                    else [v]
                )
                numbers = field.annotation in _NUMBERS or any(
                    a in _NUMBERS for a in typing.get_args(field.annotation)
                )
                if numbers and any(isinstance(x, bool) for x in items):
                    raise ValueError(f"{name}: expected numbers, not true/false")
                if field.annotation in _BOOLS and v is not None and not isinstance(v, bool):
                    raise ValueError(f"{name}: expected true or false, not {v!r}")
        return data


def params_from_dataclass(
    name: str, cls: type, *, exclude: tuple[str, ...] = (), doc: str | None = None
) -> type[BaseModel]:
    """A pydantic model with the fields and defaults of a llome_core config dataclass, so the
    paper's defaults live only in ``llome_core.config``; unknown fields are refused by name."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        fields[f.name] = (hints[f.name], default)
    model = create_model(name, __base__=Strict, __doc__=doc or cls.__doc__, **fields)
    return model
