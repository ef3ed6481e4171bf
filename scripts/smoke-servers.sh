#!/usr/bin/env bash
# A quick manual check of scripts/kafka.sh and scripts/pgvector.sh (not used by the tests).
#
#   scripts/smoke-servers.sh [kafka|pgvector|all]
#
# kafka: starts a broker in a fresh temporary folder, produces 30 keyed records (acks=all,
# idempotent) to a 3-partition topic with confluent-kafka (a scratch venv at
# ~/.cache/tidewater-kafka-smoke-venv), consumes and commits them in a group, restarts the
# broker, and checks that the records, their partitions and the group's offsets survived.
# pgvector: starts a cluster, checks the extension version, builds an HNSW index and queries
# it, restarts, and checks the rows and index are still there.
# Each stops its server and removes its folder at the end; exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
what=${1:-all}

cleanup=()
on_exit() {
    local c
    for c in "${cleanup[@]}"; do eval "$c" || true; done
}
trap on_exit EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

smoke_kafka() {
    local venv="$HOME/.cache/tidewater-kafka-smoke-venv"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check confluent-kafka >&2
    fi
    local dir port addr
    dir=$(mktemp -d /tmp/kafka-smoke.XXXXXX)
    port=$(free_port)
    cleanup+=("\"$here/kafka.sh\" stop $dir; rm -rf $dir")
    addr=$("$here/kafka.sh" start "$dir" "$port" | tail -n 1)
    [[ "$("$here/kafka.sh" start "$dir" "$port" | tail -n 1)" == "$addr" ]]
    "$venv/bin/python" - "$addr" "$dir/smoke.json" <<'EOF'
import sys, json
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
addr, record_file = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": addr})
for f in admin.create_topics([NewTopic("smoke", num_partitions=3, replication_factor=1)]).values():
    f.result(10)
p = Producer({"bootstrap.servers": addr, "acks": "all", "enable.idempotence": True})
for i in range(30):
    p.produce("smoke", key=f"k{i % 5}", value=f"v{i}", headers=[("h", b"\x00\x01")])
assert p.flush(15) == 0, "unacknowledged records"
c = Consumer({"bootstrap.servers": addr, "group.id": "g1", "auto.offset.reset": "earliest",
              "enable.auto.commit": False})
c.subscribe(["smoke"])
seen = {}
while len(seen) < 30:
    m = c.poll(10)
    assert m is not None, f"only {len(seen)} records consumed"
    assert not m.error(), m.error()
    seen[m.value().decode()] = (m.key().decode(), m.partition(), m.offset())
c.commit(asynchronous=False)
c.close()
json.dump(seen, open(record_file, "w"))
print("produced and consumed 30 records; partitions", sorted({v[1] for v in seen.values()}), file=sys.stderr)
EOF
    "$here/kafka.sh" stop "$dir"
    "$here/kafka.sh" start "$dir" "$port" >/dev/null
    "$venv/bin/python" - "$addr" "$dir/smoke.json" <<'EOF'
import sys, json
from confluent_kafka import Consumer, TopicPartition
addr, record_file = sys.argv[1], sys.argv[2]
before = {k: tuple(v) for k, v in json.load(open(record_file)).items()}
c = Consumer({"bootstrap.servers": addr, "group.id": "g2", "auto.offset.reset": "earliest"})
c.subscribe(["smoke"])
after = {}
while len(after) < 30:
    m = c.poll(10)
    assert m is not None, f"only {len(after)} records after the restart"
    assert not m.error(), m.error()
    assert m.headers() == [("h", b"\x00\x01")], m.headers()
    after[m.value().decode()] = (m.key().decode(), m.partition(), m.offset())
c.close()
assert after == before, "records changed across the restart"
g1 = Consumer({"bootstrap.servers": addr, "group.id": "g1"})
committed = g1.committed([TopicPartition("smoke", p) for p in range(3)], timeout=10)
ends = {p: max(o for _, q, o in before.values() if q == p) + 1 for p in range(3)}
assert {tp.partition: tp.offset for tp in committed} == ends, (committed, ends)
g1.close()
print("after the restart: all 30 records (same partitions and offsets) and g1's offsets", file=sys.stderr)
EOF
    echo "kafka: ok" >&2
}

smoke_pgvector() {
    local dir port dsn
    dir=$(mktemp -d /tmp/pgvector-smoke.XXXXXX)
    chmod 0755 "$dir"
    port=$(free_port)
    cleanup+=("\"$here/pgvector.sh\" stop $dir/pg; rm -rf $dir")
    dsn=$("$here/pgvector.sh" start "$dir/pg" "$port" | tail -n 1)
    [[ "$("$here/pgvector.sh" start "$dir/pg" "$port" | tail -n 1)" == "$dsn" ]]
    local psql
    psql=$(ls -d "$HOME"/.cache/tidewater-pgvector-venv/lib/python3*/site-packages/pgserver/pginstall/bin/psql | head -n 1)
    q() { "$psql" -X -At -v ON_ERROR_STOP=1 "$dsn" -c "$1"; }
    [[ "$(q "select extversion from pg_extension where extname = 'vector'")" == 0.8.* ]]
    q "create table items (id int primary key, v vector(3));
       insert into items select i, array[random(), random(), random()]::vector
           from generate_series(1, 1000) i;
       create index items_hnsw on items using hnsw (v vector_l2_ops);" >/dev/null
    q "set enable_seqscan = off; explain select id from items order by v <-> '[0.5,0.5,0.5]' limit 5" \
        | grep -q items_hnsw
    "$here/pgvector.sh" stop "$dir/pg"
    "$here/pgvector.sh" stop "$dir/pg"
    "$here/pgvector.sh" start "$dir/pg" "$port" >/dev/null
    [[ "$(q "select count(*) from items")" == 1000 ]]
    [[ "$(q "select count(*) from pg_indexes where indexname = 'items_hnsw'")" == 1 ]]
    echo "pgvector: ok" >&2
}

case "$what" in
    kafka) smoke_kafka ;;
    pgvector) smoke_pgvector ;;
    all) smoke_kafka; smoke_pgvector ;;
    *) echo "usage: $0 [kafka|pgvector|all]" >&2; exit 2 ;;
esac
