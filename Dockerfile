# syntax=docker/dockerfile:1
# The service-mode image: web (gunicorn + uvicorn workers), Celery worker and Celery Beat all run
# from it; docker-compose.yml picks the command. Runtime dependencies only: the embedded quick
# start's llama.cpp model (requirements-local.txt) is not part of the container.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: resolve and build every wheel once ------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /build
COPY requirements.txt .
# Every pinned runtime dependency ships a manylinux wheel for CPython 3.11, so no compiler is
# needed here; a dependency that ever needs one gets build-essential in this stage only.
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DJANGO_SETTINGS_MODULE=config.settings \
    WEB_CONCURRENCY=2

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin app

# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt \
    pip install --no-cache-dir --no-index --find-links /wheels -r /tmp/requirements.txt

WORKDIR /app
# Code stays root-owned and read-only for the app user; only var/ (ARENA_DATA_DIR) is writable.
COPY . .

# Settings refuse to import with DEBUG off and no SECRET_KEY/ALLOWED_HOSTS: these dummy values
# exist only for this RUN line (never ENV), so no secret is baked into the image. DEBUG=false
# selects whitenoise's manifest storage, the one the running container uses.
RUN DEBUG=false SECRET_KEY=collectstatic-build-only-not-a-secret ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --noinput \
    && chmod 0755 docker/entrypoint.sh \
    && mkdir -p /app/var/metrics \
    && chown -R app:app /app/var

USER app:app
EXPOSE 8000

# /healthz checks the database, broker and hub. It must be asked with a Host that ALLOWED_HOSTS
# accepts (the first configured one); the proxy handler is emptied so HTTP(S)_PROXY in the
# environment cannot route this loopback request elsewhere. Worker and beat containers run
# the same image without a web server: docker-compose.yml gives them their own healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; hosts = [h.strip().lstrip('.') for h in os.environ.get('ALLOWED_HOSTS', '').split(',') if h.strip() not in ('', '*')]; request = u.Request('http://127.0.0.1:8000/healthz', headers={'Host': hosts[0] if hosts else 'localhost'}); u.build_opener(u.ProxyHandler({})).open(request, timeout=4)"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
# --timeout: with the uvicorn worker, gunicorn's timeout is not a per-request limit. The worker
# heartbeat is sent from uvicorn's event-loop tick (every timeout/2 s) whatever requests are in
# flight, so long-lived SSE streams and slow model answers are never cut by it. What it does
# catch is an event loop blocked by synchronous code: after 60 s the worker is killed and
# replaced. --timeout 0 would switch that watchdog off, and a wedged worker would then hang
# forever, so keep it on. --graceful-timeout: on stop, open SSE streams get 30 s before the
# worker is killed; the page reconnects with Last-Event-ID and resumes.
# --keep-alive 20: a browser's next request reuses its connection instead of a new handshake.
# -w reads WEB_CONCURRENCY (gunicorn's own default for --workers), set above and in compose.
# -k: uvicorn's worker with its own X-Forwarded-For handling off (core/serving.py), so the
# client address follows ARENA_TRUSTED_PROXIES alone.
CMD ["gunicorn", "config.asgi:application", \
     "-k", "core.serving.UvicornWorker", \
     "-b", "0.0.0.0:8000", \
     "--timeout", "60", \
     "--graceful-timeout", "30", \
     "--keep-alive", "20", \
     "--access-logfile", "-"]
