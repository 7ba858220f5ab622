# research-service on its embedded defaults: builtin model, local search over the stdlib docs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RESEARCH_HOST=0.0.0.0 \
    RESEARCH_PORT=8080 \
    RESEARCH_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY research_service ./research_service
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin research \
    && mkdir -p /data \
    && chown research:research /data

USER research
# The corpus index (and later the run store) lives here; keep it across restarts.
VOLUME ["/data"]
EXPOSE 8080

# The first start indexes the standard library's docs before the port opens: allow for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RESEARCH_PORT', '8080') + '/healthz', timeout=4)"]

CMD ["research-service", "serve", "--host", "0.0.0.0"]
