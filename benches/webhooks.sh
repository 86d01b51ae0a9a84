#!/usr/bin/env bash
# Webhook intake throughput of `concord serve`: signed Standard Webhooks
# POSTs (signature verified, event durable before the 2xx), against
# GET /healthz (a trivial 200) on the same server in the same run.
#
#   benches/webhooks.sh                 # SQLite (inbox, group commit), plus
#                                       # PostgreSQL when CONCORD_BENCH_PG_URL
#                                       # is set, plus RabbitMQ when
#                                       # CONCORD_BENCH_AMQP_URL is set
#   CASES="amqp" benches/webhooks.sh    # only some of sqlite, postgres, amqp
#   CONNECTIONS=64 DURATION=15s THREADS=2 benches/webhooks.sh
#
# Durable means: SQLite and PostgreSQL commit the event to the store's inbox
# (SQLite with synchronous = FULL); RabbitMQ (`[queue] kind = "amqp"`, store
# on SQLite for the rest) publishes it as a persistent message to a durable
# quorum queue and answers once the broker confirmed it (publisher confirms).
#
# Needs wrk (apt-get install -y wrk) and python3; rabbitmqctl, when present,
# counts the messages and deletes the bench's queues. Inbox
# workers are off (server.workers = 0): this measures intake only. The
# timestamp check is on (the signatures are made right before each run, well
# within 300 s).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-15s}
THREADS=${THREADS:-2}
REQUESTS=${REQUESTS:-600000}
CASES=${CASES:-sqlite postgres amqp}
BIN=${CONCORD_BIN:-target/release/concord}
PORT=${PORT:-18080}
SECRET="whsec_$(printf 'concord-bench-secret-32-bytes!!!' | base64)"

if [[ -z "${CONCORD_BIN:-}" ]]; then
  cargo build --release --bin concord >&2
fi
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)" >&2; exit 2; }

work=$(mktemp -d)
trap 'kill ${server:-} 2>/dev/null || true; rm -rf "$work"' EXIT

sign() { # $1 = id prefix → $work/signed.txt
  python3 - "$SECRET" "$1" "$REQUESTS" > "$work/signed.txt" <<'PY'
import base64, hashlib, hmac, sys, time
secret, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
key = base64.b64decode(secret[len("whsec_"):])
ts = str(int(time.time()))
body = '{"type":"customer.updated","data":{"id":"C-1","name":"Acme GmbH","email":"billing@acme.example"}}'
out = [ts, body]
pre = hmac.new(key, digestmod=hashlib.sha256)
for i in range(n):
    mid = f"{prefix}_{i}"
    h = pre.copy(); h.update(f"{mid}.{ts}.{body}".encode())
    out.append(f"{mid} v1,{base64.b64encode(h.digest()).decode()}")
sys.stdout.write("\n".join(out) + "\n")
PY
}

run() { # $1 = label, $2 = store TOML lines
  local label=$1
  cat > "$work/bench.toml" <<TOML
$2
[log]
level = "warn"
[server]
listen = "127.0.0.1:$PORT"
workers = 0
scheduler = false
[systems.bench]
connector = "none"
[webhooks.systems.bench]
scheme = "standard"
secrets = ["$SECRET"]
entity = "customer"
records = "/data"
TOML
  (cd "$work" && exec "$OLDPWD/$BIN" serve --config "$work/bench.toml") &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  sign "$label-$(date +%s)"
  echo "== $label: POST /webhooks/bench (verify + durable store), $CONNECTIONS connections, $THREADS threads, $DURATION"
  SIGNED_FILE="$work/signed.txt" WRK_THREADS=$THREADS \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/webhooks.lua \
    "http://127.0.0.1:$PORT/webhooks/bench" | tee "$work/hook.txt"
  echo "== $label: GET /healthz (trivial 200), same server"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/healthz" | tee "$work/health.txt"
  kill -TERM $server; wait $server || true; server=
  local hook health
  hook=$(awk '/Requests\/sec/ {print $2}' "$work/hook.txt")
  health=$(awk '/Requests\/sec/ {print $2}' "$work/health.txt")
  echo "== $label: webhooks $hook req/s, healthz $health req/s, ratio $(python3 -c "print(f'{$hook/$health:.2f}')")"
  echo "   p99 webhooks $(awk '/ 99%/ {print $2}' "$work/hook.txt"), healthz $(awk '/ 99%/ {print $2}' "$work/health.txt")"
  echo "   load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
}

wants() { [[ " $CASES " == *" $1 "* ]]; }

if wants sqlite; then
  run sqlite "[store]
url = \"sqlite://$work/bench.db\""
  echo "   events stored: $(sqlite3 "$work/bench.db" 'SELECT COUNT(*) FROM inbox')"
fi

if wants postgres && [[ -n "${CONCORD_BENCH_PG_URL:-}" ]]; then
  schema="concord_bench_$(date +%s)"
  run postgres "[store]
url = \"$CONCORD_BENCH_PG_URL\"
schema = \"$schema\"
max_connections = 8"
  if command -v psql >/dev/null; then
    echo "   events stored: $(psql -tA "$CONCORD_BENCH_PG_URL" -c "SELECT COUNT(*) FROM \"$schema\".inbox")"
    psql -q "$CONCORD_BENCH_PG_URL" -c "DROP SCHEMA \"$schema\" CASCADE" >/dev/null
  fi
fi

# The bench's queues (the queue, its dead letters and retry queues) are
# deleted before and after; the NAME.dlx exchange stays, declared again by
# the next run (rabbitmqctl cannot delete exchanges).
drop_queues() {
  command -v rabbitmqctl >/dev/null || return 0
  for q in $(rabbitmqctl -q list_queues name | awk -v q="$1" 'index($1, q) == 1'); do
    rabbitmqctl -q delete_queue "$q" >/dev/null
  done
}

if wants amqp && [[ -n "${CONCORD_BENCH_AMQP_URL:-}" ]]; then
  queue="concord.bench.webhooks"
  drop_queues "$queue"
  run amqp "[store]
url = \"sqlite://$work/amqp.db\"
[queue]
kind = \"amqp\"
url = \"$CONCORD_BENCH_AMQP_URL\"
name = \"$queue\""
  echo "   events in the inbox table: $(sqlite3 "$work/amqp.db" 'SELECT COUNT(*) FROM inbox') (intake publishes to the broker instead)"
  if command -v rabbitmqctl >/dev/null; then
    echo "   messages in $queue: $(rabbitmqctl -q list_queues name messages type | awk -v q="$queue" '$1 == q {print $2 " (" $3 ")"}')"
  fi
  drop_queues "$queue"
fi
