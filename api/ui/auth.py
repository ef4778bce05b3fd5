"""Dashboard sessions: a login in a server-side session, a per-session CSRF token.

The browser holds only a random session id (cookie ``llome_session``: HttpOnly, SameSite=Strict,
path /ui). The session, in the database (only the id's SHA-256), names the API key the user
logged in with; the key is checked again on every request, so a revoked key stops working at
once. Any web process answers any page, and a restart logs nobody out.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from api.db import session_scope, utcnow
from api.models import ApiKey, DashboardSession, Lab
from api.services import labs

COOKIE = "llome_session"
IDLE = timedelta(hours=12)  # a session unused this long is forgotten
TOUCH = timedelta(minutes=1)  # last_seen_at is written at most this often


@dataclass(frozen=True)
class UiSession:
    csrf: str
    api_key_id: int | None = None  # None: not logged in


class SessionStore:
    """Sessions in the ``ui_session`` table, each call its own short transaction."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def get(self, sid: str | None) -> UiSession | None:
        if not sid or len(sid) > 100:
            return None
        now = utcnow()
        with session_scope(self.factory) as db:
            row = db.scalar(
                select(DashboardSession).where(DashboardSession.sid_hash == labs.hash_key(sid))
            )
            if row is None:
                return None
            if now - row.last_seen_at > IDLE:
                db.delete(row)
                return None
            if now - row.last_seen_at > TOUCH:
                row.last_seen_at = now
            return UiSession(row.csrf, row.api_key_id)

    def new(self, api_key_id: int | None = None) -> tuple[str, UiSession]:
        sid, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), utcnow()
        with session_scope(self.factory) as db:
            db.execute(delete(DashboardSession).where(DashboardSession.last_seen_at < now - IDLE))
            db.add(
                DashboardSession(
                    sid_hash=labs.hash_key(sid),
                    csrf=csrf,
                    api_key_id=api_key_id,
                    created_at=now,
                    last_seen_at=now,
                )
            )
        return sid, UiSession(csrf, api_key_id)

    def drop(self, sid: str | None) -> None:
        if not sid:
            return
        with session_scope(self.factory) as db:
            db.execute(
                delete(DashboardSession).where(DashboardSession.sid_hash == labs.hash_key(sid))
            )


def store(request: Request) -> SessionStore:
    return request.app.state.ui_sessions


def current(request: Request) -> UiSession | None:
    return store(request).get(request.cookies.get(COOKIE))


def set_cookie(response: Any, sid: str, secure: bool) -> None:
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/ui", secure=secure)


def csrf_ok(s: UiSession | None, token: str | None) -> bool:
    return s is not None and bool(token) and hmac.compare_digest(s.csrf, token or "")


def login(session: Session, key: str) -> tuple[int, Lab] | None:
    """The id of ``key`` and its lab (the same check as the API's Bearer auth), or None."""
    found = labs.key_and_lab(session, key.strip()) if key.strip() else None
    return None if found is None else (found[0].id, found[1])


def lab_of(session: Session, api_key_id: int) -> Lab | None:
    """The lab of a logged-in session's key, or None once the key is revoked."""
    return session.scalar(
        select(Lab)
        .join(ApiKey, ApiKey.lab_id == Lab.id)
        .where(ApiKey.id == api_key_id, ApiKey.revoked_at.is_(None))
    )
