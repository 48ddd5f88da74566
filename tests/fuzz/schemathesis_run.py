"""Run schemathesis against a live server: the served OpenAPI schema, completed where it says too little,
then every phase (examples, coverage, fuzzing, stateful) through the CLI, and the figures read from its
NDJSON report."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.transport.http.v2_codec import InferenceRequest
from tests.serving.support import REPO_ROOT, mnist_digits, png_bytes

MODEL_NAMES = ["mnist-cnn", "sst2-textcnn"]
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class FuzzResult:
    """What one run sent and got back."""

    exit_code: int
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    media_types: Counter[str] = field(default_factory=Counter)
    no_response: int = 0  # requests that got no HTTP answer: dropped connections, timeouts
    errors: list[str] = field(default_factory=list)  # schemathesis's own errors (not failed checks)
    failures: list[str] = field(default_factory=list)  # failed checks, with the request that failed
    output: str = ""

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    def figures(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "server_errors": self.server_errors,
            "no_response": self.no_response,
            "statuses": dict(sorted(self.statuses.items())),
            "operations": len(self.by_operation),
            "media_types": dict(self.media_types),
            "failures": len(self.failures),
            "errors": len(self.errors),
            "exit_code": self.exit_code,
        }


def _name_schema(names: list[str]) -> dict[str, Any]:
    """A path parameter that is often a served model (so requests get past the 404) and sometimes anything."""
    return {"anyOf": [{"type": "string", "enum": names}, {"type": "string"}]}


def augmented_schema(base_url: str) -> dict[str, Any]:
    """The live schema, with real model names and versions offered for path parameters, and the v2 infer
    routes' bodies (JSON tensors, or a JSON head plus binary tensors) with examples and numeric tensor data."""
    schema = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    digit = base64.b64encode(png_bytes(mnist_digits(1)[0])).decode()
    infer_json = {
        "schema": InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        "examples": {
            "image": {
                "value": {
                    "inputs": [
                        {
                            "name": "pixel_values",
                            "shape": [1, 1, 28, 28],
                            "datatype": "FP32",
                            "data": [0.5] * 784,
                        }
                    ]
                }
            },
            "text": {
                "value": {
                    "inputs": [
                        {"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [2, 61, 3]},
                        {"name": "attention_mask", "shape": [1, 3], "datatype": "INT64", "data": [1, 1, 1]},
                    ]
                }
            },
        },
    }
    definitions = infer_json["schema"].pop("$defs", {})
    # `data` is any JSON to the codec; numbers and nested lists of them reach further than arbitrary JSON.
    numbers = {"anyOf": [{"type": "number"}, {"type": "integer"}, {"type": "boolean"}, {"type": "null"}]}
    definitions["RequestInput"]["properties"]["data"] = {
        "anyOf": [
            {"type": "array", "items": {"anyOf": [numbers, {"type": "array", "items": numbers}]}},
            numbers,
        ]
    }
    for name, definition in definitions.items():
        schema.setdefault("components", {}).setdefault("schemas", {})[name] = definition
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in ("name", "model"):
                    parameter["schema"] = _name_schema(MODEL_NAMES)
                elif parameter["name"] == "version":
                    parameter["schema"] = _name_schema(["1"])
            if path.endswith("/infer") and method == "post":
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": infer_json,
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                }
                # The app documents the header as an integer; short digit strings reach past the codec's check.
                (header_length,) = [item for item in operation["parameters"] if item["name"] == HEADER_LENGTH]
                header_length["schema"] = {"type": "string", "pattern": "^[0-9]{1,4}$"}
            if path == "/predict":
                operation["requestBody"]["content"]["application/json"]["examples"] = {
                    "digit": {"value": {"image": digit}},
                    "digits": {"value": {"image": [digit, digit], "top_k": 3}},
                    "text": {"value": {"text": "a gripping, beautifully acted film"}},
                }
    return schema


def run_schemathesis(
    base_url: str,
    workdir: Path,
    max_examples: int,
    *,
    seed: int | None = None,
    workers: int = 1,
    timeout_s: float = 1800,
) -> FuzzResult:
    """Fuzz every operation of the live server with `max_examples` examples per operation and phase."""
    workdir.mkdir(parents=True, exist_ok=True)
    schema_path = workdir / "openapi.json"
    schema_path.write_text(json.dumps(augmented_schema(base_url)))
    report = workdir / "events.ndjson"
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        str(schema_path),
        "--url",
        base_url,
        "--checks",
        "not_a_server_error,error_is_service_json",
        "--max-examples",
        str(max_examples),
        "--workers",
        str(workers),
        "--request-timeout",
        "30",
        "--continue-on-failure",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--output-truncate",
        "true",
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.fuzz.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    finished = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    result = FuzzResult(finished.returncode, output=(finished.stdout + finished.stderr)[-20_000:])
    if report.exists():
        _read_report(report, result)
    return result


def _read_report(path: Path, result: FuzzResult) -> None:
    for line in path.read_text().splitlines():
        event = json.loads(line)
        kind, payload = next(iter(event.items()))
        if kind == "NonFatalError" or kind == "FatalError":
            result.errors.append(json.dumps(payload)[:2000])
        if kind != "ScenarioFinished":
            continue
        recorder = payload["recorder"]
        for case_id, interaction in recorder.get("interactions", {}).items():
            result.requests += 1
            result.by_operation[recorder["label"]] += 1
            case = recorder.get("cases", {}).get(case_id, {}).get("value", {})
            media = case.get("media_type")
            if media:
                result.media_types[f"{recorder['label']} {media}"] += 1
            response = interaction.get("response")
            if response is None:
                result.no_response += 1
            else:
                result.statuses[response["status_code"]] += 1
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check.get("status") == "failure":
                    request = recorder.get("interactions", {}).get(case_id, {}).get("request", {})
                    result.failures.append(
                        f"{check['name']}: {request.get('method')} {request.get('uri')} "
                        f"{json.dumps(check)[:600]}"
                    )
