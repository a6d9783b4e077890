"""The ``netkiln`` command: run the service, its parts, and its migrations."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from core.settings import Settings, get_settings
from netkiln.admin_cli import ensure_local_key
from netkiln.admin_cli import register as register_admin_commands
from netkiln.client_cli import register as register_client_commands
from netkiln.datasets_cli import datasets_app
from netkiln.logs import configure_logging, redact

app = typer.Typer(help="netkiln: train Keras networks as jobs over REST.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(datasets_app, name="datasets")
store_app = typer.Typer(help="The artifact store (NETKILN_ARTIFACTS_URL).", no_args_is_help=True)
app.add_typer(store_app, name="store")
register_client_commands(app)
register_admin_commands(app)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Artifacts, embedded DB and broker. [env: NETKILN_DATA_DIR, default ./.netkiln]",
    ),
]
HostOption = Annotated[str, typer.Option("--host", envvar="NETKILN_HOST")]
PortOption = Annotated[int, typer.Option("--port", envvar="NETKILN_PORT")]
ApiWorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        envvar="NETKILN_API_WORKERS",
        help="API processes (uvicorn workers) sharing the port. The API keeps no state "
        "between requests but a short per-process read cache, so any number works, also "
        "on the embedded SQLite database (WAL: readers run alongside the one writer).",
    ),
]
ConcurrencyOption = Annotated[
    int,
    typer.Option(
        "--concurrency",
        help="Jobs a CPU worker trains at once (a GPU worker: one per GPU group).",
    ),
]


def _settings(data_dir: Path | None) -> Settings:
    """Options win over the environment, and are exported so child processes agree. A
    setting that does not validate ends the command with its name and the reason."""
    if data_dir is not None:
        os.environ["NETKILN_DATA_DIR"] = str(data_dir.expanduser().resolve())
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "NETKILN_" + "_".join(str(part) for part in error["loc"]).upper()
        _refuse(f"{name}: {error['msg']}")
    settings.ensure_dirs()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _require_schema(settings: Settings, *, migrate: bool) -> None:
    """Refuse to run on a database this code cannot use, in one line and exit status 1,
    where requests would otherwise fail one by one. With ``migrate`` (``up``, and the API
    and worker on the embedded database, which no one else migrates) a database behind
    this code is upgraded first; one ahead of it never is."""
    from sqlalchemy.exc import SQLAlchemyError

    from models.migrate import schema_state, upgrade

    url = settings.resolved_database_url
    try:
        # Processes started together on a fresh data dir migrate it one at a time.
        with _migration_lock(settings.data_dir) if migrate else nullcontext():
            state = schema_state(url)
            if migrate and state.behind:
                upgrade(url)
                state = schema_state(url)
    except SQLAlchemyError as exc:
        reason = redact(str(exc).splitlines()[0])
        _refuse(f"cannot read the database's schema revision ({redact(url)}): {reason}")
    if state.problem is not None:
        _refuse(f"{state.problem} ({redact(url)})")


@contextmanager
def _migration_lock(data_dir: Path) -> Iterator[None]:
    with (data_dir / "migrate.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _refuse(message: str) -> NoReturn:
    typer.echo(f"netkiln: {message}", err=True)
    raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOption = None, revision: str = "head") -> None:
    """Apply Alembic migrations up to REVISION."""
    from models.migrate import upgrade

    settings = _settings(data_dir)
    upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at {revision}: {redact(settings.resolved_database_url)}")


@store_app.command("check")
def store_check(data_dir: DataDirOption = None) -> None:
    """Make what the artifact store needs (its folder, its bucket), then write, read and
    delete a probe object: run it once when deploying, and on each new worker host."""
    from core.storage import open_store

    settings = _settings(data_dir)
    try:
        open_store(settings).check()
    except (OSError, ValueError) as exc:
        _refuse(f"artifact store {settings.resolved_artifacts_url}: {exc}")
    typer.echo(f"artifact store ok: {settings.resolved_artifacts_url}")


@app.command()
def api(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    data_dir: DataDirOption = None,
    workers: ApiWorkersOption = 1,
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    settings = _settings(data_dir)
    _require_schema(settings, migrate=settings.database_url is None)
    if workers > 1:
        # Each worker is a fresh interpreter (spawned), so it gets an import string and
        # builds its app, and its logging, from the NETKILN_* that _settings exported.
        uvicorn.run(
            "netkiln.asgi:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=None,
            log_level=None,
        )
        return

    from api.app import create_app

    # log_config=None: uvicorn's loggers keep the handler and format set up by _settings.
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, log_level=None)


GpusOption = Annotated[
    str | None,
    typer.Option(
        "--gpus",
        help="auto (detected with nvidia-smi), none, or ids as CUDA_VISIBLE_DEVICES takes "
        "them (0,1): one pool process per GPU group, pinned to it. Default "
        "NETKILN_WORKER_GPUS, or auto.",
    ),
]
GpusPerJobOption = Annotated[
    int | None,
    typer.Option("--gpus-per-job", min=1, help="GPUs per pool process (the jobs' resources.gpus)."),
]
GpuTypeOption = Annotated[
    str | None,
    typer.Option("--gpu-type", help="The GPU type to advertise (default from nvidia-smi)."),
]
QueuesOption = Annotated[
    str | None,
    typer.Option(
        "--queues", help="Comma-separated queues to consume instead of those the devices imply."
    ),
]


@app.command()
def worker(
    data_dir: DataDirOption = None,
    concurrency: ConcurrencyOption = 1,
    gpus: GpusOption = None,
    gpus_per_job: GpusPerJobOption = None,
    gpu_type: GpuTypeOption = None,
    queues: QueuesOption = None,
) -> None:
    """Run a training worker (Celery): on the CPU, or one pool process per GPU (group)."""
    from worker.devices import worker_devices

    # Exported, so the pool processes read the same devices when they pin themselves.
    for name, value in (
        ("NETKILN_WORKER_GPUS", gpus),
        ("NETKILN_WORKER_GPUS_PER_JOB", gpus_per_job),
        ("NETKILN_WORKER_GPU_TYPE", gpu_type),
        ("NETKILN_WORKER_QUEUES", queues),
    ):
        if value is not None:
            os.environ[name] = str(value)
    settings = _settings(data_dir)
    _require_schema(settings, migrate=settings.database_url is None)
    try:
        devices = worker_devices(settings)
    except ValueError as exc:
        _refuse(str(exc))
    # What was found is exported as given, so that the registration and every pool
    # process (each works out its GPUs again) do not run nvidia-smi once more.
    os.environ["NETKILN_WORKER_GPUS"] = ",".join(gpu.id for gpu in devices.gpus) or "none"
    if devices.gpu_type:
        os.environ["NETKILN_WORKER_GPU_TYPE"] = devices.gpu_type
    get_settings.cache_clear()  # the pool processes, forked from here, read these
    if devices.gpus:
        groups = " ".join(",".join(gpu.id for gpu in group) for group in devices.groups)
        typer.echo(f"netkiln worker: GPUs {groups} (one pool process each)")
    typer.echo(f"netkiln worker: queues {', '.join(devices.queues)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Read by Keras when the pool processes import it (the main process never does).
    os.environ["KERAS_BACKEND"] = settings.keras_backend
    from celery.signals import setup_logging

    from worker.tasks import celery_app

    # Celery sets up its own logging only when no receiver of this signal claims the job.
    setup_logging.connect(_logging_already_configured, weak=False)
    celery_app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level.upper()}",
            "--pool=prefork",
            f"--concurrency={devices.concurrency(concurrency)}",
            "--queues",
            ",".join(devices.queues),
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def up(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    data_dir: DataDirOption = None,
    concurrency: ConcurrencyOption = 1,
) -> None:
    """Migrate, then run the API and one worker together (embedded default: no servers)."""
    settings = _settings(data_dir)
    _require_schema(settings, migrate=True)
    database = redact(settings.resolved_database_url)
    broker = redact(settings.resolved_broker_url)
    typer.echo(f"netkiln: data in {settings.data_dir}, database {database}, broker {broker}")
    if settings.auth == "keys":
        key, new = ensure_local_key(settings)
        key_file = settings.data_dir / "api-key"
        if new:
            typer.echo(f"netkiln: created API key {key} (tenant local), saved in {key_file}")
        else:
            typer.echo(f"netkiln: API key in {key_file}")
        typer.echo("netkiln: send it as 'Authorization: Bearer <key>'; the CLI reads the file")
    else:
        typer.echo("netkiln: NETKILN_AUTH=none: single tenant, no API keys")
    worker_command = [sys.executable, "-m", "netkiln", "worker", f"--concurrency={concurrency}"]
    supervisor = _Supervisor(worker_command)
    supervisor.start()
    try:
        api(host=host, port=port, data_dir=None)
    finally:
        supervisor.stop()


class _Supervisor:
    """Keeps the worker process alive next to the API; restarts it if it dies."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self.process = self._spawn()
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, preexec_fn=_die_with_parent)

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            code = self.process.poll() if self.process is not None else None
            # 0 or SIGTERM: the worker was asked to stop (e.g. with the whole process group
            # on shutdown), so restarting it would orphan it; anything else is a crash.
            if code is not None and code not in (0, -signal.SIGTERM, -signal.SIGINT):
                typer.echo(f"netkiln: worker exited ({code}); restarting", err=True)
                self.process = self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.process.poll() is None:
            self.process.kill()


def _logging_already_configured(**_: Any) -> None:
    """Done by ``_settings`` before the worker starts; pool processes inherit it."""


def _die_with_parent() -> None:
    """Linux: SIGTERM the worker when ``netkiln up`` dies, however it dies (uvicorn
    re-raises SIGTERM/SIGINT after shutdown, which skips ``finally`` blocks)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
