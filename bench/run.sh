#!/usr/bin/env bash
# Runs Tidewater's end-to-end benchmarks and their peers side by side, in one session,
# writing JSON results under bench-results/ (git-ignored). Record the numbers, with the
# machine, commit and date, in BENCHMARKS.md.
#
# Needs a virtual environment with sentence-transformers, pyarrow and psycopg for the
# peers, outside the repository (PyPI's torch is large):
#   python3 -m venv ~/.cache/tidewater-st-venv
#   ~/.cache/tidewater-st-venv/bin/pip install sentence-transformers pyarrow 'psycopg[binary]'
# `bench ingest` on the dictionary corpus takes about half an hour on two cores (the
# peer loads only into IVFFlat there: into HNSW both loaders wait on pgvector); set
# TIDEWATER_BENCH_INGEST_LIMIT to index fewer of its ~249,000 entries.
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$repo_root"
venv="${TIDEWATER_PEER_VENV:-$HOME/.cache/tidewater-st-venv}"
out=bench-results
mkdir -p "$out"

scripts/fetch-model.sh
scripts/fetch-model.sh all-mpnet-base-v2
# Where fetch-model.sh puts it: beside the default model.
if [[ -n "${TIDEWATER_MODEL_DIR:-}" ]]; then
    mpnet="$(dirname "$TIDEWATER_MODEL_DIR")/all-mpnet-base-v2"
else
    mpnet="${XDG_CACHE_HOME:-$HOME/.cache}/tidewater/models/all-mpnet-base-v2"
fi
cargo build --release --locked -p tidewater
bin="$CARGO_TARGET_DIR/release/tidewater"
squad="$shared_data/squad-v2-dev-subset.json"

echo "== machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); $(date -u +%F)"
for round in 1 2 3; do
    echo "== tidewater bench embed (f32, int8), round $round"
    "$bin" bench embed --file "$squad" --dump-texts "$out/embed-texts.json" --json "$out/embed-$round.json"
    echo "== peer: sentence-transformers (CPU torch, 2 threads) on the same texts, round $round"
    "$venv/bin/python" bench/peer.py --texts "$out/embed-texts.json" --json "$out/peer-embed-$round.json"
done
echo "== tidewater bench embed, all-mpnet-base-v2"
"$bin" bench embed --file "$squad" --model-dir "$mpnet" --dump-texts "$out/embed-texts-mpnet.json" --json "$out/embed-mpnet.json"
"$venv/bin/python" bench/peer.py --model-dir "$mpnet" --texts "$out/embed-texts-mpnet.json" --json "$out/peer-embed-mpnet.json"
echo "== tidewater bench squad (all-MiniLM-L6-v2 f32, int8; all-mpnet-base-v2)"
"$bin" bench squad --file "$squad" --dump-chunks "$out/squad-chunks.json" --json "$out/squad.json"
"$bin" bench squad --file "$squad" --precision int8 --json "$out/squad-int8.json"
"$bin" bench squad --file "$squad" --model-dir "$mpnet" --json "$out/squad-mpnet.json"
echo "== peer: sentence-transformers, exact search over the same chunks"
"$venv/bin/python" bench/peer.py --chunks "$out/squad-chunks.json" --json "$out/peer-squad.json"
echo "== tidewater bench freshness"
"$bin" bench freshness --edits 60 --size 1024 --json "$out/freshness.json"
echo "== tidewater bench analytics (conversations and feedback → KPIs and lake)"
"$bin" bench analytics --json "$out/analytics.json"
echo "== tidewater bench analytics, hopping windows (1m every 12s)"
"$bin" bench analytics --slide 12s --json "$out/analytics-hopping.json"
echo "== tidewater bench cdc (PostgreSQL commit → profile visible)"
pgdir="$(mktemp -d)"
dsn="$(scripts/postgres.sh start "$pgdir" "${TIDEWATER_BENCH_PG_PORT:-55433}")"
trap 'scripts/postgres.sh stop "$pgdir" >/dev/null 2>&1 || true' EXIT
"$bin" bench cdc --dsn "$dsn" --rate 1000 --seconds 30 --json "$out/cdc.json"
echo "== tidewater bench ingest: SQuAD paragraphs with the local model, beside the Python loop"
"$bin" bench ingest --corpus squad --squad "$squad" --peer-python "$venv/bin/python" \
    --work-dir "$CARGO_TARGET_DIR/bench-ingest" --json "$out/ingest-squad.json"
echo "== tidewater bench ingest: GCIDE entries with the stub endpoint, beside the Python loop"
scripts/fetch-corpus.sh gcide >/dev/null
"$bin" bench ingest --corpus gcide --limit "${TIDEWATER_BENCH_INGEST_LIMIT:-0}" --peer-indexes ivfflat \
    --peer-python "$venv/bin/python" --work-dir "$CARGO_TARGET_DIR/bench-ingest" \
    --json "$out/ingest-gcide.json"
