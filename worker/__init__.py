"""The training side: Celery tasks, spec → Keras builder, fit loop, artifacts.

Importing this package does not import TensorFlow: the Celery parent process imports
``worker.tasks``, and only its pool processes import the training modules.
"""
