"""Load: N concurrent clients against ``llome serve`` on Postgres (loopback only).

Starts ``llome serve`` on a fresh Postgres database of its own, as deployed: ``--web-processes``
web processes (default 2, one per core) with Redis and one ``llome worker`` (or, with 1, the
embedded worker and no Redis). It makes a lab key and a few wet-lab campaigns each waiting for
the lab with an open batch, then for each client count:

* polling: every client polls ``GET /campaigns/{id}`` and ``GET /campaigns/{id}/batches/{bid}``
  (50 candidates) in turn, once every ``--poll-interval`` seconds, on one keep-alive connection
  (a bare asyncio client, so the figures are the server's);
* capacity: the same with no pause between polls (requests/s at saturation);
* uploading: every client uploads small results files (``--upload-rows`` new labelled sequences
  per file) to its campaign for ``--duration`` seconds (one campaign's writers take turns);

and reports requests/s and p50/p99 latency. Last, it times the ingestion of one 100k-row CSV,
and, as its peer in the same run, Postgres inserting the same rows by itself. Everything is
bounded in time and count; the database is dropped at the end.

    llome bench load --clients 50,200 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
ALPHABET = "ACDEFGHIKLMNPQRSTVWY"
LENGTH = 12


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _random_seqs(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        s = "".join(rng.choice(ALPHABET) for _ in range(LENGTH))
        if s not in taken:
            taken.add(s)
            out.append(s)
    return out


def _csv(seqs: list[str], rng: random.Random) -> bytes:
    return ("sequence,score\n" + "".join(f"{s},{rng.random():.6f}\n" for s in seqs)).encode()


async def _run_clients(base: str, key: str, n: int, duration: float, work: Any) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
    ) as client:
        deadline = time.perf_counter() + duration

        async def one(i: int) -> None:
            step = 0
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await work(client, i, step)
                    ok = r.status_code < 400
                    if not ok:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    ok = False
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if ok:
                    latencies.append(time.perf_counter() - t0)
                step += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - t0
    return _summary(n, latencies, errors, elapsed)


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One keep-alive HTTP/1.1 GET on an open connection; the status code (the body is read)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
    }
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    if headers.get("connection", "").lower() == "close":
        raise ConnectionResetError("the server closed the connection")
    return code


async def _run_pollers(
    host: str,
    port: int,
    key: str,
    n: int,
    duration: float,
    path: Any,
    interval: float = 0.0,
    warmup: float = 2.0,
) -> dict[str, Any]:
    """``n`` clients GETting ``path(i, step)``, each on one keep-alive connection of a bare
    asyncio HTTP/1.1 client (httpx's pool costs milliseconds of CPU per request at 200
    connections, so on 2 cores the load generator, not the server, set the latencies).

    ``interval`` > 0: each client polls once per ``interval`` seconds from a random phase (a
    late answer makes it poll again at once), as a lab's client polls a batch. ``interval`` 0:
    each client sends its next request as soon as it has the answer (the server's capacity).
    Requests sent in the first ``warmup`` seconds, while the clients connect, are not counted."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter()
    # Every client connects during the warm-up; what it asks then is not counted.
    counted_from = start + warmup
    deadline = counted_from + duration
    phases = random.Random(n)

    async def one(i: int) -> None:
        step, conn = 0, None
        due = start + interval * phases.random()
        while True:
            if interval:
                if due >= deadline:
                    break
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                due += interval
            elif time.perf_counter() >= deadline:
                break
            request = (
                f"GET {path(i, step)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {key}\r\n\r\n"
            ).encode()
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(host, port), 60)
                code = await asyncio.wait_for(_get(*conn, request), 60)
                if t0 >= counted_from:
                    if code < 400:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors[str(code)] = errors.get(str(code), 0) + 1
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                TimeoutError,
            ) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if conn is not None:
                    conn[1].close()
                conn = None
            step += 1
        if conn is not None:
            conn[1].close()

    # The load generator's own garbage collections would count as server latency.
    gc.collect()
    gc.disable()
    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        gc.enable()
    result = _summary(n, latencies, errors, time.perf_counter() - counted_from)
    result["interval_s"] = interval
    return result


def _summary(
    n: int, latencies: list[float], errors: dict[str, int], elapsed: float
) -> dict[str, Any]:
    """Throughput and latency percentiles of one load phase."""
    return {
        "clients": n,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * _percentile(latencies, 0.50), 1),
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
    }


