"""The core's defaults that follow the batch size (refinement budget, replay rule) and the
reproduction switches, as campaign fields: accepted, stored, shown, and handed to the loop."""

from __future__ import annotations

from typing import Any

from api.schemas.campaigns import CampaignCreate
from llome_core.config import parse_schedule
from llome_core.training import resolve

WETLAB = {"kind": "wetlab", "alphabet": "ACDEFGHIKLMNPQRSTVWY", "length": 20}


def create(client, batch_size: int, **optimizer: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    body = {
        "name": "fields",
        "oracle": WETLAB,
        "batch_size": batch_size,
        "rounds": 3,
        "optimizer": {"kind": "llome", "objective": "sft1-marge2", **optimizer},
    }
    r = client.post("/campaigns", json=body)
    assert r.status_code == 201, r.text
    got = client.get(f"/campaigns/{r.json()['id']}")
    assert got.status_code == 200
    return got.json()


def test_a_small_campaign_gets_a_small_refinement_budget_and_replays_every_label(client) -> None:
    got = create(client, 8)
    gen, train = got["optimizer"]["generate"], got["optimizer"]["train"]
    assert (gen["num_seeds"], gen["num_steps"], gen["samples_per_step"]) == (8, 10, 1)
    assert train["replay_fraction"] == 1.0
    assert got["refinement_budget"] == {
        "num_seeds": 8,
        "num_steps": 10,
        "samples_per_step": 1,
        "outputs_per_round": 560,
        "outputs_per_oracle_call": 70.0,
    }


def test_a_paper_sized_campaign_keeps_the_papers_budget_and_no_replay(client) -> None:
    got = create(client, 2000)
    assert got["refinement_budget"] == {
        "num_seeds": 200,
        "num_steps": 10,
        "samples_per_step": 10,
        "outputs_per_round": 122_000,
        "outputs_per_oracle_call": 61.0,
    }
    assert got["optimizer"]["train"]["replay_fraction"] == 0.0


def test_a_budget_set_by_the_lab_wins(client) -> None:
    got = create(
        client, 8, generate={"num_seeds": 30, "samples_per_step": 4}, train={"replay_fraction": 0.5}
    )
    assert got["refinement_budget"]["num_seeds"] == 30
    assert got["refinement_budget"]["samples_per_step"] == 4
    assert got["optimizer"]["train"]["replay_fraction"] == 0.5


def test_the_reproduction_switches_are_campaign_fields_that_reach_the_loop(client) -> None:
    got = create(
        client,
        8,
        generate={"decoding": "free", "precision": "bf16"},
        train={"checkpoint_fallback": "start", "learning_rate": 1e-4},
    )
    assert got["optimizer"]["generate"]["decoding"] == "free"
    assert got["optimizer"]["generate"]["precision"] == "bf16"
    assert got["optimizer"]["train"]["checkpoint_fallback"] == "start"
    assert got["optimizer"]["train"]["learning_rate"] == 1e-4
    spec = CampaignCreate.model_validate(
        {k: got[k] for k in ("name", "batch_size", "rounds", "seed", "optimizer")}
        | {"oracle": WETLAB}
    )
    config = spec.loop_config("cpu")
    assert config.generate.decoding == "free" and config.train.checkpoint_fallback == "start"
    assert config.generate.precision == "bf16"
    assert {
        resolve(config.train, o, is_tiny_model=True).learning_rate
        for o in parse_schedule(config.objective, config.rounds)
    } == {1e-4}
    defaults = create(client, 8)
    assert defaults["optimizer"]["generate"]["decoding"] == "constrained"
    assert defaults["optimizer"]["generate"]["precision"] == "fp32"
    assert defaults["optimizer"]["train"]["checkpoint_fallback"] == "final"


def test_unknown_switch_values_are_refused_by_name(client) -> None:
    body = {
        "name": "x",
        "oracle": WETLAB,
        "batch_size": 8,
        "optimizer": {"kind": "llome", "generate": {"decoding": "greedy"}},
    }
    r = client.post("/campaigns", json=body)
    assert r.status_code == 422 and "decoding" in r.text
    body["optimizer"] = {"kind": "llome", "train": {"checkpoint_fallback": "best"}}
    r = client.post("/campaigns", json=body)
    assert r.status_code == 422 and "checkpoint_fallback" in r.text
    body["optimizer"] = {"kind": "llome", "generate": {"precision": "fp16"}}
    r = client.post("/campaigns", json=body)
    assert r.status_code == 422 and "precision" in r.text


def test_the_campaign_page_shows_the_refinement_budget_in_force(app, api_key) -> None:  # type: ignore[no-untyped-def]
    import re

    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"Bearer {api_key}"}) as client:
        cid = create(client, 8)["id"]
    with TestClient(app) as browser:
        page = browser.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = browser.post(
            "/ui/login",
            data={"api_key": api_key, "csrf": csrf, "next": "/ui"},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        html = browser.get(f"/ui/campaigns/{cid}").text
    line = re.search(r'data-role="refinement">([^<]+)<', html)
    assert line is not None, html
    assert line.group(1).startswith("8 seeds × 10 steps, 1 per temperature: 560 outputs")
