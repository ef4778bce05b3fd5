"""The zero-configuration default: ``llome serve`` with no DATABASE_URL or REDIS_URL uses a
SQLite file in its working directory and an in-process worker running the same tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Procs, auth, clean_env, free_port
from tests.integration.test_e2e import run_ehrlich_campaign, run_wetlab_campaign

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, Procs, Path]]:
    cwd = tmp_path_factory.mktemp("embedded")
    procs = Procs(cwd, clean_env(LLOME_PROGRESS_INTERVAL_S="0.3"))
    try:
        port = free_port()
        procs.server(port, cwd=cwd)
        key = (cwd / ".llome" / "api-key").read_text().strip()  # written on first start
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers=auth(key)
        ) as client:
            yield client, procs, cwd
    finally:
        procs.stop_all()


def test_serve_with_no_configuration_uses_sqlite_here_and_an_in_process_worker(embedded) -> None:
    client, procs, cwd = embedded
    assert (cwd / "llome.db").exists()
    health = client.get("/health").json()
    assert health == {"status": "ok", "database": "ok", "broker": "embedded", "worker": "embedded"}
    assert "/docs" in procs.all[0].tail() and client.get("/docs").status_code == 200
    key_file = cwd / ".llome" / "api-key"
    assert key_file.stat().st_mode & 0o777 == 0o600  # readable by its owner only
    assert str(key_file.resolve()) in procs.all[0].tail()  # the start-up says where it is
    assert client.get("/campaigns", headers={"Authorization": ""}).status_code == 401


def test_an_ehrlich_campaign_runs_two_rounds_on_the_embedded_default(embedded) -> None:
    client, procs, _ = embedded
    run_ehrlich_campaign(client, procs)


def test_a_wetlab_campaign_round_trip_on_the_embedded_default(embedded) -> None:
    client, procs, _ = embedded
    run_wetlab_campaign(client, procs)
