"""The architecture's import rules, checked on the code itself (every import statement, at any
depth) and on real interpreters (what a process has loaded after it starts).

- app/ (the API side) never imports TensorFlow, the training libraries, `worker` or `finetune`;
- app/core (what the workers share) imports neither FastAPI/Starlette nor app.api;
- worker/ never imports the HTTP layer (app.api, FastAPI) nor the client package;
- finetune/ (client and CLI) imports `worker` and TensorFlow only inside functions, lazily.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINING = {"tensorflow", "tf_keras", "keras", "transformers", "datasets", "sklearn", "worker"}


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Every module a file imports (full dotted names)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def violations(folder: str, forbidden: set[str], top_level_only: bool = False) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module in imports(path, top_level_only):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden", "top_level_only"),
    [
        ("app", TRAINING | {"finetune"}, False),
        ("app/core", {"fastapi", "starlette", "app.api", "uvicorn"}, False),
        ("worker", {"app.api", "fastapi", "starlette", "finetune"}, False),
        ("finetune", TRAINING, True),
    ],
    ids=["app-without-training", "core-without-http", "worker-without-http", "client-lazy"],
)
def test_import_rules(folder: str, forbidden: set[str], top_level_only: bool) -> None:
    assert not violations(folder, forbidden, top_level_only)


def test_the_rule_check_can_fail(tmp_path: Path) -> None:
    """The checker sees imports inside functions too (a rule that cannot fail proves nothing)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import tensorflow.keras\n    from worker.x import y\n")
    assert imports(module) == {"tensorflow.keras", "worker.x"}
    assert imports(module, top_level_only=True) == set()


def loaded_after(code: str) -> set[str]:
    """Top-level packages a fresh interpreter has loaded after running `code`."""
    script = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_api_process_loads_no_training_code() -> None:
    loaded = loaded_after(
        "from app.api.main import create_app\napp = create_app()\napp.openapi()\n"
        "import app.api.routes.jobs, app.api.routes.files, app.api.metrics"
    )
    assert "fastapi" in loaded  # the check sees what is loaded
    assert not loaded & (TRAINING | {"finetune"}), loaded & (TRAINING | {"finetune"})


def test_the_client_and_cli_load_no_training_code() -> None:
    loaded = loaded_after("from finetune import Client\nimport finetune.cli, finetune.commands")
    assert "httpx" in loaded
    assert not loaded & TRAINING, loaded & TRAINING
    assert "fastapi" not in loaded  # the client does not need the HTTP server's code


def test_the_worker_loads_no_http_layer() -> None:
    loaded = loaded_after("import worker.tasks, worker.runner, worker.reaper, worker.celery_app")
    assert "celery" in loaded
    assert "fastapi" not in loaded and "finetune" not in loaded
