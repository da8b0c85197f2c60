#!/usr/bin/env bash
# Installs what building and testing Stagehost needs and a fresh machine may
# lack: the wasm32-wasip2 (and wasm32-wasip1, for cargo-component) targets and
# a pinned cargo-component. Java 17 and Maven are needed for the local Kafka
# broker (scripts/kafka.sh), python3 (with venv) and node 20 with npm for the
# Python and JavaScript handlers; they are checked here, not installed.
set -euo pipefail

CARGO_COMPONENT_VERSION=0.21.1

say() { echo "setup: $*"; }

installed_targets=$(rustup target list --installed)
for target in wasm32-wasip2 wasm32-wasip1; do
    if ! grep -qx "$target" <<<"$installed_targets"; then
        say "adding Rust target $target"
        rustup target add "$target"
    fi
done

if ! cargo component --version 2>/dev/null | grep -q "cargo-component-component $CARGO_COMPONENT_VERSION\|cargo-component $CARGO_COMPONENT_VERSION"; then
    say "installing cargo-component $CARGO_COMPONENT_VERSION (takes a few minutes, once)"
    cargo install cargo-component --locked --version "$CARGO_COMPONENT_VERSION"
fi

for tool in java mvn; do
    if ! command -v "$tool" >/dev/null; then
        say "warning: '$tool' not found; the local Kafka broker needs Java 17 and Maven"
    fi
done
# The Python and JavaScript handlers (scripts/build-foreign-plugins.sh).
for tool in python3 node npm; do
    if ! command -v "$tool" >/dev/null; then
        say "warning: '$tool' not found; the Python (python3 with venv) and JavaScript (node 20, npm) handlers need it"
    fi
done
say "ok"
