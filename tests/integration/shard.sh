#!/bin/sh
# shard.sh - sharded registries with real processes: five nodes, three
# registries of 8 shards with 3 replicas each. 10,000 records are written
# and read back; a scan returns them all in key order across the shards;
# kill -9 one node -> every shard still serves and no acknowledged write is
# lost; a sixth node joins -> shards move to it and the data stays whole;
# a node is killed and removed -> its replicas are re-created elsewhere.
#
# Logs are compacted every 200 entries so that moved replicas catch up by
# snapshot. Ports: KHO_BASE_PORT (default 26000 + offset).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
CL="$root/scripts/cluster.sh"
CTL="$root/build/bin/khoctl"
CHK="$root/build/bin/khocheck"
dir=$(mktemp -d "${TMPDIR:-/tmp}/kho-shard.XXXXXX")
export KHO_BASE_PORT=${KHO_BASE_PORT:-$((26000 + ($$ % 10) * 300))}
B=$KHO_BASE_PORT
url() { echo "tcp://127.0.0.1:$((B + $1))"; }
REGS="citizens licences health"

cleanup() {
    "$CL" stop "$dir" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
. "$root/tests/integration/lib/common.sh"

write_all() { # PREFIX N
    pids=""
    for r in $REGS; do
        "$CHK" write "$r" "$1" "$2" "$dir/acked.$r" >"$dir/out.$r" 2>&1 &
        pids="$pids $!"
    done
    ok=0
    for p in $pids; do wait "$p" || ok=1; done
    cat "$dir"/out.* | sed 's/^/    /'
    return $ok
}
verify_all() {
    for r in $REGS; do
        "$CHK" verify "$r" "$dir/acked.$r" || fail "verify $r"
        "$CHK" scanned "$r" "$dir/acked.$r" || fail "scan $r"
    done
}
# The node names holding replicas, one line per replica.
replica_names() {
    "$CTL" shard list | awk 'NR > 1 { print $4 }' | tr ',' '\n'
}
holds() { # NAME MIN: NAME holds at least MIN replicas
    [ "$(replica_names | grep -cx "$1")" -ge "$2" ]
}
absent() { # NAME: NAME holds no replica
    ! replica_names | grep -qx "$1"
}

out=$(KHO_REGISTRIES="citizens:8,licences:8,health:8" \
    KHOD_FLAGS="--compact-entries 200" "$CL" start 5 "$dir") ||
    fail "cluster start"
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS

step "placement: 24 shards, 3 distinct replicas each, spread evenly"
"$CTL" shard list >"$dir/shards" || fail "shard list"
[ "$(awk 'NR > 1' "$dir/shards" | wc -l)" -eq 24 ] || fail "not 24 shards"
awk 'NR > 1 { n = split($4, a, ","); if (n != 3) exit 1;
     if (a[1] == a[2] || a[1] == a[3] || a[2] == a[3]) exit 1 }' \
    "$dir/shards" || fail "a shard without 3 distinct replicas"
counts=$(replica_names | sort | uniq -c | awk '{ print $1 }' | sort -n)
[ "$(echo "$counts" | head -n 1)" -ge 14 ] &&
    [ "$(echo "$counts" | tail -n 1)" -le 15 ] ||
    fail "replicas per node not even: $counts"

step "10,002 records written through every shard, read back, scanned"
write_all k- 3334 || fail "writes"
verify_all
"$CTL" cluster health >/dev/null || fail "cluster health"
"$CTL" check >"$dir/check" || fail "check: $(cat "$dir/check")"
# One row per replica: 24 shards x 3, and the meta group's 5.
[ "$(awk 'NR > 1' "$dir/check" | wc -l)" -ge 77 ] ||
    fail "check did not cover every shard replica: $(cat "$dir/check")"

step "kill -9 node 2: every shard still serves, nothing acknowledged lost"
"$CL" kill 2 "$dir"
write_all d- 200 || fail "writes with node 2 down"
verify_all
"$CL" restart 2 "$dir"

step "a sixth node joins: replicas move to it, the data stays whole"
six=$("$CL" grow "$dir" | tail -n 1)
[ "$six" = 6 ] || fail "grow printed '$six'"
name6=$("$CL" name 6)
until_ok 60 "replicas moving to $name6" holds "$name6" 12
# Its replicas caught up: every shard it holds has applied data there.
hosted_6() {
    "$CTL" --endpoints "$(url 6)" cluster status --json |
        tr '{' '\n' | grep '"registry":"[a-z]*","role"' |
        sed -n 's/.*"applied":\([0-9]*\).*/\1/p' >"$dir/applied6"
    [ "$(wc -l <"$dir/applied6")" -ge 12 ] &&
        awk '$1 < 100 { exit 1 }' "$dir/applied6"
}
until_ok 60 "$name6 catching up" hosted_6
export KHO_ENDPOINTS="$KHO_ENDPOINTS,$(url 6)"
write_all n- 100 || fail "writes after the join"
verify_all
"$CTL" cluster rebalance --dry-run 2>&1 | grep -q "nothing to move" ||
    fail "placement not even after the join"

step "a dead node is removed: its replicas are re-created elsewhere"
name3=$("$CL" name 3)
"$CL" kill 3 "$dir"
"$CTL" member remove "$name3" >/dev/null || fail "member remove $name3"
until_ok 30 "$name3 leaving the shard map" absent "$name3"
# Every shard's group, as its leader reports it, has 3 voters and no
# node 3.
groups=$("$CTL" shard list | awk 'NR > 1 { print $3 }')
confs_ok() {
    for g in $groups; do
        c=$("$CHK" conf "$g") || return 1
        case " $c " in *" 3:"*) return 1 ;; esac
        [ "$(echo "$c" | tr ' ' '\n' | grep -c ':voter')" -eq 3 ] || return 1
    done
}
until_ok 90 "every shard re-created without $name3" confs_ok
verify_all
echo "PASS shard.sh"
