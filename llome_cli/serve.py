"""``llome serve``: the web service. With no ``DATABASE_URL``/``REDIS_URL`` it is the embedded
default (a SQLite file in the working directory and an in-process worker); with them, Postgres and
Redis, and workers started separately with ``llome worker``."""

from __future__ import annotations

import argparse
import gc
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
        print(
            f"created the first API key (lab 'default'): {path.resolve()} (mode 0600); send it as "
            "'Authorization: Bearer <key>' or paste it into Authorize on /docs",
            flush=True,
        )
    else:
        print(
            f"API keys: {path.resolve()} holds the first key if you kept it; "
            "`llome keys create --lab NAME` makes more",
            flush=True,
        )


def _freeze_startup_objects() -> None:
    """Exempt what start-up built (modules, routes, schemas) from the garbage collector: a full
    collection otherwise walks all of it and holds every request in flight meanwhile (50-120 ms
    measured here, the slowest polls of `llome bench load`)."""
    gc.collect()
    gc.freeze()


def web_app() -> object:
    """The app of one of several web processes (``--web-processes``): the parent process has
    applied the migrations already."""
    from api.main import create_app

    app = create_app(get_settings(), migrate=False)
    _freeze_startup_objects()
    return app


def serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="llome serve", description="Start the llome web service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--web-processes",
        type=int,
        default=1,
        help="web processes sharing the port (needs REDIS_URL: the embedded worker "
        "lives in one process); about one per core",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(
        logging.WARNING
    )  # its plugin list, every start
    settings = get_settings()
    if (
        settings.embedded_worker
    ):  # "no hostname supplied": true of the in-memory broker, and harmless
        logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    if args.web_processes < 1:
        parser.error("--web-processes must be at least 1")
    if args.web_processes > 1 and settings.embedded_worker:
        parser.error(
            "--web-processes above 1 needs REDIS_URL (and `llome worker` processes): "
            "the embedded worker takes its tasks from the memory of one process"
        )
    upgrade(settings)  # `alembic upgrade head` on every start
    database = "SQLite" if settings.is_sqlite else "Postgres"

    import uvicorn

    if args.web_processes > 1:
        # Each process builds its own app (engine, pool, publisher); all state is in the
        # database and Redis, so any process answers any request.
        print(
            f"llome serving ({database}/Redis, external workers, {args.web_processes} web processes) "
            f"on http://{args.host}:{args.port}/docs",
            flush=True,
        )
        uvicorn.run(
            "llome_cli.serve:web_app",
            factory=True,
            workers=args.web_processes,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
        )
        return 0

    from api.main import create_app

    embedded = None
    publisher = None
    if settings.embedded_worker:
        # The command line is the composition root: the web app and a worker in one process
        # (same tasks, same code); ``api`` itself never imports ``worker``.
        from worker.embedded import EmbeddedWorker

        embedded = EmbeddedWorker(settings).start()
        publisher = embedded.publisher
    app = create_app(settings, publisher=publisher, migrate=False)
    mode = f"{database} + in-process worker" if embedded else f"{database}/Redis, external workers"
    if embedded is not None:
        _announce_embedded_key(app)
    print(f"llome serving ({mode}) on http://{args.host}:{args.port}/docs", flush=True)
    _freeze_startup_objects()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
