"""The service's clock, injectable: ``app.state.clock`` (a function returning an aware UTC
datetime) replaces the wall clock, so label expiry can be tested without waiting."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from api.db import utcnow


def request_now(request: Request) -> datetime:
    clock = getattr(request.app.state, "clock", None)
    return clock() if clock is not None else utcnow()


NowDep = Annotated[datetime, Depends(request_now)]
