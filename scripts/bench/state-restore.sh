#!/usr/bin/env bash
# scripts/bench/state-restore.sh - how long a stateful stage takes to get its
# state back after a restart, for KEYS distinct keys (default 1,000,000):
#
#   scripts/bench/state-restore.sh        (or `make bench-state`)
#
# For each contender (Stagehost's running-total stage, exactly once; and the
# Kafka Streams app of scripts/bench/kstreams-totals), on a fresh input topic
# of PARTITIONS partitions holding KEYS messages with distinct keys:
#   fill       the contender handles all KEYS messages (a read_committed
#              reader waits for the KEYS outputs), so its changelog holds one
#              record per key; then a clean stop (SIGTERM), which writes the
#              checkpoint at the changelog's end.
#   local-after-stop   a restart on the same state directory, right after
#              the fill's clean stop: the local store, plus whatever of the
#              changelog lies past the store's checkpoint.
#   local      (Stagehost) a run past the host's checkpoint interval (5 s)
#              and one more message, so that its commit moves every
#              partition's checkpoint to the changelog's end; a clean stop; then
#              the restart measured: the local store alone. (Kafka Streams
#              checkpoints at its clean stop: its `local` is a second restart.)
#   changelog  the state directory deleted, then a restart: every partition
#              restored from its changelog, KEYS records in all.
# Stagehost restores a partition before its first message, so one keyed
# message per partition is sent to the input before each restart; the
# figures are its `state caught up ... records=R elapsed_ms=T` log lines
# (per partition; the partitions restore one after the other) and
# stagehost_state_restore_seconds_total from /metrics. Kafka Streams
# restores on assignment; its figures are its restore listener's lines
# (per partition, `restored partition=P records=R elapsed_ms=T`; the four
# restore together in its one stream thread). "to ready" is from the
# process's start to its last partition restored.
#
# Environment: KEYS (1000000), PARTITIONS (4), CONTENDERS ("stagehost kstreams"),
#   ADMIN_PORT (19645, the host's admin port for /metrics), TIMEOUT_S (900),
#   BROKERS (127.0.0.1:9092), KEEP_TOPICS (0).
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
keys=${KEYS:-1000000}
partitions=${PARTITIONS:-4}
contenders=${CONTENDERS:-stagehost kstreams}
admin_port=${ADMIN_PORT:-19645}
timeout_s=${TIMEOUT_S:-900}
brokers=${BROKERS:-127.0.0.1:9092}
host="$root/target/release/host"
wasm="$root/target/wasm32-wasip2/release/running_total.wasm"
work="$root/target/bench-state-restore"

# shellcheck source=scripts/bench/kstreams-lib.sh
source "$root/scripts/bench/kstreams-lib.sh"

[[ -x $host ]] || { echo "state-restore: no $host (make build)" >&2; exit 1; }
[[ -f $wasm ]] || { echo "state-restore: no $wasm (make plugins)" >&2; exit 1; }
"$root/scripts/kafka.sh" status >/dev/null || { echo "state-restore: no broker on $brokers (make kafka-up)" >&2; exit 1; }
kstreams_build

rm -rf "$work"
mkdir -p "$work"
run_id="bsr$(date +%s)"
input="$run_id-in"
cleanup() {
  local pid
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
  if [[ ${KEEP_TOPICS:-0} != 1 ]]; then
    kjava Topics "$brokers" delete-prefix "$run_id" 2>/dev/null || true
  fi
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Starts contender $1 (name $2) in the background; sets $pid.
start() {
  local contender=$1 name=$2 dir="$work/$2" log=$3
  case $contender in
    stagehost)
      "$host" run "$dir/config.yml" >>"$log" 2>&1 &
      pid=$!
      ;;
    kstreams)
      kjava_exec -Dbench.cache.bytes="${FILL_CACHE:-0}" Totals "$brokers" "$name" "$input" "$name-out" "$dir/state" >>"$log" 2>&1 &
      pid=$!
      ;;
  esac
}

stop() {
  kill -TERM "$pid"
  wait "$pid" || true
}

# The restore lines in $1: "partition records elapsed_ms" per line.
restore_lines() {
  case $2 in
    stagehost) grep 'state caught up' "$1" | sed -E 's/.*partition=([0-9]+).*records=([0-9]+).*elapsed_ms=([0-9]+).*/\1 \2 \3/' ;;
    kstreams) grep 'restored partition=' "$1" | sed -E 's/.*partition=([0-9]+) records=([0-9]+) elapsed_ms=([0-9]+).*/\1 \2 \3/' ;;
  esac
}

# Whether the contender in log $1 ($2) has its state: Stagehost, a restore
# line per partition; Kafka Streams, in state RUNNING (it restores before).
ready() {
  case $2 in
    stagehost) [[ $(restore_lines "$1" stagehost | wc -l) -ge $partitions ]] ;;
    kstreams) grep -q -- '-> RUNNING' "$1" ;;
  esac
}

