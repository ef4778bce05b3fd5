"""Real processes: ``llome serve`` (uvicorn) and ``llome worker`` (Celery) subprocesses on this
machine's Postgres and a dedicated Redis database number. Skips with the reason when Postgres
or Redis is unreachable. Everything is polled with a timeout; nothing sleeps a fixed time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import REDIS_BASE_URL

ROOT = Path(__file__).resolve().parents[2]
LLOME = str(Path(sys.executable).parent / "llome")
T = TypeVar("T")

# Tiny campaigns: the whole integration suite runs in a few minutes on 2 CPU cores.
TINY_LLOME: dict[str, Any] = {
    "kind": "llome",
    "objective": "sft1-marge1",
    "train": {"first_round_epochs": 1},
    "generate": {"num_seeds": 4, "num_steps": 1, "samples_per_step": 1, "temperatures": [1.0]},
}
TINY_EHRLICH_CAMPAIGN: dict[str, Any] = {
    "name": "tiny ehrlich",
    # Hard enough that two rounds of 16 calls do not find the optimum (the campaign would stop).
    "oracle": {
        "kind": "ehrlich",
        "num_states": 8,
        "dim": 12,
        "num_motifs": 2,
        "motif_length": 3,
        "seed": 1,
        "seeding": {"num_particles": 32, "num_steps": 3, "mutation_prob": 0.1},
    },
    "optimizer": TINY_LLOME,
    "batch_size": 16,
    "rounds": 2,
    "seed": 0,
    "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2},
}


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_reason(url: str) -> str | None:
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=2).ping()
        return None
    except Exception as exc:
        return f"Redis at {url} is not reachable: {exc.__class__.__name__}: {exc}"


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment minus any llome configuration, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("LLOME_") or k in ("DATABASE_URL", "REDIS_URL", "DATA_DIR"))
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_MODE="disabled",
        PYTHONUNBUFFERED="1",
        LLOME_TORCH_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


class Proc:
    """A subprocess with its output in a log file (shown when a test fails)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.args, self.log = args, log
        self._fh = open(log, "ab")  # noqa: SIM115 (held for the process's life, closed in stop())
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, the way a worker dies when its machine is lost."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._fh.close()


class Procs:
    """Starts processes for one test (or module) and always stops them."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env, self.all = tmp, env, []  # type: ignore[var-annotated]

    def start(
        self, name: str, args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Proc:
        p = Proc(args, env or self.env, cwd or self.tmp, self.tmp / f"{name}-{len(self.all)}.log")
        self.all.append(p)
        return p

    def worker(self, name: str = "worker") -> Proc:
        return self.start(name, [LLOME, "worker", "--queues", "gpu,cpu", "--loglevel", "INFO"])

    def server(
        self,
        port: int,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        web_processes: int = 1,
    ) -> Proc:
        p = self.start(
            "serve",
            [LLOME, "serve", "--port", str(port), "--web-processes", str(web_processes)],
            cwd=cwd,
            env=env,
        )
        wait_for_http(f"http://127.0.0.1:{port}", p)
        return p

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name} ---\n{p.tail()}" for p in self.all)

    def stop_all(self) -> None:
        for p in reversed(self.all):
            p.stop()


def cli_key(env: dict[str, str], lab: str = "it-lab", cwd: Path | None = None) -> str:
    """A key made the documented way: ``llome keys create --lab LAB`` (the key is the last line)."""
    out = subprocess.run(
        [LLOME, "keys", "create", "--lab", lab],
        env=env,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_for_http(base: str, proc: Proc, timeout: float = 90) -> None:
    def up() -> bool:
        if not proc.alive():
            raise AssertionError(f"the server exited:\n{proc.tail()}")
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout, f"{base}/health")


@pytest.fixture(scope="module")
def module_pg_url(postgres_available: None, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the module's own, migrated: workers' recovery sweeps must not find other
    tests' campaigns."""
    from api.config import Settings
    from api.db import upgrade
    from tests.conftest import create_database, drop_database

    name = f"llome_it_{request.module.__name__.rsplit('.', 1)[-1]}_{os.getpid()}"
    url = create_database(name)
    upgrade(Settings(database_url=url, redis_url=None))
    yield url
    drop_database(name)


@pytest.fixture(scope="module")
def module_session_factory(module_pg_url: str) -> Iterator[Any]:
    from api.config import Settings
    from api.db import make_engine, make_sessionmaker

    engine = make_engine(Settings(database_url=module_pg_url, redis_url=None))
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def redis_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis database number of its own (flushed before and after), per test module."""
    number = getattr(request.module, "REDIS_DB", 11)
    url = f"{REDIS_BASE_URL}/{number}"
    reason = redis_reason(url)
    if reason:
        pytest.skip(reason)
    import redis

    r = redis.Redis.from_url(url)
    r.flushdb()
    yield url
    r.flushdb()


def poll_campaign(
    client: httpx.Client | Any,
    cid: int,
    statuses: set[str],
    timeout: float,
    procs: Procs | None = None,
) -> dict[str, Any]:
    """The campaign once its status is in ``statuses``; fails early if it failed."""

    def check() -> dict[str, Any] | None:
        body = client.get(f"/campaigns/{cid}").json()
        if body["status"] == "failed" and "failed" not in statuses:
            raise AssertionError(
                f"campaign failed: {body['error']}\n{procs.logs() if procs else ''}"
            )
        return body if body["status"] in statuses else None

    try:
        return wait_until(check, timeout, f"campaign {cid} to reach {statuses}", interval=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{procs.logs() if procs else ''}") from None
