"""sweep_trials: a sweep's planned trials, their jobs, rungs and objectives;
jobs.spec_digest: equal jobs, for a sweep's reuse rule

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sweep_trials",
        sa.Column("sweep_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rungs", JSON, nullable=False),
        sa.Column("objective", sa.Float(), nullable=True),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("reused_from", sa.Uuid(), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["jobs.id"],
            name=op.f("fk_sweep_trials_sweep_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_sweep_trials_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("sweep_id", "number", name=op.f("pk_sweep_trials")),
    )
    op.create_index(op.f("ix_sweep_trials_job_id"), "sweep_trials", ["job_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("spec_digest", sa.String(64), nullable=True))
    op.create_index("ix_jobs_tenant_id_spec_digest", "jobs", ["tenant_id", "spec_digest"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_id_spec_digest", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("spec_digest")
    op.drop_index(op.f("ix_sweep_trials_job_id"), table_name="sweep_trials")
    op.drop_table("sweep_trials")
