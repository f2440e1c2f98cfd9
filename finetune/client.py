"""The one Python client of the service's HTTP API, used by the CLI, the demo, the tests and the
benchmarks.

    from finetune import Client
    with Client("http://127.0.0.1:8000", api_key=KEY) as client:
        data = client.upload("reviews.csv")
        job = client.submit(model="all-MiniLM-L6-v2", training_file=data.id,
                            text_column="text", label_column="sentiment")
        job = client.wait(job.id, on_update=lambda j: print(j.status, j.progress.percent))
        client.download(job.id, "my-model")

Answers are the service's own pydantic models (`app.core.schemas`), so a field renamed on one
side is a type error on the other. Errors are `ApiError` subclasses carrying the API's `code`,
`message` and `param`. Requests that the service refused without acting on them (connection
refused, 429, 503) are retried with exponential backoff, honouring `Retry-After`; a request that
may have been acted on (a read timeout after a POST) is not retried, unless it carries an
`Idempotency-Key`.
"""

from __future__ import annotations

import random
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from app.core.schemas import (
    TERMINAL_STATUSES,
    BatchPrediction,
    BatchPredictionList,
    Checkpoint,
    DataReport,
    EvaluationReport,
    Event,
    EventList,
    FileList,
    FileObject,
    Job,
    JobCreate,
    JobList,
    JobStatus,
    ModelInfo,
    Prediction,
    PredictionList,
    Sweep,
    SweepCreate,
    SweepList,
    SweepStatus,
)

Model = TypeVar("Model", bound=BaseModel)
RETRY_STATUSES = frozenset({429, 503})
DEFAULT_URL = "http://127.0.0.1:8000"


class FinetuneError(Exception):
    """Anything the client raises."""


class ServiceUnreachable(FinetuneError):
    """No answer from the service, after the retries."""


class ApiError(FinetuneError):
    """The service answered an error: `status`, and the API's `code`, `message` and `param`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        where = f" ({param})" if param else ""
        super().__init__(f"{message}{where}")
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    """400: the body is not JSON, or not the shape the endpoint takes."""


class Unauthorized(ApiError):
    """401: no key, or an unknown one."""


class NotFound(ApiError):
    """404: no such resource for this tenant (another tenant's resources answer the same)."""


class Conflict(ApiError):
    """409: the resource is in a state that does not allow this (e.g. cancel a finished job)."""


class TooLarge(ApiError):
    """413: the body or upload is over the service's limit."""


class Invalid(ApiError):
    """422: a field is wrong; `param` names it."""


class RateLimited(ApiError):
    """429: over a per-tenant limit, still after the retries."""


class Unavailable(ApiError):
    """503: the service or its Redis is down, still after the retries."""


ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: Invalid,
    429: RateLimited,
    503: Unavailable,
}


def error_from(response: httpx.Response) -> ApiError:
    """The typed error for an error response, from the API's error envelope when it has one."""
    try:
        error = response.json()["error"]
        code, message, param = str(error["code"]), str(error["message"]), error.get("param")
    except (ValueError, KeyError, TypeError):
        code, message, param = "http_error", f"HTTP {response.status_code}", None
        if response.text:
            message += f": {response.text[:200]}"
    kind = ERRORS_BY_STATUS.get(response.status_code, ApiError)
    return kind(response.status_code, code, message, param, response.headers)


