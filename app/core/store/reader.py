"""The API's asynchronous read path for the status poll."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as redis_async
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.schemas import (
    Job,
)
from app.core.store.base import JobRecord, StoreBase
from app.core.store.coordination import Coordination
from app.core.store.jobs import public_job


class AsyncReader:
    """The status poll's read path on redis.asyncio: no thread hop, and a slow or restarting
    Redis never blocks the API's event loop (it fails within a second: the API answers 503)."""

    def __init__(self, url: str) -> None:
        self.r = redis_async.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=0.3,
            socket_timeout=2,
            retry=AsyncRetry(ExponentialBackoff(cap=0.1, base=0.05), retries=1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        # Blocking waits hold their connection for up to their timeout: a client of their own,
        # without the 2 s socket timeout of the polls.
        self.waits = redis_async.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=0.3
        )

    async def await_reply(self, request_id: str, timeout: float) -> str | None:
        """The answer to an online request (`Coordination.put_reply`), or None after `timeout`."""
        try:
            found = await self.waits.blpop([Coordination.reply_key(request_id)], timeout=timeout)
        except RedisTimeoutError:  # no answer in time, however the wait ended
            return None
        return None if found is None else str(found[1])

    async def job_record(self, tenant: str, job_id: str) -> JobRecord | None:
        raw = await self.r.get(StoreBase._job(job_id))
        if raw is None:
            return None
        record = JobRecord.model_validate_json(raw)
        return record if record.tenant == tenant else None

    async def job_view(
        self, tenant: str, job_id: str, artifact_url: Callable[[str], str]
    ) -> Job | None:
        """The public job in one round trip."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.get(StoreBase._job(job_id))
            pipe.get(StoreBase._progress(job_id))
            pipe.lrange(StoreBase._history(job_id), 0, -1)
            raw, progress_raw, history_raw = await pipe.execute()
        if raw is None:
            return None
        record = JobRecord.model_validate_json(raw)
        if record.tenant != tenant:
            return None
        return public_job(record, progress_raw, history_raw, artifact_url)
