#!/bin/sh
# cluster.sh - a local kho cluster on loopback, for development and tests.
#
#   cluster.sh start N DIR     start N nodes with data in DIR/nodeI; prints
#                              KHO_ENDPOINTS=... once every node answers,
#                              then KHO_HTTP=... (/health, /ready, /metrics)
#   cluster.sh start N DIR --restore FILE
#                              the same for a NEW cluster from a backup
#                              (khoctl backup): every node's first start is
#                              khod --restore FILE; no registry is created
#   cluster.sh stop DIR        SIGTERM every node (SIGKILL after 10 s, said
#                              on stderr; with KHO_STOP_STACKS=FILE, gdb
#                              writes the stuck node's stacks there first)
#   cluster.sh kill I DIR      SIGKILL node I (1-based)
#   cluster.sh restart I DIR   start node I again (killing it first if alive)
#   cluster.sh pause I DIR     SIGSTOP node I;  resume I DIR: SIGCONT
#   cluster.sh leader DIR [REG] print the number of the node leading the
#                              meta group, or registry REG's group
#                              (empty + exit 1: none)
#   cluster.sh endpoints DIR   print KHO_ENDPOINTS=...
#   cluster.sh name I          print the name of node I
#   cluster.sh grow DIR        start one more node, added to the cluster
#                              with khoctl member add; prints its number
#
# Environment: KHOD_FLAGS: more khod flags for every node (kept in
# DIR/cluster.env, e.g. "--map-size-mb 16"). KHO_BASE_PORT (default 7100): node I serves clients on
# BASE+I, peers on BASE+100+I and HTTP (--http-listen) on BASE+200+I.
# KHO_REGISTRIES (default demo): registries `start` creates when they do
# not exist yet, NAME or NAME:SHARDS, comma-separated ("none": no
# registry). Node I is named
# after a province (hanoi, hue, danang, ...).
# KHOD / KHOCTL override the binaries (default build/bin/).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
KHOD=${KHOD:-$root/build/bin/khod}
KHOCTL=${KHOCTL:-$root/build/bin/khoctl}

die() { echo "cluster.sh: $*" >&2; exit 2; }

load() {
    dir=$1
    [ -f "$dir/cluster.env" ] || die "$dir has no cluster (cluster.env missing)"
    # shellcheck disable=SC1091
    . "$dir/cluster.env"
}

client_url() { echo "tcp://127.0.0.1:$((BASE + $1))"; }
peer_url() { echo "tcp://127.0.0.1:$((BASE + 100 + $1))"; }
http_url() { echo "http://127.0.0.1:$((BASE + 200 + $1))"; }

http_urls() {
    urls=""
    i=1
    while [ "$i" -le "$N" ]; do
        urls="$urls${urls:+,}$(http_url "$i")"
        i=$((i + 1))
    done
    echo "$urls"
}

endpoints() {
    eps=""
    i=1
    while [ "$i" -le "$N" ]; do
        eps="$eps${eps:+,}$(client_url "$i")"
        i=$((i + 1))
    done
    echo "$eps"
}

PROVINCES="hanoi hue danang saigon cantho haiphong nghean khanhhoa \
laocai angiang quangninh thanhhoa binhdinh daklak lamdong camau"

name_of() {
    echo "$PROVINCES" | awk -v i="$1" '{ print (i <= NF) ? $i : "node" i }'
}

peers() {
    p=""
    i=1
    while [ "$i" -le "${INIT_N:-$N}" ]; do
        p="$p${p:+,}$i=$(peer_url "$i")=$(client_url "$i")=$(name_of "$i")"
        i=$((i + 1))
    done
    echo "$p"
}

alive() {
    [ -f "$dir/node$1.pid" ] && kill -0 "$(cat "$dir/node$1.pid")" 2>/dev/null
}

