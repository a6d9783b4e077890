"""A tenant's limits: stored as JSON on its row (``tenants.limits``), with server-wide
defaults from settings. Plain pydantic, so settings can describe them without the tables."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """What one tenant may use. ``None`` means unlimited. Server-wide defaults come from
    ``NETKILN_LIMIT_*``; a tenant's own values (``netkiln tenants limits``) override them."""

    model_config = ConfigDict(extra="forbid")

    max_running_jobs: int | None = Field(
        default=None, ge=1, description="Jobs training at once; more wait in the queue."
    )
    max_queued_jobs: int | None = Field(
        default=None, ge=1, description="Jobs waiting; a submission past this is a 429."
    )
    max_params: int | None = Field(
        default=None, ge=1, description="Parameters per model, from the dry run's count."
    )
    max_epoch_examples: int | None = Field(
        default=None,
        ge=1,
        description="epochs × training examples per job (the work a job may ask for).",
    )
    max_upload_bytes: int | None = Field(default=None, ge=1, description="Per uploaded file.")

    def over(self, overrides: dict[str, Any]) -> Limits:
        """These limits with a tenant's own values on top."""
        return self.model_copy(
            update=Limits.model_validate(overrides).model_dump(exclude_unset=True)
        )
