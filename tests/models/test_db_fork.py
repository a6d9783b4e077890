"""A forked child (a Celery pool process started after the reconciler ran) must not use the
database connections its parent's pools hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Backend

#: In a fresh interpreter (no TensorFlow threads to fork): the parent uses the database, so
#: its pool keeps a connection; a child forks, optionally forgets, and uses the database too.
PROBE = """
import json, os, sys
from sqlalchemy import text
from models.db import forget_inherited_connections, transaction

url, forget = sys.argv[1], sys.argv[2] == "1"

def connection_id():
    # A PostgreSQL connection's server process; for SQLite, whether the temporary table
    # that only the parent's connection has is visible.
    with transaction(url) as session:
        if url.startswith("postgresql"):
            return session.execute(text("SELECT pg_backend_pid()")).scalar()
        session.execute(text("CREATE TEMP TABLE IF NOT EXISTS parent_only (x INTEGER)"))
        return session.execute(
            text("SELECT count(*) FROM sqlite_temp_master WHERE name = 'parent_only'")
        ).scalar()

parent_before = connection_id()
read, write = os.pipe()
child = os.fork()
if child == 0:
    if forget:
        forget_inherited_connections()
    if url.startswith("postgresql"):
        found = connection_id()
    else:
        with transaction(url) as session:
            found = session.execute(
                text("SELECT count(*) FROM sqlite_temp_master WHERE name = 'parent_only'")
            ).scalar()
    os.write(write, json.dumps(found).encode())
    os._exit(0)
os.waitpid(child, 0)
in_child = json.loads(os.read(read, 100))
parent_after = connection_id()  # the parent's connection still works, and is the same
print(json.dumps({"parent": parent_before, "child": in_child, "after": parent_after}))
"""


def probe(url: str, forget: bool) -> dict[str, int]:
    root = Path(__file__).parents[2]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, url, "1" if forget else "0"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ids: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    return ids


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork")
def test_a_forked_child_gets_connections_of_its_own(backend: Backend) -> None:
    url = backend.settings().resolved_database_url
    inherited = probe(url, forget=False)
    assert inherited["child"] == inherited["parent"]  # the hazard: one connection, two users
    fresh = probe(url, forget=True)
    assert fresh["child"] != fresh["parent"]
    assert fresh["after"] == fresh["parent"]
