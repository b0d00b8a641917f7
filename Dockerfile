# switchyard: the gateway, its console and the embedded local model (SmolLM2 via llama.cpp).
#   docker build -t switchyard .
#   docker run -p 8080:8080 -v switchyard-data:/var/lib/switchyard switchyard
# Build stage: llama-cpp-python compiles llama.cpp here, so the runtime image needs no compiler.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY switchyard ./switchyard
RUN python -m venv /opt/switchyard \
 && /opt/switchyard/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/switchyard/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# libgomp: llama.cpp's threads; curl-free healthcheck (python is here anyway).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/switchyard --create-home switchyard
COPY --from=build /opt/switchyard /opt/switchyard
ENV PATH=/opt/switchyard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SWITCHYARD_HOST=0.0.0.0 \
    SWITCHYARD_PORT=8080 \
    SWITCHYARD_DATA_DIR=/var/lib/switchyard \
    SWITCHYARD_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/switchyard
VOLUME ["/var/lib/switchyard"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
# SIGTERM drains: no new connections, requests in flight finish and settle, then the workers exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard"]
CMD ["serve"]
