#!/usr/bin/env bash
# End-to-end `concord mapping apply` (NDJSON → NDJSON) against jq running the
# equivalent filter on the same file.
#
#   bash benches/mapping_vs_jq.sh [RECORDS]     (default 1,000,000)
#
# Prints wall time, records/s and peak memory (RSS) of each. Needs jq and
# GNU time (/usr/bin/time); the input is generated into a temp folder.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cargo build --release --quiet --bin concord
python3 - "$n" > "$tmp/in.ndjson" <<'PY'
import json, sys
n = int(sys.argv[1])
out = sys.stdout
for i in range(n):
    out.write(json.dumps({
        "id": 100000 + i,
        "company_name": f"  Muster   Handels GmbH {i} ",
        "legal_name": "Muster Handels GmbH",
        "vat_id": "de 123 456 789",
        "email": " Buchhaltung@Muster-Handel.DE ",
        "phone": "+49 30 1234567",
        "currency": "eur",
        "status": "AIP"[i % 3],
        "address": {"street": "Hauptstraße 1 ", "city": " Berlin", "zip": "10115", "country": "Deutschland"},
        "shipping": {"city": "Hamburg", "country": "germany"},
        "segment": "123"[i % 3],
        "created": "28.11.2019",
        "revenue": "1.234.567,89",
        "owner": {"email": "J.Doe@Example.com"},
        "website": "WWW.MUSTER-HANDEL.DE",
        "industry": "Wholesale",
        "employees": 120,
        "language": None,
        "newsletter": "ja",
        "notes": "Prefers  invoices\nby e-mail.",
    }, ensure_ascii=False))
    out.write("\n")
PY
size=$(du -m "$tmp/in.ndjson" | cut -f1)
echo "input: $n records, ${size} MB ($(nproc) cores, $(uname -m))"

run() { # label command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" > "$tmp/out.ndjson" 2> "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  read -r secs kb < "$tmp/time"
  local lines; lines=$(wc -l < "$tmp/out.ndjson")
  # The summary goes to stderr (reopening /dev/stderr would truncate it when
  # it is a file); the seconds are the result.
  printf '%-8s %8.2f s  %10.0f records/s  peak RSS %6.1f MB  (%s records out)\n' \
    "$label" "$secs" "$(echo "$n / $secs" | bc -l)" "$(echo "$kb / 1024" | bc -l)" "$lines" >&2
  echo "$secs"
}

c=$(run concord target/release/concord mapping apply benches/data/crm-customer.in.toml \
      --input "$tmp/in.ndjson" --output -)
j=$(run jq jq -c -f benches/data/crm-customer.jq "$tmp/in.ndjson")
printf 'concord is %.1fx faster than jq\n' "$(echo "$j / $c" | bc -l)"
