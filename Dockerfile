# Image for Prefect work pools and cloud runs: the same install as the README (scripts/install.sh).
# Build it as terrapipe:latest (the default image of flows/work-pools/kubernetes.json):
#   docker build -t terrapipe:latest .
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git make \
 && rm -rf /var/lib/apt/lists/*
# For a CPU-only image point this at a PyTorch CPU wheel index; empty = the default index.
ARG TORCH_INDEX_URL=""
ENV TORCH_INDEX_URL=${TORCH_INDEX_URL} \
    WANDB_MODE=offline \
    DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
WORKDIR /opt/terrapipe
COPY . .
RUN bash scripts/install.sh /opt/venv
ENV PATH=/opt/venv/bin:$PATH
CMD ["terrapipe", "--help"]
