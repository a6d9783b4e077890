"""jobs.queue: the queue a job waits in (by its resources); jobs.epoch_seconds_estimate

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        # Every job before this revision trained on a CPU worker's queue.
        batch.add_column(
            sa.Column("queue", sa.String(100), nullable=False, server_default="netkiln.jobs")
        )
        batch.add_column(sa.Column("epoch_seconds_estimate", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("epoch_seconds_estimate")
        batch.drop_column("queue")
