"""The Dockerfile: hadolint finds nothing, and the two targets have what users and platforms rely on."""

from __future__ import annotations

import re

from .conftest import REPO_ROOT, find_tool, run_tool

DOCKERFILE = REPO_ROOT / "Dockerfile"
FINAL_TARGETS = ("cpu", "gpu")


def stages() -> dict[str, str]:
    """Each stage's name and its instructions, in file order."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: dict[str, str] = {}
    for block in re.split(r"^(?=FROM )", text, flags=re.MULTILINE)[1:]:
        name = re.match(r"FROM \S+ AS (\S+)", block)
        assert name, f"every stage is named: {block.splitlines()[0]}"
        found[name.group(1)] = block
    return found


def test_hadolint_finds_nothing() -> None:
    """No rule is ignored, in a config file or inline."""
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    run_tool([find_tool("hadolint"), "--no-color", str(DOCKERFILE)])


def test_cpu_is_the_default_target_and_gpu_exists() -> None:
    names = list(stages())
    assert names[-1] == "cpu", f"`docker build .` must give the CPU image; the last stage is {names[-1]}"
    assert set(FINAL_TARGETS) <= set(names), names


def test_base_images_are_build_arguments() -> None:
    """Every stage starts from a base given as a build argument, or from an earlier stage."""
    earlier: list[str] = []
    for name, block in stages().items():
        base = block.split()[1]
        assert base in ("${BASE_IMAGE}", "${GPU_BASE_IMAGE}", *earlier), f"stage {name} is built on {base}"
        earlier.append(name)


def test_final_stages_run_as_uid_1000_group_0_with_a_healthcheck() -> None:
    for name in FINAL_TARGETS:
        block = stages()[name]
        assert re.search(r"^USER 1000:0$", block, re.MULTILINE), f"{name}: runs as uid 1000, group 0"
        assert re.search(r"^HEALTHCHECK .*app\.healthcheck", block, re.MULTILINE), f"{name}: no curl needed"
        assert "COPY models /app/models" in block and "SERVE_MODELS_DIR=/app/models" in block, name
        assert "pip install" not in block, f"{name}: the final stage installs no Python packages"


def test_the_serving_install_has_no_torch() -> None:
    for name in ("cpu-builder", "gpu-builder"):
        block = stages()[name]
        assert "torch" not in block and "train" not in block, f"{name} installs training extras"


def test_the_build_context_is_only_what_the_image_needs() -> None:
    """.dockerignore excludes everything, then lets in the serving code and models (no .venv, no training)."""
    lines = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", f".dockerignore starts by excluding everything, not with {rules[0]!r}"
    allowed = {line[1:] for line in rules if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "app/", "model_repository/", "models/"}, allowed
