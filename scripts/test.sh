#!/usr/bin/env bash
# The whole suite, twice: on the embedded default (SQLite, in-process tasks and hub), then in
# service mode against PostgreSQL and Redis with a real Celery worker process.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PG_PORT=5432
superuser_psql=""  # how to run psql as PostgreSQL's superuser here (as_postgres finds out)
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
  if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "PostgreSQL or Redis did not come up"; return 1
}

# psql as the PostgreSQL superuser, by whatever works here: over the local socket as the
# `postgres` system user (Debian's default peer authentication), or over TCP where it trusts.
as_postgres() {
  if [ -z "$superuser_psql" ]; then
    local probe=(-X -q -d postgres -c "SELECT 1")
    if [ "$(id -u)" = "0" ] && (cd / && runuser -u postgres -- psql "${probe[@]}") >/dev/null 2>&1
    then
      superuser_psql="runuser -u postgres -- psql -d postgres"
    elif (cd / && sudo -n -u postgres psql "${probe[@]}") >/dev/null 2>&1; then
      superuser_psql="sudo -n -u postgres psql -d postgres"
    else
      superuser_psql="psql -w -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres"
    fi
  fi
  # shellcheck disable=SC2086
  (cd / && $superuser_psql -X -q -v ON_ERROR_STOP=1 "$@")
}

# The tests' own role, with a password and the right to create (test) databases, so they need
# neither trust authentication nor the superuser. The password is made once per machine user
# and kept outside the checkout, so every clone and concurrent run shares it.
test_database_url() {
  local dir="$HOME/.config/llmbattler" role=llmbattler_test
  local file="$dir/test-postgres-password" password
  if [ ! -s "$file" ]; then
    mkdir -p "$dir"
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$file.$$")
    mv -n "$file.$$" "$file"; rm -f "$file.$$"
  fi
  password="$(cat "$file")"
  local sql="DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
      CREATE ROLE $role LOGIN CREATEDB PASSWORD '$password';
    ELSE
      ALTER ROLE $role LOGIN CREATEDB PASSWORD '$password';
    END IF;
  END \$\$;"
  # A concurrent run may create the role between the check and CREATE: the retry alters it.
  as_postgres -c "$sql" >/dev/null 2>&1 || as_postgres -c "$sql" >/dev/null || return 1
  if [ -z "$(as_postgres -At -c "SELECT 1 FROM pg_database WHERE datname = '$role'")" ]; then
    as_postgres -c "CREATE DATABASE $role OWNER $role" >/dev/null 2>&1 || true
  fi
  echo "postgres://$role:$password@127.0.0.1:$PG_PORT/$role"
}

status=0
(
  unset DATABASE_URL REDIS_URL ARENA_TASK_MODE ARENA_HUB
  run_pytest "embedded default: SQLite, in-process tasks" "$@"
) || status=1

ensure_services || exit 1
database_url="${TEST_DATABASE_URL:-}"
if [ -z "$database_url" ]; then
  database_url="$(test_database_url)" || { echo "could not set up the test role in PostgreSQL"; exit 1; }
fi
(
  export DATABASE_URL="$database_url"
  export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
  run_pytest "service mode: PostgreSQL + Redis + Celery worker" "$@"
) || status=1

# Migrations match the models, the code is linted and formatted as pyproject.toml says.
env -u DATABASE_URL -u REDIS_URL "$PY" manage.py makemigrations --check --dry-run >/dev/null || {
  echo "models changed without a migration (manage.py makemigrations)"; status=1; }
"$PY" -m ruff check . || status=1
"$PY" -m ruff format --check . || status=1
exit $status
