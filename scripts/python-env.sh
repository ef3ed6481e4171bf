#!/usr/bin/env bash
# Creates (idempotently) the Python environment the lake's tests read Parquet with:
# a venv holding pyarrow and duckdb, and psycopg for the ingest benchmark's peer.
# Prints the venv's python path as its last line.
#
#   scripts/python-env.sh                       # venv at ~/.cache/tidewater-py
#   TIDEWATER_PYTHON_ENV=/tmp/py scripts/python-env.sh
#
# The tests find the interpreter through $TIDEWATER_PYTHON, else the default venv's
# bin/python; run this script once before `cargo test -p tidewater-lake`.
set -euo pipefail

env_dir="${TIDEWATER_PYTHON_ENV:-${HOME:?HOME is not set}/.cache/tidewater-py}"
python="$env_dir/bin/python"

if [[ ! -x "$python" ]]; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        echo "==> python3-venv is missing; installing it with apt-get" >&2
        apt-get install -y python3-venv >&2
    fi
    echo "==> creating the venv in $env_dir" >&2
    mkdir -p "$(dirname "$env_dir")"
    # `--clear` starts over from a half-created venv (an interrupted earlier run); refuse to
    # clear a directory that is something else.
    if [[ -e "$env_dir" && ! -f "$env_dir/pyvenv.cfg" && -n "$(ls -A "$env_dir")" ]]; then
        echo "error: $env_dir exists and is not a venv; set TIDEWATER_PYTHON_ENV elsewhere" >&2
        exit 1
    fi
    python3 -m venv --clear "$env_dir" >&2
fi

# module:package — psycopg is what `bench/ingest_peer.py` loads PostgreSQL with.
missing=()
for pair in pyarrow:pyarrow duckdb:duckdb 'psycopg:psycopg[binary]'; do
    if ! "$python" -c "import ${pair%%:*}" >/dev/null 2>&1; then
        missing+=("${pair#*:}")
    fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "==> installing ${missing[*]} from PyPI" >&2
    "$python" -m pip install --quiet --disable-pip-version-check "${missing[@]}" >&2
fi

"$python" -c 'import pyarrow, duckdb, psycopg; print("pyarrow", pyarrow.__version__, "duckdb", duckdb.__version__, "psycopg", psycopg.__version__)' >&2
echo "$python"
