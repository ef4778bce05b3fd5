"""Dashboard sessions live in the database: a login made on one web process holds on another,
only the session id's hash is stored, and revoking the key ends the session everywhere."""

from __future__ import annotations

import hashlib
import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from api.db import session_scope
from api.main import create_app
from api.models import ApiKey, DashboardSession
from api.services import labs
from api.ui import auth
from tests.conftest import make_key


def _login(client: TestClient, key: str) -> str:
    page = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post(
        "/ui/login", data={"api_key": key, "csrf": csrf, "next": "/ui"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui", r.text
    return client.cookies[auth.COOKIE]


def test_a_login_on_one_web_process_holds_on_another(settings, publisher, session_factory) -> None:
    key = make_key(session_factory)
    first = create_app(settings, publisher=publisher, migrate=False)
    second = create_app(settings, publisher=publisher, migrate=False)  # another process's app
    with TestClient(first, base_url="http://testserver") as a, TestClient(second) as b:
        sid = _login(a, key)
        b.cookies.set(auth.COOKIE, sid, path="/ui")
        page = b.get("/ui", follow_redirects=False)
        assert page.status_code == 200, page.headers.get("location")
        with session_factory() as s:
            row = s.scalar(
                select(DashboardSession).where(
                    DashboardSession.sid_hash == hashlib.sha256(sid.encode()).hexdigest()
                )
            )
            assert row is not None and row.api_key_id is not None
            assert (
                s.scalar(select(DashboardSession).where(DashboardSession.sid_hash == sid)) is None
            )

        with session_scope(session_factory) as s:
            labs.revoke(s, s.scalar(select(ApiKey.id).where(ApiKey.key_hash == labs.hash_key(key))))
        gone = a.get("/ui", follow_redirects=False)
        assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/login")
        assert b.get("/ui", follow_redirects=False).status_code == 303


def test_logging_out_ends_the_session_for_every_process(
    settings, publisher, session_factory
) -> None:
    key = make_key(session_factory)
    app = create_app(settings, publisher=publisher, migrate=False)
    with (
        TestClient(app) as a,
        TestClient(create_app(settings, publisher=publisher, migrate=False)) as b,
    ):
        sid = _login(a, key)
        csrf = re.search(r'name="csrf" value="([^"]+)"', a.get("/ui").text).group(1)  # type: ignore[union-attr]
        assert a.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
        b.cookies.set(auth.COOKIE, sid, path="/ui")
        assert b.get("/ui", follow_redirects=False).status_code == 303
