"""The Python client against a real server (uvicorn on loopback with the embedded worker), on the
embedded default's SQLite and on Postgres: a wet-lab round trip from a notebook's point of view,
typed problem+json errors, and the OpenAPI schema other languages' clients are generated from."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from llome_client import (
    CampaignEnded,
    Client,
    NotFound,
    Unauthorized,
    UploadRejected,
    ValidationFailed,
)
from tests.live_server import LiveServer

SPEC = {
    "name": "client round trip",
    "oracle": {
        "kind": "wetlab",
        "alphabet": "ACDEFGHIKLMNPQRSTVWY",
        "length": 8,
        "reference": "MKTAYIAK",
    },
    "optimizer": {"kind": "ga", "mutation_prob": 0.5},
    "batch_size": 20,
    "rounds": 2,
}
SEED = pd.DataFrame(
    {
        "sequence": [
            "MKTAYIAK",
            "MKTAYIAR",
            "MKTGYIAK",
            "MRTAYIAK",
            "MKTAYLAK",
            "MKSAYIAK",
            "MKTAYIGK",
            "AKTAYIAK",
            "MKTAWIAK",
        ],
        "score": [0.50, 0.61, 0.42, 0.55, 0.47, 0.39, 0.58, 0.33, 0.52],
    }
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    from api.config import Settings
    from tests.conftest import _pg_reason, create_database, drop_database

    tmp: Path = tmp_path_factory.mktemp(f"client-{request.param}")
    name = f"llome_client_{os.getpid()}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp}/llome.db"
    else:
        if (reason := _pg_reason()) is not None:
            pytest.skip(reason)
        url = create_database(name)
    live = LiveServer(
        Settings(
            database_url=url,
            redis_url=None,
            data_dir=tmp / "data",
            progress_interval_s=0.2,
            recovery_interval_s=5.0,
        )
    ).start()
    yield live
    live.stop()
    if request.param == "postgres":
        drop_database(name)


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.api_key) as c:
        yield c


def results_for(frame: pd.DataFrame) -> pd.DataFrame:
    """What a lab sends back: the batch's frame with a score in every row."""
    out = frame[["candidate_id", "sequence", "mutant"]].copy()
    out["score"] = [round(0.1 + 0.8 * i / len(out), 3) for i in range(len(out))]
    return out


def test_wetlab_round_trip_through_the_client(client: Client) -> None:
    campaign = client.create_campaign(SPEC, idempotency_key="client-round-trip")
    assert client.create_campaign(SPEC, idempotency_key="client-round-trip").id == campaign.id

    bad_seed = pd.concat([SEED, pd.DataFrame({"sequence": ["MKTAYIAX"], "score": [0.7]})])
    with pytest.raises(UploadRejected) as rejected:
        campaign.upload_measurements(bad_seed)
    errors = rejected.value.errors
    assert list(errors.columns) == ["row", "column", "reason"]
    assert errors.to_dict("records")[0]["row"] == 11  # the header is row 1
    assert errors.to_dict("records")[0]["column"] == "sequence"
    assert "X" in errors.to_dict("records")[0]["reason"]
    assert campaign.status().status == "created"  # nothing stored

    assert campaign.upload_measurements(SEED).status == "committed"
    sizes = []
    for r in (1, 2):
        batch = campaign.wait_for_batch(timeout=120, progress=True, poll_s=0.2)
        assert batch.read.round == r
        frame = batch.to_frame()
        assert list(frame.columns[:5]) == ["candidate_id", "sequence", "mutant", "score", "status"]
        sizes.append(batch.read.size)  # at most 20: the GA proposes no sequence twice
        assert 0 < len(frame) == batch.read.size <= 20 and frame["mutant"].str.len().gt(0).all()
        results = results_for(frame)
        if r == 1:
            wrong = results.copy().astype({"score": object})
            wrong.loc[3, "score"] = "abc"
            with pytest.raises(UploadRejected) as rejected:
                campaign.upload_results(batch, wrong)
            row = rejected.value.errors.to_dict("records")[0]
            assert (row["row"], row["column"]) == (5, "score")
            assert rejected.value.upload is not None and rejected.value.upload.status == "previewed"
        upload = campaign.upload_results(batch, results)
        assert upload.status == "committed" and upload.report is not None
        assert upload.report.new_measurements == batch.read.size
        # the same file again: the same committed upload, nothing stored twice
        assert campaign.upload_results(batch, results).id == upload.id

    with pytest.raises(CampaignEnded, match="completed"):
        campaign.wait_for_batch(timeout=60, progress=False, poll_s=0.2)
    metrics = campaign.metrics()
    assert list(metrics["round"]) == [0, 1, 2]
    assert list(metrics["oracle_calls"]) == [9, 9 + sizes[0], 9 + sizes[0] + sizes[1]]
    export = campaign.export()
    assert {"sequence", "score"} <= set(export.columns)
    assert export["score"].notna().sum() == 9 + sum(sizes)
    png = campaign.plot()
    assert png.startswith(b"\x89PNG") and png._repr_png_() == bytes(png)
    events = campaign.events()
    assert events["to_status"].iloc[-1] == "completed"


def test_problems_raise_typed_exceptions_that_carry_them(
    client: Client, server: LiveServer
) -> None:
    with pytest.raises(NotFound) as missing:
        client.campaign(987654)
    assert missing.value.status == 404 and "987654" in missing.value.problem.detail

    with pytest.raises(ValidationFailed) as invalid:
        client.create_campaign({**SPEC, "batch_size": 0})
    assert any(e.field and "batch_size" in e.field for e in invalid.value.problem.errors or [])

    with Client(server.url, "not-a-key") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.campaigns()
    assert denied.value.problem.status == 401


def test_operation_ids_read_well_and_files_are_binary(app) -> None:  # type: ignore[no-untyped-def]
    schema = app.openapi()
    operations = {
        (path, method): op
        for path, methods in schema["paths"].items()
        for method, op in methods.items()
    }
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids))
    assert operations[("/campaigns", "post")]["operationId"] == "create_campaign"
    assert (
        operations[("/campaigns/{campaign_id}/batches/{batch_id}", "get")]["operationId"]
        == "get_batch"
    )
    for op_id in ids:  # no path or method baked in, as FastAPI's default ids have
        assert "campaigns_" not in op_id and not op_id.endswith(("_get", "_post")), op_id
    png = operations[("/campaigns/{campaign_id}/plot.png", "get")]["responses"]["200"]["content"]
    assert png["image/png"]["schema"] == {"type": "string", "format": "binary"}
    assert png["application/octet-stream"] == png["image/png"]  # what generators keep as bytes
    bundle = operations[("/campaigns/{campaign_id}/bundle", "get")]["responses"]["200"]["content"]
    assert set(bundle) == {"application/gzip", "application/octet-stream"}
    csv = operations[("/campaigns/{campaign_id}/export", "get")]["responses"]["200"]["content"]
    assert csv["text/csv"]["schema"]["format"] == "binary"
