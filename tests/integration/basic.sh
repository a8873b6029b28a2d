#!/bin/sh
# basic.sh - kho with real processes: three khod nodes on loopback started by
# scripts/cluster.sh, driven through libkho (khocheck) and khoctl.
#
# Proves: writes and reads work; kill -9 of the leader -> a new leader
# serves and every acknowledged write is readable; the killed node restarts
# and catches up; all three killed at once -> restart -> nothing
# acknowledged is lost; an oversized value or key -> KHO_ETOOLARGE (khoctl
# exit 4); an unknown registry -> a clear "not found" (exit 1); random and
# truncated messages on the client and peer ports -> the node keeps serving.
#
# Ports: KHO_BASE_PORT (default: 20000 + a per-run offset); data in a fresh
# temporary directory. Every process is cleaned up on exit.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
CL="$root/scripts/cluster.sh"
CTL="$root/build/bin/khoctl"
KHOD=${KHOD:-$root/build/bin/khod}
CHK="$root/build/bin/khocheck"
dir=$(mktemp -d "${TMPDIR:-/tmp}/kho-it.XXXXXX")
export KHO_BASE_PORT=${KHO_BASE_PORT:-$((10000 + ($$ % 10) * 200))}

cleanup() {
    "$CL" stop "$dir" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
. "$root/tests/integration/lib/common.sh"


eval "$("$CL" start 3 "$dir" | grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS
acked="$dir/acked"

step "writes and reads"
"$CTL" put demo hello world 2>/dev/null || fail "put"
[ "$("$CTL" get demo hello)" = world ] || fail "get after put"
"$CTL" get demo missing 2>/dev/null && fail "get of a missing key succeeded"
rc=0; "$CTL" get demo missing 2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "missing key: exit $rc, want 1"
rc=0; "$CTL" get nosuchregistry hello 2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "unknown registry: exit $rc, want 1"
"$CHK" write demo a- 200 "$acked" >/dev/null || fail "write a-"
"$CHK" verify demo "$acked" >/dev/null || fail "verify a-"

step "oversized value and key"
head -c $((1024 * 1024 + 1)) /dev/zero | tr '\0' x >"$dir/big"
rc=0; "$CTL" put demo big - <"$dir/big" 2>"$dir/err" || rc=$?
[ "$rc" = 4 ] && grep -q KHO_ETOOLARGE "$dir/err" || fail "big value: exit $rc"
head -c $((1024 * 1024)) /dev/zero | tr '\0' y >"$dir/max"
"$CTL" put demo max - <"$dir/max" 2>/dev/null || fail "1 MiB value refused"
[ "$("$CTL" get demo max | wc -c)" = 1048576 ] || fail "1 MiB value read"
longkey=$(head -c 1025 /dev/zero | tr '\0' k)
rc=0; "$CTL" put demo "$longkey" v 2>"$dir/err" || rc=$?
[ "$rc" = 4 ] && grep -q KHO_ETOOLARGE "$dir/err" || fail "long key: exit $rc"

step "random and truncated messages to the client and peer ports"
"$CHK" garbage "tcp://127.0.0.1:$((KHO_BASE_PORT + 1))" \
    "tcp://127.0.0.1:$((KHO_BASE_PORT + 101))" || fail "garbage sender"
"$CL" leader "$dir" >/dev/null || sleep 1
"$CTL" put demo after-garbage ok 2>/dev/null || fail "put after garbage"
[ "$("$CTL" --endpoints "tcp://127.0.0.1:$((KHO_BASE_PORT + 1))" get demo \
    after-garbage --serializable)" = ok ] || fail "node 1 after garbage"

step "kill -9 the leader"
leader=$("$CL" leader "$dir" demo) || fail "no leader"
"$CHK" write demo b- 300 "$acked" >/dev/null &
writer=$!
sleep 0.3
"$CL" kill "$leader" "$dir"
wait "$writer" || fail "writer during leader kill"
"$CHK" write demo c- 100 "$acked" >/dev/null || fail "write after kill"
"$CHK" verify demo "$acked" || fail "acknowledged writes lost after leader kill"
new=$("$CL" leader "$dir" demo) || fail "no new leader"
[ "$new" != "$leader" ] || fail "killed node still leads"

step "restart the killed node: it catches up"
"$CL" restart "$leader" "$dir"
want=$("$CTL" --endpoints "tcp://127.0.0.1:$((KHO_BASE_PORT + new))" \
    cluster status --json | sed 's/.*"commit":\([0-9]*\).*/\1/')
i=0
while :; do
    got=$("$CTL" --endpoints "tcp://127.0.0.1:$((KHO_BASE_PORT + leader))" \
        cluster status --json | sed 's/.*"applied":\([0-9]*\).*/\1/')
    [ "$got" -ge "$want" ] && break
    i=$((i + 1))
    [ "$i" -lt 100 ] || fail "restarted node stuck at $got < $want"
    sleep 0.1
done
v=$("$CTL" --endpoints "tcp://127.0.0.1:$((KHO_BASE_PORT + leader))" \
    get demo c-99 --serializable)
[ "$v" = val-c-99 ] || fail "restarted node's replica lacks c-99"

step "kill all three, restart: nothing acknowledged lost"
"$CHK" write demo d- 100 "$acked" >/dev/null || fail "write d-"
for i in 1 2 3; do "$CL" kill "$i" "$dir"; done
for i in 1 2 3; do "$CL" restart "$i" "$dir"; done
"$CHK" verify demo "$acked" || fail "acknowledged writes lost after kill-all"
[ "$("$CTL" get demo hello)" = world ] || fail "hello lost"

if grep -l 'Sanitizer\|runtime error' "$dir"/node*.log >&2; then
    fail "sanitizer report in the node logs above (KHOD=$KHOD)"
fi

echo "PASS: tests/integration/basic.sh ($(wc -l <"$acked") acknowledged writes verified)"
