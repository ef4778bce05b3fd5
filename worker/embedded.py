"""The in-process worker of the zero-configuration ``llome serve``: the same Celery app and the
same tasks as ``llome worker``, consuming an in-memory broker from a thread of the web process."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

from api.config import Settings
from api.services.jobs import CeleryPublisher, Queue
from worker.app import RecoveryLoop, create_celery_app

log = logging.getLogger("llome.worker")


class EmbeddedWorker:
    """Start with :meth:`start`, send tasks with :attr:`publisher`, end with :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        if not settings.embedded_worker:
            raise ValueError("REDIS_URL is set: run `llome worker` processes instead")
        self.settings = settings
        self.app = create_celery_app(settings)
        self.publisher = CeleryPublisher(self.app)
        self._ctx: AbstractContextManager[Any] | None = None
        self._recovery: RecoveryLoop | None = None

    def start(self) -> EmbeddedWorker:
        from celery.contrib.testing.worker import start_worker

        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)

        self._ctx = start_worker(
            self.app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30.0,
            queues=[Queue.GPU.value, Queue.CPU.value],
        )
        self._ctx.__enter__()
        # The memory broker starts empty: send again what a previous run left queued or running.
        self._recovery = RecoveryLoop(self.app.llome_runtime, resend_queued_first=True).start()
        return self

    def stop(self) -> None:
        rt = self.app.llome_runtime
        rt.stopping.set()  # a running step gives its job back at its next progress report
        if self._recovery is not None:
            self._recovery.stop()
        if self._ctx is not None:
            try:
                self._ctx.__exit__(None, None, None)
            except RuntimeError:
                log.warning(
                    "the embedded worker did not stop in time; its job resumes at next start"
                )
        rt.engine.dispose()
