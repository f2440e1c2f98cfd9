"""Shared fixtures: tiny local models, small datasets, a real Redis and a real service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from finetune import Client
from tests.support.factories import ENTITY_WORDS, build_tiny_bert, sentiment_rows, write_csv
from tests.support.harness import RedisServer, Service, free_port, service_env

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WEBHOOK_SECRET = "webhook-secret-for-tests"
OPERATOR_KEY = "operator-key-for-tests"
KEYS = {"alice": "key-alice-0123456789", "bob": "key-bob-9876543210"}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    build_tiny_bert(folder / "tiny")
    build_tiny_bert(folder / "tiny-entities", extra_words=ENTITY_WORDS)
    return folder


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_csv(folder / "train.csv", ["sentence", "label"], sentiment_rows(400, seed=1))
    write_csv(folder / "validation.csv", ["sentence", "label"], sentiment_rows(60, seed=2))
    return folder


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service(
    redis_server: RedisServer, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The API and one worker, multi-tenant (alice and bob), as users run them."""
    storage = tmp_path_factory.mktemp("storage")
    keys = ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items())
    svc = Service(
        service_env(
            redis_server.url,
            storage,
            models_dir,
            keys,
            FINETUNE_MAX_UPLOAD_BYTES="2000000",
            FINETUNE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            # The tests' webhook receiver listens on loopback: allowed here, by name, only.
            FINETUNE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
            FINETUNE_OPERATOR_KEY=OPERATOR_KEY,
        ),
        free_port(),
        # One folder per pytest-xdist process: each runs its own session service.
        ARTIFACTS / "logs" / os.environ.get("PYTEST_XDIST_WORKER", "main"),
    )
    svc.start_api()
    svc.start_worker("main")
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def predictor(service: Service) -> None:
    """A prediction worker beside the service's training worker, started once when needed."""
    service.start_predictor("main-predictor")


@pytest.fixture(scope="session")
def alice(service: Service) -> Client:
    return tenant_client(service, "alice")


@pytest.fixture(scope="session")
def bob(service: Service) -> Client:
    return tenant_client(service, "bob")


def tenant_client(service: Service, tenant: str | None) -> Client:
    """The library client as a tenant (None: no key), with short retries for tests."""
    return Client(service.url, KEYS[tenant] if tenant else "", retries=2, backoff=0.2)
