"""Alembic, configured in code so ``netkiln db upgrade`` needs no alembic.ini on disk, and
the schema check the API and the worker make before they start (and ``/readyz`` on each
probe)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, MetaData, String, Table, inspect, pool, select

from models.db import make_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: What to run on a database behind this code; the API and the worker refuse it.
UPGRADE_COMMAND = "netkiln db upgrade"

#: Alembic's default version table, which env.py keeps.
VERSION_TABLE = Table("alembic_version", MetaData(), Column("version_num", String(32)))


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


@lru_cache(maxsize=1)
def _scripts() -> tuple[str, frozenset[str]]:
    """This code's head revision and every revision it knows (they never change at run time)."""
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    head = scripts.get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS_DIR}"
    return head, frozenset(script.revision for script in scripts.walk_revisions())


class SchemaState(NamedTuple):
    """A database's Alembic revision next to this code's newest."""

    #: None: never migrated (no ``alembic_version`` row).
    current: str | None
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def ahead(self) -> bool:
        """Migrated by a newer netkiln: a revision this code has never heard of."""
        return self.current is not None and self.current not in _scripts()[1]

    @property
    def behind(self) -> bool:
        """Never migrated, or at an older revision: ``netkiln db upgrade`` brings it to head."""
        return not self.at_head and not self.ahead

    @property
    def problem(self) -> str | None:
        """Why this code cannot run on the database, and what to do; None when it can."""
        if self.current is None:
            return f"the database was never migrated; run '{UPGRADE_COMMAND}'"
        if self.ahead:
            return (
                f"the database is at revision {self.current}, which this netkiln does not "
                f"know (its newest is {self.head}): a newer netkiln migrated it; run that "
                "version instead"
            )
        if self.behind:
            return (
                f"the database is at revision {self.current}, behind {self.head}; "
                f"run '{UPGRADE_COMMAND}'"
            )
        return None


def connection_schema_state(connection: Connection) -> SchemaState:
    """Reads Alembic's version table as its ``MigrationContext`` does, without the two INFO
    lines that logs on each use (a readiness probe asks every few seconds)."""
    current = None
    if inspect(connection).has_table(VERSION_TABLE.name):
        current = connection.execute(select(VERSION_TABLE.c.version_num)).scalar_one_or_none()
    return SchemaState(current=current, head=_scripts()[0])


def schema_state(database_url: str) -> SchemaState:
    """Read the revision of the database at ``database_url`` (it raises SQLAlchemy's errors
    where the database cannot be reached)."""
    engine = make_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return connection_schema_state(connection)
    finally:
        engine.dispose()
