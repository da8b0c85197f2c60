#!/usr/bin/env bash
# Builds the stage handler components in plugins/ in both variants:
#
#   wasm32-wasip2  cargo build --target wasm32-wasip2 --release
#                  (rustc links a component directly via wasm-component-ld)
#   wasm32-wasip1  cargo component build --release
#                  (a core module componentized by cargo-component with the
#                  WASI preview-1 adapter)
#
# and prints each artefact's path and size. Artefacts land in the repository's
# shared target/ directory (see plugins/.cargo/config.toml), or under
# $CARGO_TARGET_DIR if that is set.
#
# With --wasip2-only, only the first variant (all `make run` needs; no
# cargo-component). Assumes the wasm32-wasip2 target (and for the second
# variant wasm32-wasip1 and cargo-component) is installed. Runs from any
# working directory.
set -euo pipefail

variants=(wasm32-wasip2 wasm32-wasip1)
case "${1:-}" in
--wasip2-only) variants=(wasm32-wasip2) ;;
"") ;;
*)
    echo "usage: $0 [--wasip2-only]" >&2
    exit 2
    ;;
esac

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
plugins_dir="$repo_root/plugins"
components=(add subtract parse enrich audit notify running_total dedup)

cd "$plugins_dir"

echo "==> cargo build --target wasm32-wasip2 --release" >&2
cargo build --target wasm32-wasip2 --release

if [[ " ${variants[*]} " == *" wasm32-wasip1 "* ]]; then
    echo "==> cargo component build --release" >&2
    cargo component build --release
fi

target_dir="$(cargo metadata --no-deps --format-version 1 |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
if [[ -z "$target_dir" ]]; then
    echo "error: could not determine cargo's target directory" >&2
    exit 1
fi
target_dir="$(cd "$target_dir" && pwd -P)"

# A component starts with "\0asm" and the component-model version/layer bytes
# 0d 00 01 00 (a core module has 01 00 00 00 there).
component_header="0061736d0d000100"

status=0
for target in "${variants[@]}"; do
    for name in "${components[@]}"; do
        artefact="$target_dir/$target/release/$name.wasm"
        if [[ ! -f "$artefact" ]]; then
            echo "error: missing artefact $artefact" >&2
            status=1
            continue
        fi
        header="$(od -An -tx1 -N8 "$artefact" | tr -d ' \n')"
        if [[ "$header" != "$component_header" ]]; then
            echo "error: $artefact is not a component (header $header)" >&2
            status=1
            continue
        fi
        printf '%s\t%s bytes\n' "$artefact" "$(wc -c <"$artefact" | tr -d ' ')"
    done
done
"$repo_root/scripts/build-foreign-plugins.sh"
exit "$status"
