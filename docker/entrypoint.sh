#!/bin/sh
# Container entrypoint for every service of the image. The web service sets MIGRATE_ON_START=true
# so the schema is current before gunicorn accepts requests; the worker and beat leave it unset,
# so only one container ever migrates. `exec` hands PID 1 to the command, which then receives
# docker's SIGTERM directly and shuts down gracefully.
set -eu

case "${MIGRATE_ON_START:-false}" in
    1 | true | yes | on)
        python manage.py migrate --noinput
        ;;
esac

exec "$@"
