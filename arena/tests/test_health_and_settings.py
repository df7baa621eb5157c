"""/healthz, the embedded default's settings, and settings that must fail loudly."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

ROOT = settings.BASE_DIR


def run_django(code: str, **env) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",
            "REDIS_URL",
            "DEBUG",
            "SECRET_KEY",
            "ALLOWED_HOSTS",
            "ARENA_TASK_MODE",
            "ARENA_HUB",
        )
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=ROOT,
        env=clean | {"DJANGO_SETTINGS_MODULE": "config.settings"} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db
def test_healthz_reports_the_database_the_broker_and_active_models(client, make_model):
    make_model("One")
    make_model("Two", status="inactive")
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["active_models"] == 1
    expected = "ok" if settings.ARENA_TASK_MODE == "celery" else "in-process"
    assert body["broker"] == expected
    assert "version" not in response.content.decode().lower()


def test_healthz_answers_503_when_the_database_is_down():
    result = run_django(
        "from django.test import Client\n"
        "r = Client().get('/healthz', HTTP_HOST='localhost')\n"
        "print(r.status_code, r.content.decode())",
        DATABASE_URL="postgres://postgres@127.0.0.1:1/nowhere",
    )
    assert result.returncode == 0, result.stderr
    status, body = result.stdout.strip().split(" ", 1)
    assert status == "503"
    assert json.loads(body)["database"] == "unavailable"
    assert "127.0.0.1:1" not in body and "Traceback" not in body


def test_healthz_answers_503_when_redis_is_down(tmp_path):
    result = run_django(
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from django.test import Client\n"
        "r = Client().get('/healthz', HTTP_HOST='localhost')\n"
        "print(r.status_code, r.content.decode())",
        REDIS_URL="redis://127.0.0.1:1/0",
        ARENA_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    status, body = result.stdout.strip().split(" ", 1)
    body = json.loads(body)
    assert status == "503"
    assert body["database"] == "ok"
    assert body["broker"] == "unavailable" and body["hub"] == "unavailable"


def test_healthz_answers_503_when_the_database_is_not_migrated(tmp_path):
    result = run_django(
        "from django.test import Client\n"
        "r = Client().get('/healthz', HTTP_HOST='localhost')\n"
        "print(r.status_code, r.content.decode())",
        ARENA_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    status, body = result.stdout.strip().split(" ", 1)
    assert status == "503"
    assert json.loads(body)["database"] == "unavailable"


def test_the_embedded_default_needs_no_environment_at_all():
    result = run_django(
        "from django.conf import settings as s\n"
        "print(s.DATABASES['default']['ENGINE'], s.ARENA_TASK_MODE, s.ARENA_HUB, s.DEBUG, "
        "bool(s.SECRET_KEY))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "inprocess",
        "memory",
        "True",
        "True",
    ]


def test_service_mode_follows_database_url_and_redis_url():
    result = run_django(
        "from django.conf import settings as s\n"
        "print(s.DATABASES['default']['ENGINE'], s.ARENA_TASK_MODE, s.ARENA_HUB, "
        "s.CELERY_BROKER_URL)",
        DATABASE_URL="postgres://u:p@db:5432/arena",
        REDIS_URL="redis://redis:6379/0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "celery",
        "redis",
        "redis://redis:6379/0",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DEBUG": "false", "ALLOWED_HOSTS": "x.example"},
            "SECRET_KEY must be set when DEBUG is off",
        ),
        ({"DEBUG": "false", "SECRET_KEY": "k" * 50}, "ALLOWED_HOSTS must be set when DEBUG is off"),
        ({"DEBUG": "maybe"}, "DEBUG must be one of"),
        ({"ARENA_MAX_TURNS": "ten"}, "ARENA_MAX_TURNS must be a whole number, got 'ten'"),
        ({"ARENA_MAX_TURNS": "0"}, "ARENA_MAX_TURNS must be at least 1"),
        ({"ARENA_TASK_MODE": "celery"}, "REDIS_URL must be set"),
        ({"ARENA_HUB": "kafka"}, "ARENA_HUB must be one of"),
        ({"LLM_TIMEOUT_TOTAL": "soon"}, "LLM_TIMEOUT_TOTAL must be a number"),
    ],
)
def test_bad_settings_stop_the_process_with_a_message_naming_the_variable(env, message):
    result = run_django("", **env)
    assert result.returncode != 0
    assert message in result.stderr
