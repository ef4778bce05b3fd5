"""Shared fixtures: a real Postgres test database (created fresh, migrated with Alembic, dropped
at the end), settings pointing at it, and the real app behind a TestClient.

Postgres is this machine's 127.0.0.1:5432 with trust auth (``LLOME_TEST_PG_ADMIN_URL`` overrides
the admin URL); Redis is 127.0.0.1:6379 (``LLOME_TEST_REDIS_URL``). Tests that need one skip with
the reason when it is unreachable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get(
    "LLOME_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_BASE_URL = os.environ.get("LLOME_TEST_REDIS_URL", "redis://127.0.0.1:6379")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")


def _pg_reason() -> str | None:
    """None when the admin URL answers, else why not."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: no usable Postgres here
        return f"Postgres at {PG_ADMIN_URL} is not reachable: {exc.__class__.__name__}: {exc}"


def create_database(name: str) -> str:
    """Create an empty database ``name`` (dropping a leftover one); returns its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        # A commit then returns without waiting for its WAL flush (about 18 ms each on these
        # disks, and tests commit thousands of times). What a commit makes visible, and when,
        # is unchanged: only durability across a Postgres crash is given up, which no test needs.
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    engine.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_available() -> None:
    reason = _pg_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_url(postgres_available: None) -> Iterator[str]:
    """A fresh database migrated to head, dropped when the session ends."""
    from api.config import Settings
    from api.db import upgrade

    name = f"llome_test_{os.getpid()}"
    url = create_database(name)
    upgrade(Settings(database_url=url, redis_url=None))
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The service tests' database: the real Postgres by default; a SQLite file (the embedded
    default's backend) with ``LLOME_TEST_DB=sqlite``, or when Postgres is unreachable."""
    from api.config import Settings
    from api.db import upgrade

    reason = None if os.environ.get("LLOME_TEST_DB", "postgres") == "sqlite" else _pg_reason()
    if os.environ.get("LLOME_TEST_DB", "postgres") != "sqlite" and reason is None:
        return request.getfixturevalue("pg_url")
    if reason:
        import warnings

        warnings.warn(f"service tests run on SQLite: {reason}", stacklevel=1)
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/llome-test.db"
    upgrade(Settings(database_url=url, redis_url=None))
    return url


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llome-data")


@pytest.fixture(scope="session")
def settings(db_url: str, data_dir: Path):  # type: ignore[no-untyped-def]
    from api.config import Settings

    return Settings(database_url=db_url, redis_url=None, data_dir=data_dir, progress_interval_s=0.2)


@pytest.fixture(scope="session")
def session_factory(settings):  # type: ignore[no-untyped-def]
    from api.db import make_engine, make_sessionmaker

    engine = make_engine(settings)
    yield make_sessionmaker(engine)
    engine.dispose()


class RecordingPublisher:
    """Stands in for the broker in service tests: records (task name, ids) that would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[int, ...]]] = []

    def __call__(self, task: str, *ids: int) -> None:
        self.sent.append((str(task), ids))

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def app(settings, publisher):  # type: ignore[no-untyped-def]
    from api.main import create_app

    return create_app(settings, publisher=publisher, migrate=False)


def make_key(session_factory, lab: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """A new API key for ``lab`` (default: a lab of its own, so tests never see each other's
    campaigns), made by the same service function as ``llome keys create``."""
    import uuid

    from api.db import session_scope
    from api.services.labs import create_key

    with session_scope(session_factory) as s:
        _, key = create_key(s, lab or f"lab-{uuid.uuid4().hex[:12]}")
    return key


@pytest.fixture
def api_key(session_factory) -> str:  # type: ignore[no-untyped-def]
    return make_key(session_factory)


@pytest.fixture
def client(app, api_key):  # type: ignore[no-untyped-def]
    """The real app with a lab's API key sent on every request."""
    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"Bearer {api_key}"}) as c:
        yield c


@pytest.fixture
def anon_client(app):  # type: ignore[no-untyped-def]
    """The real app with no API key."""
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture
def runtime(settings, publisher):  # type: ignore[no-untyped-def]
    """The worker's per-process state on the test database, sending to the recording publisher:
    tests run step bodies directly (no Celery) and see what each step would enqueue."""
    from api.db import make_engine, make_sessionmaker
    from worker.runtime import Runtime

    engine = make_engine(settings)
    yield Runtime(
        settings=settings,
        engine=engine,
        session_factory=make_sessionmaker(engine, publisher),
        device="cpu",
    )
    engine.dispose()


def drain(runtime, publisher: RecordingPublisher, max_tasks: int = 200) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Run every task the publisher recorded, in order, as a worker would; returns
    (task name, outcome) pairs. Tasks enqueued while draining are run too."""
    from api.services.jobs import TaskName
    from worker import runner

    done: list[tuple[str, str]] = []
    while publisher.sent and len(done) < max_tasks:
        name, ids = publisher.sent.pop(0)
        if name == TaskName.ADVANCE:
            runner.advance(runtime, ids[0])
            done.append((name, "advanced"))
        elif name == TaskName.RECOVER:
            runner.recover(runtime)
            done.append((name, "recovered"))
        elif name == TaskName.NOTIFY:
            from worker import notify

            done.append((name, "retry" if notify.deliver(runtime, ids[0]) else "notified"))
        else:
            done.append((name, runner.run_job(runtime, ids[0])))
    return done
