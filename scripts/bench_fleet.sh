#!/usr/bin/env bash
# The fleet benchmark: a 3-node nats-server cluster (JetStream, stream replicas 3) and 1 or 3
# `pinnersage serve --fleet` replicas on 127.0.0.1, with shipped profiles.
#
#   cargo build --release --workspace && scripts/bench_fleet.sh   # DIR=/tmp/pinnersage-fleet-bench COUNTS="1 3"
#   READS=1000 COUNTS=1 scripts/bench_fleet.sh            # one replica at the 3-replica rate
#
# For 1 and then 3 replicas (fresh NATS cluster and data directories each time):
#   1. event -> visible on another replica: `pinnersage-bench ingest` posts to replica A at RATE events/s
#      while a probe posts one event to A every 50 ms and polls its profile on replica B (on A
#      itself with one replica);
#   2. CPU per consumed event: each replica's CPU time (utime + stime from /proc) during that
#      ingest, divided by the events it consumed (every replica consumes every event);
#   3. CPU per request: `pinnersage-bench serve` at READS req/s in total, split evenly over the replicas
#      (a different user draw each), after a 10 s warm-up of the medoid caches; each replica's
#      CPU time divided by the requests it served.
# Data: 20,000 synthetic users, 50,000 items x 64, profiles computed once and shipped.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/pinnersage}
BENCH=${BENCH:-target/release/pinnersage-bench}
DIR=${DIR:-/tmp/pinnersage-fleet-bench}
RATE=${RATE:-1000}
READS=${READS:-3000}
SECONDS_LOAD=${SECONDS_LOAD:-20}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}

rm -rf "$DIR"
mkdir -p "$DIR"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== data: 20,000 users, 50,000 items x 64; profiles shipped"
"$BIN" synth --out "$DIR/synth" --users 20000 --items 50000 --dim 64 --seed 5 >/dev/null
"$BIN" import items --data-dir "$DIR/seed" "$DIR/synth/items.parquet" >/dev/null
"$BIN" import events --data-dir "$DIR/seed" "$DIR/synth/events.parquet" >/dev/null
"$BIN" index build --data-dir "$DIR/seed" >/dev/null 2>&1
"$BIN" batch --data-dir "$DIR/seed" --now 1700000000 --out "$DIR/profiles.parquet" >/dev/null 2>&1
"$BIN" ship --to "$DIR/shared" --now 1700000000 "$DIR/profiles.parquet" >/dev/null

cpu_ms() { # utime + stime of a pid, in milliseconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$1/stat"
}

for n in ${COUNTS:-1 3}; do
  echo "== $n replica(s)"
  run="$DIR/run$n"
  urls=()
  for i in 0 1 2; do
    "$NATS_SERVER" -a 127.0.0.1 -p $((14222 + i)) -js -sd "$run/nats$i" --server_name "n$i" \
      --cluster_name bench --cluster "nats://127.0.0.1:$((16222 + i))" \
      --routes nats://127.0.0.1:16222,nats://127.0.0.1:16223,nats://127.0.0.1:16224 \
      >"$run-nats$i.log" 2>&1 &
    pids+=($!)
    urls+=("nats://127.0.0.1:$((14222 + i))")
  done
  nats=$(IFS=,; echo "${urls[*]}")
  replicas=()
  addrs=()
  for r in $(seq 0 $((n - 1))); do
    mkdir -p "$run/r$r"
    cp -r "$DIR/seed/catalog" "$DIR/seed/index" "$run/r$r/"
    addr="127.0.0.1:$((18090 + r))"
    # Startup waits out the cluster's leader election (setup is retried for 30 s).
    "$BIN" serve --data-dir "$run/r$r" --addr "$addr" --fleet --nats "$nats" \
      --stream-replicas 3 --profiles-from "$DIR/shared" >"$run-r$r.log" 2>&1 &
    pids+=($!)
    replicas+=($!)
    addrs+=("$addr")
  done
  for addr in "${addrs[@]}"; do
    for _ in $(seq 1 300); do
      curl -sf "http://$addr/readyz" >/dev/null && break
      sleep 0.2
    done
    curl -sf "http://$addr/readyz" >/dev/null || { echo "replica $addr not ready"; exit 1; }
  done

  visible=${addrs[$((n - 1))]}
  before=(); for p in "${replicas[@]}"; do before+=("$(cpu_ms "$p")"); done
  "$BENCH" ingest --addr "${addrs[0]}" --visible-on "$visible" --items 50000 \
    --users 20000 --rate "$RATE" --batch 10 --connections 4 --duration "$SECONDS_LOAD" \
    | tee "$run-ingest.txt"
  sleep 2 # the last messages consumed everywhere
  events=$(awk '/events durable/ {print $1; exit}' "$run-ingest.txt")
  for i in "${!replicas[@]}"; do
    stored=$(curl -sf "http://${addrs[$i]}/metrics" | awk '$1 == "pinnersage_events_stored_total" {print $2}')
    after=$(cpu_ms "${replicas[$i]}")
    awk -v a="$after" -v b="${before[$i]}" -v e="$events" -v s="$stored" -v r="${addrs[$i]}" \
      'BEGIN {printf "replica %s: consumed %d of %d events, CPU %.0f ms = %.1f us per event\n", r, s, e, a - b, (a - b) * 1000 / e}'
  done

  per=$((READS / n))
  serve_load() { # $1: seconds, $2: report prefix; a different user draw per replica
    loads=()
    for i in "${!addrs[@]}"; do
      "$BENCH" serve --addr "${addrs[$i]}" --users 20000 --rate "$per" --connections 4 \
        --seed $((i + 1)) --duration "$1" >"$2$i.txt" 2>&1 &
      loads+=($!)
    done
    wait "${loads[@]}"
  }
  serve_load 10 "$run-warmup" # warm the medoid caches first: steady state is measured
  before=(); for p in "${replicas[@]}"; do before+=("$(cpu_ms "$p")"); done
  serve_load "$SECONDS_LOAD" "$run-serve"
  for i in "${!replicas[@]}"; do
    after=$(cpu_ms "${replicas[$i]}")
    requests=$(awk '/requests in/ {print $1; exit}' "$run-serve$i.txt")
    p99=$(grep -o 'p99 [0-9.]*' "$run-serve$i.txt" | head -1)
    cache=$(grep -o '[0-9.]*% of ANN' "$run-serve$i.txt" | cut -d' ' -f1)
    awk -v a="$after" -v b="${before[$i]}" -v q="$requests" -v r="${addrs[$i]}" -v p="$p99" -v c="$cache" \
      'BEGIN {printf "replica %s: %d requests, CPU %.0f ms = %.1f us per request (%s ms, cache removed %s of ANN searches)\n", r, q, a - b, (a - b) * 1000 / q, p, c}'
  done
  cleanup
  pids=()
  sleep 1
done
