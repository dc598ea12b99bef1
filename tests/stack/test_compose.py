"""The compose deployment, checked without Docker: it must agree with the repository and with
the native stack (fraud_pipelines/stack.py), which CI does run."""

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from fraud_pipelines.instance import POSTGRES_VARIABLES, instance_yaml
from fraud_pipelines.stack import DEFAULT_PORTS, HTTP_HEALTH, healthchecks

REPO = Path(__file__).resolve().parents[2]
APP = "/opt/fraud/app/"
VENV_BIN = REPO / ".venv" / "bin"
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SHARED_INSTANCE_KEYS = (
    "run_coordinator",
    "concurrency",
    "run_monitoring",
    "run_retries",
    "telemetry",
)
# Compose service -> the native stack's component with the same port and healthcheck.
NATIVE = {
    "postgres": "postgres",
    "redis": "redis",
    "mlflow": "mlflow",
    "user-code": "user-code",
    "dagster-webserver": "dagster-webserver",
    "dagster-daemon": "dagster-daemon",
    "scoring": "scoring-1",
}
CONTAINER_PORTS = {
    "postgres": DEFAULT_PORTS.postgres,
    "redis": DEFAULT_PORTS.redis,
    "mlflow": DEFAULT_PORTS.mlflow,
    "user-code": DEFAULT_PORTS.code_server,
    "dagster-webserver": DEFAULT_PORTS.dagster,
    "scoring": DEFAULT_PORTS.scoring[0],
    "scoring-lb": DEFAULT_PORTS.scoring[0],
}


def _env_example() -> set[str]:
    text = (REPO / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def _exists_in_image(arg: str) -> bool:
    """A path inside the image is a repository file copied to /opt/fraud/app."""
    return (REPO / arg.removeprefix(APP)).exists()


def test_every_service_has_a_healthcheck_and_a_source() -> None:
    """`docker compose up` must be able to build or pull each service and tell when it is up."""
    assert set(NATIVE) | {"scoring-lb"} == set(SERVICES)
    for name, service in SERVICES.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name
        if "build" in service:
            context = REPO / service["build"]["context"]
            assert context.is_dir(), name
            assert (context / service["build"]["dockerfile"]).is_file(), name
        else:
            assert ":" in service["image"], f"{name} must pin an image tag"


def test_commands_name_programs_and_files_that_exist() -> None:
    """A typo in a command or a renamed module would only show when the container starts."""
    for name, service in SERVICES.items():
        command = service.get("command")
        if command is None or "build" not in service:
            continue
        program = command[0]
        assert _exists_in_image(program) or (VENV_BIN / program).exists(), (name, program)
        for arg in command[1:]:
            if arg.startswith(APP):
                assert _exists_in_image(arg), (name, arg)
        if "-m" in command:
            module = command[command.index("-m") + 1]
            assert importlib.util.find_spec(module) is not None, (name, module)
        for value in (service.get("environment") or {}).values():
            default = str(value).rpartition(":-")[2].rstrip("}")
            if default.startswith(APP):
                assert _exists_in_image(default), (name, default)
        if program == "bentoml":
            module, _, attribute = command[2].partition(":")
            assert attribute in (REPO / (module.replace(".", "/") + ".py")).read_text()


def test_bind_mounts_and_copied_files_exist() -> None:
    """Files mounted into containers, and every COPY of the Dockerfile, are in the repository."""
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), (name, source)
            elif not source.startswith("/var/run/docker.sock"):
                assert source in COMPOSE["volumes"], f"{name}: volume {source} is not declared"
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source


def test_every_variable_is_listed_in_env_example() -> None:
    """.env.example is the one list an operator reads before `docker compose up`."""
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_TEXT))
    missing = used - _env_example()
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_ports_are_the_native_stack_defaults() -> None:
    """One set of port numbers: the stack module's defaults, inside and outside containers."""
    for name, port in CONTAINER_PORTS.items():
        service = SERVICES[name]
        text = yaml.safe_dump(service)
        assert str(port) in text, (name, port)
        for published in service.get("ports", []):
            match = re.fullmatch(r".*:\$\{(\w+):-(\d+)\}:(\d+)", published)
            assert match, (name, published)
            assert int(match.group(2)) == port and int(match.group(3)) == port, published
            assert match.group(1) in _env_example()
    assert SERVICES["scoring"]["command"][-1] == str(DEFAULT_PORTS.scoring[0])
    workspace = yaml.safe_load((REPO / "docker" / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["port"] == DEFAULT_PORTS.code_server
    nginx = (REPO / "docker" / "nginx-scoring.conf").read_text()
    assert f"server scoring:{DEFAULT_PORTS.scoring[0]}" in nginx
    assert f"listen {DEFAULT_PORTS.scoring[0]};" in nginx


def test_uis_bind_to_loopback() -> None:
    """The Dagster and MLflow UIs have no login of their own by default."""
    for name in ("dagster-webserver", "mlflow", "postgres"):
        assert all(p.startswith("127.0.0.1:") for p in SERVICES[name]["ports"]), name


@pytest.mark.parametrize("service", sorted(NATIVE))
def test_healthchecks_match_the_native_stack(service: str) -> None:
    """Compose and `python -m fraud_pipelines.stack status` decide health the same way."""
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1:] == healthchecks(DEFAULT_PORTS)[NATIVE[service]]


def test_scoring_has_two_replicas_behind_one_port() -> None:
    scoring = SERVICES["scoring"]
    assert scoring["deploy"]["replicas"] == "${FRAUD_SCORING_REPLICAS:-2}"
    assert "ports" not in scoring
    assert HTTP_HEALTH["scoring"] in SERVICES["scoring-lb"]["healthcheck"]["test"][-1]


def test_compose_instance_uses_postgres_and_the_docker_run_launcher() -> None:
    """The compose instance differs from the repository's only in storage and launcher."""
    base = yaml.safe_load((REPO / "dagster.yaml").read_text())
    compose = yaml.safe_load((REPO / "docker" / "dagster.yaml").read_text())
    for key in SHARED_INSTANCE_KEYS:
        assert compose[key] == base[key], key
    assert compose["run_launcher"]["class"] == "DockerRunLauncher"
    launcher = compose["run_launcher"]["config"]
    assert launcher["network"] == COMPOSE["networks"]["fraud"]["name"]
    named = {v.get("name") for v in COMPOSE["volumes"].values() if v}
    for volume in launcher["container_kwargs"]["volumes"]:
        assert volume.split(":")[0] in named
    platform_env = set(COMPOSE["x-platform-env"])
    assert set(launcher["env_vars"]) - {"FRAUD_ALERT_WEBHOOK_URL"} <= platform_env
    assert set(POSTGRES_VARIABLES) <= platform_env
    dagster_instance_config(str(REPO / "docker"))


def test_instance_falls_back_to_sqlite_without_postgres_variables(tmp_path: Path) -> None:
    """./scripts/up.sh and ./scripts/test.sh run with no DAGSTER_PG_* set."""
    (tmp_path / "dagster.yaml").write_text(instance_yaml({}))
    config, _ = dagster_instance_config(str(tmp_path))
    assert "storage" not in config
    env = {name: "x" for name in POSTGRES_VARIABLES}
    (tmp_path / "dagster.yaml").write_text(instance_yaml(env))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}
    with pytest.raises(ValueError, match="DAGSTER_PG_PASSWORD"):
        instance_yaml({**env, "DAGSTER_PG_PASSWORD": ""})
