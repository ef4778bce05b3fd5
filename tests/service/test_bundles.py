"""The portable bundle: a campaign exported from the embedded default (SQLite) and imported into
Postgres holds the same content under new ids, the importing lab owns it, the next batch it
proposes is the one the source proposes, and a tampered member is a 422 naming it."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RecordingPublisher, drain, make_key
from tests.service.test_uploads import csv_bytes, seed_rows

SPEC = {
    "name": "portable",
    "oracle": {
        "kind": "wetlab",
        "alphabet": "ACDEFG",
        "length": 6,
        "reference": "ACDEFG",
        "label_ttl": "14d",
    },
    "optimizer": {"kind": "ga", "mutation_prob": 0.3},
    "batch_size": 20,
    "rounds": 3,
    "stop": {"patience_rounds": 5},
}


class Deployment:
    """An app on its own database with a recording publisher and a worker runtime."""

    def __init__(self, settings: Any) -> None:
        from fastapi.testclient import TestClient

        from api.db import make_engine, make_sessionmaker
        from api.main import create_app
        from worker.runtime import Runtime

        self.publisher = RecordingPublisher()
        self.engine = make_engine(settings)
        self.factory = make_sessionmaker(self.engine, self.publisher)
        self.runtime = Runtime(
            settings=settings, engine=self.engine, session_factory=self.factory, device="cpu"
        )
        self.app = create_app(settings, publisher=self.publisher, migrate=False)
        self.client = TestClient(
            self.app,
            headers={"Authorization": f"Bearer {make_key(make_sessionmaker(self.engine))}"},
        )
        self.client.__enter__()

    def drain(self) -> None:
        drain(self.runtime, self.publisher)

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.engine.dispose()


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Deployment]:
    from api.config import Settings
    from api.db import upgrade

    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/source.db",
        redis_url=None,
        data_dir=tmp_path / "source-data",
        progress_interval_s=0.2,
    )
    upgrade(settings)
    d = Deployment(settings)
    yield d
    d.close()


@pytest.fixture
def postgres(settings) -> Iterator[Deployment]:  # type: ignore[no-untyped-def]
    d = Deployment(settings)
    yield d
    d.close()


def label_open_batch(d: Deployment, cid: int) -> None:
    bid = d.client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    cands = d.client.get(f"/campaigns/{cid}/batches/{bid}").json()["candidates"]
    rows = [(c["candidate_id"], round(0.1 + 0.03 * i, 3)) for i, c in enumerate(cands)]
    r = d.client.post(
        f"/campaigns/{cid}/batches/{bid}/results",
        files={"file": ("r.csv", csv_bytes("candidate_id,score", rows), "text/csv")},
    )
    assert r.status_code == 201, r.text


def content(d: Deployment, cid: int) -> dict[str, Any]:
    """What a campaign holds, without its ids."""
    c = d.client
    read = c.get(f"/campaigns/{cid}").json()
    batches = [
        c.get(f"/campaigns/{cid}/batches/{b['id']}").json()
        for b in c.get(f"/campaigns/{cid}/batches").json()["items"]
    ]
    drop_ids = ("candidate_id", "id", "campaign_id", "created_at", "labelled_at")
    return {
        "campaign": {
            k: read[k]
            for k in (
                "name",
                "status",
                "round",
                "rounds",
                "batch_size",
                "seed",
                "alphabet",
                "length",
                "oracle",
                "optimizer",
                "stop",
            )
        },
        "batches": [
            {
                "round": b["round"],
                "status": b["status"],
                "size": b["size"],
                "candidates": [
                    {k: v for k, v in cand.items() if k not in drop_ids} for cand in b["candidates"]
                ],
            }
            for b in batches
        ],
        "sequences": [
            (s["sequence"], s["score"], s["feasible"])
            for s in c.get(f"/campaigns/{cid}/sequences").json()["items"]
        ],
        "events": [
            (e["kind"], e["from_status"], e["to_status"])
            for e in c.get(f"/campaigns/{cid}/events").json()["items"]
        ],
        # The database computes the mean (SQLite and Postgres differ in the last digit).
        "metrics": [
            {
                k: round(v, 12) if k == "mean_score" and v is not None else v
                for k, v in r.items()
                if k != "cost"
            }
            for r in c.get(f"/campaigns/{cid}/metrics").json()["rounds"]
        ],
    }


def test_a_bundle_moves_a_campaign_from_sqlite_to_postgres(sqlite, postgres) -> None:
    src = sqlite.client.post("/campaigns", json=SPEC).json()["id"]
    r = sqlite.client.post(
        f"/campaigns/{src}/measurements",
        files={"file": ("s.csv", csv_bytes("sequence,score", seed_rows()), "text/csv")},
    )
    assert r.status_code == 201, r.text
    sqlite.drain()
    label_open_batch(sqlite, src)  # round 2's generate step is now queued, not yet run
    bundle = sqlite.client.get(f"/campaigns/{src}/bundle")
    assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/gzip"

    imported = postgres.client.post(
        "/campaigns/import", files={"file": ("c.tar.gz", bundle.content, "application/gzip")}
    )
    assert imported.status_code == 201, imported.text
    dst = imported.json()["id"]
    before = content(sqlite, src)
    after = content(postgres, dst)
    assert after["events"][:-1] == before["events"]
    assert after["events"][-1][0] == "imported"
    assert {**after, "events": None} == {**before, "events": None}

    sqlite.drain()
    postgres.drain()  # the import sent the queued step again
    source_next, imported_next = (
        content(sqlite, src)["batches"][0],
        content(postgres, dst)["batches"][0],
    )
    assert source_next["round"] == imported_next["round"] == 2
    assert [c["sequence"] for c in imported_next["candidates"]] == [
        c["sequence"] for c in source_next["candidates"]
    ]
    assert imported_next == source_next


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {i.name: tar.extractfile(i).read() for i in tar}  # type: ignore[union-attr]


def repack(data: bytes, change: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, body in members(data).items():
            body = change.get(name, body)
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_a_bundle_with_a_wrong_checksum_is_a_422_naming_the_member(sqlite, postgres) -> None:
    src = sqlite.client.post("/campaigns", json=SPEC).json()["id"]
    sqlite.client.post(
        f"/campaigns/{src}/measurements",
        files={"file": ("s.csv", csv_bytes("sequence,score", seed_rows()), "text/csv")},
    )
    data = sqlite.client.get(f"/campaigns/{src}/bundle", params={"weights": "false"}).content
    files = members(data)
    names = list(files)
    assert names[0] == "manifest.json" and "measurements.jsonl" in names
    manifest = json.loads(files["manifest.json"])
    assert manifest["format_version"] == 1 and manifest["llome_version"]
    assert set(manifest["members"]) == set(names[1:])
    rows = files["measurements.jsonl"]
    assert hashlib.sha256(rows).hexdigest() == manifest["members"]["measurements.jsonl"]

    tampered = repack(data, {"measurements.jsonl": rows.replace(b'"value": 0.', b'"value": 1.', 1)})
    r = postgres.client.post(
        "/campaigns/import", files={"file": ("c.tar.gz", tampered, "application/gzip")}
    )
    assert r.status_code == 422
    assert "measurements.jsonl" in r.json()["detail"] and "SHA-256" in r.json()["detail"]
    assert r.json()["errors"][0]["field"] == "measurements.jsonl"
    not_a_bundle = postgres.client.post("/campaigns/import", files={"file": ("c.tar.gz", b"hello")})
    assert (
        not_a_bundle.status_code == 422 and "not a .tar.gz bundle" in not_a_bundle.json()["detail"]
    )


def point_mutants(parent: str = "ACDEFG") -> list[tuple[str, float]]:
    """Seed data a language model can learn edits from: the parent and its single mutants."""
    rows = [(parent, 0.3)]
    for i in range(len(parent)):
        for j, letter in enumerate("ACDEFG"):
            if letter != parent[i]:
                rows.append(
                    (parent[:i] + letter + parent[i + 1 :], round(0.1 + 0.02 * (i * 6 + j), 3))
                )
    return rows


@pytest.mark.slow
def test_a_llome_campaign_travels_with_its_checkpoint_and_proposes_the_same_next_batch(
    sqlite, postgres
) -> None:
    spec = {**SPEC, "optimizer": {"kind": "llome"}, "rounds": 2}
    src = sqlite.client.post("/campaigns", json=spec).json()["id"]
    sqlite.client.post(
        f"/campaigns/{src}/measurements",
        files={"file": ("s.csv", csv_bytes("sequence,score", point_mutants()), "text/csv")},
    )
    sqlite.drain()  # round 1: train (a checkpoint), generate
    read = sqlite.client.get(f"/campaigns/{src}").json()
    assert read["status"] == "awaiting_labels", read["error"]
    label_open_batch(sqlite, src)  # round 2's train step is queued, from round 1's checkpoint
    data = sqlite.client.get(f"/campaigns/{src}/bundle").content
    files = members(data)
    manifest = json.loads(files["manifest.json"])
    assert manifest["checkpoint_round"] == 1
    assert any(n.startswith("checkpoint/") and n.endswith(".safetensors") for n in files)
    light = members(
        sqlite.client.get(f"/campaigns/{src}/bundle", params={"weights": "false"}).content
    )
    assert not any(n.startswith("checkpoint/") for n in light)

    r = postgres.client.post(
        "/campaigns/import", files={"file": ("c.tar.gz", data, "application/gzip")}
    )
    assert r.status_code == 201, r.text
    dst = r.json()["id"]
    sqlite.drain()
    postgres.drain()
    source_next, imported_next = (
        content(sqlite, src)["batches"][0],
        content(postgres, dst)["batches"][0],
    )
    assert source_next["round"] == imported_next["round"] == 2
    assert imported_next == source_next  # sequences, lineage, log-likelihoods: the same
