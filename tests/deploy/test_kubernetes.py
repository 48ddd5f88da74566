"""The Kubernetes manifests in k8s/: they render, pass schema validation, and keep the promises users rely on.

`kubectl kustomize` renders each overlay and k8s/kserve. Built-in resources are validated by
kubernetes-validate --strict against the oldest supported Kubernetes (1.30, for the preStop `sleep` action)
and the newest. The Prometheus operator's resources are validated against typed models generated from its
CRDs (cloudcoil-models-prometheus-operator); KServe's resources by their fields, with their containers
validated as a Pod's. The rest are the invariants that hold the pieces together: probes, drain timing,
the HPA's metric against the prometheus-adapter rule and a live /metrics scrape, security settings, GPU.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT, find_tool, run_tool

K8S = REPO_ROOT / "k8s"
TARGETS = {"cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu", "kserve": K8S / "kserve"}
OVERLAYS = ("cpu", "gpu")
ALERTS = REPO_ROOT / "monitoring" / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = K8S / "base" / "prometheusrule.yaml"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
SYNC_SCRIPT = REPO_ROOT / "scripts" / "sync_prometheus_rule.py"

# The oldest Kubernetes the manifests support (the preStop `sleep` action is on by default from 1.30) and the
# newest that kubernetes-validate has schemas for.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CUSTOM_GROUPS = {"monitoring.coreos.com", "serving.kserve.io"}
OVERLAY_KINDS = {"ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                 "ServiceMonitor", "PrometheusRule"}
KSERVE_KINDS = {"ClusterServingRuntime", "InferenceService"}
REST_RUNTIME = "onnx-classifier-serving"
NAME_LABEL = "app.kubernetes.io/name"
GPU = "nvidia.com/gpu"
# Fields of a ServingRuntime's spec (KServe's CRD, serving.kserve.io_clusterservingruntimes.yaml).
SERVING_RUNTIME_SPEC_FIELDS = {
    "affinity", "annotations", "builtInAdapter", "containers", "disabled", "grpcDataEndpoint",
    "grpcEndpoint", "hostIPC", "httpDataEndpoint", "imagePullSecrets", "labels", "multiModel", "nodeSelector",
    "protocolVersions", "replicas", "resourceClaims", "schedulerName", "storageHelper",
    "supportedModelFormats", "tolerations", "volumes", "workerSpec",
}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# Fields of an InferenceService's predictor.model that a core Container does not have.
MODEL_SPEC_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}

Manifest = dict[str, Any]


# Rendering and lookups ---------------------------------------------------------------------------------


@functools.cache
def render(target: str) -> tuple[Manifest, ...]:
    """The resources `kubectl kustomize` renders for a target (an overlay name or `kserve`)."""
    result = run_tool([find_tool("kubectl"), "kustomize", str(TARGETS[target])])
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def one(manifests: tuple[Manifest, ...], kind: str) -> Manifest:
    found = [item for item in manifests if item["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def server_container(manifests: tuple[Manifest, ...]) -> Manifest:
    containers = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, [item["name"] for item in containers]
    return containers[0]


def settings_of(manifests: tuple[Manifest, ...]) -> dict[str, str]:
    """The ConfigMap the server container takes its environment from."""
    refs = [source["configMapRef"]["name"] for source in server_container(manifests).get("envFrom", [])]
    assert len(refs) == 1, f"the server takes its settings from one ConfigMap, not {refs}"
    maps = [item for item in manifests if item["kind"] == "ConfigMap" and item["metadata"]["name"] == refs[0]]
    assert maps, f"envFrom names ConfigMap {refs[0]}, which is not rendered"
    return maps[0]["data"]


def is_custom(manifest: Manifest) -> bool:
    return manifest["apiVersion"].split("/")[0] in CUSTOM_GROUPS


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def seconds(duration: str) -> float:
    """A Prometheus duration such as 15s, 1m or 1m30s, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def quantity(value: str | int) -> float:
    """A CPU quantity (2, "1500m") in cores."""
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def import_or_skip(module: str, package: str) -> ModuleType:
    """Import a checker library; skip when absent, fail under CI (as conftest.find_tool does for tools)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        reason = f"{package} is not installed: `make test` installs it (the `test` extra)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def load_sync_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_prometheus_rule", SYNC_SCRIPT)
    assert spec is not None and spec.loader is not None, SYNC_SCRIPT
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adapter_rules() -> list[Manifest]:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    rules = values["rules"]["custom"]
    assert rules, f"{ADAPTER_VALUES} defines no rules.custom"
    return rules


def series_name(rule: Manifest) -> str:
    """The one metric a prometheus-adapter rule's seriesQuery selects, written as `name{...}`."""
    match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}", rule["seriesQuery"].strip())
    assert match, f"seriesQuery should be `metric{{namespace!=\"\",pod!=\"\"}}`, not {rule['seriesQuery']}"
    return match.group(1)


