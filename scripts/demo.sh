#!/usr/bin/env bash
# Sets everything up and leaves a Tidewater running on the embedded defaults, indexing the
# SQuAD paragraphs (written out as files under demo/docs) and serving the API.
#   scripts/demo.sh            # port 8080
#   PORT=9000 scripts/demo.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$repo_root"
port="${PORT:-8080}"

echo "==> model"
scripts/fetch-model.sh
echo "==> build and install tidewater into ~/.cargo/bin (release; the first build takes several minutes)"
cargo install --locked --quiet --path crates/tidewater
bin="${CARGO_HOME:-$HOME/.cargo}/bin/tidewater"
echo "==> corpus"
python3 scripts/squad-to-files.py "$shared_data/squad-v2-dev-subset.json" demo/docs

if [[ -f demo/tidewater.pid ]] && kill -0 "$(cat demo/tidewater.pid)" 2>/dev/null; then
    echo "==> stopping the previous demo (pid $(cat demo/tidewater.pid))"
    kill "$(cat demo/tidewater.pid)"; sleep 1
fi
echo "==> starting tidewater on 127.0.0.1:$port (log: demo/tidewater.log)"
nohup "$bin" run --docs demo/docs --data-dir demo/data --listen "127.0.0.1:$port" >demo/tidewater.log 2>&1 &
echo $! >demo/tidewater.pid
for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$(cat demo/tidewater.pid)" 2>/dev/null; then
        echo "tidewater exited; see demo/tidewater.log:" >&2; tail -20 demo/tidewater.log >&2; exit 1
    fi
    sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "not ready after 5 minutes; see demo/tidewater.log" >&2; exit 1; }
echo "==> ready. An example search:"
curl -fsS "http://127.0.0.1:$port/v1/search" -H 'content-type: application/json' \
    -d '{"query": "Who ruled the duchy of Normandy?", "k": 3}' | python3 -m json.tool | head -40
echo "==> the answer loop: ask, answer, feedback, KPIs"
answer="$(curl -fsS "http://127.0.0.1:$port/v1/ask" -H 'content-type: application/json' \
    -d '{"question": "Who ruled the duchy of Normandy?"}')"
conversation="$(printf '%s' "$answer" | python3 -c '
import json, sys
a = json.load(sys.stdin)
print("answer (%s):" % a["mode"], a["answer"], file=sys.stderr)
print("citations:", ", ".join(c["doc_id"] for c in a["citations"]), file=sys.stderr)
print(a["conversation_id"])')"
curl -fsS "http://127.0.0.1:$port/v1/feedback" -H 'content-type: application/json' \
    -d "{\"conversation_id\": \"$conversation\", \"rating\": \"up\", \"comment\": \"clear and helpful\"}" >/dev/null
sleep 1
curl -fsS "http://127.0.0.1:$port/v1/kpis" | python3 -c '
import json, sys
w = json.load(sys.stdin)["windows"][-1]
o = w["overall"]
print("KPIs of the current window (%s): %d conversation(s), %d feedback, positive share %s, sentiment %s"
      % ("final" if w["final"] else "open", o["conversations"], o["feedback"], o["positive_share"], o["mean_sentiment"]))'
cat <<MSG

Tidewater is running (pid $(cat demo/tidewater.pid)), indexing demo/docs.
  search:   curl -s localhost:$port/v1/search -H 'content-type: application/json' -d '{"query": "...", "k": 5}'
  add:      curl -s -X PUT localhost:$port/v1/documents/notes/1 -H 'content-type: application/json' -d '{"text": "..."}'
  edit a file under demo/docs and search again: the change is searchable within about a second.
  ask:      curl -s localhost:$port/v1/ask -H 'content-type: application/json' -d '{"question": "..."}'
  rate:     curl -s localhost:$port/v1/feedback -H 'content-type: application/json' -d '{"conversation_id": "...", "rating": "up"}'
  dashboard: http://127.0.0.1:$port/   (ingest, lag, freshness, index, dead letters, KPI charts)
  metrics:  curl -s localhost:$port/metrics
  stop:     kill \$(cat demo/tidewater.pid)

The binary is $bin; from any directory:
  tidewater run --docs DIR --data-dir DIR2 --listen 127.0.0.1:PORT
MSG
