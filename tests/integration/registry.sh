#!/bin/sh
# registry.sh - registries, transactions, scans, history, exactly-once and
# the space quota, with real processes: three khod nodes on loopback started
# by scripts/cluster.sh, driven through khoctl and libkho (khocheck).
#
# Proves: registries are created through the meta group and listed and
# described from any node (a second create of a name is KHO_EEXIST, a bad
# name KHO_EINVAL); records carry version, revisions, writer and time;
# conditional puts and transactions apply all or nothing; a scan returns
# every record in key order across pages; history lists every version and
# the delete; a request resent with the same session and seq is applied
# once; on a cluster whose store is over its quota, puts get KHO_ENOSPC
# while reads and deletes keep working.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
CL="$root/scripts/cluster.sh"
CTL="$root/build/bin/khoctl"
CHK="$root/build/bin/khocheck"
dir=$(mktemp -d "${TMPDIR:-/tmp}/kho-reg.XXXXXX")
export KHO_BASE_PORT=${KHO_BASE_PORT:-$((12000 + ($$ % 10) * 300))}

cleanup() {
    "$CL" stop "$dir/a" >/dev/null 2>&1 || true
    "$CL" stop "$dir/b" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
. "$root/tests/integration/lib/common.sh"

# Stops a cluster and fails if a node reported a sanitizer error (when khod
# is an ASan+UBSan build: KHOD=build/asan/bin/khod) or did not stop cleanly.
# expect CODE CMD...: runs CMD, fails unless it exits with CODE.
expect() {
    want=$1
    shift
    rc=0
    "$@" >"$dir/out" 2>"$dir/err" || rc=$?
    [ "$rc" = "$want" ] || fail "$*: exit $rc, want $want ($(cat "$dir/err"))"
}

out=$(KHO_REGISTRIES="" "$CL" start 3 "$dir/a") || fail "cluster a"
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS
one="tcp://127.0.0.1:$((KHO_BASE_PORT + 1))"
three="tcp://127.0.0.1:$((KHO_BASE_PORT + 3))"

step "registries: create, list, describe, duplicates, bad names"
expect 0 "$CTL" --name registrar registry create citizens
expect 0 "$CTL" registry create licences --replicas 3
expect 4 "$CTL" registry create citizens
grep -q KHO_EEXIST "$dir/err" || fail "second create: $(cat "$dir/err")"
expect 4 "$CTL" registry create 'Bad Name!'
grep -q KHO_EINVAL "$dir/err" || fail "bad name: $(cat "$dir/err")"
expect 0 "$CTL" --endpoints "$three" registry list --json
grep -q '"citizens"' "$dir/out" && grep -q '"licences"' "$dir/out" ||
    fail "registry list: $(cat "$dir/out")"
expect 0 "$CTL" --endpoints "$one" registry describe citizens --json
grep -q '"creator": *"registrar"' "$dir/out" ||
    fail "registry describe: $(cat "$dir/out")"
expect 1 "$CTL" registry describe nosuch

step "records carry version, revisions, writer and time"
expect 0 "$CTL" --name hanoi-police put citizens 001 '{"name":"A"}'
expect 0 "$CTL" --name hue-police put citizens 001 '{"name":"A2"}'
expect 0 "$CTL" get citizens 001 --json
out=$(cat "$dir/out")
echo "$out" | grep -q '"version": *2' || fail "version: $out"
echo "$out" | grep -q '"writer": *"hue-police"' || fail "writer: $out"
echo "$out" | grep -q '"create_revision": *[1-9]' || fail "create rev: $out"
echo "$out" | grep -q '"time_ms": *[1-9]' || fail "time: $out"
[ "$("$CTL" get citizens 001)" = '{"name":"A2"}' ] || fail "raw get"

step "conditional puts and deletes"
expect 1 "$CTL" put citizens 001 x --if-absent
expect 1 "$CTL" put citizens 001 x --if-version 1
expect 0 "$CTL" put citizens 001 '{"name":"A3"}' --if-version 2
expect 1 "$CTL" del citizens 001 --if-version 2
expect 0 "$CTL" put citizens 002 b --if-absent
expect 1 "$CTL" get citizens nokey

step "transactions: all or nothing"
printf 'cmp 001 version = 3\nput 003 c\ndel 002\n' >"$dir/txn"
expect 0 "$CTL" txn citizens <"$dir/txn"
expect 1 "$CTL" get citizens 002
[ "$("$CTL" get citizens 003)" = c ] || fail "txn put"
printf 'cmp 003 value = c\ncmp 001 version = 1\nput 004 d\ndel 003\n' >"$dir/txn"
expect 1 "$CTL" txn citizens <"$dir/txn"
grep -q '2' "$dir/err" || fail "failed compare not named: $(cat "$dir/err")"
expect 1 "$CTL" get citizens 004
[ "$("$CTL" get citizens 003)" = c ] || fail "failed txn changed 003"

step "history: every version and the delete"
expect 0 "$CTL" del citizens 001
expect 0 "$CTL" history citizens 001 --json
[ "$(grep -o '"version"' "$dir/out" | wc -l)" -eq 4 ] ||
    fail "history of 001: $(cat "$dir/out")"
grep -q '"deleted": *true' "$dir/out" || fail "no delete in history"

step "scan: 1000 records in transactions, read back in pages"
"$CHK" scan licences lic/ 1000 || fail "khocheck scan"
expect 0 "$CTL" scan licences --prefix lic/00001 --keys-only
[ "$(wc -l <"$dir/out")" -ge 10 ] || fail "scan --prefix: $(cat "$dir/out")"
expect 0 "$CTL" scan licences --prefix lic/ --limit 5 --json
[ "$(grep -o '"key"' "$dir/out" | wc -l)" -eq 5 ] || fail "scan --limit"

step "exactly once: one request resent five times"
"$CHK" retry citizens || fail "khocheck retry"

step "unknown registry, oversized key"
expect 1 "$CTL" get nosuch k
expect 1 "$CTL" put nosuch k v
longkey=$(head -c 1025 /dev/zero | tr '\0' k)
expect 4 "$CTL" put citizens "$longkey" v
grep -q KHO_ETOOLARGE "$dir/err" || fail "long key: $(cat "$dir/err")"
stop_checked "$dir/a"

step "space quota: KHO_ENOSPC for puts, reads and deletes still work"
out=$(KHOD_FLAGS="--map-size-mb 64 --quota-mb 8" KHO_REGISTRIES=full \
    KHO_BASE_PORT=$((KHO_BASE_PORT + 50)) "$CL" start 3 "$dir/b") ||
    fail "cluster b"
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
"$CHK" fill full || fail "khocheck fill"
stop_checked "$dir/b"

echo "PASS: tests/integration/registry.sh"
