#!/usr/bin/env bash
# What recording experiment impressions costs a saturated server, measured in pairs: servers on
# copies of one data directory, one without an experiment and one (or two: BASE, an older
# binary) with EXPERIMENTS, all running at once; rounds of saturated load go to each in turn, so
# that the machine's drift (a shared VM's speed varies by the minute) falls on all of them.
#
#   cargo build --release --workspace
#   DATA=d EXPERIMENTS=exp.toml scripts/bench_impressions.sh            # ROUNDS=10 SECONDS_RUN=3
#   DATA=d EXPERIMENTS=exp.toml BASE=/tmp/pinnersage-old scripts/bench_impressions.sh
#
# DATA is a data directory with an index (docs/benchmarks.md, "Serving"); EXPERIMENTS an
# experiments file whose arms serve the defaults (so that only the recording differs). Prints,
# per server: mean req/s, and its CPU time (utime + stime of each thread, from /proc) per request
# by thread: tokio-rt-worker answers, pinnersage-impr writes the impressions, fjall:worker
# flushes and compacts them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/pinnersage}
BENCH=${BENCH:-target/release/pinnersage-bench}
DIR=${DIR:-/tmp/pinnersage-impressions-bench}
ROUNDS=${ROUNDS:-10}
SECONDS_RUN=${SECONDS_RUN:-3}
USERS=${USERS:-100000}
: "${DATA:?DATA=data directory}" "${EXPERIMENTS:?EXPERIMENTS=experiments file}"

rm -rf "$DIR"
mkdir -p "$DIR"
servers=("none 8197 $BIN" "recording 8198 $BIN")
[ -n "${BASE:-}" ] && servers+=("recording-base 8199 $BASE")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
for s in "${servers[@]}"; do
  set -- $s
  cp -r "$DATA" "$DIR/$1"
  args=()
  [ "$1" != none ] && args=(--experiments "$EXPERIMENTS")
  "$3" serve --data-dir "$DIR/$1" --addr "127.0.0.1:$2" "${args[@]}" > "$DIR/$1.log" 2>&1 &
  pids+=($!)
done
sync
for s in "${servers[@]}"; do
  set -- $s
  until curl -sf "127.0.0.1:$2/readyz" > /dev/null; do sleep 0.2; done
  # Warm the medoid caches at 2,000 req/s.
  "$BENCH" serve --addr "127.0.0.1:$2" --users "$USERS" --rate 2000 --duration 4 --connections 16 > /dev/null
done

# CPU ticks by thread name of process $1.
cpu() {
  for t in /proc/"$1"/task/*; do
    echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{s[$1] += $2} END {for (k in s) print k, s[k]}' | sort
}
for _ in $(seq "$ROUNDS"); do
  for k in "${!servers[@]}"; do
    set -- ${servers[$k]}
    cpu "${pids[$k]}" > "$DIR/before"
    out=$("$BENCH" serve --addr "127.0.0.1:$2" --users "$USERS" --duration "$SECONDS_RUN" --connections 8)
    sleep 0.1
    cpu "${pids[$k]}" > "$DIR/after"
    # "N requests in T s: R req/s ..."
    echo "R $1 $(echo "$out" | awk 'NR == 1 {print $1, $6}')"
    join "$DIR/before" "$DIR/after" | awk -v s="$1" '{print "T", s, $1, $3 - $2}'
  done
done | awk '
  $1 == "R" { requests[$2] += $3; rate[$2] += $4; runs[$2]++ }
  $1 == "T" { ticks[$2 " " $3] += $4; total[$2] += $4 }
  END {
    for (s in runs) {
      printf "%-15s %6.0f req/s  CPU %5.1f us/request:", s, rate[s] / runs[s], total[s] * 10000 / requests[s]
      for (x in ticks) { split(x, a, " "); if (a[1] == s && ticks[x] > 0) printf "  %s %.1f", a[2], ticks[x] * 10000 / requests[s] }
      print ""
    }
  }' | sort
