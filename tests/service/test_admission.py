"""Admission under load: a request over the concurrency limit waits, then gets a fast 503."""

from __future__ import annotations

import asyncio

import httpx

from api.config import Settings
from api.main import Gate


def test_request_over_the_limit_gets_503_with_retry_after() -> None:
    release = asyncio.Event()

    async def held(scope, receive, send):  # type: ignore[no-untyped-def]
        await release.wait()  # holds its slot (and, in the service, its connection)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    settings = Settings(
        database_url="sqlite://", db_pool_size=1, db_max_overflow=0, request_queue_s=0.05
    )
    gate = Gate(held, settings)

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gate), base_url="http://t"
        ) as c:
            first = asyncio.create_task(c.get("/a"))
            await asyncio.sleep(0.01)
            second = await c.get("/b", headers={"X-Request-ID": "r2"})
            release.set()
            return await first, second

    first, second = asyncio.run(scenario())
    assert first.status_code == 200
    assert second.status_code == 503
    assert second.headers["content-type"].startswith("application/problem+json")
    assert int(second.headers["retry-after"]) >= 1
    assert second.headers["x-request-id"] == "r2"
    assert "requests are in progress" in second.json()["detail"]
