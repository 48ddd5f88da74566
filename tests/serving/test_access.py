"""API keys (several at once, for rotation), the routes they close, /models, and the OpenAPI documents."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import (
    ModelUnderTest,
    ServerProcess,
    assert_json_error,
    assert_prediction,
    b64,
    scrape,
    value,
)

API_KEY = "test-key-5f1c2a"
# SERVE_API_KEYS, accepted as well as SERVE_API_KEY: the new key of a rotation and one about to go.
ROTATED_KEYS = ("next-key-0b9d7e41", "old-key-3c")
HEALTH_PATHS = ("/health/live", "/health/ready", "/health", "/v2/health/live", "/v2/health/ready",
                "/v2/models/mnist-cnn/ready")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
                 image_model: ModelUnderTest) -> Iterator[ServerProcess]:
    process = ServerProcess(models_dir, tmp_path_factory.mktemp("keyed"), {
        "SERVE_MODELS": image_model.name, "SERVE_API_KEY": API_KEY, "SERVE_API_KEYS": " , ".join(ROTATED_KEYS),
    })
    process.start().wait_ready()
    yield process
    process.stop()


class ClosedServer(ServerProcess):
    """A server whose health routes need a key: polled with one."""

    def _wait_live(self, timeout: float) -> bool:
        return self.wait_for(lambda client: client.get("/health/live", headers={"X-API-Key": API_KEY}).status_code
                             == 200, timeout, fail=False)


@pytest.fixture(scope="module")
def closed_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
                  image_model: ModelUnderTest) -> Iterator[ServerProcess]:
    process = ClosedServer(models_dir, tmp_path_factory.mktemp("closed"), {
        "SERVE_MODELS": image_model.name, "SERVE_API_KEYS": API_KEY,
        "SERVE_PUBLIC_HEALTH": "false", "SERVE_PUBLIC_METRICS": "false",
    })
    process.start()
    process.wait_for(lambda client: client.get("/health/ready", headers={"X-API-Key": API_KEY}).status_code == 200,
                     120, what="/health/ready to answer 200")
    yield process
    process.stop()


WRONG_KEYS = [{}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {API_KEY}"}, {"Authorization": "Bearer wrong"},
              {"Authorization": "Bearer"}, {"X-API-Key": API_KEY[:-1]}, {"X-API-Key": API_KEY + "0"},
              {"X-API-Key": ",".join(ROTATED_KEYS)}, {"X-API-Key": ROTATED_KEYS[0].upper()}]
WRONG_KEY_IDS = ["none", "wrong-x-api-key", "basic-scheme", "wrong-bearer", "empty-bearer", "prefix", "longer",
                 "the-keys-list", "wrong-case"]


def assert_401(response: httpx.Response, key_given: bool) -> None:
    assert_json_error(response, 401, "unauthorized")
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer realm="), response.headers
    assert ('error="invalid_token"' in challenge) == key_given, challenge


@pytest.mark.parametrize("headers", WRONG_KEYS, ids=WRONG_KEY_IDS)
def test_predict_without_the_key_is_401(keyed_server: ServerProcess, digits: list[bytes],
                                        headers: dict[str, str]) -> None:
    key_given = "X-API-Key" in headers or headers.get("Authorization", "").lower().startswith("bearer ")
    with keyed_server.client(headers=headers) as client:
        before = scrape(client)
        assert_401(client.post("/predict", json={"image": b64(digits[0])}), key_given)
        assert_401(client.get("/models"), key_given)
        assert_401(client.get("/v2/models/anything"), key_given)
        infer = {"inputs": [{"name": "pixel_values", "shape": [1, 1, 28, 28], "datatype": "FP32",
                             "data": [0.0] * 784}]}
        assert_401(client.post("/v2/models/mnist-cnn/infer", json=infer), key_given)
        after = scrape(client)
    assert value(after, "modelserver_errors_total", model="", kind="unauthorized") - value(
        before, "modelserver_errors_total", model="", kind="unauthorized") == 4


@pytest.mark.parametrize("headers", [{"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"},
                                     {"Authorization": f"bearer {API_KEY}"}, {"X-API-Key": ROTATED_KEYS[0]},
                                     {"Authorization": f"Bearer {ROTATED_KEYS[1]}"}],
                         ids=["x-api-key", "bearer", "bearer-lowercase", "rotated-new", "rotated-old"])
def test_predict_with_the_key(keyed_server: ServerProcess, image_model: ModelUnderTest, digits: list[bytes],
                              headers: dict[str, str]) -> None:
    with keyed_server.client(headers=headers) as client:
        response = client.post("/predict", files={"file": ("d.png", digits[5], "image/png")})
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), image_model.image_probabilities(digits[5]), image_model.labels, 5)
        assert client.get("/models").status_code == 200
        assert client.get(f"/v2/models/{image_model.name}").status_code == 200


def test_probes_and_metrics_need_no_key(keyed_server: ServerProcess) -> None:
    with keyed_server.client() as client:
        for path in (*HEALTH_PATHS, "/metrics"):
            assert client.get(path).status_code == 200, path


def test_health_and_metrics_closed_by_setting(closed_server: ServerProcess) -> None:
    with closed_server.client() as client:
        for path in (*HEALTH_PATHS, "/metrics"):
            assert_401(client.get(path), key_given=False)
            assert_401(client.get(path, headers={"X-API-Key": "wrong"}), key_given=True)
            assert client.get(path, headers={"X-API-Key": API_KEY}).status_code == 200, path
            assert client.get(path, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200, path


def test_server_metadata_and_docs_stay_open_with_health_closed(closed_server: ServerProcess) -> None:
    """`GET /v2` and the API docs need no key whatever SERVE_PUBLIC_HEALTH says (SERVE_API_DOCS turns the docs
    off: test_api_docs.py)."""
    with closed_server.client() as client:
        for path in ("/v2", "/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(("key", "status"), [(API_KEY, 0), ("wrong", 1)])
def test_container_healthcheck_sends_the_key(closed_server: ServerProcess, key: str, status: int) -> None:
    """`python -m app.healthcheck` (the image's HEALTHCHECK) passes a closed /health/live with the key."""
    env = {**closed_server.environment(), "SERVE_API_KEYS": key}
    check = subprocess.run([sys.executable, "-m", "app.healthcheck"], env=env, cwd=closed_server.workdir,
                           capture_output=True, timeout=30)
    assert check.returncode == status, check


def test_no_key_needed_without_api_key(http: httpx.Client) -> None:
    assert http.get("/models").status_code == 200


def test_models_lists_both_models(http: httpx.Client, image_model: ModelUnderTest,
                                  text_model: ModelUnderTest) -> None:
    response = http.get("/models")
    assert response.status_code == 200, response.text
    listed = {item["name"]: item for item in response.json()["models"]}
    assert set(listed) == {image_model.name, text_model.name}
    for model in (image_model, text_model):
        item = listed[model.name]
        assert item["labels"] == model.labels
        assert item["version"] == model.config.version and item["task"] == model.config.task
        assert item["state"] == "ready" and item["provider"] == "CPUExecutionProvider"
        assert [spec["name"] for spec in item["inputs"]] == [spec.name for spec in model.config.inputs]
        assert item["preprocessing"] == model.config.preprocessing.model_dump()
        assert 1 <= item["max_batch_size"] <= model.config.max_batch_size
        expected_metrics = model.config.metrics.model_dump() if model.config.metrics else None
        assert item["metrics"] == expected_metrics


def test_openapi_document(http: httpx.Client) -> None:
    """The document's /predict and v2 infer bodies and parameters (the docs pages: test_api_docs.py)."""
    spec = http.get("/openapi.json")
    assert spec.status_code == 200
    document = spec.json()
    predict = document["paths"]["/predict"]["post"]
    content = predict["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert "file" in content["multipart/form-data"]["schema"]["properties"]
    assert {parameter["name"] for parameter in predict["parameters"]} == {"model", "top_k", "X-Request-Timeout"}
    for path in ("/health", "/health/live", "/health/ready", "/models", "/metrics", "/v2/models/{name}/infer"):
        assert path in document["paths"], path
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert {"application/json", "application/octet-stream"} <= set(infer["requestBody"]["content"])
    assert "inputs" in infer["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"name", "Inference-Header-Content-Length", "X-Request-Timeout"} <= {
        parameter["name"] for parameter in infer["parameters"]}


KEY_SCHEMES = {"APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
               "HTTPBearer": {"type": "http", "scheme": "bearer"}}
KEY_SECURITY = [{"APIKeyHeader": []}, {"HTTPBearer": []}]  # either scheme


@pytest.mark.parametrize("process_fixture", ["server", "keyed_server", "closed_server"],
                         ids=["no-key", "key", "key-closed-health-and-metrics"])
def test_openapi_declares_the_key_where_it_is_needed(request: pytest.FixtureRequest, process_fixture: str,
                                                    image_model: ModelUnderTest) -> None:
    """With keys configured, the document declares them (`X-API-Key` or a bearer token, either one) on exactly
    the operations that answer 401 to a request without one, as SERVE_PUBLIC_HEALTH and SERVE_PUBLIC_METRICS
    say; with no key configured, it declares none."""
    process: ServerProcess = request.getfixturevalue(process_fixture)
    keyed = process_fixture != "server"
    with process.client() as client:
        document = client.get("/openapi.json").json()
        declared_and_refused = {}
        for path, operations in document["paths"].items():
            url = path.replace("{name}", image_model.name).replace("{version}", str(image_model.config.version))
            for method, operation in operations.items():
                refused = client.request(method, url).status_code == 401
                declared_and_refused[f"{method.upper()} {path}"] = (operation.get("security"), refused)
    assert document.get("components", {}).get("securitySchemes") == (KEY_SCHEMES if keyed else None)
    mismatched = {operation: (security, refused) for operation, (security, refused) in declared_and_refused.items()
                  if security != (KEY_SECURITY if refused else None)}
    assert not mismatched, f"(declared security, answered 401 without a key): {mismatched}"
    assert any(refused for _, refused in declared_and_refused.values()) == keyed


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, child in node.items():
            if key == "$ref" and isinstance(child, str):
                yield child
            else:
                yield from _refs(child)
    elif isinstance(node, list):
        for child in node:
            yield from _refs(child)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_openapi_references_resolve(http: httpx.Client) -> None:
    """Every $ref of the OpenAPI document points at a schema in it (Swagger UI cannot render one that does
    not), and the JSON body of /predict documents its `text` and `image` fields."""
    document = http.get("/openapi.json").json()
    unresolved = []
    for ref in sorted(set(_refs(document))):
        try:
            _resolve(document, ref)
        except (KeyError, TypeError):
            unresolved.append(ref)
    assert not unresolved, f"dangling $ref in /openapi.json: {unresolved}"
    schema = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = _resolve(document, schema["$ref"])
    assert {"text", "image", "model", "top_k"} <= set(schema["properties"])

