#!/usr/bin/env bash
# The travel example: a CRM, a loyalty programme and a booking engine in PostgreSQL,
# merged by Tidewater into live customer profiles.
#
#   examples/travel/run.sh          # start PostgreSQL and Tidewater, seed, show a profile,
#                                   # drive changes for 20 s, show it again; leave both running
#   examples/travel/run.sh stop     # stop Tidewater and PostgreSQL (data kept in work/)
#   examples/travel/run.sh clean    # stop, then delete examples/travel/work
#
#   PG_PORT=55432 API_PORT=8081 DRIVE_SECONDS=20 DRIVE_RATE=50 examples/travel/run.sh
#
# Every start begins from scratch: an existing examples/travel/work is stopped and removed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"
cd "$repo_root"

ex=examples/travel
work=$ex/work
pg_port="${PG_PORT:-55432}"
api_port="${API_PORT:-8081}"
api="http://127.0.0.1:$api_port"
dsn="host=127.0.0.1 port=$pg_port user=postgres dbname=travel"
focus=ana.lima@example.com

stop_all() {
    if [[ -f $work/tidewater.pid ]]; then
        local pid
        pid=$(cat "$work/tidewater.pid")
        if kill -0 "$pid" 2>/dev/null; then
            echo "==> stopping tidewater (pid $pid)"
            kill "$pid"
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$work/tidewater.pid"
    fi
    if [[ -f $work/pg/PG_VERSION ]]; then
        echo "==> stopping PostgreSQL ($work/pg)"
        scripts/postgres.sh stop "$work/pg"
    fi
}

case "${1:-}" in
    stop) stop_all; exit 0 ;;
    clean) stop_all; rm -rf "$work"; echo "==> removed $work"; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [stop|clean]" >&2; exit 2 ;;
esac

if [[ -d $work ]]; then
    stop_all
    rm -rf "$work"
fi
mkdir -p "$work"

echo "==> PostgreSQL 15 with logical decoding on 127.0.0.1:$pg_port ($work/pg)"
scripts/postgres.sh start "$work/pg" "$pg_port" >/dev/null
psql -X -q "host=127.0.0.1 port=$pg_port user=postgres dbname=postgres" -c "CREATE DATABASE travel"
psql -X -q -v ON_ERROR_STOP=1 "$dsn" -f $ex/schema.sql
psql -X -q -v ON_ERROR_STOP=1 "$dsn" -f $ex/seed.sql
psql -X -q -t -A "$dsn" -c "SELECT '    ' || (SELECT count(*) FROM crm.customers) || ' CRM customers, '
    || (SELECT count(*) FROM loyalty.members) || ' loyalty members, '
    || (SELECT count(*) FROM bookings.bookings) || ' bookings'"

# The configuration has no environment substitution: write the final file into work/.
sed "s|@DSN@|$dsn|" $ex/tidewater.toml >"$work/tidewater.toml"

echo "==> model (local embeddings; fetched once)"
scripts/fetch-model.sh
echo "==> build and install tidewater into ~/.cargo/bin (release; the first build takes several minutes)"
cargo install --locked --quiet --path crates/tidewater
bin="${CARGO_HOME:-$HOME/.cargo}/bin/tidewater"

echo "==> starting tidewater on $api (log: $work/tidewater.log)"
nohup "$bin" run --config "$work/tidewater.toml" --data-dir "$work/data" \
    --listen "127.0.0.1:$api_port" >"$work/tidewater.log" 2>&1 &
echo $! >"$work/tidewater.pid"
for _ in $(seq 1 600); do
    if curl -fsS "$api/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$(cat "$work/tidewater.pid")" 2>/dev/null; then
        echo "tidewater exited; see $work/tidewater.log:" >&2; tail -20 "$work/tidewater.log" >&2; exit 1
    fi
    sleep 0.5
done
curl -fsS "$api/readyz" >/dev/null || { echo "not ready after 5 minutes; see $work/tidewater.log" >&2; exit 1; }

echo
echo "==> Ana Lima's profile from the initial snapshot: one CRM row, two loyalty accounts"
echo "    (one found by email written differently, one only by phone), bookings under both emails"
echo "    curl -s $api/v1/profiles/email:$focus"
python3 $ex/show_profile.py --api "$api" --dsn "$dsn" "email:$focus"

echo
echo "==> driving changes: ${DRIVE_RATE:-50}/s for ${DRIVE_SECONDS:-20} s (about 2% of them Ana's)"
python3 $ex/drive.py --dsn "$dsn" --rate "${DRIVE_RATE:-50}" --seconds "${DRIVE_SECONDS:-20}" --focus "$focus"

echo
echo "==> the same profile after the changes (checked against SQL)"
python3 $ex/show_profile.py --api "$api" --dsn "$dsn" "email:$focus"

cat <<MSG

Tidewater (pid $(cat "$work/tidewater.pid")) and PostgreSQL are still running.
  a profile, by any identifier:
      curl -s $api/v1/profiles/email:$focus
      curl -s $api/v1/profiles/phone:+14155550100
  the database:      psql "$dsn"
  more changes:      python3 $ex/drive.py --dsn "$dsn" --rate 50 --seconds 60 --focus $focus
  replication lag:   curl -s $api/metrics | grep tidewater_cdc_slot_lag_bytes
  log:               $work/tidewater.log
  stop everything:   $ex/run.sh stop       (then '$ex/run.sh clean' removes $work)
MSG
