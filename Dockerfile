# GreedySign inference service. It runs on the GPU when the container is given one
# (docker run --gpus all ...) and on the CPU otherwise.
#
#   docker build -t greedysign .
#   docker run --gpus all -p 8000:8000 greedysign
#   docker run --gpus all -p 8000:8000 -v "$PWD/runs/NAME:/models:ro" \
#       -e GREEDYSIGN_MODEL=/models/model.pt greedysign
#
# Every setting is an environment variable GREEDYSIGN_<NAME> (service/settings.py), e.g.
# GREEDYSIGN_API_KEY, GREEDYSIGN_MAX_BATCH_SIZE, GREEDYSIGN_CORS_ORIGINS. Without
# GREEDYSIGN_MODEL the service serves the model shipped in the package.
#
# The base image's PyTorch is the project's pin (torch 2.14.1 built for CUDA 13.0), so pip
# keeps it rather than downloading it again.
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY . /tmp/greedysign
RUN pip install --no-cache-dir /tmp/greedysign \
    && rm -rf /tmp/greedysign \
    && useradd --create-home --uid 10001 greedysign

USER 10001
WORKDIR /home/greedysign
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["greedysign", "serve", "--host", "0.0.0.0", "--port", "8000"]
