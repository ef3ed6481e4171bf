#!/usr/bin/env bash
# A throw-away Kafka-protocol broker (Tansu, SQLite storage engine), for tests and demos.
#
#   scripts/kafka.sh start DIR PORT   # prints the bootstrap address on its last line
#   scripts/kafka.sh stop DIR
#   scripts/kafka.sh install          # only the broker binary
#
# `install` builds Tansu from crates.io with `cargo install` into ~/.cache/tansu unless
# ~/.cache/tansu/bin/tansu is already there: 9 minutes once on two idle cores, 20 beside
# another build. It builds with `--features dynostore,libsql`: without `libsql` the broker
# keeps data only in memory, loses it on a restart and reports watermarks and seeks wrongly
# (../shared/notes/kafka-broker.md has what was measured). Tansu does not create topics on
# first use: create them (AdminClient) before producing.
# `start` installs when needed, then starts a broker in DIR (its data in DIR/tansu.db, its
# log in DIR/broker.log, its pid in DIR/broker.pid) listening on 127.0.0.1:PORT, detached
# from the calling shell, and waits until the port accepts connections. `stop` sends
# SIGTERM and waits for the broker to exit (SIGKILL after 30 s).
# Both commands are idempotent: starting a running broker prints its address again, and
# stopping a stopped one is fine. Everything but the address goes to stderr.
set -euo pipefail

tansu_version=0.6.0
tansu_root="$HOME/.cache/tansu"
tansu_bin="$tansu_root/bin/tansu"
# The build has its own target folder, never the project's: its dependencies (SQLite,
# object stores, Arrow) have nothing in common with Tidewater's and would only grow the
# project's cache.
tansu_target="$HOME/.cache/tansu-target"

usage() {
    echo "usage: $0 start DIR PORT | $0 stop DIR | $0 install" >&2
    exit 2
}

install_missing() {
    if [[ -x "$tansu_bin" ]]; then
        return
    fi
    mkdir -p "$HOME/.cache"
    # Tests start brokers in parallel: one builds, the others wait for it.
    exec 9>"$HOME/.cache/tansu.lock"
    flock 9
    if [[ ! -x "$tansu_bin" ]]; then
        command -v cargo >/dev/null || { echo "cargo is needed to build Tansu" >&2; exit 1; }
        echo "building Tansu $tansu_version into $tansu_root (9 to 20 minutes, once)" >&2
        local t0=$SECONDS
        CARGO_TARGET_DIR="$tansu_target" cargo install tansu --version "$tansu_version" \
            --locked --features dynostore,libsql --root "$tansu_root" >&2
        echo "built Tansu in $((SECONDS - t0)) s" >&2
        # cargo install keeps nothing it needs in the target folder (several GB); it would
        # only speed up rebuilding the same version, which happens only when the binary is
        # deleted. The CI disk is the scarcer resource, so the folder goes.
        rm -rf "$tansu_target"
    fi
    exec 9>&-
}

# The pid in DIR/broker.pid, if that process is alive and is a Tansu broker (a stale pid
# file after a reboot may name an unrelated process).
running_pid() {
    local dir=$1 pid
    [[ -f "$dir/broker.pid" ]] || return 1
    pid=$(<"$dir/broker.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q tansu || return 1
    echo "$pid"
}

# Alive and not a zombie: the broker is not our child, and a container's init may be slow
# (or fail) to reap it.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z ]]
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    [[ $# -eq 2 ]] || usage
    local dir=$1 port=$2
    [[ "$port" =~ ^[0-9]+$ ]] || { echo "PORT must be a number, got '$port'" >&2; exit 2; }
    install_missing
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local address="127.0.0.1:$port"
    if running_pid "$dir" >/dev/null; then
        local old
        old=$(cat "$dir/broker.port" 2>/dev/null || true)
        if [[ -n "$old" && "$old" != "$port" ]]; then
            echo "a broker already runs in $dir on port $old, not $port" >&2
            exit 1
        fi
    else
        if port_open "$port"; then
            echo "port $port is already in use by another process" >&2
            exit 1
        fi
        rm -f "$dir/broker.pid"
        echo "$port" >"$dir/broker.port"
        # setsid: a new session, so the broker outlives the calling shell and its signals
        # (a test harness killing its process group). The wrapper writes its own pid before
        # exec'ing the broker, so the pid file names the broker itself.
        (
            cd "$dir"
            # NO_COLOR: plain text in broker.log (its tail is shown when a start fails).
            NO_COLOR=1 setsid bash -c 'echo $$ >broker.pid; exec "$@"' tansu "$tansu_bin" broker \
                --listener-url "tcp://$address" --advertised-listener-url "tcp://$address" \
                --storage-engine sqlite://tansu.db \
                </dev/null >>broker.log 2>&1 &
        )
        local deadline=$((SECONDS + 30))
        until port_open "$port"; do
            if ((SECONDS >= deadline)) || { [[ -f "$dir/broker.pid" ]] && ! running_pid "$dir" >/dev/null; }; then
                echo "the broker in $dir did not listen on $address; last lines of its log:" >&2
                tail -n 20 "$dir/broker.log" >&2 || true
                stop "$dir"
                exit 1
            fi
            sleep 0.1
        done
        echo "broker started in $dir (pid $(<"$dir/broker.pid"))" >&2
    fi
    echo "$address"
}

stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pid
    pid=$(running_pid "$dir") || { rm -f "$dir/broker.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            echo "the broker (pid $pid) ignored SIGTERM for 30 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    # The broker is not our child, so there is no wait; poll until it is gone.
    while alive "$pid"; do sleep 0.1; done
    rm -f "$dir/broker.pid"
}

cmd=${1:-}
[[ -n "$cmd" ]] || usage
shift
case "$cmd" in
    install) [[ $# -eq 0 ]] || usage; install_missing ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    *) usage ;;
esac
