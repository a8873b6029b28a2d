#!/bin/sh
# startup.sh - khod refuses bad start-ups with a clear message and a non-zero
# exit, and a single-node cluster stops cleanly on SIGTERM.
#
# Proves: an unknown flag, a missing required flag, a malformed --peers, a
# config file with an unknown key, a data directory that belongs to another
# node and a client port already in use are each refused with a message
# naming the problem; a config file alone can start a node.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
KHOD=${KHOD:-$root/build/bin/khod}
CTL="$root/build/bin/khoctl"
dir=$(mktemp -d "${TMPDIR:-/tmp}/kho-start.XXXXXX")
base=${KHO_BASE_PORT:-$((15000 + ($$ % 10) * 200))}
pid=""

cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "FAIL: $*" >&2
    [ -f "$dir/log" ] && tail -n 20 "$dir/log" >&2
    exit 1
}

cl="tcp://127.0.0.1:$((base + 1))"
pl="tcp://127.0.0.1:$((base + 101))"
peers="1=$pl=$cl=hanoi"

# refused WHAT PATTERN ARGS...: khod ARGS must exit non-zero and say PATTERN.
refused() {
    what=$1
    pat=$2
    shift 2
    rc=0
    "$KHOD" "$@" >"$dir/log" 2>&1 || rc=$?
    [ "$rc" != 0 ] || fail "$what: khod started"
    grep -q -- "$pat" "$dir/log" || fail "$what: no '$pat' in the message"
    echo "ok: $what -> $(head -n 1 "$dir/log")"
}

refused "unknown flag" "unknown flag --bogus" --bogus 1
refused "missing --data" "--data is required" --name hanoi --id 1 \
    --peer-listen "$pl" --client-listen "$cl" --peers "$peers"
refused "malformed --peers" "bad entry" --name hanoi --id 1 \
    --data "$dir/n1" --peer-listen "$pl" --client-listen "$cl" --peers "1=x"
refused "node not in --peers" "does not list this node" --name hanoi --id 2 \
    --data "$dir/n1" --peer-listen "$pl" --client-listen "$cl" --peers "$peers"
printf '[khod]\nname = hanoi\nbogus = 1\n' >"$dir/bad.ini"
refused "unknown config key" "unknown key 'bogus'" --config "$dir/bad.ini"

cat >"$dir/good.ini" <<EOT
[khod]
name = hanoi
id = 1
data = $dir/n1
peer-listen = $pl
client-listen = $cl
peers = $peers
cluster = startup-test
EOT
"$KHOD" --config "$dir/good.ini" >"$dir/log" 2>&1 &
pid=$!
i=0
until "$CTL" --endpoints "$cl" --timeout 300 cluster status >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 100 ] || fail "node from a config file does not answer"
    kill -0 "$pid" 2>/dev/null || fail "node from a config file exited"
    sleep 0.1
done
echo "ok: a config file alone starts a node"

refused "client port in use" "in use" --name hue --id 1 --data "$dir/n2" \
    --peer-listen "tcp://127.0.0.1:$((base + 102))" --client-listen "$cl" \
    --peers "1=tcp://127.0.0.1:$((base + 102))=$cl" --cluster startup-test

kill -TERM "$pid"
wait "$pid" || fail "SIGTERM: exit $?"
pid=""
grep -q "stopped cleanly" "$dir/log" || fail "no clean stop"
echo "ok: SIGTERM stops cleanly"

refused "another node's data directory" "belongs to another node" \
    --name hue --id 2 --data "$dir/n1" --peer-listen "$pl" \
    --client-listen "$cl" --peers "2=$pl=$cl" --cluster startup-test

echo "PASS: tests/integration/startup.sh"
