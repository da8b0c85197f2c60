#!/usr/bin/env bash
# Sets up the Python environment of the end-to-end benchmark's Python
# contender (scripts/bench/python_loop.py): a venv with confluent-kafka under
# ${STAGEHOST_CACHE:-$HOME/.cache/stagehost}/bench-venv. Idempotent: an
# existing venv with the pinned version is left alone.
#
#   scripts/bench/setup-python.sh        # prints the venv's python on the last line
set -euo pipefail

confluent_kafka_version=2.16.1
python=${PYTHON:-python3}
cache=${STAGEHOST_CACHE:-$HOME/.cache/stagehost}
venv=$cache/bench-venv

say() { echo "setup-python: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

installed_version() {
    "$venv/bin/python" -c 'import confluent_kafka; print(confluent_kafka.__version__)' 2>/dev/null
}

if [[ -x "$venv/bin/python" ]] && [[ "$(installed_version)" == "$confluent_kafka_version" ]]; then
    say "confluent-kafka $confluent_kafka_version already in $venv"
    echo "$venv/bin/python"
    exit 0
fi

command -v "$python" >/dev/null || die "$python not found (the Python contender needs Python 3.8+)"
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    die "$python has no working venv module; on Debian/Ubuntu: apt-get install python3-venv"
fi

mkdir -p "$cache"
if [[ ! -x "$venv/bin/python" ]]; then
    say "creating $venv"
    "$python" -m venv "$venv" || die "'$python -m venv $venv' failed (is python3-venv installed?)"
fi
say "installing confluent-kafka $confluent_kafka_version into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "confluent-kafka==$confluent_kafka_version"
[[ "$(installed_version)" == "$confluent_kafka_version" ]] ||
    die "confluent-kafka $confluent_kafka_version did not import from $venv"
say "ready: $venv/bin/python (confluent-kafka $confluent_kafka_version)"
echo "$venv/bin/python"
