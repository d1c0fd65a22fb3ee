# healthstream consumer image: `health-consumer run` by default; the same image runs
# `migrate`, `simulate` and the ingest gateway (`health-gateway`, see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build from a scratch folder and drop it: the image runs the installed package only.
# confluent-kafka, orjson, psutil ship manylinux wheels, so no compiler is needed.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer/ consumer/
COPY schemas/ schemas/
COPY gateway/ gateway/
COPY common/ common/
RUN pip install . \
    && rm -rf /src \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --create-home app

WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# The sidecar (/livez, /readyz, /metrics) must listen on all interfaces in a container.
ENV HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8000
EXPOSE 8000

ENTRYPOINT ["health-consumer"]
CMD ["run"]