start_node() {
    i=$1
    alive "$i" && return 0
    mkdir -p "$dir/node$i"
    # setsid: a Ctrl-C in the calling terminal reaches only the script,
    # which then stops the nodes cleanly.
    if [ -f "$dir/node$i.joined" ]; then
        # A node added by `grow`: it learns its id and peers from the
        # cluster (or, on a restart, from its own store).
        how="--join $(endpoints)"
    else
        how="--id $i --peers $(peers)"
    fi
    # shellcheck disable=SC2086
    setsid "$KHOD" --name "$(name_of "$i")" $how --data "$dir/node$i" \
        --peer-listen "$(peer_url "$i")" --client-listen "$(client_url "$i")" \
        --http-listen "$(http_url "$i")" --cluster "$CLUSTER" $FLAGS \
        --log-level "${KHO_LOG_LEVEL:-info}" \
        >>"$dir/node$i.log" 2>&1 </dev/null &
    echo $! >"$dir/node$i.pid"
}

wait_serving() {
    i=$1
    tries=0
    while ! "$KHOCTL" --endpoints "$(client_url "$i")" --timeout 300 \
        cluster status >/dev/null 2>&1; do
        tries=$((tries + 1))
        if ! alive "$i"; then
            echo "cluster.sh: node $i exited; last log lines:" >&2
            tail -n 5 "$dir/node$i.log" >&2
            exit 3
        fi
        [ "$tries" -lt 100 ] || die "node $i does not answer"
        sleep 0.1
    done
}

