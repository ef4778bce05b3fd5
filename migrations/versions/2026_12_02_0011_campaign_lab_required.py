"""Every campaign belongs to a lab: campaigns made before labs existed go to the lab ``default``
(the embedded one, created if missing), and ``campaign.lab_id`` becomes NOT NULL.

Revision ID: 0011_campaign_lab_required
Revises: 0010_replicates
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0011_campaign_lab_required"
down_revision: str | None = "0010_replicates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# api.services.labs.EMBEDDED_LAB, spelled out: a migration must not change when the app does.
DEFAULT_LAB = "default"

lab = sa.table(
    "lab",
    sa.column("id", sa.Integer()),
    sa.column("name", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
campaign = sa.table("campaign", sa.column("id", sa.Integer()), sa.column("lab_id", sa.Integer()))


def upgrade() -> None:
    bind = op.get_bind()
    orphans = bind.scalar(sa.select(sa.func.count()).where(campaign.c.lab_id.is_(None)))
    if orphans:
        lab_id = bind.scalar(sa.select(lab.c.id).where(lab.c.name == DEFAULT_LAB))
        if lab_id is None:
            bind.execute(sa.insert(lab).values(name=DEFAULT_LAB, created_at=datetime.now(UTC)))
            lab_id = bind.scalar(sa.select(lab.c.id).where(lab.c.name == DEFAULT_LAB))
        bind.execute(sa.update(campaign).where(campaign.c.lab_id.is_(None)).values(lab_id=lab_id))
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.alter_column("lab_id", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.alter_column("lab_id", existing_type=sa.Integer(), nullable=True)
