#!/usr/bin/env python3
"""Pack what the GPU benchmark needs on a machine with no internet into pieces small enough to copy.

    .venv/bin/python benchmarks/build_models.py          # once: the ResNet-18 and MiniLM models
    .venv/bin/python benchmarks/gpu/bundle.py            # -> benchmarks/gpu/bundle/bundle.tar.000, .001, ...

The bundle is one tar of `wheels/` (onnxruntime-gpu with its `cuda` and `cudnn` extras, the serving
dependencies and the benchmark's, downloaded with `pip download` for the GPU machine's Python and platform)
and `models/` (the built benchmark models), cut into pieces of at most --piece-mib MiB, with `SHA256SUMS`
for every piece and for the whole tar. `benchmarks/gpu/run.py --bundle DIR` on the GPU machine checks, joins
and installs it. Where the GPU machine already has CUDA 13 and cuDNN 9 (e.g. PyTorch's cu130 wheels),
`--no-cuda-wheels` leaves NVIDIA's wheels out (about 2 GB), and `--exclude` leaves out other packages it has.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = ("resnet18", "minilm-l6")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux2010_x86_64", "manylinux_2_12_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu" / "bundle", help="pieces folder")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (major.minor)")
    parser.add_argument("--no-cuda-wheels", action="store_true",
                        help="leave out NVIDIA's CUDA and cuDNN wheels (the GPU machine has CUDA 13 and cuDNN 9)")
    parser.add_argument("--exclude", nargs="*", default=[], metavar="PATTERN",
                        help="leave out the wheels of these distributions (names or fnmatch patterns, e.g. 'scipy')")
    parser.add_argument("--models-dir", type=Path, default=REPO / "benchmarks" / "results" / "models",
                        help="where benchmarks/build_models.py wrote the models")
    parser.add_argument("--piece-mib", type=int, default=60, help="largest piece, in MiB")
    return parser.parse_args(argv)


def requirements(cuda_wheels: bool) -> list[str]:
    """The serving dependencies, the `gpu` extra (with onnxruntime-gpu's own `cuda` and `cudnn` extras) and the
    `bench` extra, from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    gpu = [re.sub(r"^onnxruntime-gpu", "onnxruntime-gpu[cuda,cudnn]", line) if cuda_wheels else line
           for line in extras["gpu"]]
    return [*project["dependencies"], *gpu, *extras["bench"]]


def distribution(wheel: Path) -> str:
    """A wheel's distribution name, normalised (PEP 503: lower case, runs of -_. as one -)."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def download(wanted: list[str], python_version: str, dest: Path) -> None:
    """Wheels of `wanted` and everything they need, for CPython `python_version` on x86-64 Linux."""
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--implementation",
                    "cp", "--python-version", python_version, *platforms, "--dest", str(dest), *wanted], check=True)


def pack(members: Iterable[tuple[Path, str]], out: Path, piece_bytes: int) -> list[Path]:
    """Write `members` (path, name in the tar) as one tar cut into `out/bundle.tar.NNN` pieces, and
    `out/SHA256SUMS` (each piece, then the whole tar as `bundle.tar`); returns the pieces."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("bundle.tar.*"), out / "SHA256SUMS"]:
        old.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        whole = Path(scratch) / "bundle.tar"
        with tarfile.open(whole, "w") as tar:
            for path, name in members:
                tar.add(path, arcname=name)
        pieces, whole_digest = [], hashlib.sha256()
        with whole.open("rb") as source:
            while chunk := source.read(piece_bytes):
                whole_digest.update(chunk)
                piece = out / f"bundle.tar.{len(pieces):03d}"
                piece.write_bytes(chunk)
                pieces.append(piece)
    sums = [f"{hashlib.sha256(piece.read_bytes()).hexdigest()}  {piece.name}" for piece in pieces]
    (out / "SHA256SUMS").write_text("\n".join([*sums, f"{whole_digest.hexdigest()}  bundle.tar"]) + "\n")
    return pieces


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [name for name in MODELS if not (args.models_dir / name).is_dir()]
    if missing:
        print(f"bundle.py: no model {', '.join(missing)} in {args.models_dir}: "
              "run `.venv/bin/python benchmarks/build_models.py` first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        wheels = Path(scratch) / "wheels"
        download(requirements(not args.no_cuda_wheels), args.python_version, wheels)
        kept = []
        for wheel in sorted(wheels.glob("*.whl")):
            if any(fnmatch.fnmatch(distribution(wheel), pattern.lower()) for pattern in args.exclude):
                print(f"left out {wheel.name}")
                continue
            kept.append((wheel, f"wheels/{wheel.name}"))
        members = [*kept, *((args.models_dir / name, f"models/{name}") for name in MODELS)]
        pieces = pack(members, args.out, args.piece_mib * 2**20)
    total = sum(piece.stat().st_size for piece in pieces)
    print(f"{len(kept)} wheels and {len(MODELS)} models: {total / 2**20:.0f} MiB in {len(pieces)} pieces "
          f"of at most {args.piece_mib} MiB in {args.out}, with SHA256SUMS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
