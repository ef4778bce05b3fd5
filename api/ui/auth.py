"""Dashboard sessions: the lab's API key in a server-side session, a per-session CSRF token.

The browser holds only a random session id (cookie ``llome_session``: HttpOnly, SameSite=Strict,
path /ui). The key itself stays on the server and is resolved again on every request, so a revoked
key stops working at once. Sessions live in the web process's memory: a restart logs users out.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

COOKIE = "llome_session"
IDLE_S = 12 * 3600  # a session unused this long is forgotten
MAX_SESSIONS = 10_000


@dataclass
class UiSession:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    key: str | None = None
    lab_name: str | None = None
    last_seen: float = field(default_factory=time.monotonic)


class SessionStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, UiSession] = {}

    def get(self, sid: str | None) -> UiSession | None:
        if not sid:
            return None
        with self._lock:
            s = self._items.get(sid)
            if s is None:
                return None
            now = time.monotonic()
            if now - s.last_seen > IDLE_S:
                del self._items[sid]
                return None
            s.last_seen = now
            return s

    def new(self) -> tuple[str, UiSession]:
        sid, s = secrets.token_urlsafe(32), UiSession()
        with self._lock:
            if len(self._items) >= MAX_SESSIONS:  # forget the least recently used
                oldest = min(self._items, key=lambda k: self._items[k].last_seen)
                del self._items[oldest]
            self._items[sid] = s
        return sid, s

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._items.pop(sid or "", None)


def store(request: Request) -> SessionStore:
    app = request.app
    if not hasattr(app.state, "ui_sessions"):
        app.state.ui_sessions = SessionStore()
    return app.state.ui_sessions


def current(request: Request) -> UiSession | None:
    return store(request).get(request.cookies.get(COOKIE))


def set_cookie(response: Any, sid: str, secure: bool) -> None:
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/ui", secure=secure)


def csrf_ok(s: UiSession | None, token: str | None) -> bool:
    return s is not None and bool(token) and hmac.compare_digest(s.csrf, token or "")


def authenticate(session: Session, key: str) -> Any | None:
    """The lab owning ``key`` (the same check as the API's Bearer auth), or None."""
    from api.services import labs

    key = key.strip()
    return labs.authenticate(session, key) if key else None


def key_id(session: Session, key: str) -> int | None:
    from api.services import labs

    row = labs.key_for(session, key.strip())
    return None if row is None else row.id


def lab_id(lab: Any) -> int | None:
    return getattr(lab, "id", None)
