"""Request bodies: the sender is known before a body byte is read, the size limit holds while the
body streams (with or without Content-Length), and no temporary file outlives its request.

The app is driven as an ASGI server drives it, so the test counts exactly the bytes it pulled."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.main import create_app
from tests.service.test_campaigns import WETLAB

BOUNDARY = b"llomeboundary"
CHUNK = 64 * 1024


def _multipart_chunks(total_bytes: int) -> Iterator[bytes]:
    """A CSV upload of about ``total_bytes`` as a chunked multipart body (never all in memory)."""
    yield (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="x.csv"'
        b"\r\nContent-Type: text/csv\r\n\r\nsequence,score\r\n"
    )
    row = b"ACDEFZ,0.5\r\n"  # Z is not in the alphabet: a file that fails validation
    block = row * (CHUNK // len(row))
    for _ in range(total_bytes // len(block)):
        yield block
    yield b"\r\n--" + BOUNDARY + b"--\r\n"


def _drive(
    app,
    path: str,
    headers: list[tuple[bytes, bytes]],  # type: ignore[no-untyped-def]
    chunks: Iterator[bytes],
) -> tuple[int, int, dict]:
    """POST ``chunks`` to ``path``; returns (status, body bytes the app pulled, JSON answer)."""
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("10.9.8.7", 4321),
        "server": ("testserver", 80),
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),
            *headers,
        ],
    }
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, pulled, json.loads(body or b"{}")


def _deleted_open_files() -> int:
    """Open files of this process whose name is gone (unlinked temporary files)."""
    fds = Path("/proc/self/fd")
    if not fds.exists():
        pytest.skip("needs /proc")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).endswith("(deleted)")
        except OSError:
            continue
    return count


@pytest.fixture
def small_app(settings, publisher):  # type: ignore[no-untyped-def]
    # 3 MB: past Starlette's 1 MB in-memory spool, so the upload really goes to a temporary file.
    return create_app(
        settings.model_copy(update={"max_upload_bytes": 3_000_000}),
        publisher=publisher,
        migrate=False,
    )


@pytest.fixture
def campaign_id(client) -> int:  # type: ignore[no-untyped-def]
    return client.post("/campaigns", json={"name": "bodies", "oracle": WETLAB}).json()["id"]


CHUNKED = [(b"transfer-encoding", b"chunked")]


def test_a_body_without_a_key_is_refused_before_a_byte_is_read(small_app, campaign_id) -> None:
    gigabyte = _multipart_chunks(1 << 30)
    for headers in (CHUNKED, [*CHUNKED, (b"authorization", b"Bearer llome_not-a-key")]):
        status, pulled, problem = _drive(
            small_app, f"/campaigns/{campaign_id}/uploads", headers, gigabyte
        )
        assert (status, pulled) == (401, 0), problem
        assert problem["status"] == 401


def test_the_size_limit_holds_while_streaming_without_content_length(
    small_app, api_key, campaign_id
) -> None:
    before = _deleted_open_files()
    headers = [*CHUNKED, (b"authorization", f"Bearer {api_key}".encode())]
    status, pulled, problem = _drive(
        small_app, f"/campaigns/{campaign_id}/uploads", headers, _multipart_chunks(1 << 30)
    )
    assert status == 413, problem
    assert "3000000" in problem["detail"] or str(3_000_000 + 64 * 1024) in problem["detail"]
    assert pulled <= 3_000_000 + 64 * 1024 + CHUNK  # reading stopped at the limit
    assert _deleted_open_files() == before  # the spooled temporary file went with the request


def test_a_declared_length_over_the_limit_is_refused_unread(
    small_app, api_key, campaign_id
) -> None:
    headers = [(b"content-length", b"50000000"), (b"authorization", f"Bearer {api_key}".encode())]
    status, pulled, _ = _drive(
        small_app, f"/campaigns/{campaign_id}/uploads", headers, _multipart_chunks(1 << 30)
    )
    assert (status, pulled) == (413, 0)


def test_a_failed_upload_of_a_large_file_leaves_no_temporary_file(
    small_app, api_key, campaign_id
) -> None:
    before = _deleted_open_files()
    headers = [*CHUNKED, (b"authorization", f"Bearer {api_key}".encode())]
    # 2 MB of rows with a letter outside the alphabet: a 422 after the whole file was read.
    status, pulled, problem = _drive(
        small_app, f"/campaigns/{campaign_id}/measurements", headers, _multipart_chunks(2_000_000)
    )
    assert status == 422, problem
    assert pulled > 1_000_000
    assert _deleted_open_files() == before


def test_the_dashboard_takes_a_small_body_before_login(small_app) -> None:
    status, pulled, _ = _drive(
        small_app, "/ui/campaigns/1/uploads", CHUNKED, _multipart_chunks(1 << 30)
    )
    assert status == 413
    assert pulled <= 64 * 1024 + CHUNK


def test_a_logged_in_dashboard_session_uploads_past_the_login_limit(
    small_app, api_key, campaign_id
) -> None:
    from fastapi.testclient import TestClient

    from tests.service.test_dashboard_sessions import _login

    big = b"sequence,score\n" + b"ACDEFG,0.5\n" * 20_000  # 220 KB: over the 64 KiB before login
    with TestClient(small_app, base_url="http://testserver") as c:
        before = c.post(
            f"/ui/campaigns/{campaign_id}/uploads",
            files={"file": ("big.csv", big, "text/csv")},
            follow_redirects=False,
        )
        assert before.status_code == 413
        _login(c, api_key)
        after = c.post(
            f"/ui/campaigns/{campaign_id}/uploads",
            files={"file": ("big.csv", big, "text/csv")},
            follow_redirects=False,
        )
        assert after.status_code != 413, after.text[:300]
