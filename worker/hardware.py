"""Device and precision set-up: GPUs when present, a clean CPU fallback otherwise."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from app.core.settings import Precision

log = logging.getLogger("finetune.hardware")


@functools.cache
def configure_devices() -> list[str]:
    """Turn on memory growth for each visible GPU (one per worker: set CUDA_VISIBLE_DEVICES).

    Must run before TensorFlow initialises its devices, so workers call it at process start.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # devices already initialised in this process
            log.warning("could not enable memory growth: %s", exc)
    return [gpu.name for gpu in gpus]


def cpu_supports_bfloat16_matmul() -> bool:
    """AMX or AVX-512 BF16: the CPU instructions that make bfloat16 matmuls fast."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" amx_bf16", " avx512_bf16"))


def resolve_precision(requested: Precision) -> str:
    """The Keras dtype policy for a job: explicit requests win, but never an unsupported one.

    "auto" is mixed_float16 on GPU, mixed_bfloat16 on a CPU with bfloat16 matrix instructions,
    float32 otherwise. mixed_float16 has no fast CPU kernels and falls back to float32;
    mixed_bfloat16 on a CPU without bfloat16 instructions does too.
    """
    has_gpu = bool(configure_devices())
    if requested == "auto":
        if has_gpu:
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_supports_bfloat16_matmul() else "float32"
    if requested == "mixed_float16" and not has_gpu:
        log.warning("mixed_float16 needs a GPU; training in float32")
        return "float32"
    if requested == "mixed_bfloat16" and not has_gpu and not cpu_supports_bfloat16_matmul():
        log.warning("this CPU has no bfloat16 matrix instructions; training in float32")
        return "float32"
    return requested


def apply_precision(policy: str) -> None:
    """Set the global dtype policy; models built afterwards use it."""
    import tf_keras

    tf_keras.mixed_precision.set_global_policy(policy)
