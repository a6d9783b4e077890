"""The parts of ``bench/api_load.py``, one module per thing it measures: ``loadgen`` (the
load generators), ``http_phases`` (status reads and submits), ``worker_rss`` (the worker's
memory over many jobs), ``profiling`` (py-spy on the API) and ``report`` (the tables);
``backends`` makes the fresh data directory, database and Redis db each run starts from."""
