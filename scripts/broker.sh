#!/usr/bin/env bash
# A real Kafka-compatible broker for integration tests and CI: Tansu
# (https://github.com/tansu-io/tansu), a single binary from crates.io that
# speaks the Kafka protocol, on 127.0.0.1 only.
#
#   scripts/broker.sh install
#   scripts/broker.sh start [--port P] [--storage memory|sqlite[:FILE]] [--dir DIR]
#                           [--partitions N] [--prefix P]
#   scripts/broker.sh stop [--dir DIR]
#   scripts/broker.sh restart [--dir DIR]
#   scripts/broker.sh status [--dir DIR]
#   scripts/broker.sh topics --brokers HOST:PORT [--partitions N] [--prefix P]
#
# `start` prints one line on stdout, `SELFHEAL_BROKERS=127.0.0.1:PORT`, and
# everything else on stderr, so that
#
#   eval "$(scripts/broker.sh start)"; export SELFHEAL_BROKERS
#   scripts/broker.sh start >> "$GITHUB_ENV"           # GitHub Actions
#
# both work. The broker runs in the background until `stop`; its log, pid
# file and settings are in DIR (default target/broker/). `restart` stops it
# and starts it again on the same port and storage (broker-fault tests): with
# sqlite storage the records and committed offsets survive, with memory
# storage they are gone and only the topics are created again.
#
# Environment: TANSU (path of the tansu binary, else PATH, else
# $CARGO_HOME/bin), TANSU_VERSION (what `install` installs, default 0.6.0),
# TANSU_CLUSTER_ID (default selfheal).
#
# Known Tansu 0.6 limits (probe: examples/tansu_probe.rs, notes in
# scripts/README.md): no transactions (init_transactions succeeds,
# commit_transaction fails with UnsupportedFeature and leaves the partition's
# last stable offset stuck), no automatic topic creation, every fetch lasts
# about fetch.wait.max.ms (use fetch.wait.max.ms=10 in tests). With memory
# storage, the listed high watermark can be behind the log, and a fetch
# from an offset inside a stored batch returns none of that batch: a
# consumer resuming mid-batch loses the rest of it. The group
# coordinator does not wait for members to rejoin and can re-form a group
# at the same generation: two members can own a partition at once, and a
# killed member's partitions can stay unconsumed. With sqlite
# storage: deleting any topic deletes all topics, snappy batches cannot be
# fetched, DescribeGroups fails. Debian's kcat fails its handshake
# (librdkafka from the rdkafka crate is fine).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TANSU_VERSION=${TANSU_VERSION:-0.6.0}
# dynostore gives the memory:// engine, libsql the sqlite:// one.
TANSU_FEATURES=dynostore,libsql
CLUSTER_ID=${TANSU_CLUSTER_ID:-selfheal}
DEFAULT_DIR=$ROOT/target/broker
DEFAULT_PARTITIONS=3
DEFAULT_PREFIX=selfheal.

# The project's topics, without their prefix: the one list to keep up to date.
# Inputs of the engine, then its outputs; all get the same partition count,
# so that `range` assignment keeps a service's partitions on one member.
INPUT_TOPICS=(metrics alerts changes results approvals control)
OUTPUT_TOPICS=(actions escalations audit dlq incidents approval_requests journal executions)

# Seconds to wait for a started broker to answer.
READY_TIMEOUT=${BROKER_READY_TIMEOUT:-30}

log() { echo "broker.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

# ---------------------------------------------------------------- tansu binary

# Prints the path of the tansu binary, or nothing.
find_tansu() {
    if [[ -n ${TANSU:-} ]]; then
        [[ -x $TANSU ]] && echo "$TANSU"
        return 0
    fi
    if command -v tansu >/dev/null 2>&1; then
        command -v tansu
    elif [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/tansu ]]; then
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    fi
}

cmd_install() {
    local bin
    bin=$(find_tansu)
    if [[ -n $bin ]]; then
        log "tansu already installed: $bin ($("$bin" --version 2>/dev/null || echo 'version unknown'))"
        return 0
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: the Rust toolchain is needed to install tansu"
    log "tansu not found; installing it from crates.io:"
    log "  cargo install tansu --version $TANSU_VERSION --locked --features $TANSU_FEATURES"
    log "this compiles several hundred crates and takes 10-25 minutes on 2 cores"
    # cargo writes its progress on stderr; keep stdout for our own result.
    cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" >&2
    bin=$(find_tansu)
    [[ -n $bin ]] || die "tansu installed but not found on PATH nor in ${CARGO_HOME:-$HOME/.cargo}/bin"
    log "installed $bin"
}

# Sets TANSU to the binary, installing it first when missing.
ensure_tansu() {
    if [[ -n ${TANSU:-} && ! -x $TANSU ]]; then
        die "TANSU=$TANSU is not an executable"
    fi
    TANSU=$(find_tansu)
    if [[ -z $TANSU ]]; then
        cmd_install
        TANSU=$(find_tansu)
    fi
}

