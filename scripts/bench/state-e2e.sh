#!/usr/bin/env bash
# scripts/bench/state-e2e.sh - end-to-end running total, exactly once:
# Stagehost (`host run`, the running-total handler with `state: {}`) against
# a Kafka Streams application doing the same (scripts/bench/kstreams-totals,
# groupByKey().aggregate(), exactly_once_v2), on the local broker.
#
#   scripts/bench/state-e2e.sh            (or `make bench-state`)
#
# Per run of the bench: one fresh input topic with PARTITIONS partitions,
# preloaded with MESSAGES keyed amounts over ACCOUNTS accounts (message i is
# {"account": "acct-(i % ACCOUNTS)", "amount": i % 100 + 1}, keyed by its account). Both contenders read
# this same input, each with a group (application.id) of its own, and write
# an output topic of their own (LogAppendTime timestamps) and a changelog of
# their own (Stagehost: `<group>-changelog`; Streams: `<app id>-totals-changelog`),
# with a fresh state directory. Then, for each contender in turn, never both
# at once:
#   1. a read_committed reader (kstreams-totals' Await) is assigned the
#      output topic's partitions;
#   2. the contender starts (the clock starts here);
#   3. when the reader has seen MESSAGES outputs (and checked that every
#      account's outputs count 1, 2, 3, ... with the right totals), the
#      contender's CPU time (utime+stime, /proc/PID/stat) and peak RSS
#      (VmHWM) are read, and it is stopped.
# wall = contender start -> last output seen by the reader, so it includes
# the contender's start (JVM start, group join, the first restore of empty
# state); msg/s is MESSAGES over the broker's append times of the first and
# last output (the steady rate, without the start). Broker CPU is the
# broker process's CPU during the same window.
#
# First WARMUP_MESSAGES (not counted) through each contender, then ROUNDS
# rounds, each contender once per round, alternating which goes first; the
# table gives the median and every round.
#
# Environment: MESSAGES (200000), ACCOUNTS (1000), PARTITIONS (4), ROUNDS (3),
#   WARMUP_MESSAGES (50000; 0 skips), CONTENDERS ("stagehost kstreams"),
#   KSTREAMS_THREADS (1: one stream thread, as the host has one exactly-once
#   loop per stage), TIMEOUT_S (600), BROKERS (127.0.0.1:9092),
#   KEEP_TOPICS (0: the bench's topics are deleted at the end).
# Needs: the broker (make kafka-up), target/release/host (make build), the
# running-total component (make plugins), Java 17 and Maven (the Streams app
# is built here on first use).
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
messages=${MESSAGES:-200000}
accounts=${ACCOUNTS:-1000}
partitions=${PARTITIONS:-4}
rounds=${ROUNDS:-3}
warmup=${WARMUP_MESSAGES:-50000}
contenders=${CONTENDERS:-stagehost kstreams}
threads=${KSTREAMS_THREADS:-1}
timeout_s=${TIMEOUT_S:-600}
brokers=${BROKERS:-127.0.0.1:9092}
host="$root/target/release/host"
wasm="$root/target/wasm32-wasip2/release/running_total.wasm"
work="$root/target/bench-state-e2e"
tck=$(getconf CLK_TCK)

# shellcheck source=scripts/bench/kstreams-lib.sh
source "$root/scripts/bench/kstreams-lib.sh"

[[ -x $host ]] || { echo "state-e2e: no $host (make build)" >&2; exit 1; }
[[ -f $wasm ]] || { echo "state-e2e: no $wasm (make plugins)" >&2; exit 1; }
"$root/scripts/kafka.sh" status >/dev/null || { echo "state-e2e: no broker on $brokers (make kafka-up)" >&2; exit 1; }
kstreams_build

rm -rf "$work"
mkdir -p "$work"
run_id="bst$(date +%s)"
broker_pid=$(cat "${STAGEHOST_CACHE:-$HOME/.cache/stagehost}/kafka-data-9092/broker.pid" 2>/dev/null || true)

cleanup() {
  local pid
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
  if [[ ${KEEP_TOPICS:-0} != 1 ]]; then
    kjava Topics "$brokers" delete-prefix "$run_id" 2>/dev/null || true
  fi
}
trap cleanup EXIT

