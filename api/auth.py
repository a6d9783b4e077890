"""Who is calling: the tenant behind the request's API key, and that tenant's limits.

Every /v1 router depends on :func:`api.deps.get_caller`; resources of other tenants are looked up
as if they did not exist (404), so ids cannot be probed across tenants."""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.cache import ReadCache
from api.errors import Unauthorized
from core.settings import Settings
from models.db import session_factory
from models.tables import DEFAULT_TENANT, Tenant
from models.tenancy import Caller, hash_key, tenant_for_key

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `netkiln keys create --tenant T` prints one.",
)


def remembered_caller(settings: Settings, key: str | None, cache: ReadCache) -> Caller | None:
    """The caller, if the read cache knows the key; raises at once for a missing key."""
    if settings.auth == "keys" and not key:
        raise Unauthorized("send an API key: 'Authorization: Bearer <key>'")
    return cache.caller(_cache_key(settings, key))


def _cache_key(settings: Settings, key: str | None) -> str:
    return hash_key(key) if settings.auth == "keys" and key else DEFAULT_TENANT


def authenticate(
    settings: Settings, session: Session, key: str | None, cache: ReadCache | None = None
) -> Caller:
    if settings.auth == "keys" and not key:
        raise Unauthorized("send an API key: 'Authorization: Bearer <key>'")
    cache_key = _cache_key(settings, key)
    known = cache.caller(cache_key) if cache is not None else None
    if known is not None:
        return known
    if settings.auth == "none":
        tenant = session.get(Tenant, DEFAULT_TENANT)
    else:
        assert key is not None
        tenant = tenant_for_key(session, key)
        if tenant is None:
            raise Unauthorized("the API key is unknown or revoked")
    overrides = tenant.limits if tenant is not None else {}
    caller = Caller(
        tenant.id if tenant else DEFAULT_TENANT, settings.default_limits.over(overrides)
    )
    if cache is not None:
        cache.remember_caller(cache_key, caller)
    return caller


def bearer_key(request: Request) -> str | None:
    """The key of an ``Authorization: Bearer`` header, for code that runs before
    dependencies (upload routes check it before reading the body)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


async def authenticate_briefly(request: Request) -> Caller:
    """The caller of a long-lived request (an event stream), holding no database
    connection past this call: a session dependency would hold one for the whole stream."""
    settings: Settings = request.app.state.settings
    known = remembered_caller(settings, bearer_key(request), request.app.state.read_cache)
    if known is not None:
        return known
    return await run_in_threadpool(authenticate_request, settings, request)


def authenticate_request(settings: Settings, request: Request) -> Caller:
    """Authenticate with a session of its own; remembered on the request."""
    with session_factory(settings.resolved_database_url)() as session:
        caller = authenticate(settings, session, bearer_key(request), request.app.state.read_cache)
    request.state.caller = caller
    return caller
