#!/bin/sh
# backup.sh - consistency checks, backups and restores with real processes:
# three- and five-node clusters on loopback started by scripts/cluster.sh,
# driven by khoctl and khocheck; build/bin/test_check rewrites a stopped
# node's store.
#
# Proves: `khoctl check` passes on a healthy cluster (every group, or one
# registry); `khoctl backup` takes a checked backup from one node while a
# writer keeps writing; when no node hosts every registry it takes the
# backup from several nodes (each giving the groups it was asked for) and
# merges them into one file, and it refuses (exit 3, naming the registry,
# leaving no file) when no live node hosts a registry; a new cluster
# started with `cluster.sh start 3 DIR --restore FILE` holds every record
# of the backup, byte for byte (scan and history JSON, and the check hash,
# equal the old cluster's), every write acknowledged before the backup
# began, no record that was never written, and takes new writes; a
# five-node cluster with a registry of 8 shards on 3 replicas each (no
# node holds them all) is backed up from several nodes while a writer
# runs, and a new five-node cluster restored from that file holds every
# acknowledged key (read one by one and in a scan merged across the
# shards), no key that was never acknowledged, passes `khoctl check` and
# takes writes; khod --restore refuses a corrupted or truncated backup (and
# creates nothing), a data directory that holds other data, and restarts
# idempotently on its own restore; a record rewritten on one node's disk
# with a valid checksum makes `khoctl check` exit 1 naming that node, the
# alarm shows in `khoctl cluster status --json` and survives a restart, and
# a later check of the repaired group clears it; an unreachable replica
# makes the check exit 3. KHOD may name another khod (the ASan build).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
CL="$root/scripts/cluster.sh"
CTL="$root/build/bin/khoctl"
CHK="$root/build/bin/khocheck"
TOOL="$root/build/bin/test_check"
KHOD=${KHOD:-$root/build/bin/khod}
export KHOD
dir=$(mktemp -d "${TMPDIR:-/tmp}/kho-backup.XXXXXX")
# Below the usual ephemeral range (32768 and up), which the clients' and
# peers' own sockets take ports from.
base=${KHO_BASE_PORT:-$((23000 + ($$ % 10) * 300))}
writer=""
solo=""

