"""The Celery app. Light on purpose: the API imports it to enqueue, so no TensorFlow here."""

from __future__ import annotations

from celery import Celery

from models.settings import JOB_QUEUE, Settings, get_settings

RUN_JOB_TASK = "netkiln.run_job"


def make_celery(settings: Settings) -> Celery:
    app = Celery("netkiln", include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.resolved_broker_url,
        broker_transport_options=settings.broker_transport_options,
        broker_connection_retry_on_startup=True,
        # The database is the source of truth; Celery results would be a second copy.
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=JOB_QUEUE,
        task_routes={RUN_JOB_TASK: {"queue": JOB_QUEUE}},
        # A job is acknowledged only once it has ended, so a dead worker's job is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


celery_app = make_celery(get_settings())