# Fails unless the installed tansu was built with the storage engine's feature.
check_engine() {
    local feature=$1 engines
    engines=$("$TANSU" --help 2>/dev/null | sed -n 's/^Storage engines: //p')
    if [[ -n $engines && $engines != *"$feature"* ]]; then
        die "$TANSU has storage engines '$engines' but not $feature; reinstall with: cargo install tansu --version $TANSU_VERSION --locked --force --features $TANSU_FEATURES"
    fi
}

# ---------------------------------------------------------------- topics

# Prints the prefixed topic names, one a line.
topic_names() {
    local prefix=$1 t
    for t in "${INPUT_TOPICS[@]}" "${OUTPUT_TOPICS[@]}"; do
        echo "$prefix$t"
    done
}

# Creates the topics on a running broker; an existing topic is fine (a
# different partition count is reported, not changed).
create_topics() {
    local brokers=$1 partitions=$2 prefix=$3
    local url=tcp://${brokers#tcp://}
    url=${url%%,*}
    local existing name out have created=0 present=0
    # "name partitions" for every topic the broker has.
    local listing
    listing=$(timeout 30 "$TANSU" topic list --broker "$url" 2>/dev/null) ||
        die "cannot list topics on $url (is the broker running?)"
    existing=$(python3 -c '
import json, sys
for t in json.loads(sys.stdin.read()):
    print(t["name"], len(t.get("partitions") or []))
' <<<"$listing") || die "unexpected output of tansu topic list: $listing"
    while read -r name; do
        have=$(awk -v n="$name" '$1 == n { print $2 }' <<<"$existing")
        if [[ -n $have ]]; then
            if [[ $have != "$partitions" ]]; then
                log "warning: topic $name exists with $have partitions, not $partitions (left as is)"
            fi
            present=$((present + 1))
            continue
        fi
        if out=$(timeout 30 "$TANSU" topic create "$name" --broker "$url" --partitions "$partitions" 2>&1); then
            log "created topic $name ($partitions partitions)"
            created=$((created + 1))
        elif [[ $out == *"already exists"* ]]; then
            present=$((present + 1))
        else
            die "creating topic $name on $url failed: $out"
        fi
    done < <(topic_names "$prefix")
    log "topics on $url: $created created, $present already there"
}

cmd_topics() {
    local brokers=${SELFHEAL_BROKERS:-} partitions=$DEFAULT_PARTITIONS prefix=$DEFAULT_PREFIX
    while (($#)); do
        case $1 in
        --brokers) brokers=${2:?--brokers HOST:PORT} && shift ;;
        --partitions) partitions=${2:?--partitions N} && shift ;;
        --prefix) prefix=${2?--prefix P} && shift ;;
        -h | --help) usage 0 ;;
        *) die "topics: unknown argument $1" ;;
        esac
        shift
    done
    [[ -n $brokers ]] || die "topics: --brokers HOST:PORT is required"
    [[ $partitions =~ ^[1-9][0-9]*$ ]] || die "--partitions must be a positive number, not $partitions"
    ensure_tansu
    create_topics "$brokers" "$partitions" "$prefix"
}

# ---------------------------------------------------------------- processes

# True when the pid file names a live tansu process.
running() {
    local pidfile=$1/broker.pid pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must still be tansu.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q tansu
}

port_free() {
    python3 -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

cmd_start() {
    local port="" storage=memory dir=$DEFAULT_DIR partitions=$DEFAULT_PARTITIONS prefix=$DEFAULT_PREFIX
    while (($#)); do
        case $1 in
        --port) port=${2:?--port P} && shift ;;
        --storage) storage=${2:?--storage memory|sqlite[:FILE]} && shift ;;
        --dir) dir=${2:?--dir DIR} && shift ;;
        --partitions) partitions=${2:?--partitions N} && shift ;;
        --prefix) prefix=${2?--prefix P} && shift ;;
        -h | --help) usage 0 ;;
        *) die "start: unknown argument $1" ;;
        esac
        shift
    done
    [[ $partitions =~ ^[1-9][0-9]*$ ]] || die "--partitions must be a positive number, not $partitions"
    [[ -z $port || $port =~ ^[0-9]+$ ]] || die "--port must be a number, not $port"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    # Storage: memory://, or sqlite://NAME resolved by tansu against its
    # working directory, so the broker runs in the file's directory.
    local url workdir file
    case $storage in
    memory)
        url=memory://tansu/
        workdir=$dir
        ;;
    sqlite | sqlite:*)
        file=${storage#sqlite}
        file=${file#:}
        file=${file:-$dir/tansu.db}
        mkdir -p "$(dirname "$file")"
        file=$(cd "$(dirname "$file")" && pwd)/$(basename "$file")
        [[ $(basename "$file") =~ ^[A-Za-z0-9._-]+$ ]] || die "sqlite file name must be [A-Za-z0-9._-]+, not $(basename "$file")"
        storage=sqlite:$file
        url=sqlite://$(basename "$file")
        workdir=$(dirname "$file")
        ;;
    *) die "--storage must be memory, sqlite or sqlite:FILE, not $storage" ;;
    esac

    if running "$dir"; then
        # shellcheck source=/dev/null
        die "a broker is already running from $dir (pid $(<"$dir/broker.pid"), $(. "$dir/broker.env" && echo "127.0.0.1:$PORT")); stop it first"
    fi

    ensure_tansu
    case $storage in memory) check_engine dynostore ;; *) check_engine libsql ;; esac
    if [[ -z $port ]]; then
        port=$(free_port)
    elif ! port_free "$port"; then
        # Else the readiness check below would be answered by whoever has it.
        die "port $port on 127.0.0.1 is in use"
    fi

    # Settings for stop/restart (and status).
    cat >"$dir/broker.env" <<EOF
