"""``llome serve``: the web service. With no ``DATABASE_URL``/``REDIS_URL`` it is the embedded
default (a SQLite file in the working directory and an in-process worker); with them, Postgres and
Redis, and workers started separately with ``llome worker``."""

from __future__ import annotations

import argparse
import logging

from api.config import get_settings
from api.db import upgrade


def _announce_embedded_key(app: object) -> None:
    """The embedded default's first start creates a key and writes it to ./.llome/api-key."""
    from pathlib import Path

    from api.db import session_scope
    from api.services.labs import ensure_embedded_key

    with session_scope(app.state.session_factory) as session:  # type: ignore[attr-defined]
        path, created = ensure_embedded_key(session, Path.cwd())
    if created:
        print(f"created the first API key (lab 'default'): {path.resolve()} (mode 0600); send it as "
              "'Authorization: Bearer <key>' or paste it into Authorize on /docs", flush=True)
    else:
        print(f"API keys: {path.resolve()} holds the first key if you kept it; "
              "`llome keys create --lab NAME` makes more", flush=True)


def serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="llome serve", description="Start the llome web service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    upgrade(settings)  # `alembic upgrade head` on every start

    import uvicorn

    from api.main import create_app

    embedded = None
    publisher = None
    if settings.embedded_worker:
        # The composition root is the one place the web side starts a worker (same tasks, same code).
        from worker.embedded import EmbeddedWorker

        embedded = EmbeddedWorker(settings).start()
        publisher = embedded.publisher
    app = create_app(settings, publisher=publisher, migrate=False)
    mode = "embedded: SQLite + in-process worker" if embedded else "Postgres/Redis, external workers"
    if embedded is not None:
        _announce_embedded_key(app)
    print(f"llome serving ({mode}) on http://{args.host}:{args.port}/docs", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
