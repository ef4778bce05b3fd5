"""Load: N concurrent clients against ``llome serve`` on Postgres (loopback only).

Starts ``llome serve`` on a fresh Postgres database of its own (embedded in-process worker: no
Redis needed), makes a lab key and a few wet-lab campaigns each waiting for the lab with an open
batch, then for each client count:

* polling: every client loops ``GET /campaigns/{id}`` and ``GET /campaigns/{id}/batches/{bid}``
  for ``--duration`` seconds (on one keep-alive connection each, a bare asyncio client);
* uploading: every client uploads small results files (``--upload-rows`` new labelled sequences
  per file) to its campaign for ``--duration`` seconds;

and reports requests/s and p50/p99 latency. Last, it times the ingestion of one 100k-row CSV.
Everything is bounded in time and count; the database is dropped at the end.

    llome bench load --clients 50,200 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
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
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


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
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"},
                                 timeout=60, limits=limits) as client:
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
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
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


async def _run_pollers(host: str, port: int, key: str, n: int, duration: float,
                       path: Any) -> dict[str, Any]:
    """Like _run_clients for GETs, on a bare asyncio HTTP/1.1 client (one keep-alive connection
    per client): httpx's pool costs milliseconds of CPU per request at 200 connections, so on
    2 cores the load generator, not the server, set the latencies."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + duration

    async def one(i: int) -> None:
        step, conn = 0, None
        while time.perf_counter() < deadline:
            request = (f"GET {path(i, step)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                       f"Authorization: Bearer {key}\r\n\r\n").encode()
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(host, port), 60)
                code = await asyncio.wait_for(_get(*conn, request), 60)
                if code < 400:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[str(code)] = errors.get(str(code), 0) + 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if conn is not None:
                    conn[1].close()
                conn = None
            step += 1
        if conn is not None:
            conn[1].close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    return _summary(n, latencies, errors, elapsed)


def _summary(n: int, latencies: list[float], errors: dict[str, int], elapsed: float) -> dict[str, Any]:
    """Throughput and latency percentiles of one load phase."""
    return {"clients": n, "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(1000 * _percentile(latencies, 0.50), 1),
            "p99_ms": round(1000 * _percentile(latencies, 0.99), 1)}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llome bench load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="50,200", help="client counts, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (max 120)")
    parser.add_argument("--campaigns", type=int, default=10)
    parser.add_argument("--upload-rows", type=int, default=20, help="rows per results file")
    parser.add_argument("--ingest-rows", type=int, default=100_000)
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "LLOME_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    duration = min(max(args.duration, 1.0), 120.0)
    counts = [min(int(c), 1000) for c in args.clients.split(",") if c.strip()]

    name = f"llome_load_{os.getpid()}"
    url = _scratch_database(args.pg_admin_url, name, create=True)
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / name
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLOME_") and k not in ("DATABASE_URL", "REDIS_URL")}
    # One key for every client: its per-key rate limit is off here (the figures are the server's).
    env.update(DATABASE_URL=url, LLOME_DATA_DIR=str(workdir / "data"), PYTHONPATH=str(ROOT), LLOME_RATE_LIMIT_PER_S="0",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", LLOME_TORCH_THREADS="1")
    log = open(workdir / "serve.log", "wb")
    server = subprocess.Popen([str(Path(sys.executable).parent / "llome"), "serve", "--port", str(port),
                               "--log-level", "warning"], cwd=workdir, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    results: dict[str, Any] = {"polling": [], "uploading": []}
    # A SIGTERM (e.g. from `timeout`) still stops the server and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        def up() -> bool:
            if server.poll() is not None:
                raise SystemExit(f"llome serve exited; see {workdir / 'serve.log'}")
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 120, "llome serve to answer")
        key = (workdir / ".llome" / "api-key").read_text().strip()
        rng = random.Random(0)
        taken: set[str] = set()
        h = {"Authorization": f"Bearer {key}"}
        campaigns: list[tuple[int, int]] = []
        with httpx.Client(base_url=base, headers=h, timeout=120) as c:
            for i in range(args.campaigns):
                cid = c.post("/campaigns", json={
                    "name": f"load {i}", "oracle": {"kind": "wetlab", "alphabet": ALPHABET, "length": LENGTH},
                    "optimizer": {"kind": "ga", "mutation_prob": 0.1}, "batch_size": 50, "rounds": 100,
                    "seed": i}).raise_for_status().json()["id"]
                c.post(f"/campaigns/{cid}/measurements",
                       files={"file": ("seed.csv", _csv(_random_seqs(rng, 200, taken), rng), "text/csv")}).raise_for_status()
                campaigns.append((cid, 0))
            for j, (cid, _) in enumerate(campaigns):
                wait_until(lambda: c.get(f"/campaigns/{cid}").json()["status"] == "awaiting_labels", 300,
                           f"campaign {cid} to propose its first batch", interval=0.5)
                campaigns[j] = (cid, c.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"])

        def poll(i: int, step: int) -> str:
            cid, bid = campaigns[i % len(campaigns)]
            return f"/campaigns/{cid}" if step % 2 else f"/campaigns/{cid}/batches/{bid}"

        async def upload(client: httpx.AsyncClient, i: int, step: int) -> httpx.Response:
            # A new file each time (fresh sequences): every upload stores rows.
            cid, _ = campaigns[i % len(campaigns)]
            data = _csv(_random_seqs(rng, args.upload_rows, taken), rng)
            return await client.post(f"/campaigns/{cid}/measurements",
                                     files={"file": (f"r{i}-{step}.csv", data, "text/csv")})

        for n in counts:
            r = asyncio.run(_run_pollers("127.0.0.1", port, key, n, duration, poll))
            print(f"polling   {n:4d} clients: {r['requests_per_s']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                  f"p99 {r['p99_ms']:7.1f} ms  ({r['requests']} requests, errors {r['errors']})", flush=True)
            results["polling"].append(r)
        for n in counts:
            r = asyncio.run(_run_clients(base, key, n, duration, upload))
            print(f"uploading {n:4d} clients: {r['requests_per_s']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                  f"p99 {r['p99_ms']:7.1f} ms  ({r['requests']} uploads of {args.upload_rows} rows, "
                  f"errors {r['errors']})", flush=True)
            results["uploading"].append(r)

        with httpx.Client(base_url=base, headers=h, timeout=600) as c:
            cid = c.post("/campaigns", json={
                "name": "ingest", "oracle": {"kind": "wetlab", "alphabet": ALPHABET, "length": LENGTH},
                "optimizer": {"kind": "ga"}, "batch_size": 50, "rounds": 1}).raise_for_status().json()["id"]
            big = _csv(_random_seqs(rng, args.ingest_rows, taken), rng)
            t0 = time.perf_counter()
            r = c.post(f"/campaigns/{cid}/measurements", files={"file": ("big.csv", big, "text/csv")})
            seconds = time.perf_counter() - t0
            r.raise_for_status()
            stored = r.json().get("new_measurements")
        results["ingest"] = {"rows": args.ingest_rows, "bytes": len(big), "seconds": round(seconds, 2),
                             "rows_per_s": round(args.ingest_rows / seconds), "stored": stored}
        print(f"ingest {args.ingest_rows} rows ({len(big) / 1e6:.1f} MB): {seconds:.2f} s "
              f"({args.ingest_rows / seconds:,.0f} rows/s; {stored} stored)", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        _scratch_database(args.pg_admin_url, name, create=False)
    results["setup"] = {"cpus": os.cpu_count(), "server": "llome serve (one uvicorn process, embedded worker)",
                        "database": "Postgres on 127.0.0.1", "duration_s": duration}
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
