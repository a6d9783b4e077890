"""``netkiln keys`` and ``netkiln tenants``: API keys and per-tenant limits, managed
directly in the database (run them where the API's NETKILN_DATABASE_URL points)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from core.settings import Settings, get_settings
from models.db import transaction
from models.limits import Limits
from models.tables import ApiKey, Tenant
from models.tenancy import create_key, revoke_keys, set_limits, tenant_for_key

keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants and their limits.", no_args_is_help=True)
console = Console(highlight=False)

#: Where ``netkiln up`` keeps the key it made, and where the client CLI looks for one.
LOCAL_KEY_FILE = "api-key"
LOCAL_TENANT = "local"

TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant id, e.g. acme.")]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(tenants_app, name="tenants")


def _database_url() -> str:
    get_settings.cache_clear()
    return get_settings().resolved_database_url


@keys_app.command("create")
def keys_create(
    tenant: TenantOption,
    name: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
) -> None:
    """Create a key for TENANT (the tenant too, if new). The key is printed once; only
    its hash is stored."""
    try:
        with transaction(_database_url()) as session:
            _, key = create_key(session, tenant, name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tenant") from None
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
) -> None:
    """Keys by prefix (never the key itself), tenant and state."""
    with transaction(_database_url()) as session:
        query = select(ApiKey).order_by(ApiKey.tenant_id, ApiKey.created_at)
        if tenant is not None:
            query = query.where(ApiKey.tenant_id == tenant)
        rows = list(session.scalars(query))
    table = Table("prefix", "tenant", "name", "created", "revoked")
    for row in rows:
        table.add_row(
            row.prefix + "…",
            row.tenant_id,
            row.name or "",
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key, or its prefix as `keys list` shows it.")],
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    with transaction(_database_url()) as session:
        revoked = revoke_keys(session, key.removesuffix("…"))
    if not revoked:
        typer.echo(f"no active key matches {key!r}", err=True)
        raise typer.Exit(1)
    for row in revoked:
        typer.echo(f"revoked {row.prefix}… of tenant {row.tenant_id}")


def _limit_option(name: str) -> object:
    description = Limits.model_fields[name].description or ""
    return typer.Option(f"--{name.replace('_', '-')}", help=f"{description} 0 clears it.")


@tenants_app.command("limits")
def tenants_limits(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    max_running_jobs: Annotated[int | None, _limit_option("max_running_jobs")] = None,
    max_queued_jobs: Annotated[int | None, _limit_option("max_queued_jobs")] = None,
    max_params: Annotated[int | None, _limit_option("max_params")] = None,
    max_epoch_examples: Annotated[int | None, _limit_option("max_epoch_examples")] = None,
    max_upload_bytes: Annotated[int | None, _limit_option("max_upload_bytes")] = None,
) -> None:
    """Set TENANT's own limits (over the NETKILN_LIMIT_* defaults) and print them."""
    given = {
        "max_running_jobs": max_running_jobs,
        "max_queued_jobs": max_queued_jobs,
        "max_params": max_params,
        "max_epoch_examples": max_epoch_examples,
        "max_upload_bytes": max_upload_bytes,
    }
    # 0 means "back to the default", which set_limits spells None.
    changes = {name: (value or None) for name, value in given.items() if value is not None}
    try:
        with transaction(_database_url()) as session:
            row = set_limits(session, tenant, changes)
            own = dict(row.limits)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    effective = get_settings().default_limits.over(own)
    typer.echo(json.dumps({"tenant": tenant, "own": own, "effective": effective.model_dump()}))


@tenants_app.command("list")
def tenants_list() -> None:
    """Tenants, their own limits and how many active keys they have."""
    with transaction(_database_url()) as session:
        tenants = list(session.scalars(select(Tenant).order_by(Tenant.id)))
        active = list(session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))))
    table = Table("tenant", "active keys", "own limits")
    for row in tenants:
        keys = sum(key.tenant_id == row.id for key in active)
        table.add_row(row.id, str(keys), json.dumps(row.limits) if row.limits else "defaults")
    console.print(table)


def ensure_local_key(settings: Settings) -> tuple[str, bool]:
    """The key ``netkiln up`` works with: the one in ``<data_dir>/api-key`` while it is
    active, else a new key of tenant ``local`` written there (mode 0600). Returns the key
    and whether it is new."""
    path = settings.data_dir / LOCAL_KEY_FILE
    with transaction(settings.resolved_database_url) as session:
        if path.is_file():
            key = path.read_text().strip()
            if key and tenant_for_key(session, key) is not None:
                return key, False
        _, key = create_key(session, LOCAL_TENANT, name="netkiln up")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key, True


def local_key(data_dir: Path | None = None) -> str | None:
    """The key ``netkiln up`` left in the data directory, if any (for the client CLI)."""
    folder = data_dir or Path(os.environ.get("NETKILN_DATA_DIR", ".netkiln"))
    path = folder.expanduser() / LOCAL_KEY_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
