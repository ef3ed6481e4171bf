#!/usr/bin/env bash
# Runs the whole test suite: fetches the model the tests embed with, then every crate's
# unit and integration tests. Fails when no test ran.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$repo_root"
export TIDEWATER_SHARED_DATA="$shared_data"

scripts/fetch-model.sh
scripts/fetch-model.sh all-mpnet-base-v2 # the parity tests compare MPNet too
# The CDC tests start their own PostgreSQL clusters; install the packages once, up front,
# so parallel tests never race for the package manager.
scripts/postgres.sh install
# The Kafka backend's tests start Tansu brokers: build the broker once, up front.
scripts/kafka.sh install
# The dashboard test drives headless Chromium; the lake tests read Parquet with pyarrow
# and DuckDB from a virtual environment outside the clone.
scripts/chromium.sh install
TIDEWATER_PYTHON="$(scripts/python-env.sh | tail -n 1)"
export TIDEWATER_PYTHON
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
# The Kafka backend is a feature: test it with everything else (the embedded tests run the
# same either way). So is candle, the local model's CUDA engine: its code and its CPU test
# are kept building here, where no GPU is.
cargo test --workspace --locked --no-fail-fast --features tidewater/kafka,tidewater/candle 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
# Only the summary lines count: test output may say "N failed" too.
failed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{s += $6} END {print s + 0}')
echo "${passed} passed, ${failed} failed"
if [[ "$status" -ne 0 ]]; then exit "$status"; fi
if [[ "$passed" -eq 0 ]]; then echo "error: no test ran" >&2; exit 1; fi
