#!/usr/bin/env bash
# Builds the stage handlers written in other languages than Rust:
#
#   plugins/multiply          Python      componentize-py  -> multiply.wasm
#   plugins/divide            JavaScript  componentize-js  -> divide.wasm
#   plugins/running-total-py  Python      componentize-py  -> running_total_py.wasm
#   plugins/running-total-js  JavaScript  componentize-js  -> running_total_js.wasm
#
# next to the Rust handlers, in target/wasm32-wasip2/release/ (or
# $CARGO_TARGET_DIR/wasm32-wasip2/release/). The tools are pinned:
# componentize-py in a virtual environment under
# ${STAGEHOST_CACHE:-$HOME/.cache/stagehost}/componentize-py-venv (made with
# the python3 on PATH), componentize-js and jco in plugins/divide/package.json
# and package-lock.json (installed with `npm ci`; needs node 20 or later),
# which plugins/running-total-js builds with too (it has no packages of its
# own, and reads JSON with plugins/divide/src/json.js).
#
# A handler is rebuilt only when its inputs (sources, the WIT world, the tool
# version, the build command) changed; a new artefact replaces the old one by
# rename, so a host watching the path never reads a half-written file. Prints
# each rebuilt artefact's path and size, and nothing when all is up to date.
# Runs from any working directory.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
plugins_dir="$repo_root/plugins"
cache_dir="${STAGEHOST_CACHE:-$HOME/.cache/stagehost}"
venv="$cache_dir/componentize-py-venv"
wit="$repo_root/wit/stage-handler.wit"
world=stage-handler