class Client:
    """A connection to one service as one tenant. Thread-safe as httpx.Client is."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        """`url` and `api_key` default to FINETUNE_URL and FINETUNE_API_KEY. `retries` bounds
        the retries of one call; the n-th waits `backoff * 2**n` seconds (jittered, at most
        `max_backoff`) or what `Retry-After` asks."""
        if url is None or api_key is None:
            from app.core.settings import get_settings

            settings = get_settings()
            url = url or settings.url
            api_key = api_key if api_key is not None else settings.api_key
        self.url = url.rstrip("/")
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    # -- plumbing ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            asked = response.headers.get("Retry-After")
            if asked is not None:
                try:
                    return min(max(float(asked), 0.0), self.max_backoff)
                except ValueError:
                    pass
        return min(self.backoff * 2.0**attempt, self.max_backoff) * random.uniform(0.5, 1.0)

    def request(
        self,
        method: str,
        path: str,
        *,
        retry_unsafe: bool = False,
        body: Callable[[], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call with retries; raises the typed error of a final error answer. `body`
        builds fresh request arguments per attempt (an upload reopens its file)."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.http.request(method, path, **kwargs, **(body() if body else {}))
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Never reached the service: always safe to try again.
                if last:
                    raise ServiceUnreachable(f"cannot reach {self.url}: {exc}") from exc
                time.sleep(self._delay(attempt, None))
                continue
            except httpx.TransportError as exc:
                # Sent, and maybe acted on: again only when that cannot do anything twice.
                if last or not (method in ("GET", "HEAD") or retry_unsafe):
                    raise ServiceUnreachable(f"no answer from {self.url}: {exc}") from exc
                time.sleep(self._delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(self._delay(attempt, response))
                continue
            if response.status_code >= 400:
                raise error_from(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, path: str, answer: type[Model], **params: Any) -> Model:
        query = {k: v for k, v in params.items() if v is not None}
        return answer.model_validate_json(self.request("GET", path, params=query).content)

    # -- files ------------------------------------------------------------------------------
    def upload(self, file: str | Path, *, filename: str | None = None) -> FileObject:
        """Upload a CSV, JSON Lines or Parquet dataset; it is checked before it is listed."""
        path = Path(file)
        handles: list[IO[bytes]] = []

        def body() -> dict[str, Any]:
            handle = path.open("rb")
            handles.append(handle)
            return {"files": {"file": (filename or path.name, handle)}}

        try:
            response = self.request("POST", "/v1/files", body=body)
        finally:
            for handle in handles:
                handle.close()
        return FileObject.model_validate_json(response.content)

    def files(self) -> list[FileObject]:
        return self._get("/v1/files", FileList).data

    def file(self, file_id: str) -> FileObject:
        return self._get(f"/v1/files/{file_id}", FileObject)

    def file_report(
        self,
        file_id: str,
        *,
        text_column: str | None = None,
        label_column: str | None = None,
        text_pair_column: str | None = None,
        model: str | None = None,
        max_length: int | None = None,
        task: str | None = None,
        label_delimiter: str | None = None,
    ) -> DataReport:
        """The data report of an upload: labels, empty texts, duplicates, conflicts, case
        variants and (with `model`) token lengths; `problems` would refuse a job. `task`:
        read the label column as that task's jobs do (label sets, tag lists, none)."""
        return self._get(
            f"/v1/files/{file_id}/report",
            DataReport,
            text_column=text_column,
            label_column=label_column,
            text_pair_column=text_pair_column,
            model=model,
            max_length=max_length,
            task=task,
            label_delimiter=label_delimiter,
        )

    def delete_file(self, file_id: str) -> FileObject:
        response = self.request("DELETE", f"/v1/files/{file_id}")
        return FileObject.model_validate_json(response.content)

    # -- jobs -------------------------------------------------------------------------------
    def submit(
        self,
        job: JobCreate | Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Job:
        """Submit a job: a `JobCreate`, a dict of its fields, or its fields as keywords.
        With `idempotency_key`, a retried submission returns the first job, never a second."""
        if job is None:
            payload: Any = fields
        elif isinstance(job, JobCreate):
            payload = job.model_dump(mode="json", exclude_unset=True)
        else:
            payload = {**job, **fields}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self.request(
            "POST",
            "/v1/jobs",
            json=payload,
            headers=headers,
            retry_unsafe=idempotency_key is not None,
        )
        return Job.model_validate_json(response.content)

    def job(self, job_id: str) -> Job:
        return self._get(f"/v1/jobs/{job_id}", Job)

    def jobs(
        self, *, status: JobStatus | str | None = None, limit: int = 20, after: str | None = None
    ) -> JobList:
        """One page of the tenant's jobs, newest first; pass the last id as `after` for more."""
        return self._get("/v1/jobs", JobList, status=status, limit=limit, after=after)

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is `cancelling` until it stops."""
        response = self.request("POST", f"/v1/jobs/{job_id}/cancel")
        return Job.model_validate_json(response.content)

    def wait(
        self,
        job_id: str,
        *,
        until: set[JobStatus] | frozenset[JobStatus] | None = None,
        timeout: float | None = None,
        interval: float = 1.0,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job reaches a status in `until` (default: any terminal one) and
        return it; `on_update` sees every poll. Raises TimeoutError after `timeout` seconds."""
        wanted = until or TERMINAL_STATUSES
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job.status in wanted:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} is {job.status} after {timeout:.0f} s, not in "
                    f"{sorted(str(s) for s in wanted)}"
                )
            time.sleep(interval)

    def events_page(self, job_id: str, *, after: str | None = None, limit: int = 100) -> EventList:
        return self._get(f"/v1/jobs/{job_id}/events", EventList, after=after, limit=limit)

    def iter_events(self, job_id: str, *, after: str | None = None) -> Iterator[Event]:
        """Every event after `after` (all when None), fetching pages as needed."""
        return self._paged_events(f"/v1/jobs/{job_id}/events", after)

    def _paged_events(self, path: str, after: str | None) -> Iterator[Event]:
        while True:
            page = self._get(path, EventList, after=after, limit=1000)
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    def events(self, job_id: str, *, after: str | None = None) -> list[Event]:
        return list(self.iter_events(job_id, after=after))

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        response = self.request("GET", f"/v1/jobs/{job_id}/checkpoints")
        return TypeAdapter(list[Checkpoint]).validate_json(response.content)

    def report(self, job_id: str) -> EvaluationReport:
        """The evaluation report of a succeeded job (confusion matrix, per-class scores, the
        baseline); `NotFound` with code `report_not_ready` before it succeeds."""
        response = self.request("GET", f"/v1/jobs/{job_id}/report")
        return EvaluationReport.model_validate_json(response.content)

    def predict(self, job_id: str, texts: Sequence[str | tuple[str, str]]) -> list[Prediction]:
        """The job's model on up to 64 texts (or (text, text_pair) tuples), in order."""
        inputs = [
            {"text": t} if isinstance(t, str) else {"text": t[0], "text_pair": t[1]} for t in texts
        ]
        response = self.request(  # no side effects: safe to send again
            "POST", f"/v1/jobs/{job_id}/predictions", json={"inputs": inputs}, retry_unsafe=True
        )
        return PredictionList.model_validate_json(response.content).data

    # -- batch predictions and evaluations ---------------------------------------------------
    def batch_predict(
        self,
        job_id: str,
        file_id: str,
        *,
        text_column: str | None = None,
        text_pair_column: str | None = None,
        label_column: str | None = None,
        checkpoint: str | None = None,
        idempotency_key: str | None = None,
    ) -> BatchPrediction:
        """Score an uploaded file with a job's model; with `label_column` also evaluate it."""
        body = {
            "job_id": job_id,
            "input_file": file_id,
            "text_column": text_column,
            "text_pair_column": text_pair_column,
            "label_column": label_column,
            "checkpoint": checkpoint,
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self.request(
            "POST",
            "/v1/batch_predictions",
            json={k: v for k, v in body.items() if v is not None},
            headers=headers,
            retry_unsafe=idempotency_key is not None,
        )
        return BatchPrediction.model_validate_json(response.content)

    def evaluate(
        self,
        job_id: str,
        file_id: str,
        *,
        label_column: str | None = None,
        text_column: str | None = None,
        text_pair_column: str | None = None,
        checkpoint: str | None = None,
    ) -> BatchPrediction:
        """Judge a job's model (or checkpoint) on a labelled file; `batch_report` once done."""
        body = {
            "file_id": file_id,
            "label_column": label_column,
            "text_column": text_column,
            "text_pair_column": text_pair_column,
            "checkpoint": checkpoint,
        }
        response = self.request(
            "POST",
            f"/v1/jobs/{job_id}/evaluations",
            json={k: v for k, v in body.items() if v is not None},
        )
        return BatchPrediction.model_validate_json(response.content)

    # -- sweeps -----------------------------------------------------------------------------
    def create_sweep(
        self, sweep: SweepCreate | Mapping[str, Any] | None = None, **fields: Any
    ) -> Sweep:
        """Start a sweep: a job (`job`, as `submit` takes it) and the hyperparameters to
        `search`; every trial is an ordinary job. A `SweepCreate`, a dict, or keywords."""
        if sweep is None:
            payload: Any = fields
        elif isinstance(sweep, SweepCreate):
            payload = sweep.model_dump(mode="json", exclude_unset=True)
        else:
            payload = {**sweep, **fields}
        response = self.request("POST", "/v1/sweeps", json=payload)
        return Sweep.model_validate_json(response.content)

    def sweep(self, sweep_id: str) -> Sweep:
        return self._get(f"/v1/sweeps/{sweep_id}", Sweep)

    def sweeps(self, *, limit: int = 20, after: str | None = None) -> SweepList:
        return self._get("/v1/sweeps", SweepList, limit=limit, after=after)

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        """No new trials; unfinished trials are cancelled."""
        response = self.request("POST", f"/v1/sweeps/{sweep_id}/cancel")
        return Sweep.model_validate_json(response.content)

    def wait_sweep(
        self,
        sweep_id: str,
        *,
        timeout: float | None = None,
        interval: float = 2.0,
        on_update: Callable[[Sweep], None] | None = None,
    ) -> Sweep:
        """Poll until the sweep ends; `on_update` sees every poll. TimeoutError after
        `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ended = {SweepStatus.succeeded, SweepStatus.failed, SweepStatus.cancelled}
        while True:
            found = self.sweep(sweep_id)
            if on_update is not None:
                on_update(found)
            if found.status in ended:
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {sweep_id} is {found.status} after {timeout:.0f} s")
            time.sleep(interval)

    # -- batch predictions ------------------------------------------------------------------
    def batch(self, batch_id: str) -> BatchPrediction:
        return self._get(f"/v1/batch_predictions/{batch_id}", BatchPrediction)

    def batches(
        self, *, status: JobStatus | None = None, limit: int = 20, after: str | None = None
    ) -> BatchPredictionList:
        return self._get(
            "/v1/batch_predictions", BatchPredictionList, status=status, limit=limit, after=after
        )

    def cancel_batch(self, batch_id: str) -> BatchPrediction:
        response = self.request("POST", f"/v1/batch_predictions/{batch_id}/cancel")
        return BatchPrediction.model_validate_json(response.content)

    def wait_batch(
        self, batch_id: str, *, timeout: float | None = None, interval: float = 1.0
    ) -> BatchPrediction:
        """Poll until the batch prediction ends; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.batch(batch_id)
            if batch.status in TERMINAL_STATUSES:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} is {batch.status} after {timeout:.0f} s")
            time.sleep(interval)

    def batch_events(self, batch_id: str) -> list[Event]:
        return list(self._paged_events(f"/v1/batch_predictions/{batch_id}/events", None))

    def batch_report(self, batch_id: str) -> EvaluationReport:
        response = self.request("GET", f"/v1/batch_predictions/{batch_id}/report")
        return EvaluationReport.model_validate_json(response.content)

    def download_predictions(self, batch_id: str, target: str | Path) -> Path:
        """The input rows with their predictions, saved as `target`."""
        response = self.request("GET", f"/v1/batch_predictions/{batch_id}/output")
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(response.content)
        partial.replace(path)
        return path

    def download(
        self,
        job_id: str,
        target: str | Path,
        *,
        extract: bool = True,
        on_bytes: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """The trained model: unpacked into `target` (returns `target/model`, ready for
        `from_pretrained`), or with `extract=False` saved as the archive `target`.
        `on_bytes(received, total)` follows the transfer."""
        job = self.job(job_id)
        if "model" not in job.artifacts:
            raise NotFound(
                404, "not_found", f"job {job_id} has no model to download (status {job.status})"
            )
        target = Path(target)
        archive = target / "model.tar.gz" if extract else target
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(f".{archive.name}.partial")
        for attempt in range(self.retries + 1):
            try:
                with self.http.stream("GET", job.artifacts["model"]) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise error_from(response)
                    total = int(response.headers.get("content-length", 0)) or None
                    received = 0
                    with partial.open("wb") as out:
                        for chunk in response.iter_bytes(1 << 20):
                            out.write(chunk)
                            received += len(chunk)
                            if on_bytes is not None:
                                on_bytes(received, total)
                break
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ServiceUnreachable(f"download from {self.url} failed: {exc}") from exc
                time.sleep(self._delay(attempt, None))
        partial.replace(archive)
        if not extract:
            return archive
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        archive.unlink()
        return target / "model"

    # -- service ----------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        response = self.request("GET", "/v1/models")
        return TypeAdapter(list[ModelInfo]).validate_json(response.content)

    def health(self) -> dict[str, Any]:
        """`/healthz` as it answers (also when degraded: 503 is an answer here, not an error)."""
        try:
            response = self.http.get("/healthz")
        except httpx.TransportError as exc:
            raise ServiceUnreachable(f"cannot reach {self.url}: {exc}") from exc
        body: dict[str, Any] = response.json()
        return body
