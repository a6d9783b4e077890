"""The control thread's watchdog: a stop the training loop does not honour (here: a main
thread stuck as if in native code) is carried out by the thread itself, which records the
outcome and ends the process. Each case runs in a child process, since the watchdog ends
the process it lives in."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from threading import Thread

import pytest

from models.db import transaction
from models.migrate import upgrade
from models.tables import Job, JobStatus, utcnow

STUCK_JOB = """
import sys, time, uuid
from models.limits import Limits
from worker.control import Control
from worker.jobstore import JobStore

url, job_id, options = sys.argv[1], uuid.UUID(sys.argv[2]), __import__("json").loads(sys.argv[3])
store = JobStore(url, job_id)
assert store.claim("test-host", Limits()) is not None
Control(store, 0.1, options.get("max_runtime"), memory_limit=options.get("memory_limit"),
        grace=options.get("grace", 1.0)).start()
print("stuck", flush=True)
time.sleep(600)  # the main thread never returns: a hung build or data load
"""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'control.db'}"
    upgrade(url)
    return url


def _queued_job(database_url: str) -> uuid.UUID:
    job_id = uuid.uuid4()
    with transaction(database_url) as session:
        session.add(Job(id=job_id, kind="train", spec={}, status=JobStatus.QUEUED))
    return job_id


def _run_stuck(database_url: str, job_id: uuid.UUID, **options: float) -> int:
    root = Path(__file__).parents[2]
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK_JOB, database_url, str(job_id), json.dumps(options)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Generous: the child imports the worker's modules first.
        return process.wait(timeout=120)
    finally:
        process.kill()


def _row(database_url: str, job_id: uuid.UUID) -> Job:
    with transaction(database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def test_a_timeout_the_loop_never_sees_ends_the_job_and_its_process(database_url: str) -> None:
    job_id = _queued_job(database_url)
    assert _run_stuck(database_url, job_id, max_runtime=0.3, grace=0.5) == -signal.SIGKILL
    job = _row(database_url, job_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, "timeout")
    assert "max_runtime" in (job.error_message or "")


def test_a_cancel_the_loop_never_sees_ends_the_job_cancelled(database_url: str) -> None:
    job_id = _queued_job(database_url)

    def cancel_once_running() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with transaction(database_url) as session:
                job = session.get(Job, job_id)
                if job is not None and job.status == JobStatus.RUNNING:
                    job.cancel_requested_at = utcnow()
                    return
            time.sleep(0.05)

    canceller = Thread(target=cancel_once_running)
    canceller.start()
    returncode = _run_stuck(database_url, job_id, grace=0.5)
    canceller.join()
    assert returncode == -signal.SIGKILL
    assert _row(database_url, job_id).status == JobStatus.CANCELLED


def test_past_the_memory_ceiling_the_job_fails_resource_limit_at_once(
    database_url: str,
) -> None:
    job_id = _queued_job(database_url)
    # One byte: any process is past it at the first tick; no grace is given.
    assert _run_stuck(database_url, job_id, memory_limit=1, grace=600) == -signal.SIGKILL
    job = _row(database_url, job_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, "resource_limit")
    assert "NETKILN_JOB_MEMORY_LIMIT_MB" in (job.error_message or "")
