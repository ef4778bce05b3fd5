"""The Celery app, built from Settings, and its recovery sweep.

``llome worker --queues gpu,cpu`` (``llome_cli.worker``) starts a worker on the settings' Redis
broker (``REDIS_URL``); ``celery -A worker.app worker`` works too (the module-level ``app`` is
built on first access).
Queues: ``gpu`` (train, generate: run one at a time, solo pool) and ``cpu`` (orchestration,
seeding, Ehrlich labelling).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from api.config import Settings, get_settings
from api.services.jobs import make_celery
from worker.runtime import Runtime

log = logging.getLogger("llome.worker")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def create_celery_app(settings: Settings | None = None) -> Any:
    """A Celery app with the llome tasks and a :class:`Runtime` at ``app.llome_runtime``."""
    from worker.tasks import register_tasks

    settings = settings or get_settings()
    app = make_celery(settings)
    app.llome_runtime = Runtime.create(settings, app)
    register_tasks(app)
    return app


class RecoveryLoop:
    """Every ``recovery_interval_s``, re-send work whose message was lost or whose worker died.
    Each worker runs one; duplicates are harmless (claims are conditional)."""

    def __init__(self, rt: Runtime, *, resend_queued_first: bool = False) -> None:
        self.rt = rt
        self.resend_queued_first = resend_queued_first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llome-recovery", daemon=True)

    def start(self) -> RecoveryLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from worker.runner import recover

        first = True
        while not self._stop.is_set():
            try:
                recover(self.rt, resend_queued=first and self.resend_queued_first)
            except Exception:
                log.warning("recovery sweep failed; retrying later", exc_info=True)
            first = False
            self._stop.wait(self.rt.settings.recovery_interval_s)


app: Any  # declared for type checkers; made by __getattr__ on first use


def __getattr__(name: str) -> Any:
    # `celery -A worker.app worker` looks for `app`; build it only when asked.
    if name == "app":
        global app
        app = create_celery_app()
        return app
    raise AttributeError(name)
