"""``llome worker``: a Celery worker process on the configured broker, with its recovery sweep
(the app, tasks and sweep are ``worker.app``)."""

from __future__ import annotations

import argparse
import logging

from api.config import get_settings
from api.services.jobs import Queue
from worker.app import RecoveryLoop, create_celery_app


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