def exposed_name(rule: Manifest) -> str:
    """The custom-metrics API name the adapter gives the rule's series: `name.matches` applied, `name.as`
    expanded (Go's $1 / ${1}; $0, or $1 with one group, when `as` is absent)."""
    name = series_name(rule)
    naming = rule.get("name", {})
    match = re.search(naming.get("matches", ".*"), name)
    assert match, f"name.matches {naming.get('matches')!r} does not match the series {name}"
    default = "$1" if match.re.groups == 1 else "$0"
    template = naming.get("as", default)
    return re.sub(r"\$\{?(\d+)\}?", lambda group: match.group(int(group.group(1))), template)


def hpa_metric_names(manifests: tuple[Manifest, ...]) -> list[str]:
    metrics = one(manifests, "HorizontalPodAutoscaler")["spec"]["metrics"]
    return [metric["pods"]["metric"]["name"] for metric in metrics if metric["type"] == "Pods"]


# 1. Rendering ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_kustomize_renders(target: str) -> None:
    manifests = render(target)
    kinds = {item["kind"] for item in manifests}
    assert kinds == (KSERVE_KINDS if target == "kserve" else OVERLAY_KINDS), kinds
    for item in manifests:
        labels = item["metadata"].get("labels", {})
        assert labels.get(NAME_LABEL) == "onnx-classifier-serving", f"{item['kind']} lacks the common labels"


# 2. Built-in resources: kubernetes-validate --strict ------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", OVERLAYS)
def test_built_in_resources_pass_strict_validation(target: str, version: str, tmp_path: Path) -> None:
    built_in = [item for item in render(target) if not is_custom(item)]
    assert built_in
    path = tmp_path / f"{target}.yaml"
    path.write_text(yaml.safe_dump_all(built_in, sort_keys=False))
    validate = [find_tool("kubernetes-validate"), "--strict", "--kubernetes-version", version]
    result = run_tool([*validate, str(path)])
    output = result.stdout + result.stderr
    # A resource with no schema (an apiVersion typo, a removed API) is only warned about: here it fails.
    assert "Couldn't find schema" not in output, output
    assert output.count("passed") == len(built_in), output


