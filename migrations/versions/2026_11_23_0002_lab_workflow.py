"""Lab workflow (issue 8): upload preview/commit, candidate lab states, lineage, idempotency keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


OLD_CANDIDATE = "status IN ('proposed', 'measured')"
NEW_CANDIDATE = (
    "status IN ('proposed', 'released', 'measured', 'failed_expression', "
    "'assay_failed', 'withdrawn', 'expired')"
)


def upgrade() -> None:
    op.create_table(
        "idempotency_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=300), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column(
            "response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_key")),
        sa.UniqueConstraint("scope", "key", name=op.f("uq_idempotency_key_scope_key")),
    )
    # Uploads stored before this revision were stored in one step: they are committed.
    with op.batch_alter_table("upload") as b:
        b.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="committed")
        )
        b.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="measurements")
        )
        b.add_column(sa.Column("content", sa.LargeBinary(), nullable=True))
        b.add_column(
            sa.Column(
                "report",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        b.add_column(sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True))
        b.create_check_constraint("status_valid", "status IN ('previewed', 'committed')")
    with op.batch_alter_table("candidate") as b:
        b.drop_constraint(op.f("ck_candidate_status_valid"), type_="check")
        b.create_check_constraint("status_valid", NEW_CANDIDATE)
        b.add_column(sa.Column("objective", sa.String(length=32), nullable=True))
        b.add_column(sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True))
        b.add_column(sa.Column("mutations", sa.Text(), nullable=True))
        b.add_column(sa.Column("reference_mutations", sa.Text(), nullable=True))
        b.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(
            sa.Column("is_control", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        b.add_column(sa.Column("control_score", sa.Float(), nullable=True))


def downgrade() -> None:
    # Lab states the old schema has no word for: measured ones stay measured, the rest proposed.
    op.execute(
        "UPDATE candidate SET status = 'proposed' WHERE status NOT IN ('proposed', 'measured')"
    )
    with op.batch_alter_table("candidate") as b:
        b.drop_constraint(op.f("ck_candidate_status_valid"), type_="check")
        b.create_check_constraint("status_valid", OLD_CANDIDATE)
        for col in (
            "control_score",
            "is_control",
            "status_changed_at",
            "released_at",
            "reference_mutations",
            "mutations",
            "checkpoint_sha256",
            "objective",
        ):
            b.drop_column(col)
    op.execute("DELETE FROM upload WHERE status <> 'committed'")
    with op.batch_alter_table("upload") as b:
        b.drop_constraint(op.f("ck_upload_status_valid"), type_="check")
        for col in ("committed_at", "report", "content", "kind", "status"):
            b.drop_column(col)
    op.drop_table("idempotency_key")
