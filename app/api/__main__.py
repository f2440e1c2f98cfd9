"""`python -m app.api`: the API on FINETUNE_HOST:FINETUNE_PORT (what the API image runs).

Reading the address from the settings, rather than uvicorn's own flags, lets `create_app`
refuse an open API (no keys) on a public address."""

from __future__ import annotations

import uvicorn

from app.core.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "app.api.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        access_log=False,
    )


if __name__ == "__main__":
    main()
