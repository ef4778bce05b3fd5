"""Campaign routes on the real app and the real Postgres test database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from api.models import CampaignEvent, Job
from api.services.jobs import TaskName

TINY_EHRLICH: dict[str, Any] = {
    "kind": "ehrlich",
    "num_states": 8,
    "dim": 8,
    "num_motifs": 2,
    "motif_length": 2,
    "seed": 3,
    "seeding": {"num_particles": 32, "num_steps": 2, "mutation_prob": 0.1},
}
WETLAB: dict[str, Any] = {"kind": "wetlab", "alphabet": "ACDEFG", "length": 6}


def ehrlich_campaign(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "tiny ehrlich",
        "oracle": TINY_EHRLICH,
        "optimizer": {"kind": "ga", "mutation_prob": 0.2},
        "batch_size": 20,
        "rounds": 2,
    }
    return {**body, **overrides}


def test_creating_an_ehrlich_campaign_starts_seeding_and_enqueues_the_seed_step(
    client, publisher, session_factory
) -> None:
    r = client.post("/campaigns", json=ehrlich_campaign())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "seeding"
    assert body["alphabet"] == "ABCDEFGH"  # the first v letters: the documented string form
    assert body["length"] == 8
    assert body["oracle"]["seeding"]["num_particles"] == 32
    with session_factory() as s:
        job = s.scalar(select(Job).where(Job.campaign_id == body["id"]))
    assert (job.step, job.status, job.round) == ("seed", "queued", 0)
    assert publisher.sent == [(TaskName.SEED, (job.id,))]
    assert client.get(f"/campaigns/{body['id']}").json()["progress"]["phase"] == "seed queued"


def test_a_wetlab_campaign_waits_for_seed_data_and_says_so(client, publisher) -> None:
    r = client.post(
        "/campaigns",
        json={
            "name": "lab",
            "oracle": WETLAB,
            "batch_size": 8,
            "rounds": 1,
            "optimizer": {"kind": "llome", "objective": "sft"},
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "created"
    assert f"/campaigns/{body['id']}/measurements" in body["progress"]["message"]
    assert publisher.sent == []


def test_defaults_are_the_papers(client) -> None:
    r = client.post("/campaigns", json={"name": "paper", "oracle": {"kind": "ehrlich"}})
    body = r.json()
    assert r.status_code == 201
    assert (body["batch_size"], body["rounds"]) == (2000, 10)
    assert body["optimizer"]["objective"] == "sft1-marge9"
    assert body["oracle"]["num_states"] == 32 and body["oracle"]["seed"] == 50494
    assert body["oracle"]["seeding"]["num_particles"] == 1000


def test_a_preset_name_sets_the_ehrlich_shape(client) -> None:
    r = client.post(
        "/campaigns",
        json={"name": "p", "oracle": {"kind": "ehrlich", "preset": "ehr_v-32_l-128_m-4_c-4_q-2"}},
    )
    assert r.status_code == 201, r.text
    o = r.json()["oracle"]
    assert (o["num_states"], o["dim"], o["quantization"]) == (32, 128, 2)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"oracle": {**TINY_EHRLICH, "dim": 3}}, "oracle", "cannot all fit"),
        (
            {"oracle": {**TINY_EHRLICH, "num_states": 100}},
            "oracle.num_states",
            "less than or equal",
        ),
        (
            {"oracle": {"kind": "wetlab", "alphabet": "AAC", "length": 5}},
            "oracle.alphabet",
            "repeats",
        ),
        ({"oracle": {"kind": "quantum"}}, "oracle", "kind"),
        (
            {"optimizer": {"kind": "llome", "objective": "sft2-ppo3"}},
            "optimizer.objective",
            "schedule",
        ),
        (
            {"optimizer": {"kind": "llome", "train": {"epochz": 2}}},
            "optimizer.train.epochz",
            "not permitted",
        ),
        ({"batch_size": 0}, "batch_size", "greater than"),
        ({"model": {"path": "/etc"}}, "model.path", "not permitted"),
        ({"optimizer": {"kind": "ga", "survival_quantile": 0.05}}, "body", "two parents"),
        (
            {"oracle": {**TINY_EHRLICH, "seeding": {"mutation_prob": 1.5}}},
            "oracle",
            "seeding: mutation_prob",
        ),
    ],
)
def test_a_bad_request_is_a_422_naming_the_field(client, body, field, words) -> None:
    r = client.post("/campaigns", json={**ehrlich_campaign(), **body})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 422
    fields = {e["field"]: e["reason"] for e in problem["errors"]}
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    assert any(words in reason for reason in fields.values()), fields


def test_an_unknown_campaign_is_a_404_problem(client) -> None:
    r = client.get("/campaigns/987654")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == "campaign 987654 does not exist"


def test_campaigns_page_newest_first_with_a_cursor(client) -> None:
    ids = [
        client.post("/campaigns", json=ehrlich_campaign(name=f"c{i}")).json()["id"]
        for i in range(3)
    ]
    first = client.get("/campaigns", params={"limit": 2}).json()
    assert [c["id"] for c in first["items"]] == ids[::-1][:2]
    assert first["next_cursor"] is not None
    second = client.get("/campaigns", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert second["items"][0]["id"] == ids[0]
    bad = client.get("/campaigns", params={"cursor": "abc"})
    assert bad.status_code == 422 and "cursor" in bad.text


def test_pause_resume_cancel_move_the_status_and_log_events(
    client, publisher, session_factory
) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    publisher.sent.clear()
    assert client.post(f"/campaigns/{cid}/pause").json()["status"] == "paused"
    assert client.post(f"/campaigns/{cid}/pause").json()["status"] == "paused"
    resumed = client.post(f"/campaigns/{cid}/resume").json()
    assert resumed["status"] == "seeding"
    assert publisher.names() == [TaskName.SEED]  # the queued seed job is sent again
    assert client.post(f"/campaigns/{cid}/resume").status_code == 409
    assert client.post(f"/campaigns/{cid}/cancel").json()["status"] == "cancelled"
    r = client.post(f"/campaigns/{cid}/resume")
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    assert client.post(f"/campaigns/{cid}/cancel").status_code == 409
    with session_factory() as s:
        kinds = list(
            s.scalars(
                select(CampaignEvent.kind)
                .where(CampaignEvent.campaign_id == cid)
                .order_by(CampaignEvent.id)
            )
        )
        statuses = set(s.scalars(select(Job.status).where(Job.campaign_id == cid)))
    assert (
        kinds[0] == "created"
        and "paused" in kinds
        and "resumed" in kinds
        and kinds[-1] == "cancelled"
    )
    assert statuses == {"cancelled"}
    events = client.get(f"/campaigns/{cid}/events").json()["items"]
    assert events[-1]["to_status"] == "cancelled"


def test_health_reports_database_and_broker(client) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["database"] == "ok"


def test_every_response_carries_a_request_id(client) -> None:
    assert len(client.get("/health").headers["x-request-id"]) == 32
    assert (
        client.get("/campaigns/0", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"]
        == "abc-1"
    )


def test_openapi_lists_the_contract_routes(client) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    for p in [
        "/campaigns",
        "/campaigns/{campaign_id}",
        "/campaigns/{campaign_id}/measurements",
        "/campaigns/{campaign_id}/batches",
        "/campaigns/{campaign_id}/batches/{batch_id}",
        "/campaigns/{campaign_id}/batches/{batch_id}/results",
        "/campaigns/{campaign_id}/metrics",
        "/campaigns/{campaign_id}/plot.png",
        "/campaigns/{campaign_id}/export",
        "/campaigns/{campaign_id}/sequences",
        "/campaigns/{campaign_id}/pause",
        "/campaigns/{campaign_id}/resume",
        "/campaigns/{campaign_id}/cancel",
        "/health",
    ]:
        assert p in paths
    assert client.get("/docs").status_code == 200


def test_job_counts_are_one_per_step(client, session_factory) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    client.post(f"/campaigns/{cid}/pause")
    client.post(f"/campaigns/{cid}/resume")
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.campaign_id == cid)) == 1
