"""The FastAPI application: ``create_app(settings)`` wires routers, error handlers, the database
and the task publisher. Nothing is built at import time."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from api.config import Settings, get_settings
from api.db import make_engine, make_sessionmaker, schema_is_current, upgrade
from api.errors import install_handlers, problem
from api.routes import batches, campaigns, candidates, health, history, measurements, uploads
from api.services.jobs import CeleryPublisher, Publisher, make_celery

log = logging.getLogger("llome.api")

DESCRIPTION = """
LLM-guided sequence optimization campaigns (LLOME) for labs and for synthetic Ehrlich oracles.

Sequences are strings over the campaign's alphabet: a wet-lab campaign's own letters, or for an
Ehrlich oracle with v states the first v letters of `ABC...Zabc...z0...9` (state 0 = `A`).
CSV uploads are UTF-8 with one header row; errors are RFC 9457 problem details whose `errors`
list every bad row (spreadsheet numbering: the header is row 1). Nothing is stored from a file
with an error, and uploading the same file twice stores it once.
"""


def create_app(settings: Settings | None = None, *, publisher: Publisher | None = None,
               migrate: bool = True) -> FastAPI:
    """The app for ``settings``; ``publisher`` sends tasks (default: Celery on the settings'
    broker); ``migrate`` applies migrations at start (else it checks the schema is current)."""
    settings = settings or get_settings()
    if publisher is None:
        publisher = CeleryPublisher(make_celery(settings))
    engine = make_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            upgrade(settings)
        elif not schema_is_current(settings, engine):
            raise RuntimeError("the database schema is behind this version: run `llome db upgrade`")
        yield
        engine.dispose()

    app = FastAPI(title="llome", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_sessionmaker(engine, publisher)
    app.state.publisher = publisher
    install_handlers(app)

    @app.middleware("http")
    async def body_limit(request: Request, call_next: Any) -> Any:
        # Refuse an oversized upload from its Content-Length, before the body is read or spooled.
        length = request.headers.get("content-length")
        limit = settings.max_upload_bytes + 64 * 1024  # room for the multipart envelope
        if length is not None and length.isdigit() and int(length) > limit:
            return problem(413, "Upload too large",
                           f"the request body has {length} bytes; uploads are limited to "
                           f"{settings.max_upload_bytes} bytes (LLOME_MAX_UPLOAD_BYTES)",
                           request.url.path)
        return await call_next(request)

    @app.middleware("http")
    async def request_id(request: Request, call_next: Any) -> Any:
        # Every response names its request (taken from the client's X-Request-ID if given).
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
        response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response

    for module in (health, campaigns, measurements, batches, uploads, candidates, history):
        app.include_router(module.router)
    from api.ui import install as install_ui

    install_ui(app)  # the dashboard under /ui (its pages call the same services)
    return app
