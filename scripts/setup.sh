#!/usr/bin/env bash
# Installs what building and running Stagehost needs and a fresh machine may
# lack, and checks what it cannot install, with one clear line per missing
# tool:
#
#   scripts/setup.sh          what `make run` needs: the wasm32-wasip2 Rust
#                             target; checks java 17+ and mvn (the local Kafka
#                             broker), python3 with venv (the Python handler),
#                             node 20+ and npm (the JavaScript handler), a C
#                             compiler (librdkafka is built from source) and
#                             OpenSSL headers (TLS and SASL to Kafka)
#   scripts/setup.sh --test   also what `make test` and `make plugins` need:
#                             the wasm32-wasip1 target and a pinned
#                             cargo-component (the second plugin build variant),
#                             and Debian's chromium and chromium-driver (the
#                             console's headless-browser test)
#
# On Debian, missing system packages (OpenSSL headers, pkg-config, python3-venv)
# are installed with apt-get when running as root.
set -euo pipefail

CARGO_COMPONENT_VERSION=0.21.1

say() { echo "setup: $*"; }
missing=()
need() { missing+=("$1"); say "missing: $1"; }

with_test_tools=0
case "${1:-}" in
--test) with_test_tools=1 ;;
"") ;;
*)
    echo "usage: $0 [--test]" >&2
    exit 2
    ;;
esac

# Debian packages the build needs, installed when we may.
apt_wanted=()
command -v pkg-config >/dev/null || apt_wanted+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then apt_wanted+=(libssl-dev); fi
command -v cc >/dev/null || apt_wanted+=(build-essential)
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_wanted+=(python3-venv)
fi
# The console's browser test (host/tests/console.rs): headless Chromium and
# its WebDriver.
if ((with_test_tools)); then
    command -v chromium >/dev/null || apt_wanted+=(chromium)
    command -v chromedriver >/dev/null || apt_wanted+=(chromium-driver)
fi
if ((${#apt_wanted[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing ${apt_wanted[*]} with apt-get"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_wanted[@]}" >/dev/null
    else
        for package in "${apt_wanted[@]}"; do
            need "$package (a system package: e.g. sudo apt-get install $package)"
        done
    fi
fi

command -v rustup >/dev/null || need "rustup (https://rustup.rs)"
if command -v rustup >/dev/null; then
    targets=(wasm32-wasip2)
    ((with_test_tools)) && targets+=(wasm32-wasip1)
    installed_targets=$(rustup target list --installed)
    for target in "${targets[@]}"; do
        if ! grep -qx "$target" <<<"$installed_targets"; then
            say "adding Rust target $target"
            rustup target add "$target"
        fi
    done
fi

if ((with_test_tools)) && command -v rustup >/dev/null; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed | grep -q "^$component"; then
            say "adding Rust component $component (make lint)"
            rustup component add "$component"
        fi
    done
fi

if ((with_test_tools)) &&
    ! cargo component --version 2>/dev/null | grep -q "cargo-component-component $CARGO_COMPONENT_VERSION\|cargo-component $CARGO_COMPONENT_VERSION"; then
    say "installing cargo-component $CARGO_COMPONENT_VERSION (takes a few minutes, once)"
    cargo install cargo-component --locked --version "$CARGO_COMPONENT_VERSION"
fi

# The local Kafka broker (scripts/kafka.sh): Java 17 or later, and Maven.
if command -v java >/dev/null; then
    java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
    if [[ -z "$java_major" || "$java_major" -lt 17 ]]; then
        need "Java 17 or later for the local Kafka broker (found: ${java_major:-unknown})"
    fi
else
    need "java (Java 17 or later) for the local Kafka broker"
fi
command -v mvn >/dev/null || need "mvn (Maven) to fetch the Kafka broker's jars"

# The Python and JavaScript handlers that config.yml loads.
command -v python3 >/dev/null || need "python3 (with venv) for the Python handler"
if command -v node >/dev/null; then
    node_major=$(node --version | sed -n 's/^v\([0-9]*\).*/\1/p')
    if [[ -z "$node_major" || "$node_major" -lt 20 ]]; then
        need "Node.js 20 or later for the JavaScript handler (found: $(node --version))"
    fi
else
    need "node (Node.js 20 or later) for the JavaScript handler"
fi
command -v npm >/dev/null || need "npm for the JavaScript handler"

if ((${#missing[@]})); then
    say "${#missing[@]} prerequisite(s) missing; install them and run again"
    exit 1
fi
say "ok"