cpu_ticks() { # utime + stime of PID, in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
vm_hwm_kib() {
  awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

# One contender's run on input topic $2 with $3 messages, named $4; appends
# "contender wall_s msgs_per_s cpu_s rss_mib broker_cpu_s first_output_s" to $work/results.
run_one() {
  local contender=$1 input=$2 n=$3 name=$4
  local out="$name-out" dir="$work/$name"
  mkdir -p "$dir"
  kjava Topics "$brokers" create "$partitions" "$out+append" "$name-dlq"
  # The reader, assigned before the contender starts.
  local fifo="$dir/await.out"
  kjava Await "$brokers" "$out" "$n" "$accounts" "$timeout_s" >"$fifo" 2>"$dir/await.err" &
  local await_pid=$!
  until grep -q '^ready' "$fifo" 2>/dev/null; do
    kill -0 "$await_pid" 2>/dev/null || { cat "$dir/await.err" >&2; exit 1; }
    sleep 0.05
  done
  local broker0=0
  [[ -n $broker_pid ]] && broker0=$(cpu_ticks "$broker_pid")
  local t0 pid
  t0=$(date +%s%N)
  case $contender in
    stagehost)
      cat >"$dir/config.yml" <<EOF
kafka:
  brokers: $brokers
  group: $name
  delivery: exactly-once
  transactions:
    id: $name
    commit_interval_ms: 100
admin:
  enabled: false
data_dir: $dir/data
handlers:
  running-total:
    path: $wasm
stages:
  - name: totals
    input: $input
    output: $out
    dead_letter: $name-dlq
    handler: running-total
    state: {}
EOF
      "$host" run "$dir/config.yml" >"$dir/contender.log" 2>&1 &
      pid=$!
      ;;
    kstreams)
      kjava_exec -Dbench.threads="$threads" Totals "$brokers" "$name" "$input" "$out" "$dir/kstreams-state" \
        >"$dir/contender.log" 2>&1 &
      pid=$!
      ;;
    *) echo "state-e2e: unknown contender $contender" >&2; exit 1 ;;
  esac
  local rc=0
  wait "$await_pid" || rc=$?
  local t1 ticks hwm broker1=0
  t1=$(date +%s%N)
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "state-e2e: $contender exited early; its log:" >&2
    tail -30 "$dir/contender.log" >&2
    exit 1
  fi
  ticks=$(cpu_ticks "$pid")
  hwm=$(vm_hwm_kib "$pid")
  [[ -n $broker_pid ]] && broker1=$(cpu_ticks "$broker_pid")
  kill -TERM "$pid"
  wait "$pid" || true
  if [[ $rc -ne 0 ]]; then
    echo "state-e2e: $contender: the reader failed: $(cat "$dir/await.err")" >&2
    tail -30 "$dir/contender.log" >&2
    exit 1
  fi
  local line done_ms first_ts last_ts
  line=$(grep '^done_ms=' "$fifo")
  done_ms=$(sed -E 's/.*done_ms=([0-9]+).*/\1/' <<<"$line")
  first_ts=$(sed -E 's/.*first_ts=([0-9]+).*/\1/' <<<"$line")
  last_ts=$(sed -E 's/.*last_ts=([0-9]+).*/\1/' <<<"$line")
  awk -v c="$contender" -v t0="$t0" -v done="$done_ms" -v f="$first_ts" -v l="$last_ts" -v n="$n" \
      -v ticks="$ticks" -v tck="$tck" -v hwm="$hwm" -v b0="$broker0" -v b1="$broker1" \
      'BEGIN { t0ms = t0 / 1e6; rate = (l > f) ? n * 1000 / (l - f) : 0;
               printf "%s %.2f %.0f %.2f %.0f %.2f %.2f\n", c, (done - t0ms) / 1000, rate,
                      ticks / tck, hwm / 1024, (b1 - b0) / tck, (f - t0ms) / 1000 }' \
      | tee -a "$work/results" >&2
}

echo "state-e2e: preloading $messages messages over $accounts accounts into $partitions partitions" >&2
kjava Topics "$brokers" create "$partitions" "$run_id-in" "$run_id-warm"
kjava Preload "$brokers" "$run_id-in" "$messages" "$accounts"
if [[ $warmup -gt 0 ]]; then
  kjava Preload "$brokers" "$run_id-warm" "$warmup" "$accounts"
  for c in $contenders; do
    echo "state-e2e: warm-up, $c ($warmup messages)" >&2
    run_one "$c" "$run_id-warm" "$warmup" "$run_id-warm-$c"
  done
  : >"$work/results"
fi
: >"$work/results"

read -r -a list <<<"$contenders"
for ((r = 0; r < rounds; r++)); do
  for ((i = 0; i < ${#list[@]}; i++)); do
    c=${list[$(((i + r) % ${#list[@]}))]}
    echo "state-e2e: round $((r + 1))/$rounds, $c" >&2
    run_one "$c" "$run_id-in" "$messages" "$run_id-r$r-$c"
  done
done

echo
echo "$messages messages, $accounts accounts, $partitions partitions, exactly once (commit every 100 ms), $rounds rounds; median (every round):"
echo
echo "| contender | wall s | msg/s (first → last output) | CPU s | CPU µs/msg | peak RSS | broker CPU s | first output after |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for c in $contenders; do
  awk -v c="$c" -v n="$messages" '
    $1 == c { k++; w[k] = $2; m[k] = $3; u[k] = $4; r[k] = $5; b[k] = $6; f[k] = $7 }
    function med(a,   i, j, t, s) {
      for (i = 1; i <= k; i++) s[i] = a[i]
      for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
      return (k % 2) ? s[(k + 1) / 2] : (s[k / 2] + s[k / 2 + 1]) / 2
    }
    function all(a, fmt,   i, o) { o = ""; for (i = 1; i <= k; i++) o = o (i > 1 ? " / " : "") sprintf(fmt, a[i]); return o }
    END {
      name = (c == "stagehost") ? "Stagehost (`host run`)" : "Kafka Streams 4.1.1"
      printf "| %s | %.2f (%s) | %d (%s) | %.2f (%s) | %.1f | %d MiB (%s) | %.2f | %.2f s |\n",
        name, med(w), all(w, "%.2f"), med(m), all(m, "%d"), med(u), all(u, "%.2f"),
        med(u) * 1e6 / n, med(r), all(r, "%d"), med(b), med(f)
    }' "$work/results"
done