stop_node() {
    i=$1
    alive "$i" || return 0
    pid=$(cat "$dir/node$i.pid")
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    t=0
    while kill -0 "$pid" 2>/dev/null && [ "$t" -lt 100 ]; do
        sleep 0.1
        t=$((t + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "cluster.sh: node $i (pid $pid) did not stop within 10 s; killed" >&2
        # KHO_STOP_STACKS=FILE: every thread's stack goes there first.
        if [ -n "${KHO_STOP_STACKS:-}" ] && command -v gdb >/dev/null 2>&1; then
            gdb -batch -p "$pid" -ex "thread apply all bt" \
                >>"$KHO_STOP_STACKS" 2>&1 || true
        fi
    fi
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/node$i.pid"
}

cmd=${1:-}
case "$cmd" in
start)
    [ $# -eq 3 ] || { [ $# -eq 5 ] && [ "$4" = --restore ]; } ||
        die "usage: cluster.sh start N DIR [--restore FILE]"
    N=$2
    dir=$3
    RESTORE=""
    if [ $# -eq 5 ]; then
        [ -f "$5" ] || die "no backup file $5"
        RESTORE=$(cd "$(dirname "$5")" && pwd)/$(basename "$5")
        [ ! -f "$dir/cluster.env" ] ||
            die "$dir already holds a cluster; --restore starts a new one"
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/cluster.env" ]; then
        load "$dir"
    else
        BASE=${KHO_BASE_PORT:-7100}
        REGISTRIES=${KHO_REGISTRIES:-demo}
        [ "$REGISTRIES" != none ] || REGISTRIES=""
        CLUSTER=${KHO_CLUSTER:-kho-local}
        FLAGS=${KHOD_FLAGS:-}
        # A restored cluster holds the backup's registries and no others.
        [ -z "$RESTORE" ] || REGISTRIES=""
        printf 'N=%s\nBASE=%s\nREGISTRIES=%s\nCLUSTER=%s\nFLAGS="%s"\n' \
            "$N" "$BASE" "$REGISTRIES" "$CLUSTER" "$FLAGS" >"$dir/cluster.env"
        # First start only (not kept in cluster.env): every node restores.
        [ -z "$RESTORE" ] || FLAGS="$FLAGS --restore $RESTORE"
    fi
    i=1
    while [ "$i" -le "$N" ]; do start_node "$i"; i=$((i + 1)); done
    i=1
    while [ "$i" -le "$N" ]; do wait_serving "$i"; i=$((i + 1)); done
    for spec in $(echo "$REGISTRIES" | tr ',' ' '); do
        r=${spec%%:*}
        shards=""
        [ "$r" = "$spec" ] || shards="--shards ${spec#*:}"
        if ! "$KHOCTL" --endpoints "$(endpoints)" --timeout 10000 \
            registry describe "$r" >/dev/null 2>&1; then
            # shellcheck disable=SC2086
            err=$("$KHOCTL" --endpoints "$(endpoints)" --timeout 10000 \
                registry create "$r" $shards 2>&1 >/dev/null) ||
                die "cannot create registry $r: $err"
        fi
    done
    echo "KHO_ENDPOINTS=$(endpoints)"
    echo "KHO_HTTP=$(http_urls)"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: cluster.sh stop DIR"
    dir=$2
    load "$dir"
    i=1
    while [ "$i" -le "$N" ]; do stop_node "$i"; i=$((i + 1)); done
    ;;
kill)
    [ $# -eq 3 ] || die "usage: cluster.sh kill I DIR"
    dir=$3
    load "$dir"
    if alive "$2"; then
        kill -KILL "$(cat "$dir/node$2.pid")"
        # Reap-free wait until it is gone, so a restart can take the ports.
        while alive "$2"; do sleep 0.05; done
    fi
    rm -f "$dir/node$2.pid"
    ;;
restart)
    [ $# -eq 3 ] || die "usage: cluster.sh restart I DIR"
    dir=$3
    load "$dir"
    if alive "$2"; then
        kill -KILL "$(cat "$dir/node$2.pid")"
        while alive "$2"; do sleep 0.05; done
    fi
    start_node "$2"
    wait_serving "$2"
    ;;
pause | resume)
    [ $# -eq 3 ] || die "usage: cluster.sh $cmd I DIR"
    dir=$3
    load "$dir"
    sig=STOP
    [ "$cmd" = resume ] && sig=CONT
    alive "$2" && kill -"$sig" "$(cat "$dir/node$2.pid")"
    ;;
leader)
    [ $# -eq 2 ] || [ $# -eq 3 ] || die "usage: cluster.sh leader DIR [REG]"
    dir=$2
    load "$dir"
    pat='"group":0,[^}]*"role":"leader"'
    [ $# -eq 3 ] && pat="\"registry\":\"$3\",\"role\":\"leader\""
    i=1
    while [ "$i" -le "$N" ]; do
        if alive "$i" && "$KHOCTL" --endpoints "$(client_url "$i")" \
            --timeout 500 cluster status --json 2>/dev/null |
            grep -q "$pat"; then
            echo "$i"
            exit 0
        fi
        i=$((i + 1))
    done
    exit 1
    ;;
name)
    [ $# -eq 2 ] || die "usage: cluster.sh name I"
    name_of "$2"
    ;;
grow)
    [ $# -eq 2 ] || die "usage: cluster.sh grow DIR"
    dir=$2
    load "$dir"
    i=$((N + 1))
    "$KHOCTL" --endpoints "$(endpoints)" --timeout 10000 member add \
        "$(name_of "$i")" "$(peer_url "$i")" "$(client_url "$i")" \
        >/dev/null || die "member add of node $i failed"
    INIT_N=${INIT_N:-$N}
    sed -i "s/^N=.*/N=$i/" "$dir/cluster.env"
    grep -q '^INIT_N=' "$dir/cluster.env" ||
        echo "INIT_N=$INIT_N" >>"$dir/cluster.env"
    N=$i
    touch "$dir/node$i.joined"
    start_node "$i"
    wait_serving "$i"
    echo "$i"
    ;;
endpoints)
    [ $# -eq 2 ] || die "usage: cluster.sh endpoints DIR"
    dir=$2
    load "$dir"
    echo "KHO_ENDPOINTS=$(endpoints)"
    ;;
*)
    awk 'NR > 1 && /^set -eu/ { exit } NR > 1' "$0" |
        sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
