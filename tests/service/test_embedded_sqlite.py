"""The embedded default (SQLite, ``llome serve`` without DATABASE_URL) with several labs: reads
never take the write lock, an export holds no transaction while its client reads, and a busy
database answers 503 with Retry-After, never a 500."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, select, text

from api.config import Settings
from api.db import make_engine, make_sessionmaker, session_scope
from api.models import Measurement, MeasurementSource, Sequence
from api.services.labs import create_key
from tests.live_server import LiveServer
from tests.service.test_campaigns import WETLAB

EXPORT_ROWS = 200_000
ALPHABET = WETLAB["alphabet"]


def _texts(n: int) -> list[str]:
    """``n`` distinct sequences of 8 letters over the wet-lab alphabet (``i`` in base 6)."""
    out = []
    for i in range(n):
        digits = []
        for _ in range(8):
            i, d = divmod(i, len(ALPHABET))
            digits.append(ALPHABET[d])
        out.append("".join(digits))
    return out


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/embedded.db", redis_url=None, data_dir=tmp_path / "data"
    )
    live = LiveServer(settings).start()
    yield live
    live.stop()


def _fill(settings: Settings, campaign_id: int, n: int) -> None:
    """``n`` labelled sequences in one go (what a large seed upload leaves behind)."""
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(Sequence), [{"campaign_id": campaign_id, "text": t} for t in _texts(n)]
            )
            ids = conn.execute(
                select(Sequence.id).where(Sequence.campaign_id == campaign_id)
            ).scalars()
            conn.execute(
                insert(Measurement),
                [
                    {
                        "campaign_id": campaign_id,
                        "sequence_id": sid,
                        "value": 0.5,
                        "feasible": True,
                        "source": MeasurementSource.UPLOAD,
                    }
                    for sid in ids
                ],
            )
    finally:
        engine.dispose()


def _slow_export(url: str, path: str, key: str, stop: threading.Event, got: list[int]) -> None:
    """Read ``path`` through a small receive buffer, 2 KiB every 20 ms, until ``stop``."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    try:
        while not stop.is_set():
            chunk = sock.recv(2048)
            if not chunk:
                break
            got[0] += len(chunk)
            time.sleep(0.02)
    finally:
        sock.close()


@pytest.mark.slow
def test_a_slow_export_reader_does_not_delay_another_labs_poll(server: LiveServer) -> None:
    lab_a = {"Authorization": f"Bearer {server.api_key}"}
    factory = make_sessionmaker(make_engine(server.settings))
    with session_scope(factory) as s:
        _, key_b = create_key(s, "lab-b")
    lab_b = {"Authorization": f"Bearer {key_b}"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        big = c.post(
            "/campaigns", json={"name": "big", "oracle": {**WETLAB, "length": 8}}, headers=lab_a
        ).json()["id"]
        _fill(server.settings, big, EXPORT_ROWS)
        mine = c.post("/campaigns", json={"name": "b", "oracle": WETLAB}, headers=lab_b).json()[
            "id"
        ]

        stop, got = threading.Event(), [0]
        reader = threading.Thread(
            target=_slow_export,
            daemon=True,
            args=(server.url, f"/campaigns/{big}/export", server.api_key, stop, got),
        )
        reader.start()
        time.sleep(1.0)  # the export is under way, its client reading slowly
        polls, writes = [], []
        for i in range(30):
            t0 = time.perf_counter()
            assert c.get(f"/campaigns/{mine}", headers=lab_b).status_code == 200
            polls.append(time.perf_counter() - t0)
            if i % 10 == 0:  # and a write: pause and resume lab B's campaign
                t0 = time.perf_counter()
                assert c.post(f"/campaigns/{mine}/pause", headers=lab_b).status_code == 200
                assert c.post(f"/campaigns/{mine}/resume", headers=lab_b).status_code == 200
                writes.append(time.perf_counter() - t0)
            time.sleep(0.1)
        still_reading = reader.is_alive()
        stop.set()
        reader.join(timeout=10)
    print(
        f"export bytes read {got[0]}, slowest poll {max(polls):.3f} s, slowest write "
        f"{max(writes):.3f} s"
    )
    assert still_reading and 0 < got[0] < 20 * EXPORT_ROWS, got  # the export was mid-stream
    assert max(polls) < 1.0, f"slowest poll {max(polls):.2f} s during a slow export"
    assert max(writes) < 1.0, f"slowest write {max(writes):.2f} s during a slow export"


def test_reads_begin_deferred_and_writes_take_the_lock(tmp_path: Path) -> None:
    from api.db import read_only, upgrade

    settings = Settings(database_url=f"sqlite:///{tmp_path}/locks.db", redis_url=None)
    upgrade(settings)
    engine = make_engine(settings)
    try:
        writer = engine.connect()
        writer.begin()
        writer.execute(text("select 1"))  # BEGIN IMMEDIATE: holds the write lock
        with read_only(engine).connect() as reader:  # a reader still gets in, at once
            t0 = time.perf_counter()
            assert reader.execute(text("select count(*) from campaign")).scalar() == 0
            assert time.perf_counter() - t0 < 0.5
        writer.rollback()
        writer.close()
    finally:
        engine.dispose()


def test_a_busy_database_is_a_503_with_retry_after(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import api.db
    from api.db import upgrade
    from api.main import create_app
    from tests.conftest import RecordingPublisher

    monkeypatch.setattr(api.db, "SQLITE_BUSY_S", 0.2)  # a writer gives up after 0.2 s
    settings = Settings(database_url=f"sqlite:///{tmp_path}/busy.db", redis_url=None)
    upgrade(settings)
    app = create_app(settings, publisher=RecordingPublisher(), migrate=False)
    with session_scope(app.state.session_factory) as s:
        _, key = create_key(s, "lab")
    holder = app.state.engine.connect()
    holder.begin()
    holder.execute(text("select 1"))  # another writer holds the lock
    try:
        from fastapi.testclient import TestClient

        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as c:
            assert c.get("/campaigns").status_code == 200  # reads go on
            r = c.post("/campaigns", json={"name": "w", "oracle": WETLAB})
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert int(r.headers["retry-after"]) >= 1
    finally:
        holder.rollback()
        holder.close()
