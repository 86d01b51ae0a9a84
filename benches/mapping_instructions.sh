#!/usr/bin/env bash
# Instructions per record of the mapping bench, counted by callgrind: unlike
# wall time, the count does not change when other work shares the machine.
#
#   bash benches/mapping_instructions.sh [BENCH_BINARY]
#
# Without an argument the bench is built (`cargo bench --no-run`). Each mode
# runs with 1,000 and 3,000 records; the difference divided by 2,000 is the
# cost of one record, start-up and plan compilation excluded.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
  bin=$(cargo bench --bench mapping --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "mapping" and m.get("executable"):
        print(m["executable"])')
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() { # mode records
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg" "$bin" --count "$1" "$2" 2>&1 |
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
for mode in plan canonical; do
  a=$(count "$mode" 1000)
  b=$(count "$mode" 3000)
  echo "$mode: $(( (b - a) / 2000 )) instructions/record"
done
