#!/usr/bin/env bash
# make demo: one worker with embedded NATS, Redis on localhost:6379 when it
# answers (else the in-memory store), and ~10 s of `producer load --verify`.
set -euo pipefail
cd "$(dirname "$0")/.."

go build -o bin/worker ./cmd/worker
go build -o bin/producer ./cmd/producer

read -r nats_port metrics_port <<<"$(go run scripts/freeport.go 2 | tr '\n' ' ')"
data=$(mktemp -d)
log="$data/worker.log"
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null; rm -rf "$data"' EXIT

redis_env=(REDIS_HOST=127.0.0.1 REDIS_PORT=6379 REDIS_KEY_PREFIX="chatbuf-demo-$$:")
if (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 1 head -c 5 <&3 | grep -q PONG) 2>/dev/null; then
  echo "demo: Redis answers on 127.0.0.1:6379; keys go under chatbuf-demo-$$:"
else
  redis_env=(REDIS_ENABLED=false)
  echo "================================================================"
  echo " demo: WARNING: no Redis on 127.0.0.1:6379."
  echo " The worker runs with REDIS_ENABLED=false: buffers in memory,"
  echo " single instance. Start redis-server to see the shared mode."
  echo "================================================================"
fi

env "${redis_env[@]}" NATS_URL=embedded NATS_EMBEDDED_ADDR="127.0.0.1:$nats_port" \
  NATS_EMBEDDED_DIR="$data/nats" METRICS_ADDR="127.0.0.1:$metrics_port" \
  CHAT_FLUSH_MAX_AGE=2s LOG_LEVEL=info ./bin/worker 2>"$log" &
worker=$!

for _ in $(seq 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/"$metrics_port" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200 ') 2>/dev/null; then
    break
  fi
  kill -0 $worker 2>/dev/null || { echo "demo: worker exited:"; cat "$log"; exit 1; }
  sleep 0.1
done
echo "demo: worker ready (embedded NATS on 127.0.0.1:$nats_port, metrics on http://127.0.0.1:$metrics_port/metrics)"

status=0
./bin/producer load --nats "nats://127.0.0.1:$nats_port" --conversations 500 --messages 30000 \
  --rate 3000 --size 256 --verify --verify-timeout 60s || status=$?

echo
echo "demo: worker metrics:"
(exec 3<>/dev/tcp/127.0.0.1/"$metrics_port" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3) 2>/dev/null |
  grep -E '^chatbuf_(messages|batches)_[a-z_]+\{?.*\}? [1-9]' || true
exit $status