cleanup() {
    [ -n "$writer" ] && kill "$writer" 2>/dev/null || true
    [ -n "$solo" ] && kill -KILL "$solo" 2>/dev/null || true
    "$CL" stop "$dir/a" >/dev/null 2>&1 || true
    "$CL" stop "$dir/b" >/dev/null 2>&1 || true
    "$CL" stop "$dir/c" >/dev/null 2>&1 || true
    "$CL" stop "$dir/d" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
. "$root/tests/integration/lib/common.sh"

# start_writer REG FILE: a background writer of REG (keys run/...) that
# appends each acknowledged key to FILE; returns once 30 are acknowledged.
start_writer() {
    : >"$2"
    "$CHK" write "$1" run/ 1000000 "$2" >/dev/null 2>&1 &
    writer=$!
    i=0
    until [ "$(wc -l <"$2")" -ge 30 ]; do
        i=$((i + 1))
        [ "$i" -lt 200 ] || fail "the writer does not write"
        sleep 0.05
    done
}
stop_writer() {
    kill "$writer"
    wait "$writer" 2>/dev/null || true
    writer=""
}
# expect CODE CMD...: runs CMD, fails unless it exits with CODE.
expect() {
    want=$1
    shift
    rc=0
    "$@" >"$dir/out" 2>"$dir/err" || rc=$?
    [ "$rc" = "$want" ] ||
        fail "$*: exit $rc, want $want ($(cat "$dir/err") $(cat "$dir/out"))"
}
# The records of a scan --json, one per line, without the list's commas.
records() { sed -n 's/^\({"key".*}\),\{0,1\}$/\1/p' "$1"; }
# The "group" of a registry describe --json in $dir/out.
group_of() { grep -o '"group": *[0-9]*' "$dir/out" | head -n 1 | grep -o '[0-9]*$'; }
# n_listed: how many nodes of cluster $1 served a backup of the groups a
# client listed (a part of a backup from several nodes).
listed_nodes() {
    n_listed=0
    for f in "$1"/node*.log; do
        if grep -q 'backup .* started for .*(as listed)' "$f"; then
            n_listed=$((n_listed + 1))
        fi
    done
}
# The "hash" of the first group in a check --json in $dir/out.
hash_of() { sed -n 's/^.*"index":[0-9]*,"hash":"\([0-9a-f]*\)".*$/\1/p' "$dir/out"; }

[ -x "$TOOL" ] || fail "$TOOL is missing: run make first"

step "cluster a: two registries with records, history and deletes"
export KHO_BASE_PORT=$base
out=$(KHO_REGISTRIES="citizens,licences" "$CL" start 3 "$dir/a") ||
    fail "cluster a"
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS
A_EPS=$KHO_ENDPOINTS
"$CHK" write citizens cit/ 300 "$dir/cit.acked" >/dev/null || fail "write citizens"
"$CHK" write licences lic/ 200 "$dir/lic.acked" >/dev/null || fail "write licences"
expect 0 "$CTL" --name census put citizens cit/7 '{"name":"B"}'
expect 0 "$CTL" del citizens cit/8
expect 0 "$CTL" put citizens 'bytes/\x01' "$(printf 'caf\303\251')"

step "check: a healthy cluster agrees"
expect 0 "$CTL" check
grep -q '(meta)' "$dir/out" && grep -q 'citizens' "$dir/out" &&
    grep -q 'licences' "$dir/out" || fail "check table: $(cat "$dir/out")"
grep -q ' NO$' "$dir/out" && fail "check: $(cat "$dir/out")"
expect 0 "$CTL" check licences --json
grep -q '"ok":true' "$dir/out" || fail "check --json: $(cat "$dir/out")"
expect 1 "$CTL" check nosuch

step "backup from one node while a writer runs"
start_writer licences "$dir/run.acked"
cp "$dir/run.acked" "$dir/run.before"
expect 0 "$CTL" backup "$dir/full.bak" --json
grep -q '"groups":3' "$dir/out" || fail "backup: $(cat "$dir/out")"
[ -s "$dir/full.bak" ] || fail "no backup file"
ls "$dir"/full.bak.tmp.* >/dev/null 2>&1 && fail "a temporary file was left"
sleep 0.3
stop_writer
[ "$(wc -l <"$dir/run.acked")" -gt "$(wc -l <"$dir/run.before")" ] ||
    fail "the writer stopped during the backup"
expect 0 "$CTL" scan citizens --json
cp "$dir/out" "$dir/a-cit.json"
expect 0 "$CTL" scan licences --json
records "$dir/out" >"$dir/a-lic.rec"
expect 0 "$CTL" history citizens cit/8 --json
cp "$dir/out" "$dir/a-hist.json"
expect 0 "$CTL" check citizens --json
a_hash=$(hash_of)
[ -n "$a_hash" ] || fail "no hash: $(cat "$dir/out")"

step "backup: from several nodes when no node hosts every registry"
for r in solo-a solo-b solo-c; do
    expect 0 "$CTL" registry create "$r" --replicas 1
    # A group that has applied nothing yet cannot be backed up.
    expect 0 "$CTL" put "$r" "key-$r" "val-$r"
done
expect 0 "$CTL" backup "$dir/parts.bak" --json
grep -q '"groups":6' "$dir/out" || fail "backup from parts: $(cat "$dir/out")"
listed_nodes "$dir/a"
[ "$n_listed" -ge 2 ] || fail "the backup came from $n_listed node(s)"
ls "$dir"/parts.bak.tmp.* >/dev/null 2>&1 && fail "a temporary file was left"

step "backup: refused when no live node hosts a registry"
# The one replica of a solo registry on a node that does not lead the
# meta group (so that listing the registries needs no new election).
meta=$("$CL" leader "$dir/a") || fail "no meta leader"
down=""
for r in solo-a solo-b solo-c; do
    expect 0 "$CTL" registry describe "$r" --json
    n=$(sed -n 's/^{[^[]*"replicas":\[\([0-9]*\)\].*$/\1/p' "$dir/out")
    [ -n "$n" ] && [ "$n" != "$meta" ] && down=$n && break
done
[ -n "$down" ] || fail "every solo registry lives on the meta leader"
"$CL" kill "$down" "$dir/a"
expect 3 "$CTL" --timeout 1500 backup "$dir/none.bak"
grep -q "no node takes group .*(solo-" "$dir/err" ||
    fail "refusal: $(cat "$dir/err")"
[ -f "$dir/none.bak" ] && fail "a refused backup left a file"
ls "$dir"/none.bak.tmp.* >/dev/null 2>&1 && fail "a temporary file was left"
"$CL" restart "$down" "$dir/a"
stop_checked "$dir/a"

step "khod --restore refuses a corrupted and a truncated backup"
size=$(wc -c <"$dir/full.bak")
cp "$dir/full.bak" "$dir/corrupt.bak"
printf 'X' | dd of="$dir/corrupt.bak" bs=1 seek=$((size / 2)) conv=notrunc \
    2>/dev/null
head -c $((size - 7)) "$dir/full.bak" >"$dir/trunc.bak"
s=$((base + 20))
speers="1=tcp://127.0.0.1:$((s + 100))=tcp://127.0.0.1:$s=hanoi"
for f in corrupt trunc; do
    rc=0
    "$KHOD" --name hanoi --id 1 --data "$dir/x-$f" --peers "$speers" \
        --peer-listen "tcp://127.0.0.1:$((s + 100))" \
        --client-listen "tcp://127.0.0.1:$s" --restore "$dir/$f.bak" \
        >"$dir/x.log" 2>&1 || rc=$?
    [ "$rc" != 0 ] || fail "khod restored $f.bak"
    grep -q 'is refused' "$dir/x.log" || fail "$f: $(cat "$dir/x.log")"
    [ -e "$dir/x-$f" ] && fail "$f: a data directory was created"
    echo "ok: $f.bak -> $(head -n 1 "$dir/x.log")"
done
rc=0
"$KHOD" --name hanoi --id 1 --data "$dir/a/node1" --peers "$speers" \
    --peer-listen "tcp://127.0.0.1:$((s + 100))" \
    --client-listen "tcp://127.0.0.1:$s" --cluster kho-local \
    --restore "$dir/full.bak" >"$dir/x.log" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "khod restored into a data directory with data"
grep -q 'already holds data' "$dir/x.log" || fail "non-empty: $(cat "$dir/x.log")"

step "cluster b: a new cluster from the backup"
export KHO_BASE_PORT=$((base + 10))
out=$("$CL" start 3 "$dir/b" --restore "$dir/full.bak") || fail "cluster b"
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS
grep -q 'restore: 3 groups' "$dir/b/node1.log" || fail "node 1 did not restore"
expect 0 "$CTL" registry list
grep -q citizens "$dir/out" && grep -q licences "$dir/out" &&
    ! grep -q solo "$dir/out" || fail "registries: $(cat "$dir/out")"
expect 0 "$CTL" scan citizens --json
cmp -s "$dir/out" "$dir/a-cit.json" ||
    fail "citizens differ: $(diff "$dir/a-cit.json" "$dir/out" | head)"
expect 0 "$CTL" history citizens cit/8 --json
cmp -s "$dir/out" "$dir/a-hist.json" || fail "history of cit/8 differs"
expect 0 "$CTL" scan licences --json
records "$dir/out" >"$dir/b-lic.rec"
extra=$(grep -vxF -f "$dir/a-lic.rec" "$dir/b-lic.rec" || true)
[ -z "$extra" ] || fail "licences records not in the old cluster: $extra"
"$CHK" verify licences "$dir/lic.acked" >/dev/null || fail "lic/ lost"
"$CHK" verify licences "$dir/run.before" >/dev/null ||
    fail "writes acknowledged before the backup are lost"
n_b=$(wc -l <"$dir/b-lic.rec")
[ "$n_b" -ge $((200 + $(wc -l <"$dir/run.before"))) ] || fail "only $n_b licences"
expect 0 "$CTL" cluster status --json
grep -q "tcp://127.0.0.1:$((base + 111))" "$dir/out" ||
    fail "the new cluster's nodes are not recorded: $(cat "$dir/out")"
grep -q "tcp://127.0.0.1:$((base + 101))" "$dir/out" &&
    fail "the old cluster's nodes are still recorded"
expect 0 "$CTL" check
expect 0 "$CTL" check citizens --json
[ "$(hash_of)" = "$a_hash" ] || fail "citizens hash $(hash_of), was $a_hash"
expect 0 "$CTL" put citizens after-restore yes
expect 0 "$CTL" registry create newreg

step "khod --restore restarts on its own restore"
"$CL" kill 1 "$dir/b"
b=$((base + 10))
bpeers="1=tcp://127.0.0.1:$((b + 101))=tcp://127.0.0.1:$((b + 1))=hanoi"
bpeers="$bpeers,2=tcp://127.0.0.1:$((b + 102))=tcp://127.0.0.1:$((b + 2))=hue"
bpeers="$bpeers,3=tcp://127.0.0.1:$((b + 103))=tcp://127.0.0.1:$((b + 3))=danang"
"$KHOD" --name hanoi --id 1 --data "$dir/b/node1" --peers "$bpeers" \
    --peer-listen "tcp://127.0.0.1:$((b + 101))" \
    --client-listen "tcp://127.0.0.1:$((b + 1))" --cluster kho-local \
    --restore "$dir/full.bak" >"$dir/again.log" 2>&1 &
solo=$!
i=0
until "$CTL" --endpoints "tcp://127.0.0.1:$((b + 1))" --timeout 300 \
    cluster status >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 100 ] || fail "restart with --restore: $(cat "$dir/again.log")"
    kill -0 "$solo" 2>/dev/null || fail "restart: $(cat "$dir/again.log")"
    sleep 0.1
