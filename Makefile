# The two commands: `make run` (quick start) and `make test` (the whole suite).
.PHONY: run test install install-test install-bench lint worker beat web bench-ratings bench-recompute bench-load bench-client bench-local bench-identity bench-fragility bench-sampling bench-timing test-llm-server screenshots

run: install
	.venv/bin/python manage.py runarena

test: install-test
	scripts/test.sh

install:
	scripts/install.sh run

install-test:
	scripts/install.sh test

lint:
	.venv/bin/python -m ruff check .

# Service mode pieces (see docker-compose.yml for the same with containers).
# WEB_BIND: where gunicorn listens (make web WEB_BIND=127.0.0.1:9000); WEB_CONCURRENCY: its
# worker processes, as in the image. The worker class is the image's too: uvicorn with its own
# X-Forwarded-For handling off (core/serving.py; ARENA_TRUSTED_PROXIES decides).
WEB_BIND ?= 0.0.0.0:8000
WEB_CONCURRENCY ?= 2

web:
	.venv/bin/python manage.py collectstatic --noinput --verbosity 0
	.venv/bin/gunicorn config.asgi:application -k core.serving.UvicornWorker -b $(WEB_BIND) -w $(WEB_CONCURRENCY) --keep-alive 20

# A few task threads: a generation task only claims its reply; the replies stream in the
# worker's event loop (up to ARENA_MAX_REPLIES_PER_PROCESS at once).
worker:
	.venv/bin/celery -A config worker -Q llm,default -P threads -c 8 --loglevel INFO

beat:
	.venv/bin/celery -A config beat --loglevel INFO --schedule var/celerybeat-schedule

test-llm-server:
	.venv/bin/python -m llm_providers.testing --host 127.0.0.1 --port 8765

# The llama.cpp wheel install.sh built and cached: the benchmark peers' install reuses it.
WHEELS ?= $(or $(LLMBATTLER_WHEELS),$(HOME)/.cache/llmbattler/wheels)

# The benchmarks' peers and tools (requirements-bench.txt), with the cached llama.cpp wheel.
install-bench: install-test
	.venv/bin/python -m pip install --quiet --find-links $(WHEELS) --only-binary llama-cpp-python -r requirements-bench.txt

bench-ratings: install-bench
	.venv/bin/python -m benchmarks.ratings

bench-recompute: install-test
	.venv/bin/python -m benchmarks.recompute

bench-load: install-bench
	.venv/bin/python -m benchmarks.load

bench-client: install-test
	.venv/bin/python -m benchmarks.client

bench-fragility: install-test
	.venv/bin/python -m benchmarks.fragility

bench-sampling: install-test
	.venv/bin/python -m benchmarks.sampling

bench-timing: install-bench
	.venv/bin/python -m benchmarks.timing

bench-identity: install-test
	.venv/bin/python -m benchmarks.identity

# docs/screenshots/*.png from a throwaway arena in a temporary directory (never var/).
screenshots: install-test
	.venv/bin/python scripts/screenshots.py

bench-local: install
	.venv/bin/python -m benchmarks.local_models
