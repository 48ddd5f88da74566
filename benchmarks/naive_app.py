#!/usr/bin/env python3
"""The naive way to serve an ONNX model with FastAPI: one `session.run` per request, no batching.

    python benchmarks/naive_app.py --model-dir models/mnist-cnn/1 --variant def --port 8002

`POST /predict` takes what the service's `/predict` takes for one input, a raw image body (`image/*`) or JSON
`{"text": "..."}`, does the same preprocessing with the service's own code (`app.models.image_decoding.decode_image`,
`app.models.text_encoding.TextEncoder`: each text at its own length, no padding), runs the model on that one row with a
session configured as the service configures its own (`SERVE_INTRA_OP_THREADS` and the other ONNX Runtime
settings are read from the environment the same way), and answers the same JSON (model, version, label, score,
top_k). Two variants, the two ways a FastAPI tutorial writes it:

* `def`: a plain function, so FastAPI runs it on its thread pool (up to 40 threads), and concurrent requests
  call `session.run` from several threads at once;
* `async`: an `async def`, so preprocessing and `session.run` run on the event loop, one request at a time,
  blocking the loop meanwhile.

One uvicorn worker, access log off, as `trivial_app.py` and the service. `GET /ping` answers once the model is
loaded (the benchmark's readiness check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvicorn
from ceiling import service_session
from fastapi import Depends, FastAPI, Request, Response

from app.errors import InvalidInput, ServiceError
from app.models.image_decoding import decode_image
from app.models.text_encoding import TextEncoder
from app.settings import Settings
from app.transport.http.errors import status_code_for
from model_repository import load_config


class NaiveModel:
    """One model: preprocessing, one `session.run` per input, and the service's answer."""

    def __init__(self, directory: Path, settings: Settings) -> None:
        self.config = config = load_config(directory)
        self.settings = settings
        self.session: Any = service_session(directory / config.onnx_file, settings)
        self.output = config.outputs[0].name
        self.encoder = None
        if config.preprocessing.type == "text":
            self.encoder = TextEncoder(config.preprocessing, directory, [spec.name for spec in config.inputs])
        self.top_k = min(settings.default_top_k, len(config.labels))

    def predict(self, body: bytes) -> bytes:
        """The JSON answer for one request body; raises `ServiceError` (400) for an unusable input."""
        if self.encoder is not None:
            try:
                text = json.loads(body)["text"]
            except (ValueError, KeyError, TypeError):
                raise InvalidInput('send JSON {"text": "..."}') from None
            feeds = {name: value[None] for name, value in self.encoder.encode([text])[0].items()}
        else:
            pixels = decode_image(body, self.config.preprocessing, self.settings.max_image_pixels)
            feeds = {self.config.inputs[0].name: pixels[None]}
        scores = self.session.run([self.output], feeds)[0].astype(np.float32, copy=False)
        if self.config.output_type == "logits":  # the service's softmax, to the bit
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        row = scores[0].tolist()
        order = np.argsort(-scores, axis=1, kind="stable")[0, :self.top_k].tolist()
        top = [{"label": self.config.labels[index], "score": row[index]} for index in order]
        answer = {"model": self.config.name, "version": self.config.version, "label": top[0]["label"],
                  "score": top[0]["score"], "top_k": top}
        return json.dumps(answer, separators=(",", ":")).encode()


def create_app(directory: Path, variant: str, settings: Settings | None = None) -> FastAPI:
    model = NaiveModel(directory, settings or Settings())
    app = FastAPI()

    def answer(body: bytes) -> Response:
        try:
            return Response(model.predict(body), media_type="application/json")
        except ServiceError as exc:
            return Response(json.dumps({"error": exc.message, "code": exc.code}), status_code=status_code_for(exc),
                            media_type="application/json")

    if variant == "def":
        async def raw_body(request: Request) -> bytes:
            return await request.body()

        @app.post("/predict")
        def predict_sync(body: bytes = Depends(raw_body)) -> Response:
            return answer(body)
    else:
        @app.post("/predict")
        async def predict_async(request: Request) -> Response:
            return answer(await request.body())

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a model version folder (with config.json)")
    parser.add_argument("--variant", choices=("def", "async"), default="def", help="endpoint kind")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8002, help="port to bind (default: %(default)s)")
    args = parser.parse_args()
    app = create_app(args.model_dir, args.variant)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
