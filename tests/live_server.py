"""A real llome server for client tests: the app served by uvicorn on a free loopback port, with
the embedded in-process worker (the same tasks as ``llome serve``), on SQLite or Postgres."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from api.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``LiveServer(settings).start()``: ``url`` and a first lab's ``api_key``; ``stop()`` ends it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self.api_key = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._worker: Any = None

    def start(self) -> LiveServer:
        import uvicorn

        from api.db import session_scope, upgrade
        from api.main import create_app
        from api.services.labs import create_key
        from worker.embedded import EmbeddedWorker

        upgrade(self.settings)
        self._worker = EmbeddedWorker(self.settings).start()
        app = create_app(self.settings, publisher=self._worker.publisher, migrate=False)
        with session_scope(app.state.session_factory) as session:
            _, self.api_key = create_key(session, "client-tests")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, name="live-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the live server did not start within 60 s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._worker is not None:
            self._worker.stop()
