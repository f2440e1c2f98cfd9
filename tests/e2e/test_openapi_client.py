"""The served OpenAPI document is good enough for third-party tools: it validates, and a client
generated from it by openapi-python-client uploads a file, trains a job and downloads it."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from finetune import Client
from tests.conftest import KEYS
from tests.support.harness import Service
from tests.support.jobs import tiny_job_body


def test_a_generated_client_uploads_trains_and_downloads(
    service: Service, alice: Client, data_dir: Path, tmp_path: Path
) -> None:
    document: dict[str, Any] = alice.http.get("/openapi.json").json()
    validate(document)  # openapi-spec-validator: raises on any violation
    operations = [m for path in document["paths"].values() for m in path]
    spec_file = tmp_path / "openapi.json"
    spec_file.write_text(alice.http.get("/openapi.json").text)
    bin_dir = Path(sys.executable).parent
    generator = [str(bin_dir / "openapi-python-client"), "generate", "--path", str(spec_file)]
    result = subprocess.run(
        [*generator, "--output-path", str(tmp_path / "generated")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr

    sys.path.insert(0, str(tmp_path / "generated"))
    try:
        generated = importlib.import_module("finetune_service_client")
        files_api = importlib.import_module(
            "finetune_service_client.api.files.upload_file_v1_files_post"
        )
        jobs = "finetune_service_client.api.jobs."
        create = importlib.import_module(jobs + "create_job_v1_jobs_post")
        get = importlib.import_module(jobs + "get_job_v1_jobs_job_id_get")
        download = importlib.import_module(
            jobs + "download_artifact_v1_jobs_job_id_artifacts_name_get"
        )
        models = importlib.import_module("finetune_service_client.models")
        types = importlib.import_module("finetune_service_client.types")
    finally:
        sys.path.remove(str(tmp_path / "generated"))

    client = generated.AuthenticatedClient(base_url=service.url, token=KEYS["alice"])
    with (data_dir / "train.csv").open("rb") as handle:
        body = models.UploadFileV1FilesPostFileUpload(
            file=types.File(payload=handle, file_name="train.csv", mime_type="text/csv")
        )
        uploaded = files_api.sync(client=client, body=body)
    assert isinstance(uploaded, models.FileObject), uploaded
    job = create.sync(
        client=client,
        body=models.JobCreate.from_dict(tiny_job_body(uploaded.id, hyperparameters={"epochs": 1})),
    )
    assert isinstance(job, models.Job), job
    deadline = time.monotonic() + 180
    while (job := get.sync(job_id=job.id, client=client)).status.value not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, job.status
        time.sleep(0.5)
    assert job.status.value == "succeeded"
    archive = download.sync(job_id=job.id, name="model.tar.gz", client=client)
    assert isinstance(archive, types.File), archive
    with tarfile.open(fileobj=io.BytesIO(archive.payload.read())) as tar:
        assert "model/config.json" in tar.getnames()
    assert len(operations) >= 13
