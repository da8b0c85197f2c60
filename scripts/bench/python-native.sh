#!/usr/bin/env bash
# The Python `multiply` handler in the sandbox against the same code on
# native CPython: times plugins/multiply/multiply.py's `handle_value` with the
# local python3 on the messages `host bench` sends (the tutorial's request
# {"operation":"mul","operator_1":"N","operator_2":"M"}, M = N % 97 + 1, as
# `fn request` in host/src/cli/bench.rs makes them), then runs
# `host bench config.yml --operation mul --wasm-only` on the same number of
# messages and prints both figures and their ratios.
#
#   scripts/bench/python-native.sh [MESSAGES]      (default 10000)
#
# PYTHON names the native interpreter (default python3): the component's
# CPython is 3.14 (componentize-py 0.25.1), so PYTHON=python3.14 compares
# like with like where that is installed.
#
# The native figure is the best of 7 passes over the messages (after one
# warm-up pass) and covers handle_value alone: bytes in, bytes out. The wasm
# figures also hold the host's route and output-record work (about 1 us per
# message, see the "where the time goes" table of `host bench`). Needs
# `make build plugins-run` done; takes a few seconds once the component is in
# the compile cache. Runs from any working directory.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
messages="${1:-10000}"
host="${STAGEHOST_HOST:-$repo_root/target/release/host}"
python="${PYTHON:-python3}"
[[ -x "$host" ]] || { echo "python-native: build the host first (make build)" >&2; exit 1; }

native_ns="$(cd "$repo_root/plugins/multiply" && "$python" - "$messages" <<'EOF'
import sys
import time

import multiply

n_messages = int(sys.argv[1])
inputs = [
    f'{{"operation":"mul","operator_1":"{n}","operator_2":"{n % 97 + 1}"}}'.encode()
    for n in range(n_messages)
]
handle_value = multiply.handle_value
for value in inputs:  # warm-up, and a check that every message is valid
    handle_value(value)
best = None
for _ in range(7):
    started = time.perf_counter_ns()
    for value in inputs:
        handle_value(value)
    elapsed = time.perf_counter_ns() - started
    best = elapsed if best is None else min(best, elapsed)
print(f"{best / n_messages:.0f}")
EOF
)"
python_version="$("$python" -c 'import platform; print(platform.python_implementation(), platform.python_version())')"

report="$(cd "$repo_root" &&
    "$host" bench config.yml --operation mul --wasm-only --messages "$messages" --fresh-messages 10 --batch 64 2>/dev/null)"
# The ns/message column of a path's row.
row_ns() { awk -v path="$1" 'index($0, path) == 1 { print $(NF - 2); exit }' <<<"$report"; }
handle_ns="$(row_ns "wasm, reused instance")"
batch_ns="$(row_ns "wasm, batches of")"
[[ -n "$handle_ns" && -n "$batch_ns" ]] || {
    echo "python-native: could not read host bench's report:" >&2
    echo "$report" >&2
    exit 1
}

printf 'multiply.handle_value on %s messages (tutorial requests, 53 bytes or less)\n\n' "$messages"
printf '%-44s %12s %10s\n' "path" "ns/message" "x native"
printf '%-44s %12s %10s\n' "native $python_version (handle_value)" "$native_ns" "1.00"
awk -v h="$handle_ns" -v b="$batch_ns" -v n="$native_ns" 'BEGIN {
    printf "%-44s %12d %10.2f\n", "wasm, reused instance (handle)", h, h / n
    printf "%-44s %12d %10.2f\n", "wasm, batches of 64 (handle-batch)", b, b / n
}'