done
grep -q 'already came from backup' "$dir/again.log" || fail "not idempotent"
expect 0 "$CTL" get citizens after-restore
kill -TERM "$solo"
wait "$solo" 2>/dev/null || true
solo=""
grep -q 'stopped cleanly' "$dir/again.log" || fail "no clean stop"
grep -q 'Sanitizer\|runtime error' "$dir/again.log" && fail "sanitizer report"
"$CL" restart 1 "$dir/b"

step "check: a record rewritten on one node's disk is found"
expect 0 "$CTL" registry describe citizens --json
gid=$(group_of)
[ -n "$gid" ] || fail "no group id: $(cat "$dir/out")"
"$CL" kill 2 "$dir/b"
"$TOOL" rewrite "$dir/b/node2/db" "$gid" cit/5 val-cit/X ||
    fail "rewrite on node 2"
"$CL" restart 2 "$dir/b"
expect 1 "$CTL" check
grep -q 'MISMATCH in group '"$gid"' (citizens): node 2 (hue)' "$dir/err" ||
    fail "mismatch not named: $(cat "$dir/err")"
grep -q '2 (hue) .* NO$' "$dir/out" || fail "check table: $(cat "$dir/out")"
expect 0 "$CTL" check licences
expect 0 "$CTL" cluster status --json
grep -q '"node":2,[^}]*"group":'"$gid"',[^}]*"check_alarm":{"index":[1-9]' \
    "$dir/out" || fail "no alarm in cluster status: $(cat "$dir/out")"
