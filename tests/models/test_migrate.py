"""Schema revisions as the API and the worker see them before they start: never migrated,
behind, at head, and ahead of this code (migrated by a newer netkiln), on SQLite and on
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from models.db import transaction
from models.migrate import schema_state, upgrade
from netkiln.harness import create_database, drop_database
from tests.conftest import POSTGRES_ADMIN_URL, _unavailable

#: A revision no netkiln has written yet.
FUTURE_REVISION = "9999_from_a_newer_netkiln"


@pytest.fixture(name="unmigrated_url", params=["sqlite", "postgresql"])
def unmigrated_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no one migrated: an empty SQLite file, or a throw-away PostgreSQL
    database (the session's shared one is migrated by other tests)."""
    if request.param == "sqlite":
        path = tmp_path / "elsewhere" / "empty.db"
        path.parent.mkdir()
        path.touch()
        yield f"sqlite:///{path}"
        return
    try:
        url = create_database(POSTGRES_ADMIN_URL, "netkiln_unmigrated")
    except Exception as exc:
        _unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}: {type(exc).__name__}: {exc}")
    yield url
    drop_database(POSTGRES_ADMIN_URL, url)


def move_ahead(database_url: str) -> None:
    """Migrate, then stamp a revision this code does not know, as a newer netkiln would."""
    upgrade(database_url)
    with transaction(database_url) as session:
        session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE_REVISION})


class TestSchemaState:
    def test_never_migrated(self, unmigrated_url: str) -> None:
        state = schema_state(unmigrated_url)

        assert state.current is None
        assert state.behind
        assert not state.at_head
        assert not state.ahead
        assert state.problem is not None
        assert "never migrated" in state.problem
        assert "netkiln db upgrade" in state.problem

    def test_behind_head(self, unmigrated_url: str) -> None:
        head = schema_state(unmigrated_url).head
        upgrade(unmigrated_url, "0001")

        state = schema_state(unmigrated_url)

        assert (state.current, state.head) == ("0001", head)
        assert state.behind
        assert state.problem is not None
        assert f"revision 0001, behind {head}" in state.problem
        assert "netkiln db upgrade" in state.problem

    def test_at_head(self, unmigrated_url: str) -> None:
        upgrade(unmigrated_url)

        state = schema_state(unmigrated_url)

        assert state.at_head
        assert state.current == state.head
        assert not state.behind
        assert not state.ahead
        assert state.problem is None

    def test_ahead_of_this_code(self, unmigrated_url: str) -> None:
        move_ahead(unmigrated_url)

        state = schema_state(unmigrated_url)

        assert state.current == FUTURE_REVISION
        assert state.ahead
        assert not state.behind  # so nothing tries to "upgrade" it down
        assert state.problem is not None
        assert FUTURE_REVISION in state.problem
        assert "newer netkiln" in state.problem
        assert "db upgrade" not in state.problem

    def test_unreachable_database_raises(self, tmp_path: Path) -> None:
        from sqlalchemy.exc import OperationalError

        with pytest.raises(OperationalError):
            schema_state(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}")