def validate_as_pod(containers: list[Manifest], volumes: list[Manifest], tmp_path: Path) -> None:
    """Validate containers (and volumes) strictly as a Pod's: KServe's runtime and model specs embed them."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kserve-check"},
           "spec": {"containers": containers, "volumes": volumes}}
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod, sort_keys=False))
    for version in KUBERNETES_VERSIONS:
        run_tool([find_tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, str(path)])


# 3. Custom resources ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", OVERLAYS)
def test_prometheus_operator_resources_match_their_crds(target: str) -> None:
    """Typed models generated from the operator's CRDs accept them, and know every field they set: a field
    the model dropped (a typo, a field of another version) fails the round trip."""
    models = import_or_skip("cloudcoil.models.prometheus_operator.v1", "cloudcoil-models-prometheus-operator")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        manifest = one(render(target), kind)
        parsed = getattr(models, kind).model_validate(manifest)
        assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == manifest, (
            f"{kind}: fields the CRD does not have were dropped")


@pytest.mark.parametrize("target", OVERLAYS)
def test_service_monitor_scrapes_the_service_metrics_port(target: str) -> None:
    manifests = render(target)
    monitor, service = one(manifests, "ServiceMonitor"), one(manifests, "Service")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]), (
        "the ServiceMonitor's selector does not match the Service's labels")
    assert "namespaceSelector" not in monitor["spec"], "it scrapes the Service in its own namespace"
    port_names = {port.get("name") for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names, f"endpoint port {endpoint['port']!r} is not a Service port"
        assert endpoint.get("path", "/metrics") == "/metrics"
        assert seconds(endpoint["scrapeTimeout"]) < seconds(endpoint["interval"])


def test_prometheus_rule_is_generated_from_the_alert_rules() -> None:
    """k8s/base/prometheusrule.yaml is exactly what scripts/sync_prometheus_rule.py makes of alerts.yml."""
    assert ALERTS.exists(), f"{ALERTS} is missing: the PrometheusRule is generated from it"
    wanted = load_sync_script().render(ALERTS.read_text())
    assert PROMETHEUS_RULE.read_text() == wanted, (
        f"{PROMETHEUS_RULE} differs from {ALERTS}: run python scripts/sync_prometheus_rule.py")


@pytest.mark.parametrize("target", OVERLAYS)
def test_rendered_prometheus_rule_carries_the_alert_groups(target: str) -> None:
    assert ALERTS.exists(), f"{ALERTS} is missing"
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    manifests = render(target)
    assert one(manifests, "PrometheusRule")["spec"]["groups"] == groups
    # The operator labels series with job=<Service name>: an alert that filters on job must use that name.
    service = one(manifests, "Service")["metadata"]["name"]
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', str(rule.get("expr", ""))):
                assert job == service, f"{name}: job={job!r}, but the Service is {service}"


def runtime_named(name: str) -> Manifest:
    [runtime] = [item for item in render("kserve")
                 if item["kind"] == "ClusterServingRuntime" and item["metadata"]["name"] == name]
    return runtime


def test_serving_runtime_is_a_v2_onnx_runtime_on_port_8080(tmp_path: Path) -> None:
    runtime = runtime_named(REST_RUNTIME)
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    spec = runtime["spec"]
    unknown = set(spec) - SERVING_RUNTIME_SPEC_FIELDS
    assert not unknown, f"not ServingRuntime fields: {unknown}"
    assert spec["protocolVersions"] == ["v2"], "v2 over REST (no v1; gRPC is the -grpc runtime)"
    onnx = [item for item in spec["supportedModelFormats"] if item["name"] == "onnx"]
    assert onnx and onnx[0].get("autoSelect") is True, spec["supportedModelFormats"]
    # KServe's webhook refuses a runtime with the same format, version, protocol and priority as another
    # auto-selected one: kserve-tritonserver has onnx "1" at priority 1.
    assert onnx[0].get("priority") != 1, "priority 1 collides with kserve-tritonserver's onnx"

    [container] = spec["containers"]
    assert container["name"] == "kserve-container"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SERVE_PORT"] == "8080" and env["SERVE_HOST"] == "0.0.0.0"
    assert env["SERVE_MODELS_DIR"] == "/mnt/models"
    assert env["SERVE_GRPC_PORT"] == "", "the REST runtime serves no gRPC port it does not declare"
    assert [port["containerPort"] for port in container["ports"]] == [8080]
    assert container["ports"][0].get("name") in (None, "http1", "h2c"), "Knative accepts only http1 or h2c"
    assert "lifecycle" not in container, "Knative refuses lifecycle hooks"
    probes = {name: container[name]["httpGet"] for name in PROBES}
    assert all(probe["port"] == 8080 for probe in probes.values()), "Knative probes name the port by number"
    assert probes["livenessProbe"]["path"] in ("/health/live", "/v2/health/live")
    assert probes["readinessProbe"]["path"] in ("/health/ready", "/v2/health/ready")
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    check_container_security(container, pod_security={})
    check_tmp_is_the_only_writable_path(container, spec["volumes"])
    validate_as_pod(spec["containers"], spec["volumes"], tmp_path)


def test_the_grpc_runtime_is_the_rest_one_on_its_h2c_port(tmp_path: Path) -> None:
    """KServe's rules for gRPC: the one declared port is the gRPC one, named h2c (Knative speaks HTTP/2 to it
    then), and the probes (Knative probes the declared port only) are gRPC ones on it."""
    rest, grpc = runtime_named(REST_RUNTIME)["spec"], runtime_named(REST_RUNTIME + "-grpc")["spec"]
    assert grpc["protocolVersions"] == ["grpc-v2"]
    [container] = grpc["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert len(env) == len(container["env"]), "a variable set twice"
    assert container["ports"] == [{"name": "h2c", "containerPort": int(env["SERVE_GRPC_PORT"]), "protocol": "TCP"}]
    services = {name: container[name]["grpc"] for name in PROBES}
    assert all(probe["port"] == int(env["SERVE_GRPC_PORT"]) for probe in services.values())
    assert services["livenessProbe"]["service"] == "live", "liveness must not depend on the models"
    assert services["readinessProbe"]["service"] == services["startupProbe"]["service"] == ""
    # Everything else is the REST runtime's: the two cannot drift apart.
    [rest_container] = rest["containers"]
    changed = {"ports", "env", *PROBES}
    assert {k: v for k, v in container.items() if k not in changed} == {
        k: v for k, v in rest_container.items() if k not in changed}
    assert {k: v for k, v in grpc.items() if k not in ("containers", "protocolVersions")} == {
        k: v for k, v in rest.items() if k not in ("containers", "protocolVersions")}
    validate_as_pod(grpc["containers"], grpc["volumes"], tmp_path)


def test_inference_service_uses_the_runtime_with_a_model_repository(tmp_path: Path) -> None:
    manifests = render("kserve")
    runtime, service = runtime_named(REST_RUNTIME), one(manifests, "InferenceService")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "onnx"
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model.get("protocolVersion") == "v2", "KServe assumes v1 without it"
    uri = model["storageUri"]
    assert re.match(r"(pvc|s3|gs|https?|hf|oci)://", uri) and not uri.endswith(".onnx"), (
        f"storageUri {uri} must be a folder holding a model repository")
    # The v2 routes use the repository's folder names: the example serves the model it is named after.
    served = {item["value"] for item in model.get("env", []) if item["name"] == "SERVE_MODELS"}
    assert served == {service["metadata"]["name"]}, served
    assert (REPO_ROOT / "models" / service["metadata"]["name"]).is_dir(), "the example names a bundled model"
    container = {key: value for key, value in model.items() if key not in MODEL_SPEC_FIELDS}
    validate_as_pod([{"name": "kserve-container", "image": "example", **container}], [], tmp_path)


def test_the_kserve_kustomization_names_the_runtime_image(tmp_path: Path) -> None:
    """`kubectl apply -k k8s/kserve` puts the registry set in the kustomization's `images:` on the runtime (an
    unqualified image can be pulled from no registry); the docs apply it that way, never the files alone."""
    copy = tmp_path / "kserve"
    shutil.copytree(TARGETS["kserve"], copy)
    kustomization = yaml.safe_load((copy / "kustomization.yaml").read_text())
    [image] = [item for item in kustomization["images"] if item["name"] == "onnx-classifier-serving"]
    image["newName"] = "registry.example.com/team/onnx-classifier-serving"
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    rendered = run_tool([find_tool("kubectl"), "kustomize", str(copy)]).stdout
    runtimes = [item for item in yaml.safe_load_all(rendered) if item and item["kind"] == "ClusterServingRuntime"]
    assert len(runtimes) == 2, "the REST and the gRPC runtime"
    for runtime in runtimes:
        [container] = runtime["spec"]["containers"]
        assert container["image"] == f"{image['newName']}:{image['newTag']}"
    for doc in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "kubernetes.md"):
        command = re.search(r"^ *kubectl apply -f k8s/kserve.*", doc.read_text(), re.MULTILINE)
        assert command is None, f"{doc}: `{command.group()}` skips the kustomization's images:"


# 4. Invariants -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", OVERLAYS)
def test_probes_use_the_health_routes_on_the_named_port(target: str) -> None:
    container = server_container(render(target))
    port_names = {port["name"] for port in container["ports"]}
    wanted = dict(zip(PROBES, ("/health/ready", "/health/ready", "/health/live"), strict=True))
    for probe, path in wanted.items():
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, f"{probe} asks {http_get['path']}, not {path}"
        assert http_get["port"] == "http" and "http" in port_names, f"{probe} port {http_get['port']!r}"
    assert "ready" not in container["livenessProbe"]["httpGet"]["path"], (
        "liveness must not depend on the models, or a failed model restarts the pod in a loop")
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "10 minutes for model loading"


@pytest.mark.parametrize("target", OVERLAYS)
def test_grpc_is_served_on_the_named_port_and_the_service(target: str) -> None:
    manifests = render(target)
    container = server_container(manifests)
    [grpc] = [port for port in container["ports"] if port["name"] == "grpc"]
    assert settings_of(manifests)["SERVE_GRPC_PORT"] == str(grpc["containerPort"]) == "8001"
    [service_port] = [port for port in one(manifests, "Service")["spec"]["ports"] if port["name"] == "grpc"]
    assert service_port["targetPort"] == "grpc" and service_port["port"] == 8001
    assert service_port["appProtocol"] == "kubernetes.io/h2c", "gRPC without TLS is HTTP/2 cleartext"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_grpc_probes_component_probes_grpc_health(version: str, tmp_path: Path) -> None:
    """An overlay with components: [../../components/grpc-probes] probes grpc.health.v1 on the gRPC port:
    readiness and start-up the server's readiness (service ""), liveness its liveness (service "live")."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    overlay = copy / "overlays" / "grpc-probes"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../cpu"], "components": ["../../components/grpc-probes"]}))
    rendered = run_tool([find_tool("kubectl"), "kustomize", str(overlay)]).stdout
    manifests = tuple(item for item in yaml.safe_load_all(rendered) if item)
    container = server_container(manifests)
    port = int(settings_of(manifests)["SERVE_GRPC_PORT"])
    services = {name: container[name]["grpc"] for name in PROBES}
    assert all(probe["port"] == port for probe in services.values()), services
    assert services == {"startupProbe": {"port": port, "service": ""},
                        "readinessProbe": {"port": port, "service": ""},
                        "livenessProbe": {"port": port, "service": "live"}}
    assert all("httpGet" not in container[name] for name in PROBES)
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "10 minutes for model loading"
    built_in = [item for item in manifests if not is_custom(item)]
    path = tmp_path / "grpc-probes.yaml"
    path.write_text(yaml.safe_dump_all(built_in, sort_keys=False))
    result = run_tool([find_tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, str(path)])
    assert (result.stdout + result.stderr).count("passed") == len(built_in), result.stdout + result.stderr


