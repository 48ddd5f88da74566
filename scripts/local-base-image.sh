#!/usr/bin/env bash
# Makes a Debian bookworm + Python 3.11 base image with debootstrap and imports it into podman, for building
# the Dockerfile where no container registry can be reached (the container test does this). Needs root.
# Usage: scripts/local-base-image.sh [IMAGE]   (default localhost/bookworm-python:latest). Idempotent.
set -euo pipefail
image=${1:-localhost/bookworm-python:latest}
if podman image exists "$image"; then
  exit 0
fi
root=$(mktemp -d /tmp/rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" >/dev/null
tar -C "$root" -c . | podman import - "$image" >/dev/null
echo "imported $image"
