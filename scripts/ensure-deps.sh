#!/usr/bin/env bash
# Makes sure the servers the tests start are installed: redis-server (and
# redis-benchmark, redis-cli) and nats-server. Installs them with apt-get
# where it can, otherwise says what to install.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "ensure-deps: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  # Debian starts the packaged services; the tests start their own.
  for svc in redis-server nats-server; do
    command -v systemctl >/dev/null 2>&1 && systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
  exit 0
fi
echo "ensure-deps: missing ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install -y ${missing[*]}; macOS: brew install redis nats-server) and run again" >&2
exit 1