@pytest.mark.parametrize("target", OVERLAYS)
def test_termination_grace_covers_the_prestop_sleep_and_the_drain(target: str) -> None:
    manifests = render(target)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    pre_stop = server_container(manifests)["lifecycle"]["preStop"]
    assert set(pre_stop) == {"sleep"}, "the kubelet's sleep action: no binary needed in the image"
    sleep = pre_stop["sleep"]["seconds"]
    settings = settings_of(manifests)
    drain = int(settings["SERVE_GRACEFUL_SHUTDOWN_S"])
    delay = float(settings["SERVE_SHUTDOWN_DELAY_S"])
    grace = pod["terminationGracePeriodSeconds"]
    assert sleep > 0 and drain > 0
    assert grace > sleep + delay + drain, (
        f"terminationGracePeriodSeconds {grace} <= preStop {sleep} + delay {delay} + drain {drain}"
    )


@pytest.mark.parametrize("target", OVERLAYS)
def test_config_map_holds_valid_settings_that_match_the_container(target: str) -> None:
    from app.settings import Settings

    manifests = render(target)
    data = settings_of(manifests)
    fields = {f"SERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= fields, f"not settings of the service: {set(data) - fields}"
    Settings(_env_file=None, **{key.removeprefix("SERVE_").lower(): value for key, value in data.items()})
    container = server_container(manifests)
    [http] = [port for port in container["ports"] if port["name"] == "http"]
    assert data["SERVE_PORT"] == str(http["containerPort"])
    assert data["SERVE_HOST"] == "0.0.0.0"
    service_port = one(manifests, "Service")["spec"]["ports"][0]
    assert service_port["targetPort"] in ("http", http["containerPort"])
    # 0 sizes ONNX Runtime's pool by the CPU limit, which the server reads as the cgroup quota (app.models.runtime):
    # the container must have one.
    threads = int(data["SERVE_INTRA_OP_THREADS"])
    cpu_limit = quantity(container["resources"]["limits"]["cpu"])
    assert 0 <= threads <= cpu_limit, f"{threads} ONNX Runtime threads on a {cpu_limit}-core limit"


@pytest.mark.parametrize("target", OVERLAYS)
def test_selectors_match_the_pods(target: str) -> None:
    manifests = render(target)
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(one(manifests, "Service")["spec"]["selector"], pod_labels)
    assert selects(one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    constraints = one(manifests, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    keys = {item["topologyKey"] for item in constraints}
    assert keys >= {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, keys
    for item in constraints:
        selector = item["labelSelector"]["matchLabels"]
        assert selects(selector, pod_labels), f"{item['topologyKey']}: {selector} selects no pod"


@pytest.mark.parametrize("target", OVERLAYS)
def test_hpa_scales_the_deployment_on_the_adapter_metric(target: str) -> None:
    manifests = render(target)
    hpa = one(manifests, "HorizontalPodAutoscaler")["spec"]
    deployment = one(manifests, "Deployment")
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    assert "replicas" not in deployment["spec"], "a replicas field resets the HPA's count at every apply"
    names = hpa_metric_names(manifests)
    assert names, "the HPA scales on a Pods metric"
    exposed = {exposed_name(rule) for rule in adapter_rules()}
    assert set(names) <= exposed, f"the HPA asks for {names}; the adapter serves {sorted(exposed)}"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert hpa["behavior"]["scaleDown"]["policies"], "scale-down is rate-limited"
    budget = one(manifests, "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] < hpa["minReplicas"] <= hpa["maxReplicas"], (
        "a node drain must never take the last serving pod")


def test_adapter_rule_is_a_per_pod_rate_over_enough_scrapes() -> None:
    interval = min(seconds(endpoint["interval"])
                   for endpoint in one(render("cpu"), "ServiceMonitor")["spec"]["endpoints"])
    for rule in adapter_rules():
        overrides = rule["resources"]["overrides"]
        assert overrides.get("pod") == {"resource": "pod"}, f"a Pods metric needs the pod label: {overrides}"
        assert overrides.get("namespace") == {"resource": "namespace"}, overrides
        assert re.search(r'pod!=""', rule["seriesQuery"]) and re.search(r'namespace!=""', rule["seriesQuery"])
        query = rule["metricsQuery"]
        assert "<<.Series>>" in query and "<<.LabelMatchers>>" in query and "<<.GroupBy>>" in query, query
        windows = re.findall(r"rate\(.*\[(\w+)\]\)", query)
        assert windows, f"not a rate: {query}"
        assert all(seconds(window) >= 4 * interval for window in windows), (
            f"rate windows {windows} should hold at least 4 scrapes at {interval:.0f} s")


def test_adapter_query_is_valid_promql(tmp_path: Path) -> None:
    """Each metricsQuery, filled in as the adapter fills it, passes promtool (as a recording rule)."""
    rules = []
    for rule in adapter_rules():
        query = (rule["metricsQuery"].replace("<<.Series>>", series_name(rule))
                 .replace("<<.LabelMatchers>>", 'namespace="serving",pod=~"a|b"')
                 .replace("<<.GroupBy>>", "pod"))
        rules.append({"record": f"check:{exposed_name(rule)}", "expr": query})
    path = tmp_path / "adapter-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": rules}]}))
    run_tool([find_tool("promtool"), "check", "rules", str(path)])


