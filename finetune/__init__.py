"""The `finetune` client library and command line.

`from finetune import Client` talks to a running service; the `finetune` command is built on it.
"""

from finetune.client import (
    ApiError,
    BadRequest,
    Client,
    Conflict,
    FinetuneError,
    Invalid,
    NotFound,
    RateLimited,
    ServiceUnreachable,
    TooLarge,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "ApiError",
    "BadRequest",
    "Client",
    "Conflict",
    "FinetuneError",
    "Invalid",
    "NotFound",
    "RateLimited",
    "ServiceUnreachable",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]
