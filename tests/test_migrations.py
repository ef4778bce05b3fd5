"""Alembic owns the schema: upgrade from empty, no drift from the models, downgrade to base,
on Postgres and on SQLite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

import api.models  # noqa: F401
from api.config import Settings
from api.db import VERSION_TABLE, Base, downgrade, make_engine, schema_is_current, upgrade
from tests.conftest import create_database, drop_database

TABLES = {
    "campaign",
    "round",
    "sequence",
    "upload",
    "batch",
    "candidate",
    "measurement",
    "job",
    "campaign_event",
}


def _check_round_trip(settings: Settings) -> None:
    engine = make_engine(settings)
    try:
        assert not schema_is_current(settings, engine)
        upgrade(settings)
        assert schema_is_current(settings, engine)
        names = set(inspect(engine).get_table_names())
        assert TABLES | {VERSION_TABLE} <= names
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        downgrade(settings, "base")
        assert set(inspect(engine).get_table_names()) <= {VERSION_TABLE}
    finally:
        engine.dispose()


def test_migrations_round_trip_on_postgres(postgres_available: None) -> None:
    name = f"llome_migrations_{os.getpid()}"
    url = create_database(name)
    try:
        _check_round_trip(Settings(database_url=url, redis_url=None))
    finally:
        drop_database(name)


def test_migrations_round_trip_on_sqlite(tmp_path: Path) -> None:
    _check_round_trip(Settings(database_url=f"sqlite:///{tmp_path}/m.db", redis_url=None))


# A campaign row as a version before labs left it: plain SQL, since today's model needs a lab.
OLD_CAMPAIGN = (
    "INSERT INTO campaign (name, status, oracle_kind, optimizer_kind, alphabet, length, "
    "batch_size, rounds, seed, spec, round, created_at, updated_at) VALUES "
    "({name}, 'created', 'wetlab', 'ga', 'ACD', 3, 1, 1, 0, '{{}}', 0, "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


def _check_lab_less_campaigns_go_to_the_default_lab(settings: Settings) -> None:
    upgrade(settings, "0010_replicates")
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            # A lab made before the upgrade must not take the old campaign.
            conn.execute(
                text("INSERT INTO lab (name, created_at) VALUES ('other', CURRENT_TIMESTAMP)")
            )
            conn.execute(text(OLD_CAMPAIGN.format(name="'old'")))
            conn.execute(
                text(
                    "INSERT INTO campaign_event (campaign_id, kind, at) "
                    "SELECT id, 'created', CURRENT_TIMESTAMP FROM campaign"
                )
            )
        upgrade(settings)
        with engine.connect() as conn:
            owners = conn.execute(
                text("SELECT l.name FROM campaign c JOIN lab l ON l.id = c.lab_id")
            ).all()
            # SQLite copies the campaign table to change the column: its events must survive.
            events = conn.execute(text("SELECT COUNT(*) FROM campaign_event")).scalar()
        assert [tuple(r) for r in owners] == [("default",)] and events == 1
        lab_id = next(c for c in inspect(engine).get_columns("campaign") if c["name"] == "lab_id")
        assert lab_id["nullable"] is False
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(OLD_CAMPAIGN.format(name="'lab-less'")))
    finally:
        engine.dispose()


def test_lab_less_campaigns_go_to_the_default_lab_on_postgres(postgres_available: None) -> None:
    name = f"llome_migrations_lab_{os.getpid()}"
    url = create_database(name)
    try:
        _check_lab_less_campaigns_go_to_the_default_lab(Settings(database_url=url, redis_url=None))
    finally:
        drop_database(name)


def test_lab_less_campaigns_go_to_the_default_lab_on_sqlite(tmp_path: Path) -> None:
    _check_lab_less_campaigns_go_to_the_default_lab(
        Settings(database_url=f"sqlite:///{tmp_path}/lab.db", redis_url=None)
    )


def test_database_url_accepts_plain_postgres_scheme() -> None:
    s = Settings(database_url="postgres://u@h/db", redis_url=None)
    assert s.database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    "env", [{"DATABASE_URL": "sqlite:///x.db"}, {"LLOME_DATABASE_URL": "sqlite:///x.db"}]
)
def test_settings_read_database_url_from_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Settings().database_url == "sqlite:///x.db"