# One restart of contender $1 ($2: local or changelog); prints the result line.
restart() {
  local contender=$1 phase=$2 name="$run_id-$1" dir="$work/$run_id-$1"
  local log="$dir/$phase.log"
  : >"$log"
  if [[ $phase == changelog ]]; then
    rm -rf "$dir/data/state" "$dir/state"
  fi
  if [[ $contender == stagehost ]]; then
    # One message per partition: the host restores a partition before its first.
    local p
    for ((p = 0; p < partitions; p++)); do
      "$host" send "$input" "{\"account\": \"restart-$phase-$p\", \"amount\": 1}" --key "restart-$phase-$p" --partition "$p" --brokers "$brokers" >/dev/null 2>&1
    done
  fi
  local t0 t1 deadline
  t0=$(now_ms)
  start "$contender" "$name" "$log"
  deadline=$((t0 + timeout_s * 1000))
  until ready "$log" "$contender"; do
    kill -0 "$pid" 2>/dev/null || { echo "state-restore: $contender exited; its log:" >&2; tail -20 "$log" >&2; exit 1; }
    [[ $(now_ms) -lt $deadline ]] || { echo "state-restore: $contender did not restore in $timeout_s s" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(now_ms)
  local metric=""
  if [[ $contender == stagehost ]]; then
    metric=$(curl -s "http://127.0.0.1:$admin_port/metrics" | awk '/^stagehost_state_restore_seconds_total/ { print $2 }')
  fi
  if [[ $phase == settle ]]; then
    # Past the host's checkpoint interval (5 s), one more message (to
    # partition 0): its commit moves every partition's checkpoint to its
    # changelog's end, and nothing is written after it.
    sleep 6
    "$host" send "$input" '{"account": "settle", "amount": 1}' --key settle --partition 0 --brokers "$brokers" >/dev/null 2>&1
    sleep 2
    stop
    return
  fi
  stop
  restore_lines "$log" "$contender" | awk -v c="$contender" -v ph="$phase" -v wall=$((t1 - t0)) -v m="${metric:--}" '
    { r += $2; s += $3; if ($3 > mx) mx = $3; per = per sprintf(" p%s=%d/%dms", $1, $2, $3) }
    END { printf "%s %s records=%d sum_ms=%d max_ms=%d to_ready_ms=%d metric_s=%s%s\n", c, ph, r, s, mx, wall, m, per }' \
    | tee -a "$work/results"
}

echo "state-restore: $keys distinct keys into $input ($partitions partitions)" >&2
kjava Topics "$brokers" create "$partitions" "$input"
kjava Preload "$brokers" "$input" "$keys" 0
: >"$work/results"

# Every contender's fill first: the host's restarts send messages to the input.
for c in $contenders; do
  name="$run_id-$c"
  dir="$work/$name"
  mkdir -p "$dir"
  kjava Topics "$brokers" create "$partitions" "$name-out+append" "$name-dlq"
  cat >"$dir/config.yml" <<EOF
kafka:
  brokers: $brokers
  group: $name
  delivery: exactly-once
  transactions:
    id: $name
    commit_interval_ms: 100
admin:
  listen: 127.0.0.1:$admin_port
data_dir: $dir/data
handlers:
  running-total:
    path: $wasm
stages:
  - name: totals
    input: $input
    output: $name-out
    dead_letter: $name-dlq
    handler: running-total
    state: {}
EOF
  echo "state-restore: $c: filling ($keys keys)" >&2
  kjava Await "$brokers" "$name-out" "$keys" 0 "$timeout_s" >"$dir/await.out" 2>"$dir/await.err" &
  await_pid=$!
  until grep -q "^ready" "$dir/await.out" 2>/dev/null; do
    kill -0 "$await_pid" 2>/dev/null || { cat "$dir/await.err" >&2; exit 1; }
    sleep 0.05
  done
  t0=$(now_ms)
  FILL_CACHE=10485760 start "$c" "$name" "$dir/fill.log"
  wait "$await_pid" || { echo "state-restore: $c: fill failed: $(cat "$dir/await.err")" >&2; exit 1; }
  t1=$(now_ms)
  stop
  store_dir="$dir/data/state"
  [[ $c == kstreams ]] && store_dir="$dir/state"
  echo "$c fill keys=$keys wall_ms=$((t1 - t0)) store_bytes=$(du -sb "$store_dir" | cut -f1)" | tee -a "$work/results"
done

# local-after-stop: restarted right after the fill's clean stop.
# local: restarted after a run that checkpointed at the changelog's end.
# changelog: the state directory deleted.
for c in $contenders; do
  restart "$c" local-after-stop
  if [[ $c == stagehost ]]; then
    restart "$c" settle >/dev/null
  fi
  restart "$c" local
  restart "$c" changelog
done

echo
echo "$keys keys, $partitions partitions (per partition: records/ms):"
echo
cat "$work/results"
