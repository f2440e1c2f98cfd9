"""The command lines of the service's processes, in one place: `finetune up`, `finetune serve`,
`finetune worker`, the test harness and the benchmarks all start them from here."""

from __future__ import annotations

import sys


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.api.main:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
    ]


def worker_command(name: str, queue: str, log_level: str = "INFO") -> list[str]:
    """One Celery worker process: one job at a time, TensorFlow only in its pool process."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        *([] if log_level.upper() == "DEBUG" else ["--quiet"]),  # no banner
        "worker",
        "--loglevel",
        log_level,
        "--concurrency",
        "1",
        "--pool",
        "prefork",
        "-Q",
        queue,
        "--hostname",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
    ]


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False