def _scratch_database(admin_url: str, name: str, *, create: bool) -> str:
    """Drop database ``name`` if it exists, create it again when ``create``; returns its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if create:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Server:
    host: str
    port: int
    key: str
    workdir: Path
    database_url: str

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _wetlab(name: str, **settings: Any) -> dict[str, Any]:
    """A wet-lab campaign over the bench's alphabet, GA-driven, batches of 50."""
    return {
        "name": name,
        "oracle": {"kind": "wetlab", "alphabet": ALPHABET, "length": LENGTH},
        "optimizer": {"kind": "ga", **settings.pop("optimizer", {})},
        "batch_size": 50,
        **settings,
    }


@contextmanager
def running_server(
    pg_admin_url: str, port: int = 0, web_processes: int = 1, redis_url: str | None = None
) -> Iterator[Server]:
    """``llome serve`` on a scratch Postgres database of its own, answering on 127.0.0.1; stopped
    and the database dropped on exit. One web process runs the embedded worker (no Redis); more
    need ``redis_url`` and get one ``llome worker`` process beside them, as deployed."""
    name = f"llome_load_{os.getpid()}"
    url = _scratch_database(pg_admin_url, name, create=True)
    port = port or free_port()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / name
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LLOME_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    # One key for every client: its per-key rate limit is off here (the figures are the server's).
    env.update(
        DATABASE_URL=url,
        LLOME_DATA_DIR=str(workdir / "data"),
        PYTHONPATH=str(ROOT),
        LLOME_RATE_LIMIT_PER_S="0",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        LLOME_TORCH_THREADS="1",
    )
    if web_processes > 1:
        if not redis_url:
            raise SystemExit("more than one web process needs --redis-url")
        env["REDIS_URL"] = redis_url
    llome = str(Path(sys.executable).parent / "llome")
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 (closed in finally, after the processes)
    procs = [
        subprocess.Popen(
            [
                llome,
                "serve",
                "--port",
                str(port),
                "--web-processes",
                str(web_processes),
                "--log-level",
                "warning",
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    if web_processes > 1:
        procs.append(
            subprocess.Popen(
                [llome, "worker", "--loglevel", "WARNING"],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    # A SIGTERM (e.g. from `timeout`) still stops the server and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:

        def up() -> bool:
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"llome serve or worker exited; see {workdir / 'serve.log'}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 120, "llome serve to answer")
        if web_processes > 1:
            out = subprocess.run(
                [llome, "keys", "create", "--lab", "load"],
                env=env,
                cwd=workdir,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            key = next(w for w in out.split() if w.startswith("llome_"))
        else:
            key = (workdir / ".llome" / "api-key").read_text().strip()
        yield Server("127.0.0.1", port, key, workdir, url)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        log.close()
        _scratch_database(pg_admin_url, name, create=False)


def open_batches(
    server: Server, n: int, rng: random.Random, taken: set[str]
) -> list[tuple[int, int]]:
    """``n`` wet-lab campaigns, each seeded and waiting for the lab: (campaign id, open batch id)."""
    campaigns: list[tuple[int, int]] = []
    with httpx.Client(base_url=server.base, headers=server.headers, timeout=120) as c:
        for i in range(n):
            cid = (
                c.post(
                    "/campaigns",
                    json=_wetlab(f"load {i}", optimizer={"mutation_prob": 0.1}, rounds=100, seed=i),
                )
                .raise_for_status()
                .json()["id"]
            )
            c.post(
                f"/campaigns/{cid}/measurements",
                files={"file": ("seed.csv", _csv(_random_seqs(rng, 200, taken), rng), "text/csv")},
            ).raise_for_status()
            campaigns.append((cid, 0))
        for j, (cid, _) in enumerate(campaigns):
            wait_until(
                lambda cid=cid: c.get(f"/campaigns/{cid}").json()["status"] == "awaiting_labels",
                300,
                f"campaign {cid} to propose its first batch",
                interval=0.5,
            )
            campaigns[j] = (cid, c.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"])
    return campaigns


def postgres_alone(database_url: str, source: int, target: int) -> float:
    """Seconds Postgres takes, by itself, to insert campaign ``source``'s sequences and
    measurements again for campaign ``target`` (same tables, indexes and foreign keys; one
    transaction, rolled back): the floor under any ingest of those rows."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            t0 = time.perf_counter()
            conn.execute(
                text(
                    "INSERT INTO sequence (campaign_id, text, created_at) "
                    "SELECT :target, text, now() FROM sequence WHERE campaign_id = :source"
                ),
                {"source": source, "target": target},
            )
            conn.execute(
                text(
                    "INSERT INTO measurement (campaign_id, sequence_id, upload_id, row, value, feasible, source, "
                    "api_key_id, created_at) SELECT :target, t.id, m.upload_id, m.row, m.value, m.feasible, "
                    "m.source, m.api_key_id, now() FROM measurement m JOIN sequence s ON s.id = m.sequence_id "
                    "JOIN sequence t ON t.campaign_id = :target AND t.text = s.text WHERE m.campaign_id = :source"
                ),
                {"source": source, "target": target},
            )
            seconds = time.perf_counter() - t0
            conn.rollback()
    finally:
        engine.dispose()
    return seconds


def _line(what: str, r: dict[str, Any], extra: str) -> str:
    return (
        f"{what:<34} {r['requests_per_s']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
        f"p99 {r['p99_ms']:7.1f} ms  ({r['requests']} {extra}, errors {r['errors']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llome bench load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", default="50,200", help="client counts, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (max 120)")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between one client's polls (the capacity phase polls back to back)",
    )
    parser.add_argument("--campaigns", type=int, default=10)
    parser.add_argument("--upload-rows", type=int, default=20, help="rows per results file")
    parser.add_argument("--ingest-rows", type=int, default=100_000)
    parser.add_argument(
        "--web-processes",
        type=int,
        default=2,
        help="llome serve --web-processes (1: the embedded worker, no Redis)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("LLOME_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="the broker when --web-processes is above 1",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "LLOME_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    duration = min(max(args.duration, 1.0), 120.0)
    counts = [min(int(c), 1000) for c in args.clients.split(",") if c.strip()]
    results: dict[str, Any] = {"polling": [], "capacity": [], "uploading": []}

    with running_server(args.pg_admin_url, args.port, args.web_processes, args.redis_url) as server:
        rng = random.Random(0)
        taken: set[str] = set()
        campaigns = open_batches(server, args.campaigns, rng, taken)

        def poll(i: int, step: int) -> str:
            cid, bid = campaigns[i % len(campaigns)]
            return f"/campaigns/{cid}" if (i + step) % 2 else f"/campaigns/{cid}/batches/{bid}"

        async def upload(client: httpx.AsyncClient, i: int, step: int) -> httpx.Response:
            # A new file each time (fresh sequences): every upload stores rows.
            cid, _ = campaigns[i % len(campaigns)]
            data = _csv(_random_seqs(rng, args.upload_rows, taken), rng)
            return await client.post(
                f"/campaigns/{cid}/measurements",
                files={"file": (f"r{i}-{step}.csv", data, "text/csv")},
            )

        for n in counts:
            r = asyncio.run(
                _run_pollers(
                    server.host, server.port, server.key, n, duration, poll, args.poll_interval
                )
            )
            print(
                _line(f"polling, {n} clients every {args.poll_interval:g} s", r, "requests"),
                flush=True,
            )
            results["polling"].append(r)
        for n in counts:
            r = asyncio.run(_run_pollers(server.host, server.port, server.key, n, duration, poll))
            print(_line(f"polling, {n} clients back to back", r, "requests"), flush=True)
            results["capacity"].append(r)
        for n in counts:
            r = asyncio.run(_run_clients(server.base, server.key, n, duration, upload))
            print(
                _line(f"uploading, {n} clients", r, f"uploads of {args.upload_rows} rows"),
                flush=True,
            )
            results["uploading"].append(r)

        with httpx.Client(base_url=server.base, headers=server.headers, timeout=600) as c:
            cid, peer = (
                c.post("/campaigns", json=_wetlab(name, rounds=1)).raise_for_status().json()["id"]
                for name in ("ingest", "ingest, Postgres alone")
            )
            big = _csv(_random_seqs(rng, args.ingest_rows, taken), rng)
            t0 = time.perf_counter()
            resp = c.post(
                f"/campaigns/{cid}/measurements", files={"file": ("big.csv", big, "text/csv")}
            )
            seconds = time.perf_counter() - t0
            resp.raise_for_status()
            stored = resp.json()["report"]["new_measurements"]
        floor = postgres_alone(server.database_url, cid, peer)
        results["ingest"] = {
            "rows": args.ingest_rows,
            "bytes": len(big),
            "seconds": round(seconds, 2),
            "rows_per_s": round(args.ingest_rows / seconds),
            "stored": stored,
            "postgres_alone_s": round(floor, 2),
        }
        print(
            f"ingest {args.ingest_rows} rows ({len(big) / 1e6:.1f} MB): {seconds:.2f} s "
            f"({args.ingest_rows / seconds:,.0f} rows/s; {stored} stored); Postgres alone inserting "
            f"the same rows: {floor:.2f} s ({seconds / floor:.1f}x)",
            flush=True,
        )
    results["setup"] = {
        "cpus": os.cpu_count(),
        "web_processes": args.web_processes,
        "server": "llome serve (embedded worker)"
        if args.web_processes == 1
        else "llome serve and one llome worker on Redis",
        "database": "Postgres on 127.0.0.1",
        "duration_s": duration,
        "poll_interval_s": args.poll_interval,
    }
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
