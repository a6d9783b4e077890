"""Moving a sweep on when one of its trials ended here, and on every reconciler pass. No
Keras: the worker's main process (the reconciler) calls it too. The decisions are
``models.sweeps``'."""

from __future__ import annotations

import functools
import logging
import uuid

from celery import Celery

from core.queue import dispatch, make_celery
from core.settings import Settings
from models.db import transaction
from models.sweeps.schedule import advance

log = logging.getLogger(__name__)


@functools.cache
def _celery(settings_json: str) -> Celery:
    return make_celery(Settings.model_validate_json(settings_json))


def advance_sweep(settings: Settings, sweep_id: uuid.UUID, celery: Celery | None = None) -> None:
    """Bring the sweep up to date and send the trials it queued (after the commit)."""
    with transaction(settings.resolved_database_url) as session:
        scheduled = advance(session, sweep_id, settings.max_attempts, settings.default_limits)
    if not scheduled:
        return
    app = celery or _celery(settings.model_dump_json())
    for job in scheduled:
        try:
            dispatch(app, settings.resolved_database_url, job.job_id, job.queue)
        except Exception:  # queued rows without a message are the reconciler's to send
            log.exception("could not enqueue trial job %s; it stays queued", job.job_id)
