"""The HTTP ceiling of this machine: one async FastAPI endpoint returning a small JSON, nothing else.

`python benchmarks/trivial_app.py --port 8001` serves `GET /ping` with one uvicorn worker, the same event
loop and HTTP parser choice as the service (uvicorn's `auto`: uvloop and httptools when installed), and
the access log off, so `/predict` can be compared with what FastAPI + uvicorn cost on their own.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    """A small JSON answer, serialized the same way as the service's routes."""
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8001, help="port to bind (default: %(default)s)")
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
