"""jobs: the listing's index covers its whole order (tenant, created_at, id)

``GET /v1/jobs`` orders by (created_at, id) within a tenant. With an index on
(tenant_id, created_at) only, both databases read every job of the tenant and sort them
to find a page; with the id in the index they walk it backwards and stop after the page.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_tenant_id_created_at_id", "jobs", ["tenant_id", "created_at", "id"])
    op.drop_index("ix_jobs_tenant_id_created_at", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_tenant_id_created_at", "jobs", ["tenant_id", "created_at"])
    op.drop_index("ix_jobs_tenant_id_created_at_id", table_name="jobs")