PORT=$port
STORAGE=$storage
PARTITIONS=$partitions
PREFIX=$prefix
EOF

    local listener=tcp://127.0.0.1:$port
    local -a cmd=("$TANSU" broker
        --cluster-id "$CLUSTER_ID"
        --listener-url "$listener"
        --advertised-listener-url "$listener"
        --storage-engine "$url")
    log "starting: (cd $workdir && ${cmd[*]})"
    echo "=== $(date -u +%FT%TZ) ${cmd[*]} (in $workdir)" >>"$dir/broker.log"
    # Detached from our stdout (so `$(broker.sh start)` returns) and stdin.
    (cd "$workdir" && exec "${cmd[@]}" >>"$dir/broker.log" 2>&1 </dev/null) &
    local pid=$!
    echo "$pid" >"$dir/broker.pid"

    # Ready when it answers a metadata request (tansu topic list).
    local deadline=$((SECONDS + READY_TIMEOUT))
    until timeout 5 "$TANSU" topic list --broker "$listener" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/broker.pid"
            log "the broker exited; last lines of $dir/broker.log:"
            tail -n 30 "$dir/broker.log" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "the broker does not answer on $listener after ${READY_TIMEOUT}s; last lines of $dir/broker.log:"
            tail -n 30 "$dir/broker.log" >&2
            stop_pid "$dir"
            exit 1
        fi
        sleep 0.2
    done
    # Tansu 0.6 reports a failed bind from a worker thread and may linger.
    sleep 0.3
    kill -0 "$pid" 2>/dev/null || {
        rm -f "$dir/broker.pid"
        log "the broker exited after starting; last lines of $dir/broker.log:"
        tail -n 30 "$dir/broker.log" >&2
        exit 1
    }
    log "broker ready on 127.0.0.1:$port (pid $pid, storage $storage, log $dir/broker.log)"

    create_topics "127.0.0.1:$port" "$partitions" "$prefix"
    echo "SELFHEAL_BROKERS=127.0.0.1:$port"
}

# Stops the process of the pid file: TERM, then KILL after 10 s.
stop_pid() {
    local dir=$1 pid i
    if ! running "$dir"; then
        rm -f "$dir/broker.pid"
        return 1
    fi
    pid=$(<"$dir/broker.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still running after 10 s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$dir/broker.pid"
    log "stopped broker (pid $pid)"
}

# Parses `--dir DIR` (the only option of stop, restart, status) into DIR.
parse_dir() {
    DIR=$DEFAULT_DIR
    while (($#)); do
        case $1 in
        --dir) DIR=${2:?--dir DIR} && shift ;;
        -h | --help) usage 0 ;;
        *) die "unknown argument $1" ;;
        esac
        shift
    done
}

cmd_stop() {
    parse_dir "$@"
    [[ -d $DIR ]] || {
        log "no broker directory $DIR; nothing to stop"
        return 0
    }
    stop_pid "$DIR" || log "no broker running from $DIR"
}

cmd_restart() {
    parse_dir "$@"
    [[ -f $DIR/broker.env ]] || die "no $DIR/broker.env: start a broker first"
    local PORT STORAGE PARTITIONS PREFIX
    # shellcheck source=/dev/null
    . "$DIR/broker.env"
    stop_pid "$DIR" || log "no broker was running from $DIR; starting one"
    cmd_start --dir "$DIR" --port "$PORT" --storage "$STORAGE" --partitions "$PARTITIONS" --prefix "$PREFIX"
}

cmd_status() {
    parse_dir "$@"
    if running "$DIR"; then
        local PORT STORAGE PARTITIONS PREFIX
        # shellcheck source=/dev/null
        . "$DIR/broker.env"
        log "running: pid $(<"$DIR/broker.pid"), storage $STORAGE"
        echo "SELFHEAL_BROKERS=127.0.0.1:$PORT"
    else
        log "not running ($DIR)"
        return 1
    fi
}

# ---------------------------------------------------------------- main

(($#)) || usage
sub=$1
shift
case $sub in
install) cmd_install "$@" ;;
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
restart) cmd_restart "$@" ;;
status) cmd_status "$@" ;;
topics) cmd_topics "$@" ;;
-h | --help | help) usage 0 ;;
*)
    log "unknown command $sub"
    usage
    ;;
esac
