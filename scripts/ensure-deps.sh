#!/usr/bin/env bash
# Makes sure the servers the tests start are installed: redis-server (and
# redis-benchmark, redis-cli) and nats-server; and what the Python tests of
# contrib/opencontext need: venv and pip for python3 (PYTHON), and pytest
# unless that interpreter has it. Installs them with apt-get where it can,
# otherwise says what to install.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
py=${PYTHON:-python3}
if command -v "$py" >/dev/null 2>&1; then
  "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv python3-pip)
  "$py" -c 'import pytest' >/dev/null 2>&1 || [ -d /usr/lib/python3/dist-packages/pytest ] || missing+=(python3-pytest)
else
  missing+=(python3 python3-venv python3-pip python3-pytest)
fi
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
