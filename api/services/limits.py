"""A submission checked against its tenant's limits: the job itself (model size, training
work) and the queue it joins (jobs waiting). Concurrent running jobs are the worker's to
enforce when it claims a job (``worker/jobstore.py``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import LimitExceeded
from models.kinds import Inspection, kind_of
from models.spec import AnyJobSpec
from models.tables import JobStatus
from models.tenancy import Caller, count_jobs


def check_queue_room(session: Session, caller: Caller) -> None:
    """429 if the tenant's ``max_queued_jobs`` are waiting already. Call it under
    :func:`models.tenancy.lock_tenant`, in the transaction that inserts the job: otherwise
    concurrent submits all count the same free slot."""
    limit = caller.limits.max_queued_jobs
    if limit is None:
        return
    queued = count_jobs(session, caller.tenant, JobStatus.QUEUED)
    if queued >= limit:
        raise LimitExceeded(
            "max_queued_jobs",
            limit,
            queued + 1,
            f"tenant {caller.tenant} has {queued} jobs waiting; retry once some started",
            status_code=429,
        )


def check_job_limits(spec: AnyJobSpec, caller: Caller, inspection: Inspection) -> None:
    """Raise :class:`LimitExceeded` for the first limit the job itself breaks, from what
    the dry run found: the model's counts and the data's sizes."""
    summary, sizes = inspection.summary, inspection.sizes
    limits = caller.limits
    max_params = limits.max_params
    if max_params is not None and summary.total > max_params:
        raise LimitExceeded(
            "max_params",
            max_params,
            summary.total,
            f"the model has {summary.total:,} parameters",
            status_code=422,
            loc=kind_of(spec).model_loc,
        )
    if limits.max_epoch_examples is not None:
        examples = sizes.train + sizes.validation  # the training split, before validation
        work = spec.total_epochs * examples
        if work > limits.max_epoch_examples:
            raise LimitExceeded(
                "max_epoch_examples",
                limits.max_epoch_examples,
                work,
                f"{spec.total_epochs} epochs × {examples:,} training examples",
                status_code=422,
                loc=kind_of(spec).epochs_loc,
            )
