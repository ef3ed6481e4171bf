#!/usr/bin/env bash
# A throw-away PostgreSQL 15 cluster with logical decoding (wal2json), for tests and demos.
#
#   scripts/postgres.sh start DIR PORT [-c name=value ...]   # prints the connection string
#   scripts/postgres.sh stop DIR
#   scripts/postgres.sh install                              # only the packages
#
# `start` installs PostgreSQL 15 and wal2json with apt when they are missing, creates the
# cluster in DIR (owned by the `postgres` system user: PostgreSQL refuses to run as root)
# unless one is already there, and starts it on 127.0.0.1:PORT with trust authentication,
# the Unix socket in DIR and `wal_level=logical`. Extra `-c name=value` settings come last
# and so override the defaults (the tests start a `-c wal_level=replica` cluster this way).
# Both commands are idempotent: starting a running cluster or stopping a stopped one is fine.
set -euo pipefail

pg_bin=/usr/lib/postgresql/15/bin
wal2json_lib=/usr/lib/postgresql/15/lib/wal2json.so

usage() {
    echo "usage: $0 start DIR PORT [-c name=value ...] | $0 stop DIR | $0 install" >&2
    exit 2
}

as_postgres() {
    if [[ "$(id -un)" == postgres ]]; then
        "$@"
    else
        runuser -u postgres -- "$@"
    fi
}

install_missing() {
    if [[ -x "$pg_bin/initdb" && -f "$wal2json_lib" ]]; then
        return
    fi
    local pkgs=(postgresql-15 postgresql-15-wal2json)
    echo "installing ${pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package lists are refreshed only when the install fails: on a warm image the
    # lists are current and `apt-get update` would cost a network round trip per run.
    if ! apt-get install -y "${pkgs[@]}" >&2; then
        apt-get update >&2
        apt-get install -y "${pkgs[@]}" >&2
    fi
}

is_running() {
    as_postgres "$pg_bin/pg_ctl" -D "$1" status >/dev/null 2>&1
}

start() {
    [[ $# -ge 2 ]] || usage
    local dir=$1 port=$2
    shift 2
    [[ "$port" =~ ^[0-9]+$ ]] || { echo "PORT must be a number, got '$port'" >&2; exit 2; }
    install_missing
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    chown postgres: "$dir"
    chmod 0700 "$dir"
    if ! as_postgres test -x "$dir"; then
        echo "the postgres user cannot reach $dir: a parent folder is not searchable by it" >&2
        exit 1
    fi
    if [[ ! -f "$dir/PG_VERSION" ]]; then
        # Trust authentication: the cluster listens only on 127.0.0.1 and a socket in DIR.
        # initdb wants an empty folder, so its output is kept in memory, shown on failure.
        local out
        out=$(as_postgres "$pg_bin/initdb" -D "$dir" -U postgres --auth=trust \
            --encoding=UTF8 --no-instructions 2>&1) || { echo "$out" >&2; exit 1; }
    fi
    if ! is_running "$dir"; then
        local opts="-p $port -k $dir -c wal_level=logical -c max_replication_slots=10"
        opts+=" -c max_wal_senders=10 -c listen_addresses=127.0.0.1"
        # Tests create and drop many connections and slots; fsync adds nothing to a
        # throw-away cluster.
        opts+=" -c fsync=off"
        # Newer PostgreSQL 15 packages (15.20) only let replication users name the output
        # plugins listed in output_plugin_libraries (default: pgoutput, test_decoding).
        # (Read whole first: with pipefail, `grep -q` closing the pipe early fails it.)
        local settings
        settings=$(as_postgres "$pg_bin/postgres" --describe-config 2>/dev/null || true)
        if grep -q '^output_plugin_libraries' <<<"$settings"; then
            opts+=" -c output_plugin_libraries=pgoutput,test_decoding,wal2json"
        fi
        if [[ $# -gt 0 ]]; then
            opts+=" $*"
        fi
        as_postgres "$pg_bin/pg_ctl" -D "$dir" -o "$opts" -l "$dir/log" -w -t 60 start >&2 \
            || { tail -n 20 "$dir/log" >&2; exit 1; }
    fi
    echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"
}

stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1
    if [[ -f "$dir/PG_VERSION" ]] && is_running "$dir"; then
        as_postgres "$pg_bin/pg_ctl" -D "$dir" -m fast -w -t 60 stop >&2
    fi
}

cmd=${1:-}
[[ -n "$cmd" ]] || usage
shift
case "$cmd" in
    install) install_missing ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    *) usage ;;
esac
