"""Moving a sweep on when one of its trials ended here, and on every reconciler pass. No
Keras: the worker's main process (the reconciler) calls it too. The decisions are
``models.sweeps``'."""

from __future__ import annotations

import functools
import uuid

from celery import Celery

from core.queue import dispatch_queued, make_celery
from core.settings import Settings
from models.db import transaction
from models.sweeps.schedule import advance


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
    dispatch_queued(app, settings.resolved_database_url, scheduled)
