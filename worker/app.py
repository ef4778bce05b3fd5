"""The Celery app, built from Settings, and ``llome worker``.

``llome worker --queues gpu,cpu`` starts a worker on the settings' Redis broker (``REDIS_URL``);
``celery -A worker.app worker`` works too (the module-level ``app`` is built on first access).
Queues: ``gpu`` (train, generate: run one at a time, solo pool) and ``cpu`` (orchestration,
seeding, Ehrlich labelling).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from typing import Any

from api.config import Settings, get_settings
from api.services.jobs import Queue, make_celery
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


def worker_main(argv: list[str]) -> int:
    """``llome worker [--queues gpu,cpu] [--pool solo|threads] [--concurrency N] [--threads N]``."""
    parser = argparse.ArgumentParser(prog="llome worker", description="Start a Celery worker.")
    parser.add_argument(
        "--queues",
        "-Q",
        default=f"{Queue.GPU},{Queue.CPU}",
        help="comma-separated queues to consume (default: gpu,cpu)",
    )
    parser.add_argument(
        "--pool",
        "-P",
        default="solo",
        choices=["solo", "threads"],
        help="solo (default: one task at a time, no fork after torch) or threads",
    )
    parser.add_argument("--concurrency", "-c", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: TORCH_THREADS setting or torch's own)",
    )
    parser.add_argument("--loglevel", "-l", default="INFO")
    parser.add_argument("--hostname", "-n", default=None)
    args = parser.parse_args(argv)
    settings = get_settings()
    if settings.redis_url is None:
        parser.error(
            "REDIS_URL is not set: a separate worker needs a broker (the embedded "
            "`llome serve` runs its own worker)"
        )
    threads = args.threads or settings.torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_celery_app(settings)
    recovery = RecoveryLoop(app.llome_runtime).start()
    worker_args = [
        "worker",
        "--queues",
        args.queues,
        "--pool",
        args.pool,
        "--concurrency",
        str(args.concurrency),
        "--loglevel",
        args.loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        worker_args += ["--hostname", args.hostname]
    try:
        app.worker_main(worker_args)
    finally:
        app.llome_runtime.stopping.set()
        recovery.stop()
    return 0


app: Any  # declared for type checkers; made by __getattr__ on first use


def __getattr__(name: str) -> Any:
    # `celery -A worker.app worker` looks for `app`; build it only when asked.
    if name == "app":
        global app
        app = create_celery_app()
        return app
    raise AttributeError(name)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(worker_main(sys.argv[1:]))
