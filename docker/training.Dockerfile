# The GPU training container (cluster profile): KubernetesPodOperator runs `python -m training ...` in it.
# CUDA runtime base; torch's CUDA libraries come pinned with its wheel. Build from the repo root:
#   docker build -f docker/training.Dockerfile -t mlplatform-training:0.1.0 .
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

COPY training/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt \
    && useradd --create-home --uid 10001 trainer
WORKDIR /app
COPY --chown=10001:10001 training/ /app/training/
USER 10001

ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]
