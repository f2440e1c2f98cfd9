"""Silence what native code prints while TensorFlow starts.

TensorFlow 2.21 logs through absl before `TF_CPP_MIN_LOG_LEVEL` takes effect: "All log messages
before absl::InitializeLog()", "Could not find cuda drivers", a `cuInit` error on machines
without a GPU. They are written by C++ straight to file descriptor 2, so the only way to keep
them from a user's terminal is to point that descriptor elsewhere while TensorFlow loads and
discovers its devices. Python exceptions are unaffected (they are raised, and printed after).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from worker import VERBOSE


@contextmanager
def native_start_up_silenced() -> Iterator[None]:
    """Discard fd 2 for the duration, unless FINETUNE_LOG_LEVEL=DEBUG."""
    if VERBOSE:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow() -> list[str]:
    """Import TensorFlow, transformers and the pipeline, and configure the devices, quietly.
    Returns the GPUs found."""
    with native_start_up_silenced():
        import worker.pipeline.run  # noqa: F401
        from worker.hardware import configure_devices

        return configure_devices()
