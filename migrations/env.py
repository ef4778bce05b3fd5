"""Alembic environment: the metadata of ``api.models`` and the URL of the service Settings.

``llome db upgrade`` and the start of ``llome serve`` pass their Settings through
``config.attributes["settings"]``; the bare ``alembic`` command reads them from the environment.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import api.models  # noqa: F401  (registers every table on Base.metadata)
from api.config import Settings
from api.db import VERSION_TABLE, Base, make_engine

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    return config.attributes.get("settings") or Settings()


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        # SQLite has no ALTER for most changes: batch mode copies the table, and is harmless elsewhere.
        render_as_batch=True,
        literal_binds=url is not None,
    )


def run_migrations_offline() -> None:
    _configure(url=_settings().database_url)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # a caller (a test) hands in its own connection
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_settings())
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Batch mode copies a table and drops the old one; with foreign keys on, that
                # drop deletes every row referencing it (ON DELETE CASCADE). The pragma is a
                # no-op inside a transaction, so it goes to the driver before BEGIN.
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
