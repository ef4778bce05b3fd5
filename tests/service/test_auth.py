"""Access: API keys (only their hash stored), a lab sees only its own campaigns, every route but
/health and the docs needs a key, and the embedded default's first key."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from api.config import get_settings
from api.db import session_scope
from api.models import ApiKey, Campaign, Lab
from api.services import labs
from llome_cli import main
from tests.conftest import make_key
from tests.service.test_campaigns import WETLAB

OPEN_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def _wetlab(client: TestClient) -> int:
    r = client.post(
        "/campaigns",
        json={
            "name": "lab",
            "oracle": WETLAB,
            "batch_size": 20,
            "rounds": 1,
            "optimizer": {"kind": "ga"},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _concrete(path: str, cid: int) -> str:
    return (
        path.replace("{campaign_id}", str(cid))
        .replace("{batch_id}", "1")
        .replace("{sequence_id}", "1")
    )


def test_every_api_route_but_health_and_docs_needs_a_key(app, client, anon_client) -> None:
    cid = _wetlab(client)
    schema = client.get("/openapi.json").json()
    checked = 0
    for path, ops in schema["paths"].items():
        if path in OPEN_PATHS or path.startswith("/ui"):
            continue
        for method in ops:
            r = anon_client.request(method.upper(), _concrete(path, cid))
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in r.json()["detail"]
            checked += 1
    assert checked >= 10
    assert anon_client.get("/health").status_code == 200
    assert anon_client.get("/docs").status_code == 200
    assert anon_client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer llome_not-a-real-key",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "llome_bare-key-without-scheme",
    ],
)
def test_an_unknown_or_malformed_key_is_a_401(anon_client, header: str) -> None:
    r = anon_client.get("/campaigns", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json()["status"] == 401


def test_an_unknown_key_on_a_campaign_is_a_401_not_a_404(client, anon_client) -> None:
    # Campaign routes check key and campaign in one query; a miss must still tell the two apart.
    cid = _wetlab(client)
    for path in (f"/campaigns/{cid}", f"/campaigns/{cid + 1000}"):
        r = anon_client.get(path, headers={"Authorization": "Bearer llome_not-a-real-key"})
        assert r.status_code == 401, (path, r.text)
    assert client.get(f"/campaigns/{cid + 1000}").status_code == 404


def test_a_revoked_key_stops_working_at_once(anon_client, session_factory) -> None:
    key = make_key(session_factory)
    auth = {"Authorization": f"Bearer {key}"}
    assert anon_client.get("/campaigns", headers=auth).status_code == 200
    cid = _wetlab(TestClient(anon_client.app, headers=auth))
    assert anon_client.get(f"/campaigns/{cid}", headers=auth).status_code == 200
    with session_scope(session_factory) as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == labs.hash_key(key)))
        assert labs.revoke(s, row.id)
    for path in ("/campaigns", f"/campaigns/{cid}", f"/campaigns/{cid}/batches"):
        r = anon_client.get(path, headers=auth)
        assert r.status_code == 401 and "revoked" in r.json()["detail"], (path, r.text)


def test_another_labs_campaign_is_a_404_everywhere(client, anon_client, session_factory) -> None:
    mine = _wetlab(client)
    other = {"Authorization": f"Bearer {make_key(session_factory)}"}
    seed = b"sequence,score\nACDEFG,1.0\n"
    for method, path, kwargs in [
        ("GET", f"/campaigns/{mine}", {}),
        ("GET", f"/campaigns/{mine}/batches", {}),
        ("GET", f"/campaigns/{mine}/sequences", {}),
        ("GET", f"/campaigns/{mine}/export", {}),
        ("GET", f"/campaigns/{mine}/events", {}),
        ("GET", f"/campaigns/{mine}/metrics", {}),
        ("POST", f"/campaigns/{mine}/pause", {}),
        ("POST", f"/campaigns/{mine}/cancel", {}),
        (
            "POST",
            f"/campaigns/{mine}/measurements",
            {"files": {"file": ("s.csv", seed, "text/csv")}},
        ),
    ]:
        r = anon_client.request(method, path, headers=other, **kwargs)
        assert r.status_code == 404, (method, path, r.text)
        # the same answer as for a campaign that does not exist: nothing leaks
        assert r.json()["detail"] == f"campaign {mine} does not exist"
    assert mine not in [
        c["id"] for c in anon_client.get("/campaigns", headers=other).json()["items"]
    ]
    # nothing the other lab tried changed this lab's campaign
    assert client.get(f"/campaigns/{mine}").json()["status"] == "created"
    assert client.get(f"/campaigns/{mine}/sequences").json()["items"] == []


def test_campaigns_are_listed_for_their_own_lab_only(client, anon_client, session_factory) -> None:
    mine = {_wetlab(client) for _ in range(2)}
    other = TestClient(
        anon_client.app, headers={"Authorization": f"Bearer {make_key(session_factory)}"}
    )
    theirs = _wetlab(other)
    assert {c["id"] for c in client.get("/campaigns").json()["items"]} == mine
    assert [c["id"] for c in other.get("/campaigns").json()["items"]] == [theirs]


def test_only_the_hash_of_a_key_is_stored(session_factory) -> None:
    with session_scope(session_factory) as s:
        row, key = labs.create_key(s, "hash-check-lab")
    assert key.startswith("llome_") and len(key) >= 40
    with session_factory() as s:
        stored = s.execute(
            text("SELECT prefix, key_hash FROM api_key WHERE id = :i"), {"i": row.id}
        ).one()
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored and key not in stored.prefix  # the key itself is nowhere
    with session_factory() as s:
        assert labs.key_and_lab(s, key)[1].name == "hash-check-lab"
        assert labs.key_and_lab(s, key[:-1] + ("A" if key[-1] != "A" else "B")) is None


def test_llome_keys_create_prints_a_working_key_once(monkeypatch, tmp_path: Path, capsys) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "LLOME_DATABASE_URL", "LLOME_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path}/keys.db"
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert main(["db", "upgrade"]) == 0
        capsys.readouterr()
        assert main(["keys", "create", "--lab", "Protein Lab"]) == 0
        out = capsys.readouterr().out
        key = out.strip().splitlines()[-1]
        assert "shown only once" in out and key.startswith("llome_")
        assert main(["keys", "list"]) == 0
        listing = capsys.readouterr().out
        assert "Protein Lab" in listing and key not in listing and key[:12] in listing
        engine = create_engine(url)
        with engine.connect() as conn:
            hashes = conn.execute(text("SELECT key_hash FROM api_key")).scalars().all()
        engine.dispose()
        assert hashes == [hashlib.sha256(key.encode()).hexdigest()]
        assert main(["keys", "revoke", "1"]) == 0 and main(["keys", "revoke", "1"]) == 1
    finally:
        get_settings.cache_clear()


def test_a_new_lab_adopts_no_campaign(tmp_path: Path) -> None:
    from api.config import Settings
    from api.db import make_engine, make_sessionmaker, upgrade

    settings = Settings(database_url=f"sqlite:///{tmp_path}/adopt.db", redis_url=None)
    upgrade(settings)
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    try:
        with session_scope(factory) as s:
            first = labs.get_or_create_lab(s, "first")
            s.add(
                Campaign(
                    lab_id=first.id,
                    name="first's",
                    status="created",
                    oracle_kind="wetlab",
                    optimizer_kind="ga",
                    alphabet="ACD",
                    length=3,
                    batch_size=1,
                    rounds=1,
                    seed=0,
                    spec={},
                )
            )
        with session_scope(factory) as s:
            second = labs.get_or_create_lab(s, "second")
        with factory() as s:
            assert [c.lab_id for c in s.scalars(select(Campaign))] == [first.id]
            assert second.id != first.id
    finally:
        engine.dispose()


def test_the_embedded_default_writes_its_first_key_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    from api.config import Settings
    from api.db import make_engine, make_sessionmaker, upgrade

    settings = Settings(database_url=f"sqlite:///{tmp_path}/emb.db", redis_url=None)
    upgrade(settings)
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    try:
        with session_scope(factory) as s:
            path, created = labs.ensure_embedded_key(s, tmp_path)
        assert created and path == tmp_path / ".llome" / "api-key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = path.read_text().strip()
        with factory() as s:
            assert labs.key_and_lab(s, key)[1].name == labs.EMBEDDED_LAB
            assert s.scalar(select(Lab.name)) == labs.EMBEDDED_LAB
        with session_scope(factory) as s:  # a second start keeps the first key
            assert labs.ensure_embedded_key(s, tmp_path) == (path, False)
        assert path.read_text().strip() == key
    finally:
        engine.dispose()


def test_swagger_authorize_uses_a_bearer_scheme(client) -> None:
    schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["APIKey"] == {**schemes["APIKey"], "type": "http", "scheme": "bearer"}
    assert schema["paths"]["/campaigns"]["post"]["security"] == [{"APIKey": []}]
    assert "security" not in schema["paths"]["/health"]["get"]
    assert "401" in schema["paths"]["/campaigns/{campaign_id}"]["get"]["responses"]


def test_a_key_over_its_request_rate_gets_429_with_retry_after(
    settings, publisher, session_factory
) -> None:
    from api.main import create_app

    slow = settings.model_copy(update={"rate_limit_per_s": 0.01, "rate_limit_burst": 3})
    busy, calm = make_key(session_factory), make_key(session_factory)
    with TestClient(create_app(slow, publisher=publisher, migrate=False)) as c:
        codes = [
            c.get("/campaigns", headers={"Authorization": f"Bearer {busy}"}).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        r = c.get("/campaigns", headers={"Authorization": f"Bearer {busy}"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"].startswith("application/problem+json")
        # another key has its own allowance
        assert c.get("/campaigns", headers={"Authorization": f"Bearer {calm}"}).status_code == 200
        assert c.get("/health").status_code == 200  # health is never limited
