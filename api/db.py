"""Database plumbing: engine and session factories built from :class:`Settings`, the ORM base,
after-commit hooks, and ``llome db`` (Alembic owns the schema; ``create_all`` is never used).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from api.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
VERSION_TABLE = "llome_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite hands datetimes back naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use utcnow() (timezone-aware)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


# Execution option naming a connection whose transactions only read (see ``read_only``).
READ_ONLY = "llome_read_only"
# How long a SQLite writer waits for the write lock before "database is locked" (then a 503 with
# Retry-After); readers never wait, and writes are kept short.
SQLITE_BUSY_S = 10


def read_only(engine: Engine) -> Engine:
    """The same engine and pool, for transactions that only read. On SQLite they begin deferred:
    in WAL mode a reader neither waits for the writer nor holds it up. Postgres is unchanged."""
    return engine.execution_options(**{READ_ONLY: True})


def make_engine(settings: Settings) -> Engine:
    """An engine for ``settings.database_url``; SQLite gets foreign keys, WAL and write locks."""
    if settings.is_sqlite:
        _ensure_sqlite_dir(settings.database_url)
        pool: dict[str, Any] = {}
        if ":memory:" not in settings.database_url and "mode=memory" not in settings.database_url:
            pool = {
                "pool_size": settings.db_pool_size,
                "max_overflow": settings.db_max_overflow,
                "pool_timeout": settings.db_pool_timeout_s,
            }
        engine = create_engine(
            settings.database_url,
            # The embedded worker thread and the web threads share the file.
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_S},
            **pool,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # SQLite ignores SELECT ... FOR UPDATE; taking the write lock at BEGIN serializes
            # writers, so "lock the campaign, read, write" stays correct. Readers (GET requests,
            # exports) begin deferred and never take it.
            read = conn.get_execution_options().get(READ_ONLY)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine
    # pre_ping: the API and workers survive a Postgres restart without a stale-connection error.
    return create_engine(
        settings.database_url,
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
    )


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def make_sessionmaker(
    engine: Engine, publisher: Callable[..., None] | None = None
) -> sessionmaker[Session]:
    """Sessions whose ``after_commit`` callbacks run once the transaction is really committed
    (that is how tasks are enqueued: never before the rows they name are visible)."""
    factory = sessionmaker(bind=engine, expire_on_commit=False, info={"publisher": publisher})

    @event.listens_for(factory, "after_commit")
    def _run_after_commit(session: Session) -> None:
        callbacks = session.info.pop("after_commit", [])
        for callback in callbacks:
            callback()

    @event.listens_for(factory, "after_rollback")
    def _drop_after_commit(session: Session) -> None:
        session.info.pop("after_commit", None)

    return factory


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` after this session's transaction commits (dropped on rollback)."""
    session.info.setdefault("after_commit", []).append(callback)


def end_transaction(session: Session, *, succeeded: bool) -> None:
    """The transaction rule, for requests, dashboard pages and worker steps alike: the work
    commits as one transaction when it succeeded and rolls back when it raised; services never
    commit. The session is closed either way."""
    try:
        if succeeded:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction (:func:`end_transaction`) around the block."""
    session = factory()
    try:
        yield session
    except BaseException:
        end_transaction(session, succeeded=False)
        raise
    end_transaction(session, succeeded=True)


# --- migrations -------------------------------------------------------------------------------


def alembic_config(settings: Settings) -> Any:
    """An Alembic config pointing at ``migrations/`` and at ``settings.database_url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_table", VERSION_TABLE)
    cfg.attributes["settings"] = settings
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (what ``llome serve`` does at start)."""
    from alembic import command

    if settings.is_sqlite:
        _ensure_sqlite_dir(settings.database_url)
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(settings), revision)


@cache
def _newest_migration() -> str | None:
    # Parsing every migration script takes about 0.1 s; they do not change under a running
    # process, and each web process (and each test's app) asks at start.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def schema_is_current(settings: Settings, engine: Engine) -> bool:
    """True when the database is at the newest migration."""
    from alembic.runtime.migration import MigrationContext

    head = _newest_migration()
    with read_only(engine).connect() as conn:
        current = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
    return current == head
