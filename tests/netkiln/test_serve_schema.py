"""``netkiln api`` and ``netkiln worker`` start only on a database at this code's schema:
one they may not migrate (``NETKILN_DATABASE_URL`` set) and that is behind, or one that a
newer netkiln migrated, is refused in one line; the embedded default is migrated on start,
as ``netkiln up`` does. Real processes; the deadlines only bound a hang."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.migrate import schema_state
from netkiln.harness import free_port, process_env, spawn, wait_ready
from tests.models.test_migrate import (
    FUTURE_REVISION,
    move_ahead,
    unmigrated_url_fixture,  # noqa: F401 - the fixture ``unmigrated_url``
)

ROOT = Path(__file__).parents[2]
PATIENCE = 120.0


def netkiln(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netkiln", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("netkiln: ")
    for text in expected:
        assert text in line


@pytest.mark.parametrize("command", ["api", "worker"])
class TestRefused:
    def test_a_database_never_migrated(
        self, command: str, unmigrated_url: str, tmp_path: Path
    ) -> None:
        env = process_env(tmp_path, {"NETKILN_DATABASE_URL": unmigrated_url})

        result = netkiln([command, "--data-dir", str(tmp_path / "data")], env)

        assert_refused(result, "never migrated", "run 'netkiln db upgrade'")
        assert schema_state(unmigrated_url).current is None  # left for the operator

    def test_a_database_a_newer_netkiln_migrated(self, command: str, tmp_path: Path) -> None:
        """Also the embedded default, which is never migrated down."""
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        database_url = f"sqlite:///{data_dir / 'netkiln.db'}"
        move_ahead(database_url)

        result = netkiln([command, "--data-dir", str(data_dir)], process_env(tmp_path, {}))

        assert_refused(result, FUTURE_REVISION, "newer netkiln")
        assert schema_state(database_url).current == FUTURE_REVISION

    def test_an_unreachable_database(self, command: str, tmp_path: Path) -> None:
        missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}"
        env = process_env(tmp_path, {"NETKILN_DATABASE_URL": missing})

        result = netkiln([command, "--data-dir", str(tmp_path / "data")], env)

        assert_refused(result, "cannot read the database's schema revision", missing)


class TestEmbeddedDefaultMigratesOnStart:
    def test_api(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        env = process_env(tmp_path, {"NETKILN_DATA_DIR": str(data_dir)})
        port = free_port()
        api = spawn(["api", "--port", str(port)], env, tmp_path / "api.log")
        try:
            wait_ready(f"http://127.0.0.1:{port}", api, PATIENCE)
        finally:
            api.stop()

        assert schema_state(f"sqlite:///{data_dir / 'netkiln.db'}").at_head

    def test_worker(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        database_url = f"sqlite:///{data_dir / 'netkiln.db'}"
        env = process_env(tmp_path, {"NETKILN_DATA_DIR": str(data_dir)})
        worker = spawn(["worker"], env, tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + PATIENCE
            while not (data_dir / "netkiln.db").exists() or not schema_state(database_url).at_head:
                assert worker.poll() is None, worker.tail()
                assert time.monotonic() < deadline, worker.tail()
                time.sleep(0.2)
        finally:
            worker.stop()
