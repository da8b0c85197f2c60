#!/usr/bin/env bash
# What a Python and a JavaScript handler cost before their own code runs:
# builds the least handler each kit can make (scripts/bench/glue/echo.py and
# echo.js: each message's value back as its one output) with the project's
# componentize-py and componentize-js, and runs `host bench --wasm-only` on
# each, one `handle` call per message and in batches of 64. What such a
# handler costs is the componentize glue (lifting the message record into
# Python or JavaScript objects, lowering the outputs back) plus the host's
# route and record work; the rest of `multiply` and `divide` is the
# interpreter running their code.
#
#   scripts/bench/guest-glue.sh [MESSAGES]      (default 20000)
#
# Needs `make build plugins` done (the componentize-py venv and
# plugins/divide/node_modules). The components go to target/guest-glue/.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
messages="${1:-20000}"
host="$repo_root/target/release/host"
[[ -x "$host" ]] || { echo "guest-glue: build the host first (make build)" >&2; exit 1; }
venv="${STAGEHOST_CACHE:-$HOME/.cache/stagehost}/componentize-py-venv"
componentize_js="$repo_root/plugins/divide/node_modules/.bin/componentize-js"
[[ -x "$venv/bin/componentize-py" && -x "$componentize_js" ]] ||
    { echo "guest-glue: build the plugins first (make plugins)" >&2; exit 1; }
glue="$repo_root/scripts/bench/glue"
out="$repo_root/target/guest-glue"
mkdir -p "$out"

(cd "$glue" && VIRTUAL_ENV="$venv" "$venv/bin/componentize-py" -d "$repo_root/wit" -w stage-handler \
    componentize -p "$glue" echo -o "$out/echo-py.wasm" >/dev/null)
(cd "$glue" && "$componentize_js" echo.js --wit "$repo_root/wit" --world-name stage-handler \
    --disable http fetch-event --out "$out/echo-js.wasm" >/dev/null)

printf '%-36s %14s %14s\n' "trivial handler" "handle ns/msg" "batch ns/msg"
for language in py js; do
    cat >"$out/echo-$language.yml" <<YAML
kafka:
  brokers: 127.0.0.1:9092
admin:
  enabled: false
handlers:
  echo:
    path: $out/echo-$language.wasm
stages:
  - name: bench
    input: bench-in
    output: bench-out
    dead_letter: bench-dlq
    handler: echo
YAML
    report="$("$host" bench "$out/echo-$language.yml" --wasm-only --messages "$messages" \
        --fresh-messages 10 --batch 64 2>/dev/null)"
    row_ns() { awk -v path="$1" 'index($0, path) == 1 { print $(NF - 2); exit }' <<<"$report"; }
    name="componentize-py echo"
    [[ "$language" == js ]] && name="componentize-js echo"
    printf '%-36s %14s %14s\n' "$name" "$(row_ns "wasm, reused instance")" "$(row_ns "wasm, batches of")"
done
