#!/usr/bin/env bash
# Drives the admin API of `concord serve` with schemathesis: every route,
# generated valid and invalid requests, each answer checked against the
# API's own /openapi.json (status codes, schemas, content types) and for
# 5xx. Runs the demo configuration on a fresh SQLite store with an admin
# token, so every route is reachable. Token revocation runs last, alone: the
# fuzzer would otherwise revoke its own token halfway through.
#
#   pip install schemathesis            # once (PyPI)
#   cargo build --release
#   bash tests/schemathesis.sh [extra schemathesis options…]
#
# CONCORD_BIN picks the binary (default target/release/concord),
# SCHEMATHESIS the command (default: schemathesis on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${CONCORD_BIN:-target/release/concord}
ST=${SCHEMATHESIS:-schemathesis}
PORT=${CONCORD_FUZZ_PORT:-18089}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first" >&2; exit 2; }
command -v "$ST" >/dev/null || { echo "no $ST: pip install schemathesis" >&2; exit 2; }

work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

here=$PWD
BIN=$(realpath "$BIN")
# The demo in a scratch directory: its systems and store under data/demo/,
# so lists, records, conflicts and alerts have something to show and jobs
# can run.
ln -s "$PWD/config" "$work/config"
cd "$work"
export CONCORD__SERVER__LISTEN="127.0.0.1:$PORT"
export CONCORD__LOG__LEVEL=warn
config=config/demo.toml
"$BIN" --config "$config" demo >"$work/demo.log" 2>&1 ||
  { cat "$work/demo.log" >&2; exit 1; }
token=$("$BIN" --config "$config" tokens create fuzz --role admin)

"$BIN" --config "$config" serve >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done

fuzz() {
  "$ST" --config-file "$here/tests/schemathesis.toml" run "http://127.0.0.1:$PORT/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --max-examples "${CONCORD_FUZZ_EXAMPLES:-50}" \
    --seed "${CONCORD_FUZZ_SEED:-2026}" \
    "$@"
}
status=0
fuzz --exclude-method DELETE "$@" || status=$?
fuzz --include-method DELETE "$@" || status=$?
if [ "$status" != 0 ]; then
  echo "--- concord serve log" >&2
  tail -n 50 "$work/serve.log" >&2
fi
exit "$status"
