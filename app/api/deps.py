"""Request dependencies, as Annotated aliases so handlers read like prose."""

from __future__ import annotations

import hmac
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import ApiError
from app.core.settings import Settings, get_settings
from app.core.store import AsyncReader, Store, connect

DEFAULT_TENANT = "default"


@lru_cache
def get_store() -> Store:
    return Store(connect(get_settings().redis_url, fail_fast=True))


@lru_cache
def get_reader() -> AsyncReader:
    return AsyncReader(get_settings().redis_url)


# Dependencies are `async def` on purpose: they never block, and FastAPI would otherwise run
# each one in the threadpool (a thread hop per dependency per request).
async def _settings() -> Settings:
    return get_settings()


async def _store() -> Store:
    return get_store()


async def _reader() -> AsyncReader:
    return get_reader()


SettingsDep = Annotated[Settings, Depends(_settings)]
ReaderDep = Annotated[AsyncReader, Depends(_reader)]
StoreDep = Annotated[Store, Depends(_store)]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


# Declares the scheme in OpenAPI (the docs' "Authorize" button, generated clients' token);
# the header itself is read below, to tell a missing key from a malformed one.
bearer_scheme = HTTPBearer(auto_error=False, description="an API key from FINETUNE_API_KEYS")


async def get_tenant(
    settings: SettingsDep,
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> str:
    """The caller's tenant from `Authorization: Bearer KEY`; every key is compared in constant
    time. With no keys configured the service is single-tenant and open (local use)."""
    authorization = request.headers.get("authorization")
    keys = settings.tenants_by_key
    if not keys:
        return DEFAULT_TENANT
    if not authorization:
        raise _unauthorized("missing Authorization header; send 'Authorization: Bearer KEY'")
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise _unauthorized("malformed Authorization header; send 'Authorization: Bearer KEY'")
    presented_bytes = presented.strip().encode()
    tenant = None
    for key, owner in keys.items():
        if hmac.compare_digest(key.encode(), presented_bytes):
            tenant = owner
    if tenant is None:
        raise _unauthorized("unknown API key")
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]
