#!/usr/bin/env bash
# Where the sandbox's time goes: runs `host bench` on an unstripped `add`
# component under `perf record`, with wasmtime's perf map naming the guest's
# functions (STAGEHOST_PROFILE=perfmap), and splits the samples of the
# reused-instance pass into what the guest does (its JSON work, its
# allocator), what wasmtime does on the host's side of the call (lowering
# the message, lifting the outputs, entering the guest, the fiber switch),
# and the host's own route and output-record work.
#
#   scripts/bench/profile-sandbox.sh [MESSAGES]     (default 3000000)
#
# Needs `perf` (Debian: linux-perf) and `make plugins build` done. The
# profile stays in target/profile/ for `perf report -i`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
messages="${1:-3000000}"
out="$repo_root/target/profile"
mkdir -p "$out"

command -v perf >/dev/null || { echo "profile-sandbox: needs perf (Debian: linux-perf)" >&2; exit 1; }
host="$repo_root/target/release/host"
[[ -x "$host" ]] || { echo "profile-sandbox: build the host first (make build)" >&2; exit 1; }

# The same `add`, with its symbols kept.
echo "profile-sandbox: building add.wasm with symbols" >&2
(cd "$repo_root/plugins" &&
    CARGO_PROFILE_RELEASE_STRIP=false cargo build --quiet --target wasm32-wasip2 --release \
        -p add --target-dir "$out/plugins")
cat >"$out/bench.yml" <<EOF
kafka:
  brokers: 127.0.0.1:9092
admin:
  enabled: false
handlers:
  add:
    path: $out/plugins/wasm32-wasip2/release/add.wasm
stages:
  - name: calculator
    input: calc-requests
    output: calc-results
    dead_letter: calc-dlq
    route:
      field: operation
      to:
        sum: add
EOF

# Only the wasm paths (--wasm-only); the reused-instance pass takes most of
# the run after the component is compiled: the split reads the samples of
# its middle part.
STAGEHOST_PROFILE=perfmap STAGEHOST_COMPILE_CACHE=off \
    perf record -F 4999 -o "$out/perf.data" -- \
    "$host" bench "$out/bench.yml" --wasm-only --messages "$messages" --fresh-messages 10 >"$out/bench.txt" 2>/dev/null
sed -n '4,5p' "$out/bench.txt"
echo
perf report -i "$out/perf.data" --time 30%-85% --no-children --sort dso,sym 2>/dev/null |
    awk '
        /^#/ || !/%/ { next }
        {
            share = $1; sub("%", "", share); line = $0
            if (line ~ /\[JIT\]/) {
                if (line ~ /SizeClasses|dlmalloc|dlfree|malloc|free|realloc|rust_alloc|rust_dealloc|cabi_realloc/) part = "guest: allocator"
                else if (line ~ /trampoline|wasmtime_builtin/) part = "wasmtime: trampolines and builtins"
                else part = "guest: its code (JSON parse, compute, serialise)"
            }
            else if (line ~ /wasmtime|fiber|cranelift_bforest/) part = "wasmtime: host side of the call (lower, lift, enter, fiber)"
            else if (line ~ /handle_borrowed|HandlerInstance::arm|Scoped|clock_gettime/) part = "host: the call wrapper (limits, clock, tokio)"
            else if (line ~ /routing::|serde_json|from_utf8|DeserializeSeed/) part = "host: route (the routing field)"
            else if (line ~ /pipeline::|records|rd_kafka|rd_list|OwnedHeaders|NativePtr|check_topic|try_fold|try_process|in_place_collect|Vec<T,A> as core::ops::drop/) part = "host: output records"
            else if (line ~ /kernel/) part = "kernel"
            else if (line ~ /libc|memmove|memcpy|malloc|free/) part = "host: allocator and copies"
            else part = "host: other (the bench loop, tokio)"
            total[part] += share
        }
        END { for (part in total) printf "%6.1f%%  %s\n", total[part], part }' |
    sort -rn
echo
echo "profile-sandbox: perf report -i $out/perf.data --time 30%-85% --no-children --sort dso,sym" >&2
