"""ORM tables. The database is the single source of truth: Celery messages carry only ids.

Unique keys make every retry safe: one job per (campaign, round, step), one batch per
(campaign, round), one current measurement per candidate, one upload per target and file
hash.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, UTCDateTime, utcnow

JSONType = JSON().with_variant(JSONB(), "postgresql")


class CampaignStatus(StrEnum):
    CREATED = "created"
    SEEDING = "seeding"
    TRAINING = "training"
    GENERATING = "generating"
    AWAITING_LABELS = "awaiting_labels"
    LABELLING = "labelling"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_CAMPAIGN = frozenset(
    {CampaignStatus.COMPLETED, CampaignStatus.FAILED, CampaignStatus.CANCELLED}
)


class OracleKind(StrEnum):
    EHRLICH = "ehrlich"
    WETLAB = "wetlab"


class OptimizerKind(StrEnum):
    LLOME = "llome"
    GA = "ga"


class BatchStatus(StrEnum):
    AWAITING_LABELS = "awaiting_labels"
    LABELLED = "labelled"


class CandidateStatus(StrEnum):
    """A candidate as a molecule in the lab; see ``CANDIDATE_MOVES``."""

    PROPOSED = "proposed"
    RELEASED = "released"  # its batch was downloaded for the lab or marked ordered
    MEASURED = "measured"
    FAILED_EXPRESSION = "failed_expression"  # informative: an infeasible label
    ASSAY_FAILED = "assay_failed"  # uninformative: may be released and measured again
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"  # not measured within the campaign's label_ttl


# The allowed moves; a status missing as a key is terminal and never changes again.
CANDIDATE_MOVES: dict[str, frozenset[str]] = {
    CandidateStatus.PROPOSED: frozenset(
        {
            CandidateStatus.RELEASED,
            CandidateStatus.MEASURED,
            CandidateStatus.FAILED_EXPRESSION,
            CandidateStatus.ASSAY_FAILED,
            CandidateStatus.WITHDRAWN,
            CandidateStatus.EXPIRED,
        }
    ),
    CandidateStatus.RELEASED: frozenset(
        {
            CandidateStatus.MEASURED,
            CandidateStatus.FAILED_EXPRESSION,
            CandidateStatus.ASSAY_FAILED,
            CandidateStatus.WITHDRAWN,
            CandidateStatus.EXPIRED,
        }
    ),
    CandidateStatus.ASSAY_FAILED: frozenset(
        {
            CandidateStatus.RELEASED,
            CandidateStatus.MEASURED,
            CandidateStatus.FAILED_EXPRESSION,
            CandidateStatus.WITHDRAWN,
            CandidateStatus.EXPIRED,
        }
    ),
}
# Still in the lab: the batch waits for these.
PENDING_CANDIDATE = frozenset(CANDIDATE_MOVES)


class UploadStatus(StrEnum):
    PREVIEWED = "previewed"  # parsed and validated; nothing but the upload itself stored
    COMMITTED = "committed"


class JobStep(StrEnum):
    SEED = "seed"
    TRAIN = "train"
    GENERATE = "generate"
    LABEL = "label"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MeasurementSource(StrEnum):
    SEED_GA = "seed_ga"  # the GA's seed data of an Ehrlich campaign
    ORACLE = "oracle"  # the Ehrlich function labelling a batch
    UPLOAD = "upload"  # a lab's CSV


def _check_in(column: str, enum: type[StrEnum]) -> CheckConstraint:
    values = ", ".join(f"'{v.value}'" for v in enum)
    return CheckConstraint(f"{column} IN ({values})", name=f"{column}_valid")


class Lab(Base):
    """A lab: it owns campaigns and API keys; one lab never sees another's campaigns."""

    __tablename__ = "lab"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key of a lab. Only the SHA-256 of the key is stored (keys are 256-bit random, so a
    slow hash adds nothing); ``prefix`` lets people tell their keys apart."""

    __tablename__ = "api_key"
    __table_args__ = (UniqueConstraint("key_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("lab.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DashboardSession(Base):
    """A browser session of the dashboard (``/ui``). The browser holds a random id; only its
    SHA-256 is stored. In the database, not in a web process, so any process answers any page."""

    __tablename__ = "ui_session"
    __table_args__ = (UniqueConstraint("sid_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sid_hash: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    # None until the user logs in; a key's sessions go with the key.
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_key.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Campaign(Base):
    __tablename__ = "campaign"
    __table_args__ = (
        _check_in("status", CampaignStatus),
        _check_in("oracle_kind", OracleKind),
        _check_in("optimizer_kind", OptimizerKind),
        CheckConstraint("batch_size > 0", name="batch_size_positive"),
        CheckConstraint("rounds > 0", name="rounds_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("lab.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default=CampaignStatus.CREATED)
    oracle_kind: Mapped[str] = mapped_column(String(16))
    optimizer_kind: Mapped[str] = mapped_column(String(16))
    alphabet: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    rounds: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    # The validated request (oracle, optimizer, seeding, model): the step code rebuilds the
    # llome_core configs from it, so a campaign runs the same after a restart or an upgrade.
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    round: Mapped[int] = mapped_column(Integer, default=0)  # 0 while seeding
    message: Mapped[str | None] = mapped_column(Text)  # what the campaign waits for, in words
    error: Mapped[str | None] = mapped_column(Text)
    stop_reason: Mapped[str | None] = mapped_column(Text)  # the stop rule that completed it
    # The HMAC key that signs its webhooks (the URL and events are in the spec).
    notify_secret: Mapped[str | None] = mapped_column(String(64))
    # A synthetic twin names the wet-lab campaign it mirrors.
    twin_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaign.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Round(Base):
    """One outer round; ``state`` is the optimizer's ``state_dict()`` after its latest step."""

    __tablename__ = "round"
    __table_args__ = (UniqueConstraint("campaign_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    train_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    proposal_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Sequence(Base):
    """A distinct sequence of a campaign, in the campaign's alphabet."""

    __tablename__ = "sequence"
    # (campaign_id, id): the target of labels' foreign key, so a label's campaign is its sequence's.
    __table_args__ = (
        UniqueConstraint("campaign_id", "text"),
        UniqueConstraint("campaign_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Upload(Base):
    """One uploaded file; its SHA-256 recognises a second upload of the same bytes to the same
    target (the same file sent as seed data and then as a batch's results is two uploads)."""

    __tablename__ = "upload"
    __table_args__ = (
        UniqueConstraint("campaign_id", "target", "sha256"),
        _check_in("status", UploadStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    # What the file is for: "seed" (measurements) or "batch <id>" (its results); see upload_target.
    target: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(Text)
    rows: Mapped[int] = mapped_column(Integer)
    new_measurements: Mapped[int] = mapped_column(Integer)
    # Previewed, then committed; the bytes are kept so the commit validates again
    # against the rows stored by then; ``report`` is the latest validation (and the rows skipped).
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.COMMITTED)
    kind: Mapped[str] = mapped_column(String(16), default="measurements")  # or "results"
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    committed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Provenance: the key that uploaded it (null: before keys existed, or a revoked key's row).
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_key.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Batch(Base):
    """The candidates one round sends to the oracle."""

    __tablename__ = "batch"
    __table_args__ = (
        UniqueConstraint("campaign_id", "round"),
        _check_in("status", BatchStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default=BatchStatus.AWAITING_LABELS)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    labelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Candidate(Base):
    """One proposed sequence with its lineage, stored when it is made."""

    __tablename__ = "candidate"
    __table_args__ = (
        UniqueConstraint("batch_id", "sequence_id"),
        UniqueConstraint("batch_id", "position"),
        _check_in("status", CandidateStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequence.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default=CandidateStatus.PROPOSED)
    parent: Mapped[str | None] = mapped_column(Text)
    trajectory_seed: Mapped[str | None] = mapped_column(Text)
    refinement_step: Mapped[int | None] = mapped_column(Integer)
    temperature: Mapped[float | None] = mapped_column(Float)
    log_likelihood: Mapped[float | None] = mapped_column(Float)
    # Lineage, stored when the candidate is made and never recomputed.
    objective: Mapped[str | None] = mapped_column(String(32))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    mutations: Mapped[str | None] = mapped_column(Text)  # vs parent, ProteinGym notation
    reference_mutations: Mapped[str | None] = mapped_column(Text)  # vs the campaign's reference
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A control of the optimizer config (e.g. the parent, the best so far) added to the batch for
    # plate normalisation: not counted against the budget, its result is kept here, not as a label.
    is_control: Mapped[bool] = mapped_column(Boolean, default=False)
    control_score: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """The first response to a creating POST with an ``Idempotency-Key`` header, replayed to a
    retry with the same key and body."""

    __tablename__ = "idempotency_key"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(300))  # method and path
    key: Mapped[str] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Measurement(Base):
    """A label: ``value`` is null when the sequence is infeasible (``feasible`` false)."""

    __tablename__ = "measurement"
    __table_args__ = (
        # Append-only: a correction is a new row naming the row it corrects (supersedes_id, each
        # row corrected at most once); the corrected row gets superseded_at. At most one current
        # (not superseded) label per candidate.
        UniqueConstraint("supersedes_id"),
        # A sequence may have several current labels: replicates (its label is their mean).
        Index(None, "sequence_id"),
        Index(
            "uq_measurement_current_candidate",
            "candidate_id",
            unique=True,
            postgresql_where=text("superseded_at IS NULL"),
            sqlite_where=text("superseded_at IS NULL"),
        ),
        _check_in("source", MeasurementSource),
        CheckConstraint("feasible OR value IS NULL OR value = 0", name="infeasible_scores_nothing"),
        Index(None, "campaign_id", "id"),
        # One check per row for both: the label's sequence exists and belongs to its campaign
        # (a 100k-row upload pays each per-row foreign-key check about half a second).
        ForeignKeyConstraint(
            ["campaign_id", "sequence_id"],
            ["sequence.campaign_id", "sequence.id"],
            ondelete="CASCADE",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(Integer)  # with sequence_id: the foreign key above
    sequence_id: Mapped[int] = mapped_column(Integer)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    upload_id: Mapped[int | None] = mapped_column(ForeignKey("upload.id", ondelete="CASCADE"))
    row: Mapped[int | None] = mapped_column(Integer)  # the row of the uploaded file
    value: Mapped[float | None] = mapped_column(Float)
    feasible: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16))
    # The round whose optimizer step first saw this label (null: not yet fed to the optimizer).
    observed_round: Mapped[int | None] = mapped_column(Integer)
    # The label this row corrects (null: a first label).
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("measurement.id"))
    # When a correction replaced this label (null: the current label). The one column of a
    # measurement ever written after its insert, and only once, from null.
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Provenance besides upload_id/row/created_at: the key that wrote it (null: a worker, the
    # time before keys, or a label from an upload, whose key is the upload's), and for a
    # correction the reason given.
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_key.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """One step of a campaign run by a worker; claimed with a lease, fenced by ``attempt``."""

    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("campaign_id", "round", "step"),
        _check_in("step", JobStep),
        _check_in("status", JobStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    phase: Mapped[str | None] = mapped_column(String(64))
    progress_step: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    phase_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the successful attempt cost: wall, process CPU, and GPU-held seconds.
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    cpu_seconds: Mapped[float | None] = mapped_column(Float)
    gpu_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CampaignEvent(Base):
    """Every state change of a campaign, in order."""

    __tablename__ = "campaign_event"
    __table_args__ = (Index(None, "campaign_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotificationStatus(StrEnum):
    PENDING = "pending"  # not yet delivered; another attempt is due at next_attempt_at
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed, or the host is no longer allowed


class Notification(Base):
    """One webhook delivery (an event of a campaign); ``key`` makes each event happen once."""

    __tablename__ = "notification"
    __table_args__ = (
        UniqueConstraint("campaign_id", "key"),
        Index(None, "campaign_id", "id"),
        _check_in("status", NotificationStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default=NotificationStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RegisteredModel(Base):
    """A model directory the operator registered (``llome models add NAME DIR``). Campaigns name
    it; the path stays on the server and is never shown to a lab."""

    __tablename__ = "model_registry"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
