#!/usr/bin/env bash
# Three Tidewater members on one machine as one cluster: a Kafka-protocol broker (Tansu)
# as the log, PostgreSQL with pgvector as the shared index.
#
#   examples/cluster/run.sh          # build, start broker + database + 3 members, load SQuAD, search
#   examples/cluster/run.sh stop     # stop the members, the broker and the database
#
# Members listen on 127.0.0.1:8091, 8092 and 8093; files live under examples/cluster/work.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/common.sh"
cd "$repo_root"
work="$here/work"

stop() {
    for pid_file in "$work"/member-*/pid; do
        [[ -f "$pid_file" ]] || continue
        kill "$(cat "$pid_file")" 2>/dev/null || true
        rm -f "$pid_file"
    done
    scripts/kafka.sh stop "$work/kafka" >/dev/null 2>&1 || true
    scripts/pgvector.sh stop "$work/pg" >/dev/null 2>&1 || true
}

if [[ "${1:-}" == "stop" ]]; then
    stop
    echo "stopped"
    exit 0
fi

echo "==> model"
scripts/fetch-model.sh
echo "==> build (release, with the Kafka backend; the first build takes several minutes)"
cargo build --release --locked --quiet --features kafka -p tidewater
bin="$CARGO_TARGET_DIR/release/tidewater"
stop
rm -rf "$work"
mkdir -p "$work"
echo "==> broker and database"
brokers=$(scripts/kafka.sh start "$work/kafka" 19093 | tail -n 1)
dsn=$(scripts/pgvector.sh start "$work/pg" 15433 | tail -n 1)
cat >"$work/cluster.toml" <<TOML
# The single-machine defaults, except the log and the index.
[log]
backend = "kafka"
[log.kafka]
brokers = "$brokers"
properties = { "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000" }

[knowledge.topic_config]
partitions = 12

[knowledge.index]
backend = "pgvector"
[knowledge.index.pgvector]
dsn = "$dsn"
TOML
echo "==> three members"
for i in 1 2 3; do
    mkdir -p "$work/member-$i/docs"
    nohup "$bin" run --config "$work/cluster.toml" --data-dir "$work/member-$i/data" \
        --docs "$work/member-$i/docs" --listen "127.0.0.1:809$i" \
        >"$work/member-$i/tidewater.log" 2>&1 &
    echo $! >"$work/member-$i/pid"
done
for i in 1 2 3; do
    for _ in $(seq 1 600); do
        curl -fsS "127.0.0.1:809$i/readyz" >/dev/null 2>&1 && break
        sleep 0.5
    done
    curl -fsS "127.0.0.1:809$i/readyz" >/dev/null || { echo "member $i not ready; see $work/member-$i/tidewater.log" >&2; exit 1; }
done
echo "==> 126 SQuAD paragraphs, written through member 1"
python3 - "$shared_data/squad-v2-dev-subset.json" <<'PY'
import json, sys, urllib.request
data = json.load(open(sys.argv[1]))["data"]
n = 0
for article in data:
    for i, p in enumerate(article["paragraphs"]):
        body = json.dumps({"text": p["context"], "metadata": {"title": article["title"]}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:8091/v1/documents/{article['title']}/{i:03}",
                                     data=body, method="PUT", headers={"content-type": "application/json"})
        urllib.request.urlopen(req).read()
        n += 1
print(f"{n} documents acknowledged")
PY
echo "==> searching through member 3 (indexing runs on all three; the model makes it take a minute)"
for _ in $(seq 1 240); do
    hits=$(curl -fsS 127.0.0.1:8093/v1/search -H 'content-type: application/json' \
        -d '{"query": "Who ruled the duchy of Normandy?", "k": 3}')
    [[ "$hits" == *Normandy* ]] && break
    sleep 1
done
echo "$hits" | python3 -m json.tool | head -20
echo "==> documents records each member indexed (the group split the 12 partitions)"
for i in 1 2 3; do
    n=$(curl -fsS "127.0.0.1:809$i/metrics" | awk '/^tidewater_pipeline_records_total\{pipeline="knowledge"/ {s += $NF} END {print s + 0}')
    echo "member $i: $n"
done
echo "==> running: members on 127.0.0.1:8091-8093; stop with: examples/cluster/run.sh stop"
