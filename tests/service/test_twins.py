"""A synthetic twin of a wet-lab campaign: an Ehrlich campaign of the same shape that runs on its
own, and the forecast read from it (milestones, feasible and unique % per round, plot)."""

from __future__ import annotations

from tests.conftest import drain
from tests.service.test_uploads import ALPHABET, LENGTH, csv_bytes, seed_rows, upload, wetlab


def test_a_twin_mirrors_the_campaign_and_forecasts_its_budget(client, runtime, publisher) -> None:
    cid = wetlab(client, rounds=3, stop={"target_score": 0.8, "patience_rounds": 3})
    assert upload(client, cid, csv_bytes("sequence,score", seed_rows())).status_code == 201
    assert client.get(f"/campaigns/{cid}/forecast").status_code == 404  # no twin yet

    r = client.post(f"/campaigns/{cid}/twin")
    assert r.status_code == 201, r.text
    twin = r.json()
    assert twin["twin_of"] == cid and twin["oracle"]["kind"] == "ehrlich"
    assert (twin["oracle"]["num_states"], twin["oracle"]["dim"]) == (len(ALPHABET), LENGTH)
    assert (twin["batch_size"], twin["rounds"]) == (20, 3)
    assert twin["optimizer"]["kind"] == "ga" and twin["optimizer"]["mutation_prob"] == 0.3
    assert twin["oracle"]["seeding"]["num_particles"] == 30  # as many as the lab's seed data
    assert twin["stop"]["target_score"] is None and twin["stop"]["patience_rounds"] == 3
    again = client.post(f"/campaigns/{cid}/twin")
    assert again.status_code == 200 and again.json()["id"] == twin["id"]

    drain(runtime, publisher)  # the twin runs on its own: seeding, then every round's steps
    ran = client.get(f"/campaigns/{twin['id']}").json()
    assert ran["status"] == "completed", ran
    forecast = client.get(f"/campaigns/{cid}/forecast")
    assert forecast.status_code == 200, forecast.text
    f = forecast.json()
    assert f["twin_id"] == twin["id"] and f["twin_status"] == "completed"
    assert f["shape"]["num_states"] == len(ALPHABET) and f["shape"]["dim"] == LENGTH
    metrics = client.get(f"/campaigns/{twin['id']}/metrics").json()["rounds"]
    assert [r["round"] for r in f["rounds"]] == [m["round"] for m in metrics]
    for row, m in zip(f["rounds"], metrics, strict=True):
        assert row["regret"] == m["regret"] and row["oracle_calls"] == m["oracle_calls"]
        assert row["feasible_percent"] == 100 * m["feasible_fraction"]
    assert [m["regret"] for m in f["milestones"]] == [0.5, 0.25, 0.0]
    for mark in f["milestones"]:
        reached = [m for m in metrics if m["regret"] is not None and m["regret"] <= mark["regret"]]
        assert mark["round"] == (reached[0]["round"] if reached else None)
        assert mark["oracle_calls"] == (reached[0]["oracle_calls"] if reached else None)
    assert "not the lab's landscape" in f["what_it_tells"]
    plot = client.get(f["plot_url"])
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")


def test_a_llome_campaign_gets_a_llome_twin_with_its_objective_and_model(client) -> None:
    cid = wetlab(
        client,
        optimizer={"kind": "llome", "objective": "sft1-marge9", "train": {"epochs": 2}},
        model={"hidden_size": 64, "num_layers": 2, "num_heads": 2},
    )
    r = client.post(f"/campaigns/{cid}/twin")
    assert r.status_code == 201, r.text
    twin = r.json()
    assert twin["optimizer"]["kind"] == "llome" and twin["optimizer"]["objective"] == "sft1-marge9"
    assert twin["optimizer"]["train"]["epochs"] == 2
    assert (twin["model"]["hidden_size"], twin["model"]["num_layers"]) == (64, 2)
    assert twin["oracle"]["seeding"]["num_particles"] == 20  # no seed data yet: one batch


def test_an_ehrlich_campaign_has_no_twin(client) -> None:
    r = client.post(
        "/campaigns",
        json={
            "name": "synthetic",
            "oracle": {
                "kind": "ehrlich",
                "num_states": 4,
                "dim": 8,
                "num_motifs": 1,
                "motif_length": 4,
                "seeding": {"num_particles": 20, "num_steps": 1},
            },
            "optimizer": {"kind": "ga"},
            "batch_size": 20,
            "rounds": 1,
        },
    )
    assert r.status_code == 201, r.text
    twin = client.post(f"/campaigns/{r.json()['id']}/twin")
    assert twin.status_code == 409 and "already synthetic" in twin.json()["detail"]


def test_the_campaign_page_links_its_twin(app, client, runtime, publisher, api_key) -> None:  # type: ignore[no-untyped-def]
    import re

    from fastapi.testclient import TestClient

    cid = wetlab(client)
    twin = client.post(f"/campaigns/{cid}/twin").json()["id"]
    with TestClient(app) as browser:
        login = browser.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
        browser.post("/ui/login", data={"api_key": api_key, "csrf": csrf})
        page = browser.get(f"/ui/campaigns/{cid}").text
        assert f'href="/ui/campaigns/{twin}">synthetic twin #{twin}</a>' in page
        assert (
            f'href="/ui/campaigns/{cid}">campaign #{cid}</a>'
            in browser.get(f"/ui/campaigns/{twin}").text
        )
