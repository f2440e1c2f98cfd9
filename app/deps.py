"""Request dependencies, as Annotated aliases so handlers read like prose."""

from __future__ import annotations

import hmac
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Header

from app.errors import ApiError
from app.settings import Settings, get_settings
from app.store import Store, connect

DEFAULT_TENANT = "default"


@lru_cache
def get_store() -> Store:
    return Store(connect(get_settings().redis_url))


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def get_tenant(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """The caller's tenant from `Authorization: Bearer KEY`; every key is compared in constant
    time. With no keys configured the service is single-tenant and open (local use)."""
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
