"""The queue contract: settings that reach the Celery app (pool process recycling, the
embedded broker's folders) and dispatch."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.queue import JOB_QUEUE, RUN_JOB_TASK, make_celery
from core.settings import Settings


def test_recycling_settings_reach_celery(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, worker_max_tasks_per_child=7, worker_max_memory_per_child_mb=3000
    )
    conf = make_celery(settings).conf
    assert conf.worker_max_tasks_per_child == 7
    assert conf.worker_max_memory_per_child == 3000 * 1024  # Celery counts KiB


def test_recycling_defaults_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = make_celery(Settings(data_dir=tmp_path)).conf
    assert conf.worker_max_tasks_per_child == 500
    assert conf.worker_max_memory_per_child is None
    # A replacement pool process imports TensorFlow before it reports up.
    assert conf.worker_proc_alive_timeout >= 60

    monkeypatch.setenv("NETKILN_WORKER_MAX_TASKS_PER_CHILD", "1")
    monkeypatch.setenv("NETKILN_WORKER_MAX_MEMORY_PER_CHILD_MB", "2048")
    conf = make_celery(Settings(data_dir=tmp_path)).conf
    assert conf.worker_max_tasks_per_child == 1
    assert conf.worker_max_memory_per_child == 2048 * 1024


def test_zero_turns_recycling_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETKILN_WORKER_MAX_TASKS_PER_CHILD", "0")
    monkeypatch.setenv("NETKILN_WORKER_MAX_MEMORY_PER_CHILD_MB", "0")
    settings = Settings(data_dir=tmp_path)
    assert settings.worker_max_tasks_per_child is None
    assert settings.worker_max_memory_per_child_mb is None
    conf = make_celery(settings).conf
    assert conf.worker_max_tasks_per_child is None
    assert conf.worker_max_memory_per_child is None
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Settings(data_dir=tmp_path, worker_max_tasks_per_child=-1)


DISPATCH_FROM_ELSEWHERE = """
import sys, uuid
from core.queue import JOB_QUEUE, dispatch, make_celery
from core.settings import Settings
from models.migrate import upgrade

settings = Settings(data_dir=sys.argv[1])
settings.ensure_dirs()
upgrade(settings.resolved_database_url)
# No job row: dispatch's bookkeeping update finds nothing; the message is still sent.
dispatch(
    make_celery(settings), settings.resolved_database_url, uuid.UUID(sys.argv[2]), JOB_QUEUE
)
"""


def test_embedded_broker_keeps_every_folder_under_the_data_dir(tmp_path: Path) -> None:
    """kombu's filesystem transport writes its exchange tables to ./control unless told
    otherwise, which littered whatever folder a process started in. In a fresh process:
    kombu declares a queue once per process, and only then writes the tables."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    data_dir = tmp_path / "data"
    job_id = uuid.uuid4()
    root = Path(__file__).parents[2]
    env = {key: value for key, value in os.environ.items() if not key.startswith("NETKILN_")}
    env["PYTHONPATH"] = str(root)
    subprocess.run(
        [sys.executable, "-c", DISPATCH_FROM_ELSEWHERE, str(data_dir), str(job_id)],
        cwd=elsewhere,
        env=env,
        check=True,
        timeout=120,
    )

    assert os.listdir(elsewhere) == []
    settings = Settings(data_dir=data_dir)
    messages = list(settings.broker_dir.glob(f"*.{JOB_QUEUE}.msg"))
    assert len(messages) == 1
    assert str(job_id) in messages[0].read_text()
    assert RUN_JOB_TASK in messages[0].read_text()
    assert list((data_dir / "broker-control").glob("*.exchange"))
