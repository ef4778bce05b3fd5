# One image for the API and the workers; docker-compose.yml picks the command.
# CPU torch by default; for GPU workers build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    LLOME_DATA_DIR=/data

WORKDIR /app
# torch first and pinned, from the chosen index (a bare `torch` from PyPI pulls a CUDA build).
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml alembic.ini ./
COPY llome_core ./llome_core
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir . && useradd --create-home --uid 1000 llome && mkdir -p /data && chown llome /data
USER llome
VOLUME ["/data"]
EXPOSE 8000
# Overridden per service in docker-compose.yml.
CMD ["llome", "serve", "--host", "0.0.0.0", "--port", "8000"]
