"""The training side: Celery worker and the fine-tuning pipeline.

transformers' TensorFlow models need Keras 2 (tf-keras); the switch must be set before
TensorFlow is first imported anywhere in the process, so it lives here, with the switches that
keep TensorFlow's and transformers' start-up chatter out of the user's terminal (all of it comes
back with FINETUNE_LOG_LEVEL=DEBUG).
"""

import os

from app.core.settings import get_settings

VERBOSE = get_settings().log_level.upper() == "DEBUG"

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if VERBOSE else "3")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if VERBOSE else "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
