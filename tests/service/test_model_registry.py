"""The model registry: campaigns name a registered model, their own lab's checkpoint or the tiny
default; no server path is accepted or shown, and a refusal reads the same whatever is on disk."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.config import get_settings
from api.db import session_scope
from api.models import Campaign, Round
from api.services import models as model_registry
from api.services.campaigns import spec_of
from llome_cli import main
from tests.conftest import drain, make_key
from tests.service.test_campaigns import TINY_EHRLICH, ehrlich_campaign


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model: a real Hugging Face directory."""
    from llome_core.config import ModelConfig
    from llome_core.modeling import build_model, build_tokenizer, save_checkpoint

    tokenizer = build_tokenizer(8)
    model = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2), tokenizer, 0)
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_checkpoint(model, tokenizer, path)
    return path


def _register(session_factory, path: Path) -> str:  # type: ignore[no-untyped-def]
    name = f"m-{uuid.uuid4().hex[:8]}"
    with session_scope(session_factory) as s:
        model_registry.add(s, name, path)
    return name


def _llome(**overrides: object) -> dict[str, object]:
    return ehrlich_campaign(optimizer={"kind": "llome", "objective": "sft"}, **overrides)


def test_llome_models_add_list_remove(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    get_settings.cache_clear()
    try:
        assert main(["db", "upgrade"]) == 0
        assert main(["models", "add", "pythia-160m", str(model_dir)]) == 0
        assert main(["models", "add", "pythia-160m", str(model_dir)]) == 1  # the name is taken
        assert main(["models", "add", "etc", "/etc"]) == 1  # no config.json: not a model
        capsys.readouterr()
        assert main(["models", "list"]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert [line.split("\t")[:2] for line in listed] == [
            ["pythia-160m", str(model_registry.directory_size(model_dir))]
        ]
        assert main(["models", "remove", "pythia-160m"]) == 0
        assert main(["models", "remove", "pythia-160m"]) == 1
        capsys.readouterr()
        main(["models", "list"])
        assert capsys.readouterr().out == ""
    finally:
        get_settings.cache_clear()


def test_get_models_lists_names_and_sizes_never_paths(
    client, session_factory, model_dir: Path
) -> None:
    name = _register(session_factory, model_dir)
    r = client.get("/models")
    assert r.status_code == 200
    mine = [m for m in r.json() if m["name"] == name]
    assert len(mine) == 1 and mine[0]["size_bytes"] == model_registry.directory_size(model_dir)
    assert str(model_dir) not in r.text
    assert client.get("/models", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_a_campaign_names_a_registered_model_and_the_worker_finds_its_directory(
    client, session_factory, model_dir: Path
) -> None:
    name = _register(session_factory, model_dir)
    r = client.post("/campaigns", json=_llome(model=name))
    assert r.status_code == 201, r.text
    assert r.json()["model"]["name"] == name and str(model_dir) not in r.text
    with session_factory() as s:
        campaign = s.get(Campaign, r.json()["id"])
        spec = spec_of(campaign)
        assert model_registry.path_for(s, spec.model) == str(model_dir)
        assert spec.loop_config("cpu", str(model_dir)).model.path == str(model_dir)


@pytest.mark.parametrize(
    "model",
    [
        {"path": "/etc"},
        {"path": "/no/such/dir"},
        {"path": "../.llome/data/campaigns/1/round-001"},
    ],
)
def test_a_path_is_refused_alike_whatever_is_on_disk(client, model: dict[str, str]) -> None:
    r = client.post("/campaigns", json=_llome(model=model))
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {"field": "model.path", "reason": "Extra inputs are not permitted"}
    ]


def test_an_unregistered_name_is_one_422_whatever_is_on_disk(client, model_dir: Path) -> None:
    bodies = []
    for name in ("tiny", "etc", "no-such-model"):  # "tiny" exists on disk under the models folder
        r = client.post("/campaigns", json=_llome(model=name))
        assert r.status_code == 422, r.text
        bodies.append(r.json()["detail"].replace(repr(name), "NAME"))
    assert len(set(bodies)) == 1 and "GET /models" in bodies[0]
    assert client.post("/campaigns", json=_llome(model="../etc")).status_code == 422


def test_from_campaign_continues_only_the_labs_own_checkpoint(app, client, session_factory) -> None:
    own = client.post("/campaigns", json=_llome()).json()["id"]
    other_key = make_key(session_factory)
    with TestClient(app, headers={"Authorization": f"Bearer {other_key}"}) as other:
        theirs = other.post("/campaigns", json=_llome()).json()["id"]
    with session_scope(session_factory) as s:
        for cid in (own, theirs):
            s.add(
                Round(campaign_id=cid, number=1, checkpoint_path=f"/data/campaigns/{cid}/round-1")
            )

    r = client.post("/campaigns", json=_llome(model={"from_campaign": own}))
    assert r.status_code == 201, r.text
    assert r.json()["model"]["from_campaign"] == own and r.json()["model"]["round"] == 1
    assert "/data/campaigns" not in r.text

    # Another lab's campaign (with a checkpoint), one without any and none at all read alike.
    no_checkpoint = client.post("/campaigns", json=_llome()).json()["id"]
    details = []
    for cid in (theirs, no_checkpoint, 2**31 - 1):
        r = client.post("/campaigns", json=_llome(model={"from_campaign": cid}))
        assert r.status_code == 422, r.text
        details.append(r.json()["detail"].replace(str(cid), "ID"))
    assert len(set(details)) == 1, details


def test_a_model_removed_after_creation_fails_the_campaign_in_words(
    client, publisher, runtime, session_factory, model_dir: Path
) -> None:
    name = _register(session_factory, model_dir)
    cid = client.post("/campaigns", json=_llome(model=name, oracle=TINY_EHRLICH)).json()["id"]
    with session_scope(session_factory) as s:
        assert model_registry.remove(s, name)
    drain(runtime, publisher)
    body = client.get(f"/campaigns/{cid}").json()
    assert body["status"] == "failed" and "no longer registered" in body["error"], body
    assert str(model_dir) not in json.dumps(body)


def test_loading_runs_no_code_from_the_model_directory(tmp_path: Path, model_dir: Path) -> None:
    from llome_core.modeling import ModelLoadError, load_model_dir

    evil = tmp_path / "evil"
    evil.mkdir()
    for f in model_dir.iterdir():
        if f.name != "config.json":
            (evil / f.name).write_bytes(f.read_bytes())
    marker = tmp_path / "ran"
    (evil / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (evil / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil",
                "auto_map": {
                    "AutoConfig": "modeling_evil.EvilConfig",
                    "AutoModelForCausalLM": "modeling_evil.EvilModel",
                },
            }
        )
    )
    with pytest.raises(ModelLoadError):
        load_model_dir(evil)
    assert not marker.exists()


def test_campaign_rows_keep_no_model_path(client, session_factory, model_dir: Path) -> None:
    name = _register(session_factory, model_dir)
    cid = client.post("/campaigns", json=_llome(model=name)).json()["id"]
    with session_factory() as s:
        spec = s.scalar(select(Campaign.spec).where(Campaign.id == cid))
    assert "path" not in spec["model"]
