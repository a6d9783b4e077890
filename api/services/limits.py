"""A submission checked against its tenant's limits: the job itself (model size, training
work) and the queue it joins (jobs waiting). Concurrent running jobs are the worker's to
enforce when it claims a job (``worker/jobstore.py``)."""

from __future__ import annotations

import math

from sqlalchemy.orm import Session

from api.errors import LimitExceeded
from models.kinds import kind_of
from models.spec import AnyJobSpec
from models.spec.data import BUILTIN_DATASETS, BUILTIN_SPLITS, DatasetSpec, SplitLimit
from models.summary import ModelSummary
from models.tables import Dataset, JobStatus
from models.tenancy import Caller, count_jobs
from uploads.dataset_files import DatasetInfo


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


def check_job_limits(
    session: Session, spec: AnyJobSpec, caller: Caller, summary: ModelSummary
) -> None:
    """Raise :class:`LimitExceeded` for the first limit the job itself breaks."""
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
        examples = training_examples(session, spec.dataset)
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


def training_examples(session: Session, dataset: DatasetSpec) -> int:
    """Examples in the training split after ``classes`` and ``limit``. Built-ins carry no
    per-class counts; their classes are balanced, so a share of them is estimated."""
    if dataset.id is not None:
        row = session.get(Dataset, dataset.id)
        if row is None:  # the dry run refused unknown ids already
            return 0
        train = DatasetInfo.model_validate(row.info).splits.get("train")
        total = train.n if train else 0
        counts = train.class_counts if train else None
        n_classes = len(counts) if counts else 0
    else:
        assert dataset.name is not None
        total, counts = BUILTIN_SPLITS[dataset.name][0], None
        n_classes = BUILTIN_DATASETS[dataset.name][1]
    if dataset.classes is not None:
        if counts is not None:
            total = sum(counts.get(str(label), 0) for label in dataset.classes)
        elif n_classes:
            total = math.ceil(total * len(set(dataset.classes)) / n_classes)
    cap = dataset.limit.train if isinstance(dataset.limit, SplitLimit) else dataset.limit
    return min(total, cap) if cap is not None else total

