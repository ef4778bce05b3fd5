"""A campaign as one portable ``.tar.gz``, and its import into any deployment.

Members: ``manifest.json`` (format version, llome version, the SHA-256 of every other member),
``campaign.json`` (the spec and where the campaign stands), one JSON-lines file per table of the
campaign (sequences, uploads, batches, candidates with lineage, measurements with provenance,
rounds with the optimizer's loop and RNG state, jobs, events) and, unless left out, the latest
checkpoint under ``checkpoint/``. Import gives every row a new id (foreign keys follow), makes
the importing key's lab the owner and drops what belongs to the source deployment (API keys,
webhook deliveries, idempotency records); a member whose checksum differs is a 422 naming it.
Because the rows and the loop state are the same, the next step proposes what the source would.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from api.config import Settings
from api.db import utcnow
from api.errors import LlomeError
from api.models import (
    Batch,
    Campaign,
    CampaignEvent,
    Candidate,
    Job,
    JobStatus,
    Measurement,
    Round,
    Sequence,
    Upload,
)
from api.schemas.campaigns import CampaignCreate
from api.services import campaigns as campaign_service
from api.services import notifications

FORMAT_VERSION = 1
LLOME_VERSION = "0.1.0"
MANIFEST = "manifest.json"
CAMPAIGN = "campaign.json"
CHECKPOINT_DIR = "checkpoint"


@dataclass(frozen=True)
class TableSpec:
    """One table of a campaign: its member name and which columns point at rows of other members
    (``remap``); ``drop``: columns naming things of the source deployment only."""

    member: str
    table: Table
    remap: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()


# In insertion order: every table a row points at comes before it.
TABLES = (
    TableSpec("sequences.jsonl", Sequence.__table__),  # type: ignore[arg-type]
    TableSpec("batches.jsonl", Batch.__table__),  # type: ignore[arg-type]
    TableSpec(
        "uploads.jsonl",
        Upload.__table__,  # type: ignore[arg-type]
        {"batch_id": "batches.jsonl"},
        drop=("api_key_id",),
    ),
    TableSpec(
        "candidates.jsonl",
        Candidate.__table__,  # type: ignore[arg-type]
        {"batch_id": "batches.jsonl", "sequence_id": "sequences.jsonl"},
    ),
    TableSpec(
        "measurements.jsonl",
        Measurement.__table__,  # type: ignore[arg-type]
        {
            "sequence_id": "sequences.jsonl",
            "candidate_id": "candidates.jsonl",
            "batch_id": "batches.jsonl",
            "upload_id": "uploads.jsonl",
            "supersedes_id": "measurements.jsonl",
        },
        drop=("api_key_id",),
    ),
    TableSpec("rounds.jsonl", Round.__table__),  # type: ignore[arg-type]
    TableSpec("jobs.jsonl", Job.__table__),  # type: ignore[arg-type]
    TableSpec("events.jsonl", CampaignEvent.__table__),  # type: ignore[arg-type]
)
CAMPAIGN_FIELDS = (
    "name",
    "status",
    "round",
    "message",
    "error",
    "stop_reason",
    "oracle_kind",
    "optimizer_kind",
    "alphabet",
    "length",
    "batch_size",
    "rounds",
    "seed",
    "spec",
    "created_at",
    "updated_at",
)


class InvalidBundle(LlomeError):
    status = 422
    title = "Invalid bundle"


# --- export --------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    return value


def _uncell(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        if "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
    return value


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(
        json.dumps({k: _cell(v) for k, v in r.items()}, sort_keys=True).encode() + b"\n"
        for r in rows
    )


def latest_checkpoint(session: Session, campaign: Campaign) -> Round | None:
    return session.scalar(
        select(Round)
        .where(Round.campaign_id == campaign.id, Round.checkpoint_path.is_not(None))
        .order_by(Round.number.desc())
        .limit(1)
    )


def export(session: Session, campaign: Campaign, *, weights: bool = True) -> bytes:
    """The bundle's bytes (gzip-compressed tar)."""
    members: dict[str, bytes] = {}
    members[CAMPAIGN] = json.dumps(
        {k: _cell(getattr(campaign, k)) for k in CAMPAIGN_FIELDS}, sort_keys=True, indent=1
    ).encode()
    for spec in TABLES:
        t = spec.table
        rows = session.execute(select(t).where(t.c.campaign_id == campaign.id).order_by(t.c.id))
        members[spec.member] = _jsonl([dict(r._mapping) for r in rows])
    rnd = latest_checkpoint(session, campaign) if weights else None
    if rnd is not None and rnd.checkpoint_path and Path(rnd.checkpoint_path).is_dir():
        root = Path(rnd.checkpoint_path)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            members[f"{CHECKPOINT_DIR}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    manifest = {
        "format_version": FORMAT_VERSION,
        "llome_version": LLOME_VERSION,
        "campaign_id": campaign.id,
        "created_at": utcnow().isoformat(),
        "checkpoint_round": rnd.number
        if rnd is not None and f"{CHECKPOINT_DIR}/" in "".join(members)
        else None,
        "members": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- import --------------------------------------------------------------------------------


def read(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every member, each checked against the manifest's SHA-256."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar:
                if not info.isfile():
                    raise InvalidBundle(f"member {info.name!r} is not a regular file")
                name = info.name
                if name.startswith("/") or ".." in Path(name).parts:
                    raise InvalidBundle(f"member {name!r} has a path outside the bundle")
                f = tar.extractfile(info)
                assert f is not None
                files[name] = f.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidBundle(f"the file is not a .tar.gz bundle: {exc}") from None
    if MANIFEST not in files:
        raise InvalidBundle("the bundle has no manifest.json")
    try:
        manifest = json.loads(files.pop(MANIFEST))
        expected: dict[str, str] = dict(manifest["members"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidBundle(f"manifest.json is not a bundle manifest: {exc}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidBundle(
            f"bundle format {manifest.get('format_version')!r}; this server reads "
            f"format {FORMAT_VERSION}"
        )
    for name in sorted(set(expected) | set(files)):
        if name not in files:
            raise InvalidBundle(
                f"member {name!r} is listed in the manifest but missing",
                errors=[{"field": name, "reason": "missing"}],
            )
        if name not in expected:
            raise InvalidBundle(
                f"member {name!r} is not listed in the manifest",
                errors=[{"field": name, "reason": "not in the manifest"}],
            )
        if hashlib.sha256(files[name]).hexdigest() != expected[name]:
            raise InvalidBundle(
                f"member {name!r}: its SHA-256 does not match the manifest",
                errors=[{"field": name, "reason": "checksum mismatch"}],
            )
    for name in (CAMPAIGN, *(t.member for t in TABLES)):
        if name not in files:
            raise InvalidBundle(f"the bundle has no {name}")
    return manifest, files


def import_(session: Session, data: bytes, *, lab_id: int, settings: Settings) -> Campaign:
    """A new campaign of ``lab_id`` with the bundle's content; its jobs that were waiting are
    sent again."""
    manifest, files = read(data)
    source = {k: _uncell(v) for k, v in json.loads(files[CAMPAIGN]).items()}
    try:
        spec = CampaignCreate.model_validate(source["spec"])
    except ValueError as exc:
        raise InvalidBundle(f"campaign.json: the spec is not valid here: {exc}") from None
    notifications.check_url(spec.notify_url, settings)
    campaign = Campaign(
        lab_id=lab_id,
        **{k: source[k] for k in CAMPAIGN_FIELDS},
        notify_secret=notifications.new_secret() if spec.notify_url else None,
    )
    session.add(campaign)
    session.flush()
    ids: dict[str, dict[int, int]] = {}
    for t in TABLES:
        rows = [
            {k: _uncell(v) for k, v in json.loads(line).items()}
            for line in files[t.member].splitlines()
            if line.strip()
        ]
        ids[t.member] = _insert(session, t, rows, campaign.id, ids)
    _restore_checkpoint(session, campaign, manifest, files, settings)
    # Work that was in flight at the source starts over here.
    session.execute(
        update(Job)
        .where(Job.campaign_id == campaign.id, Job.status == JobStatus.RUNNING)
        .values(status=JobStatus.QUEUED, lease_until=None)
    )
    session.add(
        CampaignEvent(
            campaign_id=campaign.id,
            kind="imported",
            to_status=campaign.status,
            detail={
                "source_campaign_id": manifest.get("campaign_id"),
                "llome_version": manifest.get("llome_version"),
            },
        )
    )
    campaign_service.advance(session, campaign, resend_queued=True)
    return campaign


def _insert(
    session: Session,
    t: TableSpec,
    rows: list[dict[str, Any]],
    campaign_id: int,
    ids: dict[str, dict[int, int]],
) -> dict[int, int]:
    """Insert ``rows`` with new ids; returns old id -> new id."""
    if not rows:
        return {}
    self_ref = [k for k, m in t.remap.items() if m == t.member]
    later: list[tuple[int, dict[str, int | None]]] = []
    prepared = []
    for row in rows:
        new = {k: v for k, v in row.items() if k != "id" and k in t.table.c and k not in t.drop}
        new["campaign_id"] = campaign_id
        for col, member in t.remap.items():
            if new.get(col) is None:
                continue
            if col in self_ref:  # points at a row of the same table: set once all have ids
                later.append((row["id"], {col: new.pop(col)}))
                continue
            try:
                new[col] = ids[member][new[col]]
            except KeyError:
                raise InvalidBundle(
                    f"{t.member}: row {row['id']} names {col} {new[col]}, which is not in {member}"
                ) from None
        prepared.append(new)
    stmt = insert(t.table).returning(t.table.c.id, sort_by_parameter_order=True)
    new_ids = list(session.scalars(stmt, prepared))
    mapping = {row["id"]: new_id for row, new_id in zip(rows, new_ids, strict=True)}
    for old_id, refs in later:
        values = {col: mapping[ref] for col, ref in refs.items() if ref is not None}
        session.execute(update(t.table).where(t.table.c.id == mapping[old_id]).values(**values))
    return mapping


def _restore_checkpoint(
    session: Session,
    campaign: Campaign,
    manifest: dict[str, Any],
    files: dict[str, bytes],
    settings: Settings,
) -> None:
    """Unpack ``checkpoint/`` into this server's data directory and point the rounds' rows
    and loop state at it (the source's paths mean nothing here)."""
    number = manifest.get("checkpoint_round")
    rounds = list(session.scalars(select(Round).where(Round.campaign_id == campaign.id)))
    prefix = f"{CHECKPOINT_DIR}/"
    dest = None
    if number is not None and any(n.startswith(prefix) for n in files):
        dest = (
            Path(settings.data_dir).expanduser().resolve()
            / "campaigns"
            / str(campaign.id)
            / f"round-{number:03d}-imported"
            / "checkpoint"
        )
        if dest.exists():
            shutil.rmtree(dest)
        for name, data in files.items():
            if name.startswith(prefix):
                path = dest / name[len(prefix) :]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    source_path = next((r.checkpoint_path for r in rounds if r.number == number), None)
    for r in rounds:
        if r.checkpoint_path is None:
            continue
        here = str(dest) if dest is not None and r.checkpoint_path == source_path else None
        r.checkpoint_path = here
        if r.state and r.state.get("checkpoint") is not None:
            r.state = {**r.state, "checkpoint": here}
