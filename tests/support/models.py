"""Loading a downloaded model in the test process the way a user would: float32.

Tests that run the pipeline in-process (tests/integration/test_pipeline.py) leave Keras'
global dtype policy at mixed_bfloat16; a model built after that computes in bfloat16 and its
scores differ by about 1e-3 from the service's float32 answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_reference(folder: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a model folder, in float32."""
    import tf_keras
    from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

    tf_keras.mixed_precision.set_global_policy("float32")
    return (
        TFAutoModelForSequenceClassification.from_pretrained(folder),
        AutoTokenizer.from_pretrained(folder),
    )


def float32_policy() -> None:
    import tf_keras

    tf_keras.mixed_precision.set_global_policy("float32")
