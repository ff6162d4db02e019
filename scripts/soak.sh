#!/usr/bin/env bash
# A soak: a real server under a steady mixed load for MINUTES (default 30), with one batch
# roll-over half way, its resident memory sampled every 10 s. Memory must stay flat: bounded
# queues, a bounded online state (--online-users, exceeded here on purpose so that users are
# evicted and rebuilt), a bounded medoid cache.
#
#   cargo build --release --workspace && scripts/soak.sh           # MINUTES=30 DIR=/tmp/pinnersage-soak
#
# Load: recommendations for 50,000 Zipf users at 500 req/s and events for 200,000 users at
# 2,000 events/s (the online state holds at most 20,000 users), over HTTP on 127.0.0.1.
# Prints the RSS series and the first/last 5-minute means; writes DIR/rss.tsv and the load
# generators' reports.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/pinnersage}
BENCH=${BENCH:-target/release/pinnersage-bench}
MINUTES=${MINUTES:-30}
DIR=${DIR:-/tmp/pinnersage-soak}
PORT=${PORT:-18181}
SECONDS_TOTAL=$((MINUTES * 60))

rm -rf "$DIR"
mkdir -p "$DIR"
echo "== data: 50,000 users, 100,000 items x 64"
"$BIN" synth --out "$DIR/synth" --users 50000 --items 100000 --dim 64 --seed 3 >/dev/null
"$BIN" import items --data-dir "$DIR/data" "$DIR/synth/items.parquet" >/dev/null
"$BIN" import events --data-dir "$DIR/data" "$DIR/synth/events.parquet" >/dev/null
"$BIN" index build --data-dir "$DIR/data" >/dev/null 2>&1
"$BIN" batch --data-dir "$DIR/data" --now 1700000000 >/dev/null 2>&1

echo "== serving on 127.0.0.1:$PORT for $MINUTES minutes"
"$BIN" serve --data-dir "$DIR/data" --addr "127.0.0.1:$PORT" --online-users 20000 \
  >"$DIR/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.2
done

printf 'seconds\trss_mib\n' >"$DIR/rss.tsv"
(
  start=$(date +%s)
  while kill -0 "$server" 2>/dev/null; do
    rss=$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$server/status")
    printf '%s\t%s\n' "$(($(date +%s) - start))" "$rss" >>"$DIR/rss.tsv"
    sleep 10
  done
) &
sampler=$!

"$BENCH" serve --addr "127.0.0.1:$PORT" --users 50000 --rate 500 \
  --duration "$SECONDS_TOTAL" >"$DIR/serve-report.txt" 2>&1 &
reads=$!
"$BENCH" ingest --addr "127.0.0.1:$PORT" --items 100000 --users 200000 --rate 2000 \
  --duration "$SECONDS_TOTAL" >"$DIR/ingest-report.txt" 2>&1 &
writes=$!

sleep $((SECONDS_TOTAL / 2))
echo "== half way: a batch over the soak's events, served at once"
curl -sf -H 'Content-Type: application/json' -d "{\"now\": $(date +%s)}" \
  "http://127.0.0.1:$PORT/v1/admin/batch" | tee "$DIR/batch.json"
echo
wait "$reads" "$writes"
kill "$server"
wait "$server" 2>/dev/null || true
kill "$sampler" 2>/dev/null || true

echo "== reads";  tail -n 4 "$DIR/serve-report.txt"
echo "== writes"; tail -n 4 "$DIR/ingest-report.txt"
echo "== resident memory (MiB) every 10 s"
cut -f2 "$DIR/rss.tsv" | tail -n +2 | paste -sd' '
awk -F'\t' -v window=300 'NR > 1 {
    t[NR] = $1; r[NR] = $2; n = NR
  } END {
    for (i = 2; i <= n; i++) {
      if (t[i] <= window) { a += r[i]; na++ }
      if (t[i] >= t[n] - window) { b += r[i]; nb++ }
      if (r[i] > max) max = r[i]
    }
    printf "first 5 min mean %.0f MiB, last 5 min mean %.0f MiB, max %d MiB\n", a / na, b / nb, max
  }' "$DIR/rss.tsv"
