#!/usr/bin/env bash
# The whole suite, twice: on the embedded default (SQLite, in-process tasks and hub), then in
# service mode against PostgreSQL and Redis with a real Celery worker process.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PYTHONUNBUFFERED=1
mkdir -p var

run_pytest() {
  local label="$1"; shift
  printf '\n\033[1m==> %s\033[0m\n' "$label"
  "$PY" -m pytest "$@"
  local rc=$?
  # pytest exits 5 when it collected nothing: never a pass.
  if [ $rc -eq 5 ]; then echo "no tests were collected ($label)"; return 1; fi
  return $rc
}

ensure_services() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "PostgreSQL or Redis did not come up"; return 1
}

status=0
(
  unset DATABASE_URL REDIS_URL ARENA_TASK_MODE ARENA_HUB
  run_pytest "embedded default: SQLite, in-process tasks" "$@"
) || status=1

ensure_services || exit 1
(
  export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/llmbattler}"
  export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
  run_pytest "service mode: PostgreSQL + Redis + Celery worker" "$@"
) || status=1

"$PY" -m ruff check . || status=1
exit $status
