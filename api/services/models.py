"""The model registry: the operator names local model directories (``llome models add NAME
DIR``); a campaign names a registered model, continues from a checkpoint of one of its own lab's
campaigns, or builds the tiny default. Nothing else is loaded, and paths never leave the server:
``GET /models`` lists names and sizes, and a name that is not usable gets the same 422 whatever
exists on disk.

Loading itself (``llome_core.modeling.load_model_dir``) never passes ``trust_remote_code`` and
reads ``.bin`` weights with transformers' ``weights_only`` loader, so a registered directory
cannot run code.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from api.errors import LlomeError
from api.models import Campaign, RegisteredModel, Round
from api.schemas.campaigns import MODEL_NAME, ModelParams


class UnknownModel(LlomeError):
    """A campaign's ``model`` that names nothing this lab may use."""

    status = 422
    title = "Unknown model"


class ModelGone(Exception):
    """A campaign's model was removed from the registry (or its checkpoint) after it was made."""


def directory_size(path: Path) -> int:
    """Bytes of every regular file under ``path`` (links not followed)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def add(session: Session, name: str, directory: str | Path) -> RegisteredModel:
    """Register ``directory`` (a Hugging Face causal-LM folder: config.json, weights, tokenizer)
    as ``name``; ValueError says what is wrong."""
    if not re.fullmatch(MODEL_NAME, name):
        raise ValueError(
            f"model name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 100, starting with a letter or digit)"
        )
    path = Path(directory).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a directory")
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{str(path)!r} has no config.json: expected a Hugging Face model "
            "directory (save_pretrained output)"
        )
    if not any(f.suffix in (".safetensors", ".bin") for f in path.iterdir()):
        raise ValueError(f"{str(path)!r} holds no weights (*.safetensors or *.bin)")
    if session.scalar(select(RegisteredModel.id).where(RegisteredModel.name == name)) is not None:
        raise ValueError(f"a model named {name!r} is already registered (remove it first)")
    row = RegisteredModel(name=name, path=str(path), size_bytes=directory_size(path))
    session.add(row)
    session.flush()
    return row


def list_(session: Session) -> list[RegisteredModel]:
    return list(session.scalars(select(RegisteredModel).order_by(RegisteredModel.name)))


def remove(session: Session, name: str) -> bool:
    """Unregister ``name`` (its files stay); False when no such model is registered."""
    result = session.execute(delete(RegisteredModel).where(RegisteredModel.name == name))
    return bool(cast("CursorResult[Any]", result).rowcount)


def _latest_checkpoint(session: Session, campaign_id: int, round_: int | None) -> Round | None:
    q = select(Round).where(Round.campaign_id == campaign_id, Round.checkpoint_path.is_not(None))
    if round_ is not None:
        q = q.where(Round.number == round_)
    return session.scalar(q.order_by(Round.number.desc()).limit(1))


def resolve_for_campaign(session: Session, model: ModelParams, lab_id: int) -> ModelParams:
    """Check that lab ``lab_id`` may use ``model``; a ``from_campaign`` gets its round fixed, so
    the campaign always starts from the same checkpoint. UnknownModel otherwise, with one
    message per kind of request, whatever exists."""
    if model.name is not None:
        if (
            session.scalar(select(RegisteredModel.id).where(RegisteredModel.name == model.name))
            is None
        ):
            raise UnknownModel(
                f"model {model.name!r} is not a registered model; GET /models lists "
                "the names this server offers (the operator adds them with "
                "`llome models add`)"
            )
    elif model.from_campaign is not None:
        owned = session.scalar(
            select(Campaign.id).where(Campaign.id == model.from_campaign, Campaign.lab_id == lab_id)
        )
        found = _latest_checkpoint(session, model.from_campaign, model.round) if owned else None
        if found is None:
            which = f"round {model.round}" if model.round is not None else "a trained round"
            raise UnknownModel(
                f"model.from_campaign: campaign {model.from_campaign} is not one of "
                f"this lab's campaigns with {which} to continue from"
            )
        model = model.model_copy(update={"round": found.number})
    return model


def path_for(session: Session, model: ModelParams) -> str | None:
    """Where the server keeps ``model`` (None: the tiny default); ModelGone once it is gone."""
    if model.name is not None:
        path = session.scalar(
            select(RegisteredModel.path).where(RegisteredModel.name == model.name)
        )
        if path is None:
            raise ModelGone(f"model {model.name!r} is no longer registered on this server")
        return path
    if model.from_campaign is not None:
        found = _latest_checkpoint(session, model.from_campaign, model.round)
        if found is None or found.checkpoint_path is None:
            raise ModelGone(
                f"campaign {model.from_campaign}'s round {model.round} checkpoint is gone"
            )
        return found.checkpoint_path
    return None


def models_main(argv: list[str]) -> int:
    """``llome models add NAME DIR | list | remove NAME`` on the configured database."""
    from api.config import get_settings
    from api.db import make_engine, make_sessionmaker, session_scope

    parser = argparse.ArgumentParser(
        prog="llome models", description="The models campaigns may name (GET /models)."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    add_p = sub.add_parser("add", help="register a local Hugging Face model directory as NAME")
    add_p.add_argument("name")
    add_p.add_argument("directory")
    sub.add_parser("list", help="list registered models (name, size, path)")
    rm = sub.add_parser("remove", help="unregister NAME (its files stay)")
    rm.add_argument("name")
    args = parser.parse_args(argv)

    engine = make_engine(get_settings())
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            if args.action == "add":
                try:
                    row = add(session, args.name, args.directory)
                except ValueError as exc:
                    print(f"llome models add: {exc}", file=sys.stderr)
                    return 1
                print(f"model {row.name!r} registered: {row.path} ({row.size_bytes} bytes)")
            elif args.action == "list":
                for m in list_(session):
                    print(f"{m.name}\t{m.size_bytes}\t{m.path}\t{m.created_at.isoformat()}")
            elif not remove(session, args.name):
                print(f"no model named {args.name!r} is registered", file=sys.stderr)
                return 1
            else:
                print(f"model {args.name!r} removed from the registry (its files stay)")
    finally:
        engine.dispose()
    return 0