def test_adapter_rule_reads_a_metric_the_service_exports(live_metrics: dict[str, set[str]]) -> None:
    for rule in adapter_rules():
        name = series_name(rule)
        assert name in live_metrics, f"the service exports no {name}; it has {sorted(live_metrics)}"
        # Labels the query filters on, other than those Prometheus adds when scraping.
        used = set(re.findall(r"(\w+)\s*(?:!=|=~|!~|=)", rule["metricsQuery"])) - {"namespace", "pod"}
        assert used <= live_metrics[name], f"{name} has labels {live_metrics[name]}, the query uses {used}"


def check_container_security(container: Manifest, pod_security: Manifest) -> None:
    """Non-root uid 1000, group 0, read-only root, no privilege escalation, no capabilities, RuntimeDefault
    seccomp: on the container, or (for the fields a pod may carry) on the pod."""
    own = container.get("securityContext", {})
    context = {**pod_security, **own}
    assert context.get("runAsNonRoot") is True, context
    assert context.get("runAsUser") == 1000 and context.get("runAsGroup") == 0, "the image's uid 1000, gid 0"
    assert context.get("seccompProfile") == {"type": "RuntimeDefault"}, context
    assert own.get("readOnlyRootFilesystem") is True, own
    assert own.get("allowPrivilegeEscalation") is False and own.get("privileged", False) is False, own
    assert own.get("capabilities") == {"drop": ["ALL"]}, own


