"""The training side: Celery app, spec → Keras builder, fit loop, artifacts.

Importing this package (or ``worker.app``) does not import TensorFlow; the API uses
``worker.app`` to enqueue tasks by name.
"""
