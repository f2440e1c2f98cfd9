"""Precision settings fall back cleanly on a machine without a GPU."""

from __future__ import annotations

from pathlib import Path

import worker  # noqa: F401
from worker.hardware import configure_devices, cpu_supports_bfloat16_matmul, resolve_precision


def test_gpu_settings_fall_back_on_cpu() -> None:
    assert configure_devices() == []  # no GPU on this machine (CI's is the same kind)
    bfloat16 = "mixed_bfloat16" if cpu_supports_bfloat16_matmul() else "float32"
    assert resolve_precision("auto") == bfloat16
    assert resolve_precision("mixed_float16") == "float32"  # no fast float16 kernels on CPU
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("mixed_bfloat16") == bfloat16


def test_bfloat16_detection_reads_the_cpu_flags() -> None:
    flags = Path("/proc/cpuinfo").read_text().split()
    assert cpu_supports_bfloat16_matmul() == any(f in flags for f in ("amx_bf16", "avx512_bf16"))
