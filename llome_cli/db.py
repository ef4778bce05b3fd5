"""``llome db upgrade [REV] | downgrade REV | current``: the migrations, on the configured
database (Alembic owns the schema; ``api.db`` knows where the migrations are)."""

from __future__ import annotations

import argparse

from api.config import Settings, get_settings
from api.db import alembic_config, downgrade, upgrade


def db_main(argv: list[str]) -> int:
    """``llome db upgrade [REV] | downgrade REV | current``."""
    parser = argparse.ArgumentParser(prog="llome db", description="Apply or inspect migrations.")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("upgrade", help="apply migrations (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="revert migrations (e.g. 'base')")
    down.add_argument("revision")
    sub.add_parser("current", help="print the database's revision")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.action == "upgrade":
        upgrade(settings, args.revision)
        print(f"database at {args.revision}: {_safe_url(settings)}")
    elif args.action == "downgrade":
        downgrade(settings, args.revision)
    else:
        from alembic import command

        command.current(alembic_config(settings))
    return 0


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)
