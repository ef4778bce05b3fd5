"""The FastAPI application: ``create_app(settings)`` wires routers, error handlers, the database
and the task publisher. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import request_body
from api.config import Settings, get_settings
from api.db import make_engine, make_sessionmaker, read_only, schema_is_current, upgrade
from api.errors import install_handlers, problem
from api.ratelimit import TooManyRequests, limiter_of
from api.routes import (
    batches,
    bundles,
    campaigns,
    candidates,
    health,
    history,
    measurements,
    models,
    notifications,
    operation_id,
    twins,
    uploads,
)
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


def create_app(
    settings: Settings | None = None, *, publisher: Publisher | None = None, migrate: bool = True
) -> FastAPI:
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
        # Each admitted request runs its sync parts on one thread at a time: enough threads for
        # every admitted request, so none holds a connection while waiting for a thread.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, settings.max_concurrent_requests + 8)
        yield
        engine.dispose()

    app = FastAPI(
        title="llome",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_sessionmaker(engine, publisher)
    app.state.read_session_factory = make_sessionmaker(read_only(engine), publisher)
    app.state.publisher = publisher
    install_handlers(app)

    app.add_middleware(Gate, settings=settings)

    for module in (
        health,
        bundles,
        campaigns,
        measurements,
        batches,
        uploads,
        candidates,
        history,
        models,
        notifications,
        twins,
    ):
        app.include_router(module.router)
    from api.ui import install as install_ui

    install_ui(app)  # the dashboard under /ui (its pages call the same services)
    return app


class Gate:
    """Pure ASGI middleware in front of every HTTP request: its X-Request-ID (the client's, or a
    new one), a 413 for an oversized upload from its Content-Length (before the body is read),
    a body only from a known sender and only up to its limit (``api.request_body``), and
    admission: at most ``settings.max_concurrent_requests`` requests inside at once (one
    pooled connection each); the others wait up to ``request_queue_s``, then get a 503."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.settings.max_concurrent_requests))
        return self._slots[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        path = scope.get("path", "")
        length = headers.get(b"content-length", b"").decode("latin-1")
        limit = self.settings.max_upload_bytes + request_body.ENVELOPE_BYTES
        if length.isdigit() and int(length) > limit:
            response = problem(
                413,
                "Upload too large",
                f"the request body has {length} bytes; uploads are limited to "
                f"{self.settings.max_upload_bytes} bytes (LLOME_MAX_UPLOAD_BYTES)",
                path,
            )
            await response(scope, receive, send_with_id)
            return
        slots = self._semaphore()
        try:
            await asyncio.wait_for(slots.acquire(), self.settings.request_queue_s)
        except TimeoutError:
            response = problem(
                503,
                "Service busy",
                f"more than {self.settings.max_concurrent_requests} requests are in "
                f"progress and this one waited {self.settings.request_queue_s:g} s; "
                "retry after the Retry-After seconds",
                path,
            )
            response.headers["Retry-After"] = str(
                max(1, math.ceil(self.settings.request_queue_s / 10))
            )
            await response(scope, receive, send_with_id)
            return
        try:
            app = self.app
            if request_body.has_body(headers):
                allowed = await request_body.allowed_bytes(scope, self.settings)
                if allowed is None:  # no body byte is read for a sender nobody knows
                    await self._unauthorized(scope, receive, send_with_id)
                    return
                if length.isdigit() and int(length) > allowed:
                    await problem(413, "Upload too large", request_body.too_large(allowed), path)(
                        scope, receive, send_with_id
                    )
                    return
                app = RequestBodyLimitMiddleware(app, allowed)  # counted as the body streams
            await app(scope, receive, send_with_id)
        finally:
            slots.release()

    async def _unauthorized(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        try:
            limiter_of(scope["app"].state).failed(scope)
        except TooManyRequests as exc:
            response = problem(429, exc.title, exc.message, path)
            response.headers.update(exc.headers)
        else:
            response = problem(
                401,
                "Unauthorized",
                "this request has a body: send a live API key "
                "first, in the header 'Authorization: Bearer <key>'",
                path,
            )
            response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