def check_tmp_is_the_only_writable_path(container: Manifest, volumes: list[Manifest]) -> None:
    mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, "readOnlyRootFilesystem needs a writable /tmp"
    [tmp] = [volume for volume in volumes if volume["name"] == mounts["/tmp"]]
    assert "emptyDir" in tmp, tmp


@pytest.mark.parametrize("target", OVERLAYS)
def test_pods_run_hardened(target: str) -> None:
    manifests = render(target)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    check_container_security(server_container(manifests), pod["securityContext"])
    # On the pod as well, so that a sidecar or init container added later inherits them.
    assert pod["securityContext"].get("runAsNonRoot") is True, pod["securityContext"]
    assert pod["securityContext"].get("seccompProfile") == {"type": "RuntimeDefault"}, pod["securityContext"]
    assert pod.get("automountServiceAccountToken") is False
    check_tmp_is_the_only_writable_path(server_container(manifests), pod["volumes"])


def test_gpu_overlay_asks_for_one_gpu_and_the_gpu_image() -> None:
    manifests = render("gpu")
    container = server_container(manifests)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert int(container["resources"]["limits"].get(GPU, 0)) == 1, container["resources"]
    assert container["image"].rsplit(":", 1)[-1] == "gpu", container["image"]
    assert settings_of(manifests)["SERVE_PROVIDERS"] == "cuda", "fail loudly, not silently on the CPU"
    assert pod.get("nodeSelector"), "GPU nodes are selected"
    assert any(item.get("key") == GPU for item in pod.get("tolerations", [])), "the GPU taint is tolerated"


def test_cpu_overlay_asks_for_no_gpu() -> None:
    manifests = render("cpu")
    container = server_container(manifests)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    resources = container["resources"]
    assert GPU not in resources.get("limits", {}) and GPU not in resources.get("requests", {})
    assert container["image"].rsplit(":", 1)[-1] == "cpu", container["image"]
    assert settings_of(manifests)["SERVE_PROVIDERS"] in ("cpu", "CPUExecutionProvider")
    assert not any(item.get("key") == GPU for item in pod.get("tolerations", []))
