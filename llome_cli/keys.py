"""``llome keys create --lab NAME | list | revoke ID``: the labs' API keys, on the configured
database (the key checks themselves are ``api.services.labs``)."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import select

from api.config import get_settings
from api.db import make_engine, make_sessionmaker, session_scope
from api.models import ApiKey, Lab
from api.services.labs import create_key, revoke


def keys_main(argv: list[str]) -> int:
    """``llome keys create --lab NAME | list | revoke ID`` on the configured database."""
    parser = argparse.ArgumentParser(prog="llome keys", description="Manage the labs' API keys.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key for a lab (the lab is created if new)")
    create.add_argument("--lab", required=True, help="the lab's name")
    sub.add_parser("list", help="list keys (prefix, lab, created, revoked)")
    rev = sub.add_parser("revoke", help="revoke a key by its id (see `llome keys list`)")
    rev.add_argument("key_id", type=int)
    args = parser.parse_args(argv)

    engine = make_engine(get_settings())
    try:
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            if args.action == "create":
                row, key = create_key(session, args.lab)
                lab_name = args.lab.strip()
            elif args.action == "list":
                for k, lab in session.execute(
                    select(ApiKey, Lab.name).join(Lab, Lab.id == ApiKey.lab_id).order_by(ApiKey.id)
                ).tuples():
                    state = f"revoked {k.revoked_at.isoformat()}" if k.revoked_at else "active"
                    print(f"{k.id}\t{k.prefix}…\t{lab}\t{k.created_at.isoformat()}\t{state}")
                return 0
            else:
                if not revoke(session, args.key_id):
                    print(f"no active key with id {args.key_id}", file=sys.stderr)
                    return 1
                print(f"key {args.key_id} revoked")
                return 0
    finally:
        engine.dispose()
    # Printed after the commit: a key that is shown is a key that works.
    print(f"API key for lab {lab_name!r} (id {row.id}); it is shown only once, store it now:")
    print(key)
    return 0
