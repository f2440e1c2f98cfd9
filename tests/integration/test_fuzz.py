"""Property-based fuzzing of the whole OpenAPI spec with schemathesis, against the running
service: no 5xx, and every response matches the documented schema, status codes and content
type. (Driven through its CLI: its pytest plugin does not support pytest 9.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ARTIFACTS, KEYS
from tests.support.harness import Service

CHECKS = (
    "not_a_server_error,response_schema_conformance,status_code_conformance,"
    "content_type_conformance"
)


def test_openapi_fuzzing_finds_no_server_error_or_schema_violation(service: Service) -> None:
    report = ARTIFACTS / "schemathesis"
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        service.url + "/openapi.json",
        "--header",
        f"Authorization: Bearer {KEYS['alice']}",
        "--checks",
        CHECKS,
        "--max-examples",
        "30",
        "--seed",
        "1",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "passed" in output.lower()
