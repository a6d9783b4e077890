"""Tenants, their API keys and their limits: what the API checks a request against and
what ``netkiln keys`` / ``netkiln tenants`` manage. No web framework here."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.limits import Limits
from models.tables import TENANT_ID_PATTERN, ApiKey, Job, JobStatus, Tenant, utcnow

#: Keys read ``nk_`` + 43 URL-safe characters (256 random bits); the marker lets secret
#: scanners (and people) recognise a leaked key.
KEY_MARKER = "nk_"
PREFIX_LENGTH = len(KEY_MARKER) + 8


@dataclass(frozen=True)
class Caller:
    """Who a request comes from, and what they may use."""

    tenant: str
    limits: Limits


class UnknownTenant(LookupError):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant_id(tenant: str) -> str:
    if not re.fullmatch(TENANT_ID_PATTERN, tenant):
        raise ValueError(
            f"tenant {tenant!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return tenant


def ensure_tenant(session: Session, tenant: str) -> Tenant:
    row = session.get(Tenant, check_tenant_id(tenant))
    if row is None:
        row = Tenant(id=tenant, limits={})
        session.add(row)
        session.flush()
    return row


def create_key(session: Session, tenant: str, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key for ``tenant`` (created if new). The plain key is returned once and
    never stored."""
    ensure_tenant(session, tenant)
    key = KEY_MARKER + secrets.token_urlsafe(32)
    row = ApiKey(tenant_id=tenant, name=name, prefix=key[:PREFIX_LENGTH], key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def revoke_keys(session: Session, key_or_prefix: str) -> list[ApiKey]:
    """Revoke the key given in full, or every active key starting with that prefix (as
    ``netkiln keys list`` shows it). Returns the keys revoked."""
    active = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    if key_or_prefix.startswith(KEY_MARKER) and len(key_or_prefix) > PREFIX_LENGTH:
        rows = list(session.scalars(active.where(ApiKey.key_hash == hash_key(key_or_prefix))))
    else:
        rows = list(session.scalars(active.where(ApiKey.prefix == key_or_prefix)))
    now = utcnow()
    for row in rows:
        row.revoked_at = now
    session.flush()
    return rows


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    """The tenant an active key belongs to, or None for an unknown or revoked key."""
    return session.scalars(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).one_or_none()


def has_active_keys(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None


def set_limits(session: Session, tenant: str, changes: dict[str, Any]) -> Tenant:
    """Merge ``changes`` into the tenant's own limits; a value of None removes that
    override (the server-wide default applies again)."""
    row = ensure_tenant(session, tenant)
    merged = {**row.limits, **changes}
    merged = {name: value for name, value in merged.items() if value is not None}
    row.limits = Limits.model_validate(merged).model_dump(exclude_none=True)
    session.flush()
    return row


def lock_tenant(session: Session, tenant: str) -> None:
    """Hold the tenant's row until the transaction ends, so that one tenant's
    count-then-insert steps take turns: a row lock on PostgreSQL, the database's write lock
    on SQLite (whose deferred transaction starts at this first write, so the count that
    follows reads the newest state). The update changes nothing."""
    session.execute(update(Tenant).where(Tenant.id == tenant).values(limits=Tenant.limits))


def count_jobs(session: Session, tenant: str, status: JobStatus) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Job)
            # A sweep trains nothing itself: its trials are the jobs that count.
            .where(Job.tenant_id == tenant, Job.status == status, Job.kind != "sweep")
        )
        or 0
    )
