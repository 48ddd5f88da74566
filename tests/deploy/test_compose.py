"""docker-compose.yml: it validates, and the services are wired the way docs/monitoring.md promises.

`docker-compose config` (v1, which works without a Docker engine) resolves the file with an empty
environment and an empty env file, so the defaults are what is checked: the CPU server, Prometheus and
Grafana start by default, the gpu profile adds the GPU server (with an NVIDIA GPU reservation) and the DCGM
exporter, the tracing profile the OpenTelemetry collector and Jaeger, every port is published on 127.0.0.1,
every mounted file is in the repository, and Prometheus, Grafana and the collector find what they are pointed
at.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT, find_tool, run_tool

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO_ROOT / "monitoring" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = REPO_ROOT / "monitoring" / "grafana" / "provisioning"
GRAFANA_DATASOURCES = GRAFANA_PROVISIONING / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARD_PROVIDERS = GRAFANA_PROVISIONING / "dashboards" / "dashboards.yml"
DASHBOARD = REPO_ROOT / "monitoring" / "grafana" / "dashboards" / "modelserver.json"
COLLECTOR_CONFIG = REPO_ROOT / "monitoring" / "otel-collector" / "config.yaml"

DEFAULT_SERVICES = {"modelserver", "prometheus", "grafana"}
GPU_PROFILE_SERVICES = {"modelserver-gpu", "dcgm-exporter"}
TRACING_PROFILE_SERVICES = {"otel-collector", "jaeger"}
# What docs/monitoring.md and the compose file's header tell the servers to export to with the profile.
DOCUMENTED_OTLP_ENDPOINT = "http://otel-collector:4318"
JAEGER_OTLP_GRPC_PORT = 4317  # Jaeger v2 receives OTLP on the standard ports
SERVER_IMAGE = "onnx-classifier-serving"
SERVICE_JOB = "onnx-classifier-serving"
# The app's defaults of SERVE_GRACEFUL_SHUTDOWN_S and SERVE_SHUTDOWN_DELAY_S (app/settings.py).
DEFAULT_GRACEFUL_SHUTDOWN_S = 30
DEFAULT_SHUTDOWN_DELAY_S = 0

Service = dict[str, Any]


def compose_config(*, profile: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker-compose config` of the file, parsed, with only PATH, HOME and `env` in the environment."""
    tool = find_tool("docker-compose")
    variables = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    # An empty env file instead of a developer's .env (docker-compose refuses /dev/null: "not a file").
    with tempfile.TemporaryDirectory() as scratch:
        empty_env_file = Path(scratch) / "empty.env"
        empty_env_file.write_text("")
        command = ["env", "-i", *(f"{key}={value}" for key, value in variables.items()), tool,
                   "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file)]
        if profile:
            command += ["--profile", profile]
        result = run_tool([*command, "config"], timeout=60)
    return yaml.safe_load(result.stdout)


@functools.cache
def default_config() -> dict[str, Any]:
    return compose_config()


@functools.cache
def gpu_config() -> dict[str, Any]:
    return compose_config(profile="gpu")


def services(config: dict[str, Any]) -> dict[str, Service]:
    return config["services"]


def started_by(config: dict[str, Any], profiles: set[str]) -> set[str]:
    """The services `docker compose up` starts with these profiles active (docker-compose v1's `config`
    lists every service, so the profiles decide)."""
    return {name for name, service in services(config).items()
            if not service.get("profiles") or set(service["profiles"]) & profiles}


def published_ports(service: Service) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port: `config` writes
    `ADDRESS:HOST:CONTAINER/tcp`, or a mapping when no address is given (all interfaces)."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", "0.0.0.0"), int(port["published"]), int(port["target"])))
            continue
        match = re.fullmatch(r"(?:(?P<address>[\d.]+):)?(?P<host>\d+):(?P<container>\d+)(?:/tcp)?", str(port))
        assert match, f"unexpected port syntax {port!r}"
        found.append((match["address"] or "0.0.0.0", int(match["host"]), int(match["container"])))
    return found


