"""Zero-downtime model updates: `POST /v2/repository/models/{name}/load` and `/unload`.

A new version published into the repository (a staging folder renamed into place, as training does) is loaded
beside the one serving and takes the traffic once warm; under continuous load no request fails and every
answer comes wholly from one version. A version that cannot be served leaves the old one serving. The routes
need an API key, and are closed when none is configured.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np

from .conftest import CopyModels, StartServer
from .support import ModelUnderTest, ServerProcess, assert_json_error, publish_version

KEY = "admin-key"
HEADERS = {"X-API-Key": KEY}


def serve_a_copy(start_server: StartServer, copy_models: CopyModels,
                 model: ModelUnderTest) -> tuple[ServerProcess, Path]:
    """A server with an API key on a copy of `model`'s folder (returned, to publish versions into)."""
    models = copy_models(model.name)
    return start_server(models, SERVE_API_KEY=KEY).wait_ready(), models / model.name


def test_a_new_version_takes_over_under_load_with_no_failed_request(
    start_server: StartServer, copy_models: CopyModels, image_model: ModelUnderTest, digits: list[bytes],
) -> None:
    server, model_root = serve_a_copy(start_server, copy_models, image_model)
    first_version = image_model.config.version
    renamed = [f"v2-{label}" for label in image_model.labels]
    expected = [int(np.argmax(image_model.image_probabilities(digit))) for digit in digits[:32]]
    answers: list[tuple[int, httpx.Response]] = []
    stop = threading.Event()

    def client_loop(offset: int) -> None:
        with server.client() as client:
            index = offset
            while not stop.is_set():
                digit = index % len(expected)
                answers.append((digit, client.post("/predict", headers=HEADERS,
                                                    files={"file": ("d.png", digits[digit], "image/png")})))
                index += 1

    clients = [threading.Thread(target=client_loop, args=(offset,)) for offset in range(4)]
    for thread in clients:
        thread.start()
    try:
        publish_version(model_root, first_version, first_version + 1, renamed)
        with server.client() as admin:
            assert_json_error(admin.post(f"/v2/repository/models/{image_model.name}/load"), 401)
            loaded = admin.post(f"/v2/repository/models/{image_model.name}/load", headers=HEADERS)
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["version"] == str(first_version + 1)
            swapped_at = len(answers)
            server.wait_for(lambda _: len(answers) > swapped_at + 50, 30, what="requests after the swap")
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)

    failed = [(digit, response.status_code, response.text) for digit, response in answers
              if response.status_code != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed during the swap: {failed[:3]}"
    seen = set()
    for digit, response in answers:
        body = response.json()
        version = body["version"]
        seen.add(version)
        names = image_model.labels if version == first_version else renamed
        assert body["label"] == names[expected[digit]], f"an answer mixes versions or inputs: {body}"
        assert all(item["label"] in names for item in body["top_k"]), body
    assert seen == {first_version, first_version + 1}, f"versions answered: {seen}"
    by_version = {version: sum(r.json()["version"] == version for _, r in answers) for version in sorted(seen)}
    print(f"\nswap: {len(answers)} requests, {len(failed)} failed, answers by version {by_version}")
    assert answers[-1][1].json()["version"] == first_version + 1, "the new version did not take the traffic"


def test_a_broken_version_leaves_the_old_one_serving_and_unload_stops_the_model(
    start_server: StartServer, copy_models: CopyModels, image_model: ModelUnderTest, digits: list[bytes],
) -> None:
    server, model_root = serve_a_copy(start_server, copy_models, image_model)
    first_version = image_model.config.version
    publish_version(model_root, first_version, first_version + 1, list(image_model.labels))
    onnx_file = model_root / str(first_version + 1) / image_model.config.onnx_file
    onnx_file.write_bytes(onnx_file.read_bytes()[:-64])  # truncated: its sha256 no longer matches
    upload = {"file": ("d.png", digits[0], "image/png")}
    with server.client() as client:
        refused = client.post(f"/v2/repository/models/{image_model.name}/load", headers=HEADERS)
        body = assert_json_error(refused, 400, "model_load_failed")
        assert "keeps serving" in body["error"], body
        still = client.post("/predict", headers=HEADERS, files=upload)
        assert still.status_code == 200 and still.json()["version"] == first_version, still.text
        assert_json_error(client.post("/v2/repository/models/no-such-model/load", headers=HEADERS), 404)

        unloaded = client.post(f"/v2/repository/models/{image_model.name}/unload", headers=HEADERS)
        assert unloaded.status_code == 200, unloaded.text
        assert_json_error(client.post("/predict", headers=HEADERS, files=upload,
                                      params={"model": image_model.name}), 404, "model_not_found")


def test_repository_routes_are_closed_without_a_configured_key(http: httpx.Client, image_model: ModelUnderTest) -> None:
    assert_json_error(http.post(f"/v2/repository/models/{image_model.name}/load"), 403, "forbidden")
    assert_json_error(http.post(f"/v2/repository/models/{image_model.name}/unload"), 403, "forbidden")
