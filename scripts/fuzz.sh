#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time:
#
#   message_path  a message value through routing, the `add` component in the
#                 sandbox and the dead-letter headers
#   config        config text through the loader
#
# FUZZ_SECONDS (default 60) bounds each target's run; FUZZ_TARGETS (default
# "message_path config") picks the targets. Installs what is missing first:
# the nightly toolchain, cargo-fuzz and the plugin builds. The instrumented
# build goes to target/fuzz; the first one compiles wasmtime again (10 minutes
# or more on 2 cores). New corpus entries are kept in fuzz/corpus/<target>,
# crashing inputs in fuzz/artifacts/<target>. Exits non-zero if a target
# crashed. Runs from any working directory.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$repo_root/fuzz"
seconds="${FUZZ_SECONDS:-60}"
read -r -a targets <<<"${FUZZ_TARGETS:-message_path config}"

say() { echo "fuzz: $*" >&2; }

if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (takes a few minutes, once)"
    cargo install cargo-fuzz --locked
fi
if [[ ! -f "$repo_root/target/wasm32-wasip2/release/add.wasm" ]]; then
    say "building the plugins"
    "$repo_root/scripts/setup.sh"
    "$repo_root/scripts/build-plugins.sh"
fi

# Seeds are read, never written: new inputs go to the first directory.
seeds_for() {
    case "$1" in
    message_path) echo "$fuzz_dir/seeds/message_path" ;;
    config) echo "$repo_root/host/tests/fixtures/config/valid $repo_root/host/tests/fixtures/config/invalid" ;;
    esac
}
# Deeply nested messages need room: 100,000 `[` and more.
max_len_for() {
    case "$1" in
    message_path) echo 262144 ;;
    *) echo 65536 ;;
    esac
}

# Leak checks stay on, minus what fuzz/lsan.supp explains.
export LSAN_OPTIONS="suppressions=$fuzz_dir/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

status=0
for target in "${targets[@]}"; do
    corpus="$fuzz_dir/corpus/$target"
    mkdir -p "$corpus"
    read -r -a seeds <<<"$(seeds_for "$target")"
    args=(
        "-max_total_time=$seconds"
        "-max_len=$(max_len_for "$target")"
        -timeout=30
        -print_final_stats=1
    )
    if [[ -f "$fuzz_dir/dicts/$target.dict" ]]; then
        args+=("-dict=$fuzz_dir/dicts/$target.dict")
    fi
    say "running $target for ${seconds}s"
    if ! cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" --target-dir "$repo_root/target/fuzz" \
        --codegen-units 16 "$target" "$corpus" "${seeds[@]}" -- "${args[@]}"; then
        say "$target crashed; the input is in $fuzz_dir/artifacts/$target"
        status=1
    fi
    say "$target: $(find "$corpus" -type f | wc -l | tr -d ' ') corpus entries"
done
exit "$status"