def bind_mounts(service: Service) -> dict[str, Path]:
    """Container path -> host path of each bind mount (named volumes left out)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith(("/", ".")):
            mounts[target] = Path(source)
    return mounts


def host_path(service: Service, container_path: str) -> Path | None:
    """Where a path inside the container comes from on the host, through the service's bind mounts."""
    wanted = PurePosixPath(container_path)
    for target, source in bind_mounts(service).items():
        if wanted == PurePosixPath(target) or PurePosixPath(target) in wanted.parents:
            return source / wanted.relative_to(target)
    return None


def seconds(duration: str) -> float:
    """A compose duration such as 40s, 1m30s or 1m."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(amount) * units[unit] for amount, unit in parts)


def server_services(config: dict[str, Any]) -> dict[str, Service]:
    return {name: service for name, service in services(config).items()
            if str(service.get("image", "")).startswith(SERVER_IMAGE + ":")}


# The file validates, and `up` starts the right services ---------------------------------------------------


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_compose_file_validates(profile: str | None) -> None:
    config = gpu_config() if profile else default_config()
    assert set(services(config)) == DEFAULT_SERVICES | GPU_PROFILE_SERVICES | TRACING_PROFILE_SERVICES, (
        sorted(services(config)))


def test_up_alone_starts_the_cpu_server_prometheus_and_grafana() -> None:
    assert started_by(default_config(), set()) == DEFAULT_SERVICES


def test_gpu_profile_adds_the_gpu_server_and_the_dcgm_exporter() -> None:
    assert started_by(gpu_config(), {"gpu"}) == DEFAULT_SERVICES | GPU_PROFILE_SERVICES
    for name in GPU_PROFILE_SERVICES:
        assert services(gpu_config())[name].get("profiles") == ["gpu"], name


# The model servers --------------------------------------------------------------------------------------


def test_servers_build_the_image_targets() -> None:
    found = {name: (service["build"].get("target"), service["image"])
             for name, service in server_services(gpu_config()).items()}
    assert found == {"modelserver": ("cpu", f"{SERVER_IMAGE}:cpu"),
                     "modelserver-gpu": ("gpu", f"{SERVER_IMAGE}:gpu")}
    for name, service in server_services(gpu_config()).items():
        assert Path(service["build"]["context"]) == REPO_ROOT, f"{name}: the build context is the repository"
        assert "healthcheck" not in service, f"{name}: the healthcheck is the image's (app.healthcheck)"
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: no restart"


def test_stop_grace_period_outlasts_the_drain() -> None:
    """Compose sends SIGKILL after stop_grace_period: it must leave the server its delay and whole drain time."""
    for name, service in server_services(gpu_config()).items():
        environment = service.get("environment", {})
        drain = float(environment.get("SERVE_GRACEFUL_SHUTDOWN_S", DEFAULT_GRACEFUL_SHUTDOWN_S))
        delay = float(environment.get("SERVE_SHUTDOWN_DELAY_S", DEFAULT_SHUTDOWN_DELAY_S))
        grace = seconds(str(service.get("stop_grace_period", "10s")))
        assert grace >= delay + drain + 5, (
            f"{name}: stop_grace_period {grace:.0f} s, delay {delay:.0f} s and drain up to {drain:.0f} s"
        )


def test_gpu_server_reserves_an_nvidia_gpu() -> None:
    for name in ("modelserver-gpu", "dcgm-exporter"):
        deploy = services(gpu_config())[name].get("deploy", {})
        devices = deploy.get("resources", {}).get("reservations", {}).get("devices", [])
        assert any(device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", [])
                   for device in devices), f"{name}: no NVIDIA GPU reservation in {devices}"
    assert "deploy" not in services(default_config())["modelserver"], "the CPU server reserves no GPU"


# Ports, images and mounts -------------------------------------------------------------------------------


def test_ports_are_published_on_loopback_only() -> None:
    host_ports = []
    for name, service in services(gpu_config()).items():
        for address, host, _container in published_ports(service):
            assert address == "127.0.0.1", f"{name} publishes port {host} on {address}, not 127.0.0.1"
            host_ports.append(host)
    assert len(host_ports) == len(set(host_ports)), f"a host port is published twice: {sorted(host_ports)}"
    wanted = {"modelserver": 8000, "prometheus": 9090, "grafana": 3000}
    for name, port in wanted.items():
        assert port in [host for _, host, _ in published_ports(services(default_config())[name])], name


def test_every_server_serves_grpc_on_the_published_8001() -> None:
    """gRPC on the container's 8001 (Triton's and KServe's convention), published on the host's 8002 (8003 for
    the gpu server, whose HTTP API has the host's 8001)."""
    wanted = {"modelserver": 8002, "modelserver-gpu": 8003}
    for name, service in server_services(gpu_config()).items():
        assert service["environment"]["SERVE_GRPC_PORT"] == "8001", name
        assert (wanted[name], 8001) in {(host, container) for _, host, container in published_ports(service)}, name


def test_publish_address_can_be_opened_on_purpose() -> None:
    config = compose_config(env={"PUBLISH_ADDRESS": "0.0.0.0", "GRAFANA_ADMIN_PASSWORD": "s3cret"})
    assert published_ports(services(config)["grafana"])[0][0] == "0.0.0.0"
    assert services(config)["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_third_party_images_are_pinned() -> None:
    for name, service in services(gpu_config()).items():
        if "build" in service:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag and re.search(r"\d", tag) and tag != "latest", (
            f"{name}: image {image!r} is not pinned to a version tag")


def test_mounted_files_exist_in_the_repository() -> None:
    for name, service in services(gpu_config()).items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert REPO_ROOT in (source, *source.parents), f"{name}: {source} is outside the repository"
            [volume] = [str(v) for v in service["volumes"] if str(v).split(":")[1] == target]
            assert volume.endswith(":ro"), f"{name}: {target} should be mounted read-only"


# Prometheus ---------------------------------------------------------------------------------------------


def prometheus_service() -> Service:
    return services(gpu_config())["prometheus"]


def test_prometheus_reads_the_repository_config() -> None:
    flags = dict(str(arg).split("=", 1) for arg in prometheus_service()["command"] if "=" in str(arg))
    config = host_path(prometheus_service(), flags["--config.file"])
    assert config is not None and config.resolve() == PROMETHEUS_CONFIG, (
        f"--config.file={flags['--config.file']} is {config}, not {PROMETHEUS_CONFIG}")
    # Rule files resolve relative to the config file, inside the same mount.
    for rule_file in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]:
        inside = PurePosixPath(flags["--config.file"]).parent / rule_file
        assert (path := host_path(prometheus_service(), str(inside))) is not None and path.is_file(), inside


def test_prometheus_scrapes_whichever_server_runs() -> None:
    """The service job discovers every model server service by its compose name and container port; the
    DCGM job the exporter."""
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    assert SERVICE_JOB in jobs, f"no scrape job {SERVICE_JOB!r} (the alerts select job={SERVICE_JOB!r})"

    def discovered(job: dict[str, Any]) -> set[tuple[str, int]]:
        found = {(name, sd["port"]) for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                found.add((host, int(port)))
        return found

    wanted = {(name, 8000) for name in server_services(gpu_config())}
    for name, service in server_services(gpu_config()).items():
        assert {container for _, _, container in published_ports(service)} == {8000, 8001}, name
    assert discovered(jobs[SERVICE_JOB]) == wanted
    assert ("dcgm-exporter", 9400) in discovered(jobs["dcgm-exporter"])


def test_prometheus_port_is_9090_inside() -> None:
    assert [container for _, _, container in published_ports(prometheus_service())] == [9090]


# Grafana ------------------------------------------------------------------------------------------------


def grafana_service() -> Service:
    return services(default_config())["grafana"]


def test_grafana_has_anonymous_viewers_and_a_documented_admin() -> None:
    env = grafana_service()["environment"]
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true", env
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer", env
    admin = (env.get("GF_SECURITY_ADMIN_USER"), env.get("GF_SECURITY_ADMIN_PASSWORD"))
    assert admin == ("admin", "admin"), f"the documented default admin login is admin/admin, not {admin}"
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]["environment"]
    assert raw["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-admin}", raw


def test_grafana_opens_on_the_dashboard() -> None:
    home = grafana_service()["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (path := host_path(grafana_service(), home)) is not None and path.resolve() == DASHBOARD, home


def test_grafana_provisioning_is_mounted_and_points_at_prometheus() -> None:
    provisioning = host_path(grafana_service(), "/etc/grafana/provisioning")
    assert provisioning is not None and (provisioning / "datasources" / GRAFANA_DATASOURCES.name).is_file()
    assert (provisioning / "dashboards" / GRAFANA_DASHBOARD_PROVIDERS.name).is_file()

    [datasource] = yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090", datasource
    # $__rate_interval is four scrape intervals: Grafana must know the real one.
    scrape_interval = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape_interval

    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [item for item in dashboard["templating"]["list"] if item["name"] == "datasource"]
    assert variable["current"]["value"] == datasource["uid"], "the dashboard defaults to another data source"

    [provider] = yaml.safe_load(GRAFANA_DASHBOARD_PROVIDERS.read_text())["providers"]
    folder = host_path(grafana_service(), provider["options"]["path"])
    assert folder is not None and (folder / DASHBOARD.name).resolve() == DASHBOARD, provider



# Tracing ------------------------------------------------------------------------------------------------


def test_tracing_profile_adds_the_collector_and_jaeger() -> None:
    config = compose_config(profile="tracing")
    assert started_by(config, {"tracing"}) == DEFAULT_SERVICES | TRACING_PROFILE_SERVICES
    for name in TRACING_PROFILE_SERVICES:
        assert services(config)[name].get("profiles") == ["tracing"], name
    assert ("127.0.0.1", 16686, 16686) in published_ports(services(config)["jaeger"])


def test_servers_trace_only_when_given_an_endpoint() -> None:
    """Off by default (an empty endpoint turns nothing on: app.observability.tracing); the documented endpoint
    reaches every server, with the 10% sampler."""
    for config, endpoint in ((default_config(), ""),
                             (compose_config(env={"OTEL_EXPORTER_OTLP_ENDPOINT": DOCUMENTED_OTLP_ENDPOINT}),
                              DOCUMENTED_OTLP_ENDPOINT)):
        for name, service in server_services(config).items():
            environment = service["environment"]
            assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint, name
            assert environment["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio", name
            assert float(environment["OTEL_TRACES_SAMPLER_ARG"]) == 0.1, name
            assert "OTEL_TRACES_EXPORTER" not in environment, name


def test_collector_receives_at_the_documented_endpoint_and_exports_to_jaeger() -> None:
    collector = services(gpu_config())["otel-collector"]
    [flag] = [str(arg) for arg in collector["command"] if str(arg).startswith("--config=")]
    config_path = host_path(collector, flag.removeprefix("--config="))
    assert config_path is not None and config_path.resolve() == COLLECTOR_CONFIG, flag
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())

    host, port = DOCUMENTED_OTLP_ENDPOINT.removeprefix("http://").split(":")
    assert host == "otel-collector"
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"] == f"0.0.0.0:{port}"
    receiving = {int(protocol["endpoint"].rsplit(":", 1)[1]) for protocol in protocols.values()}
    assert {container for _, _, container in published_ports(collector)} == receiving

    [pipeline] = config["service"]["pipelines"].values()
    for part in ("receivers", "processors", "exporters"):
        assert set(pipeline[part]) <= set(config[part]), f"the pipeline's {part} are not all defined"
    assert "otlp" in pipeline["receivers"]
    jaeger_endpoint = config["exporters"]["otlp/jaeger"]["endpoint"]
    assert "otlp/jaeger" in pipeline["exporters"]
    assert jaeger_endpoint == f"jaeger:{JAEGER_OTLP_GRPC_PORT}" and "jaeger" in services(gpu_config())