# The Rust plugins' cargo target directory: ../target from plugins/, unless
# CARGO_TARGET_DIR is set (relative to plugins/, where cargo runs).
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
[[ "$target_dir" = /* ]] || target_dir="$plugins_dir/$target_dir"
out_dir="$target_dir/wasm32-wasip2/release"

say() { echo "build-foreign-plugins: $*" >&2; }
fail() {
    say "error: $*"
    exit 1
}

for tool in python3 node npm; do
    command -v "$tool" >/dev/null || fail "'$tool' not found on PATH"
done

# The SHA-256 of stdin, in hex.
if command -v sha256sum >/dev/null; then
    sha256() { sha256sum | cut -d' ' -f1; }
else
    sha256() { shasum -a 256 | cut -d' ' -f1; }
fi

mkdir -p "$cache_dir" "$out_dir"
# One build at a time (where flock exists): the venv, node_modules and the
# outputs are shared.
if command -v flock >/dev/null; then
    exec 9>"$cache_dir/build-foreign-plugins.lock"
    flock 9
fi
# A build's output goes to "$tmp" first; an interrupted build leaves nothing.
tmp=
trap 'rm -f "$tmp"' EXIT

# Hash of a list of strings and files (name and content), to decide rebuilds.
inputs_hash() {
    local item
    for item in "$@"; do
        if [[ -f "$item" ]]; then
            printf 'file %s\n' "${item#"$repo_root"/}"
            sha256 <"$item"
        else
            printf 'arg %s\n' "$item"
        fi
    done | sha256
}

# A component starts with "\0asm" and the component-model version/layer bytes
# 0d 00 01 00 (a core module has 01 00 00 00 there).
check_component() {
    local header
    header="$(od -An -tx1 -N8 "$1" | tr -d ' \n')"
    [[ "$header" == "0061736d0d000100" ]] || fail "$1 is not a component (header $header)"
}

# build NAME HASH COMMAND...: runs COMMAND (which writes "$tmp") unless NAME's
# artefact was built from the same inputs, then moves it into place.
build() {
    local name="$1" hash="$2"
    shift 2
    local artefact="$out_dir/$name.wasm" stamp="$out_dir/.$name.wasm.inputs"
    # The stamp holds the inputs' hash and the artefact's own, so a file
    # copied over the artefact (a hot swap by hand) is rebuilt too.
    if [[ -f "$artefact" && -f "$stamp" &&
        "$(cat "$stamp")" == "$hash $(sha256 <"$artefact")" ]]; then
        return 0
    fi
    say "building $name.wasm"
    tmp="$out_dir/.$name.wasm.tmp.$$"
    local log="$out_dir/.$name.wasm.log"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$tmp"
        fail "building $name.wasm failed: $*"
    fi
    check_component "$tmp"
    echo "$hash $(sha256 <"$tmp")" >"$stamp"
    mv -f "$tmp" "$artefact"
    rm -f "$log"
    printf '%s\t%s bytes\n' "$artefact" "$(wc -c <"$artefact" | tr -d ' ')"
}

# --- Python: componentize-py in a pinned venv --------------------------------

componentize_py="$venv/bin/componentize-py"
if [[ "$("$componentize_py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
    say "installing componentize-py $COMPONENTIZE_PY_VERSION into $venv"
    python3 -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
    [[ "$("$componentize_py" --version)" == "componentize-py $COMPONENTIZE_PY_VERSION" ]] ||
        fail "componentize-py $COMPONENTIZE_PY_VERSION did not install"
fi

multiply_dir="$plugins_dir/multiply"
multiply_sources=()
while IFS= read -r file; do multiply_sources+=("$file"); done < <(
    find "$multiply_dir" -maxdepth 1 -name '*.py' ! -name 'test_*.py' | LC_ALL=C sort
)
# VIRTUAL_ENV makes componentize-py look for extra modules in the venv (which
# holds only componentize-py) rather than in the system Python's site-packages.
build_multiply() {
    (cd "$multiply_dir" &&
        VIRTUAL_ENV="$venv" "$componentize_py" -d "$wit" -w "$world" \
            componentize -p "$multiply_dir" app -o "$tmp")
}
build multiply \
    "$(inputs_hash "componentize-py $COMPONENTIZE_PY_VERSION" "$(declare -f build_multiply)" "$wit" "${multiply_sources[@]}")" \
    build_multiply

running_total_py_dir="$plugins_dir/running-total-py"
running_total_py_sources=()
while IFS= read -r file; do running_total_py_sources+=("$file"); done < <(
    find "$running_total_py_dir" -maxdepth 1 -name '*.py' ! -name 'test_*.py' | LC_ALL=C sort
)
build_running_total_py() {
    (cd "$running_total_py_dir" &&
        VIRTUAL_ENV="$venv" "$componentize_py" -d "$wit" -w "$world" \
            componentize -p "$running_total_py_dir" app -o "$tmp")
}
build running_total_py \
    "$(inputs_hash "componentize-py $COMPONENTIZE_PY_VERSION" "$(declare -f build_running_total_py)" "$wit" "${running_total_py_sources[@]}")" \
    build_running_total_py

# --- JavaScript: componentize-js from package-lock.json ----------------------

divide_dir="$plugins_dir/divide"
lock_hash="$(inputs_hash "$divide_dir/package.json" "$divide_dir/package-lock.json")"
installed="$divide_dir/node_modules/.stagehost-installed"
if [[ ! -f "$installed" || "$(cat "$installed")" != "$lock_hash" ]]; then
    say "npm ci in plugins/divide"
    (cd "$divide_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$lock_hash" >"$installed"
fi

divide_sources=()
while IFS= read -r file; do divide_sources+=("$file"); done < <(
    find "$divide_dir/src" -name '*.js' | LC_ALL=C sort
)
# Without http and fetch-event the component imports no wasi:http, which the
# host does not link; the rest of WASI it links, with no capabilities.
build_divide() {
    (cd "$divide_dir" &&
        node_modules/.bin/componentize-js src/handler.js --wit "$wit" --world-name "$world" \
            --disable http fetch-event --out "$tmp")
}
build divide \
    "$(inputs_hash "$lock_hash" "$(declare -f build_divide)" "$wit" "${divide_sources[@]}")" \
    build_divide

# The same componentize-js, from plugins/divide's node_modules. It runs in
# plugins/, because the engine reads the modules only below its working
# directory and the handler imports plugins/divide/src/json.js (which the hash
# covers too).
running_total_js_dir="$plugins_dir/running-total-js"
running_total_js_sources=()
while IFS= read -r file; do running_total_js_sources+=("$file"); done < <(
    find "$running_total_js_dir/src" -name '*.js' | LC_ALL=C sort
)
build_running_total_js() {
    (cd "$plugins_dir" &&
        divide/node_modules/.bin/componentize-js running-total-js/src/handler.js --wit "$wit" --world-name "$world" \
            --disable http fetch-event --out "$tmp")
}
build running_total_js \
    "$(inputs_hash "$lock_hash" "$(declare -f build_running_total_js)" "$wit" "${running_total_js_sources[@]}" "$divide_dir/src/json.js")" \
    build_running_total_js
