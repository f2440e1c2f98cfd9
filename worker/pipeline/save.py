"""Stage 6: the output folder that `from_pretrained(folder)` loads with no extra arguments."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase, TFPreTrainedModel

from app.core.layout import REPORT_FILE, write_atomically
from app.core.schemas import EvaluationReport
from worker.errors import StorageError

METRICS_FILE = "metrics.json"
JOB_FILE = "job.json"
HISTORY_FILE = "history.json"


def library_versions() -> dict[str, str]:
    import datasets
    import tensorflow as tf
    import tf_keras
    import transformers

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


def save_outputs(
    output_dir: Path,
    model: TFPreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    metrics: dict[str, Any],
    job: dict[str, Any],
    history: dict[str, Any],
    report: EvaluationReport,
) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(output_dir))
        tokenizer.save_pretrained(str(output_dir))
        write_atomically(output_dir / HISTORY_FILE, json.dumps(history, indent=2))
        write_atomically(output_dir / REPORT_FILE, report.model_dump_json(indent=2))
        write_atomically(output_dir / JOB_FILE, json.dumps(job, indent=2, default=str))
        # Last: its presence marks a complete output folder.
        write_atomically(output_dir / METRICS_FILE, json.dumps(metrics, indent=2))
    except OSError as exc:
        raise StorageError(
            f"could not write the trained model to its output folder: {exc}"
        ) from exc
