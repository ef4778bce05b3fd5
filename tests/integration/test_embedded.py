"""The zero-configuration default: ``llome serve`` with no DATABASE_URL or REDIS_URL uses a
SQLite file in its working directory and an in-process worker running the same tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Procs, clean_env, free_port
from tests.integration.test_e2e import run_ehrlich_campaign, run_wetlab_campaign

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Procs, Path]]:
    cwd = tmp_path_factory.mktemp("embedded")
    procs = Procs(cwd, clean_env(LLOME_PROGRESS_INTERVAL_S="0.3"))
    try:
        port = free_port()
        procs.server(port, cwd=cwd)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, procs, cwd
    finally:
        procs.stop_all()


def test_serve_with_no_configuration_uses_sqlite_here_and_an_in_process_worker(embedded) -> None:
    client, procs, cwd = embedded
    assert (cwd / "llome.db").exists()
    health = client.get("/health").json()
    assert health == {"status": "ok", "database": "ok", "broker": "embedded", "worker": "embedded"}
    assert "/docs" in procs.all[0].tail() and client.get("/docs").status_code == 200


def test_an_ehrlich_campaign_runs_two_rounds_on_the_embedded_default(embedded) -> None:
    client, procs, _ = embedded
    run_ehrlich_campaign(client, procs)


def test_a_wetlab_campaign_round_trip_on_the_embedded_default(embedded) -> None:
    client, procs, _ = embedded
    run_wetlab_campaign(client, procs)
