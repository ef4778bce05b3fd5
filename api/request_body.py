"""Request bodies are let in only after the sender is known, and only up to a limit counted while
they stream (the ASGI gate in ``api.main`` calls these before the app reads a byte).

- An API request that carries a body needs a live key first: without one it gets its 401
  before any body byte is read (the route would otherwise parse a multipart upload to
  temporary files, then refuse it).
- The dashboard answers its own login form: an unauthenticated body there may be
  ``UNAUTHENTICATED_BYTES`` at most; a logged-in session may upload like a key.
- The limit holds whether or not Content-Length is sent: Starlette's body-limit middleware
  counts the bytes as they arrive and stops reading at the limit with a 413.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.types import Scope

from api.config import Settings

UNAUTHENTICATED_BYTES = 64 * 1024  # a login form, never a file
ENVELOPE_BYTES = 64 * 1024  # room for the multipart envelope around an upload


def has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"").strip()
    return b"transfer-encoding" in headers or (length.isdigit() and int(length) > 0)


def _bearer(headers: dict[bytes, bytes]) -> str | None:
    value = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, key = value.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def _cookie(headers: dict[bytes, bytes], name: str) -> str | None:
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v or None
    return None


def _key_is_live(app_state: Any, key: str) -> bool:
    from api.services import labs

    with app_state.read_session_factory() as session:
        return labs.key_and_lab(session, key) is not None


def _dashboard_user(app_state: Any, sid: str) -> bool:
    """A logged-in dashboard session whose key is live (the page checks it again, with expiry)."""
    from sqlalchemy import select

    from api.models import ApiKey, DashboardSession
    from api.services import labs

    with app_state.read_session_factory() as session:
        return (
            session.scalar(
                select(DashboardSession.id)
                .join(ApiKey, ApiKey.id == DashboardSession.api_key_id)
                .where(DashboardSession.sid_hash == labs.hash_key(sid), ApiKey.revoked_at.is_(None))
            )
            is not None
        )


async def allowed_bytes(scope: Scope, settings: Settings) -> int | None:
    """How many body bytes this request may send; None: it must authenticate first (401)."""
    headers = dict(scope["headers"])
    state = scope["app"].state
    upload = settings.max_upload_bytes + ENVELOPE_BYTES
    if scope.get("path", "").startswith("/ui"):
        sid = _cookie(headers, "llome_session")
        logged_in = sid is not None and await anyio.to_thread.run_sync(_dashboard_user, state, sid)
        return upload if logged_in else UNAUTHENTICATED_BYTES
    key = _bearer(headers)
    live = key is not None and await anyio.to_thread.run_sync(_key_is_live, state, key)
    return upload if live else None


def too_large(limit: int) -> str:
    return (
        f"the request body is over {limit} bytes, the most this request may send (uploads: "
        "LLOME_MAX_UPLOAD_BYTES plus the multipart envelope; before logging in to the "
        f"dashboard: {UNAUTHENTICATED_BYTES})"
    )