[ "$(grep -o '"check_alarm"' "$dir/out" | wc -l)" -eq 1 ] ||
    fail "alarms on other replicas: $(cat "$dir/out")"
"$CL" restart 2 "$dir/b"
expect 0 "$CTL" --endpoints "tcp://127.0.0.1:$((b + 2))" cluster status --json
grep -q '"check_alarm"' "$dir/out" || fail "the alarm did not survive a restart"

step "check: the repaired replica agrees again and its alarm goes"
"$CL" kill 2 "$dir/b"
"$TOOL" rewrite "$dir/b/node2/db" "$gid" cit/5 val-cit/5 || fail "repair"
"$CL" restart 2 "$dir/b"
expect 0 "$CTL" check citizens
grep -q 'clearing node 2' "$dir/err" || fail "alarm not cleared: $(cat "$dir/err")"
expect 0 "$CTL" cluster status --json
grep -q '"check_alarm"' "$dir/out" && fail "the alarm stayed"

step "check: an unreachable replica exits 3"
"$CL" kill 3 "$dir/b"
expect 3 "$CTL" --timeout 3000 check citizens
grep -q 'node 3 (danang) cannot be asked' "$dir/err" ||
    fail "unreachable not named: $(cat "$dir/err")"
"$CL" restart 3 "$dir/b"
expect 0 "$CTL" check
stop_checked "$dir/b"

step "cluster c: five nodes, a registry of 8 shards on 3 replicas each"
export KHO_BASE_PORT=$((base + 30))
out=$(KHO_REGISTRIES="citizens:8" "$CL" start 5 "$dir/c") || fail "cluster c"
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS
"$CHK" write citizens cit/ 400 "$dir/c-cit.acked" >/dev/null ||
    fail "write citizens"
# Every replica applies every acknowledged write before the backup.
expect 0 "$CTL" check citizens

step "backup of the sharded cluster from several nodes while a writer runs"
start_writer citizens "$dir/c-run.acked"
expect 0 "$CTL" backup "$dir/sharded.bak" --json
grep -q '"groups":9' "$dir/out" || fail "sharded backup: $(cat "$dir/out")"
stop_writer
listed_nodes "$dir/c"
[ "$n_listed" -ge 2 ] || fail "the backup came from $n_listed node(s)"
ls "$dir"/sharded.bak.tmp.* >/dev/null 2>&1 && fail "a temporary file was left"
stop_checked "$dir/c"

step "cluster d: a new five-node cluster from the sharded backup"
export KHO_BASE_PORT=$((base + 40))
out=$("$CL" start 5 "$dir/d" --restore "$dir/sharded.bak") || fail "cluster d"
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS
for f in "$dir"/d/node*.log; do
    grep -q 'restore: [0-9]* groups from backup' "$f" || fail "$f: no restore"
done
"$CHK" verify citizens "$dir/c-cit.acked" >/dev/null ||
    fail "acknowledged keys are lost"
"$CHK" scanned citizens "$dir/c-cit.acked" >/dev/null ||
    fail "a scan of the restored shards misses acknowledged keys"
expect 0 "$CTL" scan citizens --prefix run/ --json
records "$dir/out" | sed 's/^{"key":"\([^"]*\)".*$/\1/' >"$dir/d-run.keys"
extra=$(grep -vxF -f "$dir/c-run.acked" "$dir/d-run.keys" || true)
[ -z "$extra" ] || fail "restored run/ keys never acknowledged: $extra"
expect 0 "$CTL" check
expect 0 "$CTL" put citizens after-restore yes
stop_checked "$dir/d"

echo "PASS: tests/integration/backup.sh"
